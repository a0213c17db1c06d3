package mem

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgark/pgark/storage"
)

// Store is an in-memory storage.Store. The zero value is not usable: call
// New. It is safe for concurrent use.
type Store struct {
	name string

	mu      sync.Mutex
	objects map[string]*object
	seq     uint64 // the last version handed out
}

// object is one stored version; it is never modified once stored (a Swap
// stores a new one), so readers may hold its data without the lock.
type object struct {
	data    []byte
	meta    map[string]string // nil when Put had none
	modTime time.Time
	version string
}

var _ storage.Store = (*Store)(nil)

// New returns an empty store. name shows in String and in errors.
func New(name string) *Store {
	if name == "" {
		name = "memory"
	}
	return &Store{name: name, objects: map[string]*object{}}
}

// String returns "mem://" and the store's name.
func (s *Store) String() string { return "mem://" + s.name }

func (s *Store) describe(key string) string { return fmt.Sprintf("%q in %s", key, s) }

func (s *Store) notFound(op, key string) error {
	return fmt.Errorf("%s %s: %w", op, s.describe(key), storage.ErrNotFound)
}

// lookup returns the object under key, checking the key and the context.
func (s *Store) lookup(ctx context.Context, op, key string) (*object, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	o := s.objects[key]
	s.mu.Unlock()
	if o == nil {
		return nil, s.notFound(op, key)
	}
	return o, nil
}

func (o *object) info(key string) storage.ObjectInfo {
	return storage.ObjectInfo{Key: key, Size: int64(len(o.data)), ModTime: o.modTime, Meta: maps.Clone(o.meta)}
}

// newObject returns an object of data with the next version. The caller
// holds s.mu.
func (s *Store) newObject(data []byte, meta map[string]string) *object {
	s.seq++
	return &object{data: data, meta: meta, modTime: time.Now(), version: "v" + strconv.FormatUint(s.seq, 10)}
}

// Stat returns the object's size and metadata.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	o, err := s.lookup(ctx, "stat", key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	return o.info(key), nil
}

// Get opens the object.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	o, err := s.lookup(ctx, "get", key)
	if err != nil {
		return nil, storage.ObjectInfo{}, err
	}
	return io.NopCloser(bytes.NewReader(o.data)), o.info(key), nil
}

// GetRange opens length bytes of the object from offset (length < 0: to
// the end), with the bounds of S3: an offset at or beyond the end is an
// error that is not ErrNotFound, except GetRange(key, 0, -1) (the whole
// object) and length 0 (empty, for any offset up to the size); a length
// past the end is cut at the end.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 {
		return nil, &storage.PermanentError{Err: fmt.Errorf("get range %s: negative offset %d", s.describe(key), offset)}
	}
	o, err := s.lookup(ctx, "get range", key)
	if err != nil {
		return nil, err
	}
	size := int64(len(o.data))
	switch {
	case length == 0 && offset <= size:
		return io.NopCloser(bytes.NewReader(nil)), nil
	case offset == 0 && length < 0:
	case offset >= size:
		return nil, &storage.PermanentError{Err: fmt.Errorf("get range %s: offset %d is beyond the object's size %d", s.describe(key), offset, size)}
	}
	end := size
	if length >= 0 && offset+length < size {
		end = offset + length
	}
	return io.NopCloser(bytes.NewReader(o.data[offset:end])), nil
}

// Put reads r whole and stores it under key, create-only: the object
// appears only once all of r was read, and never replaces another.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) error {
	if err := storage.ValidKey(key); err != nil {
		return err
	}
	if err := storage.ValidMeta(opts.Meta); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Fail early, without reading r, if the key exists; the insert below
	// decides races.
	s.mu.Lock()
	exists := s.objects[key] != nil
	s.mu.Unlock()
	if exists {
		return fmt.Errorf("put %s: %w", s.describe(key), storage.ErrExists)
	}
	// A fresh buffer: r's memory is never kept.
	data, err := io.ReadAll(storage.ContextReader(ctx, r))
	if err != nil {
		return fmt.Errorf("put %s: reading the data: %w", s.describe(key), err)
	}
	if opts.Size >= 0 && int64(len(data)) != opts.Size {
		return fmt.Errorf("put %s: the reader yielded %d bytes, expected %d", s.describe(key), len(data), opts.Size)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var meta map[string]string
	if len(opts.Meta) > 0 {
		meta = maps.Clone(opts.Meta)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.objects[key] != nil {
		return fmt.Errorf("put %s: %w", s.describe(key), storage.ErrExists)
	}
	s.objects[key] = s.newObject(data, meta)
	return nil
}

// List calls fn for every object whose key starts with prefix, in lexical
// key order, without metadata. It lists the keys as they were when it was
// called; fn may use the store.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var infos []storage.ObjectInfo
	s.mu.Lock()
	for k, o := range s.objects {
		if strings.HasPrefix(k, prefix) {
			infos = append(infos, storage.ObjectInfo{Key: k, Size: int64(len(o.data)), ModTime: o.modTime})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(infos, func(a, b storage.ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// ReadSmall returns the object's bytes and version.
func (s *Store) ReadSmall(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	o, err := s.lookup(ctx, "read", key)
	if err != nil {
		return nil, "", err
	}
	if int64(len(o.data)) > limit {
		return nil, "", &storage.PermanentError{Err: fmt.Errorf("read %s: %d bytes, more than the %d expected: %w", s.describe(key), len(o.data), limit, storage.ErrTooLarge)}
	}
	return bytes.Clone(o.data), o.version, nil
}

// Swap creates key (ifVersion "") or replaces it if it is at ifVersion,
// atomically.
func (s *Store) Swap(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	if err := storage.ValidKey(key); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.objects[key]
	switch {
	case ifVersion == "" && cur != nil:
		return "", fmt.Errorf("swap %s: %w", s.describe(key), storage.ErrExists)
	case ifVersion != "" && (cur == nil || cur.version != ifVersion):
		return "", fmt.Errorf("swap %s: %w", s.describe(key), storage.ErrChanged)
	}
	o := s.newObject(bytes.Clone(data), nil)
	s.objects[key] = o
	return o.version, nil
}

// Delete removes the object; a missing object is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.ValidKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.objects, key)
	s.mu.Unlock()
	return nil
}
