package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pgark/pgark/internal/faultproxy"
	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/wal"
)

// droppedLine is wal-push's error line for a segment dropped under
// archive-queue-max, as it lands in the server log.
var droppedLine = regexp.MustCompile(`archive-queue-max: WAL segment DROPPED[^\n]*\bwal=([0-9A-F]{24})`)

// droppedInLog is the set of segments the server log says were dropped,
// in order.
func droppedInLog(log string) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range droppedLine.FindAllStringSubmatch(log, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			out = append(out, m[1])
		}
	}
	sort.Strings(out)
	return out
}

// TestArchiveQueueMax: with the repository unreachable (the fault proxy
// answers 500 to every request) and archive-queue-max 6MiB (1 MiB
// segments), a write load that piles up more than that in pg_wal: the
// server keeps running and the archiver keeps counting files archived
// (the dropped ones), each drop is logged, and once the repository returns
// the gap is reported exactly (the segments the log names, which are the
// ones missing from the bucket) by verify, list and check (CRITICAL), with
// the window of the older backup ending at the gap. A backup taken after
// the gap makes the window whole again: verify passes from that backup and
// check is no longer critical about it.
func TestArchiveQueueMax(t *testing.T) {
	shared := testenv.SharedDir(t)
	srv := testenv.S3Start(t)
	srv.CreateBucket(t, "queue")
	proxy := faultproxy.Start(t, srv.Endpoint)
	direct := srv.Env()
	viaProxy := append(srv.Env(), "PGARK_S3_ENDPOINT="+proxy.URL)
	spool := filepath.Join(shared, "spool")
	testenv.MkdirShared(t, spool)
	const limitSegs = 6
	conf := writeConfig(t, shared, map[string]string{
		"repo":                "s3://queue/db",
		"s3-force-path-style": "true",
		"s3-read-timeout":     "2s",
		"retry-timeout":       "1s",
		"archive-queue-max":   fmt.Sprintf("%dMiB", limitSegs),
		"spool-dir":           spool,
	})
	mustOK(t, asPostgres(t, direct, "init", "--config", conf))
	c := testenv.StartPG(t, testenv.PGOptions{
		Major: 16, WalSegSizeMB: 1, Env: viaProxy,
		Conf: map[string]string{
			"archive_mode":    "on",
			"archive_command": fmt.Sprintf("%s wal-push --config %s %%p", pgarkBin, conf),
		},
	})
	c.Exec(t, "CREATE TABLE load(i int, pad text)")
	mustOK(t, pgark(t, direct, "backup", "--config", conf, "--dsn", c.DSN()))
	backup1 := newestBackup(t, direct, conf)
	waitArchivedAll(t, c, 2*time.Minute)
	archivedBefore := archivedCount(t, c)

	// The repository becomes unreachable; WAL piles up until wal-push
	// drops segments, under a load that keeps switching segments.
	// The load keeps the queue a little above the limit (a load far ahead
	// of the drops would only take longer to drain).
	proxy.Set(faultproxy.Faults{Rate: 1, Kinds: []faultproxy.Kind{faultproxy.Err500}})
	c.WaitFor(t, 5*time.Minute, func() bool {
		if readySegments(t, c) <= limitSegs+2 {
			c.Exec(t, "INSERT INTO load SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g")
			c.Exec(t, "SELECT pg_switch_wal()")
		}
		return len(droppedInLog(c.Log())) >= limitSegs
	})
	if !c.Running() {
		t.Fatal("the server stopped while the repository was unreachable")
	}
	// The load stops; the archiver drops until the queue is at the limit
	// again, then only fails (and keeps the rest).
	c.WaitFor(t, 3*time.Minute, func() bool { return readySegments(t, c) <= limitSegs })
	dropped := droppedInLog(c.Log())
	if got := archivedCount(t, c); got < archivedBefore+int64(len(dropped)) {
		t.Fatalf("pg_stat_archiver counts %d archived, was %d before the outage, with %d dropped: drops are not reported as archived", got, archivedBefore, len(dropped))
	}
	if !c.Running() {
		t.Fatal("the server stopped while the repository was unreachable")
	}

	// The repository answers reads again but still refuses writes: check
	// (through the proxy, as the server's pushes see the repository) finds
	// the drops in the local records, which no push could write to the
	// repository yet.
	proxy.Set(faultproxy.Faults{Rate: 1, Kinds: []faultproxy.Kind{faultproxy.Err500}, Methods: []string{"PUT", "POST"}})
	r := pgark(t, viaProxy, "check", "--config", conf, "--dsn", c.DSN(), "--no-probe", "--json")
	st, msg := checkResult(t, r, "dropped_wal")
	if r.code != 2 || st != "critical" || !strings.Contains(msg, dropped[0]+".."+dropped[len(dropped)-1]) {
		t.Fatalf("check from the local records: exit %d, dropped_wal %s: %s\n%s", r.code, st, msg, r.stdout)
	}

	// The repository returns: everything left is archived, and the first
	// push writes the gap record.
	// No new WAL until the archiver has stored a waiting segment, so that
	// no push still failing from the outage sees the queue above the limit.
	healed := archivedCount(t, c)
	proxy.Set(faultproxy.Faults{})
	c.WaitFor(t, 3*time.Minute, func() bool { return archivedCount(t, c) > healed })
	waitArchivedAll(t, c, 5*time.Minute)
	if again := droppedInLog(c.Log()); len(again) != len(dropped) {
		t.Fatalf("drops after the queue was back under the limit: %v, was %v", again, dropped)
	}

	// The dropped set is one run of consecutive segments, exactly the
	// segments missing from the bucket around it.
	first, last := dropped[0], dropped[len(dropped)-1]
	fn, _ := wal.ParseName(first)
	ln, _ := wal.ParseName(last)
	lo, _ := fn.SegNo(1 << 20)
	hi, _ := ln.SegNo(1 << 20)
	if hi-lo+1 != uint64(len(dropped)) {
		t.Fatalf("dropped segments are not one run: %v", dropped)
	}
	client := srv.S3Client()
	inBucket := func(no uint64) bool {
		n, _ := wal.ParseName(wal.SegmentFileName(1, no, 1<<20))
		_, err := client.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String("queue"), Key: aws.String("db/" + wal.ObjectKey(n))})
		return err == nil
	}
	for no := lo - 1; no <= hi+1; no++ {
		if want := no < lo || no > hi; inBucket(no) != want {
			t.Fatalf("segment %s in the bucket: %v, want %v (dropped %s..%s)", wal.SegmentFileName(1, no, 1<<20), !want, want, first, last)
		}
	}
	t.Logf("%d segments dropped, %s..%s; the server kept running", len(dropped), first, last)

	// verify: the one gap is the dropped range, named as such; the older
	// backup's window ends at the segment before it.
	r = pgark(t, direct, "verify", "--config", conf, "--json")
	if r.code != 1 {
		t.Fatalf("verify with a dropped range and no backup after it: want exit 1, %s", r)
	}
	var v struct {
		Gaps []struct {
			First, Last, Cause string
			Count              int
		}
		Dropped []struct {
			First, Last string
			Count       int
		} `json:"dropped_wal"`
		Window *struct {
			FromBackup string `json:"from_backup"`
			ToSegment  string `json:"to_segment"`
		}
		WindowBeforeGap *struct {
			FromBackup string `json:"from_backup"`
			ToSegment  string `json:"to_segment"`
		} `json:"window_before_gap"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Gaps) != 1 || v.Gaps[0].First != first || v.Gaps[0].Last != last || v.Gaps[0].Cause != "dropped by archive-queue-max" {
		t.Fatalf("verify gaps %+v, want %s..%s dropped by archive-queue-max", v.Gaps, first, last)
	}
	if len(v.Dropped) != 1 || v.Dropped[0].First != first || v.Dropped[0].Last != last || v.Dropped[0].Count != len(dropped) {
		t.Fatalf("verify dropped_wal %+v", v.Dropped)
	}
	if v.Window != nil || v.WindowBeforeGap == nil || v.WindowBeforeGap.FromBackup != backup1 || v.WindowBeforeGap.ToSegment != wal.SegmentFileName(1, lo-1, 1<<20) {
		t.Fatalf("verify window %+v, before the gap %+v; want backup %s to the segment before %s", v.Window, v.WindowBeforeGap, backup1, first)
	}
	text := pgark(t, direct, "verify", "--config", conf).stdout
	if !strings.Contains(text, "DROPPED by archive-queue-max: "+first+".."+last) || !strings.Contains(text, "recoverable window before the gap") {
		t.Fatalf("verify text:\n%s", text)
	}
	list := mustOK(t, pgark(t, direct, "list", "--config", conf)).stdout
	if !strings.Contains(list, "WAL DROPPED by archive-queue-max") || !strings.Contains(list, first+".."+last) ||
		!strings.Contains(list, "(backup "+backup1+") to the end of "+wal.SegmentFileName(1, lo-1, 1<<20)+", before the gap") {
		t.Fatalf("list:\n%s", list)
	}

	// check: CRITICAL, naming the range.
	r = pgark(t, direct, "check", "--config", conf, "--dsn", c.DSN(), "--no-probe", "--json")
	st, msg = checkResult(t, r, "dropped_wal")
	if r.code != 2 || st != "critical" || !strings.Contains(msg, first+".."+last) {
		t.Fatalf("check after drops: exit %d, dropped_wal %s: %s\n%s", r.code, st, msg, r.stdout)
	}

	// A backup after the gap: the window is whole again from it.
	mustOK(t, pgark(t, direct, "backup", "--config", conf, "--dsn", c.DSN()))
	backup2 := newestBackup(t, direct, conf)
	r = mustOK(t, pgark(t, direct, "verify", "--config", conf, "--json"))
	v.Window, v.WindowBeforeGap = nil, nil
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatal(err)
	}
	if v.Window == nil || v.Window.FromBackup != backup2 || len(v.Dropped) != 1 {
		t.Fatalf("verify after a new backup: window %+v, dropped %+v; want from %s", v.Window, v.Dropped, backup2)
	}
	v.Window, v.Dropped = nil, nil
	if err := json.Unmarshal([]byte(mustOK(t, pgark(t, direct, "list", "--config", conf, "--json")).stdout), &v); err != nil {
		t.Fatal(err)
	}
	if v.Window == nil || v.Window.FromBackup != backup2 || len(v.Dropped) != 1 || v.Dropped[0].First != first {
		t.Fatalf("list --json after a new backup: window %+v, dropped %+v", v.Window, v.Dropped)
	}
	r = pgark(t, direct, "check", "--config", conf, "--dsn", c.DSN(), "--no-probe", "--json")
	st, msg = checkResult(t, r, "dropped_wal")
	if r.code == 2 || st != "ok" || !strings.Contains(msg, first+".."+last) {
		t.Fatalf("check after a new backup: exit %d, dropped_wal %s: %s\n%s", r.code, st, msg, r.stdout)
	}

	// Retention deletes the old backup, the WAL before the new one, and the
	// gap record with it.
	var ret struct {
		WAL struct {
			GapRecords []string `json:"gap_records"`
		} `json:"wal"`
	}
	if err := json.Unmarshal([]byte(mustOK(t, pgark(t, direct, "retain", "--config", conf, "--keep-last", "1", "--json")).stdout), &ret); err != nil {
		t.Fatal(err)
	}
	want := "gaps/00000001/" + first + "-" + last + ".json"
	if len(ret.WAL.GapRecords) != 1 || ret.WAL.GapRecords[0] != want {
		t.Fatalf("retain deleted gap records %v, want %s", ret.WAL.GapRecords, want)
	}
	r = mustOK(t, pgark(t, direct, "verify", "--config", conf, "--json"))
	v.Dropped, v.Gaps = nil, nil
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Dropped) != 0 || len(v.Gaps) != 0 {
		t.Fatalf("after retention: dropped %+v, gaps %+v", v.Dropped, v.Gaps)
	}
}

// newestBackup is the id of the newest backup that list shows.
func newestBackup(t *testing.T, env []string, conf string) string {
	t.Helper()
	var l struct {
		Backups []struct{ ID string } `json:"backups"`
	}
	if err := json.Unmarshal([]byte(mustOK(t, pgark(t, env, "list", "--config", conf, "--json")).stdout), &l); err != nil {
		t.Fatal(err)
	}
	if len(l.Backups) == 0 {
		t.Fatal("no backup listed")
	}
	return l.Backups[len(l.Backups)-1].ID
}

// readySegments is the number of segments waiting in pg_wal (.ready).
func readySegments(t *testing.T, c *testenv.Cluster) int {
	t.Helper()
	n, err := strconv.Atoi(c.QueryRow(t, "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name ~ '^[0-9A-F]{24}[.]ready$'"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func archivedCount(t *testing.T, c *testenv.Cluster) int64 {
	t.Helper()
	n, err := strconv.ParseInt(c.QueryRow(t, "SELECT archived_count FROM pg_stat_archiver"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkResult is one check's status and message from check --json.
func checkResult(t *testing.T, r result, name string) (status, message string) {
	t.Helper()
	var res struct {
		Checks []struct{ Name, Status, Message string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("check --json: %v\n%s", err, r)
	}
	for _, c := range res.Checks {
		if c.Name == name {
			return c.Status, c.Message
		}
	}
	t.Fatalf("check --json has no %s check:\n%s", name, r.stdout)
	return "", ""
}
