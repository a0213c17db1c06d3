package retention

import (
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/wal"
	"github.com/pgark/pgark/walgap"
	"github.com/pgark/pgark/walinventory"
)

const seg = 16 << 20

func meta(id string, tli uint32, startSeg, endSeg uint64, stop time.Time) *catalog.Meta {
	return &catalog.Meta{ID: id, StartTimeline: tli, EndTimeline: tli, WalSegmentBytes: seg,
		StartLSN: wal.LSN(startSeg * seg).String(), EndLSN: wal.LSN(endSeg*seg + 100).String(),
		StartTime: stop.Add(-time.Minute), StopTime: stop}
}

func inventory(t *testing.T, names ...string) *walinventory.Inventory {
	inv := &walinventory.Inventory{SegSize: seg, Segments: map[uint32]map[uint64]walinventory.Object{}, Histories: map[uint32]walinventory.Object{}}
	for _, n := range names {
		pn, err := wal.ParseName(n)
		if err != nil {
			t.Fatal(err)
		}
		o := walinventory.Object{Name: pn, Info: storage.ObjectInfo{Key: wal.ObjectKey(pn)}}
		switch pn.Kind {
		case wal.KindSegment:
			no, _ := pn.SegNo(seg)
			if inv.Segments[pn.Timeline] == nil {
				inv.Segments[pn.Timeline] = map[uint64]walinventory.Object{}
			}
			inv.Segments[pn.Timeline][no] = o
		case wal.KindHistory:
			inv.Histories[pn.Timeline] = o
		default:
			inv.Partials = append(inv.Partials, o)
		}
	}
	return inv
}

func keeps(p *Plan) string {
	var b strings.Builder
	for _, d := range p.Backups {
		if d.Keep {
			b.WriteString("K")
		} else {
			b.WriteString("D")
		}
	}
	return b.String()
}

func TestKeepLastAndWAL(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	bs := []*catalog.Meta{
		meta("20261120T000000Z", 1, 2, 3, now.Add(-96*time.Hour)),
		meta("20261121T000000Z", 1, 5, 6, now.Add(-72*time.Hour)),
		meta("20261122T000000Z", 1, 8, 9, now.Add(-48*time.Hour)),
	}
	var names []string
	for i := uint64(1); i <= 10; i++ {
		names = append(names, wal.SegmentFileName(1, i, seg))
	}
	names = append(names, wal.SegmentFileName(1, 4, seg)+".partial")
	rep := &walinventory.Report{Timeline: 1, SegSize: seg, Backups: bs, History: wal.History{TLI: 1}, HistoryKnown: true, Inventory: inventory(t, names...)}
	rep.Incomplete = []string{"20261119T000000Z", "20261123T000000Z"}
	p, err := MakePlan(rep, Policy{KeepLast: 2, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if k := keeps(p); k != "DKK" {
		t.Fatalf("keep-last 2: %s", k)
	}
	// WAL before the oldest kept backup's start (segment 5) goes, with the
	// .partial of segment 4; the rest stays.
	if len(p.DeleteWAL) != 5 || p.KeepWALAt != wal.SegmentFileName(1, 5, seg) || p.KeptWAL != 6 {
		t.Fatalf("WAL: delete %d, keep from %s, kept %d", len(p.DeleteWAL), p.KeepWALAt, p.KeptWAL)
	}
	// Only the incomplete backup older than every kept one is a leftover
	// (the newer one may be running).
	if len(p.Leftovers) != 1 || p.Leftovers[0] != "20261119T000000Z" {
		t.Fatalf("leftovers %v", p.Leftovers)
	}
	// keep-within 60h: the window starts between backups 2 and 3; backup 2
	// is the newest before it.
	p, _ = MakePlan(rep, Policy{KeepWithin: 60 * time.Hour, Now: now})
	if k := keeps(p); k != "DKK" || !strings.Contains(p.Backups[1].Why, "before the window") {
		t.Fatalf("keep-within 60h: %s %q", k, p.Backups[1].Why)
	}
	// keep-within 1h: nothing inside; the newest is always kept.
	p, _ = MakePlan(rep, Policy{KeepWithin: time.Hour, Now: now})
	if k := keeps(p); k != "DDK" {
		t.Fatalf("keep-within 1h: %s", k)
	}
	if _, err := MakePlan(rep, Policy{Now: now}); err == nil {
		t.Fatal("no policy accepted")
	}
}

// TestAbandonedTimeline: after a PITR to a point in timeline 1 (switch at
// segment 7), backups on timeline 1 past the switch are on the abandoned
// branch: they never count as the newest of timeline 2.
func TestAbandonedTimeline(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	bs := []*catalog.Meta{
		meta("20261120T000000Z", 1, 2, 3, now.Add(-96*time.Hour)),
		meta("20261121T000000Z", 1, 5, 6, now.Add(-72*time.Hour)),
		meta("20261122T000000Z", 1, 9, 10, now.Add(-48*time.Hour)), // abandoned: after the switch
		meta("20261123T000000Z", 2, 12, 13, now.Add(-24*time.Hour)),
	}
	catalog.SortBackups(bs)
	h, _ := wal.ParseHistory(2, []byte("1\t0/7800000\tpitr\n"))
	rep := &walinventory.Report{Timeline: 2, SegSize: seg, Backups: bs, History: h, HistoryKnown: true, Inventory: inventory(t)}
	p, err := MakePlan(rep, Policy{KeepLast: 2, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	// Current timeline: backups 1, 2 and 4; keep-last 2 keeps 2 and 4.
	// Backup 3 is on the abandoned branch but newer than the oldest kept.
	if k := keeps(p); k != "DKKK" || !strings.Contains(p.Backups[2].Why, "abandoned") {
		t.Fatalf("keep-last 2 after a fork: %s (%q)", k, p.Backups[2].Why)
	}
	p, _ = MakePlan(rep, Policy{KeepLast: 1, Now: now})
	if k := keeps(p); k != "DDDK" || !strings.Contains(p.Backups[2].Why, "abandoned") {
		t.Fatalf("keep-last 1 after a fork: %s (%q)", k, p.Backups[2].Why)
	}
	// An unreadable history refuses to plan.
	rep.HistoryKnown = false
	if _, err := MakePlan(rep, Policy{KeepLast: 1, Now: now}); err == nil {
		t.Fatal("planned without the newest timeline's history")
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"14d": 14 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "36h": 36 * time.Hour, "90m": 90 * time.Minute} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "0d", "-1d", "14", "d", "1y"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestChainsKept: a kept incremental backup keeps its whole chain, with a
// reason that names it; a chain no kept backup needs goes, and deletion
// runs newest first.
func TestChainsKept(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	full1 := meta("20261118T000000Z", 1, 2, 3, now.Add(-144*time.Hour))
	inc1 := meta("20261119T000000Z", 1, 5, 6, now.Add(-120*time.Hour))
	inc1.Type, inc1.Parent = catalog.TypeIncr, full1.ID
	full2 := meta("20261120T000000Z", 1, 8, 9, now.Add(-96*time.Hour))
	inc2 := meta("20261121T000000Z", 1, 11, 12, now.Add(-72*time.Hour))
	inc2.Type, inc2.Parent = catalog.TypeIncr, full2.ID
	inc3 := meta("20261122T000000Z", 1, 14, 15, now.Add(-48*time.Hour))
	inc3.Type, inc3.Parent = catalog.TypeIncr, inc2.ID
	diff := meta("20261123T000000Z", 1, 17, 18, now.Add(-24*time.Hour))
	diff.Type, diff.Parent = catalog.TypeDiff, full2.ID
	rep := &walinventory.Report{Timeline: 1, SegSize: seg, Backups: []*catalog.Meta{full1, inc1, full2, inc2, inc3, diff},
		History: wal.History{TLI: 1}, HistoryKnown: true}
	p, err := MakePlan(rep, Policy{KeepLast: 2, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	// inc3 and diff by policy; full2 and inc2 as their chain.
	if k := keeps(p); k != "DDKKKK" {
		t.Fatalf("keep-last 2 with chains: %s", k)
	}
	if why := p.Backups[3].Why; !strings.Contains(why, "parent of kept backup "+inc3.ID) {
		t.Fatalf("inc2 kept because %q", why)
	}
	p, _ = MakePlan(rep, Policy{KeepLast: 1, Now: now})
	if k := keeps(p); k != "DDKDDK" {
		t.Fatalf("keep-last 1 with chains: %s", k)
	}
}

// TestGapRecordsGoWithTheirWAL: a gap record of archive-queue-max whose
// whole range is before the WAL cut is deleted with that WAL; one that
// reaches the kept WAL stays.
func TestGapRecordsGoWithTheirWAL(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	bs := []*catalog.Meta{
		meta("20261120T000000Z", 1, 2, 2, now.Add(-96*time.Hour)),
		meta("20261121T000000Z", 1, 6, 6, now.Add(-72*time.Hour)),
	}
	var names []string
	for i := uint64(1); i <= 10; i++ {
		if i != 3 && i != 4 && i != 7 {
			names = append(names, wal.SegmentFileName(1, i, seg))
		}
	}
	old := walgap.Range{Timeline: 1, First: wal.SegmentFileName(1, 3, seg), Last: wal.SegmentFileName(1, 4, seg)}
	kept := walgap.Range{Timeline: 1, First: wal.SegmentFileName(1, 7, seg), Last: wal.SegmentFileName(1, 7, seg)}
	rep := &walinventory.Report{Timeline: 1, SegSize: seg, Backups: bs, History: wal.History{TLI: 1}, HistoryKnown: true, Inventory: inventory(t, names...),
		DroppedRecords: []walgap.Record{{Range: old, Key: walgap.Key(old)}, {Range: kept, Key: walgap.Key(kept)}}}
	p, err := MakePlan(rep, Policy{KeepLast: 1, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.DeleteGaps) != 1 || p.DeleteGaps[0] != walgap.Key(old) {
		t.Fatalf("gap records deleted: %v, want only %s", p.DeleteGaps, walgap.Key(old))
	}
}
