package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
)

// incrSetup is a cluster archiving into an encrypted local repository,
// with WAL summaries on. The backup host's configuration has no identity:
// incremental backups read their parent's manifest from the local copy.
type incrSetup struct {
	c        *testenv.Cluster
	shared   string
	conf     string // the backup host's: recipients only
	readEnv  []string
	repoDir  string
	spoolDir string
}

func setupIncremental(t *testing.T, major int, conf map[string]string) *incrSetup {
	t.Helper()
	s := &incrSetup{shared: testenv.SharedDir(t)}
	key := filepath.Join(s.shared, "age-identity.txt")
	r := asPostgres(t, nil, "key", "generate", key)
	if r.code != 0 {
		t.Fatalf("key generate: %s", r)
	}
	s.repoDir = filepath.Join(s.shared, "repo")
	s.spoolDir = filepath.Join(s.shared, "spool")
	s.conf = writeConfig(t, s.shared, map[string]string{"repo": s.repoDir, "age-recipients": strings.TrimSpace(r.stdout), "spool-dir": s.spoolDir})
	s.readEnv = []string{"PGARK_AGE_IDENTITY_FILE=" + key}
	if r := asPostgres(t, nil, "init", "--config", s.conf); r.code != 0 {
		t.Fatalf("init: %s", r)
	}
	pgconf := map[string]string{
		"archive_mode":           "on",
		"archive_command":        fmt.Sprintf("%s wal-push --config %s %%p", pgarkBin, s.conf),
		"archive_timeout":        "0",
		"track_commit_timestamp": "on",
		"autovacuum":             "off",
	}
	for k, v := range conf {
		pgconf[k] = v
	}
	s.c = testenv.StartPG(t, testenv.PGOptions{Major: major, Conf: pgconf})
	return s
}

type backupOut struct {
	ID          string `json:"id"`
	Type        string `json:"type"`
	Parent      string `json:"parent"`
	Fallback    string `json:"fallback"`
	StoredBytes int64  `json:"stored_bytes"`
	RawBytes    int64  `json:"raw_bytes"`
	StartLSN    string `json:"start_lsn"`
}

func (s *incrSetup) backup(t *testing.T, typ string, extra ...string) backupOut {
	t.Helper()
	args := append([]string{"backup", "--config", s.conf, "--dsn", s.c.DSN(), "--json", "--backup-type", typ}, extra...)
	r := mustOK(t, pgark(t, nil, args...))
	var b backupOut
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil || b.ID == "" {
		t.Fatalf("backup --json: %v\n%s", err, r)
	}
	return b
}

// state is what a restore must reproduce: the marks and the pgbench total.
func (s *incrSetup) state(t *testing.T) string {
	return s.c.QueryRow(t, "SELECT count(*)::text||' '||coalesce(max(id),0)::text||' '||(SELECT sum(abalance) FROM pgbench_accounts)::text FROM marks")
}

// restoreAndCheck restores args (a backup and targets) into a new
// directory, checks it with pg_verifybackup, starts it, and returns its
// state and the cluster.
func (s *incrSetup) restoreAndCheck(t *testing.T, major int, name string, args ...string) (string, *testenv.Cluster) {
	t.Helper()
	dir := filepath.Join(s.shared, "restore-"+name)
	all := append([]string{"restore", "--config", s.conf, "--owner", "postgres"}, args...)
	mustOK(t, pgark(t, s.readEnv, append(all, dir)...))
	if label, err := os.ReadFile(filepath.Join(dir, "backup_label")); err != nil || strings.Contains(string(label), "INCREMENTAL") {
		t.Fatalf("%s: backup_label: %v\n%s", name, err, label)
	}
	if v, ok := testenv.ClientTool(t, major, "pg_verifybackup"); ok {
		if out, err := exec.Command(v, "-n", dir).CombinedOutput(); err != nil {
			t.Fatalf("%s: pg_verifybackup -n: %v\n%s", name, err, out)
		}
	}
	rs := testenv.StartPG(t, testenv.PGOptions{Major: major, DataDir: dir})
	rs.WaitFor(t, 3*time.Minute, func() bool { return rs.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true" })
	return rs.QueryRow(t, "SELECT count(*)::text||' '||coalesce(max(id),0)::text||' '||(SELECT sum(abalance) FROM pgbench_accounts)::text FROM marks"), rs
}

// TestIncrementalBlockLevel: on PostgreSQL 17 and 18, full, incr, incr,
// diff under pgbench load; each backup restores to exactly the state it
// was taken at, a point in time between two incremental backups restores
// through the chain, pg_verifybackup accepts every rebuilt directory and
// pg_amcheck finds nothing. A damaged part of the full backup makes the
// incremental ones unrestorable (exit 3).
func TestIncrementalBlockLevel(t *testing.T) {
	for _, major := range []int{17, 18} {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			testenv.NeedPG(t, major)
			incrementalChain(t, major)
		})
	}
}

func incrementalChain(t *testing.T, major int) {
	s := setupIncremental(t, major, map[string]string{"summarize_wal": "on"})
	c := s.c
	c.Pgbench(t, "-i", "-s", "10", "-q")
	c.Exec(t, "CREATE TABLE marks(id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
	c.Exec(t, "VACUUM FREEZE")
	mark := 0
	addMark := func() {
		mark++
		c.Exec(t, fmt.Sprintf("INSERT INTO marks(id) VALUES (%d)", mark))
	}
	load := func() {
		c.Pgbench(t, "-t", "300", "-c", "2", "-n")
		addMark()
	}

	addMark()
	full := s.backup(t, "incr") // no parent yet: a full one, and it says why
	if full.Type != "full" || full.Fallback == "" {
		t.Fatalf("first incr: %+v, want a full backup with a reason", full)
	}
	states := map[string]string{full.ID: s.state(t)}
	load()
	inc1 := s.backup(t, "incr")
	states[inc1.ID] = s.state(t)
	load()
	// A point in time between inc1 and inc2, after everything up to here.
	var pitTime string
	c.WaitFor(t, time.Minute, func() bool {
		pitTime = c.QueryRow(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
		return c.QueryRow(t, fmt.Sprintf("SELECT ('%s'::timestamptz > (SELECT max(at) FROM marks) + interval '20 ms')::text", pitTime)) == "true"
	})
	pitState := s.state(t)
	c.WaitFor(t, time.Minute, func() bool {
		return c.QueryRow(t, fmt.Sprintf("SELECT (clock_timestamp() > '%s'::timestamptz + interval '20 ms')::text", pitTime)) == "true"
	})
	load()
	inc2 := s.backup(t, "incr")
	states[inc2.ID] = s.state(t)
	load()
	diff := s.backup(t, "diff")
	states[diff.ID] = s.state(t)

	for _, x := range []struct {
		b      backupOut
		typ    string
		parent string
	}{{inc1, "incr", full.ID}, {inc2, "incr", inc1.ID}, {diff, "diff", full.ID}} {
		if x.b.Type != x.typ || x.b.Parent != x.parent || x.b.Fallback != "" {
			t.Fatalf("backup %+v: want %s on %s", x.b, x.typ, x.parent)
		}
		if x.b.RawBytes*4 > full.RawBytes {
			t.Errorf("%s %s holds %d bytes, the full one %d: not an incremental backup", x.typ, x.b.ID, x.b.RawBytes, full.RawBytes)
		}
	}
	// The backups' WAL, then the PITR mark's, reach the archive.
	(&archiveSetup{c: c}).switchAndWait(t)

	amcheck, haveAmcheck := testenv.ClientTool(t, major, "pg_amcheck")
	for _, b := range []backupOut{full, inc1, inc2, diff} {
		got, rs := s.restoreAndCheck(t, major, b.ID, "--target-immediate", "--target-action", "promote", b.ID)
		if got != states[b.ID] {
			t.Fatalf("backup %s (%s) restored to %q, taken at %q", b.ID, b.Type, got, states[b.ID])
		}
		if haveAmcheck && b.ID == inc2.ID {
			rs.Exec(t, "CREATE EXTENSION amcheck")
			cmd := exec.Command(amcheck, "--all", "--heapallindexed", "--install-missing")
			cmd.Env = append(os.Environ(), rs.PGEnv()...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("pg_amcheck on backup %s: %v\n%s", b.ID, err, out)
			}
		}
		rs.Stop(t)
	}
	got, rs := s.restoreAndCheck(t, major, "pitr", "--target-time", pitTime, "--target-action", "promote", "latest")
	if got != pitState {
		t.Fatalf("restore to %s: %q, want %q", pitTime, got, pitState)
	}
	rs.Stop(t)

	// list shows each backup's type and parent.
	var l struct {
		Backups []struct {
			ID          string `json:"id"`
			Type        string `json:"type"`
			Parent      string `json:"parent"`
			StoredBytes int64  `json:"stored_bytes"`
		} `json:"backups"`
	}
	if err := json.Unmarshal([]byte(mustOK(t, pgark(t, nil, "list", "--config", s.conf, "--json")).stdout), &l); err != nil || len(l.Backups) != 4 {
		t.Fatalf("list --json: %v %+v", err, l)
	}
	for i, want := range []backupOut{full, inc1, inc2, diff} {
		if got := l.Backups[i]; got.ID != want.ID || got.Type != want.Type || got.Parent != want.Parent || got.StoredBytes != want.StoredBytes {
			t.Errorf("list: %+v, want %+v", got, want)
		}
	}
	// retain keeps the chain of what it keeps, and says why.
	var plan struct {
		Backups []struct {
			ID   string `json:"id"`
			Keep bool   `json:"keep"`
			Why  string `json:"why"`
		} `json:"backups"`
	}
	out := mustOK(t, pgark(t, s.readEnv, "retain", "--config", s.conf, "--keep-last", "1", "--dry-run", "--json")).stdout
	if err := json.Unmarshal([]byte(out), &plan); err != nil || len(plan.Backups) != 4 {
		t.Fatalf("retain --dry-run --json: %v\n%s", err, out)
	}
	if b := plan.Backups; !b[0].Keep || b[1].Keep || b[2].Keep || !b[3].Keep || !strings.Contains(b[0].Why, "parent of kept backup "+diff.ID) {
		t.Fatalf("retain --keep-last 1 with a chain: %s", out)
	}

	// A damaged part of the full backup: its incremental backups cannot be
	// restored, and restore says so (exit 3).
	parts, _ := filepath.Glob(filepath.Join(s.repoDir, "backups", full.ID, "base.tar.*.pgark"))
	if len(parts) == 0 {
		t.Fatal("no parts of the full backup")
	}
	if err := os.Remove(parts[0]); err != nil {
		t.Fatal(err)
	}
	r := pgark(t, s.readEnv, "restore", "--config", s.conf, "--owner", "postgres", inc2.ID, filepath.Join(s.shared, "never"))
	if r.code != 3 || !strings.Contains(r.stderr, full.ID) {
		t.Fatalf("restore of an incremental backup whose full part is gone: %s", r)
	}
	// verify names every backup that the damage makes unrestorable.
	r = pgark(t, s.readEnv, "verify", "--config", s.conf, "--json")
	var v verifyOut
	if err := json.Unmarshal([]byte(r.stdout), &v); r.code != 1 || err != nil || v.OK {
		t.Fatalf("verify after the damage: %v %s", err, r)
	}
	for _, b := range v.Backups {
		if b.OK {
			t.Errorf("verify: backup %s OK, but its chain starts with the damaged %s", b.ID, full.ID)
		}
		if b.ID != full.ID && !strings.Contains(fmt.Sprint(b.Problems), "needs backup "+full.ID) {
			t.Errorf("verify: backup %s problems %+v do not name %s", b.ID, b.Problems, full.ID)
		}
	}
}

// TestIncrementalFallback: where a block-level incremental backup is not
// possible (PostgreSQL 15; 17 with summarize_wal off) incr takes a full
// backup and says why, and require-parent fails instead (exit 3).
func TestIncrementalFallback(t *testing.T) {
	for _, tc := range []struct {
		major int
		conf  map[string]string
		why   string
	}{{15, nil, "PostgreSQL 15"}, {17, map[string]string{"summarize_wal": "off"}, "summarize_wal"}} {
		t.Run(fmt.Sprintf("pg%d", tc.major), func(t *testing.T) {
			testenv.NeedPG(t, tc.major)
			s := setupIncremental(t, tc.major, tc.conf)
			s.backup(t, "full")
			b := s.backup(t, "incr")
			if b.Type != "full" || b.Parent != "" || !strings.Contains(b.Fallback, tc.why) {
				t.Fatalf("incr: %+v, want a full backup naming %q", b, tc.why)
			}
			r := pgark(t, nil, "backup", "--config", s.conf, "--dsn", s.c.DSN(), "--backup-type", "diff")
			if r.code != 0 || !strings.Contains(r.stdout, "a full backup instead of diff") {
				t.Fatalf("diff: %s", r)
			}
			wantCode(t, pgark(t, nil, "backup", "--config", s.conf, "--dsn", s.c.DSN(), "--backup-type", "incr", "--require-parent"), 3, tc.why)
		})
	}
}

// TestIncrementalKill9: incremental backups killed at random moments are
// never listed and leave their parents untouched: after the kills every
// listed backup's chain is whole, the next incremental backup completes,
// verify passes and the backup restores to its state.
func TestIncrementalKill9(t *testing.T) {
	testenv.NeedPG(t, 17)
	n := killLoops()
	s := setupIncremental(t, 17, map[string]string{"summarize_wal": "on"})
	c := s.c
	c.Pgbench(t, "-i", "-s", "5", "-q")
	c.Exec(t, "CREATE TABLE marks(id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
	s.backup(t, "full")
	args := []string{"backup", "--config", s.conf, "--dsn", c.DSN(), "--backup-type", "incr"}
	d := timed(t, nil, args...)
	kills := 0
	for i := range n {
		c.Pgbench(t, "-t", "50", "-c", "2", "-n")
		c.Exec(t, fmt.Sprintf("INSERT INTO marks(id) VALUES (%d)", i+1))
		if killAt(t, nil, d, args...) {
			kills++
		}
	}
	c.Exec(t, fmt.Sprintf("INSERT INTO marks(id) VALUES (%d)", n+1))
	last := s.backup(t, "incr")
	if last.Type != "incr" {
		t.Fatalf("the incremental backup after the kills: %+v", last)
	}
	want := s.state(t)
	var l struct {
		Backups []struct {
			ID     string `json:"id"`
			Parent string `json:"parent"`
		} `json:"backups"`
	}
	if err := json.Unmarshal([]byte(mustOK(t, pgark(t, nil, "list", "--config", s.conf, "--json")).stdout), &l); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, b := range l.Backups {
		if b.Parent != "" && !ids[b.Parent] {
			t.Fatalf("backup %s is listed, its parent %s is not", b.ID, b.Parent)
		}
		ids[b.ID] = true
	}
	if len(l.Backups) < 3 || len(l.Backups) > 2+n-kills+1 {
		t.Fatalf("%d backups listed after %d kills of %d runs", len(l.Backups), kills, n)
	}
	(&archiveSetup{c: c}).switchAndWait(t)
	if r := pgark(t, s.readEnv, "verify", "--config", s.conf); r.code != 0 {
		t.Fatalf("verify after the kills: %s", r)
	}
	got, rs := s.restoreAndCheck(t, 17, "after-kills", "--target-immediate", "--target-action", "promote", last.ID)
	if got != want {
		t.Fatalf("restored %q, want %q", got, want)
	}
	rs.Stop(t)
	t.Logf("incr: %d of %d runs killed mid-way; %d backups listed", kills, n, len(l.Backups))
}
