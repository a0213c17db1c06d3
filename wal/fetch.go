package wal

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
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
}

// maxCorruptAttempts bounds the re-reads of an object that fails
// verification: a network fault can look like damage, real damage repeats.
const maxCorruptAttempts = 3

// Fetch restores the WAL file named name from the repository to dest. dest is
// written atomically (temp file, fsync, rename) and only after the content is
// verified: authenticated decryption, zstd checksums, and the plaintext
// SHA-256 and size recorded at push.
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

// decodeWorkers is how many goroutines decompress. Hashing is fetch's longest
// step and cannot be split: it needs a core of its own, and one decoder
// alone is faster than SHA-256 (with SHA instructions: 2.5 against 2 GB/s
// here), so a second one only helps where a third core is free.
func decodeWorkers() int { return max(1, min(runtime.GOMAXPROCS(0)-1, 2)) }

func fetchOnce(ctx context.Context, r *repo.Repo, key, dest string, o FetchOptions) error {
	rc, info, err := r.Store.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	wantSum, wantSize, body, err := openRecorded(r, key, rc, info, o.Identities)
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
	h := sha256.New()
	n, err := body.DecodeTo(destWriter{tmp}, h, wantSize, decodeWorkers())
	if err != nil {
		if errors.Is(err, repo.ErrTooLong) {
			return fmt.Errorf("%w: object %s decodes to more than the %d bytes recorded at push", ErrVerify, key, wantSize)
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
	if got := hex.EncodeToString(h.Sum(nil)); n != wantSize || got != wantSum {
		return fmt.Errorf("%w: object %s decodes to %d bytes with SHA-256 %s, but %d bytes with SHA-256 %s were archived", ErrVerify, key, n, short(got), wantSize, short(wantSum))
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

// openRecorded reads the plaintext SHA-256 and size recorded at push from an
// object's metadata and opens its body (authenticated decryption starts
// here). Damage is an error wrapping ErrVerify.
func openRecorded(r *repo.Repo, key string, rc io.Reader, info storage.ObjectInfo, ids *crypto.Identities) (string, int64, *repo.Body, error) {
	sum := info.Meta[storage.MetaSHA256]
	size, err := strconv.ParseInt(info.Meta[storage.MetaSize], 10, 64)
	if len(sum) != 64 || err != nil || size < 0 {
		return "", 0, nil, fmt.Errorf("%w: object %s has no valid %s/%s metadata", ErrVerify, key, storage.MetaSHA256, storage.MetaSize)
	}
	if err := r.Trust.Verify(key, sum, size, info.Meta[storage.MetaSigner], info.Meta[storage.MetaSignature]); err != nil {
		return "", 0, nil, fmt.Errorf("%w: %w", ErrVerify, err)
	}
	body, err := repo.OpenObject(rc, repo.ReadOptions{Identities: ids, RequireEncrypted: r.Config.Encrypted()})
	if err != nil {
		if errors.Is(err, repo.ErrCorrupt) {
			return "", 0, nil, fmt.Errorf("%w: %w", ErrVerify, err)
		}
		return "", 0, nil, err
	}
	return sum, size, body, nil
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
