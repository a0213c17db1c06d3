package walgap

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/mem"
	"github.com/pgark/pgark/wal"
)

const seg = 16 << 20

func dropped(tl uint32, no uint64) Dropped {
	return Dropped{Name: wal.SegmentFileName(tl, no, seg), SegSize: seg, DroppedAt: time.Unix(int64(no), 0).UTC(), QueueMax: 64 << 20}
}

func spans(rs []Range) [][3]any {
	var out [][3]any
	for _, r := range rs {
		out = append(out, [3]any{r.First, r.Last, r.Count})
	}
	return out
}

// TestMerge: consecutive segments become one range, across a log id
// boundary too (0x...FF then the next log id); holes, timelines and
// duplicates split or collapse as they should; non-segments are left out.
func TestMerge(t *testing.T) {
	per := wal.SegmentsPerLogID(seg) // 256 segments per log id
	ds := []Dropped{dropped(1, 9), dropped(1, 7), dropped(1, 8), dropped(1, 8), dropped(1, per-1), dropped(1, per),
		dropped(2, 8), {Name: "00000002.history", SegSize: seg}, dropped(1, 12)}
	got := spans(Merge(ds))
	want := [][3]any{
		{"000000010000000000000007", "000000010000000000000009", 3},
		{"00000001000000000000000C", "00000001000000000000000C", 1},
		{"0000000100000000000000FF", "000000010000000100000000", 2},
		{"000000020000000000000008", "000000020000000000000008", 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Merge = %v\nwant %v", got, want)
	}
	r := Merge(ds)[0]
	if !r.FirstDropped.Equal(time.Unix(7, 0)) || !r.LastDropped.Equal(time.Unix(9, 0)) || r.Cause != Cause || r.QueueMax != 64<<20 {
		t.Fatalf("range details %+v", r)
	}
}

// TestCoalesce: records of one outage written by separate flushes (touching
// or overlapping) read as one range; others stay apart.
func TestCoalesce(t *testing.T) {
	rs := append(Merge([]Dropped{dropped(1, 7), dropped(1, 8)}), Merge([]Dropped{dropped(1, 9), dropped(1, 10)})...)
	rs = append(rs, Merge([]Dropped{dropped(1, 8), dropped(1, 9)})...)
	rs = append(rs, Merge([]Dropped{dropped(1, 20)})...)
	got := spans(Coalesce(rs, seg))
	want := [][3]any{{"000000010000000000000007", "00000001000000000000000A", 4}, {"000000010000000000000014", "000000010000000000000014", 1}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Coalesce = %v\nwant %v", got, want)
	}
}

func TestKey(t *testing.T) {
	r := Merge([]Dropped{dropped(1, 7), dropped(1, 8)})[0]
	k := Key(r)
	if k != "gaps/00000001/000000010000000000000007-000000010000000000000008.json" {
		t.Fatalf("key %s", k)
	}
	back, ok := ParseKey(k)
	if !ok || back.First != r.First || back.Last != r.Last || back.Timeline != 1 {
		t.Fatalf("ParseKey(%s) = %+v, %v", k, back, ok)
	}
	for _, bad := range []string{
		"gaps/00000002/000000010000000000000007-000000010000000000000008.json", // wrong directory
		"gaps/00000001/000000010000000000000008-000000010000000000000007.json", // reversed
		"gaps/00000001/000000010000000000000007-000000020000000000000008.json", // two timelines
		"gaps/00000001/00000002.history-000000010000000000000008.json",
		"gaps/00000001/000000010000000000000007-000000010000000000000008.txt",
		"wal/00000001/000000010000000000000007-000000010000000000000008.json",
	} {
		if _, ok := ParseKey(bad); ok {
			t.Errorf("ParseKey accepted %s", bad)
		}
	}
}

// TestLocalAndFlush: drops are recorded locally (private, durable files),
// flushed to the repository as merged ranges, create-only (a flush
// interrupted before it forgot the local records is redone without error),
// leaving out a segment that is in the repository after all, and the local
// records go.
func TestLocalAndFlush(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	l := LocalFor(base, "s3://b/p@x", 42)
	if AnyLocal(base, "s3://b/p@x") {
		t.Fatal("AnyLocal before any drop")
	}
	if ds, err := l.Pending(); err != nil || len(ds) != 0 {
		t.Fatalf("pending on nothing: %v %v", ds, err)
	}
	for _, no := range []uint64{7, 8, 9, 12} {
		if err := l.Add(dropped(1, no)); err != nil {
			t.Fatal(err)
		}
	}
	if !AnyLocal(base, "s3://b/p@x") || AnyLocal(base, "s3://b/other@x") {
		t.Fatal("AnyLocal does not tell repositories apart")
	}
	if fi, err := os.Stat(l.Dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("record directory: %v %v", fi, err)
	}
	// A torn temporary file of a killed wal-push is ignored.
	os.WriteFile(filepath.Join(l.Dir, ".000000010000000000000010.tmp-1"), []byte("{"), 0o600)
	st := mem.New(t.Name())
	// An earlier interrupted flush wrote the first range already.
	first := Merge([]Dropped{dropped(1, 7), dropped(1, 8), dropped(1, 9)})[0]
	if err := st.Put(ctx, Key(first), strings.NewReader("{}"), storage.PutOptions{Size: 2}); err != nil {
		t.Fatal(err)
	}
	// Segment 12 reached the repository after all: it is not a loss.
	n12, _ := wal.ParseName(dropped(1, 12).Name)
	if err := st.Put(ctx, wal.ObjectKey(n12), strings.NewReader("x"), storage.PutOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	rs, err := Flush(ctx, st, nil, l)
	if err != nil {
		t.Fatal(err)
	}
	if got := spans(rs); !reflect.DeepEqual(got, [][3]any{{"000000010000000000000007", "000000010000000000000009", 3}}) {
		t.Fatalf("flushed %v", got)
	}
	recs, err := List(ctx, st)
	if err != nil || len(recs) != 1 || recs[0].Key != "gaps/00000001/000000010000000000000007-000000010000000000000009.json" {
		t.Fatalf("listed %+v, %v", recs, err)
	}
	if ds, _ := l.Pending(); len(ds) != 0 {
		t.Fatalf("local records left after the flush: %v", ds)
	}
	if rs, err := Flush(ctx, st, nil, l); err != nil || rs != nil {
		t.Fatalf("flush of nothing: %v %v", rs, err)
	}
}
