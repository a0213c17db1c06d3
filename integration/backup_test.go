package integration

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
)

type mark struct {
	xid    string // the inserting transaction
	id     int
	commit time.Time
	total  string // sum(abalance) when the mark was committed
	lsn    string
}

// TestBackupRestorePITR: base backups through the replication protocol into
// an encrypted S3 repository and a local one, then restores to a time, a
// restore point, an LSN, immediate and the latest state.
func TestBackupRestorePITR(t *testing.T) {
	for _, major := range testenv.Majors() {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) { backupRestorePITR(t, major) })
	}
}

func backupRestorePITR(t *testing.T, major int) {
	// Each restore is checked by the same major's pg_verifybackup (make deps installs it for
	// 15, 17 and 18: a missing one fails here; the other majors have none).
	verifybackup, haveVerify := testenv.ClientTool(t, major, "pg_verifybackup")
	a := setupArchiving(t, major, 0)
	c := a.c
	c.Exec(t, "ALTER SYSTEM SET track_commit_timestamp = on")
	c.Stop(t)
	c.Start(t)
	c.Pgbench(t, "-i", "-s", "2", "-q")
	c.Exec(t, "CREATE TABLE marks(id int PRIMARY KEY, total bigint)")

	for _, conf := range []string{a.s3Conf, a.localConf} {
		r := mustOK(t, pgark(t, a.s3Env, "backup", "--config", conf, "--dsn", c.DSN(), "--backup-part-size", "4MiB", "--json"))
		var m struct {
			ID       string
			Files    int
			Archives []struct{ Parts []struct{ Key string } }
		}
		if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || m.ID == "" || m.Files < 100 {
			t.Fatalf("backup --json: %v %s", err, r)
		}
		if parts := len(m.Archives[len(m.Archives)-1].Parts); parts < 3 {
			t.Fatalf("base.tar in %d parts with a 4MiB limit; want several", parts)
		}
	}

	// Marks: one committed row every 200 ms, with pgbench work between them.
	var marks []mark
	for i := 1; i <= 12; i++ {
		c.Pgbench(t, "-t", "30", "-c", "1")
		c.Exec(t, fmt.Sprintf("INSERT INTO marks SELECT %d, sum(abalance) FROM pgbench_accounts", i))
		row := c.QueryRow(t, fmt.Sprintf("SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')||' '||total||' '||pg_current_wal_lsn() FROM marks WHERE id = %d", i))
		f := strings.Fields(row)
		ts, err := time.Parse(time.RFC3339Nano, f[0])
		if err != nil {
			t.Fatalf("commit timestamp %q: %v", row, err)
		}
		marks = append(marks, mark{id: i, commit: ts, total: f[1], lsn: f[2],
			xid: c.QueryRow(t, fmt.Sprintf("SELECT xmin::text FROM marks WHERE id = %d", i))})
		if i == 8 {
			c.Exec(t, "SELECT pg_create_restore_point('pgark_rp8')")
		}
		time.Sleep(200 * time.Millisecond)
	}
	a.switchAndWait(t)

	// list shows both repositories' backups as complete.
	var l struct {
		Backups []struct {
			ID       string `json:"id"`
			Timeline uint32 `json:"timeline"`
		} `json:"backups"`
		Incomplete []string `json:"incomplete"`
		WAL        []struct {
			Timeline uint32 `json:"timeline"`
			Segments int    `json:"segments"`
		} `json:"wal"`
	}
	out := mustOK(t, pgark(t, a.s3Env, "list", "--config", a.s3Conf, "--json")).stdout
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Backups) != 1 || len(l.Incomplete) != 0 || len(l.WAL) == 0 {
		t.Fatalf("list --json: %v\n%s", err, out)
	}

	// A time between marks 5 and 6, written with an explicit +02:00 offset.
	mid := marks[4].commit.Add(marks[5].commit.Sub(marks[4].commit) / 2)
	tz := time.FixedZone("", 2*3600)
	target := mid.In(tz).Format("2006-01-02 15:04:05.000000-07:00")

	type restoreCase struct {
		name  string
		conf  string
		args  []string
		marks int
	}
	cases := []restoreCase{
		{"time", a.s3Conf, []string{"--target-time", target, "--target-action", "promote"}, 5},
		{"latest", a.localConf, nil, 12},
	}
	if major == 15 || len(testenv.Majors()) == 1 {
		cases = append(cases,
			restoreCase{"name", a.localConf, []string{"--target-name", "pgark_rp8", "--target-action", "promote"}, 8},
			restoreCase{"lsn", a.s3Conf, []string{"--target-lsn", marks[2].lsn, "--target-action", "promote"}, 3},
			restoreCase{"immediate", a.s3Conf, []string{"--target-immediate", "--target-action", "promote"}, 0},
			// Inclusive (the default): mark 7's own transaction is replayed.
			restoreCase{"xid", a.localConf, []string{"--target-xid", marks[6].xid, "--target-action", "promote"}, 7},
		)
	}
	for _, rc := range cases {
		t.Run(rc.name, func(t *testing.T) {
			dir := filepath.Join(a.shared, "restore-"+rc.name)
			args := append([]string{"restore", "--config", rc.conf, "--owner", "postgres"}, rc.args...)
			args = append(args, "latest", dir)
			r := mustOK(t, pgark(t, a.s3Env, args...))
			if !strings.Contains(r.stdout, "next: start PostgreSQL") {
				t.Errorf("restore does not say what to do next: %s", r.stdout)
			}
			if exists(filepath.Join(dir, ".pgark-restore-in-progress")) || !exists(filepath.Join(dir, "global", "pg_control")) {
				t.Fatal("restore left its marker or no pg_control")
			}
			auto := string(readFile(t, filepath.Join(dir, "postgresql.auto.conf")))
			if !strings.Contains(auto, "archive_mode = 'off'") || strings.Contains(auto, "AGE-SECRET") {
				t.Fatalf("postgresql.auto.conf:\n%s", auto)
			}
			if haveVerify {
				if out, err := exec.Command(verifybackup, "-n", dir).CombinedOutput(); err != nil {
					t.Fatalf("pg_verifybackup %d -n: %v\n%s", major, err, out)
				}
			}
			rs := testenv.StartPG(t, testenv.PGOptions{Major: major, DataDir: dir, Env: a.s3Env})
			rs.WaitFor(t, 3*time.Minute, func() bool {
				return rs.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true"
			})
			got := rs.QueryRow(t, "SELECT count(*)::text||' '||coalesce(max(id),0)::text FROM marks")
			if want := fmt.Sprintf("%d %d", rc.marks, rc.marks); got != want {
				t.Fatalf("marks after restore: %s, want %s", got, want)
			}
			if rc.marks > 0 {
				total := rs.QueryRow(t, "SELECT sum(abalance)::text FROM pgbench_accounts")
				if total != marks[rc.marks-1].total {
					t.Fatalf("pgbench total %s, want the snapshot at mark %d: %s", total, rc.marks, marks[rc.marks-1].total)
				}
			}
			if strings.Contains(rs.Log(), "exit code 200") {
				t.Fatalf("restore_command failed:\n%s", rs.Log())
			}
			rs.Stop(t)
		})
	}

	// A target before the only backup is refused with a clear message.
	early := marks[0].commit.Add(-time.Hour).Format(time.RFC3339)
	r := pgark(t, a.s3Env, "restore", "--config", a.s3Conf, "--owner", "postgres", "--target-time", early, "latest", filepath.Join(a.shared, "never"))
	if r.code == 0 || !strings.Contains(r.stderr, "no such complete backup") {
		t.Fatalf("restore before the first backup: %s", r)
	}
	// A time without an offset is ambiguous: refused before anything is written.
	r = pgark(t, a.s3Env, "restore", "--config", a.s3Conf, "--owner", "postgres", "--target-time", "2026-11-24 15:45:00", "latest", filepath.Join(a.shared, "never2"))
	if r.code != 2 || exists(filepath.Join(a.shared, "never2")) {
		t.Fatalf("ambiguous target time: %s", r)
	}
}
