package asof

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/pgark/pgark/storage"
)

// Version is one version of an object, or a delete marker.
type Version struct {
	Key          string
	ID           string // the store's version id
	Size         int64
	ModTime      time.Time
	Latest       bool // the store's current version of the key
	DeleteMarker bool
}

// Versioned is a store that keeps the versions of its objects and reads
// them by id.
type Versioned interface {
	storage.Store
	// ListVersions calls fn for every version and delete marker of every
	// key that starts with prefix, grouped by key in lexical key order.
	ListVersions(ctx context.Context, prefix string, fn func(Version) error) error
	GetVersion(ctx context.Context, key, id string) (io.ReadCloser, storage.ObjectInfo, error)
	GetVersionRange(ctx context.Context, key, id string, offset, length int64) (io.ReadCloser, error)
	StatVersion(ctx context.Context, key, id string) (storage.ObjectInfo, error)
}

// ErrReadOnly is returned (wrapped in a storage.PermanentError) by every
// write through the decorator.
var ErrReadOnly = errors.New("the repository is opened as of a past time (repo-target-time), read-only: writes are refused")

// Store is a Versioned store seen as of a time.
type Store struct {
	st Versioned
	at time.Time

	mu       sync.Mutex
	resolved map[string]Version // found versions, by key
}

var _ storage.Store = (*Store)(nil)

// New returns st as it was at time at.
func New(st Versioned, at time.Time) *Store {
	return &Store{st: st, at: at, resolved: make(map[string]Version)}
}

// At is the time the store is seen at.
func (s *Store) At() time.Time { return s.at }

// String names the wrapped store and the time.
func (s *Store) String() string {
	return s.st.String() + " as of " + s.at.UTC().Format(time.RFC3339)
}

// picker chooses the version of one key that was current at a time.
type picker struct {
	at   time.Time
	best Version
	have bool
}

// add considers v: the newest version at or before the time wins; on equal
// times (S3 gives whole seconds) the store's current version, else the one
// listed first (S3 lists a key's versions newest first).
func (p *picker) add(v Version) {
	if v.ModTime.After(p.at) {
		return
	}
	if !p.have || v.ModTime.After(p.best.ModTime) || (v.ModTime.Equal(p.best.ModTime) && v.Latest && !p.best.Latest) {
		p.best, p.have = v, true
	}
}

// result is the version current at the time, ok=false when the key did not
// exist then (no version yet, or deleted).
func (p *picker) result() (Version, bool) {
	if !p.have || p.best.DeleteMarker {
		return Version{}, false
	}
	return p.best, true
}

// resolve finds the version of key current at the time: one listing of the
// versions of key (and of the keys it is a prefix of, skipped).
func (s *Store) resolve(ctx context.Context, key string) (Version, error) {
	if err := storage.ValidKey(key); err != nil {
		return Version{}, err
	}
	s.mu.Lock()
	v, ok := s.resolved[key]
	s.mu.Unlock()
	if ok {
		return v, nil
	}
	p := picker{at: s.at}
	err := s.st.ListVersions(ctx, key, func(v Version) error {
		if v.Key == key {
			p.add(v)
		}
		return nil
	})
	if err != nil {
		return Version{}, err
	}
	v, ok = p.result()
	if !ok {
		return Version{}, fmt.Errorf("%s in %s: %w", key, s, storage.ErrNotFound)
	}
	s.remember(v)
	return v, nil
}

func (s *Store) remember(v Version) {
	s.mu.Lock()
	s.resolved[v.Key] = v
	s.mu.Unlock()
}

// List calls fn for every key that existed at the time, in lexical order,
// with the size and time of its version then.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	var p picker
	cur := ""
	emit := func() error {
		v, ok := p.result()
		if !ok {
			return nil
		}
		s.remember(v)
		return fn(storage.ObjectInfo{Key: v.Key, Size: v.Size, ModTime: v.ModTime})
	}
	err := s.st.ListVersions(ctx, prefix, func(v Version) error {
		if v.Key != cur {
			if cur != "" {
				if err := emit(); err != nil {
					return err
				}
			}
			cur, p = v.Key, picker{at: s.at}
		}
		p.add(v)
		return nil
	})
	if err != nil {
		return err
	}
	if cur != "" {
		return emit()
	}
	return nil
}

// Get opens the version of key current at the time.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	v, err := s.resolve(ctx, key)
	if err != nil {
		return nil, storage.ObjectInfo{}, err
	}
	return s.st.GetVersion(ctx, key, v.ID)
}

// GetRange opens part of the version of key current at the time.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	v, err := s.resolve(ctx, key)
	if err != nil {
		return nil, err
	}
	return s.st.GetVersionRange(ctx, key, v.ID, offset, length)
}

// Stat describes the version of key current at the time.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	v, err := s.resolve(ctx, key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	return s.st.StatVersion(ctx, key, v.ID)
}

// ReadSmall reads the version of key current at the time; its version id
// is the returned version (useless for Swap, which is refused).
func (s *Store) ReadSmall(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	rc, info, err := s.Get(ctx, key)
	if err != nil {
		return nil, "", err
	}
	defer rc.Close()
	if info.Size > limit {
		return nil, "", &storage.PermanentError{Err: fmt.Errorf("read %s in %s: %d bytes, more than the %d expected: %w", key, s, info.Size, limit, storage.ErrTooLarge)}
	}
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, "", fmt.Errorf("read %s in %s: %w", key, s, err)
	}
	if int64(len(data)) > limit {
		return nil, "", &storage.PermanentError{Err: fmt.Errorf("read %s in %s: more than the %d bytes expected: %w", key, s, limit, storage.ErrTooLarge)}
	}
	v, _ := s.resolve(ctx, key)
	return data, v.ID, nil
}

func (s *Store) readOnly(op, key string) error {
	return &storage.PermanentError{Err: fmt.Errorf("%s %s in %s: %w", op, key, s, ErrReadOnly)}
}

// Put is refused.
func (s *Store) Put(_ context.Context, key string, _ io.Reader, _ storage.PutOptions) error {
	return s.readOnly("put", key)
}

// Swap is refused.
func (s *Store) Swap(_ context.Context, key string, _ []byte, _ string) (string, error) {
	return "", s.readOnly("swap", key)
}

// Delete is refused.
func (s *Store) Delete(_ context.Context, key string) error {
	return s.readOnly("delete", key)
}
