package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
)

// drillMajor is the one major the drill tests run on (CI time): 17 has a full build of
// the server and client tools (pg_verifybackup, pg_amcheck) in one directory.
const drillMajor = 17

// drillJSON is the part of `pgark drill --json` the tests read.
type drillJSON struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	Error        string `json:"error"`
	Phase        string `json:"failed_phase"`
	Backup       string `json:"backup"`
	BackupEndLSN string `json:"backup_end_lsn"`
	ReachedLSN   string `json:"reached_lsn"`
	Timeline     int    `json:"reached_timeline"`
	WALSegments  int    `json:"wal_segments"`
	DataBytes    int64  `json:"data_bytes"`
	Databases    []string
	RestoreSecs  float64 `json:"restore_seconds"`
	ReplaySecs   float64 `json:"replay_seconds"`
	RecoverySecs float64 `json:"recovery_seconds"`
	TotalSecs    float64 `json:"total_seconds"`
	Checks       []struct {
		Name    string `json:"name"`
		Status  string `json:"status"`
		Message string `json:"message"`
	} `json:"checks"`
}

func (d drillJSON) check(name string) string {
	for _, c := range d.Checks {
		if c.Name == name {
			return c.Status
		}
	}
	return ""
}

type drillSetup struct {
	c        *testenv.Cluster
	shared   string
	repo     string
	conf     string
	bin      string
	scratch  string
	spool    string
	backupID string
	endLSN   string
}

func setupDrill(t *testing.T) *drillSetup {
	t.Helper()
	testenv.NeedPG(t, drillMajor)
	bin, _ := testenv.ClientToolsDir(drillMajor)
	for _, tool := range []string{"postgres", "pg_verifybackup", "pg_amcheck"} {
		testenv.ClientTool(t, drillMajor, tool)
	}
	d := &drillSetup{shared: testenv.SharedDir(t), bin: bin}
	d.repo = filepath.Join(d.shared, "repo")
	d.conf = writeConfig(t, d.shared, map[string]string{"repo": d.repo})
	d.scratch = filepath.Join(d.shared, "scratch")
	d.spool = filepath.Join(d.shared, "spool")
	if r := asPostgres(t, nil, "init", "--config", d.conf); r.code != 0 {
		t.Fatalf("init: %s", r)
	}
	d.c = testenv.StartPG(t, testenv.PGOptions{Major: drillMajor, WalSegSizeMB: 1, Conf: map[string]string{
		"archive_mode": "on", "archive_command": fmt.Sprintf("%s wal-push --config %s %%p", pgarkBin, d.conf),
		"checkpoint_timeout": "1h", "max_wal_size": "1GB",
	}})
	d.c.Exec(t, "CREATE DATABASE shop")
	// A tablespace: the drill restores it inside its scratch directory too.
	ts := filepath.Join(d.shared, "ts1")
	testenv.MkdirShared(t, ts)
	d.c.Exec(t, fmt.Sprintf("CREATE TABLESPACE ts1 LOCATION '%s'", ts))
	d.c.Exec(t, "CREATE TABLE orders TABLESPACE ts1 AS SELECT g AS id, now() AS at FROM generate_series(1, 20000) g")
	r := mustOK(t, pgark(t, nil, "backup", "--config", d.conf, "--dsn", d.c.DSN(), "--json"))
	var b struct {
		ID     string `json:"id"`
		EndLSN string `json:"end_lsn"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil || b.ID == "" {
		t.Fatalf("backup --json: %v\n%s", err, r)
	}
	d.backupID, d.endLSN = b.ID, b.EndLSN
	// A restore point, then WAL after the backup: a few segments, each with rows the
	// drill must see.
	d.c.Exec(t, "SELECT pg_create_restore_point('before-segments')")
	makeSegments(t, d.c, 6)
	// The rows' commit is in the segment being written: switch, and wait for it.
	seg := d.c.QueryRow(t, "SELECT pg_walfile_name(pg_switch_wal())")
	d.c.WaitFor(t, 2*time.Minute, func() bool {
		return d.c.QueryRow(t, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= seg
	})
	return d
}

func (d *drillSetup) args(extra ...string) []string {
	return append([]string{"drill", "--config", d.conf, "--scratch", d.scratch, "--spool-dir", d.spool, "--pg-bin", d.bin, "--json"}, extra...)
}

func (d *drillSetup) drill(t *testing.T, code int, extra ...string) drillJSON {
	t.Helper()
	r := pgark(t, nil, d.args(extra...)...)
	if r.code != code {
		t.Fatalf("drill: want exit %d, got %s", code, r)
	}
	var out drillJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("drill --json: %v\n%s", err, r)
	}
	if exists(d.scratch) {
		t.Fatalf("the drill left its scratch directory %s", d.scratch)
	}
	return out
}

// lastDrill is check's last_drill status.
func (d *drillSetup) lastDrill(t *testing.T, code int) (string, string) {
	t.Helper()
	out := runCheckJSON(t, code, "--config", d.conf, "--dsn", d.c.DSN(), "--no-probe")
	return out.check("last_drill")
}

func lsnValue(t *testing.T, s string) uint64 {
	t.Helper()
	hi, lo, ok := strings.Cut(s, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("bad LSN %q", s)
	}
	return h<<32 | l
}

// TestDrill: a healthy drill passes and reports the real values; a deleted WAL segment
// in the middle of the range, a damaged backup part and a --check-sql query returning
// false each fail it, naming the reason; check's last_drill follows.
func TestDrill(t *testing.T) {
	d := setupDrill(t)
	if st, msg := d.lastDrill(t, 0); st != "ok" || !strings.Contains(msg, "no restore drill") {
		t.Fatalf("last_drill before any drill: %s %s", st, msg)
	}
	sqlFile := filepath.Join(d.shared, "checks.sql")
	os.WriteFile(sqlFile, []byte("-- database: postgres\nSELECT count(*) = 20000 FROM orders;\nSELECT max(at) > now() - interval '1 day'\n  FROM seg_rows;\n"), 0o644)
	prom := filepath.Join(d.shared, "drill.prom")

	out := d.drill(t, 0, "--check-sql", sqlFile, "--amcheck", "--prometheus-file", prom)
	if out.Status != "passed" || out.Backup != d.backupID || out.WALSegments <= 0 || out.DataBytes <= 0 ||
		lsnValue(t, out.ReachedLSN) < lsnValue(t, d.endLSN) || out.Timeline != 2 || out.RecoverySecs <= 0 || out.TotalSecs < out.RecoverySecs {
		t.Fatalf("healthy drill: %+v", out)
	}
	for _, c := range []string{"verify_backup", "recovery", "target_reached", "databases_connect", "check_sql", "amcheck"} {
		if out.check(c) != "passed" {
			t.Fatalf("check %s: %+v", c, out.Checks)
		}
	}
	// The drill reached the end of the archive: the last segment archived (1 MiB segments).
	last := d.c.QueryRow(t, "SELECT last_archived_wal FROM pg_stat_archiver")
	logID, _ := strconv.ParseUint(last[8:16], 16, 32)
	segNo, _ := strconv.ParseUint(last[16:24], 16, 32)
	if reachedSeg := (lsnValue(t, out.ReachedLSN) - 1) >> 20; reachedSeg+1 < logID*4096+segNo {
		t.Fatalf("reached %s, but the last archived segment is %s", out.ReachedLSN, last)
	}
	if b := string(readFile(t, prom)); !strings.Contains(b, "pgark_drill_success 1") || !strings.Contains(b, "pgark_drill_recovery_seconds ") {
		t.Fatalf("prometheus file:\n%s", b)
	}
	if st, _ := d.lastDrill(t, 0); st != "ok" {
		t.Fatalf("last_drill after a pass: %s", st)
	}

	// --check-sql returning false: the distinct exit code.
	falseFile := filepath.Join(d.shared, "false.sql")
	os.WriteFile(falseFile, []byte("SELECT count(*) = 1 FROM orders;\n"), 0o644)
	out = d.drill(t, 9, "--check-sql", falseFile)
	if out.Status != "failed" || out.check("check_sql") != "failed" || !strings.Contains(out.Error, "returned false") {
		t.Fatalf("check-sql false: %+v", out)
	}
	if st, msg := d.lastDrill(t, 2); st != "critical" || !strings.Contains(msg, "returned false") {
		t.Fatalf("last_drill after a failed drill: %s %s", st, msg)
	}

	// A WAL segment in the middle of the range after the backup, deleted.
	segs, _ := filepath.Glob(filepath.Join(d.repo, "wal", "00000001", "*", "0000000100000000000000??.pgark"))
	var after []string
	for _, s := range segs {
		if filepath.Base(s) > strings.TrimSuffix(filepath.Base(last), ".pgark") {
			continue
		}
		after = append(after, s)
	}
	if len(after) < 5 {
		t.Fatalf("too few segments archived: %v", segs)
	}
	victim := after[len(after)-3]
	victimName := strings.TrimSuffix(filepath.Base(victim), ".pgark")
	aside := victim + ".aside"
	if err := os.Rename(victim, aside); err != nil {
		t.Fatal(err)
	}
	out = d.drill(t, 9)
	if out.check("target_reached") != "failed" || !strings.Contains(out.Error, victimName) {
		t.Fatalf("missing segment %s: %+v", victimName, out)
	}
	if st, msg := d.lastDrill(t, 2); st != "critical" || !strings.Contains(msg, victimName) {
		t.Fatalf("last_drill after a missing segment: %s %s", st, msg)
	}
	if err := os.Rename(aside, victim); err != nil {
		t.Fatal(err)
	}

	// A damaged backup part.
	part := filepath.Join(d.repo, "backups", d.backupID, "base.tar.000.pgark")
	orig := readFile(t, part)
	bad := append([]byte(nil), orig...)
	bad[len(bad)/2] ^= 0xff
	if err := os.WriteFile(part, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	r := pgark(t, nil, d.args()...)
	if r.code == 0 || r.code == 9 || !strings.Contains(r.stderr, "base.tar.000") {
		t.Fatalf("damaged part: %s", r)
	}
	if exists(d.scratch) {
		t.Fatal("a failed restore left the scratch directory")
	}
	if st, msg := d.lastDrill(t, 2); st != "critical" || !strings.Contains(msg, "restore") {
		t.Fatalf("last_drill after a damaged part: %s %s", st, msg)
	}
	if err := os.WriteFile(part, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := d.drill(t, 0); out.Status != "passed" {
		t.Fatalf("drill after repair: %+v", out)
	}
	if st, _ := d.lastDrill(t, 0); st != "ok" {
		t.Fatalf("last_drill after the repair: %s", st)
	}
	// --keep: the stopped server's directory stays, with its log.
	d.drill(t, 0) // (scratch removed: checked by d.drill)
	r = mustOK(t, pgark(t, nil, append(d.args(), "--keep")...))
	if !exists(filepath.Join(d.scratch, "postgres.log")) || exists(filepath.Join(d.scratch, "pgdata", "postmaster.pid")) {
		t.Fatalf("--keep: want the stopped scratch directory kept\n%s", r)
	}
	if err := os.RemoveAll(d.scratch); err != nil {
		t.Fatal(err)
	}
	// Server binaries of another major: one error naming the version needed, nothing recorded.
	if other, err := testenv.PGBinDir(16); err == nil {
		r = pgark(t, nil, "drill", "--config", d.conf, "--scratch", d.scratch, "--spool-dir", d.spool, "--pg-bin", other)
		wantCode(t, r, 2, "needs PostgreSQL 17")
	}

	// As root, without --scratch or spool-dir: the scratch directory goes under the
	// server user's own cache directory, which that user can reach.
	if os.Geteuid() == 0 {
		r = mustOK(t, pgark(t, nil, "drill", "--config", d.conf, "--pg-bin", d.bin, "--json"))
		var def drillJSON
		if err := json.Unmarshal([]byte(r.stdout), &def); err != nil || def.Status != "passed" {
			t.Fatalf("drill with the default scratch directory: %v\n%s", err, r)
		}
		pu, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`scratch=(\S+)`).FindStringSubmatch(r.stderr)
		if m == nil || !strings.HasPrefix(m[1], filepath.Join(pu.HomeDir, ".cache", "pgark", "drill")+"/") || exists(m[1]) {
			t.Fatalf("default scratch directory %v: not under postgres's cache directory, or left behind:\n%s", m, r.stderr)
		}
	}

	// A target: the restore point, before seg_rows existed.
	rpFile := filepath.Join(d.shared, "rp.sql")
	os.WriteFile(rpFile, []byte("SELECT to_regclass('seg_rows') IS NULL;\nSELECT count(*) = 20000 FROM orders;\n"), 0o644)
	out = d.drill(t, 0, "--target-name", "before-segments", "--check-sql", rpFile)
	if out.check("target_reached") != "passed" || out.check("check_sql") != "passed" || lsnValue(t, out.ReachedLSN) < lsnValue(t, d.endLSN) {
		t.Fatalf("drill to a restore point: %+v", out)
	}

	// The text report.
	r = mustOK(t, pgark(t, nil, "drill", "--config", d.conf, "--scratch", d.scratch, "--spool-dir", d.spool, "--pg-bin", d.bin))
	if !strings.HasPrefix(r.stdout, "DRILL PASSED - backup "+d.backupID) || !strings.Contains(r.stdout, "PASSED    target_reached") {
		t.Fatalf("text report:\n%s", r.stdout)
	}
	t.Logf("text report:\n%s", r.stdout)
	r = mustOK(t, pgark(t, nil, "list", "--drills", "--json", "--config", d.conf))
	var l struct {
		Drills []drillJSON `json:"drills"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil || len(l.Drills) < 9 {
		t.Fatalf("list --drills: %v\n%s", err, r)
	}
}

// TestDrillKill9: a drill killed with -9 while it restores, replays or checks leaves its
// server and directory behind; the next drill stops that server, removes the directory
// and passes. A drill ended by SIGTERM or SIGINT cleans up itself.
func TestDrillKill9(t *testing.T) {
	d := setupDrill(t)
	log := filepath.Join(d.scratch, "postgres.log")
	phases := []struct {
		name string
		cond func() bool
	}{
		{"restore", func() bool { e, _ := os.ReadDir(filepath.Join(d.scratch, "pgdata")); return len(e) > 0 }},
		{"replay", func() bool { return exists(filepath.Join(d.scratch, "pgdata", "postmaster.pid")) }},
		{"checks", func() bool {
			b, _ := os.ReadFile(log)
			return strings.Contains(string(b), "ready to accept connections")
		}},
	}
	for _, ph := range phases {
		cmd := exec.Command(pgarkBin, append(d.args(), "--amcheck")...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + os.TempDir()}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		reached := false
		for !reached {
			select {
			case err := <-exited:
				t.Fatalf("%s: the drill ended (%v) before the phase was seen", ph.name, err)
			case <-time.After(5 * time.Millisecond):
			}
			reached = ph.cond()
			if time.Now().After(deadline) {
				t.Fatalf("%s: phase not reached", ph.name)
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		pm := 0
		if b, err := os.ReadFile(filepath.Join(d.scratch, "pgdata", "postmaster.pid")); err == nil {
			pm, _ = strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
		}
		// The server runs in its own session: it survives the kill.
		if ph.name != "restore" && (pm == 0 || !exists(fmt.Sprintf("/proc/%d", pm))) {
			t.Fatalf("%s: no postmaster left running after the kill (pid %d)", ph.name, pm)
		}
		t.Logf("%s: killed; left %s with postmaster %d", ph.name, d.scratch, pm)
		if !exists(d.scratch) {
			t.Fatalf("%s: nothing left behind to clean up", ph.name)
		}
		out := d.drill(t, 0)
		if out.Status != "passed" {
			t.Fatalf("%s: the next drill: %+v", ph.name, out)
		}
		if pm > 0 {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pm)); err == nil {
				if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pm)); strings.Contains(string(b), d.scratch) {
					t.Fatalf("%s: the killed drill's postmaster %d still runs", ph.name, pm)
				}
			}
		}
		if markers, _ := filepath.Glob(filepath.Join(d.spool, "drill", "markers", "*")); len(markers) != 0 {
			t.Fatalf("%s: markers left: %v", ph.name, markers)
		}
	}

	// SIGTERM and SIGINT while the server replays: the drill itself stops the server and
	// removes everything, then ends by the signal.
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(pgarkBin, d.args()...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + os.TempDir()}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		pidFile := filepath.Join(d.scratch, "pgdata", "postmaster.pid")
		deadline := time.Now().Add(2 * time.Minute)
		pm := 0
		for pm == 0 {
			select {
			case err := <-exited:
				t.Fatalf("%v: the drill ended (%v) before its server started", sig, err)
			case <-time.After(5 * time.Millisecond):
			}
			if b, err := os.ReadFile(pidFile); err == nil {
				pm, _ = strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
			}
			if time.Now().After(deadline) {
				t.Fatalf("%v: no server started", sig)
			}
		}
		_ = cmd.Process.Signal(sig)
		select {
		case <-exited:
		case <-time.After(2 * time.Minute):
			t.Fatalf("%v: the drill did not end", sig)
		}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != sig {
			t.Errorf("%v: the drill ended with %v, not by the signal", sig, cmd.ProcessState)
		}
		if exists(d.scratch) {
			t.Fatalf("%v: the scratch directory is left", sig)
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pm)); err == nil && strings.Contains(string(b), d.scratch) {
			t.Fatalf("%v: postmaster %d still runs", sig, pm)
		}
		if markers, _ := filepath.Glob(filepath.Join(d.spool, "drill", "markers", "*")); len(markers) != 0 {
			t.Fatalf("%v: markers left: %v", sig, markers)
		}
	}
}
