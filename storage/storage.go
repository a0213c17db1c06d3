package storage

import (
	"context"
	"errors"
	"io"
	"time"
)

// Well-known metadata keys. Metadata keys are lower-case ASCII letters,
// digits and '-'; values are printable ASCII. Backends store them next to the
// object (S3 user metadata) or inside it (local store) and return them from
// Stat and Get.
const (
	MetaSHA256 = "pgark-sha256" // hex SHA-256 of the plaintext
	MetaSize   = "pgark-size"   // decimal plaintext size in bytes
	// MetaCRC32C is the CRC-32C (Castagnoli) of the plaintext, 8 lower-case
	// hex digits, big-endian: WAL objects carry it for wal-fetch's check.
	MetaCRC32C = "pgark-crc32c"
	// MetaRecipients lists the fingerprints of the age recipients an
	// object is encrypted to, comma-separated: which identities read it.
	MetaRecipients = "pgark-recipients"
	// MetaSigner and MetaSignature carry the writer's origin signature of
	// the object's key, plaintext SHA-256 and size (optional signing).
	MetaSigner    = "pgark-signer"
	MetaSignature = "pgark-signature"
)

// ErrNotFound is returned (wrapped) when an object does not exist. Backends
// return it only when the store answered "does not exist" (local ENOENT, S3
// 404). Permission errors (S3 403) are never ErrNotFound.
var ErrNotFound = errors.New("object not found")

// ErrExists is returned (wrapped) by Put when the key already holds an object.
var ErrExists = errors.New("object already exists")

// ErrConflict is returned (wrapped) by Put when a concurrent conditional write
// to the same key raced with this one (S3 409). The caller may retry.
var ErrConflict = errors.New("concurrent write conflict")

// ErrTooLarge is returned (wrapped) by ReadSmall for an object larger than
// the limit.
var ErrTooLarge = errors.New("object larger than expected")

// ErrNoVersion is returned (wrapped) by compare-and-swap callers when
// ReadSmall gave no version: the store cannot hold a lock or a safely
// updated config.
var ErrNoVersion = errors.New("the store returned no object version (ETag): compare-and-swap is impossible")

// ErrChanged is returned (wrapped) by Swap when the object is not at the
// version the caller named: it was replaced or deleted since it was read.
var ErrChanged = errors.New("object changed since it was read")

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key     string
	Size    int64             // stored size in bytes (what Get returns)
	ModTime time.Time         // zero when unknown
	Meta    map[string]string // user metadata given to Put; nil from List
	// RetainUntil is the object's S3 Object Lock retention date from Stat
	// and Get (zero: none, or a store without retention).
	RetainUntil time.Time
}

// PutOptions carries the optional parts of a Put.
type PutOptions struct {
	// Meta is stored with the object and returned by Stat and Get.
	Meta map[string]string
	// Size is the exact number of bytes r will yield, or -1 when unknown.
	Size int64
}

// Store is a repository backend.
type Store interface {
	// Put stores the bytes of r under key, create-only. It returns only once
	// the object is durable (fsynced, or an upload completed). If key already
	// exists it returns an error wrapping ErrExists and leaves the stored
	// object untouched. On any error no object appears under key. It never
	// uses r after it returns (callers reuse the memory behind it).
	Put(ctx context.Context, key string, r io.Reader, opts PutOptions) error
	// Get opens the object. The caller must close the reader.
	Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error)
	// GetRange opens length bytes of the object from offset; length < 0
	// means to the end.
	GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// Stat returns the object's size and metadata (one HEAD).
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List calls fn for every object whose key starts with prefix, in
	// lexical key order. Meta is not filled. Returning an error from fn
	// stops the listing and List returns that error.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// ReadSmall reads a small object whole and returns it with its current
	// version (an opaque string: the S3 ETag, a content hash locally; ""
	// when the store gives none). An object larger than limit bytes is an
	// error wrapping ErrTooLarge.
	ReadSmall(ctx context.Context, key string, limit int64) ([]byte, string, error)
	// Swap is the compare-and-swap of small objects (locks, the repository
	// config). With ifVersion "" it creates key, create-only (ErrExists if
	// it exists). Otherwise it replaces key only if the object is at
	// ifVersion, atomically, else it returns ErrChanged (also when the
	// object is gone). It returns the new version.
	Swap(ctx context.Context, key string, data []byte, ifVersion string) (string, error)
	// Delete removes the object. Deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error
	// String names the store for messages (no secrets).
	String() string
}

// ReadError marks a failure to read an object's body from the store (a
// connection reset, a body cut short, a read timeout): the object may be
// intact, so a reader retries instead of taking it for damage.
type ReadError struct{ Err error }

func (e *ReadError) Error() string { return e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

// IsReadError reports whether err is a failure to read from the store.
func IsReadError(err error) bool {
	var re *ReadError
	return errors.As(err, &re)
}

// IsNotFound reports whether err means that the object does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsExists reports whether err means that Put found an existing object.
func IsExists(err error) bool { return errors.Is(err, ErrExists) }

// PermanentError marks an error that retrying cannot fix (bad credentials,
// access denied, a malformed request). Backends wrap such errors with it so
// that the retry decorator gives up at once.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// IsPermanent reports whether err should not be retried. Not-found, exists
// and permanent errors are not retried; everything else is.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p) || IsNotFound(err) || IsExists(err) || errors.Is(err, ErrChanged) ||
		errors.Is(err, context.Canceled)
}
