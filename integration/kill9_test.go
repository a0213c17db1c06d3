package integration

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
)

// killLoops is how many kills each loop makes: KILL_LOOPS, default 10 (CI);
// `make soak` runs 50.
func killLoops() int {
	n := 10
	if v, err := strconv.Atoi(os.Getenv("KILL_LOOPS")); err == nil && v > 0 {
		n = v
	}
	return n
}

// killAt runs pgark with args, sends SIGKILL after a random delay up to max
// (it may have finished by then), and reports whether the kill landed.
func killAt(t *testing.T, env []string, max time.Duration, args ...string) bool {
	t.Helper()
	cmd := exec.Command(pgarkBin, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + os.TempDir()}, env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
		return false
	case <-time.After(time.Duration(rand.Int64N(int64(max) + 1))):
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ws.Signaled()
}

// timed runs a command once and returns how long it took (to aim kills).
func timed(t *testing.T, env []string, args ...string) time.Duration {
	t.Helper()
	r := mustOK(t, pgark(t, env, args...))
	return r.dur
}

// TestKill9Loops kills pgark at random moments during push, backup,
// restore, retain and prefetch, KILL_LOOPS times each. After every kill the
// next run recovers by itself, and verify passes at the end. (Push-ahead
// has its own kill loop, TestPushAheadKill9.)
func TestKill9Loops(t *testing.T) {
	n := killLoops()
	a := setupArchiving(t, 16, 1)
	c := a.c
	c.Exec(t, "CREATE TABLE filler AS SELECT g, md5(g::text) AS v FROM generate_series(1, 100000) g")
	conf := a.localConf

	t.Run("push", func(t *testing.T) {
		fx := realWAL(t)
		dir, env := localRepo(t, "PGARK_PUSH_AHEAD=0")
		kills := 0
		for i := 0; i < n; i++ {
			seg := fx.segments[i%len(fx.segments)]
			if killAt(t, env, 80*time.Millisecond, "wal-push", seg) {
				kills++
			}
			// The object is absent or complete: the retried push succeeds
			// and the segment reads back intact.
			mustOK(t, pgark(t, env, "wal-push", seg))
			d := filepath.Join(t.TempDir(), "seg")
			mustOK(t, pgark(t, append(env, "PGARK_FETCH_AHEAD=0"), "wal-fetch", filepath.Base(seg), d))
			if !bytes.Equal(readFile(t, d), readFile(t, seg)) {
				t.Fatalf("kill %d: %s reads back different", i, filepath.Base(seg))
			}
		}
		// Temporary files of killed writers may stay (never listed); an
		// empty object would be a bug (each one was also read back above).
		for _, name := range archivedSegments(t, dir) {
			if fi, err := os.Stat(objectPath(dir, name)); err != nil || fi.Size() == 0 {
				t.Fatalf("a damaged object after the kills: %s: %v", name, err)
			}
		}
		t.Logf("push: %d of %d runs killed mid-way", kills, n)
	})

	t.Run("backup", func(t *testing.T) {
		d := timed(t, nil, "backup", "--config", conf, "--dsn", c.DSN())
		before := len(listBackups(t, conf))
		kills := 0
		for i := 0; i < n; i++ {
			if killAt(t, nil, d, "backup", "--config", conf, "--dsn", c.DSN()) {
				kills++
			}
		}
		// The next run takes the stale lock over and completes.
		mustOK(t, pgark(t, nil, "backup", "--config", conf, "--dsn", c.DSN()))
		after := len(listBackups(t, conf))
		if after < before+1 || after > before+1+(n-kills) {
			t.Fatalf("%d backups listed after %d kills of %d runs (was %d)", after, kills, n, before)
		}
		runVerify(t, conf, 0)
		t.Logf("backup: %d of %d runs killed mid-way; %d complete backups, all verified", kills, n, after)
	})

	t.Run("restore", func(t *testing.T) {
		mustOK(t, pgark(t, nil, "backup", "--config", conf, "--dsn", c.DSN()))
		want := c.QueryRow(t, "SELECT count(*)::text FROM filler")
		a.switchAndWait(t)
		dir := filepath.Join(a.shared, "restore-kill")
		d := timed(t, nil, "restore", "--config", conf, "--owner", "postgres", "latest", dir+"-probe")
		kills := 0
		for i := 0; i < n; i++ {
			if exists(dir) && !exists(filepath.Join(dir, ".pgark-restore-in-progress")) {
				os.RemoveAll(dir) // the last run finished: start over
			}
			if killAt(t, nil, d, "restore", "--config", conf, "--owner", "postgres", "--force", "latest", dir) {
				kills++
				// Never startable half-way: pg_control comes last.
				if exists(filepath.Join(dir, "global", "pg_control")) && exists(filepath.Join(dir, ".pgark-restore-in-progress")) {
					t.Fatalf("kill %d left pg_control in an unfinished restore", i)
				}
			}
		}
		if exists(dir) && !exists(filepath.Join(dir, ".pgark-restore-in-progress")) {
			os.RemoveAll(dir) // the last run was not killed: it finished
		}
		mustOK(t, pgark(t, nil, "restore", "--config", conf, "--owner", "postgres", "--force", "latest", dir))
		rs := testenv.StartPG(t, testenv.PGOptions{Major: 16, WalSegSizeMB: 1, DataDir: dir, Env: a.s3Env})
		rs.WaitFor(t, 3*time.Minute, func() bool { return rs.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true" })
		if got := rs.QueryRow(t, "SELECT count(*)::text FROM filler"); got != want {
			t.Fatalf("restored after %d kills: %s rows, want %s", kills, got, want)
		}
		rs.Stop(t)
		t.Logf("restore: %d of %d runs killed mid-way; the next --force run restored a cluster that starts with all rows", kills, n)
	})

	t.Run("retain", func(t *testing.T) {
		kills := 0
		for i := 0; i < n; i++ {
			mustOK(t, pgark(t, nil, "backup", "--config", conf, "--dsn", c.DSN()))
			c.Exec(t, "INSERT INTO filler SELECT g, 'x' FROM generate_series(1, 20000) g")
			a.switchAndWait(t)
			if killAt(t, nil, 60*time.Millisecond, "retain", "--config", conf, "--keep-last", "1") {
				kills++
			}
			// Whatever the kill left, verify accepts it.
			runVerify(t, conf, 0)
		}
		mustOK(t, pgark(t, nil, "retain", "--config", conf, "--keep-last", "1"))
		if bs := listBackups(t, conf); len(bs) != 1 {
			t.Fatalf("after the last retain: %d backups", len(bs))
		}
		runVerify(t, conf, 0)
		t.Logf("retain: %d of %d runs killed mid-way; verify accepted the repository after each", kills, n)
	})

	t.Run("prefetch", func(t *testing.T) {
		makeSegments(t, c, 3*n)
		a.switchAndWait(t)
		names := archivedSegments(t, a.localRepo)
		if len(names) > 3*n {
			names = names[len(names)-3*n:]
		}
		spool := filepath.Join(t.TempDir(), "spool")
		pgdata := t.TempDir()
		// In archive recovery: the helper runs while recovery.signal is there.
		os.WriteFile(filepath.Join(pgdata, "recovery.signal"), nil, 0o600)
		env := []string{"PGARK_SPOOL_DIR=" + spool, "PGARK_PGDATA=" + pgdata, "PGARK_FETCH_AHEAD=8"}
		plain := []string{"PGARK_FETCH_AHEAD=0"}
		kills := 0
		for i, name := range names {
			dest := filepath.Join(pgdata, "RECOVERYXLOG")
			switch i % 3 {
			case 1: // kill the call at a random moment
				if killAt(t, env, 20*time.Millisecond, "wal-fetch", "--config", conf, name, dest) {
					kills++
				}
			case 2: // kill the background helper
				if exec.Command("pkill", "-KILL", "-f", "wal-prefetch --pgdata="+pgdata).Run() == nil {
					kills++
				}
			}
			os.Remove(dest)
			mustOK(t, pgark(t, env, "wal-fetch", "--config", conf, name, dest))
			want := filepath.Join(t.TempDir(), name)
			mustOK(t, pgark(t, plain, "wal-fetch", "--config", conf, name, want))
			if !bytes.Equal(readFile(t, dest), readFile(t, want)) {
				t.Fatalf("%s served through the spool differs after kills", name)
			}
		}
		exec.Command("pkill", "-KILL", "-f", "wal-prefetch --pgdata="+pgdata).Run()
		t.Logf("prefetch: %d kills of calls and helpers over %d fetches; every segment served intact", kills, len(names))
	})
}

// archivedSegments lists the segment names in a local repository, in order.
func archivedSegments(t *testing.T, repoDir string) []string {
	t.Helper()
	var names []string
	filepath.Walk(filepath.Join(repoDir, "wal"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.HasSuffix(p, ".pgark") && len(fi.Name()) == 24+len(".pgark") {
			names = append(names, strings.TrimSuffix(fi.Name(), ".pgark"))
		}
		return nil
	})
	return names
}
