package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
)

// checkJSON is the part of `pgark check --json` the tests read.
type checkJSON struct {
	Status string `json:"status"`
	Checks []struct {
		Name    string `json:"name"`
		Status  string `json:"status"`
		Message string `json:"message"`
	} `json:"checks"`
	Archiver *struct {
		FailedCount   int    `json:"failed_count"`
		LastFailedWAL string `json:"last_failed_wal"`
	} `json:"archiver"`
	Server struct {
		Notes []string `json:"notes"`
	} `json:"server"`
	LagSegments *int `json:"lag_segments"`
	ReadyFiles  *int `json:"ready_files"`
	Probe       struct {
		Segment  string `json:"segment"`
		Archived bool   `json:"archived"`
		Skipped  string `json:"skipped"`
	} `json:"probe"`
	Window *struct {
		FromBackup string `json:"from_backup"`
		ToSegment  string `json:"to_segment"`
	} `json:"window"`
	Gaps []struct {
		First string `json:"first"`
		Last  string `json:"last"`
		Count int    `json:"count"`
	} `json:"gaps"`
	NewestBackup *struct {
		ID string `json:"id"`
	} `json:"newest_backup"`
}

func (c checkJSON) check(name string) (status, msg string) {
	for _, ch := range c.Checks {
		if ch.Name == name {
			return ch.Status, ch.Message
		}
	}
	return "", ""
}

func runCheckJSON(t *testing.T, code int, args ...string) checkJSON {
	t.Helper()
	r := pgark(t, nil, append([]string{"check", "--json"}, args...)...)
	if r.code != code {
		t.Fatalf("check --json: want exit %d, got %s", code, r)
	}
	var out checkJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("check --json: %v\n%s", err, r)
	}
	return out
}

type backupJSON struct {
	ID       string `json:"id"`
	WALFirst string `json:"wal_first"`
	WALLast  string `json:"wal_last"`
}

func takeBackup(t *testing.T, a *archiveSetup) backupJSON {
	t.Helper()
	r := mustOK(t, pgark(t, a.s3Env, "backup", "--config", a.localConf, "--dsn", a.c.DSN(), "--json"))
	var b backupJSON
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil || b.ID == "" {
		t.Fatalf("backup --json: %v\n%s", err, r)
	}
	return b
}

var promSample = regexp.MustCompile(`^(pgark_[a-z0-9_]+)(\{[a-z_]+="(?:[^"\\]|\\.)*"(?:,[a-z_]+="(?:[^"\\]|\\.)*")*\})? (-?[0-9.e+]+)$`)

// TestCheckHealthy: a cluster archiving into the repository, with a backup,
// is OK on every check, in the three output formats; the probe's segment
// reaches the repository. A check that cannot run exits 3 (UNKNOWN).
func TestCheckHealthy(t *testing.T) {
	a := setupArchiving(t, 15, 1)
	c := a.c
	b := takeBackup(t, a)
	makeSegments(t, c, 3)
	// Push-ahead stores segments before PostgreSQL's own calls for them
	// return: wait until pg_stat_archiver counts them.
	c.WaitFor(t, 2*time.Minute, func() bool { return readyCount(t, c) == 0 && a.stats(t).archived >= 5 })
	archived := a.stats(t).archived

	out := runCheckJSON(t, 0, "--config", a.localConf, "--dsn", c.DSN())
	if out.Status != "ok" || len(out.Checks) != 11 {
		t.Fatalf("status %s: %+v", out.Status, out.Checks)
	}
	if st, msg := out.check("probe"); st != "ok" || !out.Probe.Archived || out.Probe.Segment == "" {
		t.Fatalf("probe %s %q: %+v", st, msg, out.Probe)
	}
	if _, msg := out.check("archive_command"); !strings.Contains(msg, "--config "+a.localConf) {
		t.Errorf("archive_command: %q", msg)
	}
	if out.Window == nil || out.Window.FromBackup != b.ID || out.Window.ToSegment < out.Probe.Segment {
		t.Fatalf("window %+v, backup %s, probe %s", out.Window, b.ID, out.Probe.Segment)
	}
	if out.NewestBackup == nil || out.NewestBackup.ID != b.ID || len(out.Gaps) != 0 || out.LagSegments == nil || out.ReadyFiles == nil {
		t.Fatalf("newest %+v gaps %+v lag %v ready %v", out.NewestBackup, out.Gaps, out.LagSegments, out.ReadyFiles)
	}

	// Prometheus text format, line by line.
	r := mustOK(t, pgark(t, nil, "check", "--config", a.localConf, "--dsn", c.DSN(), "--prometheus", "--max-backup-age", "1h"))
	if !strings.Contains(r.stdout, "\npgark_check_status 0\n") && !strings.HasPrefix(r.stdout, "pgark_check_status 0\n") {
		t.Fatalf("no pgark_check_status 0:\n%s", r.stdout)
	}
	typed := map[string]bool{}
	samples := map[string]float64{}
	for i, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(f, " ")
			if typ != "gauge" && typ != "counter" {
				t.Fatalf("line %d: %q", i+1, line)
			}
			typed[name] = true
			continue
		}
		if strings.HasPrefix(line, "# HELP pgark_") {
			continue
		}
		m := promSample.FindStringSubmatch(line)
		if m == nil || !typed[m[1]] {
			t.Fatalf("line %d is not a typed pgark_ sample (name{labels} value): %q\n%s", i+1, line, r.stdout)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("line %d: %q: %v", i+1, line, err)
		}
		samples[m[1]+m[2]] = v
	}
	now := float64(time.Now().Unix())
	for _, name := range []string{"pgark_last_backup_timestamp_seconds", "pgark_recovery_window_start_timestamp_seconds", "pgark_recovery_window_end_timestamp_seconds"} {
		if v := samples[name]; v < now-600 || v > now+60 {
			t.Errorf("%s = %v, now %v", name, v, now)
		}
	}
	for name, want := range map[string]float64{"pgark_wal_gaps": 0, "pgark_wal_missing_segments": 0, "pgark_archive_failed_total": 0, "pgark_probe_success": 1} {
		if v, ok := samples[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if archived < 5 || samples["pgark_archived_total"] < float64(archived) || samples["pgark_last_backup_size_bytes"] < 1<<20 {
		t.Errorf("archived %v (pg_stat_archiver said %d before), backup size %v", samples["pgark_archived_total"], archived, samples["pgark_last_backup_size_bytes"])
	}

	// The human report: a summary line, then one line per check.
	r = mustOK(t, pgark(t, nil, "check", "--config", a.localConf, "--dsn", c.DSN(), "--no-probe"))
	t.Logf("pgark check:\n%s", r.stdout)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 12 || !strings.HasPrefix(lines[0], "PGARK CHECK OK") || !strings.Contains(r.stdout, "skipped: --no-probe") {
		t.Fatalf("report:\n%s", r.stdout)
	}

	// The S3 repository (the second pgark of archive_command) holds the same
	// WAL but no backup: the probe passes, nothing is restorable from it.
	r = pgark(t, a.s3Env, "check", "--config", a.s3Conf, "--dsn", c.DSN(), "--json")
	var s3out checkJSON
	if err := json.Unmarshal([]byte(r.stdout), &s3out); err != nil || r.code != 2 {
		t.Fatalf("check of the S3 repository: %v %s", err, r)
	}
	for _, ch := range s3out.Checks {
		want := map[string]string{"newest_backup": "critical", "recovery_window": "critical"}[ch.Name]
		if want == "" {
			want = "ok"
		}
		if ch.Status != want {
			t.Errorf("S3 %s: %s %s", ch.Name, ch.Status, ch.Message)
		}
	}
	if !s3out.Probe.Archived {
		t.Errorf("S3 probe: %+v", s3out.Probe)
	}

	// A monitoring role: pg_monitor reads everything but the probe needs
	// EXECUTE on two functions; until then the probe is a warning.
	c.Exec(t, "CREATE ROLE pgark_monitor LOGIN IN ROLE pg_monitor")
	mon := strings.Replace(c.DSN(), "postgres://postgres@", "postgres://pgark_monitor@", 1)
	if out = runCheckJSON(t, 0, "--config", a.localConf, "--dsn", mon, "--no-probe"); len(out.Server.Notes) != 0 || out.ReadyFiles == nil {
		t.Fatalf("pg_monitor could not read: %q", out.Server.Notes)
	}
	out = runCheckJSON(t, 1, "--config", a.localConf, "--dsn", mon)
	if st, msg := out.check("probe"); st != "warning" || !strings.Contains(msg, "permission denied") {
		t.Fatalf("probe without EXECUTE: %s %q", st, msg)
	}
	c.Exec(t, "GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO pgark_monitor")
	if out = runCheckJSON(t, 0, "--config", a.localConf, "--dsn", mon); !out.Probe.Archived {
		t.Fatalf("probe with EXECUTE: %+v", out.Probe)
	}

	// UNKNOWN (3): the check could not run.
	down := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", testenv.FreePort(t))
	r = pgark(t, nil, "check", "--config", a.localConf, "--dsn", down)
	wantCode(t, r, 3, "connect to")
	if !strings.HasPrefix(r.stdout, "PGARK CHECK UNKNOWN") {
		t.Errorf("stdout: %q", r.stdout)
	}
	r = pgark(t, nil, "check", "--config", a.localConf, "--dsn", down, "--prometheus")
	if r.code != 3 || !strings.Contains(r.stdout, "\npgark_check_status 3\n") {
		t.Errorf("prometheus when the check cannot run: %s", r)
	}
	wantCode(t, pgark(t, nil, "check", "--repo", a.shared+"/norepo", "--dsn", c.DSN()), 3, "no pgark repository")
	wantCode(t, pgark(t, nil, "check", "--config", a.localConf, "--max-archive-lag", "many"), 3, "max-archive-lag")
	wantCode(t, pgark(t, nil, "check", "--config", a.localConf, "--json", "--prometheus"), 3, "exclude")
	wantCode(t, pgark(t, nil, "check", "--no-such-flag"), 3, "no-such-flag")
}

// TestCheckFailingArchiver: archive_command pointed at a repository that
// does not exist: critical (exit 2), naming the segment that fails.
func TestCheckFailingArchiver(t *testing.T) {
	a := setupArchiving(t, 15, 1)
	c := a.c
	takeBackup(t, a)
	c.Exec(t, fmt.Sprintf("ALTER SYSTEM SET archive_command = '%s wal-push --repo /nonexistent/repo %%p'", pgarkBin))
	c.Exec(t, "SELECT pg_reload_conf()")
	time.Sleep(300 * time.Millisecond)
	c.SwitchWAL(t)
	tries := 0
	c.WaitFor(t, 2*time.Minute, func() bool {
		if tries++; tries%30 == 0 {
			c.SwitchWAL(t) // in case the archiver had not reloaded yet
		}
		return a.stats(t).failed > 0
	})
	failed := a.stats(t).lastFailed

	r := pgark(t, nil, "check", "--config", a.localConf, "--dsn", c.DSN(), "--check-timeout", "3s")
	wantCode(t, r, 2, "CRITICAL")
	t.Logf("pgark check:\n%s", r.stdout)
	if !strings.Contains(r.stdout, "archive_command failed for "+failed) || !strings.HasPrefix(r.stdout, "PGARK CHECK CRITICAL") {
		t.Fatalf("the report does not name %s:\n%s", failed, r)
	}
	out := runCheckJSON(t, 2, "--config", a.localConf, "--dsn", c.DSN(), "--no-probe")
	if out.Status != "critical" || out.Archiver == nil || out.Archiver.LastFailedWAL != failed || out.Archiver.FailedCount == 0 {
		t.Fatalf("status %s archiver %+v", out.Status, out.Archiver)
	}
	if st, msg := out.check("archiver"); st != "critical" || !strings.Contains(msg, failed) {
		t.Errorf("archiver: %s %q", st, msg)
	}
	if st, msg := out.check("archive_command"); st != "warning" || !strings.Contains(msg, "/nonexistent/repo") {
		t.Errorf("archive_command: %s %q", st, msg)
	}
}

// TestCheckGap: a segment deleted between two backups is a gap (warning)
// and the window starts at the second backup; one deleted after the newest
// backup leaves nothing restorable (critical).
func TestCheckGap(t *testing.T) {
	a := setupArchiving(t, 15, 1)
	c := a.c
	b1 := takeBackup(t, a)
	makeSegments(t, c, 3)
	a.switchAndWait(t)
	b2 := takeBackup(t, a)
	makeSegments(t, c, 3)
	a.switchAndWait(t)

	gap := nextSegment(t, b1.WALLast)
	if gap >= b2.WALFirst {
		t.Fatalf("no segment between backup %s (to %s) and %s (from %s)", b1.ID, b1.WALLast, b2.ID, b2.WALFirst)
	}
	if err := os.Remove(objectPath(a.localRepo, gap)); err != nil {
		t.Fatal(err)
	}
	out := runCheckJSON(t, 1, "--config", a.localConf, "--dsn", c.DSN())
	if out.Status != "warning" || len(out.Gaps) != 1 || out.Gaps[0].First != gap || out.Gaps[0].Last != gap || out.Gaps[0].Count != 1 {
		t.Fatalf("status %s, gaps %+v; want exactly %s\n%+v", out.Status, out.Gaps, gap, out.Checks)
	}
	if st, msg := out.check("wal_continuity"); st != "warning" || !strings.Contains(msg, gap) {
		t.Errorf("wal_continuity: %s %q", st, msg)
	}
	if out.Window == nil || out.Window.FromBackup != b2.ID {
		t.Fatalf("window %+v, want from backup %s", out.Window, b2.ID)
	}
	for _, ch := range out.Checks {
		if ch.Status != "ok" && ch.Name != "wal_continuity" {
			t.Errorf("%s: %s %s", ch.Name, ch.Status, ch.Message)
		}
	}

	// A gap after the newest backup: nothing is restorable.
	gap2 := nextSegment(t, b2.WALLast)
	if err := os.Remove(objectPath(a.localRepo, gap2)); err != nil {
		t.Fatal(err)
	}
	r := pgark(t, nil, "check", "--config", a.localConf, "--dsn", c.DSN(), "--no-probe")
	t.Logf("pgark check:\n%s", r.stdout)
	out = runCheckJSON(t, 2, "--config", a.localConf, "--dsn", c.DSN(), "--no-probe")
	if out.Status != "critical" || out.Window != nil || len(out.Gaps) != 2 || out.Gaps[1].First != gap2 {
		t.Fatalf("status %s window %+v gaps %+v", out.Status, out.Window, out.Gaps)
	}
	if st, msg := out.check("recovery_window"); st != "critical" || !strings.Contains(msg, gap2) {
		t.Errorf("recovery_window: %s %q", st, msg)
	}
}

// nextSegment is the segment after name with 1 MB segments.
func nextSegment(t *testing.T, name string) string {
	t.Helper()
	no, err := strconv.ParseUint(name[16:24], 16, 32)
	if err != nil || no+1 >= 4096 {
		t.Fatalf("segment %q", name)
	}
	return fmt.Sprintf("%s%08X", name[:16], no+1)
}

// TestCheckStandby: on a streaming standby (archive_mode = on) the probe is
// skipped and the primary's archiving is not judged from the standby; the
// repository checks still run.
func TestCheckStandby(t *testing.T) {
	a := setupArchiving(t, 15, 1)
	p := a.c
	takeBackup(t, a)
	sdir := filepath.Join(a.shared, "standby")
	bb := exec.Command(filepath.Join(testenv.ClientBinDir, "pg_basebackup"), "-d", p.DSN(), "-D", sdir, "-R", "-X", "stream", "-c", "fast")
	testenv.RunAsPostgres(bb)
	if out, err := bb.CombinedOutput(); err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	s := testenv.StartPG(t, testenv.PGOptions{Major: 15, DataDir: sdir, Env: a.s3Env,
		Conf: map[string]string{"archive_mode": "on", "archive_command": a.archiveCmd(a.localConf)}})
	s.WaitFor(t, time.Minute, func() bool { return s.QueryRow(t, "SELECT pg_is_in_recovery()::text") == "true" })
	a.switchAndWait(t)

	r := mustOK(t, pgark(t, nil, "check", "--config", a.localConf, "--dsn", s.DSN()))
	t.Logf("pgark check on the standby:\n%s", r.stdout)
	out := runCheckJSON(t, 0, "--config", a.localConf, "--dsn", s.DSN())
	if !strings.Contains(out.Probe.Skipped, "standby") || out.Window == nil {
		t.Fatalf("probe %+v window %+v", out.Probe, out.Window)
	}
	if st, msg := out.check("archive_mode"); st != "ok" || !strings.Contains(msg, "the primary archives") {
		t.Errorf("archive_mode: %s %q", st, msg)
	}
}
