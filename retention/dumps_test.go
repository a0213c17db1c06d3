package retention

import (
	"slices"
	"testing"
	"time"

	"github.com/pgark/pgark/dump"
)

func TestMakeDumpPlan(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	var l dump.Listing
	for _, d := range []int{10, 8, 5, 3, 1} { // days ago, oldest first
		st := now.Add(-time.Duration(d) * 24 * time.Hour)
		l.Dumps = append(l.Dumps, &dump.Meta{ID: dump.NewID(st), StartTime: st})
	}
	l.Failed = []dump.Failed{{ID: dump.NewID(now.Add(-4 * 24 * time.Hour))}, {ID: dump.NewID(now.Add(-time.Hour))}}
	l.Incomplete = []string{dump.NewID(now.Add(-9 * 24 * time.Hour)), dump.NewID(now.Add(-time.Minute))}
	kept := func(p *DumpPlan) []string {
		var k []string
		for _, d := range p.Dumps {
			if d.Keep {
				k = append(k, d.Dump.ID)
			}
		}
		return k
	}
	ids := func(days ...int) []string {
		var out []string
		for _, d := range days {
			out = append(out, dump.NewID(now.Add(-time.Duration(d)*24*time.Hour)))
		}
		return out
	}

	p, err := MakeDumpPlan(&l, DumpPolicy{KeepLast: 2, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if got := kept(p); !slices.Equal(got, ids(3, 1)) {
		t.Errorf("keep-dumps 2 keeps %v", got)
	}
	// Failed and incomplete runs older than the newest complete one go;
	// newer ones (one may be running) stay.
	if want := []string{dump.NewID(now.Add(-4 * 24 * time.Hour)), dump.NewID(now.Add(-9 * 24 * time.Hour))}; !slices.Equal(p.Leftovers, want) {
		t.Errorf("leftovers %v, want %v", p.Leftovers, want)
	}

	p, _ = MakeDumpPlan(&l, DumpPolicy{KeepWithin: 6 * 24 * time.Hour, Now: now})
	if got := kept(p); !slices.Equal(got, ids(5, 3, 1)) {
		t.Errorf("keep-dumps-within 6d keeps %v", got)
	}
	p, _ = MakeDumpPlan(&l, DumpPolicy{KeepLast: 1, KeepWithin: 4 * 24 * time.Hour, Now: now})
	if got := kept(p); !slices.Equal(got, ids(3, 1)) {
		t.Errorf("union keeps %v", got)
	}
	// The newest complete dump is always kept, even outside the window.
	p, _ = MakeDumpPlan(&l, DumpPolicy{KeepWithin: time.Hour, Now: now})
	if got := kept(p); !slices.Equal(got, ids(1)) {
		t.Errorf("keep-dumps-within 1h keeps %v", got)
	}
	if p.Dumps[len(p.Dumps)-1].Why != "the newest complete dump" {
		t.Errorf("why: %q", p.Dumps[len(p.Dumps)-1].Why)
	}
	if _, err := MakeDumpPlan(&l, DumpPolicy{Now: now}); err == nil {
		t.Error("an empty policy was accepted")
	}
	// No complete dump: nothing is deleted, failed runs included.
	p, _ = MakeDumpPlan(&dump.Listing{Failed: l.Failed}, DumpPolicy{KeepLast: 1, Now: now})
	if len(p.Dumps) != 0 || len(p.Leftovers) != 0 {
		t.Errorf("plan without complete dumps: %+v", p)
	}
}
