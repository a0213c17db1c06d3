package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/local"
)

// TestTwoRepositories archives into a local repository and an S3 one at
// once, through the built binary as PostgreSQL runs it:
//   - init creates both; a backup and a dump go to repository 1 and
//     `pgark copy` replicates them (and the WAL) into repository 2;
//   - under pgbench, the S3 server is stopped: archiving goes on (no
//     archive_command failure), what S3 missed is queued in the spool;
//   - S3 comes back on the same port: with nothing but continued archiving,
//     every WAL object of repository 1 reaches S3, byte for byte;
//   - list, check (text, JSON, Prometheus) and verify report per
//     repository; dump-restore reads a dump object that repository 1
//     lost from repository 2;
//   - a segment deleted from repository 1: restore and recovery complete
//     through repository 2, with the source's rows; and a restore from
//     repository 2 alone completes too.
func TestTwoRepositories(t *testing.T) {
	shared := testenv.SharedDir(t)
	srv := testenv.S3Start(t)
	srv.CreateBucket(t, "second")
	awsEnv := []string{
		"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey,
		"AWS_REGION=" + srv.Region, "AWS_EC2_METADATA_DISABLED=true",
	}
	keyFile := filepath.Join(shared, "age-identity.txt")
	r := asPostgres(t, nil, "key", "generate", keyFile)
	if r.code != 0 {
		t.Fatal(r)
	}
	recip := strings.TrimSpace(r.stdout)
	repo1 := filepath.Join(shared, "repo1")
	spool := filepath.Join(shared, "spool")
	testenv.MkdirShared(t, spool)
	settings := map[string]string{
		"repo":                      repo1,
		"repo2":                     "s3://second/db",
		"repo2-s3-endpoint":         srv.Endpoint,
		"repo2-s3-force-path-style": "true",
		"repo2-s3-read-timeout":     "2s",
		"age-recipients":            recip,
		"age-identity-file":         keyFile,
		"spool-dir":                 spool,
		"retry-timeout":             "5s",
		"mirror-timeout":            "2s",
	}
	conf := writeConfig(t, shared, settings)
	r = asPostgres(t, awsEnv, "init", "--config", conf)
	if r.code != 0 || strings.Count(r.stdout, "initialised repository") != 2 {
		t.Fatalf("init of both: %s", r)
	}
	// A second init fails and names the repository.
	if r := asPostgres(t, awsEnv, "init", "--config", conf); r.code == 0 || !strings.Contains(r.stderr, "repository 1") {
		t.Fatalf("init again: %s", r)
	}

	major, bin := dumpClient(t) // a server its pg_dump and pg_restore fit
	c := testenv.StartPG(t, testenv.PGOptions{
		Major:        major,
		WalSegSizeMB: 1,
		Env:          awsEnv,
		Conf: map[string]string{
			"archive_mode":    "on",
			"archive_command": fmt.Sprintf("%s wal-push --config %s %%p", pgarkBin, conf),
			"archive_timeout": "0", "wal_keep_size": "1GB", "max_wal_size": "1GB", "checkpoint_timeout": "1h",
		},
	})
	c.Pgbench(t, "-i", "-s", "2", "-q")
	mustOK(t, pgark(t, awsEnv, "backup", "--config", conf, "--dsn", c.DSN()))
	execDB(t, c, bin, "postgres", "CREATE DATABASE shop")
	execDB(t, c, bin, "shop", "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 2000) g")
	mustOK(t, pgark(t, awsEnv, "dump", "--config", conf, "--dsn", c.DSN(), "--db", "shop", "--pg-bin", bin))

	// copy: the backup (and the WAL) into repository 2, verified; again:
	// nothing left to copy.
	out := mustOK(t, pgark(t, awsEnv, "copy", "--config", conf, "--json")).stdout
	var cp struct {
		Result struct {
			Copied  int      `json:"copied"`
			Backups []string `json:"backups"`
			Dumps   []string `json:"dumps"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(out), &cp); err != nil || len(cp.Result.Backups) != 1 || len(cp.Result.Dumps) != 1 || cp.Result.Copied == 0 {
		t.Fatalf("copy: %v\n%s", err, out)
	}
	out = mustOK(t, pgark(t, awsEnv, "copy", "--config", conf, "--json")).stdout
	if err := json.Unmarshal([]byte(out), &cp); err != nil || cp.Result.Copied != 0 {
		t.Fatalf("second copy copied again: %v\n%s", err, out)
	}

	// list: both repositories, each named, each with the backup.
	out = mustOK(t, pgark(t, awsEnv, "list", "--config", conf, "--json")).stdout
	var ls struct {
		Repositories []struct {
			Repo    repoRef           `json:"repo"`
			Backups []json.RawMessage `json:"backups"`
		} `json:"repositories"`
	}
	if err := json.Unmarshal([]byte(out), &ls); err != nil || len(ls.Repositories) != 2 ||
		ls.Repositories[0].Repo.Index != 1 || ls.Repositories[1].Repo.Location != "s3://second/db" ||
		len(ls.Repositories[0].Backups) != 1 || len(ls.Repositories[1].Backups) != 1 {
		t.Fatalf("list --json: %v\n%s", err, out)
	}

	failedBefore := archiverCount(t, c, "failed_count")
	archivedBefore := archiverCount(t, c, "archived_count")

	// The outage: S3 stops while pgbench runs.
	srv.Stop()
	start := time.Now()
	for archiverCount(t, c, "archived_count") < archivedBefore+8 {
		if time.Since(start) > 5*time.Minute {
			t.Fatalf("archiving stalled while S3 was down: %s", archiverRow(t, c))
		}
		c.Pgbench(t, "-c", "2", "-j", "2", "-T", "3")
	}
	queued := countQueued(t, spool)
	t.Logf("S3 down: %s; %d objects queued for it", archiverRow(t, c), queued)
	if f := archiverCount(t, c, "failed_count"); f != failedBefore {
		t.Fatalf("archive_command failed %d times while only S3 was down", f-failedBefore)
	}
	if queued == 0 {
		t.Fatal("nothing queued for S3 while it was down")
	}

	// S3 returns: continued archiving alone brings it every WAL object.
	srv.Restart(t)
	client := srv.S3Client()
	lrepo, err := local.New(repo1)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for {
		c.Pgbench(t, "-c", "1", "-T", "1")
		c.SwitchWAL(t)
		missing, err := walMissingInS3(t.Context(), lrepo, client)
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) == 0 && countQueued(t, spool) == 0 {
			break
		}
		if time.Since(start) > 5*time.Minute {
			t.Fatalf("S3 is still missing %d WAL objects (e.g. %s), %d queued", len(missing), missing[0], countQueued(t, spool))
		}
	}
	t.Logf("S3 caught up in %s", time.Since(start).Round(time.Second))
	if f := archiverCount(t, c, "failed_count"); f != failedBefore {
		t.Fatalf("archive_command failed %d times", f-failedBefore)
	}

	// check: each repository's archive compared with the server's.
	r = pgark(t, awsEnv, "check", "--config", conf, "--dsn", c.DSN(), "--no-probe", "--json")
	var ck struct {
		Repositories []struct {
			Repo   repoRef `json:"repo"`
			Checks []struct {
				Name   string `json:"name"`
				Status string `json:"status"`
				Queued *int   `json:"queued"`
			} `json:"checks"`
		} `json:"repositories"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &ck); err != nil || len(ck.Repositories) != 2 {
		t.Fatalf("check --json: %v\n%s", err, r)
	}
	for _, rep := range ck.Repositories {
		found := false
		for _, ch := range rep.Checks {
			if ch.Name == "repository_archive" {
				found = true
				if ch.Status != "ok" || ch.Queued == nil || *ch.Queued != 0 {
					t.Fatalf("repository %d: %+v\n%s", rep.Repo.Index, ch, r)
				}
			}
		}
		if !found {
			t.Fatalf("repository %d: no repository_archive check\n%s", rep.Repo.Index, r)
		}
	}

	r = pgark(t, awsEnv, "check", "--config", conf, "--dsn", c.DSN(), "--no-probe")
	if first, _, _ := strings.Cut(r.stdout, "\n"); r.code != 0 || !strings.HasPrefix(first, "PGARK CHECK OK - repository 1: OK") || !strings.Contains(first, "repository 2: OK") ||
		!strings.Contains(r.stdout, "== repository 2: s3://second/db ==") {
		t.Fatalf("check (text): %s", r)
	}

	r = pgark(t, awsEnv, "check", "--config", conf, "--dsn", c.DSN(), "--no-probe", "--prometheus")
	if r.code != 0 || !strings.Contains(r.stdout, `pgark_check_status{repo_index="1"} 0`) || !strings.Contains(r.stdout, `pgark_check_status{repo_index="2"} 0`) ||
		strings.Count(r.stdout, "# TYPE pgark_check_status ") != 1 {
		t.Fatalf("check --prometheus: %s", r)
	}

	// verify: each repository, each complete.
	mustOK(t, pgark(t, awsEnv, "verify", "--config", conf))
	mustOK(t, pgark(t, awsEnv, "verify", "--config", conf, "--repo-index", "2"))

	// dump-restore: the dump's data object deleted from repository 1 is
	// read from repository 2.
	dumpID := cp.Result.Dumps[0]
	if err := os.Remove(filepath.Join(repo1, "dumps", dumpID, "shop.dump.pgark")); err != nil {
		t.Fatal(err)
	}
	mustOK(t, pgark(t, awsEnv, "dump-restore", "--config", conf, "--dsn", c.DSN(), "--pg-bin", bin, "--db", "shop", "--create", "--target-db", "shop2", dumpID))
	sum := "SELECT count(*) || ' ' || md5(string_agg(name, '' ORDER BY id)) FROM items"
	if got, want := queryDB(t, c, bin, "shop2", sum), queryDB(t, c, bin, "shop", sum); got != want || !strings.HasPrefix(got, "2000 ") {
		t.Fatalf("shop2 restored through repository 2: %s, want %s", got, want)
	}

	want := c.QueryRow(t, "SELECT count(*)||':'||coalesce(sum(delta),0) FROM pgbench_history")
	last := c.SwitchWAL(t)
	c.WaitArchived(t, last, 2*time.Minute)
	c.Stop(t)

	// A segment after the backup, deleted from repository 1: recovery
	// takes it from repository 2.
	// The newest backup started after the first segments: pick one in the
	// middle of what recovery replays.
	var keys []string
	_ = lrepo.List(t.Context(), "wal/", func(oi storage.ObjectInfo) error {
		if strings.HasSuffix(oi.Key, ".pgark") && len(filepath.Base(oi.Key)) == 24+len(".pgark") {
			keys = append(keys, oi.Key)
		}
		return nil
	})
	victim := keys[len(keys)*3/4]
	if err := os.Remove(filepath.Join(repo1, victim)); err != nil {
		t.Fatal(err)
	}
	t.Logf("deleted %s from repository 1", victim)

	restoreAndCheck := func(name, conf, want string) {
		t.Helper()
		dir := filepath.Join(shared, name)
		mustOK(t, pgark(t, awsEnv, "restore", "--config", conf, "--owner", "postgres", "latest", dir))
		rs := testenv.StartPG(t, testenv.PGOptions{DataDir: dir, Env: awsEnv})
		rs.WaitFor(t, 5*time.Minute, func() bool {
			v, err := rs.QueryRowErr("SELECT (NOT pg_is_in_recovery())::text")
			return err == nil && v == "true"
		})
		if got := rs.QueryRow(t, "SELECT count(*)||':'||coalesce(sum(delta),0) FROM pgbench_history"); got != want {
			t.Fatalf("%s: pgbench_history %s, want %s", name, got, want)
		}
		if strings.Contains(rs.Log(), "exit code 200") {
			t.Fatalf("%s: restore_command failed:\n%s", name, rs.Log())
		}
		rs.Stop(t)
	}
	restoreAndCheck("restored-fallback", conf, want)

	// Repository 2 alone.
	only2 := map[string]string{
		"repo":                "s3://second/db",
		"s3-endpoint":         srv.Endpoint,
		"s3-force-path-style": "true",
		"age-identity-file":   keyFile,
		"retry-timeout":       "5s",
	}
	restoreAndCheck("restored-repo2", writeConfig(t, shared, only2), want)

	// Drills of each copy alone (--repo-index): repository 2 restores by
	// itself; repository 1, its segment gone, fails naming it. Each drill
	// is recorded in the repository it read.
	drill := func(idx string) result {
		return pgark(t, awsEnv, "drill", "--config", conf, "--pg-bin", bin, "--repo-index", idx)
	}
	mustOK(t, drill("2"))
	wantCode(t, drill("1"), 9, strings.TrimSuffix(filepath.Base(victim), ".pgark"))
	for idx, want := range map[string]string{"1": "failed", "2": "passed"} {
		out := mustOK(t, pgark(t, awsEnv, "list", "--drills", "--config", conf, "--repo-index", idx)).stdout
		if strings.Count(out, "  "+want+"  ") != 1 || strings.Count(out, "  passed  ")+strings.Count(out, "  failed  ") != 1 {
			t.Errorf("list --drills --repo-index %s: want one %s drill:\n%s", idx, want, out)
		}
	}
}

type repoRef struct {
	Index    int    `json:"index"`
	Location string `json:"location"`
}

func archiverRow(t *testing.T, c *testenv.Cluster) string {
	return c.QueryRow(t, "SELECT archived_count||' archived, '||failed_count||' failed, last '||coalesce(last_archived_wal,'') FROM pg_stat_archiver")
}

func archiverCount(t *testing.T, c *testenv.Cluster, col string) int {
	t.Helper()
	n, err := strconv.Atoi(c.QueryRow(t, "SELECT "+col+" FROM pg_stat_archiver"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// countQueued counts the objects wal-push queued in the spool for either
// repository.
func countQueued(t *testing.T, spool string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(spool, "mirror", "*", "*", "*.queued"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// walMissingInS3 lists repository 1's WAL objects that the S3 repository
// lacks or holds with other bytes.
func walMissingInS3(ctx context.Context, lrepo storage.Store, client *s3.Client) ([]string, error) {
	var missing []string
	err := lrepo.List(ctx, "wal/", func(oi storage.ObjectInfo) error {
		rc, _, err := lrepo.Get(ctx, oi.Key)
		if err != nil {
			return err
		}
		a, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		obj, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("second"), Key: aws.String("db/" + oi.Key)})
		if err != nil {
			missing = append(missing, oi.Key)
			return nil
		}
		b, err := io.ReadAll(obj.Body)
		obj.Body.Close()
		if err != nil || !bytes.Equal(a, b) {
			missing = append(missing, oi.Key+" (differs)")
		}
		return nil
	})
	return missing, err
}
