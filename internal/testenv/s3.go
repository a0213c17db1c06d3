package testenv

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3Version is the versitygw release that `make deps` installs.
const S3Version = "v1.8.0"

// S3Server is a running S3 test server: versitygw with a posix backend in a
// temporary directory, listening on 127.0.0.1. Buckets are directories of
// Dir.
type S3Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Region    string
	Dir       string // the posix backend's root: one directory per bucket

	process
}

// S3BinPath returns the path of the versitygw binary:
// $PGARK_VERSITYGW, else $PGARK_CACHE/bin/versitygw (default
// /opt/pgark-cache/bin/versitygw).
func S3BinPath() string { return serverBin("PGARK_VERSITYGW", "bin", "versitygw") }

// S3Start starts versitygw on 127.0.0.1 and a free port with a posix
// backend in a temporary directory, waits until it answers, and stops it at
// t.Cleanup; its log is printed if the test failed. It is an end-to-end
// helper: skipped with -short, and a missing binary skips the test (fails
// it with $PGARK_TEST_REQUIRE=1).
func S3Start(t testing.TB) *S3Server {
	t.Helper()
	bin := serverBinFor(t, S3BinPath(), "S3 test server")
	s := newS3Server(t, "s3", "versitygw", "versitygw.log")
	s.serve(t, func(port int) error { return s.start(bin, port) })
	return s
}

// newS3Server returns an S3Server with the test credentials for the
// program name, its data in directory dir and its output in file log, both
// in a new temporary directory (dir created).
func newS3Server(t testing.TB, dir, name, log string) *S3Server {
	t.Helper()
	base := t.TempDir()
	s := &S3Server{
		AccessKey: "pgarktestaccess",
		SecretKey: "pgarktestsecret0123456789",
		Region:    "us-east-1",
		Dir:       filepath.Join(base, dir),
		process:   process{name: name, log: filepath.Join(base, log)},
	}
	if err := os.Mkdir(s.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *S3Server) start(bin string, port int) error {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "--port", addr, "--region", s.Region, "--quiet", "posix", s.Dir)
	cmd.Env = append(os.Environ(),
		"ROOT_ACCESS_KEY="+s.AccessKey,
		"ROOT_SECRET_KEY="+s.SecretKey,
	)
	if err := s.launch(cmd); err != nil {
		return err
	}
	s.Endpoint = "http://" + addr
	return s.waitHTTP(s.Endpoint+"/", 30*time.Second, anyAnswer)
}

// Log returns the server's output so far (empty with --quiet unless it
// failed).
func (s *S3Server) Log() string { return s.process.Log() }

// S3Client returns an SDK client for the server (path-style, its
// credentials), for tests that inspect or prepare buckets directly.
func (s *S3Server) S3Client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint),
		Region:       s.Region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
}

// CreateBucket creates a bucket, failing the test on error.
func (s *S3Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.S3Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("creating bucket %q on the S3 test server: %v", name, err)
	}
}

// S3PutObject stores an object directly (unconditionally), for tests that
// plant or damage objects.
func (s *S3Server) S3PutObject(t testing.TB, bucket, key string, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := s.S3Client().PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data),
	})
	if err != nil {
		t.Fatalf("putting s3://%s/%s on the S3 test server: %v", bucket, key, err)
	}
}

// Env returns the environment for a pgark child process that uses this
// server: credentials, region, endpoint and path-style addressing (and no
// EC2 metadata lookups).
func (s *S3Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
		"AWS_EC2_METADATA_DISABLED=true",
		"PGARK_S3_ENDPOINT=" + s.Endpoint,
		"PGARK_S3_FORCE_PATH_STYLE=true",
	}
}
