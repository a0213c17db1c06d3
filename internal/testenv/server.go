package testenv

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// process is a test server's process: started on the spawner thread in a
// process group of its own (so that a ^C of the test does not reach it
// before the cleanup does; killed if the test process dies), its output in
// a log file. The S3, Azure and GCS test servers embed it.
type process struct {
	name string // for messages
	log  string // file with the server's output
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// launch starts cmd with its output going to the log file.
func (p *process) launch(cmd *exec.Cmd) error {
	logf, err := os.Create(p.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startFromSpawner(cmd); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// waitHTTP polls url until ready accepts an answer, the process exits or
// timeout passes; it stops the process on failure.
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

// stop terminates the process group, killing it after 10 s.
func (p *process) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Log returns the server's output so far.
func (p *process) Log() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// startOnFreePort calls start with a free port until it succeeds (the port
// may be taken between the check and the server's bind), then stops p at
// t.Cleanup, showing its log when the test failed.
func startOnFreePort(t testing.TB, p *process, start func(port int) error) {
	t.Helper()
	var lastErr error
	for range 3 {
		if lastErr = start(s3FreePort(t)); lastErr == nil {
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
