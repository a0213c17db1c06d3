package health

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/walinventory"
)

func TestCheckCommandUses(t *testing.T) {
	files := map[string]string{
		"/etc/pgark/pgark.conf":    "# c\nrepo = /var/lib/pgark/repo\nage-recipients = age1x\n",
		"/etc/pgark/quoted.conf":   "repo = \"/var/lib/pgark/repo/\"\n",
		"/etc/pgark/other.conf":    "repo = /srv/other\n",
		"/etc/pgark/norepo.conf":   "s3-region = eu-west-1\n",
		"/etc/pgark/s3.conf":       "repo = s3://bucket//prod/\n",
		"/pgdata/conf/pgark.conf":  "repo=/var/lib/pgark/repo\n",
		"/etc/pgark/badquote.conf": "repo = \"/x\\q\"\n",
	}
	read := func(p string) ([]byte, error) {
		if v, ok := files[p]; ok {
			return []byte(v), nil
		}
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrPermission}
	}
	const repo = "/var/lib/pgark/repo"
	for _, tc := range []struct {
		cmd, repo, want, reason string
	}{
		{"pgark wal-push --repo /var/lib/pgark/repo %p", repo, UsesYes, "--repo /var/lib/pgark/repo"},
		{"/usr/local/bin/pgark wal-push --repo=/var/lib/pgark/repo/ %p", repo, UsesYes, ""},
		{"pgark wal-push -repo /var/lib/pgark//repo %p", repo, UsesYes, ""},
		{"pgark wal-push --config /etc/pgark/pgark.conf %p", repo, UsesYes, "--config /etc/pgark/pgark.conf: repo = /var/lib/pgark/repo"},
		{"pgark wal-push --config=/etc/pgark/quoted.conf %p", repo, UsesYes, ""},
		{"pgark wal-push --config conf/pgark.conf %p", repo, UsesYes, ""}, // relative to PGDATA
		{"PGARK_CONFIG=/etc/pgark/pgark.conf pgark wal-push %p", repo, UsesYes, "PGARK_CONFIG="},
		{"env PGARK_REPO=/var/lib/pgark/repo pgark wal-push %p", repo, UsesYes, "PGARK_REPO="},
		{"PGARK_REPO=/srv/x pgark wal-push --repo /var/lib/pgark/repo %p", repo, UsesYes, ""}, // flag beats environment
		{"pgark wal-push --s3-force-path-style --push-ahead 4 --repo '/var/lib/pgark/repo' %p", repo, UsesYes, ""},
		{`pgark wal-push --config "/etc/pgark/other.conf" %p && pgark wal-push --config /etc/pgark/pgark.conf %p`, repo, UsesYes, ""},
		{`sh -c "test ! -f /tmp/stop && pgark wal-push --repo /var/lib/pgark/repo %p"`, repo, UsesYes, ""},
		{"exec pgark wal-push --log-level debug --repo /var/lib/pgark/repo %p", repo, UsesYes, ""},
		{"pgark --log-level debug wal-push --repo /var/lib/pgark/repo %p", repo, UsesNo, "does not call"}, // pgark wants the command first
		{"pgark wal-push --config /etc/pgark/s3.conf %p", "s3://bucket/prod", UsesYes, ""},
		{"pgark wal-push --config /etc/pgark/pgark.conf %p", "s3://bucket/prod", UsesNo, "another repository: /var/lib/pgark/repo"},
		{"pgark wal-push --config /etc/pgark/other.conf %p", repo, UsesNo, "/srv/other"},
		{"pgark wal-push --repo /srv/other %p; pgark wal-push --repo /srv/third %p", repo, UsesNo, "/srv/other (--repo /srv/other), /srv/third"},
		{"cp %p /mnt/archive/%f", repo, UsesNo, "does not call `pgark wal-push`"},
		{"pgark wal-fetch %f %p", repo, UsesNo, "does not call"},
		{"", repo, UsesNo, "empty"},
		{"pgark wal-push %p", repo, UsesUnknown, "PostgreSQL's environment"},
		{"pgark wal-push %p --repo /var/lib/pgark/repo", repo, UsesUnknown, "PostgreSQL's environment"}, // flags after the argument are not flags
		{"pgark wal-push --config /etc/pgark/norepo.conf %p", repo, UsesUnknown, "sets no repo"},
		{"pgark wal-push --config /etc/pgark/secret.conf %p", repo, UsesUnknown, "cannot read config file /etc/pgark/secret.conf"},
		{"pgark wal-push --config /etc/pgark/badquote.conf %p", repo, UsesUnknown, "bad quoted"},
		{"pgark wal-push --repo $REPO %p", repo, UsesUnknown, "expanded by the shell"},
		{"pgark wal-push --repo", repo, UsesUnknown, "has no value"},
		// One invocation into another repository and one undecidable: unknown.
		{"pgark wal-push --repo /srv/other %p && pgark wal-push %p", repo, UsesUnknown, ""},
	} {
		got := CommandUses(tc.cmd, tc.repo, "/pgdata", read)
		if got.Verdict != tc.want || !strings.Contains(got.Reason, tc.reason) {
			t.Errorf("CommandUses(%q, %q) = %+v, want %s with %q", tc.cmd, tc.repo, got, tc.want, tc.reason)
		}
	}
}

func TestCheckRedactCommand(t *testing.T) {
	in := `AWS_ACCESS_KEY_ID=AKIA AWS_SECRET_ACCESS_KEY='s e' PGPASSWORD=pw aws_session_token="t" pgark wal-push --repo /r %p && TOKEN=x; keep=1`
	want := `AWS_ACCESS_KEY_ID=*** AWS_SECRET_ACCESS_KEY=*** PGPASSWORD=*** aws_session_token=*** pgark wal-push --repo /r %p && TOKEN=***; keep=1`
	if got := RedactCommand(in); got != want {
		t.Fatalf("RedactCommand:\n got %s\nwant %s", got, want)
	}
	// The repository is still found in the original command.
	if u := CommandUses(in, "/r", "", nil); u.Verdict != UsesYes {
		t.Fatalf("CommandUses = %+v", u)
	}
}

func TestCheckSplitShell(t *testing.T) {
	got := splitShell(`a 'b c' "d \"e\" \$f" g\ h;i&&j||k|l & m` + "\nn (o) x=" + `'' "p"'q'`)
	want := [][]string{{"a", "b c", `d "e" $f`, "g h"}, {"i"}, {"j"}, {"k"}, {"l"}, {"m"}, {"n"}, {"o"}, {"x=", "pq"}}
	if g, w := strings.Join(flat(got), "|"), strings.Join(flat(want), "|"); g != w {
		t.Fatalf("splitShell:\n got %q\nwant %q", got, want)
	}
}

func flat(c [][]string) []string {
	var out []string
	for _, w := range c {
		out = append(out, strings.Join(w, "·"))
	}
	return out
}

func TestCheckSegmentDistance(t *testing.T) {
	const mb16, mb1 = 16 << 20, 1 << 20
	for _, tc := range []struct {
		from, to string
		seg      uint32
		want     int64
	}{
		{"000000010000000000000003", "000000010000000000000003", mb16, 0},
		{"000000010000000000000003", "00000001000000000000000A", mb16, 7},
		{"0000000100000000000000FF", "000000010000000100000000", mb16, 1}, // 256 segments per log id
		{"000000010000000000000FFF", "000000010000000100000000", mb1, 1},  // 4096 with 1 MB segments
		{"000000010000000000000010", "000000010000000000000008", mb16, -8},
		{"000000010000000000000005", "000000030000000000000009", mb16, 4},         // across timelines: along the current one
		{"000000010000000000000005.partial", "000000020000000000000006", mb16, 1}, // a .partial is its segment
		{"000000010000000000000005.00000028.backup", "000000010000000000000007", mb16, 2},
	} {
		got, err := SegmentDistance(tc.from, tc.to, tc.seg)
		if err != nil || got != tc.want {
			t.Errorf("SegmentDistance(%s, %s, %d) = %d, %v; want %d", tc.from, tc.to, tc.seg, got, err, tc.want)
		}
	}
	for _, bad := range [][2]string{
		{"00000002.history", "000000020000000000000003"},
		{"000000010000000000000003", "nonsense"},
		{"000000010000000000000100", "000000010000000100000000"}, // segment 0x100 is not valid with 16 MB segments
	} {
		if _, err := SegmentDistance(bad[0], bad[1], mb16); err == nil {
			t.Errorf("SegmentDistance(%s, %s) accepted", bad[0], bad[1])
		}
	}
	if _, err := SegmentDistance("000000010000000000000003", "000000010000000000000004", 12345); err == nil {
		t.Error("a segment size that is not a power of two was accepted")
	}
	// Lag: complete segments not archived, not counting the one being written.
	for _, tc := range []struct {
		last, cur string
		want      int64
	}{
		{"000000010000000000000009", "00000001000000000000000A", 0},
		{"000000010000000000000009", "000000010000000000000019", 15},
		{"00000001000000000000000A", "00000001000000000000000A", 0}, // never negative
		{"000000010000000000000012", "00000001000000000000000A", 0},
	} {
		if got, err := ArchiveLag(tc.last, tc.cur, mb16); err != nil || got != tc.want {
			t.Errorf("ArchiveLag(%s, %s) = %d, %v; want %d", tc.last, tc.cur, got, err, tc.want)
		}
	}
}

func tp(s string) *time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return &t
}

func TestCheckArchiverFailing(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    *Archiver
		want bool
	}{
		{"nil", nil, false},
		{"fresh", &Archiver{}, false},
		{"healthy", &Archiver{ArchivedCount: 5, LastArchivedTime: tp("2026-01-01T10:00:00Z")}, false},
		{"recovered", &Archiver{ArchivedCount: 5, FailedCount: 3, LastArchivedTime: tp("2026-01-01T10:00:05Z"), LastFailedTime: tp("2026-01-01T10:00:00Z")}, false},
		{"failing", &Archiver{ArchivedCount: 5, FailedCount: 3, LastArchivedTime: tp("2026-01-01T10:00:00Z"), LastFailedTime: tp("2026-01-01T10:00:05Z")}, true},
		{"never archived", &Archiver{FailedCount: 1, LastFailedWAL: "000000010000000000000001", LastFailedTime: tp("2026-01-01T10:00:05Z")}, true},
	} {
		if got := tc.a.Failing(); got != tc.want {
			t.Errorf("%s: Failing() = %v", tc.name, got)
		}
	}
}

func meta(id, endLSN string, stop time.Time) *catalog.Meta {
	return &catalog.Meta{ID: id, StartLSN: endLSN, EndLSN: endLSN, EndTimeline: 1, StopTime: stop, RawBytes: 100 << 20, StoredBytes: 20 << 20}
}

// healthy is a primary that archives into the repository, with a backup
// 2 hours old and an unbroken window.
func healthy() Inputs {
	now := time.Date(2026, 11, 24, 16, 0, 0, 0, time.UTC)
	ready := 1
	b := meta("20261124T140000Z", "0/5000100", now.Add(-2*time.Hour))
	return Inputs{
		Now: now, Repository: "/var/lib/pgark/repo", RepoSystemID: "7441",
		Server: &Server{VersionNum: 150018, SystemID: "7441", ArchiveMode: "on", CommandKnown: true,
			ArchiveCommand: "pgark wal-push --repo /var/lib/pgark/repo %p", WALSegmentSize: 16 << 20,
			CurrentWAL: "00000001000000000000000B", CurrentLSN: "0/B000060", ReadyFiles: &ready,
			Archiver: &Archiver{ArchivedCount: 10, LastArchivedWAL: "00000001000000000000000A", LastArchivedTime: tp("2026-11-24T15:59:00Z")}},
		Command: CommandUse{UsesYes, "pgark wal-push with this repository (--repo /var/lib/pgark/repo)"},
		Probe:   &ProbeResult{RestorePoint: RestorePoint, LSN: "0/B0000D8", Segment: "00000001000000000000000B", Archived: true, WaitedSeconds: 0.4},
		Report: &walinventory.Report{Timeline: 1, SegSize: 16 << 20, From: "000000010000000000000005", To: "00000001000000000000000B", Checked: 7,
			Backups: []*catalog.Meta{b},
			Window: &walinventory.Window{FromBackup: b.ID, FromTime: b.StopTime, FromLSN: b.EndLSN, ToSegment: "00000001000000000000000B",
				ToLSN: "0/C000000", ToArchivedAt: now.Add(-time.Second)}},
	}
}

func statuses(r *Result) map[string]Status {
	m := map[string]Status{}
	for _, c := range r.Checks {
		m[c.Name] = c.Status
	}
	return m
}

func message(r *Result, name string) string {
	for _, c := range r.Checks {
		if c.Name == name {
			return c.Message
		}
	}
	return ""
}

func TestCheckEvaluate(t *testing.T) {
	lim := Limits{MaxArchiveLag: 16, MaxBackupAge: 26 * time.Hour}
	r := Evaluate(healthy(), lim)
	if r.Status != OK || len(r.Checks) != 11 {
		t.Fatalf("healthy: %s\n%+v", r.Summary(), r.Checks)
	}
	if r.LagSegments == nil || *r.LagSegments != 0 {
		t.Fatalf("healthy lag = %v", r.LagSegments)
	}

	for _, tc := range []struct {
		name   string
		change func(in *Inputs)
		check  string
		want   Status
		msg    string
	}{
		{"archiving failing", func(in *Inputs) {
			a := in.Server.Archiver
			a.FailedCount, a.LastFailedWAL, a.LastFailedTime = 4, "00000001000000000000000B", tp("2026-11-24T15:59:30Z")
		}, CheckArchiver, Critical, "failed for 00000001000000000000000B"},
		{"archive_mode off", func(in *Inputs) {
			in.Server.ArchiveMode = "off"
			in.Probe = &ProbeResult{Skipped: "archive_mode is off"}
		}, CheckArchiveMode, Critical, "archive_mode = off"},
		{"archive_mode unreadable", func(in *Inputs) { in.Server.ArchiveMode = "" }, CheckArchiveMode, Warning, "not readable"},
		{"other repository", func(in *Inputs) { in.Command = CommandUse{UsesNo, "pgark wal-push into another repository: /srv/x"} }, CheckArchiveCommand, Warning, "/srv/x"},
		{"command unknown", func(in *Inputs) { in.Command = CommandUse{UsesUnknown, "cannot read config file"} }, CheckArchiveCommand, Warning, "cannot tell"},
		{"command unreadable", func(in *Inputs) { in.Server.CommandKnown = false }, CheckArchiveCommand, Warning, "not readable"},
		{"command empty", func(in *Inputs) { in.Server.ArchiveCommand = "" }, CheckArchiveCommand, Critical, "empty"},
		{"archive_library", func(in *Inputs) { in.Server.ArchiveLibrary = "basic_archive" }, CheckArchiveCommand, Warning, "basic_archive"},
		{"lag", func(in *Inputs) { in.Server.CurrentWAL = "00000001000000000000001C" }, CheckArchiveLag, Warning, "17 complete segments"},
		{"lag at the limit", func(in *Inputs) { in.Server.CurrentWAL = "00000001000000000000001B" }, CheckArchiveLag, OK, "16 complete segments"},
		{"lag from ready files", func(in *Inputs) {
			n := 40
			in.Server.Archiver.LastArchivedWAL, in.Server.ReadyFiles = "00000002.history", &n
		}, CheckArchiveLag, Warning, "40 .ready files"},
		{"lag unknown", func(in *Inputs) { in.Server.CurrentWAL, in.Server.ReadyFiles = "", nil }, CheckArchiveLag, Warning, "unknown"},
		{"probe timeout", func(in *Inputs) {
			in.Probe.Archived, in.Probe.WaitedSeconds = false, 60
			in.Probe.Archiver = &Archiver{LastArchivedWAL: "00000001000000000000000A", LastFailedWAL: "00000001000000000000000B", LastFailedTime: tp("2026-11-24T15:59:59Z")}
		}, CheckProbe, Critical, "00000001000000000000000B is not in the repository after 60s (pg_stat_archiver: last archived 00000001000000000000000A"},
		{"probe denied", func(in *Inputs) {
			in.Probe = &ProbeResult{Error: "pg_create_restore_point(): ERROR: permission denied"}
		}, CheckProbe, Warning, "permission denied"},
		{"probe skipped", func(in *Inputs) { in.Probe = &ProbeResult{Skipped: "--no-probe"} }, CheckProbe, OK, "--no-probe"},
		{"old backup", func(in *Inputs) { in.Report.Backups[0].StopTime = in.Now.Add(-30 * time.Hour) }, CheckNewestBackup, Warning, "older than --max-backup-age 26h0m0s"},
		{"no backup", func(in *Inputs) { in.Report.Backups, in.Report.Window = nil, nil }, CheckNewestBackup, Critical, "no complete backup"},
		{"gap", func(in *Inputs) {
			in.Report.Gaps = []walinventory.Gap{{Timeline: 1, First: "000000010000000000000007", Last: "000000010000000000000008", Count: 2}}
		}, CheckContinuity, Warning, "1 gap in the WAL archive (2 missing segments): 000000010000000000000007 to 000000010000000000000008"},
		{"missing history", func(in *Inputs) { in.Report.MissingHistories = []uint32{3, 2} }, CheckContinuity, Warning, "timelines 2, 3"},
		{"no window after gap", func(in *Inputs) {
			in.Report.Gaps = []walinventory.Gap{{Timeline: 1, First: "000000010000000000000007", Last: "000000010000000000000007", Count: 1}}
			in.Report.Window = nil
		}, CheckWindow, Critical, "no backup starts after the last WAL gap (000000010000000000000007"},
		{"nothing archived", func(in *Inputs) { *in.Report = walinventory.Report{Backups: in.Report.Backups} }, CheckWindow, Critical, "no WAL archived"},
		{"wrong cluster", func(in *Inputs) { in.RepoSystemID = "9999" }, CheckCluster, Critical, "not the repository's cluster"},
		{"repository on a newer timeline", func(in *Inputs) { in.Report.Timeline = 2 }, CheckCluster, Warning, "newest timeline is 2, the server is on timeline 1: another server"},
		{"server on a newer timeline", func(in *Inputs) { in.Server.CurrentWAL = "00000002000000000000000B" }, CheckCluster, Warning, "history file is not archived yet"},
		{"standby on", func(in *Inputs) {
			in.Server.InRecovery = true
			in.Server.Archiver.FailedCount, in.Server.Archiver.LastFailedTime = 1, tp("2026-11-24T15:59:59Z")
			in.Server.CurrentWAL = "000000010000000000000040"
		}, CheckArchiveMode, OK, "the primary archives"},
		{"standby off", func(in *Inputs) { in.Server.InRecovery, in.Server.ArchiveMode = true, "off" }, CheckArchiveMode, Warning, "once promoted"},
		{"standby always failing", func(in *Inputs) {
			in.Server.InRecovery, in.Server.ArchiveMode = true, "always"
			in.Server.Archiver.FailedCount, in.Server.Archiver.LastFailedWAL, in.Server.Archiver.LastFailedTime = 1, "00000001000000000000000B", tp("2026-11-24T15:59:59Z")
		}, CheckArchiver, Critical, "failing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := healthy()
			tc.change(&in)
			r := Evaluate(in, lim)
			st := statuses(r)
			if st[tc.check] != tc.want || !strings.Contains(message(r, tc.check), tc.msg) {
				t.Fatalf("%s = %s %q; want %s with %q", tc.check, st[tc.check], message(r, tc.check), tc.want, tc.msg)
			}
			want := tc.want
			for name, s := range st {
				if name != tc.check && s != OK && tc.name != "no backup" && tc.name != "no window after gap" && tc.name != "nothing archived" && tc.name != "archive_mode off" {
					t.Errorf("%s is %s too: %s", name, s, message(r, name))
				}
				want = max(want, s)
			}
			if r.Status != want {
				t.Errorf("overall %s, want %s", r.Status, want)
			}
			if tc.want != OK && !strings.Contains(r.Summary(), strings.ToUpper(want.String())) {
				t.Errorf("summary %q", r.Summary())
			}
		})
	}

	// A standby that does not archive: no archiver or lag verdicts even
	// with failures and a large distance in its statistics.
	in := healthy()
	in.Server.InRecovery = true
	in.Server.Archiver.FailedCount, in.Server.Archiver.LastFailedTime = 1, tp("2026-11-24T15:59:59Z")
	in.Server.CurrentWAL = "000000010000000000000040"
	if r := Evaluate(in, lim); r.Status != OK {
		t.Fatalf("standby with archive_mode = on: %s", r.Summary())
	}
	// No backup age limit: any age is fine.
	in = healthy()
	in.Report.Backups[0].StopTime = in.Now.Add(-1000 * time.Hour)
	if r := Evaluate(in, Limits{MaxArchiveLag: 16}); r.Status != OK {
		t.Fatalf("max-backup-age 0: %s", r.Summary())
	}
}

func TestCheckJSONSchema(t *testing.T) {
	in := healthy()
	in.Report.Gaps = []walinventory.Gap{{Timeline: 1, First: "000000010000000000000007", Last: "000000010000000000000007", Count: 1}}
	b, err := json.Marshal(Evaluate(in, Limits{MaxArchiveLag: 16}))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"format", "status", "checks", "archiver", "lag_segments", "ready_files", "window", "gaps", "newest_backup", "probe", "server", "missing_segments"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no %q in %s", k, b)
		}
	}
	if m["status"] != "warning" || m["lag_segments"] != 0.0 || m["ready_files"] != 1.0 {
		t.Errorf("status/lag/ready: %v %v %v", m["status"], m["lag_segments"], m["ready_files"])
	}
	checks := m["checks"].([]any)
	c := checks[7].(map[string]any)
	if c["name"] != CheckContinuity || c["status"] != "warning" || c["message"] == "" || c["gaps"] == nil {
		t.Errorf("check object: %v", c)
	}
	w := m["window"].(map[string]any)
	if w["from_backup"] != "20261124T140000Z" || w["to_segment"] != "00000001000000000000000B" {
		t.Errorf("window: %v", w)
	}
	// Unknowns are null, lists are never null.
	in = healthy()
	in.Server.ReadyFiles, in.Server.CurrentWAL = nil, ""
	in.Report = &walinventory.Report{}
	b, _ = json.Marshal(Evaluate(in, Limits{}))
	for _, want := range []string{`"ready_files":null`, `"lag_segments":null`, `"window":null`, `"gaps":[]`, `"newest_backup":null`, `"missing_histories":[]`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("no %s in %s", want, b)
		}
	}
}

var promLine = regexp.MustCompile(`^(pgark_[a-zA-Z0-9_]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (\S+)$`)

// parseProm checks the text format line by line and returns name{labels} →
// value.
func parseProm(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	typed := map[string]string{}
	helped := map[string]bool{}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if f, ok := strings.CutPrefix(line, "# HELP "); ok {
			name, help, _ := strings.Cut(f, " ")
			if help == "" || helped[name] {
				t.Fatalf("line %d: HELP %q", i+1, line)
			}
			helped[name] = true
			continue
		}
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(f, " ")
			if typ != "gauge" && typ != "counter" || !helped[name] || typed[name] != "" {
				t.Fatalf("line %d: TYPE %q", i+1, line)
			}
			if typ == "counter" && !strings.HasSuffix(name, "_total") {
				t.Fatalf("line %d: counter %s without _total", i+1, name)
			}
			typed[name] = typ
			continue
		}
		m := promLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("line %d is not name{labels} value: %q", i+1, line)
		}
		if typed[m[1]] == "" {
			t.Fatalf("line %d: sample of %s before its TYPE", i+1, m[1])
		}
		v, err := strconv.ParseFloat(m[len(m)-1], 64)
		if err != nil || math.IsNaN(v) {
			t.Fatalf("line %d: value %q", i+1, m[len(m)-1])
		}
		key := strings.TrimSuffix(line, " "+m[len(m)-1])
		if _, dup := out[key]; dup {
			t.Fatalf("line %d: %s twice", i+1, key)
		}
		out[key] = v
	}
	return out
}

func TestCheckPrometheus(t *testing.T) {
	in := healthy()
	in.Repository = `s3://b/we"ird\path`
	in.Server.Archiver.FailedCount = 3
	in.Report.Gaps = []walinventory.Gap{{Timeline: 1, First: "000000010000000000000006", Last: "000000010000000000000007", Count: 2}, {Timeline: 1, First: "000000010000000000000009", Last: "000000010000000000000009", Count: 1}}
	r := Evaluate(in, Limits{MaxArchiveLag: 16})
	var buf bytes.Buffer
	if err := WritePrometheus(&buf, r); err != nil {
		t.Fatal(err)
	}
	m := parseProm(t, buf.String())
	for k, want := range map[string]float64{
		"pgark_check_status":                                 1,
		`pgark_check_result{check="wal_continuity"}`:         1,
		`pgark_check_result{check="probe"}`:                  0,
		"pgark_last_backup_timestamp_seconds":                float64(in.Report.Backups[0].StopTime.Unix()),
		"pgark_last_backup_size_bytes":                       100 << 20,
		"pgark_archive_lag_segments":                         0,
		"pgark_archive_ready_files":                          1,
		"pgark_archive_failed_total":                         3,
		"pgark_archived_total":                               10,
		"pgark_recovery_window_start_timestamp_seconds":      float64(in.Report.Window.FromTime.Unix()),
		"pgark_recovery_window_end_timestamp_seconds":        float64(in.Report.Window.ToArchivedAt.Unix()),
		"pgark_wal_gaps":                                     2,
		"pgark_wal_missing_segments":                         3,
		"pgark_probe_success":                                1,
		`pgark_repository_info{repo="s3://b/we\"ird\\path"}`: 1,
	} {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v\n%s", k, got, ok, want, buf.String())
		}
	}
	// Unknown values are left out, never reported as 0.
	in = healthy()
	in.Server.ReadyFiles, in.Server.CurrentWAL = nil, ""
	in.Report.Window, in.Report.Backups = nil, nil
	buf.Reset()
	if err := WritePrometheus(&buf, Evaluate(in, Limits{})); err != nil {
		t.Fatal(err)
	}
	m = parseProm(t, buf.String())
	for _, absent := range []string{"pgark_archive_ready_files", "pgark_archive_lag_segments", "pgark_recovery_window_start_timestamp_seconds", "pgark_last_backup_timestamp_seconds"} {
		if _, ok := m[absent]; ok || strings.Contains(buf.String(), absent) {
			t.Errorf("%s present although unknown", absent)
		}
	}
	if m["pgark_check_status"] != 2 {
		t.Errorf("status %v", m["pgark_check_status"])
	}
	buf.Reset()
	if err := WriteUnknownPrometheus(&buf); err != nil {
		t.Fatal(err)
	}
	if m := parseProm(t, buf.String()); len(m) != 1 || m["pgark_check_status"] != 3 {
		t.Errorf("unknown: %v", m)
	}
}

func TestCheckText(t *testing.T) {
	var buf bytes.Buffer
	in := healthy()
	in.Server.ArchiveMode = "off"
	if err := WriteText(&buf, Evaluate(in, Limits{MaxArchiveLag: 16})); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 12 || !strings.HasPrefix(lines[0], "PGARK CHECK CRITICAL - archive_mode: archive_mode = off") {
		t.Fatalf("report:\n%s", buf.String())
	}
	if !strings.HasPrefix(lines[2], "CRITICAL  archive_mode") || !strings.HasPrefix(lines[1], "OK        cluster") {
		t.Fatalf("report lines:\n%s", buf.String())
	}
}

func TestCheckSettingBytes(t *testing.T) {
	for _, tc := range []struct {
		v, unit string
		want    int64
	}{{"16777216", "B", 16 << 20}, {"2048", "8kB", 16 << 20}, {"1", "MB", 1 << 20}} {
		if got, err := settingBytes(tc.v, tc.unit); err != nil || got != tc.want {
			t.Errorf("settingBytes(%s, %s) = %d, %v", tc.v, tc.unit, got, err)
		}
	}
	if _, err := settingBytes("x", "B"); err == nil {
		t.Error("accepted x")
	}
	if _, err := settingBytes("1", "furlong"); err == nil {
		t.Error("accepted furlong")
	}
}
