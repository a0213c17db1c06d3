package mirror

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/mem"
)

// switchable fails every operation while down is set.
type switchable struct {
	storage.Store
	down atomic.Bool
}

var errDown = errors.New("connection refused")

func (s *switchable) Put(ctx context.Context, key string, r io.Reader, o storage.PutOptions) error {
	if s.down.Load() {
		return errDown
	}
	return s.Store.Put(ctx, key, r, o)
}

func (s *switchable) Get(ctx context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	if s.down.Load() {
		return nil, storage.ObjectInfo{}, errDown
	}
	return s.Store.Get(ctx, key)
}

func (s *switchable) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if s.down.Load() {
		return storage.ObjectInfo{}, errDown
	}
	return s.Store.Stat(ctx, key)
}

func content(t *testing.T, s storage.Store, key string) (string, map[string]string) {
	t.Helper()
	rc, info, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("get %s from %s: %v", key, s, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), info.Meta
}

func newMirror(t *testing.T, a, b storage.Store) *Store {
	t.Helper()
	m, err := New(Config{Stores: []storage.Store{a, b}, QueueDir: t.TempDir(), Timeout: 5 * time.Second, Backoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPutBoth(t *testing.T) {
	a, b := mem.New("a"), mem.New("b")
	m := newMirror(t, a, b)
	meta := map[string]string{storage.MetaSHA256: "abc", storage.MetaSize: "5"}
	if err := m.Put(t.Context(), "k", io.MultiReader(bytes.NewReader([]byte("hello"))), storage.PutOptions{Size: -1, Meta: meta}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []storage.Store{a, b} {
		if got, gm := content(t, s, "k"); got != "hello" || gm[storage.MetaSHA256] != "abc" {
			t.Fatalf("%s: %q %v", s, got, gm)
		}
	}
	if err := m.Put(t.Context(), "k", bytes.NewReader([]byte("hello")), storage.PutOptions{Size: 5, Meta: meta}); !storage.IsExists(err) {
		t.Fatalf("second put: %v, want exists", err)
	}
}

// TestQueueCatchUp: a store that is down gets its objects queued, and the
// first Put after it returns (and its backoff passed) delivers them, oldest
// first, as stored.
func TestQueueCatchUp(t *testing.T) {
	a, b := mem.New("a"), &switchable{Store: mem.New("b")}
	m := newMirror(t, a, b)
	b.down.Store(true)
	keys := []string{"wal/1", "wal/2", "wal/3"}
	for _, k := range keys {
		meta := map[string]string{storage.MetaSHA256: "sum-" + k, storage.MetaSize: "1"}
		if err := m.Put(t.Context(), k, bytes.NewReader([]byte("data "+k)), storage.PutOptions{Size: -1, Meta: meta}); err != nil {
			t.Fatalf("put %s with b down: %v", k, err)
		}
	}
	n, _, err := Pending(m.queue(1).dir)
	if err != nil || n != 3 {
		t.Fatalf("pending for b: %d, %v; want 3", n, err)
	}
	if n, _, _ := Pending(m.queue(0).dir); n != 0 {
		t.Fatalf("pending for a: %d", n)
	}
	// Both down: the put fails, nothing queued.
	a2 := &switchable{Store: a}
	a2.down.Store(true)
	m2 := newMirror(t, a2, b)
	if err := m2.Put(t.Context(), "wal/x", bytes.NewReader([]byte("x")), storage.PutOptions{Size: 1}); err == nil || !errors.Is(err, errDown) {
		t.Fatalf("put with both down: %v", err)
	}

	b.down.Store(false)
	m.queue(1).clearDown() // the backoff has passed
	if err := m.Put(t.Context(), "wal/4", bytes.NewReader([]byte("data wal/4")), storage.PutOptions{Size: -1}); err != nil {
		t.Fatal(err)
	}
	for _, k := range append(keys, "wal/4") {
		got, gm := content(t, b.Store, k)
		if got != "data "+k {
			t.Fatalf("%s in b: %q", k, got)
		}
		if k != "wal/4" && gm[storage.MetaSHA256] != "sum-"+k {
			t.Fatalf("%s in b: metadata %v", k, gm)
		}
	}
	if n, _, _ := Pending(m.queue(1).dir); n != 0 {
		t.Fatalf("pending for b after catch-up: %d", n)
	}
}

// TestCopyJob: when one store already holds the key and the other is down,
// the other gets a copy of the stored object later.
func TestCopyJob(t *testing.T) {
	a, b := mem.New("a"), &switchable{Store: mem.New("b")}
	if err := a.Put(t.Context(), "k", bytes.NewReader([]byte("stored")), storage.PutOptions{Size: 6, Meta: map[string]string{"x": "1"}}); err != nil {
		t.Fatal(err)
	}
	m := newMirror(t, a, b)
	b.down.Store(true)
	if err := m.Put(t.Context(), "k", bytes.NewReader([]byte("stored")), storage.PutOptions{Size: 6}); !storage.IsExists(err) {
		t.Fatalf("put: %v, want exists", err)
	}
	b.down.Store(false)
	m.queue(1).clearDown()
	if n := m.CatchUp(t.Context(), time.Minute); n != 1 {
		t.Fatalf("caught up %d, want 1", n)
	}
	if got, gm := content(t, b.Store, "k"); got != "stored" || gm["x"] != "1" {
		t.Fatalf("b: %q %v", got, gm)
	}
}

// TestDamagedQueueEntry: a queued object whose bytes changed on disk is not
// delivered.
func TestDamagedQueueEntry(t *testing.T) {
	a, b := mem.New("a"), &switchable{Store: mem.New("b")}
	m := newMirror(t, a, b)
	b.down.Store(true)
	if err := m.Put(t.Context(), "k", bytes.NewReader([]byte("payload")), storage.PutOptions{Size: 7}); err != nil {
		t.Fatal(err)
	}
	q := m.queue(1)
	names, _ := q.pending()
	if len(names) != 1 {
		t.Fatalf("queued %v", names)
	}
	f, err := os.OpenFile(filepath.Join(q.dir, names[0]), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("X"), headerMax+1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b.down.Store(false)
	q.clearDown()
	if n := m.CatchUp(t.Context(), time.Minute); n != 0 {
		t.Fatalf("delivered %d damaged entries", n)
	}
	if _, err := b.Stat(t.Context(), "k"); !storage.IsNotFound(err) {
		t.Fatalf("b holds the damaged object: %v", err)
	}
}

// TestSweep: staging leftovers of a killed process go once they are old;
// fresh ones (a Put in progress) and queued objects stay.
func TestSweep(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "2"), 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * staleAfter)
	files := map[string]bool{".put-1": false, "2/.tmp-1": false, ".put-fresh": true, "2/1-1-1.queued": true}
	for f, fresh := range files {
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if !fresh || strings.HasSuffix(f, ".queued") {
			os.Chtimes(p, old, old)
		}
	}
	if _, err := New(Config{Stores: []storage.Store{mem.New("a"), mem.New("b")}, QueueDir: dir}); err != nil {
		t.Fatal(err)
	}
	for f, keep := range files {
		_, err := os.Stat(filepath.Join(dir, f))
		if (err == nil) != keep {
			t.Errorf("%s: present %v, want %v", f, err == nil, keep)
		}
	}
}

// TestDivergenceLogged: a store that holds other content under the key
// makes Put answer ErrExists, and the divergence is logged.
func TestDivergenceLogged(t *testing.T) {
	a, b := mem.New("a"), mem.New("b")
	if err := a.Put(t.Context(), "k", bytes.NewReader([]byte("old")), storage.PutOptions{Size: 3, Meta: map[string]string{storage.MetaSHA256: "old", storage.MetaSize: "3"}}); err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	m, err := New(Config{Stores: []storage.Store{a, b}, QueueDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(&logBuf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = m.Put(t.Context(), "k", bytes.NewReader([]byte("new")), storage.PutOptions{Size: 3, Meta: map[string]string{storage.MetaSHA256: "new", storage.MetaSize: "3"}})
	if !storage.IsExists(err) {
		t.Fatalf("put: %v, want exists", err)
	}
	if !strings.Contains(logBuf.String(), "different content") {
		t.Fatalf("divergence not logged: %s", logBuf.String())
	}
}
