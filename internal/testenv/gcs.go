package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// GCSVersion is the fake-gcs-server release that `make deps` installs.
const GCSVersion = "v1.56.1"

// GCSServer is a running GCS test server: fake-gcs-server with its in-memory
// backend, listening on 127.0.0.1 over plain HTTP.
type GCSServer struct {
	Host     string // 127.0.0.1:PORT, the value of STORAGE_EMULATOR_HOST
	Endpoint string // http://127.0.0.1:PORT/storage/v1/, the JSON API endpoint

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	log  string        // file with the server's output
}

// GCSBinPath returns the path of the fake-gcs-server binary:
// $PGARK_FAKE_GCS_SERVER, else $PGARK_CACHE/bin/fake-gcs-server (default
// /opt/pgark-cache/bin/fake-gcs-server).
func GCSBinPath() string {
	if v := os.Getenv("PGARK_FAKE_GCS_SERVER"); v != "" {
		return v
	}
	cache := os.Getenv("PGARK_CACHE")
	if cache == "" {
		cache = "/opt/pgark-cache"
	}
	return filepath.Join(cache, "bin", "fake-gcs-server")
}

// GCSStart starts fake-gcs-server on 127.0.0.1 and a free port with an
// in-memory backend, waits until it answers, and stops it at t.Cleanup. It
// is an end-to-end helper: skipped with -short, and a missing binary skips
// the test (fails it with $PGARK_TEST_REQUIRE=1).
func GCSStart(t testing.TB) *GCSServer {
	t.Helper()
	EndToEnd(t)
	bin := GCSBinPath()
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
		Missing(t, fmt.Errorf("testenv: GCS test server %s not found", bin))
	}
	s := &GCSServer{log: filepath.Join(t.TempDir(), "fake-gcs-server.log")}
	var lastErr error
	// The free port may be taken between s3FreePort and the server's bind;
	// try a few times.
	for range 3 {
		lastErr = s.start(bin, s3FreePort(t))
		if lastErr == nil {
			t.Cleanup(func() {
				s.stop()
				if t.Failed() {
					t.Logf("fake-gcs-server log:\n%s", s.Log())
				}
			})
			return s
		}
	}
	t.Fatalf("starting the GCS test server: %v", lastErr)
	return nil
}

func (s *GCSServer) start(bin string, port int) error {
	logf, err := os.Create(s.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	host := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "-scheme", "http", "-host", "127.0.0.1", "-port", strconv.Itoa(port),
		"-backend", "memory", "-public-host", host, "-external-url", "http://"+host, "-log-level", "warn")
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
	s.Host = host
	s.Endpoint = "http://" + host + "/storage/v1/"

	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("fake-gcs-server exited at start (%v):\n%s", cmd.ProcessState, s.Log())
		default:
		}
		resp, err := client.Get(s.Endpoint + "b")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop()
	return fmt.Errorf("fake-gcs-server did not answer on %s within 30s:\n%s", host, s.Log())
}

func (s *GCSServer) stop() {
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

// Log returns the server's output so far.
func (s *GCSServer) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// CreateBucket creates a bucket, failing the test on error.
func (s *GCSServer) CreateBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body, _ := json.Marshal(map[string]string{"name": name})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.Endpoint+"b?project=pgark-test", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("creating bucket %q on the GCS test server: %v", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("creating bucket %q on the GCS test server: %s: %s", name, resp.Status, msg)
	}
}

// Env returns the environment for a pgark child process that uses this
// server: the client's emulator variable (no credentials are sent).
func (s *GCSServer) Env() []string {
	return []string{"STORAGE_EMULATOR_HOST=" + s.Host}
}
