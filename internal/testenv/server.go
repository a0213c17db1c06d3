package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// This file holds the lifecycle that the HTTP test servers (versitygw,
// MinIO, Azurite, fake-gcs-server) share; each server keeps only its
// command line and its readiness check. The sshd launcher (sftp.go) stays
// apart: its readiness is an SSH banner and it may run as another user.

// process is a test server's process: started on the spawner thread in a
// process group of its own (so that a ^C of the test does not reach it
// before the cleanup does; killed if the test process dies), its output in
// a log file.
type process struct {
	name string // for messages: "versitygw", "MinIO", ...
	log  string // file with the server's output

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited

	// startOn launches the server on a port and waits until it is ready
	// (stopping it if it is not); port is the one it last started on.
	// restart uses both.
	startOn func(port int) error
	port    int
}

// launch starts cmd with its output going to the log file (truncated).
func (p *process) launch(cmd *exec.Cmd) error {
	logf, err := os.Create(p.log)
	if err != nil {
		return fmt.Errorf("%s log: %w", p.name, err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startFromSpawner(cmd); err != nil {
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// waitHTTP polls url every 50 ms until ready accepts an answer, the process
// exits or timeout passes; it stops the process when it gives up.
func (p *process) waitHTTP(url string, timeout time.Duration, ready func(*http.Response) bool) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited at start (%v):\n%s", p.name, p.cmd.ProcessState, p.Log())
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if ready(resp) {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.stop()
	return fmt.Errorf("%s did not answer on %s within %s:\n%s", p.name, url, timeout, p.Log())
}

// anyAnswer accepts any HTTP answer (an unsigned request gets 403): the
// server serves.
func anyAnswer(*http.Response) bool { return true }

// statusOK accepts a 200 answer only.
func statusOK(r *http.Response) bool { return r.StatusCode == http.StatusOK }

// stop terminates the process group with SIGTERM, then SIGKILL after 10 s,
// and waits until the process has exited. It does nothing if the process
// never started or has already exited.
func (p *process) stop() { stopGroup(p.cmd, p.done) }

// stopGroup terminates the process group of cmd, started with Setpgid,
// with SIGTERM, then SIGKILL after 10 s, and waits until done is closed
// (the process has exited). It does nothing if cmd never started.
func stopGroup(cmd *exec.Cmd, done <-chan struct{}) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Log returns the server's output so far.
func (p *process) Log() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// serve calls start with a free port until it succeeds, trying three ports
// (one may be taken between the check and the server's bind), then stops
// the server at t.Cleanup, showing its log when the test failed.
func (p *process) serve(t testing.TB, start func(port int) error) {
	t.Helper()
	p.startOn = start
	var lastErr error
	for range 3 {
		port := s3FreePort(t)
		if lastErr = start(port); lastErr == nil {
			p.port = port
			t.Cleanup(func() {
				p.stop()
				if t.Failed() {
					t.Logf("%s log:\n%s", p.name, p.Log())
				}
			})
			return
		}
	}
	t.Fatalf("starting the %s test server: %v", p.name, lastErr)
}

// restart starts the stopped server again on the port it last started on.
func (p *process) restart() error {
	if p.startOn == nil {
		return fmt.Errorf("%s was never started", p.name)
	}
	return p.startOn(p.port)
}

// s3FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func s3FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// serverBin returns $env if set, else the path below the cache directory
// (CacheDir) where `make deps` installs a test server.
func serverBin(env string, rel ...string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return filepath.Join(append([]string{CacheDir()}, rel...)...)
}

// serverBinFor returns bin for an end-to-end test (skipped with -short) that
// starts the test server bin: a missing bin skips the test (fails it with
// $PGARK_TEST_REQUIRE=1); what names the server in the message.
func serverBinFor(t testing.TB, bin, what string) string {
	t.Helper()
	EndToEnd(t)
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
		Missing(t, fmt.Errorf("testenv: %s %s not found", what, bin))
	}
	return bin
}
