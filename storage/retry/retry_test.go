package retry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/mem"
	"github.com/pgark/pgark/storage/storagetest"
)

// fake is an in-memory store whose operations fail with failErr for the
// next fails[op] calls.
type fake struct {
	mu      sync.Mutex
	objects map[string][]byte
	fails   map[string]int
	failErr error
	calls   map[string]int
	// versions counts the Swaps of each key.
	versions map[string]int
	// listFailAfter makes List fail after delivering this many objects
	// (when > 0) instead of before.
	listFailAfter int
}

var errTransient = errors.New("transient: connection reset")

func newFake() *fake {
	return &fake{objects: map[string][]byte{}, fails: map[string]int{}, calls: map[string]int{}, versions: map[string]int{}, failErr: errTransient}
}

// fail counts a call of op and reports whether it must fail.
func (f *fake) fail(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if f.fails[op] != 0 {
		if f.fails[op] > 0 {
			f.fails[op]--
		}
		return fmt.Errorf("fake %s: %w", op, f.failErr)
	}
	return nil
}

func (f *fake) String() string { return "fake" }

func (f *fake) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) error {
	// Consume part of the data before failing, as a real upload would.
	var head [3]byte
	n, _ := io.ReadFull(r, head[:])
	if err := f.fail("put"); err != nil {
		return err
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.objects[key]; ok {
		return storage.ErrExists
	}
	f.objects[key] = append(head[:n:n], rest...)
	f.mu.Unlock()
	err = f.fail("put-lost") // applied, but the reply is lost
	f.mu.Lock()
	return err
}

func (f *fake) Get(ctx context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	if err := f.fail("get"); err != nil {
		return nil, storage.ObjectInfo{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.objects[key]
	if !ok {
		return nil, storage.ObjectInfo{}, storage.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(b)), storage.ObjectInfo{Key: key, Size: int64(len(b))}, nil
}

func (f *fake) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := f.fail("getrange"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.objects[key]
	if !ok {
		return nil, storage.ErrNotFound
	}
	end := int64(len(b))
	if length >= 0 {
		end = min(end, offset+length)
	}
	return io.NopCloser(bytes.NewReader(b[offset:end])), nil
}

func (f *fake) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := f.fail("stat"); err != nil {
		return storage.ObjectInfo{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.objects[key]
	if !ok {
		return storage.ObjectInfo{}, fmt.Errorf("stat %q: %w", key, storage.ErrNotFound)
	}
	return storage.ObjectInfo{Key: key, Size: int64(len(b))}, nil
}

func (f *fake) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	f.mu.Lock()
	after := f.listFailAfter
	var keys []string
	for k := range f.objects {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	f.mu.Unlock()
	slices.Sort(keys)
	if after == 0 {
		if err := f.fail("list"); err != nil {
			return err
		}
	}
	for i, k := range keys {
		if after > 0 && i == after {
			if err := f.fail("list"); err != nil {
				return err
			}
		}
		if err := fn(storage.ObjectInfo{Key: k}); err != nil {
			return err
		}
	}
	return nil
}

func (f *fake) Delete(ctx context.Context, key string) error {
	if err := f.fail("delete"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.objects, key)
	return nil
}

func (f *fake) ReadSmall(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	if err := f.fail("read"); err != nil {
		return nil, "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.objects[key]
	if !ok {
		return nil, "", storage.ErrNotFound
	}
	if int64(len(b)) > limit {
		return nil, "", &storage.PermanentError{Err: errors.New("too large")}
	}
	return slices.Clone(b), fmt.Sprint(f.versions[key]), nil
}

// Swap fails before applying for fails["swap"], and after applying (the
// reply is lost) for fails["swap-lost"].
func (f *fake) Swap(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	if err := f.fail("swap"); err != nil {
		return "", err
	}
	f.mu.Lock()
	_, ok := f.objects[key]
	switch {
	case ifVersion == "" && ok:
		f.mu.Unlock()
		return "", storage.ErrExists
	case ifVersion != "" && (!ok || fmt.Sprint(f.versions[key]) != ifVersion):
		f.mu.Unlock()
		return "", storage.ErrChanged
	}
	f.objects[key] = slices.Clone(data)
	f.versions[key]++
	v := fmt.Sprint(f.versions[key])
	f.mu.Unlock()
	if err := f.fail("swap-lost"); err != nil {
		return "", err
	}
	return v, nil
}

func (f *fake) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// logBuf collects log records.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

var fast = Config{MaxElapsed: 300 * time.Millisecond, Initial: time.Millisecond, Max: 10 * time.Millisecond}

func newRetry(f *fake, cfg Config) (storage.Store, *logBuf) {
	lb := &logBuf{}
	return New(f, cfg, slog.New(slog.NewTextHandler(lb, nil))), lb
}

func TestSucceedsAfterRetries(t *testing.T) {
	f := newFake()
	f.objects["k"] = []byte("data")
	s, logs := newRetry(f, fast)
	ctx := t.Context()

	f.fails["stat"] = 3
	info, err := s.Stat(ctx, "k")
	if err != nil || info.Size != 4 {
		t.Fatalf("Stat: %+v, %v", info, err)
	}
	if n := f.count("stat"); n != 4 {
		t.Errorf("Stat: %d calls, want 4", n)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 3 {
		t.Errorf("%d warnings logged, want 3:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "key=k") || !strings.Contains(logs.String(), "connection reset") {
		t.Errorf("log lacks the key or the error:\n%s", logs)
	}

	f.fails["get"] = 2
	rc, _, err := s.Get(ctx, "k")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "data" {
		t.Errorf("Get: %q", b)
	}

	f.fails["getrange"] = 2
	rc, err = s.GetRange(ctx, "k", 1, 2)
	if err != nil {
		t.Fatalf("GetRange: %v", err)
	}
	b, _ = io.ReadAll(rc)
	rc.Close()
	if string(b) != "at" {
		t.Errorf("GetRange: %q", b)
	}

	f.fails["delete"] = 2
	if err := s.Delete(ctx, "k"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, ok := f.objects["k"]; ok {
		t.Error("Delete did not delete")
	}
}

func TestGivesUp(t *testing.T) {
	f := newFake()
	f.fails["stat"] = -1 // always
	s, _ := newRetry(f, fast)
	start := time.Now()
	_, err := s.Stat(t.Context(), "k")
	elapsed := time.Since(start)
	if !errors.Is(err, errTransient) {
		t.Fatalf("Stat: %v, want the last error wrapped", err)
	}
	if !strings.Contains(err.Error(), "giving up after") || !strings.Contains(err.Error(), fmt.Sprintf("%d attempts", f.count("stat"))) {
		t.Errorf("error %q does not say how many attempts were made", err)
	}
	if f.count("stat") < 5 {
		t.Errorf("only %d attempts in %v", f.count("stat"), elapsed)
	}
	// The upper bound only tells "gave up" from "kept retrying": a loaded
	// machine may run late, never early.
	if elapsed < fast.MaxElapsed || elapsed > fast.MaxElapsed+10*time.Second {
		t.Errorf("gave up after %v, want about %v", elapsed, fast.MaxElapsed)
	}
}

func TestNotRetried(t *testing.T) {
	ctx := t.Context()
	for name, failErr := range map[string]error{
		"permanent": &storage.PermanentError{Err: errors.New("access denied")},
		"exists":    storage.ErrExists,
		"canceled":  context.Canceled,
	} {
		f := newFake()
		f.failErr = failErr
		f.fails["stat"] = 1
		f.fails["put"] = 1
		s, _ := newRetry(f, fast)
		if _, err := s.Stat(ctx, "k"); !errors.Is(err, failErr) && !errors.As(err, new(*storage.PermanentError)) {
			t.Errorf("%s: Stat: %v", name, err)
		}
		if n := f.count("stat"); n != 1 {
			t.Errorf("%s: Stat: %d attempts, want 1", name, n)
		}
		if err := s.Put(ctx, "k", bytes.NewReader([]byte("x")), storage.PutOptions{Size: 1}); err == nil {
			t.Errorf("%s: Put succeeded", name)
		}
		if n := f.count("put"); n != 1 {
			t.Errorf("%s: Put: %d attempts, want 1", name, n)
		}
	}

	// Not found is an answer, not a failure.
	f := newFake()
	s, _ := newRetry(f, fast)
	if _, err := s.Stat(ctx, "missing"); !storage.IsNotFound(err) {
		t.Fatalf("Stat(missing): %v", err)
	}
	if _, _, err := s.Get(ctx, "missing"); !storage.IsNotFound(err) {
		t.Fatalf("Get(missing): %v", err)
	}
	if n := f.count("stat") + f.count("get"); n != 2 {
		t.Errorf("not-found: %d calls, want 2", n)
	}
}

func TestPutRetry(t *testing.T) {
	ctx := t.Context()
	f := newFake()
	s, _ := newRetry(f, fast)

	// A seekable reader is rewound to where it was for each attempt; a
	// conflict (409) is retried.
	f.failErr = storage.ErrConflict
	f.fails["put"] = 2
	r := strings.NewReader("skip:payload")
	r.Seek(5, io.SeekStart)
	if err := s.Put(ctx, "seek", r, storage.PutOptions{Size: -1}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if got := string(f.objects["seek"]); got != "payload" {
		t.Errorf("stored %q, want %q", got, "payload")
	}
	if n := f.count("put"); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}

	// Not seekable: one attempt.
	f.failErr = errTransient
	f.fails["put"] = 1
	err := s.Put(ctx, "pipe", io.MultiReader(strings.NewReader("data")), storage.PutOptions{Size: -1})
	if !errors.Is(err, errTransient) {
		t.Fatalf("Put of a non-seekable reader: %v", err)
	}
	if n := f.count("put"); n != 4 {
		t.Errorf("non-seekable: %d attempts in total, want 4", n)
	}
}

func TestListRetry(t *testing.T) {
	ctx := t.Context()
	f := newFake()
	for _, k := range []string{"a", "b", "c"} {
		f.objects[k] = nil
	}
	s, _ := newRetry(f, fast)

	// Failing before any object was delivered: restarted.
	f.fails["list"] = 2
	var got []string
	err := s.List(ctx, "", func(oi storage.ObjectInfo) error { got = append(got, oi.Key); return nil })
	if err != nil || !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("List: %q, %v", got, err)
	}

	// Failing after delivering objects: not restarted.
	f.listFailAfter = 2
	f.fails["list"] = 1
	got = nil
	err = s.List(ctx, "", func(oi storage.ObjectInfo) error { got = append(got, oi.Key); return nil })
	if !errors.Is(err, errTransient) || !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("List failing midway: %q, %v", got, err)
	}

	// fn's own error ends the listing.
	f.listFailAfter = 0
	stop := errors.New("stop")
	err = s.List(ctx, "", func(storage.ObjectInfo) error { return stop })
	if !errors.Is(err, stop) {
		t.Fatalf("List with failing fn: %v", err)
	}
}

func TestContextCancelDuringBackoff(t *testing.T) {
	f := newFake()
	f.fails["stat"] = -1
	s, _ := newRetry(f, Config{MaxElapsed: time.Minute, Initial: time.Second, Max: time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.Stat(ctx, "k")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("Stat: %v", err)
	}
	// Without the cancellation it would back off for a minute.
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestDefaults(t *testing.T) {
	s := New(newFake(), Config{}, nil).(*store)
	if s.cfg.MaxElapsed != DefaultMaxElapsed || s.cfg.Initial != DefaultInitial || s.cfg.Max != DefaultMax {
		t.Errorf("defaults: %+v", s.cfg)
	}
}

// The decorator is transparent: a wrapped store passes the conformance
// suite.
func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		return New(mem.New(t.Name()), Config{MaxElapsed: 5 * time.Second}, nil)
	})
}

func TestSwapLostReply(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	s, _ := newRetry(f, fast)
	v1, err := s.Swap(ctx, "lock", []byte("a"), "")
	if err != nil {
		t.Fatal(err)
	}
	// The create is applied but its reply is lost: the retry finds the
	// key taken, reads our own bytes back, and succeeds.
	f.fails["swap-lost"] = 1
	if _, err := s.Swap(ctx, "lock2", []byte("b"), ""); err != nil {
		t.Fatalf("create with a lost reply: %v", err)
	}
	f.fails["swap-lost"] = 1
	v2, err := s.Swap(ctx, "lock", []byte("c"), v1)
	if err != nil {
		t.Fatalf("replace with a lost reply: %v", err)
	}
	if b, v, err := s.ReadSmall(ctx, "lock", 10); err != nil || string(b) != "c" || v != v2 {
		t.Fatalf("after the replace: %q %q %v, want c %q", b, v, err, v2)
	}
	// A real loser is told so, even after a transient failure.
	f.fails["swap"] = 1
	if _, err := s.Swap(ctx, "lock", []byte("d"), v1); !errors.Is(err, storage.ErrChanged) {
		t.Fatalf("swap at a stale version: %v, want ErrChanged", err)
	}
	if b, _, _ := s.ReadSmall(ctx, "lock", 10); string(b) != "c" {
		t.Fatalf("a refused swap changed the object to %q", b)
	}
}

func TestPutLostReply(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	s, _ := newRetry(f, fast)
	f.fails["put-lost"] = 1
	if err := s.Put(ctx, "meta.json", bytes.NewReader([]byte("mine")), storage.PutOptions{Size: 4}); err != nil {
		t.Fatalf("a put whose first reply was lost: %v", err)
	}
	// Someone else's object under the key is still "exists".
	f.objects["other.json"] = []byte("theirs")
	f.fails["put"] = 1
	if err := s.Put(ctx, "other.json", bytes.NewReader([]byte("mine")), storage.PutOptions{Size: 4}); !storage.IsExists(err) {
		t.Fatalf("put over another object: %v, want ErrExists", err)
	}
	// A first attempt that finds the key taken is not second-guessed.
	if err := s.Put(ctx, "meta.json", bytes.NewReader([]byte("mine")), storage.PutOptions{Size: 4}); !storage.IsExists(err) {
		t.Fatalf("a plain duplicate put: %v, want ErrExists", err)
	}
}
