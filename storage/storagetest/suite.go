// Package storagetest is the conformance suite that every storage.Store
// backend runs from its tests:
//
//	func TestConformance(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T) storage.Store { return newStore(t) })
//	}
//
// newStore is called once per subtest and must return an empty store that
// is cleaned up at t.Cleanup.
//
// Behaviour the suite pins down beyond the storage.Store documentation:
//   - Keys are '/'-separated non-empty segments (storage.ValidKey); "", a
//     leading or trailing '/', empty, "." and ".." segments, segments
//     starting with storage.TempPrefix and NUL bytes are rejected with an
//     error that is neither ErrNotFound nor ErrExists.
//   - Put fails, and stores nothing, when the reader fails, when the context
//     is cancelled, or when opts.Size >= 0 and the reader yields a different
//     number of bytes.
//   - GetRange: a length past the end is cut at the end; an offset at or
//     beyond the end of the object is an error that is not ErrNotFound,
//     except GetRange(key, 0, -1), which equals Get (also for an empty
//     object), and length 0, which gives an empty reader for any offset up
//     to the size. This is what S3 does (416 for an unsatisfiable range).
//   - Stat and Get of a key under which only other keys exist ("a" when
//     "a/b" exists) is ErrNotFound.
//   - A Stat or Get that found no metadata returns an empty (or nil) Meta.
//   - Swap and ReadSmall: versions change with every replacement; a Swap
//     at a version that is no longer current, or of a missing key, is
//     ErrChanged and changes nothing; ReadSmall of an object larger than
//     the limit is an error that is not ErrNotFound. Concurrent Swaps from
//     one version: exactly one wins.
package storagetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pgark/pgark/storage"
)

// Run runs the whole conformance suite. newStore must return a fresh, empty
// store for each call.
func Run(t *testing.T, newStore func(t *testing.T) storage.Store) {
	for _, tc := range createOnlyTests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
	for _, tc := range otherTests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

// RunCreateOnly runs the sequential subset of the suite: puts and reads
// without concurrent writers to the same key. It is meant for modes that
// cannot decide races between writers (the S3 head-then-put mode).
func RunCreateOnly(t *testing.T, newStore func(t *testing.T) storage.Store) {
	for _, tc := range createOnlyTests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

type test struct {
	name string
	fn   func(t *testing.T, s storage.Store)
}

var createOnlyTests = []test{
	{"PutGet", testPutGet},
	{"UnknownSize", testUnknownSize},
	{"CreateOnly", testCreateOnly},
	{"CreateOnlyLarge", testCreateOnlyLarge},
	{"ZeroByte", testZeroByte},
	{"Metadata", testMetadata},
	{"NotFound", testNotFound},
	{"FailingReader", testFailingReader},
	{"SizeMismatch", testSizeMismatch},
	{"CanceledPut", testCanceledPut},
	{"InvalidKeys", testInvalidKeys},
	{"Delete", testDelete},
	{"Swap", testSwap},
}

var otherTests = []test{
	{"GetRange", testGetRange},
	{"List", testList},
	{"ListPagination", testListPagination},
	{"Large", testLarge},
	{"ConcurrentPut", testConcurrentPut},
	{"ConcurrentPutLarge", testConcurrentPutLarge},
	{"ConcurrentSwap", testConcurrentSwap},
}

// onlyReader hides every method but Read (no Seek, no WriteTo, no Len).
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func put(t *testing.T, s storage.Store, key string, data []byte, meta map[string]string) {
	t.Helper()
	err := s.Put(t.Context(), key, bytes.NewReader(data), storage.PutOptions{Size: int64(len(data)), Meta: meta})
	if err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", key, len(data), err)
	}
}

func get(t *testing.T, s storage.Store, key string) ([]byte, storage.ObjectInfo) {
	t.Helper()
	rc, info, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q): read: %v", key, err)
	}
	return b, info
}

func getRange(t *testing.T, s storage.Store, key string, off, n int64) ([]byte, error) {
	t.Helper()
	rc, err := s.GetRange(t.Context(), key, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	if len(got) < 64 && len(want) < 64 {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
	t.Fatalf("%s: got %d bytes (sha256 %x), want %d bytes (sha256 %x)",
		what, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !storage.IsNotFound(err) {
		t.Fatalf("%s: got error %v, want a not-found error", what, err)
	}
}

func testPutGet(t *testing.T, s storage.Store) {
	for _, key := range []string{"obj", "a/obj", "a/b/c/d/e/obj", "0000000100000000000000A1.zst"} {
		data := []byte("payload of " + key)
		put(t, s, key, data, nil)
		got, info := get(t, s, key)
		sameBytes(t, "Get "+key, got, data)
		if info.Size != int64(len(data)) {
			t.Errorf("Get(%q): Size %d, want %d", key, info.Size, len(data))
		}
		st, err := s.Stat(t.Context(), key)
		if err != nil {
			t.Fatalf("Stat(%q): %v", key, err)
		}
		if st.Size != int64(len(data)) {
			t.Errorf("Stat(%q): Size %d, want %d", key, st.Size, len(data))
		}
		if st.ModTime.IsZero() {
			t.Errorf("Stat(%q): zero ModTime", key)
		}
	}
	if s.String() == "" {
		t.Error("String() is empty")
	}
}

func testUnknownSize(t *testing.T, s storage.Store) {
	data := randBytes(t, 300<<10)
	if err := s.Put(t.Context(), "u/obj", onlyReader{bytes.NewReader(data)}, storage.PutOptions{Size: -1}); err != nil {
		t.Fatalf("Put with Size -1: %v", err)
	}
	got, info := get(t, s, "u/obj")
	sameBytes(t, "Get", got, data)
	if info.Size != int64(len(data)) {
		t.Errorf("Get: Size %d, want %d", info.Size, len(data))
	}
}

func testCreateOnly(t *testing.T, s storage.Store) {
	put(t, s, "c/obj", []byte("first"), map[string]string{"n": "1"})
	err := s.Put(t.Context(), "c/obj", bytes.NewReader([]byte("second!")), storage.PutOptions{Size: 7, Meta: map[string]string{"n": "2"}})
	if !storage.IsExists(err) {
		t.Fatalf("second Put: got %v, want an exists error", err)
	}
	err = s.Put(t.Context(), "c/obj", onlyReader{strings.NewReader("third")}, storage.PutOptions{Size: -1})
	if !storage.IsExists(err) {
		t.Fatalf("third Put (unknown size): got %v, want an exists error", err)
	}
	got, info := get(t, s, "c/obj")
	sameBytes(t, "content after refused Puts", got, []byte("first"))
	if info.Meta["n"] != "1" {
		t.Errorf("metadata after refused Puts: %v", info.Meta)
	}
}

func testCreateOnlyLarge(t *testing.T, s storage.Store) {
	// Larger than one S3 part with the default part size: exercises the
	// conditional completion of a multipart upload.
	first := randBytes(t, 12<<20)
	second := randBytes(t, 12<<20)
	put(t, s, "cl/obj", first, nil)
	err := s.Put(t.Context(), "cl/obj", onlyReader{bytes.NewReader(second)}, storage.PutOptions{Size: -1})
	if !storage.IsExists(err) {
		t.Fatalf("second Put: got %v, want an exists error", err)
	}
	got, _ := get(t, s, "cl/obj")
	sameBytes(t, "content after refused Put", got, first)
}

func testZeroByte(t *testing.T, s storage.Store) {
	put(t, s, "z/exact", nil, map[string]string{"k": "v"})
	if err := s.Put(t.Context(), "z/unknown", onlyReader{bytes.NewReader(nil)}, storage.PutOptions{Size: -1}); err != nil {
		t.Fatalf("Put empty with Size -1: %v", err)
	}
	for _, key := range []string{"z/exact", "z/unknown"} {
		st, err := s.Stat(t.Context(), key)
		if err != nil {
			t.Fatalf("Stat(%q): %v", key, err)
		}
		if st.Size != 0 {
			t.Errorf("Stat(%q): Size %d", key, st.Size)
		}
		got, info := get(t, s, key)
		if len(got) != 0 || info.Size != 0 {
			t.Errorf("Get(%q): %d bytes, Size %d", key, len(got), info.Size)
		}
		b, err := getRange(t, s, key, 0, -1)
		if err != nil || len(b) != 0 {
			t.Errorf("GetRange(%q, 0, -1): %d bytes, %v", key, len(b), err)
		}
	}
	if st, _ := s.Stat(t.Context(), "z/exact"); st.Meta["k"] != "v" {
		t.Errorf("metadata of empty object: %v", st.Meta)
	}
	err := s.Put(t.Context(), "z/exact", bytes.NewReader(nil), storage.PutOptions{Size: 0})
	if !storage.IsExists(err) {
		t.Fatalf("second Put of empty object: got %v, want an exists error", err)
	}
}

func testMetadata(t *testing.T, s storage.Store) {
	data := []byte("with metadata")
	sum := sha256.Sum256(data)
	meta := map[string]string{
		storage.MetaSHA256: fmt.Sprintf("%x", sum),
		storage.MetaSize:   fmt.Sprint(len(data)),
		"pgark-codec":      "zstd",
		"x-1":              "Mixed Case, spaces & symbols: ~!@#$%^*()_+=;'",
	}
	put(t, s, "m/obj", data, meta)
	st, err := s.Stat(t.Context(), "m/obj")
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(st.Meta, meta) {
		t.Errorf("Stat Meta = %v, want %v", st.Meta, meta)
	}
	if st.Key != "m/obj" {
		t.Errorf("Stat Key = %q", st.Key)
	}
	got, info := get(t, s, "m/obj")
	sameBytes(t, "Get", got, data)
	if !maps.Equal(info.Meta, meta) {
		t.Errorf("Get Meta = %v, want %v", info.Meta, meta)
	}

	put(t, s, "m/none", data, nil)
	st, err = s.Stat(t.Context(), "m/none")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Meta) != 0 {
		t.Errorf("Stat of object without metadata: Meta = %v", st.Meta)
	}

	for _, bad := range []map[string]string{{"Upper": "x"}, {"a_b": "x"}, {"k": "line\nbreak"}, {"": "x"}} {
		err := s.Put(t.Context(), "m/bad", bytes.NewReader(data), storage.PutOptions{Size: -1, Meta: bad})
		if err == nil {
			t.Errorf("Put with invalid metadata %q succeeded", bad)
		}
	}
	_, err = s.Stat(t.Context(), "m/bad")
	wantNotFound(t, "Stat after invalid metadata", err)
}

func testNotFound(t *testing.T, s storage.Store) {
	ctx := t.Context()
	_, err := s.Stat(ctx, "missing")
	wantNotFound(t, "Stat(missing)", err)
	_, _, err = s.Get(ctx, "no/such/dir/missing")
	wantNotFound(t, "Get(no/such/dir/missing)", err)
	_, err = s.GetRange(ctx, "missing", 0, 10)
	wantNotFound(t, "GetRange(missing)", err)
	_, err = s.GetRange(ctx, "missing", 0, -1)
	wantNotFound(t, "GetRange(missing, 0, -1)", err)

	put(t, s, "dir/obj", []byte("x"), nil)
	_, err = s.Stat(ctx, "dir")
	wantNotFound(t, "Stat of a key prefix", err)
	_, _, err = s.Get(ctx, "dir")
	wantNotFound(t, "Get of a key prefix", err)
	_, err = s.Stat(ctx, "dir/obj/below")
	wantNotFound(t, "Stat below an object", err)
	_, err = s.Stat(ctx, "dir/ob")
	wantNotFound(t, "Stat of a name prefix", err)
}

type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func testFailingReader(t *testing.T, s storage.Store) {
	boom := errors.New("boom: the source failed")
	for _, n := range []int{0, 100 << 10, 12 << 20} {
		key := fmt.Sprintf("f/obj-%d", n)
		for _, size := range []int64{-1, int64(n) + 1000} {
			r := &failingReader{data: randBytes(t, n), err: boom}
			err := s.Put(t.Context(), key, r, storage.PutOptions{Size: size})
			if err == nil {
				t.Fatalf("Put(%q) with a reader failing after %d bytes succeeded", key, n)
			}
			if !errors.Is(err, boom) {
				t.Errorf("Put(%q): error %v does not wrap the reader's error", key, err)
			}
			_, err = s.Stat(t.Context(), key)
			wantNotFound(t, "Stat after failed Put", err)
		}
	}
	// The key is still free.
	put(t, s, "f/obj-0", []byte("ok"), nil)
}

func testSizeMismatch(t *testing.T, s storage.Store) {
	for _, c := range []struct {
		n    int
		size int64
	}{{50, 100}, {100, 50}, {0, 1}, {1, 0}, {9 << 20, 9<<20 + 1}, {9 << 20, 9<<20 - 1}, {9 << 20, 1 << 20}} {
		key := fmt.Sprintf("s/obj-%d-%d", c.n, c.size)
		err := s.Put(t.Context(), key, onlyReader{bytes.NewReader(randBytes(t, c.n))}, storage.PutOptions{Size: c.size})
		if err == nil {
			t.Fatalf("Put of %d bytes with Size %d succeeded", c.n, c.size)
		}
		if storage.IsExists(err) || storage.IsNotFound(err) {
			t.Errorf("Put of %d bytes with Size %d: unexpected error kind: %v", c.n, c.size, err)
		}
		_, err = s.Stat(t.Context(), key)
		wantNotFound(t, "Stat after size mismatch", err)
	}
}

func testCanceledPut(t *testing.T, s storage.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.Put(ctx, "x/obj", bytes.NewReader([]byte("data")), storage.PutOptions{Size: 4})
	if err == nil {
		t.Fatal("Put with a cancelled context succeeded")
	}
	_, err = s.Stat(t.Context(), "x/obj")
	wantNotFound(t, "Stat after cancelled Put", err)

	// Cancelled halfway through the data.
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	go func() {
		pw.Write(randBytes(t, 64<<10))
		cancel()
		pw.Write(randBytes(t, 64<<10))
		pw.Close()
	}()
	err = s.Put(ctx, "x/obj2", pr, storage.PutOptions{Size: -1})
	pr.CloseWithError(errors.New("test over"))
	if err == nil {
		// The backend may have read everything before it noticed the
		// cancellation; then the object must be complete.
		got, _ := get(t, s, "x/obj2")
		if len(got) != 128<<10 {
			t.Fatalf("Put cancelled halfway succeeded with %d bytes", len(got))
		}
		return
	}
	_, err = s.Stat(t.Context(), "x/obj2")
	wantNotFound(t, "Stat after cancelled Put", err)
}

func testInvalidKeys(t *testing.T, s storage.Store) {
	for _, key := range []string{"", "/abs", "a//b", "a/../b", "../a", "a/..", "a/./b", ".", "a/", "a\x00b", ".tmp-x", "a/.tmp-swap-b", "a/.tmp-/b"} {
		err := s.Put(t.Context(), key, bytes.NewReader([]byte("x")), storage.PutOptions{Size: 1})
		if err == nil {
			t.Errorf("Put(%q) succeeded", key)
			continue
		}
		if storage.IsExists(err) || storage.IsNotFound(err) {
			t.Errorf("Put(%q): error %v, want an invalid-key error", key, err)
		}
		if _, err := s.Stat(t.Context(), key); err == nil || storage.IsNotFound(err) {
			t.Errorf("Stat(%q): error %v, want an invalid-key error", key, err)
		}
	}
	var n int
	if err := s.List(t.Context(), "", func(storage.ObjectInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("store holds %d objects after invalid Puts", n)
	}
}

func testDelete(t *testing.T, s storage.Store) {
	ctx := t.Context()
	put(t, s, "d/a/obj", []byte("x"), nil)
	put(t, s, "d/a/other", []byte("y"), nil)
	if err := s.Delete(ctx, "d/a/obj"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err := s.Stat(ctx, "d/a/obj")
	wantNotFound(t, "Stat after Delete", err)
	if err := s.Delete(ctx, "d/a/obj"); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if err := s.Delete(ctx, "never/was/here"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if got, _ := get(t, s, "d/a/other"); string(got) != "y" {
		t.Fatalf("other object changed: %q", got)
	}
	// A deleted key can be written again.
	put(t, s, "d/a/obj", []byte("again"), nil)
	if got, _ := get(t, s, "d/a/obj"); string(got) != "again" {
		t.Fatalf("after re-put: %q", got)
	}
}

func testGetRange(t *testing.T, s storage.Store) {
	data := randBytes(t, 100<<10)
	size := int64(len(data))
	put(t, s, "r/obj", data, map[string]string{"k": "v"})
	for _, c := range []struct{ off, n int64 }{
		{0, 1}, {10, 100}, {1000, -1}, {0, -1}, {0, size}, {size - 10, 100}, {size - 1, -1}, {5, 0}, {size, 0},
	} {
		got, err := getRange(t, s, "r/obj", c.off, c.n)
		if err != nil {
			t.Fatalf("GetRange(%d, %d): %v", c.off, c.n, err)
		}
		end := size
		if c.n >= 0 {
			end = min(c.off+c.n, size)
		}
		sameBytes(t, fmt.Sprintf("GetRange(%d, %d)", c.off, c.n), got, data[c.off:end])
	}
	for _, c := range []struct{ off, n int64 }{{size, -1}, {size, 10}, {size + 5, 10}, {size + 5, -1}, {-1, 10}} {
		_, err := getRange(t, s, "r/obj", c.off, c.n)
		if err == nil {
			t.Errorf("GetRange(%d, %d) beyond the end succeeded", c.off, c.n)
		} else if storage.IsNotFound(err) {
			t.Errorf("GetRange(%d, %d) beyond the end: not-found error %v", c.off, c.n, err)
		}
	}
}

func listKeys(t *testing.T, s storage.Store, prefix string) []string {
	t.Helper()
	var keys []string
	err := s.List(t.Context(), prefix, func(oi storage.ObjectInfo) error {
		if oi.Meta != nil {
			t.Errorf("List(%q): Meta filled for %q", prefix, oi.Key)
		}
		keys = append(keys, oi.Key)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return keys
}

func testList(t *testing.T, s storage.Store) {
	// Chosen so that key order differs from a naive directory walk:
	// '-' < '.' < '/' < '0'.
	keys := []string{"l/a-b", "l/a.b", "l/a/1", "l/a/2/x", "l/a0", "l/b", "l/bb/c/d", "lx", "m"}
	sizes := map[string]int{}
	for i, k := range slices.Backward(keys) {
		put(t, s, k, bytes.Repeat([]byte{'x'}, i*10), map[string]string{"k": "v"})
		sizes[k] = i * 10
	}
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", keys},
		{"l", keys[:8]},
		{"l/", keys[:7]},
		{"l/a", keys[:5]},
		{"l/a/", keys[2:4]},
		{"l/a/2", keys[3:4]},
		{"l/a/2/x", keys[3:4]},
		{"l/a/2/x/", nil},
		{"l/b", keys[5:7]},
		{"l/c", nil},
		{"nothing/", nil},
	} {
		got := listKeys(t, s, c.prefix)
		if !slices.Equal(got, c.want) {
			t.Errorf("List(%q) = %q, want %q", c.prefix, got, c.want)
		}
	}
	err := s.List(t.Context(), "", func(oi storage.ObjectInfo) error {
		if oi.Size != int64(sizes[oi.Key]) {
			t.Errorf("List: %q has Size %d, want %d", oi.Key, oi.Size, sizes[oi.Key])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	var n int
	err = s.List(t.Context(), "", func(storage.ObjectInfo) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Errorf("List with fn failing at the 3rd object: %d calls, error %v", n, err)
	}
}

func testListPagination(t *testing.T, s storage.Store) {
	const n = 1100 // more than one S3 page (1000)
	keys := make([]string, n)
	for i := range keys {
		// WAL-like names below two directory levels.
		keys[i] = fmt.Sprintf("wal/0000000100000000/00000001%08X%08X", i/256, i%256)
	}
	keys = append(keys, "wal/0000000100000001/000000010000000100000000", "wal0")
	var wg sync.WaitGroup
	work := make(chan string)
	errs := make(chan error, len(keys))
	for range 8 {
		wg.Go(func() {
			for k := range work {
				if err := s.Put(t.Context(), k, strings.NewReader(k), storage.PutOptions{Size: int64(len(k))}); err != nil {
					errs <- fmt.Errorf("Put(%q): %w", k, err)
				}
			}
		})
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.Sort(keys)
	if got := listKeys(t, s, ""); !slices.Equal(got, keys) {
		t.Fatalf("List(\"\"): %d keys, want %d (first difference near %q)", len(got), len(keys), firstDiff(got, keys))
	}
	if got := listKeys(t, s, "wal/0000000100000000/"); !slices.Equal(got, keys[:n]) {
		t.Fatalf("List(dir): %d keys, want %d (first difference near %q)", len(got), n, firstDiff(got, keys[:n]))
	}
	// A prefix ending in the middle of a name: segments 0x300..0x3FF.
	prefix := "wal/0000000100000000/0000000100000003"
	var want []string
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			want = append(want, k)
		}
	}
	if len(want) != 256 {
		t.Fatalf("test bug: %d keys under %q", len(want), prefix)
	}
	if got := listKeys(t, s, prefix); !slices.Equal(got, want) {
		t.Fatalf("List(%q): %d keys, want %d (first difference near %q)", prefix, len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return a[i] + " / " + b[i]
		}
	}
	if len(a) > len(b) {
		return a[len(b)]
	}
	if len(b) > len(a) {
		return b[len(a)]
	}
	return ""
}

func testLarge(t *testing.T, s storage.Store) {
	data := randBytes(t, 20<<20)
	size := int64(len(data))
	put(t, s, "big/exact", data, map[string]string{"k": "v"})
	if err := s.Put(t.Context(), "big/stream", onlyReader{bytes.NewReader(data)}, storage.PutOptions{Size: -1, Meta: map[string]string{"k": "w"}}); err != nil {
		t.Fatalf("Put 20 MiB with Size -1: %v", err)
	}
	for key, v := range map[string]string{"big/exact": "v", "big/stream": "w"} {
		got, info := get(t, s, key)
		sameBytes(t, "Get "+key, got, data)
		if info.Size != size || info.Meta["k"] != v {
			t.Errorf("Get(%q): Size %d, Meta %v", key, info.Size, info.Meta)
		}
		st, err := s.Stat(t.Context(), key)
		if err != nil || st.Size != size || st.Meta["k"] != v {
			t.Errorf("Stat(%q): %+v, %v", key, st, err)
		}
		// Across the 8 MiB boundary of S3 parts.
		off := int64(8<<20) - 100
		b, err := getRange(t, s, key, off, 200)
		if err != nil {
			t.Fatalf("GetRange: %v", err)
		}
		sameBytes(t, "GetRange across a part boundary", b, data[off:off+200])
		b, err = getRange(t, s, key, size-1000, -1)
		if err != nil {
			t.Fatalf("GetRange: %v", err)
		}
		sameBytes(t, "GetRange to the end", b, data[size-1000:])
	}
}

func concurrentPut(t *testing.T, s storage.Store, writers, size int) {
	const key = "race/obj"
	datas := make([][]byte, writers)
	for i := range datas {
		datas[i] = randBytes(t, size)
	}
	errs := make([]error, writers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		wg.Go(func() {
			<-start
			errs[i] = s.Put(t.Context(), key, bytes.NewReader(datas[i]), storage.PutOptions{Size: int64(size)})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("writers %d and %d both succeeded", winner, i)
			}
			winner = i
		case storage.IsExists(err), errors.Is(err, storage.ErrConflict):
		default:
			t.Errorf("writer %d: unexpected error %v", i, err)
		}
	}
	if winner < 0 {
		// Every writer may have lost to a conflict (S3 409); then nothing
		// must be stored.
		_, err := s.Stat(t.Context(), key)
		if err == nil {
			t.Fatalf("no writer succeeded, yet an object exists (errors: %v)", errs)
		}
		wantNotFound(t, "Stat after all writers failed", err)
		return
	}
	got, _ := get(t, s, key)
	sameBytes(t, "stored object", got, datas[winner])
}

func testConcurrentPut(t *testing.T, s storage.Store) {
	for range 3 {
		concurrentPut(t, s, 8, 256<<10)
		if err := s.Delete(t.Context(), "race/obj"); err != nil {
			t.Fatal(err)
		}
	}
}

func testConcurrentPutLarge(t *testing.T, s storage.Store) {
	// Multipart uploads on S3 with the default part size.
	concurrentPut(t, s, 3, 9<<20)
}

func readSmall(t *testing.T, s storage.Store, key string) ([]byte, string) {
	t.Helper()
	b, v, err := s.ReadSmall(context.Background(), key, 1<<20)
	if err != nil {
		t.Fatalf("ReadSmall(%q): %v", key, err)
	}
	if v == "" {
		t.Fatalf("ReadSmall(%q): empty version", key)
	}
	return b, v
}

func testSwap(t *testing.T, s storage.Store) {
	ctx := context.Background()
	const key = "locks/lock.json"
	if _, _, err := s.ReadSmall(ctx, key, 100); !storage.IsNotFound(err) {
		t.Fatalf("ReadSmall of a missing key: %v, want ErrNotFound", err)
	}
	v1, err := s.Swap(ctx, key, []byte(`{"n":1}`), "")
	if err != nil {
		t.Fatalf("Swap create: %v", err)
	}
	b, v := readSmall(t, s, key)
	sameBytes(t, "after create", b, []byte(`{"n":1}`))
	if v != v1 {
		t.Fatalf("ReadSmall version %q, Swap returned %q", v, v1)
	}
	if _, err := s.Swap(ctx, key, []byte(`{"n":9}`), ""); !storage.IsExists(err) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	v2, err := s.Swap(ctx, key, []byte(`{"n":2}`), v1)
	if err != nil {
		t.Fatalf("Swap at the current version: %v", err)
	}
	if v2 == v1 {
		t.Fatalf("version unchanged after a replacement: %q", v2)
	}
	b, v = readSmall(t, s, key)
	sameBytes(t, "after replace", b, []byte(`{"n":2}`))
	if v != v2 {
		t.Fatalf("ReadSmall version %q, Swap returned %q", v, v2)
	}
	if _, err := s.Swap(ctx, key, []byte(`{"n":3}`), v1); !errors.Is(err, storage.ErrChanged) {
		t.Fatalf("Swap at a stale version: %v, want ErrChanged", err)
	}
	b, _ = readSmall(t, s, key)
	sameBytes(t, "after a refused swap", b, []byte(`{"n":2}`))
	// Same bytes again is still a new write, and the object reads the same.
	if _, err := s.Swap(ctx, key, []byte(`{"n":2}`), v2); err != nil {
		t.Fatalf("Swap of identical bytes: %v", err)
	}
	if _, err := s.Swap(ctx, "locks/missing.json", []byte(`{}`), v2); !errors.Is(err, storage.ErrChanged) {
		t.Fatalf("Swap of a missing key: %v, want ErrChanged", err)
	}
	if _, _, err := s.ReadSmall(ctx, key, 3); err == nil || storage.IsNotFound(err) {
		t.Fatalf("ReadSmall over the limit: %v, want an error other than not found", err)
	}
	// Swapped objects are ordinary objects to Get, List and Delete.
	got, _ := get(t, s, key)
	sameBytes(t, "Get of a swapped object", got, []byte(`{"n":2}`))
	if keys := listKeys(t, s, "locks/"); !slices.Equal(keys, []string{key}) {
		t.Fatalf("List after swaps: %q, want only %q", keys, key)
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Swap(ctx, key, []byte(`{"n":4}`), ""); err != nil {
		t.Fatalf("create after delete: %v", err)
	}
}

func testConcurrentSwap(t *testing.T, s storage.Store) {
	ctx := context.Background()
	const key = "locks/race.json"
	v, err := s.Swap(ctx, key, []byte("0"), "")
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		const n = 6
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			wins []string
		)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				data := fmt.Sprintf("round %d writer %d", round, i)
				nv, err := s.Swap(ctx, key, []byte(data), v)
				switch {
				case err == nil:
					mu.Lock()
					wins = append(wins, data+"\x00"+nv)
					mu.Unlock()
				case errors.Is(err, storage.ErrChanged), errors.Is(err, storage.ErrConflict):
				default:
					t.Errorf("Swap: %v", err)
				}
			}(i)
		}
		wg.Wait()
		if len(wins) != 1 {
			t.Fatalf("round %d: %d writers won the swap from one version, want 1", round, len(wins))
		}
		data, nv, _ := strings.Cut(wins[0], "\x00")
		b, cur := readSmall(t, s, key)
		sameBytes(t, "the winner's bytes", b, []byte(data))
		if cur != nv {
			t.Fatalf("version %q, the winner got %q", cur, nv)
		}
		v = nv
	}
}
