// Package integration drives the built pgark binary against real PostgreSQL
// clusters and a real S3-compatible server, exactly as PostgreSQL runs it:
// as archive_command and restore_command.
package integration

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
)

// pgarkBin is the binary under test, built once by TestMain into a directory
// the postgres user can execute from.
var pgarkBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Fprintln(os.Stderr, "integration: end-to-end tests skipped in the unit tier (-short)")
		os.Exit(0)
	}
	if err := testenv.CheckDeps(); err != nil {
		if testenv.Required() {
			fmt.Fprintf(os.Stderr, "integration: %v\n%s=1: a missing test dependency is a failure; %s\n", err, testenv.RequireEnv, testenv.InstallHint)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "integration: end-to-end tests skipped, their dependencies are missing: %s\n", testenv.InstallHint)
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "pgark-bin-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pgarkBin = filepath.Join(dir, "pgark")
	_, file, _, _ := runtime.Caller(0)
	build := exec.Command("go", "build", "-o", pgarkBin, "./cmd/pgark")
	build.Dir = filepath.Dir(filepath.Dir(file))
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build pgark: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if fixture != nil {
		os.RemoveAll(fixture.dir)
	}
	os.Exit(code)
}

// result is what one pgark run did.
type result struct {
	stdout, stderr string
	code           int            // exit status, or -1 when killed by a signal
	signal         syscall.Signal // the signal that ended it, if any
	dur            time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d (signal %v) after %s\nstdout: %s\nstderr: %s", r.code, r.signal, r.dur, r.stdout, r.stderr)
}

// pgark runs the binary with a clean environment plus env.
func pgark(t testing.TB, env []string, args ...string) result {
	t.Helper()
	return pgarkIn(t, "", env, args...)
}

func pgarkIn(t testing.TB, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pgarkBin, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + os.TempDir()}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), dur: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			r.code, r.signal = -1, ws.Signal()
		} else {
			r.code = ws.ExitStatus()
		}
	default:
		t.Fatalf("run pgark: %v", err)
	}
	checkOutput(t, r)
	return r
}

// secretPatterns match the test suite's secrets: age identities, signing
// keys, the S3 test server's secret key and the DSN password of the tests.
var secretPatterns = regexp.MustCompile(`AGE-SECRET-KEY-1[0-9A-Z]{20,}|PGARK-ED25519-SECRET-KEY-1:[A-Za-z0-9_-]{20,}|pgarktestsecret0123456789|pgarktestpassword`)

// checkOutput fails on a Go panic or stack trace in pgark's output, and on
// a secret in it: every pgark run of the suite is checked.
func checkOutput(t testing.TB, r result) {
	t.Helper()
	if m := secretPatterns.FindString(r.stdout + r.stderr); m != "" {
		t.Fatalf("pgark printed a secret (%.12s...):\n%s", m, secretPatterns.ReplaceAllString(r.String(), "[SECRET]"))
	}
	for _, s := range []string{"panic:", "goroutine ", "runtime error"} {
		if strings.Contains(r.stderr, s) || strings.Contains(r.stdout, s) {
			t.Fatalf("pgark panicked:\n%s", r)
		}
	}
}

func mustOK(t testing.TB, r result) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("pgark failed: %s", r)
	}
	return r
}

func wantCode(t testing.TB, r result, code int, msgPart string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("want exit %d, got %s", code, r)
	}
	if msgPart != "" && !strings.Contains(r.stderr, msgPart) {
		t.Fatalf("stderr lacks %q: %s", msgPart, r)
	}
	if code != 0 && code != 1 {
		// One error line: the error is a single log line.
		errLines := 0
		for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
			if strings.Contains(l, "level=ERROR") || strings.HasPrefix(l, "pgark") {
				errLines++
			}
		}
		if errLines != 1 {
			t.Fatalf("want exactly one error line, got %d: %s", errLines, r)
		}
	}
}

// writeConfig writes a pgark config file readable by the postgres user.
func writeConfig(t testing.TB, dir string, kv map[string]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# pgark test config\n")
	for k, v := range kv {
		fmt.Fprintf(&b, "%s = %q\n", k, v)
	}
	p := filepath.Join(dir, fmt.Sprintf("pgark-%d.conf", time.Now().UnixNano()))
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// asPostgres runs pgark as the postgres user (as PostgreSQL does).
func asPostgres(t testing.TB, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pgarkBin, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	testenv.RunAsPostgres(cmd)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	checkOutput(t, r)
	return r
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
