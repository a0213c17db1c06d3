package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"
)

// RequireEnv is the environment variable that turns a missing test dependency into a
// failure. `make test` and .ci/run set it, so that CI can never pass by skipping.
const RequireEnv = "PGARK_TEST_REQUIRE"

// Required reports whether a missing dependency must fail the test ($PGARK_TEST_REQUIRE=1).
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// InstallHint is the one line that tells how to get the end-to-end dependencies.
const InstallHint = "run `make deps` (bash .ci/deps.sh) to install PostgreSQL 13-18 and the S3 test server"

// EndToEnd marks t as a test of the end-to-end tier: it is skipped by `go test -short`,
// the unit tier, which needs nothing installed.
func EndToEnd(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped in the unit tier (-short)")
	}
}

// Missing handles a test dependency that is not installed: with $PGARK_TEST_REQUIRE=1 it
// fails the test, otherwise it skips it. Either way it says how to install it.
func Missing(t testing.TB, err error) {
	t.Helper()
	if Required() {
		t.Fatalf("%v (%s=1: a missing test dependency is a failure; %s)", err, RequireEnv, InstallHint)
	}
	t.Skipf("%v; %s", err, InstallHint)
}

// NeedPG skips (or with $PGARK_TEST_REQUIRE=1 fails) t unless the server binaries of this
// PostgreSQL major are installed: for tests that start servers in a child process or a
// subtest, where StartPG's own skip would not stop the test itself.
func NeedPG(t testing.TB, major int) {
	t.Helper()
	EndToEnd(t)
	if _, err := PGBinDir(major); err != nil {
		Missing(t, err)
	}
}

// CheckDeps reports what the default end-to-end tests need and is not installed: the
// PostgreSQL server of DefaultMajor, its client tools (pgbench, pg_basebackup, psql) and
// the S3 test server. Tests of other majors check their own binaries when they start them.
func CheckDeps() error {
	var errs []error
	if _, err := PGBinDir(DefaultMajor); err != nil {
		errs = append(errs, err)
	}
	for _, tool := range []string{"pgbench", "pg_basebackup", "psql"} {
		if _, err := ClientBin(tool); err != nil {
			errs = append(errs, err)
		}
	}
	if fi, err := os.Stat(S3BinPath()); err != nil || fi.IsDir() {
		errs = append(errs, fmt.Errorf("testenv: S3 test server %s not found", S3BinPath()))
	}
	// The Azure Blob test server (Azurite).
	if fi, err := os.Stat(AzuriteBinPath()); err != nil || fi.IsDir() {
		errs = append(errs, fmt.Errorf("testenv: Azure test server (Azurite) %s not found", AzuriteBinPath()))
	}
	// The GCS test server (storage/gcs).
	if fi, err := os.Stat(GCSBinPath()); err != nil || fi.IsDir() {
		errs = append(errs, fmt.Errorf("testenv: GCS test server %s not found", GCSBinPath()))
	}
	// The S3 server with versioning and Object Lock (MinIO), for the
	// immutability tests.
	if fi, err := os.Stat(MinIOBinPath()); err != nil || fi.IsDir() {
		errs = append(errs, fmt.Errorf("testenv: MinIO test server %s not found", MinIOBinPath()))
	}
	// The SFTP store's test server (OpenSSH's sshd).
	if fi, err := os.Stat(SFTPBinPath()); err != nil || fi.IsDir() {
		errs = append(errs, fmt.Errorf("testenv: SFTP test server %s not found (apt package openssh-server)", SFTPBinPath()))
	}
	return errors.Join(errs...)
}

// spawner runs functions (cmd.Start) on one OS thread that never exits, so that
// Pdeathsig, which Linux ties to the thread that forked, fires only when the whole test
// process dies, not when the goroutine that started a child moves on.
var spawner = sync.OnceValue(func() chan<- func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread()
		for f := range ch {
			f()
		}
	}()
	return ch
})

// startFromSpawner starts cmd on the spawner thread.
func startFromSpawner(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	spawner() <- func() { done <- cmd.Start() }
	return <-done
}
