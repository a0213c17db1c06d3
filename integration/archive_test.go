package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/wal"
)

// archiveSetup is one cluster archiving into a local repository and an
// encrypted S3 repository at once.
type archiveSetup struct {
	c          *testenv.Cluster
	shared     string
	localConf  string
	s3Conf     string
	s3Env      []string
	localRepo  string
	keyFile    string
	archiveCmd func(conf string) string
}

func setupArchiving(t *testing.T, major, segMB int) *archiveSetup {
	t.Helper()
	return setupArchivingOpts(t, major, segMB, nil)
}

func setupArchivingOpts(t *testing.T, major, segMB int, initdbArgs []string) *archiveSetup {
	t.Helper()
	a := &archiveSetup{shared: testenv.SharedDir(t)}
	s3 := testenv.S3Start(t)
	bucket := fmt.Sprintf("pg%d", major)
	s3.CreateBucket(t, bucket)
	a.s3Env = s3.Env()

	// Keys and repositories are made as the postgres user, as a DBA would.
	a.keyFile = filepath.Join(a.shared, "age-identity.txt")
	r := asPostgres(t, nil, "key", "generate", a.keyFile)
	if r.code != 0 {
		t.Fatalf("key generate: %s", r)
	}
	recip := strings.TrimSpace(r.stdout)
	a.localRepo = filepath.Join(a.shared, "repo")
	a.localConf = writeConfig(t, a.shared, map[string]string{"repo": a.localRepo})
	a.s3Conf = writeConfig(t, a.shared, map[string]string{
		"repo":                "s3://" + bucket + "/cluster",
		"age-recipients":      recip,
		"age-identity-file":   a.keyFile,
		"s3-force-path-style": "true",
	})
	if r := asPostgres(t, nil, "init", "--config", a.localConf); r.code != 0 {
		t.Fatalf("init local: %s", r)
	}
	if r := asPostgres(t, a.s3Env, "init", "--config", a.s3Conf); r.code != 0 {
		t.Fatalf("init s3: %s", r)
	}
	a.archiveCmd = func(conf string) string {
		return fmt.Sprintf("%s wal-push --config %s %%p", pgarkBin, conf)
	}
	both := a.archiveCmd(a.localConf) + " && " + a.archiveCmd(a.s3Conf)
	a.c = testenv.StartPG(t, testenv.PGOptions{
		Major:        major,
		WalSegSizeMB: segMB,
		InitdbArgs:   initdbArgs,
		Env:          a.s3Env,
		Conf: map[string]string{
			"archive_mode":       "on",
			"archive_command":    both,
			"wal_keep_size":      "4GB",
			"max_wal_size":       "4GB",
			"checkpoint_timeout": "1h",
			"archive_timeout":    "0",
		},
	})
	return a
}

type archiverStats struct {
	archived, failed int
	lastArchived     string
	lastFailed       string
}

func (a *archiveSetup) stats(t *testing.T) archiverStats {
	row := a.c.QueryRow(t, "SELECT archived_count||','||failed_count||','||coalesce(last_archived_wal,'')||','||coalesce(last_failed_wal,'') FROM pg_stat_archiver")
	p := strings.Split(row, ",")
	s := archiverStats{lastArchived: p[2], lastFailed: p[3]}
	s.archived, _ = strconv.Atoi(p[0])
	s.failed, _ = strconv.Atoi(p[1])
	return s
}

// switchAndWait ends the current segment and waits until it is archived.
func (a *archiveSetup) switchAndWait(t *testing.T) string {
	t.Helper()
	// Write something first: on an empty segment pg_switch_wal() is a no-op
	// (PostgreSQL 17 and later log no background WAL on an idle server).
	a.c.Exec(t, "CREATE TABLE IF NOT EXISTS pgark_tick(t timestamptz); INSERT INTO pgark_tick VALUES (now())")
	seg := a.c.QueryRow(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
	a.c.Exec(t, "SELECT pg_switch_wal()")
	a.c.WaitFor(t, 3*time.Minute, func() bool {
		s := a.stats(t)
		if s.failed > 0 {
			t.Fatalf("archiving failed: %+v\n%s", s, a.c.Log())
		}
		return s.lastArchived >= seg
	})
	return seg
}

func TestArchiveAndRecover(t *testing.T) {
	for _, major := range testenv.Majors() {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			archiveAndRecover(t, major)
		})
	}
}

func archiveAndRecover(t *testing.T, major int) {
	a := setupArchiving(t, major, 0)
	c := a.c
	c.Exec(t, "CREATE TABLE marks(id int PRIMARY KEY, note text)")
	c.Pgbench(t, "-i", "-s", "3", "-q")
	c.Exec(t, "INSERT INTO marks SELECT g, 'before backup' FROM generate_series(1,1000) g")

	// A base copy taken with the low-level backup API around a file copy.
	backupDir := baseCopy(t, c, a.shared)

	// Committed rows after the backup, spread over many segments.
	c.Pgbench(t, "-t", "200", "-c", "2")
	next := 1001
	for i := 0; i < 30; i++ {
		c.Exec(t, fmt.Sprintf("INSERT INTO marks SELECT g, 'after backup' FROM generate_series(%d,%d) g", next, next+99))
		next += 100
		c.Exec(t, "SELECT pg_switch_wal()")
	}
	a.switchAndWait(t)
	want := c.QueryRow(t, "SELECT count(*)::text||'/'||sum(id)::text FROM marks")
	st := a.stats(t)
	if st.failed != 0 || st.archived < 30 {
		t.Fatalf("pg_stat_archiver: %+v", st)
	}
	t.Logf("PostgreSQL %d archived %d files, last %s, no failures", major, st.archived, st.lastArchived)

	// Every archived file fetches back byte-identical from both repositories.
	done, _ := filepath.Glob(filepath.Join(c.DataDir, "pg_wal", "archive_status", "*.done"))
	segs, other := 0, 0
	for _, d := range done {
		name := strings.TrimSuffix(filepath.Base(d), ".done")
		orig := filepath.Join(c.DataDir, "pg_wal", name)
		if !exists(orig) {
			continue
		}
		for _, conf := range []string{a.localConf, a.s3Conf} {
			dest := filepath.Join(t.TempDir(), "f")
			mustOK(t, pgark(t, a.s3Env, "wal-fetch", "--config", conf, name, dest))
			if !bytes.Equal(readFile(t, dest), readFile(t, orig)) {
				t.Fatalf("%s from %s differs from pg_wal's", name, conf)
			}
		}
		if n, _ := wal.ParseName(name); n.Kind == wal.KindSegment {
			segs++
		} else {
			other++
		}
	}
	if segs < 30 || other < 1 {
		t.Fatalf("compared %d segments and %d other files; want 30+ and the .backup file", segs, other)
	}

	// Recover copies of the backup from each repository, with pgark as the
	// only restore_command, and check every committed row is there.
	for _, conf := range []string{a.s3Conf, a.localConf} {
		dir := filepath.Join(a.shared, fmt.Sprintf("recover-%d", time.Now().UnixNano()))
		cp(t, backupDir, dir)
		r := testenv.StartPG(t, testenv.PGOptions{
			Major:   major,
			DataDir: dir,
			Env:     a.s3Env,
			Conf: map[string]string{
				"restore_command": fmt.Sprintf("%s wal-fetch --config %s %%f %%p", pgarkBin, conf),
				"archive_mode":    "on",
				"archive_command": a.archiveCmd(conf),
			},
		})
		r.WaitFor(t, 5*time.Minute, func() bool {
			return r.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true"
		})
		if got := r.QueryRow(t, "SELECT count(*)::text||'/'||sum(id)::text FROM marks"); got != want {
			t.Fatalf("recovered from %s: marks %s, want %s", conf, got, want)
		}
		if got := r.QueryRow(t, "SELECT timeline_id::text FROM pg_control_checkpoint()"); got == "1" {
			t.Fatalf("no new timeline after recovery")
		}
		// The new timeline's history file is archived by the recovered server.
		r.WaitFor(t, time.Minute, func() bool {
			res := pgark(t, a.s3Env, "wal-fetch", "--config", conf, "00000002.history", filepath.Join(t.TempDir(), "h"))
			return res.code == 0
		})
		if strings.Contains(r.Log(), "child process exited with exit code 200") {
			t.Fatalf("restore_command failed during recovery:\n%s", r.Log())
		}
		r.Stop(t)
	}
}

// baseCopy takes a base backup with pg_backup_start/stop (pg_start_backup on
// 13 and 14) around a plain file copy, which works on every major.
func baseCopy(t *testing.T, c *testenv.Cluster, shared string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	start, stop := "SELECT pg_backup_start('pgark-test', true)", "SELECT labelfile, spcmapfile FROM pg_backup_stop(true)"
	if c.Major < 15 {
		start, stop = "SELECT pg_start_backup('pgark-test', true, false)", "SELECT labelfile, spcmapfile FROM pg_stop_backup(false, true)"
	}
	if _, err := conn.Exec(ctx, start); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(shared, "base")
	cp(t, c.DataDir, dir)
	var label, spcmap string
	if err := conn.QueryRow(ctx, stop).Scan(&label, &spcmap); err != nil {
		t.Fatal(err)
	}
	// What a backup must not carry: the running server's pid file and WAL.
	os.Remove(filepath.Join(dir, "postmaster.pid"))
	os.Remove(filepath.Join(dir, "postmaster.opts"))
	walDir := filepath.Join(dir, "pg_wal")
	ents, _ := os.ReadDir(walDir)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(walDir, e.Name()))
	}
	os.Mkdir(filepath.Join(walDir, "archive_status"), 0o700)
	os.WriteFile(filepath.Join(dir, "backup_label"), []byte(label), 0o600)
	os.WriteFile(filepath.Join(dir, "recovery.signal"), nil, 0o600)
	testenv.ChownToPostgres(t, dir)
	return dir
}

func cp(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		// A file vanishing under a running server is expected during a copy.
		if !strings.Contains(string(out), "No such file") {
			t.Fatalf("cp: %v\n%s", err, out)
		}
	}
}

// TestSegmentSizes archives and fetches back 1 MB and 64 MB segments.
func TestSegmentSizes(t *testing.T) {
	for _, mb := range []int{1, 64} {
		t.Run(fmt.Sprintf("%dMB", mb), func(t *testing.T) {
			a := setupArchiving(t, 15, mb)
			a.c.Exec(t, "CREATE TABLE t(i int)")
			var names []string
			for i := 0; i < 4; i++ {
				a.c.Exec(t, "INSERT INTO t SELECT generate_series(1,10000)")
				names = append(names, a.switchAndWait(t))
			}
			for _, name := range names {
				orig := filepath.Join(a.c.DataDir, "pg_wal", name)
				if st, err := os.Stat(orig); err != nil || st.Size() != int64(mb)<<20 {
					t.Fatalf("segment %s: %v", name, err)
				}
				for _, conf := range []string{a.localConf, a.s3Conf} {
					dest := filepath.Join(t.TempDir(), "f")
					mustOK(t, pgark(t, a.s3Env, "wal-fetch", "--config", conf, name, dest))
					if !bytes.Equal(readFile(t, dest), readFile(t, orig)) {
						t.Fatalf("%s differs after the round trip", name)
					}
				}
			}
			if s := a.stats(t); s.failed != 0 {
				t.Fatalf("archive failures: %+v", s)
			}
		})
	}
}
