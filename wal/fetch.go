package wal

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
)

// ErrNotArchived means the repository answered, in this call, that the file
// does not exist. It is the only error that may become restore_command's
// "not found" exit status.
var ErrNotArchived = errors.New("not in the repository")

// ErrVerify wraps content verification failures (hash, size, corruption).
var ErrVerify = errors.New("verification failed")

// FetchOptions configure a fetch.
type FetchOptions struct {
	Identities *crypto.Identities
	RetryFor   time.Duration
	Log        *slog.Logger
	// Decoder, when set, decodes (its buffers are reused from fetch to
	// fetch); else each fetch makes its own. Not shared by concurrent
	// fetches.
	Decoder *repo.Decoder
}

// maxCorruptAttempts bounds the re-reads of an object that fails
// verification: a network fault can look like damage, real damage repeats.
const maxCorruptAttempts = 3

// Fetch restores the WAL file named name from the repository to dest. dest is
// written atomically (temp file, fsync, rename) and only after the content is
// verified: authenticated decryption, zstd checksums, and the plaintext
// size and hash recorded at push (see recorded.check).
func Fetch(ctx context.Context, r *repo.Repo, name, dest string, o FetchOptions) error {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n, err := ParseName(name)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	key := ObjectKey(n)
	corrupt := 0
	return retryTransient(ctx, o.RetryFor, log, "fetch "+name, func() error {
		err := fetchOnce(ctx, r, key, dest, o)
		switch {
		case err == nil:
			return nil
		case storage.IsNotFound(err):
			// An answer, not a failure: never retried, never remembered.
			return &storage.PermanentError{Err: fmt.Errorf("%s: %w (%s)", name, ErrNotArchived, err)}
		case errors.Is(err, crypto.ErrNoMatchingIdentity), errors.Is(err, crypto.ErrMissingIdentity),
			errors.Is(err, errDest):
			return &storage.PermanentError{Err: err}
		case errors.Is(err, ErrVerify):
			corrupt++
			if corrupt >= maxCorruptAttempts {
				return &storage.PermanentError{Err: fmt.Errorf("%s (%s): %w", name, key, err)}
			}
		}
		return err
	})
}

var errDest = errors.New("cannot write the destination")

// decodeWorkers is how many goroutines decompress: one core is left to the
// reader (decryption), the writer and the hash, and two decoders are enough
// to keep them busy where more cores are free.
func decodeWorkers() int { return max(1, min(runtime.GOMAXPROCS(0)-1, 2)) }

func fetchOnce(ctx context.Context, r *repo.Repo, key, dest string, o FetchOptions) error {
	rc, info, err := r.Store.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	rec, body, err := openRecorded(r, key, rc, info, o.Identities)
	if err != nil {
		return err
	}

	dir, base := filepath.Split(dest)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".pgark-tmp-*")
	if err != nil {
		return fmt.Errorf("%w: %w", errDest, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// The next frames are read and decrypted while one is decoded and the
	// ones before it are written to the temporary file and hashed, on as
	// many cores. DecodeTo refuses more than wantSize bytes (a hostile
	// object cannot fill the disk).
	h, hname, want := rec.check(r.Trust != nil)
	d := o.Decoder
	if d == nil {
		d = repo.NewDecoder(decodeWorkers())
		defer d.Close()
	}
	n, err := body.DecodeWith(d, destWriter{tmp}, h, rec.size)
	if err != nil {
		if errors.Is(err, repo.ErrTooLong) {
			return fmt.Errorf("%w: object %s decodes to more than the %d bytes recorded at push", ErrVerify, key, rec.size)
		}
		if isWriteErr(err) {
			return fmt.Errorf("%w: %w", errDest, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if storage.IsReadError(err) {
			return err // the connection failed, not the object: retried
		}
		return fmt.Errorf("%w: reading %s: %w", ErrVerify, key, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != rec.size || got != want {
		return fmt.Errorf("%w: object %s decodes to %d bytes with %s %s, but %d bytes with %s %s were archived", ErrVerify, key, n, hname, short(got), rec.size, hname, short(want))
	}
	// No fsync: PostgreSQL reads the restored file at once and, when it
	// keeps one (standby, end of recovery), makes it durable itself
	// (durable_rename). After a crash it fetches again. The rename still
	// makes DEST appear complete or not at all.
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%w: close: %w", errDest, err)
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		os.Remove(tmp.Name())
		done = true
		return fmt.Errorf("%w: %w", errDest, err)
	}
	done = true
	return nil
}

// recorded is what push recorded of a file's plaintext: its size, SHA-256
// and CRC-32C (objects pushed before the CRC was recorded have none).
type recorded struct {
	size   int64
	sha256 string // hex
	crc32c string // 8 hex digits, or "" when the object has none
}

// check returns the hash that proves a decoded plaintext is the file
// pushed, its name and the value recorded. It is the CRC-32C when the object
// has one and no signature is required: the stored bytes are already proven
// by authenticated decryption (each 64 KiB chunk) and the zstd frame
// checksums, so the plaintext check only has to catch a fault between the
// file read at push and the bytes written here. CRC-32C (PostgreSQL's own
// WAL checksum) does that in a thirteenth of SHA-256's time: 0.6 against
// 7.6 ms per 16 MiB segment here (BenchmarkFetchCheck), where zstd takes 12.
// A signature signs the SHA-256: with a trust list (trusted-signers), the
// SHA-256 it is.
func (rec recorded) check(signed bool) (hash.Hash, string, string) {
	if rec.crc32c != "" && !signed {
		return crc32.New(castagnoli), "CRC-32C", rec.crc32c
	}
	return sha256.New(), "SHA-256", rec.sha256
}

// openRecorded reads the plaintext size and hashes recorded at push from an
// object's metadata and opens its body (authenticated decryption starts
// here). Damage is an error wrapping ErrVerify.
func openRecorded(r *repo.Repo, key string, rc io.Reader, info storage.ObjectInfo, ids *crypto.Identities) (recorded, *repo.Body, error) {
	rec := recorded{sha256: info.Meta[storage.MetaSHA256], crc32c: info.Meta[storage.MetaCRC32C]}
	size, err := strconv.ParseInt(info.Meta[storage.MetaSize], 10, 64)
	if len(rec.sha256) != 64 || err != nil || size < 0 {
		return recorded{}, nil, fmt.Errorf("%w: object %s has no valid %s/%s metadata", ErrVerify, key, storage.MetaSHA256, storage.MetaSize)
	}
	rec.size = size
	if _, ok := parseCRC(rec.crc32c); rec.crc32c != "" && !ok {
		return recorded{}, nil, fmt.Errorf("%w: object %s has an invalid %s metadata value %q", ErrVerify, key, storage.MetaCRC32C, rec.crc32c)
	}
	if err := r.Trust.Verify(key, rec.sha256, size, info.Meta[storage.MetaSigner], info.Meta[storage.MetaSignature]); err != nil {
		return recorded{}, nil, fmt.Errorf("%w: %w", ErrVerify, err)
	}
	body, err := repo.OpenObject(rc, repo.ReadOptions{Identities: ids, RequireEncrypted: r.Config.Encrypted()})
	if err != nil {
		if errors.Is(err, repo.ErrCorrupt) {
			return recorded{}, nil, fmt.Errorf("%w: %w", ErrVerify, err)
		}
		return recorded{}, nil, err
	}
	return rec, body, nil
}

// formatCRC is the metadata form of a CRC-32C; parseCRC reads it back.
func formatCRC(c uint32) string { return fmt.Sprintf("%08x", c) }

func parseCRC(s string) (uint32, bool) {
	if len(s) != 8 || strings.ToLower(s) != s {
		return 0, false
	}
	c, err := strconv.ParseUint(s, 16, 32)
	return uint32(c), err == nil
}

// destWriter marks the errors of the destination file.
type destWriter struct{ f *os.File }

func (d destWriter) WriteAt(p []byte, off int64) (int, error) {
	n, err := d.f.WriteAt(p, off)
	if err != nil {
		err = &destWriteError{err}
	}
	return n, err
}

// destWriteError marks failures of the destination file.
type destWriteError struct{ err error }

func (e *destWriteError) Error() string { return e.err.Error() }
func (e *destWriteError) Unwrap() error { return e.err }

func isWriteErr(err error) bool {
	var d *destWriteError
	return errors.As(err, &d)
}
