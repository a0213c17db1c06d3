package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
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

	process
}

// GCSBinPath returns the path of the fake-gcs-server binary:
// $PGARK_FAKE_GCS_SERVER, else $PGARK_CACHE/bin/fake-gcs-server (default
// /opt/pgark-cache/bin/fake-gcs-server).
func GCSBinPath() string { return serverBin("PGARK_FAKE_GCS_SERVER", "bin", "fake-gcs-server") }

// GCSStart starts fake-gcs-server on 127.0.0.1 and a free port with an
// in-memory backend, waits until it answers, and stops it at t.Cleanup; its
// log is printed if the test failed. It is an end-to-end helper: skipped
// with -short, and a missing binary skips the test (fails it with
// $PGARK_TEST_REQUIRE=1).
func GCSStart(t testing.TB) *GCSServer {
	t.Helper()
	bin := serverBinFor(t, GCSBinPath(), "GCS test server")
	s := &GCSServer{process: process{name: "fake-gcs-server", log: filepath.Join(t.TempDir(), "fake-gcs-server.log")}}
	s.serve(t, func(port int) error { return s.start(bin, port) })
	return s
}

func (s *GCSServer) start(bin string, port int) error {
	host := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "-scheme", "http", "-host", "127.0.0.1", "-port", strconv.Itoa(port),
		"-backend", "memory", "-public-host", host, "-external-url", "http://"+host, "-log-level", "warn")
	if err := s.launch(cmd); err != nil {
		return err
	}
	s.Host = host
	s.Endpoint = "http://" + host + "/storage/v1/"
	return s.waitHTTP(s.Endpoint+"b", 30*time.Second, statusOK)
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
