package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

	process
}

// AzuriteBinPath returns the path of Azurite's blob service launcher:
// $PGARK_AZURITE, else $PGARK_CACHE/azurite/node_modules/.bin/azurite-blob
// (default cache /opt/pgark-cache).
func AzuriteBinPath() string {
	return serverBin("PGARK_AZURITE", "azurite", "node_modules", ".bin", "azurite-blob")
}

// AzureStart starts Azurite's blob service on 127.0.0.1 and a free port,
// in memory, waits until it answers, and stops it at t.Cleanup; its log is
// printed if the test failed. It is an end-to-end helper: skipped with
// -short, and a missing Azurite skips the test (fails it with
// $PGARK_TEST_REQUIRE=1).
func AzureStart(t testing.TB) *AzureServer {
	t.Helper()
	bin := serverBinFor(t, AzuriteBinPath(), "Azure test server (Azurite)")
	base := t.TempDir()
	s := &AzureServer{Account: AzuriteAccount, Key: AzuriteKey, process: process{name: "Azurite", log: filepath.Join(base, "azurite.log")}}
	s.serve(t, func(port int) error { return s.start(bin, base, port) })
	return s
}

func (s *AzureServer) start(bin, dir string, port int) error {
	// --skipApiVersionCheck: the SDK may speak a newer service version
	// than this Azurite knows; what pgark uses exists in both.
	// --disableTelemetry: no calls home (and no network in CI).
	// --silent: no access log (thousands of lines in the conformance suite).
	cmd := exec.Command(bin,
		"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
		"--inMemoryPersistence", "--extentMemoryLimit", "2048",
		"--skipApiVersionCheck", "--disableTelemetry", "--silent")
	cmd.Dir = dir
	if err := s.launch(cmd); err != nil {
		return err
	}
	s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d/%s", port, s.Account)
	return s.waitHTTP(s.Endpoint+"?comp=list", 60*time.Second, anyAnswer)
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
