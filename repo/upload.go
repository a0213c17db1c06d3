package repo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"

	"github.com/pgark/pgark/storage"
)

// Upload is one object of unknown size being compressed, encrypted and
// stored as it is written: nothing is staged locally. The plaintext's
// SHA-256 and size are computed on the way, for the metadata object that
// the caller writes last (a streamed object cannot carry them in its storage
// metadata: they are known only at the end).
//
// The object appears in the store only when Finish succeeds; after Abort,
// or a failed Finish, no object exists under the key.
type Upload struct {
	key  string
	h    hash.Hash
	n    int64
	ow   io.WriteCloser
	pw   *io.PipeWriter
	sw   *countWriter
	done chan error
}

// Uploaded describes a stored object: what it decodes to, and its stored size.
type Uploaded struct {
	Key         string
	Bytes       int64  // plaintext size
	SHA256      string // plaintext SHA-256, hex
	StoredBytes int64  // size in the store
}

// StartUpload starts storing an object under key (create-only).
func StartUpload(ctx context.Context, s storage.Store, key string, c Codec) *Upload {
	pr, pw := io.Pipe()
	u := &Upload{key: key, h: sha256.New(), pw: pw, sw: &countWriter{}, done: make(chan error, 1)}
	go func() {
		err := s.Put(ctx, key, pr, storage.PutOptions{Size: -1})
		pr.CloseWithError(errors.New("upload ended"))
		u.done <- err
	}()
	// Compressed on several cores, hashed off the caller's goroutine.
	ow, err := NewParallelObjectWriter(io.MultiWriter(pw, u.sw), c, uploadWorkers(), u.h)
	if err != nil {
		pw.CloseWithError(err)
		return u
	}
	u.ow = ow
	return u
}

// Key is the object's key.
func (u *Upload) Key() string { return u.key }

// Write takes plaintext.
func (u *Upload) Write(p []byte) (int, error) {
	if u.ow == nil {
		return 0, errors.New("object writer unavailable")
	}
	u.n += int64(len(p))
	return u.ow.Write(p)
}

// uploadWorkers is how many goroutines compress a streamed object.
func uploadWorkers() int { return min(max(runtime.GOMAXPROCS(0), 1), 4) }

// Finish flushes the object and waits until it is durably stored.
func (u *Upload) Finish() (Uploaded, error) {
	if u.ow == nil {
		return Uploaded{}, fmt.Errorf("store %s: %w", u.key, <-u.done)
	}
	err := u.ow.Close()
	u.pw.CloseWithError(err)
	if perr := <-u.done; err == nil {
		err = perr
	}
	if err != nil {
		return Uploaded{}, fmt.Errorf("store %s: %w", u.key, err)
	}
	return Uploaded{Key: u.key, Bytes: u.n, SHA256: hex.EncodeToString(u.h.Sum(nil)), StoredBytes: u.sw.n}, nil
}

// Abort makes the upload fail (no object is stored) and waits for it.
func (u *Upload) Abort(cause error) {
	u.pw.CloseWithError(cause)
	<-u.done
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
