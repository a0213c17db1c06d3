package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
)

type verifyOut struct {
	OK     bool `json:"ok"`
	Gaps   []struct{ First, Last string }
	Window *struct {
		FromBackup string `json:"from_backup"`
	} `json:"window"`
	Backups []struct {
		ID       string `json:"id"`
		OK       bool   `json:"ok"`
		Problems []struct {
			Object  string `json:"object"`
			Problem string `json:"problem"`
		} `json:"problems"`
	} `json:"backups"`
	Incomplete []string `json:"incomplete"`
}

func runVerify(t *testing.T, conf string, wantCode int, extra ...string) verifyOut {
	t.Helper()
	r := pgark(t, nil, append([]string{"verify", "--config", conf, "--json"}, extra...)...)
	if r.code != wantCode {
		t.Fatalf("verify %v: exit %d, want %d\n%s", extra, r.code, wantCode, r)
	}
	var v verifyOut
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, r.stdout)
	}
	return v
}

type backupInfo struct {
	ID       string    `json:"id"`
	StartLSN string    `json:"start_lsn"`
	StopTime time.Time `json:"stop_time"`
}

func listBackups(t *testing.T, conf string) []backupInfo {
	t.Helper()
	var l struct {
		Backups []backupInfo `json:"backups"`
	}
	out := mustOK(t, pgark(t, nil, "list", "--config", conf, "--json")).stdout
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	return l.Backups
}

// segOf is the 1 MB segment name holding lsn on timeline 1.
func segOf(t *testing.T, lsn string, delta int) string {
	var hi, lo uint64
	if _, err := fmt.Sscanf(lsn, "%X/%X", &hi, &lo); err != nil {
		t.Fatal(err)
	}
	no := (hi<<32|lo)>>20 + uint64(delta)
	return fmt.Sprintf("%08X%08X%08X", 1, no/4096, no%4096)
}

// TestRetainVerify: three backups with load between them; keep-within and
// keep-last plans; a real retention run; verify before and after; a restore
// to the window's first moment; a deleted segment and a flipped byte found
// by verify; an interrupted retention run that verify accepts and the next
// run finishes.
func TestRetainVerify(t *testing.T) {
	a := setupArchiving(t, 15, 1)
	c := a.c
	conf := a.localConf
	c.Exec(t, "CREATE TABLE marks(id int, at timestamptz DEFAULT clock_timestamp())")
	backup := func() { mustOK(t, pgark(t, nil, "backup", "--config", conf, "--dsn", c.DSN())) }

	backup()
	c.Exec(t, "INSERT INTO marks(id) VALUES (1)")
	makeSegments(t, c, 5)
	time.Sleep(1100 * time.Millisecond) // distinct backup ids (seconds)
	backup()
	c.Exec(t, "INSERT INTO marks(id) VALUES (2)")
	time.Sleep(1100 * time.Millisecond)
	mid := time.Now()
	time.Sleep(1100 * time.Millisecond)
	c.Exec(t, "INSERT INTO marks(id) VALUES (3)")
	makeSegments(t, c, 5)
	backup()
	c.Exec(t, "INSERT INTO marks(id) VALUES (4)")
	makeSegments(t, c, 3)
	a.switchAndWait(t)
	bs := listBackups(t, conf)
	if len(bs) != 3 {
		t.Fatalf("%d backups, want 3", len(bs))
	}
	v := runVerify(t, conf, 0)
	if v.Window == nil || v.Window.FromBackup != bs[0].ID {
		t.Fatalf("window before retention: %+v", v.Window)
	}

	// keep-within whose window starts between backups 2 and 3: backup 2 is
	// the newest before the window, kept; backup 1 goes.
	within := fmt.Sprintf("%.3fs", time.Since(mid).Seconds())
	var plan struct {
		DryRun  bool `json:"dry_run"`
		Backups []struct {
			ID   string `json:"id"`
			Keep bool   `json:"keep"`
			Why  string `json:"why"`
		} `json:"backups"`
		WAL struct {
			KeepFrom string `json:"keep_from"`
			Deleted  int    `json:"deleted"`
		} `json:"wal"`
	}
	out := mustOK(t, pgark(t, nil, "retain", "--config", conf, "--keep-within", within, "--dry-run", "--json")).stdout
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatal(err)
	}
	if !plan.DryRun || len(plan.Backups) != 3 || plan.Backups[0].Keep || !plan.Backups[1].Keep || !plan.Backups[2].Keep ||
		!strings.Contains(plan.Backups[1].Why, "before the window") {
		t.Fatalf("keep-within %s plan:\n%s", within, out)
	}
	if len(listBackups(t, conf)) != 3 {
		t.Fatal("--dry-run deleted something")
	}

	// keep-last 2, for real: the same outcome.
	r := mustOK(t, pgark(t, nil, "retain", "--config", conf, "--keep-last", "2"))
	if !strings.Contains(r.stdout, "DELETE") || !strings.Contains(r.stdout, bs[0].ID) {
		t.Fatalf("retain prints no list:\n%s", r.stdout)
	}
	left := listBackups(t, conf)
	if len(left) != 2 || left[0].ID != bs[1].ID || left[1].ID != bs[2].ID {
		t.Fatalf("after retain --keep-last 2: %+v", left)
	}
	if n := filesUnder(t, filepath.Join(a.localRepo, "backups", bs[0].ID)); n != 0 {
		t.Fatalf("%d objects of the oldest backup are still there", n)
	}
	first := segOf(t, left[0].StartLSN, 0)
	if exists(objectPath(a.localRepo, segOf(t, left[0].StartLSN, -1))) || !exists(objectPath(a.localRepo, first)) {
		t.Fatalf("WAL before %s must be gone and %s kept", first, first)
	}
	v = runVerify(t, conf, 0)
	if v.Window == nil || v.Window.FromBackup != bs[1].ID {
		t.Fatalf("window after retention: %+v", v.Window)
	}

	// A point-in-time restore to the keep-within window's first moment.
	dir := filepath.Join(a.shared, "restore-mid")
	mustOK(t, pgark(t, nil, "restore", "--config", conf, "--owner", "postgres", "--target-time", mid.UTC().Format(time.RFC3339Nano),
		"--target-action", "promote", "latest", dir))
	rs := testenv.StartPG(t, testenv.PGOptions{Major: 15, DataDir: dir})
	rs.WaitFor(t, 3*time.Minute, func() bool { return rs.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true" })
	if got := rs.QueryRow(t, "SELECT string_agg(id::text, ',' ORDER BY id) FROM marks"); got != "1,2" {
		t.Fatalf("restore to %s: marks %q, want 1,2", mid.Format(time.RFC3339Nano), got)
	}
	rs.Stop(t)

	// One segment deleted in the middle: exactly that gap, non-zero exit,
	// and the window now starts at backup 3.
	gone := segOf(t, left[0].StartLSN, 3)
	obj := objectPath(a.localRepo, gone)
	saved := readFile(t, obj)
	os.Remove(obj)
	v = runVerify(t, conf, 1)
	if len(v.Gaps) != 1 || v.Gaps[0].First != gone || v.Gaps[0].Last != gone {
		t.Fatalf("gaps %+v, want exactly %s", v.Gaps, gone)
	}
	if v.Window == nil || v.Window.FromBackup != bs[2].ID {
		t.Fatalf("window with a gap: %+v", v.Window)
	}
	os.WriteFile(obj, saved, 0o644)
	testenv.ChownToPostgres(t, obj)
	runVerify(t, conf, 0)

	// One byte flipped in backup 3's base.tar: sizes are intact (verify
	// passes), --full names the backup and the object.
	part := filepath.Join(a.localRepo, "backups", bs[2].ID, "base.tar.000.pgark")
	b := readFile(t, part)
	b[len(b)/2] ^= 0x40
	os.WriteFile(part, b, 0o644)
	runVerify(t, conf, 0)
	v = runVerify(t, conf, 1, "--full")
	found := false
	for _, vb := range v.Backups {
		if vb.ID == bs[2].ID && !vb.OK && len(vb.Problems) > 0 && strings.HasSuffix(vb.Problems[0].Object, "base.tar.000.pgark") {
			found = true
		} else if !vb.OK {
			t.Fatalf("backup %s reported damaged: %+v", vb.ID, vb.Problems)
		}
	}
	if !found {
		t.Fatalf("verify --full did not name the damaged object: %+v", v.Backups)
	}
	b[len(b)/2] ^= 0x40
	os.WriteFile(part, b, 0o644)
	runVerify(t, conf, 0, "--full")

	// One byte flipped in a segment: only --full reads it, and names it.
	seg := segOf(t, left[1].StartLSN, 1)
	sp := objectPath(a.localRepo, seg)
	sb := readFile(t, sp)
	sb[len(sb)-100] ^= 0x01
	os.WriteFile(sp, sb, 0o644)
	runVerify(t, conf, 0)
	r = pgark(t, nil, "verify", "--config", conf, "--full")
	if r.code != 1 || !strings.Contains(r.stdout, "DAMAGED "+seg) {
		t.Fatalf("verify --full with a damaged segment %s:\n%s", seg, r)
	}
	sb[len(sb)-100] ^= 0x01
	os.WriteFile(sp, sb, 0o644)

	// A retention run interrupted after its first step (backup 2's
	// completion marker deleted): verify accepts the repository, and the
	// next run removes the leftovers.
	os.Remove(filepath.Join(a.localRepo, "backups", bs[1].ID, "backup.json"))
	v = runVerify(t, conf, 0)
	if len(v.Incomplete) != 1 || v.Incomplete[0] != bs[1].ID {
		t.Fatalf("incomplete after an interrupted retention: %+v", v.Incomplete)
	}
	mustOK(t, pgark(t, nil, "retain", "--config", conf, "--keep-last", "2"))
	if n := filesUnder(t, filepath.Join(a.localRepo, "backups", bs[1].ID)); n != 0 {
		t.Fatalf("%d objects of the interrupted run's backup are still there", n)
	}
	runVerify(t, conf, 0)
}

// filesUnder counts the regular files under dir (0 when it is gone).
func filesUnder(t *testing.T, dir string) int {
	n := 0
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n++
		}
		return nil
	})
	return n
}
