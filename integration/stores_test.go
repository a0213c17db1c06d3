package integration

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
)

// storeRepo describes a repository on one kind of store for storeScenario.
type storeRepo struct {
	name string            // "local", "s3", "azure", "gcs", "sftp"
	conf map[string]string // config-file keys of the repository: repo URL, credentials...
	env  []string          // extra environment for pgark calls and the server (archive_command)
}

// TestStores runs the whole strategy end to end on each kind of store: the
// same scenario, so that every store is held to the same contract. Each
// store's subtest lives next to its server (stores_<name>_test.go).
func TestStores(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		storeScenario(t, 0, storeRepo{name: "local", conf: map[string]string{
			"repo": filepath.Join(testenv.SharedDir(t), "repo"),
		}})
	})
	t.Run("s3", func(t *testing.T) {
		s3 := testenv.S3Start(t)
		s3.CreateBucket(t, "stores")
		storeScenario(t, 0, storeRepo{name: "s3", env: s3.Env(), conf: map[string]string{
			"repo":                "s3://stores/cluster-a",
			"s3-force-path-style": "true",
		}})
	})
	t.Run("azure", storesAzure)
	t.Run("gcs", storesGCS)
}

// storeScenario runs, through the built binary and as PostgreSQL and a DBA
// would: init of an encrypted repository; WAL archiving through
// archive_command under pgbench; a base backup; a point-in-time restore
// checked row by row; verify; a second backup and retention keeping it
// alone; check; a logical dump restored into a new database. major 0 picks
// the newest major with client tools (the dump needs pg_dump).
func storeScenario(t *testing.T, major int, sr storeRepo) {
	bin := ""
	if major == 0 {
		major, bin = dumpClient(t)
	} else if d, ok := testenv.ClientToolsDir(major); ok {
		bin = d
	} else {
		t.Fatalf("no client tools for PostgreSQL %d", major)
	}
	shared := testenv.SharedDir(t)
	key := filepath.Join(shared, "age-identity.txt")
	r := asPostgres(t, nil, "key", "generate", key)
	if r.code != 0 {
		t.Fatalf("key generate: %s", r)
	}
	conf := maps.Clone(sr.conf)
	conf["age-recipients"] = strings.TrimSpace(r.stdout)
	conf["age-identity-file"] = key
	confPath := writeConfig(t, shared, conf)
	if r := asPostgres(t, sr.env, "init", "--config", confPath); r.code != 0 {
		t.Fatalf("init on %s: %s", sr.name, r)
	}

	c := testenv.StartPG(t, testenv.PGOptions{
		Major: major,
		Env:   sr.env,
		Conf: map[string]string{
			"archive_mode":           "on",
			"archive_command":        fmt.Sprintf("%s wal-push --config %s %%p", pgarkBin, confPath),
			"archive_timeout":        "0",
			"track_commit_timestamp": "on",
		},
	})
	a := &archiveSetup{c: c}
	env := append([]string{"PGARK_DSN=" + c.DSN(), "PGARK_PG_BIN=" + bin}, sr.env...)
	run := func(args ...string) result {
		t.Helper()
		return mustOK(t, pgark(t, env, append([]string{args[0], "--config", confPath}, args[1:]...)...))
	}

	c.Pgbench(t, "-i", "-s", "2", "-q")
	c.Exec(t, "CREATE TABLE marks(id int PRIMARY KEY, total bigint)")
	var first struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(run("backup", "--json").stdout), &first); err != nil || first.ID == "" {
		t.Fatalf("backup --json: %v", err)
	}

	// Marks: committed rows with pgbench work between them, each with the
	// table total it saw.
	var marks []mark
	for i := 1; i <= 6; i++ {
		c.Pgbench(t, "-t", "50", "-c", "2")
		c.Exec(t, fmt.Sprintf("INSERT INTO marks SELECT %d, sum(abalance) FROM pgbench_accounts", i))
		row := c.QueryRow(t, fmt.Sprintf("SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')||' '||total FROM marks WHERE id = %d", i))
		f := strings.Fields(row)
		ts, err := time.Parse(time.RFC3339Nano, f[0])
		if err != nil {
			t.Fatalf("commit timestamp %q: %v", row, err)
		}
		marks = append(marks, mark{id: i, commit: ts, total: f[1]})
		// Nothing commits in the 20 ms after a mark: the restore targets
		// the middle of that quiet time.
		c.WaitFor(t, time.Minute, func() bool {
			return c.QueryRow(t, fmt.Sprintf("SELECT (clock_timestamp() > '%s'::timestamptz + interval '20 ms')::text", f[0])) == "true"
		})
	}
	a.switchAndWait(t)

	// Point-in-time restore to just after mark 3, checked row by row.
	mid := marks[2].commit.Add(10 * time.Millisecond)
	dir := filepath.Join(shared, "restored")
	run("restore", "--owner", "postgres", "--target-time", mid.UTC().Format(time.RFC3339Nano), "--target-action", "promote", first.ID, dir)
	rs := testenv.StartPG(t, testenv.PGOptions{Major: major, DataDir: dir, Env: sr.env})
	rs.WaitFor(t, 3*time.Minute, func() bool {
		return rs.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true"
	})
	if got := rs.QueryRow(t, "SELECT count(*)::text||' '||coalesce(max(id),0)::text FROM marks"); got != "3 3" {
		t.Fatalf("%s: marks after the restore to %s: %s, want 3 3", sr.name, mid, got)
	}
	if total := rs.QueryRow(t, "SELECT sum(abalance)::text FROM pgbench_accounts"); total != marks[2].total {
		t.Fatalf("%s: pgbench total %s, want the snapshot at mark 3: %s", sr.name, total, marks[2].total)
	}
	rs.Stop(t)

	// verify, then a second backup and retention that keeps only it.
	var v verifyOut
	if err := json.Unmarshal([]byte(run("verify", "--json").stdout), &v); err != nil || !v.OK || len(v.Backups) != 1 || !v.Backups[0].OK {
		t.Fatalf("%s: verify: %v %+v", sr.name, err, v)
	}
	var second struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(run("backup", "--json").stdout), &second); err != nil || second.ID == "" || second.ID == first.ID {
		t.Fatalf("second backup --json: %v %q", err, second.ID)
	}
	run("retain", "--keep-last", "1")
	var l struct {
		Backups []backupInfo `json:"backups"`
	}
	if err := json.Unmarshal([]byte(run("list", "--json").stdout), &l); err != nil || len(l.Backups) != 1 || l.Backups[0].ID != second.ID {
		t.Fatalf("%s: after retain --keep-last 1: %v %+v, want only %s", sr.name, err, l.Backups, second.ID)
	}
	if err := json.Unmarshal([]byte(run("verify", "--json").stdout), &v); err != nil || !v.OK || v.Window == nil || v.Window.FromBackup != second.ID {
		t.Fatalf("%s: verify after retention: %v %+v", sr.name, err, v)
	}

	// check: every check OK, the probe's segment stored.
	var ch checkJSON
	if err := json.Unmarshal([]byte(run("check", "--json").stdout), &ch); err != nil || ch.Status != "ok" || !ch.Probe.Archived {
		t.Fatalf("%s: check: %v %+v", sr.name, err, ch)
	}

	// A logical dump into the same repository, restored into a new database.
	execDB(t, c, bin, "postgres", "CREATE DATABASE shop")
	execDB(t, c, bin, "shop", "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
	run("dump", "--db", "shop")
	run("dump-restore", "latest", "--create", "--target-db", "shop_copy")
	const sum = "SELECT count(*) || ' ' || md5(string_agg(name, '' ORDER BY id)) FROM items"
	if got, want := queryDB(t, c, bin, "shop_copy", sum), queryDB(t, c, bin, "shop", sum); got != want {
		t.Fatalf("%s: restored dump %s, want %s", sr.name, got, want)
	}
}
