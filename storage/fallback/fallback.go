package fallback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/pgark/pgark/storage"
)

// ErrReadOnly is returned by the writing methods.
var ErrReadOnly = errors.New("a fallback store is read-only")

// Store reads from its stores in order. A store that fails (other than
// "not found") moves behind the others for the calls that follow, so that
// a long read (a restore) does not wait for a dead repository's retries
// at every object; it is still asked before "not found" is answered.
type Store struct {
	stores []storage.Store
	log    *slog.Logger

	// writer: "not found" once one store said so and none holds the
	// object (NewForWriter).
	writer bool

	mu    sync.Mutex
	order []int // indexes into stores, the order to ask them in
}

// NewForWriter is New for a writer's reads (package mirror, under
// wal-push): "not found" when at least one store answered so and none
// holds the object, even if another failed. A writer's writes are
// create-only in every store, so a wrong "not found" only makes it write
// where the object is missing, and the store that holds it refuses the
// duplicate; a reader (wal-fetch) must never get that answer, so New keeps
// the strict rule.
func NewForWriter(log *slog.Logger, stores ...storage.Store) *Store {
	s := New(log, stores...)
	s.writer = true
	return s
}

// New returns a store that reads from stores in order. log receives a
// Warn record when a store fails and the next one is asked.
func New(log *slog.Logger, stores ...storage.Store) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	order := make([]int, len(stores))
	for i := range order {
		order[i] = i
	}
	return &Store{stores: stores, log: log, order: order}
}

func (s *Store) current() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.order)
}

// demote moves store i behind the others.
func (s *Store) demote(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := slices.Index(s.order, i); j >= 0 && j < len(s.order)-1 {
		s.order = append(slices.Delete(s.order, j, j+1), i)
	}
}

// String names the stores, in order.
func (s *Store) String() string {
	names := make([]string, len(s.stores))
	for i, st := range s.stores {
		names[i] = st.String()
	}
	return strings.Join(names, " or ")
}

// try runs op on each store in turn until one succeeds. It returns the
// first success, else ErrNotFound when every store said so, else the first
// error that was not "not found".
func try[T any](ctx context.Context, s *Store, what, key string, op func(storage.Store) (T, error)) (T, error) {
	var zero T
	var firstErr error
	notFound := false
	order := s.current()
	for n, i := range order {
		st := s.stores[i]
		v, err := op(st)
		if err == nil {
			return v, nil
		}
		if ctx.Err() != nil {
			return zero, err
		}
		if storage.IsNotFound(err) {
			notFound = true
		} else {
			s.demote(i)
			if firstErr == nil {
				firstErr = err
			}
		}
		if n < len(order)-1 {
			lvl := s.log.Warn
			if storage.IsNotFound(err) {
				lvl = s.log.Info
			}
			lvl("reading from the next repository", "op", what, "key", key, "failed", st.String(), "err", err)
		}
	}
	if firstErr != nil && !(s.writer && notFound) {
		return zero, firstErr
	}
	return zero, fmt.Errorf("%q in %s: %w", key, s, storage.ErrNotFound)
}

type got struct {
	rc   io.ReadCloser
	info storage.ObjectInfo
}

// Get opens the object from the first store that has it.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	g, err := try(ctx, s, "get", key, func(st storage.Store) (got, error) {
		rc, info, err := st.Get(ctx, key)
		return got{rc, info}, err
	})
	return g.rc, g.info, err
}

// GetRange reads a range from the first store that has the object.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	return try(ctx, s, "get", key, func(st storage.Store) (io.ReadCloser, error) {
		return st.GetRange(ctx, key, offset, length)
	})
}

// Stat describes the object from the first store that has it.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	return try(ctx, s, "stat", key, func(st storage.Store) (storage.ObjectInfo, error) {
		return st.Stat(ctx, key)
	})
}

type small struct {
	b   []byte
	ver string
}

// ReadSmall reads a small object from the first store that has it.
func (s *Store) ReadSmall(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	v, err := try(ctx, s, "read", key, func(st storage.Store) (small, error) {
		b, ver, err := st.ReadSmall(ctx, key, limit)
		return small{b, ver}, err
	})
	return v.b, v.ver, err
}

// List calls fn for every key under prefix that any store lists, once, in
// lexical order. A store whose listing fails is left out (with a warning)
// as long as one store lists; when every store fails, the first error is
// returned. The listings are collected before fn is called.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	seen := map[string]bool{}
	var all []storage.ObjectInfo
	var firstErr error
	listed := 0
	for _, st := range s.stores {
		var got []storage.ObjectInfo
		err := st.List(ctx, prefix, func(oi storage.ObjectInfo) error {
			got = append(got, oi)
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			if firstErr == nil {
				firstErr = err
			}
			s.log.Warn("cannot list one repository; listing the others", "store", st.String(), "err", err)
			continue
		}
		listed++
		for _, oi := range got {
			if !seen[oi.Key] {
				seen[oi.Key] = true
				all = append(all, oi)
			}
		}
	}
	if listed == 0 && firstErr != nil {
		return firstErr
	}
	sortInfos(all)
	for _, oi := range all {
		if err := fn(oi); err != nil {
			return err
		}
	}
	return nil
}

// Put is refused: a fallback store is read-only.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) error {
	return &storage.PermanentError{Err: ErrReadOnly}
}

// Swap is refused: a fallback store is read-only.
func (s *Store) Swap(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	return "", &storage.PermanentError{Err: ErrReadOnly}
}

// Delete is refused: a fallback store is read-only.
func (s *Store) Delete(ctx context.Context, key string) error {
	return &storage.PermanentError{Err: ErrReadOnly}
}

func sortInfos(v []storage.ObjectInfo) {
	slices.SortFunc(v, func(a, b storage.ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
}
