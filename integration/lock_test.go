package integration

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lockRecord reads the repository lock of a local repository (the object
// file's header skipped), or ok=false when there is none.
func lockRecord(t *testing.T, repoDir string) (rec map[string]any, ok bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoDir, "locks", "repository.json"))
	if os.IsNotExist(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 12 || string(b[:8]) != "PGARKOB\x01" {
		t.Fatalf("lock object is not a local-store object: %q", b)
	}
	n := binary.BigEndian.Uint32(b[8:12])
	if err := json.Unmarshal(b[12+n:], &rec); err != nil {
		t.Fatalf("lock object: %v: %q", err, b)
	}
	return rec, true
}

// startPgark starts the binary in the background.
func startPgark(t *testing.T, env []string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(pgarkBin, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + os.TempDir()}, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, &out
}

// waitHeld waits until the lock is held by pid.
func waitHeld(t *testing.T, repoDir string, pid int, out *bytes.Buffer) map[string]any {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if rec, ok := lockRecord(t, repoDir); ok && rec["state"] == "held" && int(rec["pid"].(float64)) == pid {
			return rec
		}
		time.Sleep(50 * time.Millisecond)
	}
	rec, _ := lockRecord(t, repoDir)
	t.Fatalf("pid %d never held the repository lock (lock: %v); its output:\n%s", pid, rec, out)
	return nil
}

// TestRepositoryLock: two backups started together, one runs and the other
// fails fast naming the holder; retain is refused too; after kill -9 of the
// holder the next backup takes the stale lock over, with a warning; retain
// --lock-wait waits for a running backup and then runs; wal-push never
// waits on the lock.
func TestRepositoryLock(t *testing.T) {
	a := setupArchiving(t, 16, 1)
	c := a.c
	c.Exec(t, "CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 40000) g")

	// A slow backup holds the lock.
	slow, out := startPgark(t, a.s3Env, "backup", "--config", a.localConf, "--dsn", c.DSN(), "--max-rate", "32kB")
	rec := waitHeld(t, a.localRepo, slow.Process.Pid, out)
	host, _ := os.Hostname()
	if rec["command"] != "backup" || rec["host"] != host || rec["token"] == "" {
		t.Fatalf("lock record %v", rec)
	}

	// A second backup fails fast, naming the holder.
	r := pgark(t, a.s3Env, "backup", "--config", a.localConf, "--dsn", c.DSN())
	wantCode(t, r, 7, "locked by backup (pid "+strconv.Itoa(slow.Process.Pid)+" on "+host)
	if r.dur > 10*time.Second {
		t.Errorf("the refused backup took %s; it must fail fast", r.dur)
	}
	// So does retain; a dry run reads only and needs no lock.
	wantCode(t, pgark(t, nil, "retain", "--config", a.localConf, "--keep-last", "1"), 7, "locked by backup")
	mustOK(t, pgark(t, nil, "retain", "--config", a.localConf, "--keep-last", "1", "--dry-run"))
	// WAL archiving goes on meanwhile.
	a.switchAndWait(t)

	// kill -9 the holder: the lock stays "held" by a dead process.
	if err := slow.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	slow.Wait()
	if rec, _ := lockRecord(t, a.localRepo); rec["state"] != "held" {
		t.Fatalf("after kill -9 the lock is %v", rec)
	}
	r = mustOK(t, pgark(t, a.s3Env, "backup", "--config", a.localConf, "--dsn", c.DSN()))
	if !strings.Contains(r.stderr, "taking over a stale repository lock") || !strings.Contains(r.stderr, "gone from this host") {
		t.Fatalf("no warning about the stale lock: %s", r)
	}
	if rec, _ := lockRecord(t, a.localRepo); rec["state"] != "released" {
		t.Fatalf("after the backup the lock is %v", rec)
	}
	if n := len(listBackups(t, a.localConf)); n != 1 {
		t.Fatalf("%d complete backups, want 1 (the killed one must not count)\n%s", n, out)
	}

	// retain --lock-wait waits for a running backup, then runs.
	slow, out = startPgark(t, a.s3Env, "backup", "--config", a.localConf, "--dsn", c.DSN(), "--max-rate", "4MB")
	waitHeld(t, a.localRepo, slow.Process.Pid, out)
	r = mustOK(t, pgark(t, nil, "retain", "--config", a.localConf, "--keep-last", "1", "--lock-wait", "3m"))
	if err := slow.Wait(); err != nil {
		t.Fatalf("the backup retain waited for failed: %v", err)
	}
	if r.dur < time.Second {
		t.Errorf("retain ran in %s: it did not wait for the backup", r.dur)
	}
	if bs := listBackups(t, a.localConf); len(bs) != 1 {
		t.Fatalf("after retain --keep-last 1: %d backups", len(bs))
	}
	runVerify(t, a.localConf, 0)
}
