package integration

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
)

// pickMajors returns the majors of want that the run covers (all of them when
// PGARK_TEST_MAJORS is unset).
func pickMajors(want ...int) []int {
	var out []int
	for _, m := range testenv.Majors() {
		if slices.Contains(want, m) {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		out = testenv.Majors()[:1]
	}
	return out
}

func listJSONOf(t *testing.T, env []string, conf string) (backups []string, incomplete []string) {
	t.Helper()
	var l struct {
		Backups []struct {
			ID string `json:"id"`
		} `json:"backups"`
		Incomplete []string `json:"incomplete"`
	}
	out := mustOK(t, pgark(t, env, "list", "--config", conf, "--json")).stdout
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	for _, b := range l.Backups {
		backups = append(backups, b.ID)
	}
	return backups, l.Incomplete
}

// TestBackupTablespaces: a tablespace restored to a new place with
// --tablespace-map, the live tablespace refused, and the original location
// used once it is free.
func TestBackupTablespaces(t *testing.T) {
	for _, major := range pickMajors(14, 15, 18) {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			a := setupArchiving(t, major, 0)
			c := a.c
			tsDir := filepath.Join(a.shared, "ts1")
			testenv.MkdirShared(t, tsDir)
			c.Exec(t, fmt.Sprintf("CREATE TABLESPACE ts1 LOCATION '%s'", tsDir))
			c.Exec(t, "CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g")
			oid := c.QueryRow(t, "SELECT oid::text FROM pg_tablespace WHERE spcname = 'ts1'")
			mustOK(t, pgark(t, a.s3Env, "backup", "--config", a.localConf, "--dsn", c.DSN()))
			c.Exec(t, "INSERT INTO in_ts SELECT g, 'after' FROM generate_series(50001, 50100) g")
			a.switchAndWait(t)

			// The original location holds the live tablespace: refused, nothing written.
			live := filepath.Join(a.shared, "restore-live")
			r := pgark(t, a.s3Env, "restore", "--config", a.localConf, "--owner", "postgres", "latest", live)
			if r.code != 2 || !strings.Contains(r.stderr, "tablespace") {
				t.Fatalf("restore onto a live tablespace: %s", r)
			}
			if exists(filepath.Join(live, "global")) {
				t.Fatal("a refused restore wrote into PGDATA")
			}
			// Remapped.
			dir := filepath.Join(a.shared, "restore-mapped")
			newTS := filepath.Join(a.shared, "ts1-new")
			mustOK(t, pgark(t, a.s3Env, "restore", "--config", a.localConf, "--owner", "postgres",
				"--tablespace-map", oid+"="+newTS, "latest", dir))
			link, err := os.Readlink(filepath.Join(dir, "pg_tblspc", oid))
			if err != nil || link != newTS {
				t.Fatalf("pg_tblspc/%s -> %q (%v), want %s", oid, link, err, newTS)
			}
			rs := testenv.StartPG(t, testenv.PGOptions{Major: major, DataDir: dir, Env: a.s3Env})
			rs.WaitFor(t, 3*time.Minute, func() bool { return rs.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true" })
			if got := rs.QueryRow(t, "SELECT count(*)::text FROM in_ts"); got != "50100" {
				t.Fatalf("rows in the remapped tablespace: %s", got)
			}
			if got := rs.QueryRow(t, "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"); got != newTS {
				t.Fatalf("tablespace location after restore: %s", got)
			}
			rs.Stop(t)

			// Original location, once free.
			c.Stop(t)
			if err := os.Rename(tsDir, tsDir+"-old"); err != nil {
				t.Fatal(err)
			}
			dir2 := filepath.Join(a.shared, "restore-orig")
			mustOK(t, pgark(t, a.s3Env, "restore", "--config", a.localConf, "--owner", "postgres", "latest", dir2))
			rs2 := testenv.StartPG(t, testenv.PGOptions{Major: major, DataDir: dir2, Env: a.s3Env})
			rs2.WaitFor(t, 3*time.Minute, func() bool { return rs2.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true" })
			if got := rs2.QueryRow(t, "SELECT count(*)::text FROM in_ts"); got != "50100" {
				t.Fatalf("rows in the tablespace at its original location: %s", got)
			}
		})
	}
}

// TestRestoreKill9Force: a restore killed midway leaves a PGDATA PostgreSQL
// refuses to start; the same restore without --force refuses to touch it;
// with --force it completes.
func TestRestoreKill9Force(t *testing.T) {
	major := pickMajors(15)[0]
	a := setupArchiving(t, major, 0)
	c := a.c
	c.Pgbench(t, "-i", "-s", "8", "-q")
	mustOK(t, pgark(t, a.s3Env, "backup", "--config", a.s3Conf, "--dsn", c.DSN(), "--backup-part-size", "8MiB"))
	a.switchAndWait(t)
	full := mustOK(t, pgark(t, a.s3Env, "restore", "--config", a.s3Conf, "--owner", "postgres", "--jobs", "1", "latest", filepath.Join(a.shared, "timing"))).dur

	killed := 0
	for i := 0; i < 3; i++ {
		dir := filepath.Join(a.shared, fmt.Sprintf("killed-%d", i))
		cmd := exec.Command(pgarkBin, "restore", "--config", a.s3Conf, "--owner", "postgres", "--jobs", "1", "latest", dir)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, a.s3Env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(float64(full) * (0.2 + 0.5*rand.Float64())))
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if exists(filepath.Join(dir, "global", "pg_control")) {
			continue // it had finished
		}
		killed++
		// PostgreSQL refuses to start on it.
		start := exec.Command(filepath.Join(mustBin(t, major), "postgres"), "-D", dir, "-p", "1")
		testenv.RunAsPostgres(start)
		out, err := start.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "pg_control") {
			t.Fatalf("PostgreSQL on an interrupted restore: %v\n%s", err, out)
		}
		// Without --force: refused, with a message naming --force.
		r := pgark(t, a.s3Env, "restore", "--config", a.s3Conf, "--owner", "postgres", "latest", dir)
		if r.code == 0 || !strings.Contains(r.stderr, "--force") {
			t.Fatalf("restore into an interrupted restore without --force: %s", r)
		}
		mustOK(t, pgark(t, a.s3Env, "restore", "--config", a.s3Conf, "--owner", "postgres", "--force", "latest", dir))
		rs := testenv.StartPG(t, testenv.PGOptions{Major: major, DataDir: dir, Env: a.s3Env})
		rs.WaitFor(t, 3*time.Minute, func() bool { return rs.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true" })
		if got := rs.QueryRow(t, "SELECT count(*)::text FROM pgbench_accounts"); got != "800000" {
			t.Fatalf("rows after --force: %s", got)
		}
		rs.Stop(t)
	}
	if killed == 0 {
		t.Fatal("no restore was interrupted; the kill timing missed every time")
	}
}

func mustBin(t *testing.T, major int) string {
	d, err := testenv.PGBinDir(major)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestBackupKilledMidway: the walsender is terminated mid-stream: the backup
// fails, nothing usable is listed, and the next backup succeeds.
func TestBackupKilledMidway(t *testing.T) {
	major := pickMajors(15)[0]
	a := setupArchiving(t, major, 0)
	c := a.c
	c.Pgbench(t, "-i", "-s", "5", "-q")
	cmd := exec.Command(pgarkBin, "backup", "--config", a.s3Conf, "--dsn", c.DSN(), "--max-rate", "2MiB")
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, a.s3Env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, time.Minute, func() bool {
		return c.QueryRow(t, "SELECT count(*)::text FROM pg_stat_activity WHERE backend_type = 'walsender'") != "0"
	})
	time.Sleep(2 * time.Second)
	c.Exec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'walsender'")
	err := cmd.Wait()
	if err == nil {
		t.Fatalf("backup survived the walsender's termination: %s", stderr.String())
	}
	if code := cmd.ProcessState.ExitCode(); code < 1 || code > 125 {
		t.Fatalf("exit %d", code)
	}
	if n := strings.Count(stderr.String(), "level=ERROR"); n != 1 {
		t.Fatalf("want one error line:\n%s", stderr.String())
	}
	backups, _ := listJSONOf(t, a.s3Env, a.s3Conf)
	if len(backups) != 0 {
		t.Fatalf("a failed backup is listed as usable: %v", backups)
	}
	mustOK(t, pgark(t, a.s3Env, "backup", "--config", a.s3Conf, "--dsn", c.DSN()))
	if backups, _ = listJSONOf(t, a.s3Env, a.s3Conf); len(backups) != 1 {
		t.Fatalf("after a retry: %v", backups)
	}
}

// TestBackupFromStandby: from a streaming standby, with --primary-dsn the
// backup completes; without it, on an idle primary, it fails after
// --archive-timeout naming the missing segment.
func TestBackupFromStandby(t *testing.T) {
	a := setupArchiving(t, 15, 0) // the standby is made with Debian's pg_basebackup 15
	p := a.c
	p.Pgbench(t, "-i", "-s", "2", "-q")
	sdir := filepath.Join(a.shared, "standby")
	bb := exec.Command(filepath.Join(testenv.ClientBinDir, "pg_basebackup"), "-d", p.DSN(), "-D", sdir, "-R", "-X", "stream", "-c", "fast")
	testenv.RunAsPostgres(bb)
	if out, err := bb.CombinedOutput(); err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	s := testenv.StartPG(t, testenv.PGOptions{Major: 15, DataDir: sdir, Env: a.s3Env, Conf: map[string]string{"archive_mode": "on", "archive_command": "/bin/true"}})
	s.WaitFor(t, time.Minute, func() bool { return s.QueryRow(t, "SELECT pg_is_in_recovery()::text") == "true" })
	a.switchAndWait(t)
	// WAL after the last switch: the standby's backup ends inside a segment
	// that the idle primary has not finished, so it is not archived.
	p.Exec(t, "CREATE TABLE after_switch AS SELECT generate_series(1, 1000) AS x")
	want := p.QueryRow(t, "SELECT pg_current_wal_lsn()::text")
	s.WaitFor(t, time.Minute, func() bool {
		return s.QueryRow(t, fmt.Sprintf("SELECT (pg_last_wal_replay_lsn() >= '%s')::text", want)) == "true"
	})

	r := pgark(t, a.s3Env, "backup", "--config", a.s3Conf, "--dsn", s.DSN(), "--archive-timeout", "5s")
	if r.code == 0 || !strings.Contains(r.stderr, "is not in the repository after 5s") {
		t.Fatalf("standby backup without --primary-dsn on an idle primary: %s", r)
	}
	r = mustOK(t, pgark(t, a.s3Env, "backup", "--config", a.s3Conf, "--dsn", s.DSN(), "--primary-dsn", p.DSN(), "--json"))
	var m struct {
		FromStandby bool `json:"from_standby"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || !m.FromStandby {
		t.Fatalf("standby backup metadata: %v %s", err, r.stdout)
	}
	p.Exec(t, "CREATE TABLE after_standby_backup AS SELECT 1 AS x")
	a.switchAndWait(t)
	dir := filepath.Join(a.shared, "from-standby")
	mustOK(t, pgark(t, a.s3Env, "restore", "--config", a.s3Conf, "--owner", "postgres", "latest", dir))
	rs := testenv.StartPG(t, testenv.PGOptions{Major: 15, DataDir: dir, Env: a.s3Env})
	rs.WaitFor(t, 3*time.Minute, func() bool { return rs.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true" })
	if got := rs.QueryRow(t, "SELECT count(*)::text FROM pgbench_accounts") + "/" + rs.QueryRow(t, "SELECT count(*)::text FROM after_standby_backup"); got != "200000/1" {
		t.Fatalf("restored from a standby backup: %s", got)
	}
}

// TestBackupChecksumFailure: a page checksum failure reported by the server
// fails the backup with a clear message, and nothing usable is listed.
func TestBackupChecksumFailure(t *testing.T) {
	major := pickMajors(15)[0]
	a := setupArchivingOpts(t, major, 0, []string{"--data-checksums"})
	c := a.c
	c.Exec(t, "CREATE TABLE victim AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")
	rel := c.QueryRow(t, "SELECT pg_relation_filepath('victim')")
	c.Exec(t, "CHECKPOINT")
	c.Stop(t)
	f, err := os.OpenFile(filepath.Join(c.DataDir, rel), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(strings.Repeat("\xAB", 64)), 8192+4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c.Start(t)
	r := pgark(t, a.s3Env, "backup", "--config", a.s3Conf, "--dsn", c.DSN())
	if r.code < 1 || r.code > 125 || !strings.Contains(r.stderr, "page checksum failures") || !strings.Contains(r.stderr, rel) {
		t.Fatalf("backup of a cluster with a corrupt page: %s", r)
	}
	if backups, _ := listJSONOf(t, a.s3Env, a.s3Conf); len(backups) != 0 {
		t.Fatalf("a backup with checksum failures is listed as usable: %v", backups)
	}
}
