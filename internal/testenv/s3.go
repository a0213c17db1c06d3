package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
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

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	log  string        // file with the server's output
}

// S3BinPath returns the path of the versitygw binary:
// $PGARK_VERSITYGW, else $PGARK_CACHE/bin/versitygw (default
// /opt/pgark-cache/bin/versitygw).
func S3BinPath() string {
	if v := os.Getenv("PGARK_VERSITYGW"); v != "" {
		return v
	}
	cache := os.Getenv("PGARK_CACHE")
	if cache == "" {
		cache = "/opt/pgark-cache"
	}
	return filepath.Join(cache, "bin", "versitygw")
}

// S3Start starts versitygw on 127.0.0.1 and a free port with a posix
// backend in a temporary directory, waits until it answers, and stops it at
// t.Cleanup. It is an end-to-end helper: skipped with -short, and a missing binary skips
// the test (fails it with $PGARK_TEST_REQUIRE=1).
func S3Start(t testing.TB) *S3Server {
	t.Helper()
	EndToEnd(t)
	bin := S3BinPath()
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
		Missing(t, fmt.Errorf("testenv: S3 test server %s not found", bin))
	}
	base := t.TempDir()
	s := &S3Server{
		AccessKey: "pgarktestaccess",
		SecretKey: "pgarktestsecret0123456789",
		Region:    "us-east-1",
		Dir:       filepath.Join(base, "s3"),
		log:       filepath.Join(base, "versitygw.log"),
	}
	if err := os.Mkdir(s.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	// The free port may be taken between s3FreePort and the server's bind;
	// try a few times.
	for range 3 {
		lastErr = s.start(bin, s3FreePort(t))
		if lastErr == nil {
			t.Cleanup(s.stop)
			return s
		}
	}
	t.Fatalf("starting the S3 test server: %v", lastErr)
	return nil
}

func s3FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *S3Server) start(bin string, port int) error {
	logf, err := os.Create(s.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "--port", addr, "--region", s.Region, "--quiet", "posix", s.Dir)
	cmd.Env = append(os.Environ(),
		"ROOT_ACCESS_KEY="+s.AccessKey,
		"ROOT_SECRET_KEY="+s.SecretKey,
	)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Its own process group, so that a ^C of the test does not reach it
	// before the cleanup does; killed if the test process dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startFromSpawner(cmd); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	s.Endpoint = "http://" + addr

	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("versitygw exited at start (%v):\n%s", cmd.ProcessState, s.Log())
		default:
		}
		// Any HTTP answer (an unsigned request gets 403) means it serves.
		resp, err := client.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop()
	return fmt.Errorf("versitygw did not answer on %s within 30s:\n%s", addr, s.Log())
}

func (s *S3Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// Log returns the server's output so far (empty with --quiet unless it
// failed).
func (s *S3Server) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

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
