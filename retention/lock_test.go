package retention

import (
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/dump"
	"github.com/pgark/pgark/wal"
	"github.com/pgark/pgark/walinventory"
)

// Under Object Lock, what the policy would delete but is still retained is
// kept and counted, with the earliest end of retention; the WAL the kept
// backups need stays with them, and what is no longer retained goes.
func TestObjectLockKeeps(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	bs := []*catalog.Meta{
		meta("20261110T000000Z", 1, 2, 3, now.Add(-14*24*time.Hour)),
		meta("20261120T000000Z", 1, 5, 6, now.Add(-96*time.Hour)),
		meta("20261122T000000Z", 1, 8, 9, now.Add(-48*time.Hour)),
	}
	var names []string
	for i := uint64(1); i <= 10; i++ {
		names = append(names, wal.SegmentFileName(1, i, seg))
	}
	inv := inventory(t, names...)
	// Segment 1 was archived 20 days ago, the others 5 days ago: with a
	// 7-day lock only segment 1 is free.
	for no, o := range inv.Segments[1] {
		o.Info.ModTime = now.Add(-5 * 24 * time.Hour)
		if no == 1 {
			o.Info.ModTime = now.Add(-20 * 24 * time.Hour)
		}
		inv.Segments[1][no] = o
	}
	rep := &walinventory.Report{Timeline: 1, SegSize: seg, Backups: bs, History: wal.History{TLI: 1}, HistoryKnown: true, Inventory: inv}
	p, err := MakePlan(rep, Policy{KeepLast: 1, Now: now, ObjectLock: 7 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if k := keeps(p); k != "DKK" || !strings.Contains(p.Backups[1].Why, "Object Lock") {
		t.Fatalf("keep-last 1 under a 7-day lock: %s %q", k, p.Backups[1].Why)
	}
	// The earliest end: the WAL archived 5 days ago, in 2 days.
	if want := now.Add(2 * 24 * time.Hour); p.Locked.Backups != 1 || !p.Locked.Until.Equal(want) {
		t.Fatalf("locked %+v, want 1 backup, the earliest until %s", p.Locked, want)
	}
	// WAL before the kept backup's start (segment 5): 1..4, of which 2..4
	// are still locked.
	if len(p.DeleteWAL) != 1 || p.DeleteWAL[0].Name.Raw != wal.SegmentFileName(1, 1, seg) || p.Locked.WAL != 3 {
		t.Fatalf("WAL: delete %d, locked %d", len(p.DeleteWAL), p.Locked.WAL)
	}
	// Without the lock: the policy alone.
	p, _ = MakePlan(rep, Policy{KeepLast: 1, Now: now})
	if k := keeps(p); k != "DDK" || p.Locked.Backups != 0 || len(p.DeleteWAL) != 7 {
		t.Fatalf("without the lock: %s, %+v, %d WAL deleted", k, p.Locked, len(p.DeleteWAL))
	}
}

// Dump runs that ended less than the Object Lock period ago are kept.
func TestObjectLockKeepsDumps(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	var l dump.Listing
	for _, d := range []int{10, 5, 3, 1} { // days ago, oldest first
		st := now.Add(-time.Duration(d) * 24 * time.Hour)
		l.Dumps = append(l.Dumps, &dump.Meta{ID: dump.NewID(st), StartTime: st, EndTime: st.Add(time.Hour)})
	}
	p, err := MakeDumpPlan(&l, DumpPolicy{KeepLast: 1, Now: now, ObjectLock: 7 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for _, d := range p.Dumps {
		got += map[bool]string{true: "K", false: "D"}[d.Keep]
	}
	if got != "DKKK" || !strings.Contains(p.Dumps[1].Why, "Object Lock") {
		t.Fatalf("keep-dumps 1 under a 7-day lock: %s %q", got, p.Dumps[1].Why)
	}
}
