package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
)

// rusageRun is one line of PGARK_RUSAGE_LOG.
type rusageRun struct {
	at        time.Time
	cmd       string
	wall, cpu float64
	rssKB     int64
	ok        bool
}

func readRusage(t *testing.T, file string) []rusageRun {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []rusageRun
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Fields(sc.Text())
		if len(p) != 7 {
			continue
		}
		var r rusageRun
		r.at, _ = time.Parse(time.RFC3339Nano, p[0])
		r.cmd = p[1]
		r.wall, _ = strconv.ParseFloat(p[2], 64)
		u, _ := strconv.ParseFloat(p[3], 64)
		s, _ := strconv.ParseFloat(p[4], 64)
		r.cpu = u + s
		r.rssKB, _ = strconv.ParseInt(p[5], 10, 64)
		r.ok = p[6] == "true"
		out = append(out, r)
	}
	return out
}

// TestSoak: pgbench at full speed archiving into an encrypted S3
// repository for SOAK_SECONDS (45 s in CI, 600 with `make soak`), two base
// backups taken during the load, retain and verify running meanwhile (with
// --lock-wait, since backup and retain never overlap), a mark committed
// every 200 ms; then a point-in-time restore to a random mark of the soak,
// checked against the marks. Every pgark process records its peak RSS and
// CPU (PGARK_RUSAGE_LOG): the peaks must not grow from the first half of
// the soak to the second.
func TestSoak(t *testing.T) {
	seconds := 45
	if v, err := strconv.Atoi(os.Getenv("SOAK_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	soak := time.Duration(seconds) * time.Second
	shared := testenv.SharedDir(t)
	srv := testenv.S3Start(t)
	srv.CreateBucket(t, "soak")
	env := srv.Env()
	plainEnv := srv.Env()
	keyFile := filepath.Join(shared, "age-identity.txt")
	r := asPostgres(t, nil, "key", "generate", keyFile)
	if r.code != 0 {
		t.Fatal(r)
	}
	conf := writeConfig(t, shared, map[string]string{
		"repo": "s3://soak/db", "age-recipients": strings.TrimSpace(r.stdout), "age-identity-file": keyFile,
		"s3-force-path-style": "true", "lock-wait": "10m",
	})
	if r := asPostgres(t, env, "init", "--config", conf); r.code != 0 {
		t.Fatal(r)
	}
	ruLog := filepath.Join(shared, "rusage.log")
	if err := os.WriteFile(ruLog, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(ruLog, 0o666)
	env = append(env, "PGARK_RUSAGE_LOG="+ruLog)
	c := testenv.StartPG(t, testenv.PGOptions{
		Major: 17, Env: env,
		Conf: map[string]string{
			"archive_mode": "on", "archive_command": fmt.Sprintf("%s wal-push --config %s %%p", pgarkBin, conf),
			"track_commit_timestamp": "on", "max_wal_size": "4GB", "checkpoint_timeout": "1h",
		},
	})
	c.Pgbench(t, "-i", "-s", "10", "-q")
	c.Exec(t, "CREATE TABLE marks(id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
	mustOK(t, pgark(t, env, "backup", "--config", conf, "--dsn", c.DSN()))

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	// The load.
	wg.Add(1)
	go func() {
		defer wg.Done()
		p, _ := testenv.PgbenchPath()
		cmd := exec.Command(p, "-c", "2", "-j", "2", "-T", strconv.Itoa(seconds), "-n")
		cmd.Env = append(os.Environ(), c.PGEnv()...)
		if out, err := cmd.CombinedOutput(); err != nil {
			errs <- fmt.Errorf("pgbench: %v\n%s", err, out)
		}
	}()
	// A mark every 200 ms.
	marksDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-marksDone:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if err := c.ExecErr(fmt.Sprintf("INSERT INTO marks(id) VALUES (%d)", i)); err != nil {
				errs <- err
				return
			}
		}
	}()
	// Two backups at a third and two thirds; retain and verify meanwhile.
	var backupsTaken []time.Time
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, at := range []time.Duration{soak / 3, 2 * soak / 3} {
			time.Sleep(time.Until(start.Add(at)))
			if r := pgark(t, env, "backup", "--config", conf, "--dsn", c.DSN()); r.code != 0 {
				errs <- fmt.Errorf("backup during the soak: %s", r)
				return
			}
			backupsTaken = append(backupsTaken, time.Now())
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Since(start) < soak {
			time.Sleep(soak / 5)
			if r := pgark(t, env, "retain", "--config", conf, "--keep-last", "2"); r.code != 0 {
				errs <- fmt.Errorf("retain during the soak: %s", r)
				return
			}
			// The archive may trail the load by a segment or two: only a
			// failure to run counts here; the final verify must pass.
			if r := pgark(t, env, "verify", "--config", conf); r.code != 0 && r.code != 1 {
				errs <- fmt.Errorf("verify during the soak: %s", r)
				return
			}
		}
	}()
	time.Sleep(soak)
	close(marksDone)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitArchivedAll(t, c, 5*time.Minute)
	if s := c.QueryRow(t, "SELECT failed_count::text FROM pg_stat_archiver"); s != "0" {
		t.Fatalf("archiving failed %s times during the soak", s)
	}
	out := runVerifyEnv(t, env, conf)
	if len(out.Backups) != 2 {
		t.Fatalf("after retain --keep-last 2: %d backups", len(out.Backups))
	}

	// A point-in-time restore to a random mark after the oldest kept backup.
	oldest := listBackupsEnv(t, env, conf)[0]
	first := c.QueryRow(t, fmt.Sprintf("SELECT coalesce(min(id), 0)::text FROM marks WHERE at > '%s'", oldest.StopTime.UTC().Format(time.RFC3339Nano)))
	last := c.QueryRow(t, "SELECT max(id)::text FROM marks")
	lo, _ := strconv.Atoi(first)
	hi, _ := strconv.Atoi(last)
	if lo == 0 || hi <= lo {
		t.Fatalf("no marks after the oldest kept backup (%s): %s..%s", oldest.ID, first, last)
	}
	pick := lo + rand.IntN(hi-lo)
	ts := c.QueryRow(t, fmt.Sprintf("SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM marks WHERE id = %d", pick))
	dir := filepath.Join(shared, "pitr")
	mustOK(t, pgark(t, env, "restore", "--config", conf, "--owner", "postgres", "--target-time", ts, "--target-action", "promote", "latest", dir))
	// Without PGARK_RUSAGE_LOG: the detached prefetch helper may outlive
	// the test and must not write into its directory.
	rs := testenv.StartPG(t, testenv.PGOptions{Major: 17, DataDir: dir, Env: plainEnv})
	rs.WaitFor(t, 5*time.Minute, func() bool { return rs.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true" })
	if got := rs.QueryRow(t, "SELECT count(*)::text||' '||max(id)::text FROM marks"); got != fmt.Sprintf("%d %d", pick, pick) {
		t.Fatalf("restored to mark %d (%s): marks %s", pick, ts, got)
	}
	rs.Stop(t)

	// Resource use: peaks per command, first half against second half.
	runs := readRusage(t, ruLog)
	type agg struct {
		n          int
		rss1, rss2 int64
		cpu        float64
		cpu1, cpu2 float64
		n1, n2     int
		maxRSS     int64
	}
	by := map[string]*agg{}
	mid := start.Add(soak / 2)
	for _, r := range runs {
		if r.at.Before(start) || r.at.After(start.Add(soak)) {
			continue
		}
		a := by[r.cmd]
		if a == nil {
			a = &agg{}
			by[r.cmd] = a
		}
		a.n++
		a.cpu += r.cpu
		if r.at.Before(mid) {
			a.n1++
			a.cpu1 += r.cpu
			a.rss1 = max(a.rss1, r.rssKB)
		} else {
			a.n2++
			a.cpu2 += r.cpu
			a.rss2 = max(a.rss2, r.rssKB)
		}
		a.maxRSS = max(a.maxRSS, r.rssKB)
	}
	var names []string
	for k := range by {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		a := by[k]
		t.Logf("soak %s: %d runs, peak RSS %d KiB (first half %d, second half %d), CPU %.2f s in all, %.3f s per run",
			k, a.n, a.maxRSS, a.rss1, a.rss2, a.cpu, a.cpu/float64(a.n))
		// No growth: the second half's peak within 25% (+8 MiB) of the first's.
		if a.n1 >= 3 && a.n2 >= 3 && float64(a.rss2) > 1.25*float64(a.rss1)+8192 {
			t.Errorf("%s: peak RSS grew from %d KiB to %d KiB over the soak", k, a.rss1, a.rss2)
		}
	}
	if by["wal-push"] == nil || by["wal-push"].n < 5 {
		t.Fatalf("too few wal-push runs recorded: %+v", by["wal-push"])
	}
	t.Logf("soak: %s of pgbench, %d marks, %d backups during the load, PITR to mark %d of %d", soak, hi, len(backupsTaken), pick, hi)
}

func runVerifyEnv(t *testing.T, env []string, conf string) verifyOut {
	t.Helper()
	r := pgark(t, env, "verify", "--config", conf, "--json")
	if r.code != 0 {
		t.Fatalf("verify: %s", r)
	}
	var v verifyOut
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func listBackupsEnv(t *testing.T, env []string, conf string) []backupInfo {
	t.Helper()
	var l struct {
		Backups []backupInfo `json:"backups"`
	}
	out := mustOK(t, pgark(t, env, "list", "--config", conf, "--json")).stdout
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	return l.Backups
}
