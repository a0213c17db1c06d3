package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
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

// readyCount is the number of segments waiting for archive_command.
func readyCount(t *testing.T, c *testenv.Cluster) int {
	n, err := strconv.Atoi(c.QueryRow(t, "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// makeSegments writes n segments' worth of WAL (a row and a switch each).
func makeSegments(t *testing.T, c *testenv.Cluster, n int) {
	c.Exec(t, "CREATE TABLE IF NOT EXISTS seg_rows(i int, at timestamptz DEFAULT now())")
	c.Exec(t, fmt.Sprintf("DO $$ BEGIN FOR i IN 1..%d LOOP INSERT INTO seg_rows(i) VALUES (i); PERFORM pg_switch_wal(); END LOOP; END $$", n))
}

// snapshotReady copies every segment that waits to be archived, and returns
// the copies' directory and names.
func snapshotReady(t *testing.T, c *testenv.Cluster) (string, []string) {
	dir := t.TempDir()
	var names []string
	for _, row := range c.Query(t, "SELECT name FROM pg_ls_archive_statusdir() WHERE name ~ '^[0-9A-F]{24}\\.ready$' ORDER BY name") {
		name := strings.TrimSuffix(row[0], ".ready")
		cp(t, filepath.Join(c.DataDir, "pg_wal", name), filepath.Join(dir, name))
		names = append(names, name)
	}
	return dir, names
}

// TestPushAheadBacklog: with archiving paused, a backlog of 200 segments
// builds up; once archive_command is set, it drains completely through
// push-ahead (most calls answered from the spool), and every segment comes
// back byte-identical from both repositories.
func TestPushAheadBacklog(t *testing.T) {
	a := setupArchiving(t, 15, 1)
	c := a.c
	off := len(c.Log())
	c.Exec(t, "ALTER SYSTEM SET archive_command = ''")
	c.Exec(t, "SELECT pg_reload_conf()")
	// The archiver may still archive a few segments before it reads the
	// reload: wait until it says it has nothing to archive with, then build
	// the backlog.
	c.WaitFor(t, time.Minute, func() bool {
		c.Exec(t, "CREATE TABLE IF NOT EXISTS pgark_tick(t timestamptz); INSERT INTO pgark_tick VALUES (now())")
		c.QueryRow(t, "SELECT pg_walfile_name(pg_switch_wal())")
		return strings.Contains(c.Log()[off:], "archive_mode enabled, yet archiv")
	})
	before := a.stats(t).archived
	makeSegments(t, c, 200)
	snap, names := snapshotReady(t, c)
	if len(names) < 200 {
		t.Fatalf("backlog of %d segments, want 200", len(names))
	}
	logOff := len(c.Log())
	start := time.Now()
	c.Exec(t, "ALTER SYSTEM RESET archive_command")
	c.Exec(t, "SELECT pg_reload_conf()")
	// pg_stat_archiver counts a segment just after its .ready file goes.
	c.WaitFor(t, 5*time.Minute, func() bool { return readyCount(t, c) == 0 && a.stats(t).archived-before >= len(names) })
	drained := time.Since(start)
	s := a.stats(t)
	if s.failed != 0 || s.archived-before < len(names) {
		t.Fatalf("archiver after the drain: %+v (archived %d before)", s, before)
	}
	log := c.Log()[logOff:]
	fromSpool := strings.Count(log, "pushed_ahead=true")
	batches := strings.Count(log, `msg="pushed ahead"`)
	t.Logf("drained %d segments in %s: %d calls answered from the spool, %d batches pushed ahead", len(names), drained.Round(time.Millisecond), fromSpool, batches)
	// Two repositories, one call each per segment: most answers come from
	// the spool (about 8 of every 9 with push-ahead 8).
	if fromSpool < len(names) {
		t.Fatalf("only %d of %d calls were answered from the push-ahead spool", fromSpool, 2*len(names))
	}
	for _, conf := range []string{a.localConf, a.s3Conf} {
		for _, name := range names {
			d := filepath.Join(t.TempDir(), name)
			mustOK(t, pgark(t, a.s3Env, "wal-fetch", "--config", conf, name, d))
			if !bytes.Equal(readFile(t, d), readFile(t, filepath.Join(snap, name))) {
				t.Fatalf("%s from %s differs from the original", name, conf)
			}
			os.Remove(d)
		}
	}
}

// TestPushAheadUnderLoad: pgbench at full speed with 16 MB segments, archived
// into a local and an encrypted S3 repository by one archive_command, until
// the load has written loadSegments segments (however long that takes on this
// machine): pg_stat_archiver shows no failure, the archiver works during the
// load rather than after it (the .ready backlog stays below half of what was
// written), and the backlog is gone once the load stops. How fast it keeps up
// is measured by bench/wal.sh, not asserted here.
func TestPushAheadUnderLoad(t *testing.T) {
	const loadSegments = 40
	a := setupArchiving(t, 15, 16)
	c := a.c
	c.Exec(t, "ALTER SYSTEM SET synchronous_commit = off") // more WAL per second
	c.Exec(t, "SELECT pg_reload_conf()")
	c.Pgbench(t, "-i", "-s", "5", "-q")
	c.WaitFor(t, 5*time.Minute, func() bool { return readyCount(t, c) == 0 }) // pgbench -i's WAL
	before := a.stats(t)
	// Segment numbers by LSN arithmetic: pg_walfile_name() names the
	// previous segment for an LSN on a segment boundary.
	segNo := func() int {
		n, err := strconv.Atoi(c.QueryRow(t, "SELECT floor((pg_current_wal_lsn() - '0/0'::pg_lsn) / 16777216)::text"))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	start := segNo()
	written := func() int { return segNo() - start } // segments completed since the start
	stopSampling := sampleMax(200*time.Millisecond, func() (int64, bool) {
		rows, err := c.QueryErr("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")
		if err != nil {
			return 0, false
		}
		n, err := strconv.Atoi(rows[0][0])
		return int64(n), err == nil
	})
	// TPC-B-like transactions at full speed, and beside them a bulk load of
	// 2 MB inserts, in rounds of a few seconds until the volume is reached.
	c.Exec(t, "CREATE TABLE bulk(i int, pad text)")
	stopBulk := make(chan struct{})
	bulkErr := make(chan error, 1)
	go func() {
		var err error
		for err == nil {
			select {
			case <-stopBulk:
				bulkErr <- nil
				return
			case <-time.After(50 * time.Millisecond):
			}
			err = c.ExecErr("INSERT INTO bulk SELECT g, repeat('x', 400) FROM generate_series(1, 5000) g")
		}
		bulkErr <- err
	}()
	loadStart := time.Now()
	deadline := loadStart.Add(10 * time.Minute)
	for written() < loadSegments {
		if time.Now().After(deadline) {
			close(stopBulk)
			t.Fatalf("the load wrote only %d of %d segments in %s", written(), loadSegments, time.Since(loadStart).Round(time.Second))
		}
		c.Pgbench(t, "-c", "4", "-j", "2", "-T", "3")
	}
	close(stopBulk)
	if err := <-bulkErr; err != nil {
		t.Fatalf("bulk load: %v", err)
	}
	load := time.Since(loadStart)
	segs := written()
	// The last segment the load completed: the one before the current one.
	lastDone := c.QueryRow(t, "SELECT pg_walfile_name('0/0'::pg_lsn + floor((pg_current_wal_lsn() - '0/0'::pg_lsn) / 16777216) * 16777216)")
	waitStart := time.Now()
	var seen string // what the wait saw last, for its failure message
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("waiting for %d segments up to %s: last seen %s", segs, lastDone, seen)
		}
	})
	c.WaitFor(t, 5*time.Minute, func() bool {
		s, ready := a.stats(t), readyCount(t, c)
		seen = fmt.Sprintf("%d .ready, %+v, %d archived since the start", ready, s, s.archived-before.archived)
		return ready == 0 && s.lastArchived >= lastDone && s.archived-before.archived >= segs
	})
	catchUp := time.Since(waitStart)
	peak := stopSampling()
	s := a.stats(t)
	t.Logf("load: %d segments of 16 MB in %s (%.1f/s), archived %d, failed %d, peak .ready backlog %d, caught up %s after the load",
		segs, load.Round(time.Millisecond), float64(segs)/load.Seconds(), s.archived-before.archived, s.failed, peak, catchUp.Round(time.Millisecond))
	if s.failed != before.failed {
		t.Fatalf("archive failures under load: %+v\n%s", s, c.Log())
	}
	if peak*2 > int64(segs) {
		t.Fatalf("the archiver fell behind: peak backlog %d of %d segments written", peak, segs)
	}
}

// TestPushAheadKill9: pgark is killed (SIGKILL) at random moments in the
// middle of parallel pushes of a backlog, in the foreground calls and in the
// background batches (wal-push-ahead) that they start. Whatever the moment, every record
// in the spool names an object that is stored with the recorded content, and
// once PostgreSQL archives again, every segment is in the repository,
// byte-identical.
func TestPushAheadKill9(t *testing.T) {
	a := setupArchiving(t, 15, 1)
	c := a.c
	spool := filepath.Join(a.shared, "spool")
	testenv.MkdirShared(t, spool)
	testenv.ChownToPostgres(t, spool)
	conf := writeConfig(t, a.shared, map[string]string{
		"repo": a.localRepo, "spool-dir": spool, "push-ahead": "16", "push-jobs": "3",
	})
	c.Exec(t, "ALTER SYSTEM SET archive_command = ''")
	c.Exec(t, "SELECT pg_reload_conf()")
	time.Sleep(300 * time.Millisecond)
	n := killLoops() // 10 in CI, 50 in make soak
	makeSegments(t, c, 5*n+10)
	snap, names := snapshotReady(t, c)

	// The probe: how long one call pushing a batch takes, to aim the kills.
	push := func(name string) *exec.Cmd {
		cmd := exec.Command(pgarkBin, "wal-push", "--config", conf, "pg_wal/"+name)
		cmd.Dir = c.DataDir
		cmd.Env = []string{"PATH=/usr/bin:/bin"}
		testenv.RunAsPostgres(cmd)
		return cmd
	}
	t0 := time.Now()
	if out, err := push(names[0]).CombinedOutput(); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	batch := time.Since(t0)
	kills, helperKills := 0, 0
	for i := 1; i < len(names) && kills < n; i += 5 {
		cmd := push(names[i])
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(batch) + 1)))
		cmd.Process.Signal(syscall.SIGKILL)
		// And the background batches that earlier calls started.
		if exec.Command("pkill", "-KILL", "-f", "wal-push-ahead --pgdata="+c.DataDir).Run() == nil {
			helperKills++
		}
		cmd.Wait()
		kills++
		checkRecords(t, spool, a.localRepo)
	}
	// PostgreSQL archives again, with the spool the kills left behind.
	c.Exec(t, fmt.Sprintf("ALTER SYSTEM SET archive_command = '%s wal-push --config %s %%p'", pgarkBin, conf))
	c.Exec(t, "SELECT pg_reload_conf()")
	c.WaitFor(t, 3*time.Minute, func() bool { return readyCount(t, c) == 0 })
	if s := a.stats(t); s.failed != 0 {
		t.Fatalf("archiving failed after the kills: %+v", s)
	}
	for _, name := range names {
		d := filepath.Join(t.TempDir(), name)
		mustOK(t, pgark(t, nil, "wal-fetch", "--config", a.localConf, name, d))
		if !bytes.Equal(readFile(t, d), readFile(t, filepath.Join(snap, name))) {
			t.Fatalf("%s differs from the original after the kills", name)
		}
	}
	t.Logf("%d kills within %s batches, and %d of background batches; all %d segments archived intact", kills, batch.Round(time.Millisecond), helperKills, len(names))
}

// checkRecords fails when a push-ahead record in the spool names a segment
// that the local repository does not hold with the recorded hash.
func checkRecords(t *testing.T, spool, repoDir string) {
	t.Helper()
	recs, _ := filepath.Glob(filepath.Join(spool, "push-*", "*.pushed"))
	for _, p := range recs {
		var rec struct {
			Name   string `json:"name"`
			SHA256 string `json:"sha256"`
		}
		if err := json.Unmarshal(readFile(t, p), &rec); err != nil {
			t.Fatalf("record %s: %v", p, err)
		}
		obj := objectPath(repoDir, rec.Name)
		b, err := os.ReadFile(obj)
		if err != nil {
			t.Fatalf("record %s for a segment that is not in the repository: %v", p, err)
		}
		if !bytes.Contains(b, []byte(rec.SHA256)) {
			t.Fatalf("record %s: the stored object does not carry SHA-256 %s", p, rec.SHA256)
		}
	}
}

// TestRecoveryPrefetchS3: 200 segments of 1 MB are recovered from an
// encrypted S3 repository through restore_command with prefetch; the data
// is all there, most segments come from the spool, the spool never holds
// more than spool-max-size, and it is gone once recovery ends.
func TestRecoveryPrefetchS3(t *testing.T) {
	a := setupArchiving(t, 15, 1)
	c := a.c
	c.Exec(t, "CREATE TABLE seg_rows(i int, at timestamptz DEFAULT now())")
	mustOK(t, pgark(t, a.s3Env, "backup", "--config", a.s3Conf, "--dsn", c.DSN()))
	makeSegments(t, c, 200)
	want := c.QueryRow(t, "SELECT count(*)::text||' '||sum(i)::text FROM seg_rows")
	a.switchAndWait(t)

	spool := filepath.Join(a.shared, "fetch-spool")
	testenv.MkdirShared(t, spool)
	testenv.ChownToPostgres(t, spool)
	const limit = 6 << 20
	conf := writeConfig(t, a.shared, map[string]string{
		"repo": "s3://pg15/cluster", "age-identity-file": a.keyFile, "s3-force-path-style": "true",
		"spool-dir": spool, "fetch-ahead": "16", "fetch-jobs": "2", "spool-max-size": "6MiB",
	})
	dir := filepath.Join(a.shared, "restore")
	mustOK(t, pgark(t, a.s3Env, "restore", "--config", conf, "--owner", "postgres", "latest", dir))

	stopSampling := sampleMax(10*time.Millisecond, func() (int64, bool) {
		var sum int64
		filepath.Walk(spool, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && strings.HasPrefix(strings.TrimPrefix(fi.Name(), "."), "0") && !strings.Contains(p, "/history/") {
				sum += fi.Size()
			}
			return nil
		})
		return sum, true
	})
	start := time.Now()
	rs := testenv.StartPG(t, testenv.PGOptions{Major: 15, DataDir: dir, Env: a.s3Env})
	rs.WaitFor(t, 5*time.Minute, func() bool {
		return rs.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true"
	})
	took := time.Since(start)
	if got := rs.QueryRow(t, "SELECT count(*)::text||' '||sum(i)::text FROM seg_rows"); got != want {
		t.Fatalf("after recovery: %s, want %s", got, want)
	}
	log := rs.Log()
	prefetched := strings.Count(log, "prefetched=true")
	restored := strings.Count(log, `msg=restored`)
	if strings.Contains(log, "exit code 200") {
		t.Fatalf("restore_command failed:\n%s", log)
	}
	// The spool empties itself once recovery has ended.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		left, _ := filepath.Glob(filepath.Join(spool, "fetch-*"))
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("prefetch spool left after recovery: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	peak := stopSampling()
	t.Logf("recovered %d segments in %s: %d served from the prefetch spool; spool peak %d KiB (limit %d KiB)",
		restored, took.Round(time.Millisecond), prefetched, peak>>10, limit>>10)
	if restored < 200 {
		t.Fatalf("only %d segments restored", restored)
	}
	if prefetched < restored/2 {
		t.Fatalf("only %d of %d segments came from the prefetch spool", prefetched, restored)
	}
	if peak > limit || peak == 0 {
		t.Fatalf("spool peak %d bytes, limit %d", peak, limit)
	}
	rs.Stop(t)
}

// TestPrefetchFollowsTimeline: a point-in-time restore starts timeline 2,
// which archives into the same repository; a second restore from the same
// backup to the latest state crosses from timeline 1 to 2, and prefetch
// follows the switch (segments of timeline 2 come from the spool).
func TestPrefetchFollowsTimeline(t *testing.T) {
	a := setupArchiving(t, 15, 1)
	c := a.c
	c.Exec(t, "CREATE TABLE seg_rows(i int, at timestamptz DEFAULT now())")
	mustOK(t, pgark(t, nil, "backup", "--config", a.localConf, "--dsn", c.DSN()))
	makeSegments(t, c, 20)
	c.Exec(t, "SELECT pg_create_restore_point('fork')")
	makeSegments(t, c, 20) // abandoned by the fork
	a.switchAndWait(t)
	c.Stop(t)

	// The fork: timeline 2, archiving into the same repositories.
	fork := filepath.Join(a.shared, "fork")
	mustOK(t, pgark(t, nil, "restore", "--config", a.localConf, "--owner", "postgres", "--target-name", "fork",
		"--target-action", "promote", "--keep-archiving", "latest", fork))
	f := testenv.StartPG(t, testenv.PGOptions{Major: 15, DataDir: fork, Env: a.s3Env, Conf: map[string]string{
		"archive_mode": "on", "archive_command": a.archiveCmd(a.localConf),
	}})
	f.WaitFor(t, 3*time.Minute, func() bool { return f.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true" })
	if tli := f.QueryRow(t, "SELECT timeline_id::text FROM pg_control_checkpoint()"); tli != "2" {
		t.Fatalf("fork on timeline %s, want 2", tli)
	}
	makeSegments(t, f, 30)
	want := f.QueryRow(t, "SELECT count(*)::text||' '||sum(i)::text FROM seg_rows")
	f.Exec(t, "SELECT pg_switch_wal()")
	f.WaitFor(t, 2*time.Minute, func() bool { return readyCount(t, f) == 0 })
	f.Stop(t)

	// verify walks timeline 1 up to the switch and timeline 2 after it: no
	// false gap at the switch point, and the abandoned segments of
	// timeline 1 are not needed.
	if r := pgark(t, nil, "verify", "--config", a.localConf); r.code != 0 || !strings.Contains(r.stdout, "continuity: OK") {
		t.Fatalf("verify across a timeline switch: %s", r)
	}

	// Recovery from the first backup to the latest timeline.
	dir := filepath.Join(a.shared, "latest")
	mustOK(t, pgark(t, nil, "restore", "--config", a.localConf, "--owner", "postgres", "latest", dir))
	rs := testenv.StartPG(t, testenv.PGOptions{Major: 15, DataDir: dir, Env: a.s3Env})
	rs.WaitFor(t, 3*time.Minute, func() bool { return rs.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true" })
	if got := rs.QueryRow(t, "SELECT count(*)::text||' '||sum(i)::text FROM seg_rows"); got != want {
		t.Fatalf("after recovery across the fork: %s, want %s", got, want)
	}
	tl2 := 0
	for _, l := range strings.Split(rs.Log(), "\n") {
		if strings.Contains(l, "prefetched=true") && strings.Contains(l, "wal=00000002") {
			tl2++
		}
	}
	t.Logf("%d segments of timeline 2 came from the prefetch spool", tl2)
	if tl2 < 10 {
		t.Fatalf("prefetch did not follow the switch to timeline 2 (%d segments of it from the spool)\n%s", tl2, rs.Log())
	}
	rs.Stop(t)
}

// sampleMax calls f every interval until the returned stop is called; stop
// returns the largest value f reported.
func sampleMax(interval time.Duration, f func() (int64, bool)) (stop func() int64) {
	done := make(chan struct{})
	result := make(chan int64)
	go func() {
		var peak int64
		for {
			select {
			case <-done:
				result <- peak
				return
			case <-time.After(interval):
			}
			if v, ok := f(); ok {
				peak = max(peak, v)
			}
		}
	}()
	return func() int64 {
		close(done)
		return <-result
	}
}
