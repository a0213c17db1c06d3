package gcs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/faultproxy"
	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/storagetest"
)

var bucketSeq atomic.Int64

// newBucket creates a fresh bucket on srv.
func newBucket(t *testing.T, srv *testenv.GCSServer) string {
	t.Helper()
	name := fmt.Sprintf("pgark-test-%d", bucketSeq.Add(1))
	srv.CreateBucket(t, name)
	return name
}

// testConfig returns a Config for bucket on srv (no credentials, and
// nothing through the environment).
func testConfig(srv *testenv.GCSServer, bucket, prefix string) Config {
	return Config{Bucket: bucket, Prefix: prefix, Endpoint: srv.Endpoint, Anonymous: true}
}

func mustNew(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func storeFactory(srv *testenv.GCSServer, mod func(*Config)) func(t *testing.T) storage.Store {
	return func(t *testing.T) storage.Store {
		cfg := testConfig(srv, newBucket(t, srv), "repo/main")
		if mod != nil {
			mod(&cfg)
		}
		return mustNew(t, cfg)
	}
}

func TestConformance(t *testing.T) {
	srv := testenv.GCSStart(t)
	// Small chunks, so that the suite's large objects take the resumable
	// path with many chunks.
	storagetest.Run(t, storeFactory(srv, func(c *Config) { c.ChunkSize = ChunkAlign }))
}

func TestConformanceDefaultChunkNoPrefix(t *testing.T) {
	srv := testenv.GCSStart(t)
	storagetest.Run(t, storeFactory(srv, func(c *Config) { c.Prefix = "" }))
}

func TestProbeConditionalWrites(t *testing.T) {
	srv := testenv.GCSStart(t)
	s := mustNew(t, testConfig(srv, newBucket(t, srv), "p"))
	if err := s.ProbeConditionalWrites(t.Context()); err != nil {
		t.Fatalf("probe against fake-gcs-server: %v", err)
	}
	var left []string
	if err := s.List(t.Context(), "", func(oi storage.ObjectInfo) error { left = append(left, oi.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("the probe left objects behind: %v", left)
	}
}

// TestCreateOnlyResumable: an existing object is kept when a second Put
// goes up as a resumable upload of several chunks (ifGenerationMatch=0 is
// checked when the upload is finalised).
func TestCreateOnlyResumable(t *testing.T) {
	srv := testenv.GCSStart(t)
	s := mustNew(t, Config{Bucket: newBucket(t, srv), Endpoint: srv.Endpoint, Anonymous: true, ChunkSize: ChunkAlign})
	ctx := t.Context()
	first := bytes.Repeat([]byte("a"), 100)
	if err := s.Put(ctx, "k", bytes.NewReader(first), storage.PutOptions{Size: -1}); err != nil {
		t.Fatal(err)
	}
	second := bytes.Repeat([]byte("b"), 3*ChunkAlign+7)
	err := s.Put(ctx, "k", bytes.NewReader(second), storage.PutOptions{Size: -1})
	if !storage.IsExists(err) {
		t.Fatalf("second resumable Put: got %v, want ErrExists", err)
	}
	rc, _, err := s.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, first) {
		t.Fatalf("the object changed after a refused Put: %d bytes, %v", len(got), err)
	}
}

// TestNoSuchBucket: a missing bucket is a permanent error, never
// "not found", where the answer names the bucket (uploads, listings).
func TestNoSuchBucket(t *testing.T) {
	srv := testenv.GCSStart(t)
	s := mustNew(t, testConfig(srv, "pgark-missing-bucket", ""))
	ctx := t.Context()
	err := s.Put(ctx, "k", strings.NewReader("x"), storage.PutOptions{Size: 1})
	checkPermanent(t, "Put", err)
	err = s.List(ctx, "", func(storage.ObjectInfo) error { return nil })
	checkPermanent(t, "List", err)
	_, err = s.Swap(ctx, "lock", []byte("{}"), "")
	checkPermanent(t, "Swap", err)
	if err := s.ProbeConditionalWrites(ctx); err == nil {
		t.Error("probe of a missing bucket succeeded")
	}
}

func checkPermanent(t *testing.T, what string, err error) {
	t.Helper()
	var pe *storage.PermanentError
	switch {
	case err == nil:
		t.Errorf("%s in a missing bucket succeeded", what)
	case storage.IsNotFound(err):
		t.Errorf("%s in a missing bucket: not-found error %v", what, err)
	case !errors.As(err, &pe):
		t.Errorf("%s in a missing bucket: %v is not permanent", what, err)
	}
}

// TestServerDown: a refused connection is a transient error (retried by
// the decorator), not "not found" and not permanent.
func TestServerDown(t *testing.T) {
	testenv.EndToEnd(t) // no server: nothing listens on port 1
	s := mustNew(t, Config{Bucket: "pgark-any", Endpoint: "http://127.0.0.1:1/storage/v1/", Anonymous: true})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err := s.Stat(ctx, "k")
	if err == nil || storage.IsPermanent(err) {
		t.Fatalf("Stat with the server down: got %v, want a transient error", err)
	}
}

func TestParseURL(t *testing.T) {
	for _, c := range []struct{ in, bucket, prefix string }{
		{"gs://bkt", "bkt", ""},
		{"gs://bkt/", "bkt", ""},
		{"gs://my-bucket/a/b/", "my-bucket", "a/b"},
		{"gs://my.bucket_1//x", "my.bucket_1", "x"},
	} {
		b, p, err := ParseURL(c.in)
		if err != nil || b != c.bucket || p != c.prefix {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q, %q", c.in, b, p, err, c.bucket, c.prefix)
		}
	}
	for _, in := range []string{"s3://bkt", "gs://", "gs://ab", "gs://Upper", "gs://-bkt", "gs://bkt/a/../b", "gs://bkt?x=1", "gs://bkt/a/./b"} {
		if _, _, err := ParseURL(in); err == nil {
			t.Errorf("ParseURL(%q) succeeded", in)
		}
	}
}

func TestNewValidation(t *testing.T) {
	for _, cs := range []int{1, ChunkAlign + 1, MaxChunkSize + ChunkAlign, -ChunkAlign} {
		if _, err := New(t.Context(), Config{Bucket: "bkt", ChunkSize: cs, Anonymous: true}); err == nil {
			t.Errorf("New with chunk size %d succeeded", cs)
		}
	}
	s, err := New(t.Context(), Config{Bucket: "bkt", Prefix: "/a/b/", Anonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.String(); got != "gs://bkt/a/b" {
		t.Errorf("String() = %q", got)
	}
}

// TestStalledServer: a connection that goes silent fails the request after
// the read timeout (a retryable error), and a read of a body that stalls
// fails with a storage.ReadError, instead of hanging a wal-fetch forever.
func TestStalledServer(t *testing.T) {
	srv := testenv.GCSStart(t)
	bucket := newBucket(t, srv)
	proxy := faultproxy.StartTCP(t, srv.Host)
	cfg := Config{Bucket: bucket, Endpoint: "http://" + proxy.Addr + "/storage/v1/", Anonymous: true, ReadTimeout: time.Second}
	s := mustNew(t, cfg)
	ctx := t.Context()
	// Larger than what the kernel's socket buffers on both sides of the
	// proxy can hold (several MiB each with autotuning): else the whole
	// body may already be buffered when the stall begins.
	data := make([]byte, 48<<20)
	if err := s.Put(ctx, "big", bytes.NewReader(data), storage.PutOptions{Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}

	rc, _, err := s.Get(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	proxy.Stall(true)
	start := time.Now()
	_, err = io.Copy(io.Discard, rc)
	if !storage.IsReadError(err) {
		t.Errorf("read of a stalled body: %v, want a ReadError", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("read of a stalled body failed after %v", d)
	}

	start = time.Now()
	_, err = s.Stat(ctx, "big")
	if err == nil || storage.IsNotFound(err) || storage.IsPermanent(err) {
		t.Errorf("Stat against a stalled server: %v (want a retryable error)", err)
	}
	// The client retries (3 attempts), each bounded by the read timeout.
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Stat against a stalled server took %v", d)
	}
	proxy.Stall(false)
}
