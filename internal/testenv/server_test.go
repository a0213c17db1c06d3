package testenv

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// testProcess returns a process whose log is in a temporary directory and
// that is stopped at t.Cleanup.
func testProcess(t *testing.T) *process {
	p := &process{name: "test server", log: filepath.Join(t.TempDir(), "server.log")}
	t.Cleanup(p.stop)
	return p
}

// closedURL returns a URL on 127.0.0.1 where nothing listens.
func closedURL(t *testing.T) string {
	return "http://127.0.0.1:" + strconv.Itoa(s3FreePort(t)) + "/"
}

// TestProcessExitAtStart: a server that exits before it answers fails the
// wait at once, with its exit status and its output.
func TestProcessExitAtStart(t *testing.T) {
	p := testProcess(t)
	if err := p.launch(exec.Command("/bin/sh", "-c", "echo cannot bind >&2; exit 3")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := p.waitHTTP(closedURL(t), time.Minute, anyAnswer)
	if err == nil || !strings.Contains(err.Error(), "test server exited at start (exit status 3)") ||
		!strings.Contains(err.Error(), "cannot bind") {
		t.Fatalf("wait for a server that exited: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("wait for a server that exited took %v", d)
	}
}

// TestProcessNoAnswer: a server that never answers fails the wait after
// the timeout and is stopped.
func TestProcessNoAnswer(t *testing.T) {
	p := testProcess(t)
	if err := p.launch(exec.Command("/bin/sh", "-c", "echo listening; exec sleep 600")); err != nil {
		t.Fatal(err)
	}
	err := p.waitHTTP(closedURL(t), 300*time.Millisecond, anyAnswer)
	if err == nil || !strings.Contains(err.Error(), "did not answer") || !strings.Contains(err.Error(), "listening") {
		t.Fatalf("wait for a silent server: %v", err)
	}
	select {
	case <-p.done:
	default:
		t.Fatal("the silent server still runs after the failed wait")
	}
}

// TestProcessReadiness: the wait goes on until the readiness check accepts
// an answer.
func TestProcessReadiness(t *testing.T) {
	var calls atomic.Int32
	h := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer h.Close()
	p := testProcess(t)
	if err := p.launch(exec.Command("sleep", "600")); err != nil {
		t.Fatal(err)
	}
	if err := p.waitHTTP(h.URL, time.Minute, statusOK); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("ready after %d requests, want 3 (two 503 answers, then 200)", n)
	}
}

// TestProcessStopGroup: stop ends the server's whole process group, not
// only the process it started.
func TestProcessStopGroup(t *testing.T) {
	p := testProcess(t)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	// A signal to the shell only would leave its child running.
	cmd := exec.Command("/bin/sh", "-c", "sleep 600 & echo $! > "+pidFile+"; wait")
	if err := p.launch(cmd); err != nil {
		t.Fatal(err)
	}
	var child int
	deadline := time.Now().Add(30 * time.Second)
	for child == 0 {
		b, err := os.ReadFile(pidFile)
		if err == nil && bytes.HasSuffix(b, []byte("\n")) {
			if child, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server's child did not start within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.stop()
	select {
	case <-p.done:
	default:
		t.Fatal("stop returned before the server exited")
	}
	// The child was sent SIGTERM with its group: it is gone, or a zombie
	// waiting for whoever inherited it.
	deadline = time.Now().Add(30 * time.Second)
	for alive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("the server's child %d still runs after stop", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(s[i+1:], " Z")
}

// TestRestartNeverStarted: restart of a server that never started is an
// error, not a panic.
func TestRestartNeverStarted(t *testing.T) {
	p := testProcess(t)
	if err := p.restart(); err == nil {
		t.Fatal("restart of a server that never started succeeded")
	}
}

// TestS3StopRestart: Stop takes the S3 server down; Restart brings it back
// on the same endpoint with the same data, for versitygw and MinIO.
func TestS3StopRestart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(testing.TB) *S3Server
	}{{"versitygw", S3Start}, {"MinIO", MinIOStart}} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.start(t)
			s.CreateBucket(t, "bkt")
			s.S3PutObject(t, "bkt", "k", []byte("kept"))
			endpoint := s.Endpoint
			s.Stop()
			if _, err := http.Get(endpoint + "/"); err == nil {
				t.Fatal("the stopped server still answers")
			}
			s.Restart(t)
			if s.Endpoint != endpoint {
				t.Errorf("endpoint after Restart = %s, want %s", s.Endpoint, endpoint)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := s.S3Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("k")})
			if err != nil {
				t.Fatalf("object after Restart: %v", err)
			}
			defer out.Body.Close()
			b, err := io.ReadAll(out.Body)
			if err != nil || string(b) != "kept" {
				t.Fatalf("object after Restart = %q, %v; want %q", b, err, "kept")
			}
		})
	}
}
