package wal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
)

// ErrContentConflict means the repository already holds different content
// under the name being pushed. It is never overwritten.
var ErrContentConflict = errors.New("different content is already archived under this name")

// ErrBadInput wraps errors about the file to push (missing, unreadable, not
// WAL, wrong cluster).
var ErrBadInput = errors.New("bad input")

// maxTextFile bounds .history and .backup files (they are a few hundred bytes).
const maxTextFile = 1 << 20

// PushOptions configure a push.
type PushOptions struct {
	Codec repo.Codec
	// RetryFor bounds the retries of transient storage errors.
	RetryFor time.Duration
	Log      *slog.Logger
}

// PushResult says what a push did.
type PushResult struct {
	Name          string
	Key           string
	Size          int64
	AlreadyStored bool // identical content was archived before
}

// Push archives the WAL file at path into the repository. It returns only
// when the object is durable. Identical content already archived is success;
// different content is ErrContentConflict and the stored object is untouched.
func Push(ctx context.Context, r *repo.Repo, path string, o PushOptions) (PushResult, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n, err := ParseName(filepath.Base(path))
	if err != nil {
		return PushResult{}, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	f, err := openRegular(path)
	if err != nil {
		return PushResult{}, err
	}
	defer f.Close()

	// Pass 1: hash the plaintext and check what it is. A file of up to
	// inMemoryMax bytes (every default-size segment) is read once and kept:
	// the bytes hashed are exactly the bytes stored.
	sum, size, head, data, err := readForPush(f)
	if err != nil {
		return PushResult{}, fmt.Errorf("read %s: %w", path, err)
	}
	if err := checkContent(ctx, r, n, size, head); err != nil {
		return PushResult{}, err
	}
	res := PushResult{Name: n.Raw, Key: ObjectKey(n), Size: size}
	meta := map[string]string{storage.MetaSHA256: sum, storage.MetaSize: strconv.FormatInt(size, 10)}

	compare := func() (PushResult, error) {
		info, err := r.Store.Stat(ctx, res.Key)
		if err != nil {
			return res, fmt.Errorf("compare with the archived %s: %w", n.Raw, err)
		}
		if info.Meta[storage.MetaSHA256] == sum && info.Meta[storage.MetaSize] == meta[storage.MetaSize] {
			res.AlreadyStored = true
			log.Info("already archived with identical content", "wal", n.Raw)
			return res, nil
		}
		return res, fmt.Errorf("%w: %s is archived in %s with SHA-256 %s and %s bytes, the file to push has SHA-256 %s and %d bytes; the archived copy is kept. Likely causes: two servers archive into one repository, or a server was restored without a new timeline",
			ErrContentConflict, n.Raw, r.Store, short(info.Meta[storage.MetaSHA256]), info.Meta[storage.MetaSize], short(sum), size)
	}
	if r.Config.WriteMode == repo.WriteHeadThenPut {
		_, err := r.Store.Stat(ctx, res.Key)
		if err == nil {
			return compare()
		}
		if !storage.IsNotFound(err) {
			return res, fmt.Errorf("check %s in the repository: %w", n.Raw, err)
		}
	}

	// Pass 2: compress, encrypt and store, create-only. The bytes are hashed
	// again on the way: if the file changed since pass 1, the upload is
	// aborted and nothing is stored.
	err = retryTransient(ctx, o.RetryFor, log, "push "+n.Raw, func() error {
		if data != nil {
			return putObject(ctx, r.Store, res.Key, bytes.NewReader(data), o.Codec, meta)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return &storage.PermanentError{Err: err}
		}
		return putObject(ctx, r.Store, res.Key, &verifyReader{r: f, h: sha256.New(), sum: sum, size: size}, o.Codec, meta)
	})
	if storage.IsExists(err) {
		return compare()
	}
	if err != nil {
		return res, fmt.Errorf("store %s: %w", n.Raw, err)
	}
	return res, nil
}

func short(sum string) string {
	if len(sum) > 16 {
		return sum[:16] + "..."
	}
	return sum
}

func openRegular(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrBadInput, path)
	}
	return f, nil
}

// inMemoryMax is the largest file that push reads into memory once; larger
// ones (segments of 128 MiB to 1 GiB) are streamed twice, the second pass
// verified against the first.
const inMemoryMax = 64 << 20

// readForPush hashes the file and returns its first bytes, and its content
// when it is at most inMemoryMax bytes.
func readForPush(f *os.File) (sum string, size int64, head, data []byte, err error) {
	fi, err := f.Stat()
	if err != nil {
		return "", 0, nil, nil, err
	}
	if fi.Size() <= inMemoryMax {
		data = make([]byte, fi.Size()+1) // one more byte: see the file end where fstat said
		k, err := io.ReadFull(f, data)
		if err != io.ErrUnexpectedEOF && err != io.EOF {
			if err == nil {
				err = fmt.Errorf("the file grew while it was being read")
			}
			return "", 0, nil, nil, err
		}
		data = data[:k]
		h := sha256.Sum256(data)
		return hex.EncodeToString(h[:]), int64(k), data[:min(k, LongHeaderSize)], data, nil
	}
	sum, size, head, err = hashFile(f)
	return sum, size, head, nil, err
}

func hashFile(f *os.File) (sum string, size int64, head []byte, err error) {
	h := sha256.New()
	head = make([]byte, 0, LongHeaderSize)
	buf := make([]byte, 256<<10)
	for {
		k, rerr := f.Read(buf)
		if k > 0 {
			if len(head) < LongHeaderSize {
				head = append(head, buf[:min(k, LongHeaderSize-len(head))]...)
			}
			h.Write(buf[:k])
			size += int64(k)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return "", 0, nil, rerr
		}
	}
	return hex.EncodeToString(h.Sum(nil)), size, head, nil
}

// checkContent refuses what is not the WAL file its name says, and WAL of
// another cluster.
func checkContent(ctx context.Context, r *repo.Repo, n Name, size int64, head []byte) error {
	switch n.Kind {
	case KindSegment, KindPartial:
		h, err := ParseHeader(head)
		if err == nil {
			err = CheckSegment(n, size, h)
		}
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrBadInput, n.Raw, err)
		}
		if err := r.BindCluster(ctx, h.SystemID, h.SegSize, "wal-push "+n.Raw); err != nil {
			if errors.Is(err, repo.ErrWrongCluster) {
				return fmt.Errorf("%w: refusing %s: %w", ErrBadInput, n.Raw, err)
			}
			return err
		}
	case KindHistory, KindBackup:
		if size > maxTextFile || size == 0 || bytes.IndexByte(head, 0) >= 0 {
			return fmt.Errorf("%w: %s does not look like a PostgreSQL %s (%d bytes)", ErrBadInput, n.Raw, n.Kind, size)
		}
		if n.Kind == KindBackup && !bytes.HasPrefix(head, []byte("START WAL LOCATION:")) {
			return fmt.Errorf("%w: %s does not start with \"START WAL LOCATION:\": not a backup history file", ErrBadInput, n.Raw)
		}
	}
	return nil
}

// putObject streams src through the object writer into a create-only Put.
func putObject(ctx context.Context, s storage.Store, key string, src io.Reader, c repo.Codec, meta map[string]string) error {
	pr, pw := io.Pipe()
	go func() {
		ow, err := repo.NewObjectWriter(pw, c)
		if err == nil {
			_, err = io.Copy(ow, src)
			if cerr := ow.Close(); err == nil {
				err = cerr
			}
		}
		pw.CloseWithError(err)
	}()
	err := s.Put(ctx, key, pr, storage.PutOptions{Size: -1, Meta: meta})
	pr.CloseWithError(errors.New("upload ended"))
	return err
}

// verifyReader passes a file through and, at its end, fails instead of
// returning io.EOF if the bytes differ from what pass 1 hashed.
type verifyReader struct {
	r    io.Reader
	h    hash.Hash
	n    int64
	sum  string
	size int64
}

func (v *verifyReader) Read(p []byte) (int, error) {
	k, err := v.r.Read(p)
	v.h.Write(p[:k])
	v.n += int64(k)
	if err == io.EOF {
		if v.n != v.size || hex.EncodeToString(v.h.Sum(nil)) != v.sum {
			return k, &storage.PermanentError{Err: fmt.Errorf("%w: the file changed while it was being archived", ErrBadInput)}
		}
	}
	return k, err
}

// retryTransient runs fn until it succeeds, fails permanently, or the time is
// up. Exists and not-found are answers, not failures: they end the loop.
func retryTransient(ctx context.Context, limit time.Duration, log *slog.Logger, what string, fn func() error) error {
	start := time.Now()
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || storage.IsPermanent(err) || ctx.Err() != nil {
			return err
		}
		if time.Since(start)+backoff > limit {
			return fmt.Errorf("%w (gave up after %d attempts in %s)", err, attempt, time.Since(start).Round(time.Millisecond))
		}
		log.Warn("transient error, retrying", "op", what, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}
