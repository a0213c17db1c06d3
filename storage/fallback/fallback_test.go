package fallback

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/mem"
)

// broken fails every read with a transient error.
type broken struct{ storage.Store }

var errDown = errors.New("connection refused")

func (b broken) Get(ctx context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	return nil, storage.ObjectInfo{}, errDown
}
func (b broken) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	return storage.ObjectInfo{}, errDown
}
func (b broken) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	return errDown
}

func put(t *testing.T, s storage.Store, key, data string) {
	t.Helper()
	if err := s.Put(t.Context(), key, bytes.NewReader([]byte(data)), storage.PutOptions{Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, s storage.Store, key string) (string, error) {
	t.Helper()
	rc, _, err := s.Get(t.Context(), key)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

func TestGetFallsBack(t *testing.T) {
	a, b := mem.New("a"), mem.New("b")
	put(t, a, "k1", "from a")
	put(t, b, "k1", "from b")
	put(t, b, "k2", "only b")
	f := New(nil, a, b)
	if got, err := read(t, f, "k1"); err != nil || got != "from a" {
		t.Fatalf("k1: %q, %v; want the first store's", got, err)
	}
	if got, err := read(t, f, "k2"); err != nil || got != "only b" {
		t.Fatalf("k2: %q, %v; want the second store's", got, err)
	}
	if _, err := read(t, f, "k3"); !storage.IsNotFound(err) {
		t.Fatalf("k3 in neither: %v, want not found", err)
	}
	if _, err := f.Stat(t.Context(), "k2"); err != nil {
		t.Fatalf("stat k2: %v", err)
	}
}

// TestNotFoundOnlyFromEveryStore: a store that fails and one that says
// "not found" is a failure, never "not found".
func TestNotFoundOnlyFromEveryStore(t *testing.T) {
	a, b := mem.New("a"), mem.New("b")
	put(t, b, "k", "b")
	for _, stores := range [][]storage.Store{{broken{a}, b}, {b, broken{a}}} {
		f := New(nil, stores...)
		if _, err := read(t, f, "missing"); err == nil || storage.IsNotFound(err) || !errors.Is(err, errDown) {
			t.Fatalf("missing with one store down: %v, want the failure", err)
		}
		if got, err := read(t, f, "k"); err != nil || got != "b" {
			t.Fatalf("k: %q, %v", got, err)
		}
		if _, err := f.Stat(t.Context(), "missing"); storage.IsNotFound(err) {
			t.Fatalf("stat: %v, want the failure", err)
		}
	}
}

func TestListMerges(t *testing.T) {
	a, b := mem.New("a"), mem.New("b")
	put(t, a, "x/1", "1")
	put(t, a, "x/3", "3")
	put(t, b, "x/2", "2")
	put(t, b, "x/3", "3")
	var keys []string
	if err := New(nil, a, b).List(t.Context(), "x/", func(oi storage.ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"x/1", "x/2", "x/3"}; !equal(keys, want) {
		t.Fatalf("keys %v, want %v", keys, want)
	}
	keys = nil
	if err := New(nil, broken{a}, b).List(t.Context(), "x/", func(oi storage.ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"x/2", "x/3"}; !equal(keys, want) {
		t.Fatalf("with a down: keys %v, want %v", keys, want)
	}
	if err := New(nil, broken{a}, broken{b}).List(t.Context(), "", func(storage.ObjectInfo) error { return nil }); !errors.Is(err, errDown) {
		t.Fatalf("both down: %v", err)
	}
	if err := New(nil, a).Put(t.Context(), "k", bytes.NewReader(nil), storage.PutOptions{}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("put: %v, want read-only", err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestForWriter: for a writer, one store's "not found" with the other down
// is "not found"; for a reader it is the failure.
func TestForWriter(t *testing.T) {
	a, b := mem.New("a"), mem.New("b")
	w := NewForWriter(nil, a, broken{b})
	if _, err := w.Stat(t.Context(), "missing"); !storage.IsNotFound(err) {
		t.Fatalf("writer: %v, want not found", err)
	}
	if _, err := New(nil, a, broken{b}).Stat(t.Context(), "missing"); storage.IsNotFound(err) {
		t.Fatalf("reader: %v, want the failure", err)
	}
	if _, err := NewForWriter(nil, broken{a}, broken{b}).Stat(t.Context(), "missing"); storage.IsNotFound(err) || err == nil {
		t.Fatalf("writer, both down: %v, want the failure", err)
	}
}
