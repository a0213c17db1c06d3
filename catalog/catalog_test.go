package catalog

import (
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/wal"
)

func catMeta(id string, tli uint32, end string, stop string) *Meta {
	t, _ := time.Parse(time.RFC3339, stop)
	return &Meta{ID: id, EndTimeline: tli, StartTimeline: tli, EndLSN: end, StartLSN: "0/1000000", StopTime: t}
}

func TestChooseFollowsTimelines(t *testing.T) {
	// Timeline 1 ran to 0/9000000; a PITR made timeline 2 at 0/5000000.
	b1 := catMeta("20261101T000000Z", 1, "0/2000000", "2026-11-01T00:10:00Z")
	b2 := catMeta("20261102T000000Z", 1, "0/4000000", "2026-11-02T00:10:00Z")
	abandoned := catMeta("20261103T000000Z", 1, "0/8000000", "2026-11-03T00:10:00Z") // after the switch: timeline 1 only
	b4 := catMeta("20261104T000000Z", 2, "0/7000000", "2026-11-04T00:10:00Z")
	all := []*Meta{b4, abandoned, b1, b2}
	SortBackups(all)
	if all[0] != b1 || all[3] != abandoned {
		t.Fatalf("sorted by LSN: %v %v", all[0].ID, all[3].ID)
	}
	h2, err := wal.ParseHistory(2, []byte("1\t0/5000000\tbefore 2026-11-02 12:00:00+00\n"))
	if err != nil {
		t.Fatal(err)
	}
	h1 := wal.History{TLI: 1}
	pick := func(h wal.History, tg Target) string {
		m, err := Choose(all, h, tg)
		if err != nil {
			return "error: " + err.Error()
		}
		return m.ID
	}
	if got := pick(h2, Target{}); got != b4.ID {
		t.Errorf("latest on timeline 2: %s", got)
	}
	if got := pick(h1, Target{}); got != abandoned.ID {
		t.Errorf("latest on timeline 1: %s", got)
	}
	tm, _ := time.Parse(time.RFC3339, "2026-11-03T12:00:00Z")
	if got := pick(h2, Target{Time: tm}); got != b2.ID {
		t.Errorf("timeline 2 at 11-03 must skip the abandoned timeline-1 backup: %s", got)
	}
	if got := pick(h2, Target{LSN: 0x4000000}); got != b2.ID {
		t.Errorf("LSN target: %s", got)
	}
	early, _ := time.Parse(time.RFC3339, "2026-10-01T00:00:00Z")
	if got := pick(h2, Target{Time: early}); !strings.Contains(got, "oldest backup") {
		t.Errorf("too early: %s", got)
	}
	h3 := wal.History{TLI: 3, Entries: []wal.HistoryEntry{{Parent: 1, Switch: 0x1000000}}}
	if got := pick(h3, Target{}); !strings.Contains(got, "none on its history") {
		t.Errorf("timeline 3 leaving before any backup: %s", got)
	}
}

func TestParseHistory(t *testing.T) {
	h, err := wal.ParseHistory(3, []byte("1\t0/3000000\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n"))
	if err != nil || len(h.Entries) != 2 || h.Entries[1].Parent != 2 {
		t.Fatalf("%+v %v", h, err)
	}
	if !h.Contains(1, 0x3000000) || h.Contains(1, 0x3000001) || !h.Contains(3, 0xFFFFFFFF) || h.Contains(4, 0) {
		t.Fatal("Contains")
	}
	for _, bad := range []string{"x\t0/1\n", "3\t0/1\n", "1\tnope\n", "2\t0/5\n1\t0/6\n", "1\n"} {
		if _, err := wal.ParseHistory(3, []byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
