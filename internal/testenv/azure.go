package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// AzuriteVersion is the Azurite release that `make deps` installs (npm
// package azurite; 3.36 and later need Node.js 21 or newer).
const AzuriteVersion = "3.35.0"

// Azurite's well-known development account.
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// AzureServer is a running Azurite blob service, in memory, listening on
// 127.0.0.1.
type AzureServer struct {
	Endpoint string // http://127.0.0.1:PORT/devstoreaccount1
	Account  string
	Key      string

	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// AzuriteBinPath returns the path of Azurite's blob service launcher:
// $PGARK_AZURITE, else $PGARK_CACHE/azurite/node_modules/.bin/azurite-blob
// (default cache /opt/pgark-cache).
func AzuriteBinPath() string {
	if v := os.Getenv("PGARK_AZURITE"); v != "" {
		return v
	}
	cache := os.Getenv("PGARK_CACHE")
	if cache == "" {
		cache = "/opt/pgark-cache"
	}
	return filepath.Join(cache, "azurite", "node_modules", ".bin", "azurite-blob")
}

// AzureStart starts Azurite's blob service on 127.0.0.1 and a free port,
// in memory, waits until it answers, and stops it at t.Cleanup; its log is
// printed if the test failed. It is an end-to-end helper: skipped with
// -short, and a missing Azurite skips the test (fails it with
// $PGARK_TEST_REQUIRE=1).
func AzureStart(t testing.TB) *AzureServer {
	t.Helper()
	EndToEnd(t)
	bin := AzuriteBinPath()
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
		Missing(t, fmt.Errorf("testenv: Azure test server (Azurite) %s not found", bin))
	}
	base := t.TempDir()
	s := &AzureServer{Account: AzuriteAccount, Key: AzuriteKey, log: filepath.Join(base, "azurite.log")}
	var lastErr error
	for range 3 {
		lastErr = s.start(bin, base, s3FreePort(t))
		if lastErr == nil {
			t.Cleanup(func() {
				s.stop()
				if t.Failed() {
					t.Logf("Azurite log:\n%s", s.Log())
				}
			})
			return s
		}
	}
	t.Fatalf("starting the Azure test server: %v", lastErr)
	return nil
}

func (s *AzureServer) start(bin, dir string, port int) error {
	logf, err := os.Create(s.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	// --skipApiVersionCheck: the SDK may speak a newer service version
	// than this Azurite knows; what pgark uses exists in both.
	// --disableTelemetry: no calls home (and no network in CI).
	// --silent: no access log (thousands of lines in the conformance suite).
	cmd := exec.Command(bin,
		"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
		"--inMemoryPersistence", "--extentMemoryLimit", "2048",
		"--skipApiVersionCheck", "--disableTelemetry", "--silent")
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Dir = dir
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
	s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d/%s", port, s.Account)

	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("azurite exited at start (%v):\n%s", cmd.ProcessState, s.Log())
		default:
		}
		// Any HTTP answer (an unsigned request gets 403) means it serves.
		resp, err := client.Get(s.Endpoint + "?comp=list")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop()
	return fmt.Errorf("azurite did not answer on port %d within 60s:\n%s", port, s.Log())
}

func (s *AzureServer) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	// Node's launcher: signal the process group.
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

// Log returns the server's output so far.
func (s *AzureServer) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// BaseURL returns the server's URL without the account (for a proxy in
// front of it: the endpoint through it is its URL + "/" + Account).
func (s *AzureServer) BaseURL() string {
	return strings.TrimSuffix(s.Endpoint, "/"+s.Account)
}

// ConnectionString returns a connection string for the server.
func (s *AzureServer) ConnectionString() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;",
		s.Account, s.Key, s.Endpoint)
}

// ContainerClient returns an SDK client of a container on the server, for
// tests that prepare or inspect it directly.
func (s *AzureServer) ContainerClient(t testing.TB, name string) *container.Client {
	t.Helper()
	cc, err := container.NewClientFromConnectionString(s.ConnectionString(), name, nil)
	if err != nil {
		t.Fatalf("azure test client: %v", err)
	}
	return cc
}

// CreateContainer creates a container, failing the test on error.
func (s *AzureServer) CreateContainer(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.ContainerClient(t, name).Create(ctx, nil); err != nil {
		t.Fatalf("creating container %q on the Azure test server: %v", name, err)
	}
}

// Env returns the environment for a pgark child process that uses this
// server: its connection string.
func (s *AzureServer) Env() []string {
	return []string{"AZURE_STORAGE_CONNECTION_STRING=" + s.ConnectionString()}
}
