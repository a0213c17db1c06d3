package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/storagetest"
)

var bucketSeq atomic.Int64

// newBucket creates a fresh bucket on srv.
func newBucket(t *testing.T, srv *testenv.S3Server) string {
	t.Helper()
	name := fmt.Sprintf("pgark-test-%d", bucketSeq.Add(1))
	srv.CreateBucket(t, name)
	return name
}

// testConfig returns a Config for bucket on srv with static credentials (so
// nothing leaks through the environment into other tests).
func testConfig(srv *testenv.S3Server, bucket, prefix string) Config {
	return Config{
		Bucket:         bucket,
		Prefix:         prefix,
		Endpoint:       srv.Endpoint,
		Region:         srv.Region,
		ForcePathStyle: true,
		AccessKey:      srv.AccessKey,
		SecretKey:      srv.SecretKey,
	}
}

func mustNew(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func storeFactory(srv *testenv.S3Server, mod func(*Config)) func(t *testing.T) storage.Store {
	return func(t *testing.T) storage.Store {
		cfg := testConfig(srv, newBucket(t, srv), "repo/main")
		if mod != nil {
			mod(&cfg)
		}
		return mustNew(t, cfg)
	}
}

func TestConformance(t *testing.T) {
	srv := testenv.S3Start(t)
	storagetest.Run(t, storeFactory(srv, nil))
}

func TestConformanceWhenRequired(t *testing.T) {
	srv := testenv.S3Start(t)
	storagetest.Run(t, storeFactory(srv, func(c *Config) {
		c.RequestChecksum = ChecksumWhenRequired
		c.Prefix = "" // and without a prefix
	}))
}

func TestConformanceHeadThenPut(t *testing.T) {
	srv := testenv.S3Start(t)
	storagetest.RunCreateOnly(t, storeFactory(srv, func(c *Config) { c.Conditional = ConditionalHeadThenPut }))
}

func TestProbeConditionalWrites(t *testing.T) {
	srv := testenv.S3Start(t)
	bucket := newBucket(t, srv)
	for _, mode := range []string{ChecksumWhenSupported, ChecksumWhenRequired} {
		cfg := testConfig(srv, bucket, "probe")
		cfg.RequestChecksum = mode
		s := mustNew(t, cfg)
		if err := s.ProbeConditionalWrites(t.Context()); err != nil {
			t.Fatalf("%s: ProbeConditionalWrites: %v", mode, err)
		}
	}
	// The probe objects and uploads are gone.
	client := srv.S3Client()
	objs, err := client.ListObjectsV2(t.Context(), &awss3.ListObjectsV2Input{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Contents) != 0 {
		t.Errorf("probe left %d objects, first %q", len(objs.Contents), aws.ToString(objs.Contents[0].Key))
	}
	ups, err := client.ListMultipartUploads(t.Context(), &awss3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 0 {
		t.Errorf("probe left %d multipart uploads", len(ups.Uploads))
	}
}

func TestWrongCredentials(t *testing.T) {
	srv := testenv.S3Start(t)
	bucket := newBucket(t, srv)
	good := mustNew(t, testConfig(srv, bucket, "p"))
	if err := good.Put(t.Context(), "obj", strings.NewReader("x"), storage.PutOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"wrong secret": func(c *Config) { c.SecretKey = "not-the-secret" },
		"unknown key":  func(c *Config) { c.AccessKey = "nosuchaccesskey" },
	} {
		cfg := testConfig(srv, bucket, "p")
		mod(&cfg)
		s := mustNew(t, cfg)
		check := func(op string, err error) {
			t.Helper()
			if err == nil || storage.IsNotFound(err) || !storage.IsPermanent(err) {
				t.Errorf("%s: %s: got %v, want a permanent error that is not not-found", name, op, err)
			}
		}
		for _, key := range []string{"obj", "missing"} {
			_, err := s.Stat(t.Context(), key)
			if name == "unknown key" {
				// versitygw answers an unknown access key with 404
				// XAdminUserNotFound (AWS: 403 InvalidAccessKeyId); a
				// HEAD response has no body, so that 404 cannot be told
				// from a missing key.
				t.Logf("%s: Stat %s: %v", name, key, err)
			} else {
				check("Stat "+key, err)
			}
			_, _, err = s.Get(t.Context(), key)
			check("Get "+key, err)
		}
		check("Put", s.Put(t.Context(), "new", strings.NewReader("x"), storage.PutOptions{Size: 1}))
		check("List", s.List(t.Context(), "", func(storage.ObjectInfo) error { return nil }))
		check("Delete", s.Delete(t.Context(), "obj"))
	}
}

func TestNoSuchBucket(t *testing.T) {
	srv := testenv.S3Start(t)
	s := mustNew(t, testConfig(srv, "no-such-bucket", "p"))
	check := func(op string, err error) {
		t.Helper()
		if err == nil || storage.IsNotFound(err) || !storage.IsPermanent(err) || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("%s: got %v, want a permanent error naming the missing bucket", op, err)
		}
	}
	_, _, err := s.Get(t.Context(), "obj")
	check("Get", err)
	check("Put", s.Put(t.Context(), "obj", strings.NewReader("x"), storage.PutOptions{Size: 1}))
	check("List", s.List(t.Context(), "", func(storage.ObjectInfo) error { return nil }))
	// Stat (HEAD) cannot tell: S3 answers a bodiless 404 (see the package
	// documentation).
	_, err = s.Stat(t.Context(), "obj")
	t.Logf("Stat in a missing bucket: %v", err)
}

func TestMultipartAbortedOnFailure(t *testing.T) {
	srv := testenv.S3Start(t)
	bucket := newBucket(t, srv)
	s := mustNew(t, testConfig(srv, bucket, "p"))
	boom := errors.New("boom")
	data := make([]byte, 20<<20)
	rand.Read(data)
	r := io.MultiReader(bytes.NewReader(data), errReader{boom})
	err := s.Put(t.Context(), "obj", r, storage.PutOptions{Size: -1})
	if !errors.Is(err, boom) {
		t.Fatalf("Put: %v", err)
	}
	ups, err := srv.S3Client().ListMultipartUploads(t.Context(), &awss3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 0 {
		t.Errorf("%d multipart uploads left after a failed Put", len(ups.Uploads))
	}
	// Refused completion (412): the upload is aborted too.
	if err := s.Put(t.Context(), "obj2", bytes.NewReader(data), storage.PutOptions{Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	err = s.Put(t.Context(), "obj2", bytes.NewReader(data), storage.PutOptions{Size: int64(len(data))})
	if !storage.IsExists(err) {
		t.Fatalf("second Put: %v", err)
	}
	ups, err = srv.S3Client().ListMultipartUploads(t.Context(), &awss3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 0 {
		t.Errorf("%d multipart uploads left after a refused Put", len(ups.Uploads))
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestPartSizeOption(t *testing.T) {
	srv := testenv.S3Start(t)
	bucket := newBucket(t, srv)
	cfg := testConfig(srv, bucket, "")
	cfg.PartSize = 5 << 20
	s := mustNew(t, cfg)
	data := make([]byte, 11<<20+123) // three parts
	rand.Read(data)
	if err := s.Put(t.Context(), "obj", onlyReader{bytes.NewReader(data)}, storage.PutOptions{Size: -1}); err != nil {
		t.Fatal(err)
	}
	rc, _, err := s.Get(t.Context(), "obj")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	for _, ps := range []int64{1 << 20, 6 << 30} {
		cfg.PartSize = ps
		if _, err := New(t.Context(), cfg); err == nil {
			t.Errorf("New with part size %d succeeded", ps)
		}
	}
}

type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// A server that accepts connections and never answers must not hang a call.
func TestStalledServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // read nothing, answer nothing
		}
	}()
	cfg := Config{
		Bucket: "bucket", Endpoint: "http://" + l.Addr().String(), Region: "us-east-1",
		ForcePathStyle: true, AccessKey: "a", SecretKey: "b", ReadTimeout: time.Second,
	}
	s := mustNew(t, cfg)
	start := time.Now()
	_, err = s.Stat(t.Context(), "obj")
	if err == nil || storage.IsNotFound(err) || storage.IsPermanent(err) {
		t.Errorf("Stat against a stalled server: %v (want a retryable error)", err)
	}
	// The SDK retries (3 attempts), each bounded by the read timeout.
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Stat took %v", d)
	}

	// Cancellation aborts an in-flight call at once.
	cfg.ReadTimeout = time.Hour
	s = mustNew(t, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	err = s.Put(ctx, "obj", strings.NewReader("data"), storage.PutOptions{Size: 4})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Put with an expiring context: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancelled Put took %v", d)
	}
}

func TestParseURL(t *testing.T) {
	for _, c := range []struct{ in, bucket, prefix string }{
		{"s3://bucket", "bucket", ""},
		{"s3://bucket/", "bucket", ""},
		{"s3://bucket/some/prefix", "bucket", "some/prefix"},
		{"s3://bucket/some/prefix/", "bucket", "some/prefix"},
		{"s3://my.bucket-1/p", "my.bucket-1", "p"},
	} {
		b, p, err := ParseURL(c.in)
		if err != nil || b != c.bucket || p != c.prefix {
			t.Errorf("ParseURL(%q) = %q, %q, %v", c.in, b, p, err)
		}
	}
	for _, in := range []string{"", "bucket/prefix", "http://bucket/p", "s3://", "s3:///p", "s3://b/p",
		"s3://bucket/a//b", "s3://bucket/a/../b", "s3://bucket?x=1", "s3://bu cket/p", "S3://bucket"} {
		if b, p, err := ParseURL(in); err == nil {
			t.Errorf("ParseURL(%q) = %q, %q, want an error", in, b, p)
		}
	}
}

func TestNewValidation(t *testing.T) {
	base := Config{Bucket: "bucket", Region: "us-east-1", AccessKey: "a", SecretKey: "b"}
	for name, mod := range map[string]func(*Config){
		"no bucket":     func(c *Config) { c.Bucket = "" },
		"checksum mode": func(c *Config) { c.RequestChecksum = "always" },
		"conditional":   func(c *Config) { c.Conditional = "none" },
		"prefix":        func(c *Config) { c.Prefix = "a//b" },
	} {
		cfg := base
		mod(&cfg)
		if _, err := New(t.Context(), cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	for prefix, want := range map[string]string{"": "s3://bucket", "/a/b/": "s3://bucket/a/b", "a": "s3://bucket/a"} {
		cfg := base
		cfg.Prefix = prefix
		s := mustNew(t, cfg)
		if s.String() != want {
			t.Errorf("String() = %q, want %q", s.String(), want)
		}
	}
}

func TestPartSizeFor(t *testing.T) {
	s := &Store{partSize: 8 << 20}
	for _, c := range []struct {
		size int64
		num  int
		want int64
	}{
		{-1, 1, 8 << 20}, {-1, 1000, 8 << 20}, {-1, 1001, 16 << 20}, {-1, 2001, 32 << 20}, {-1, 10000, 4 << 30},
		{100, 1, 8 << 20}, {80 << 30, 1, 9 << 20}, {1 << 40, 1, 105 << 20},
	} {
		if got := s.partSizeFor(c.size, c.num); got != c.want {
			t.Errorf("partSizeFor(%d, %d) = %d, want %d", c.size, c.num, got, c.want)
		}
	}
	// Unknown size: 10000 parts reach beyond 5 TiB.
	var total int64
	for n := 1; n <= maxParts; n++ {
		total += s.partSizeFor(-1, n)
	}
	if total < 5<<40 {
		t.Errorf("10000 parts hold only %d bytes", total)
	}
}
