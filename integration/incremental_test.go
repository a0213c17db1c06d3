package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage/local"
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
	env      []string // for backups
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
	s.conf = writeConfig(t, s.shared, map[string]string{"repo": s.repoDir, "age-recipients": strings.TrimSpace(r.stdout)})
	// The backup host's spool (where backups keep their manifests). Not in
	// the config file: restored servers' restore_command would use it too.
	s.env = []string{"PGARK_SPOOL_DIR=" + s.spoolDir}
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
	Method      string `json:"method"`
	Parent      string `json:"parent"`
	Fallback    string `json:"fallback"`
	StoredBytes int64  `json:"stored_bytes"`
	RawBytes    int64  `json:"raw_bytes"`
	StartLSN    string `json:"start_lsn"`
}

func (s *incrSetup) backup(t *testing.T, typ string, extra ...string) backupOut {
	t.Helper()
	args := append([]string{"backup", "--config", s.conf, "--dsn", s.c.DSN(), "--json", "--backup-type", typ}, extra...)
	r := mustOK(t, pgark(t, s.env, args...))
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
	combineCheck(t, s, major, []string{full.ID, inc1.ID, inc2.ID})

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

// TestIncrementalFallback: an incr or diff without a usable parent (no
// backup yet, max-chain 0) takes a full backup and says why;
// require-parent fails instead (exit 3).
func TestIncrementalFallback(t *testing.T) {
	s := setupIncremental(t, 17, map[string]string{"summarize_wal": "on"})
	b := s.backup(t, "diff")
	if b.Type != "full" || !strings.Contains(b.Fallback, "no full backup") {
		t.Fatalf("diff with no backup: %+v", b)
	}
	b = s.backup(t, "incr", "--max-chain", "0")
	if b.Type != "full" || !strings.Contains(b.Fallback, "max-chain") {
		t.Fatalf("incr with --max-chain 0: %+v", b)
	}
	r := pgark(t, s.env, "backup", "--config", s.conf, "--dsn", s.c.DSN(), "--backup-type", "incr", "--max-chain", "0")
	if r.code != 0 || !strings.Contains(r.stdout, "a full backup instead of incr") {
		t.Fatalf("incr, text output: %s", r)
	}
	wantCode(t, pgark(t, s.env, "backup", "--config", s.conf, "--dsn", s.c.DSN(), "--backup-type", "incr", "--max-chain", "0", "--require-parent"), 3, "max-chain")
}

// TestIncrementalFileLevel: where the server has no WAL summaries
// (PostgreSQL 15; 17 with summarize_wal off) incr is file level: after a
// change to one small table it stores about that table, restores to exactly
// its state, pg_verifybackup accepts the rebuilt directory and verify
// --full the backups. A file changed behind PostgreSQL's back with its
// modification time kept is never taken from the parent: the backup becomes
// a full one naming it.
func TestIncrementalFileLevel(t *testing.T) {
	for _, tc := range []struct {
		major int
		conf  map[string]string
	}{{15, nil}, {17, map[string]string{"summarize_wal": "off"}}} {
		t.Run(fmt.Sprintf("pg%d", tc.major), func(t *testing.T) {
			testenv.NeedPG(t, tc.major)
			fileLevel(t, tc.major, tc.conf)
		})
	}
}

func fileLevel(t *testing.T, major int, conf map[string]string) {
	s := setupIncremental(t, major, conf)
	c := s.c
	c.Pgbench(t, "-i", "-s", "10", "-q")
	c.Exec(t, "CREATE TABLE marks(id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
	c.Exec(t, "CREATE TABLE small AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")
	c.Exec(t, "CREATE TABLE frozen AS SELECT g AS id FROM generate_series(1, 50000) g")
	c.Exec(t, "VACUUM FREEZE")
	c.Exec(t, "CHECKPOINT")
	// Files written by that checkpoint must be older than the full
	// backup's start for the next backup to leave them out.
	settled := c.QueryRow(t, "SELECT clock_timestamp()::text")
	c.WaitFor(t, time.Minute, func() bool {
		return c.QueryRow(t, fmt.Sprintf("SELECT (clock_timestamp() > '%s'::timestamptz + interval '3 s')::text", settled)) == "true"
	})
	c.Exec(t, "INSERT INTO marks(id) VALUES (1)")
	full := s.backup(t, "full")
	c.Exec(t, "UPDATE small SET v = v || 'x'")
	c.Exec(t, "INSERT INTO marks(id) VALUES (2)")
	c.Exec(t, "CHECKPOINT")
	inc := s.backup(t, "incr")
	want := s.state(t)
	smallBytes, _ := strconv.ParseInt(c.QueryRow(t, "SELECT pg_total_relation_size('small')"), 10, 64)
	if inc.Type != "incr" || inc.Method != "file" || inc.Parent != full.ID {
		t.Fatalf("incr: %+v, want a file-level incremental backup on %s", inc, full.ID)
	}
	if inc.RawBytes*4 > full.RawBytes || inc.RawBytes < smallBytes {
		t.Fatalf("the file-level incr holds %d bytes, the full %d, the changed table %d", inc.RawBytes, full.RawBytes, smallBytes)
	}
	t.Logf("PostgreSQL %d: full %d bytes, file-level incr %d bytes (stored %d), the changed table %d bytes", major, full.RawBytes, inc.RawBytes, inc.StoredBytes, smallBytes)

	(&archiveSetup{c: c}).switchAndWait(t)
	got, rs := s.restoreAndCheck(t, major, "file-level", "--target-immediate", "--target-action", "promote", inc.ID)
	if got != want {
		t.Fatalf("restored %q, want %q", got, want)
	}
	if n := rs.QueryRow(t, "SELECT count(*)::text FROM small WHERE v LIKE '%x'"); n != "20000" {
		t.Fatalf("the changed table restored with %s changed rows", n)
	}
	rs.Stop(t)
	if r := pgark(t, s.readEnv, "verify", "--config", s.conf, "--full"); r.code != 0 {
		t.Fatalf("verify --full: %s", r)
	}

	// A file changed without a new modification time: the page of table
	// frozen gets other bytes on disk, its mtime put back. The next incr
	// must not take it from the parent.
	rel := c.QueryRow(t, "SELECT pg_relation_filepath('frozen')")
	p := filepath.Join(c.DataDir, rel)
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	tamper := func(b string) {
		t.Helper()
		if _, err := f.WriteAt([]byte(b), st.Size()-100); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, st.ModTime(), st.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
	defer f.Close()
	tamper("pgark")
	b := s.backup(t, "incr")
	if b.Type != "full" || !strings.Contains(b.Fallback, rel) {
		t.Fatalf("incr after a change behind the modification time: %+v, want a full backup naming %s", b, rel)
	}
	tamper("PGARK")
	wantCode(t, pgark(t, s.env, "backup", "--config", s.conf, "--dsn", c.DSN(), "--backup-type", "diff", "--require-parent"), 3, rel)
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
	d := timed(t, s.env, args...)
	kills := 0
	for i := range n {
		c.Pgbench(t, "-t", "50", "-c", "2", "-n")
		c.Exec(t, fmt.Sprintf("INSERT INTO marks(id) VALUES (%d)", i+1))
		if killAt(t, s.env, d, args...) {
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

// combineCheck restores the last backup of chain with pgark (not started)
// and compares it, file for file and byte for byte, with what
// pg_combinebackup of the same major builds from the same stored pieces:
// each backup's parts, decrypted and extracted as they are, with its
// backup_manifest.
func combineCheck(t *testing.T, s *incrSetup, major int, chain []string) {
	t.Helper()
	combine, ok := testenv.ClientTool(t, major, "pg_combinebackup")
	if !ok {
		t.Skipf("no PostgreSQL %d pg_combinebackup", major)
	}
	ctx := context.Background()
	st, err := local.New(s.repoDir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := crypto.LoadIdentities(strings.TrimPrefix(s.readEnv[0], "PGARK_AGE_IDENTITY_FILE="))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, id := range chain {
		m, err := catalog.ReadMeta(ctx, st, id)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(s.shared, "pieces-"+id)
		for _, a := range m.Archives {
			if a.Name != "base.tar" {
				t.Fatalf("backup %s has a tablespace; this check handles base.tar only", id)
			}
			for _, p := range a.Parts {
				rc, err := r.OpenVerified(ctx, p.Key, p.Bytes, p.SHA256, ids)
				if err != nil {
					t.Fatal(err)
				}
				untar(t, rc, dir)
				rc.Close()
			}
		}
		man, err := catalog.FetchManifest(ctx, r, m, ids)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "backup_manifest"), man, 0o600); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
	}
	combined := filepath.Join(s.shared, "combined")
	if out, err := exec.Command(combine, append([]string{"-o", combined, "--no-sync"}, dirs...)...).CombinedOutput(); err != nil {
		t.Fatalf("pg_combinebackup: %v\n%s", err, out)
	}
	restored := filepath.Join(s.shared, "restored-for-combine")
	mustOK(t, pgark(t, s.readEnv, "restore", "--config", s.conf, "--owner", "postgres", chain[len(chain)-1], restored))
	want, got := filesUnderDir(t, combined), filesUnderDir(t, restored)
	// pgark's own additions: the recovery settings, and the directories
	// PostgreSQL needs that the backup may lack.
	skip := map[string]bool{"backup_manifest": true, "postgresql.auto.conf": true, "recovery.signal": true}
	compared, dropped := 0, 0
	for p, w := range want {
		if skip[p] {
			continue
		}
		g, ok := got[p]
		switch {
		case !ok && strings.HasSuffix(p, "_vm"):
			// pgark drops the visibility maps of relations that changed
			// (PostgreSQL's WAL summaries miss their cleared bits).
			dropped++
		case !ok:
			t.Errorf("%s: in pg_combinebackup's output, not in pgark's restore", p)
		case !bytes.Equal(g, w):
			t.Errorf("%s: pgark's restore (%d bytes) differs from pg_combinebackup's (%d bytes)", p, len(g), len(w))
		default:
			compared++
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok && !skip[p] && !strings.HasSuffix(p, "/") {
			t.Errorf("%s: in pgark's restore, not in pg_combinebackup's output", p)
		}
	}
	if compared < 100 {
		t.Fatalf("only %d files compared", compared)
	}
	if dropped == 0 {
		t.Error("no visibility map dropped: the chain changed relations, their maps must go")
	}
	t.Logf("pgark's restore of %s equals pg_combinebackup of the stored pieces: %d files (%d visibility maps dropped)", chain[len(chain)-1], compared, dropped)
}

// untar extracts a tar stream of regular files and directories into dir.
func untar(t *testing.T, r io.Reader, dir string) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}
}

// filesUnderDir reads every regular file under dir (directories as "name/").
func filesUnderDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case rel == ".":
		case d.IsDir():
			m[rel+"/"] = nil
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m[rel] = b
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestIncrementalTablespacesSigned: a block-level chain with a tablespace
// (a table changed in it, a table created in it) restores with
// --tablespace-map to a new place, every backup of the chain signed and
// checked against trusted-signers; a parent signed by an untrusted key makes
// the restore of its child fail (exit 6) naming it.
func TestIncrementalTablespacesSigned(t *testing.T) {
	testenv.NeedPG(t, 17)
	s := setupIncremental(t, 17, map[string]string{"summarize_wal": "on"})
	c := s.c
	signing := filepath.Join(s.shared, "signing.key")
	r := asPostgres(t, nil, "key", "generate-signing", signing)
	if r.code != 0 {
		t.Fatalf("key generate-signing: %s", r)
	}
	pub := strings.TrimSpace(r.stdout)
	// WAL is signed too: with trusted-signers, recovery accepts nothing else.
	c.Exec(t, fmt.Sprintf("ALTER SYSTEM SET archive_command = '%s wal-push --config %s --signing-key-file %s %%p'", pgarkBin, s.conf, signing))
	c.Exec(t, "SELECT pg_reload_conf()")
	c.WaitFor(t, time.Minute, func() bool { return strings.Contains(c.QueryRow(t, "SHOW archive_command"), "signing-key-file") })
	rogue := filepath.Join(s.shared, "rogue.key")
	mustOK(t, pgark(t, nil, "key", "generate-signing", rogue))
	tsDir := filepath.Join(s.shared, "ts1")
	testenv.MkdirShared(t, tsDir)
	c.Exec(t, fmt.Sprintf("CREATE TABLESPACE ts1 LOCATION '%s'", tsDir))
	c.Exec(t, "CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100000) g")
	c.Exec(t, "CREATE TABLE gone AS SELECT g AS id FROM generate_series(1, 1000) g")
	c.Exec(t, "VACUUM FREEZE")
	oid := c.QueryRow(t, "SELECT oid::text FROM pg_tablespace WHERE spcname = 'ts1'")
	full := s.backup(t, "full", "--signing-key-file", signing)
	c.Exec(t, "UPDATE in_ts SET v = 'changed' WHERE id % 100 = 0")
	c.Exec(t, "CREATE TABLE new_ts TABLESPACE ts1 AS SELECT g AS id FROM generate_series(1, 5000) g")
	c.Exec(t, "DROP TABLE gone")
	inc := s.backup(t, "incr", "--signing-key-file", signing)
	if inc.Type != "incr" || inc.Parent != full.ID {
		t.Fatalf("incr: %+v", inc)
	}
	want := c.QueryRow(t, "SELECT (SELECT count(*) FROM in_ts WHERE v = 'changed')::text||' '||(SELECT count(*) FROM new_ts)::text||' '||(SELECT count(*) FROM pg_class WHERE relname = 'gone')::text")
	(&archiveSetup{c: c}).switchAndWait(t)

	dir := filepath.Join(s.shared, "restore-ts")
	newTS := filepath.Join(s.shared, "ts1-new")
	env := append([]string{"PGARK_TRUSTED_SIGNERS=" + pub}, s.readEnv...)
	mustOK(t, pgark(t, env, "restore", "--config", s.conf, "--owner", "postgres", "--jobs", "3",
		"--tablespace-map", oid+"="+newTS, "--target-immediate", "--target-action", "promote", inc.ID, dir))
	if v, ok := testenv.ClientTool(t, 17, "pg_verifybackup"); ok {
		if out, err := exec.Command(v, "-n", dir).CombinedOutput(); err != nil {
			t.Fatalf("pg_verifybackup -n: %v\n%s", err, out)
		}
	}
	rs := testenv.StartPG(t, testenv.PGOptions{Major: 17, DataDir: dir})
	rs.WaitFor(t, 3*time.Minute, func() bool { return rs.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true" })
	got := rs.QueryRow(t, "SELECT (SELECT count(*) FROM in_ts WHERE v = 'changed')::text||' '||(SELECT count(*) FROM new_ts)::text||' '||(SELECT count(*) FROM pg_class WHERE relname = 'gone')::text")
	if got != want || want != "1000 5000 0" {
		t.Fatalf("restored %q, source %q, want 1000 5000 0", got, want)
	}
	if loc := rs.QueryRow(t, "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"); loc != newTS {
		t.Fatalf("tablespace at %s, want %s", loc, newTS)
	}
	rs.Stop(t)

	// A chain whose full backup an untrusted key signed.
	c.Exec(t, "CHECKPOINT")
	bad := s.backup(t, "full", "--signing-key-file", rogue)
	c.Exec(t, "UPDATE in_ts SET v = 'again' WHERE id % 100 = 1")
	child := s.backup(t, "incr", "--signing-key-file", signing)
	if child.Parent != bad.ID {
		t.Fatalf("incr on %s, want on %s", child.Parent, bad.ID)
	}
	r = pgark(t, env, "restore", "--config", s.conf, "--owner", "postgres", "--tablespace-map", oid+"="+newTS+"-2", child.ID, filepath.Join(s.shared, "never"))
	if r.code != 6 || !strings.Contains(r.stderr, bad.ID) {
		t.Fatalf("restore of a chain with an untrusted parent: %s", r)
	}
}
