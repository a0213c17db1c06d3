package asof

import (
	"testing"
	"time"
)

// The version current at a time: the newest at or before it; a delete
// marker then means "did not exist"; on equal (whole-second) times the
// store's current version wins.
func TestPicker(t *testing.T) {
	base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	vs := []Version{
		{Key: "k", ID: "v3", ModTime: at(30), Latest: true},
		{Key: "k", ID: "v2", ModTime: at(20)},
		{Key: "k", ID: "v1", ModTime: at(10)},
		{Key: "k", ID: "dm", ModTime: at(25), DeleteMarker: true},
	}
	for _, c := range []struct {
		t    int
		want string // "" = not found
	}{{5, ""}, {10, "v1"}, {15, "v1"}, {20, "v2"}, {24, "v2"}, {25, ""}, {29, ""}, {30, "v3"}, {99, "v3"}} {
		p := picker{at: at(c.t)}
		for _, v := range vs {
			p.add(v)
		}
		got, ok := p.result()
		if (c.want == "") == ok || (ok && got.ID != c.want) {
			t.Errorf("at +%ds: %q (found %v), want %q", c.t, got.ID, ok, c.want)
		}
	}
	p := picker{at: at(40)}
	p.add(Version{ID: "old", ModTime: at(40)})
	p.add(Version{ID: "cur", ModTime: at(40), Latest: true})
	p.add(Version{ID: "other", ModTime: at(40)})
	if got, _ := p.result(); got.ID != "cur" {
		t.Errorf("equal times: %q, want the current version", got.ID)
	}
}
