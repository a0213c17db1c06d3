package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pgark/pgark/internal/faultproxy"
	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/wal"
)

// allFaults is the mix injected: transient errors, resets, truncated
// bodies, stalls past the client's read timeout, and 403s (permanent: the
// call fails at once and PostgreSQL retries it).
var allFaults = []faultproxy.Kind{faultproxy.Err500, faultproxy.SlowDown, faultproxy.Forbidden,
	faultproxy.ResetRequest, faultproxy.ResetResponse, faultproxy.Truncate, faultproxy.Stall}

// transientFaults leaves out the 403s.
var transientFaults = []faultproxy.Kind{faultproxy.Err500, faultproxy.SlowDown,
	faultproxy.ResetRequest, faultproxy.ResetResponse, faultproxy.Truncate, faultproxy.Stall}

// archivedWatcher checks, while the archiver runs, that every segment that
// pg_stat_archiver reports archived is in the bucket (read directly, not
// through the proxy).
func archivedWatcher(t *testing.T, c *testenv.Cluster, client *s3.Client, bucket, prefix string) (count func() int, stop func() (checked int, missing []string)) {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		checked int
		missing []string
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := ""
		for ctx.Err() == nil {
			name, err := c.QueryRowErr("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
			if err == nil && name != "" && name != last {
				last = name
				n, perr := wal.ParseName(name)
				if perr == nil {
					_, herr := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + wal.ObjectKey(n))})
					mu.Lock()
					checked++
					if herr != nil && ctx.Err() == nil {
						missing = append(missing, fmt.Sprintf("%s: %v", name, herr))
					}
					mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	count = func() int {
		mu.Lock()
		defer mu.Unlock()
		return checked
	}
	return count, func() (int, []string) {
		cancel()
		wg.Wait()
		return checked, missing
	}
}

// waitArchivedAll switches WAL and waits until the archiver has caught up
// with it (failures allowed: they are retried).
func waitArchivedAll(t *testing.T, c *testenv.Cluster, timeout time.Duration) string {
	t.Helper()
	c.Exec(t, "CREATE TABLE IF NOT EXISTS pgark_tick(t timestamptz); INSERT INTO pgark_tick VALUES (now())")
	seg := c.QueryRow(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
	c.Exec(t, "SELECT pg_switch_wal()")
	c.WaitFor(t, timeout, func() bool {
		return c.QueryRow(t, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= seg
	})
	return seg
}

// TestFaultsArchiveRecoverBackup runs archiving, recovery and a backup
// through a proxy that fails 20% of the S3 requests in mixed ways:
//   - archive: a pgbench load for FAULT_SECONDS (60 s) with faults, then the
//     proxy heals and the archiver catches up; no segment is ever reported
//     archived while missing from the bucket, every segment PostgreSQL
//     handed over is in the repository byte for byte (each was copied aside
//     by archive_command first), and verify passes;
//   - recovery: restore_command through the faulty proxy; recovery either
//     completes, or stops loudly (and then completes once healed); the data
//     equals the source's;
//   - backup: under faults it completes and verifies, or fails and leaves
//     nothing that list shows; then a healed backup succeeds.
func TestFaultsArchiveRecoverBackup(t *testing.T) {
	seconds := 60
	if v := os.Getenv("FAULT_SECONDS"); v != "" {
		fmt.Sscan(v, &seconds)
	}
	shared := testenv.SharedDir(t)
	srv := testenv.S3Start(t)
	srv.CreateBucket(t, "faults")
	proxy := faultproxy.Start(t, srv.Endpoint)
	direct := srv.Env()
	viaProxy := append(srv.Env(), "PGARK_S3_ENDPOINT="+proxy.URL)

	keyFile := filepath.Join(shared, "age-identity.txt")
	r := asPostgres(t, nil, "key", "generate", keyFile)
	if r.code != 0 {
		t.Fatal(r)
	}
	conf := writeConfig(t, shared, map[string]string{
		"repo":                "s3://faults/db",
		"age-recipients":      strings.TrimSpace(r.stdout),
		"age-identity-file":   keyFile,
		"s3-force-path-style": "true",
		"s3-read-timeout":     "3s",
		"retry-timeout":       "2m",
	})
	if r := asPostgres(t, direct, "init", "--config", conf); r.code != 0 {
		t.Fatal(r)
	}
	copies := filepath.Join(shared, "copies")
	testenv.MkdirShared(t, copies)
	c := testenv.StartPG(t, testenv.PGOptions{
		Major: 16, WalSegSizeMB: 1, Env: viaProxy,
		Conf: map[string]string{
			"archive_mode":    "on",
			"archive_command": fmt.Sprintf("cp %%p %s/%%f && %s wal-push --config %s %%p", copies, pgarkBin, conf),
			"wal_keep_size":   "4GB", "max_wal_size": "4GB", "checkpoint_timeout": "1h",
		},
	})
	c.Pgbench(t, "-i", "-s", "5", "-q")
	mustOK(t, pgark(t, direct, "backup", "--config", conf, "--dsn", c.DSN()))

	// Archive under faults.
	count, stop := archivedWatcher(t, c, srv.S3Client(), "faults", "db/")
	proxy.Set(faultproxy.Faults{Rate: 0.2, Kinds: allFaults, Stall: 5 * time.Second})
	c.Pgbench(t, "-c", "2", "-j", "2", "-T", fmt.Sprint(seconds))
	// On a slow machine, load on until the watcher has seen enough reports.
	for deadline := time.Now().Add(10 * time.Minute); count() < 5 && time.Now().Before(deadline); {
		c.Pgbench(t, "-c", "2", "-j", "2", "-T", "5")
	}
	archiveFaults := proxy.String()
	proxy.Set(faultproxy.Faults{})
	last := waitArchivedAll(t, c, 5*time.Minute)
	checked, missing := stop()
	st := c.QueryRow(t, "SELECT archived_count||' archived, '||failed_count||' failed' FROM pg_stat_archiver")
	t.Logf("archive under faults: %s; pg_stat_archiver: %s; the watcher checked %d reports", archiveFaults, st, checked)
	if len(missing) > 0 {
		t.Fatalf("segments reported archived while missing from the repository: %v", missing)
	}
	if checked < 5 {
		t.Fatalf("the watcher checked only %d archived segments", checked)
	}
	// Every file PostgreSQL handed over is in the repository, byte for byte.
	ents, err := os.ReadDir(copies)
	if err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(shared, "spool")
	n := 0
	for _, e := range ents {
		name := e.Name()
		if _, err := wal.ParseName(name); err != nil || name > last && len(name) == 24 {
			continue
		}
		dest := filepath.Join(shared, "fetched")
		mustOK(t, pgark(t, append(direct, "PGARK_SPOOL_DIR="+spool), "wal-fetch", "--config", conf, "--pgdata", shared, name, dest))
		if !bytes.Equal(readFile(t, dest), readFile(t, filepath.Join(copies, name))) {
			t.Fatalf("%s in the repository differs from what PostgreSQL archived", name)
		}
		os.Remove(dest)
		n++
	}
	if n < 20 {
		t.Fatalf("only %d files archived during the fault run", n)
	}
	t.Logf("%d archived files compared byte for byte", n)
	mustOK(t, pgark(t, direct, "verify", "--config", conf))

	// Recovery under faults.
	want := c.QueryRow(t, "SELECT count(*)||':'||coalesce(sum(delta),0) FROM pgbench_history")
	dir := filepath.Join(shared, "restored")
	mustOK(t, pgark(t, viaProxy, "restore", "--config", conf, "--owner", "postgres", "latest", dir))
	proxy.Set(faultproxy.Faults{Rate: 0.2, Kinds: transientFaults, Stall: 5 * time.Second})
	before := proxy.TotalInjected()
	rs := testenv.StartPG(t, testenv.PGOptions{Major: 16, WalSegSizeMB: 1, DataDir: dir, Env: viaProxy})
	done := func() bool {
		if !rs.Running() {
			return true
		}
		v, err := rs.QueryRowErr("SELECT (NOT pg_is_in_recovery())::text")
		return err == nil && v == "true"
	}
	rs.WaitFor(t, 10*time.Minute, done)
	recoveryFaults := proxy.TotalInjected() - before
	proxy.Set(faultproxy.Faults{})
	if !rs.Running() {
		// Stopped loudly: it must say why, and resume once healed.
		if !strings.Contains(rs.Log(), "from archive: child process exited with exit code 200") {
			t.Fatalf("recovery stopped without a restore_command failure:\n%s", rs.Log())
		}
		t.Logf("recovery stopped under faults (allowed); resuming healed")
		rs.Start(t)
		rs.WaitFor(t, 5*time.Minute, done)
	}
	if got := rs.QueryRow(t, "SELECT count(*)||':'||coalesce(sum(delta),0) FROM pgbench_history"); got != want {
		t.Fatalf("after recovery under faults: pgbench_history %s, want %s", got, want)
	}
	t.Logf("recovery under faults: %d faults injected, data identical (%s)", recoveryFaults, want)
	rs.Stop(t)

	// Backup under faults.
	nBefore := countBackups(t, direct, conf)
	proxy.Set(faultproxy.Faults{Rate: 0.2, Kinds: allFaults, Stall: 5 * time.Second})
	r = pgark(t, viaProxy, "backup", "--config", conf, "--dsn", c.DSN(), "--json")
	backupFaults := proxy.String()
	proxy.Set(faultproxy.Faults{})
	nAfter := countBackups(t, direct, conf)
	if r.code == 0 {
		if nAfter != nBefore+1 {
			t.Fatalf("backup succeeded but list shows %d backups, was %d", nAfter, nBefore)
		}
		mustOK(t, pgark(t, direct, "verify", "--config", conf, "--full"))
		t.Logf("backup under faults completed and verified (%s)", backupFaults)
	} else {
		if nAfter != nBefore {
			t.Fatalf("a failed backup left a listed backup (%d, was %d): %s", nAfter, nBefore, r)
		}
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		t.Logf("backup under faults failed cleanly, exit %d: %s (%s)", r.code, lines[len(lines)-1], backupFaults)
	}
	mustOK(t, pgark(t, viaProxy, "backup", "--config", conf, "--dsn", c.DSN()))
	mustOK(t, pgark(t, direct, "verify", "--config", conf))
}

// countBackups counts the complete backups that list shows.
func countBackups(t *testing.T, env []string, conf string) int {
	t.Helper()
	out := mustOK(t, pgark(t, env, "list", "--config", conf, "--json")).stdout
	var l struct {
		Backups []struct{ ID string } `json:"backups"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	return len(l.Backups)
}
