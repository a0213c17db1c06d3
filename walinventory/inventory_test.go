package walinventory

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/local"
	"github.com/pgark/pgark/wal"
)

const seg = 16 << 20

func testRepo(t *testing.T) *repo.Repo {
	st, err := local.New(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cfg, err := repo.Init(ctx, st, repo.InitOptions{Compression: "zstd", Level: 3, WriteMode: repo.WriteLink})
	if err != nil {
		t.Fatal(err)
	}
	r := &repo.Repo{Store: st, Config: *cfg}
	if err := r.BindCluster(ctx, 42, seg, "test"); err != nil {
		t.Fatal(err)
	}
	return r
}

func put(t *testing.T, r *repo.Repo, name string, meta map[string]string) {
	n, err := wal.ParseName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Store.Put(context.Background(), wal.ObjectKey(n), strings.NewReader("x"), storage.PutOptions{Size: 1, Meta: meta}); err != nil {
		t.Fatal(err)
	}
}

// TestContinuityAcrossSwitch: timeline 2 forked inside segment 7 of
// timeline 1. Segment 7 is read from timeline 2 and timeline 1's later
// segments are abandoned: neither is a gap. A real hole is one, and a jump
// in the numbering is one range, found without walking every number.
func TestContinuityAcrossSwitch(t *testing.T) {
	r := testRepo(t)
	for i := uint64(1); i <= 9; i++ {
		if i != 4 {
			put(t, r, wal.SegmentFileName(1, i, seg), nil)
		}
	}
	put(t, r, wal.SegmentFileName(1, 7, seg)+".partial", nil)
	put(t, r, "00000002.history", map[string]string{wal.MetaTimelines: "1:0/7800000"})
	for i := uint64(7); i <= 12; i++ {
		put(t, r, wal.SegmentFileName(2, i, seg), nil)
	}
	rep, err := Analyze(context.Background(), r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Timeline != 2 || !rep.HistoryKnown || len(rep.MissingHistories) != 0 {
		t.Fatalf("timeline %d, history known %v, missing %v", rep.Timeline, rep.HistoryKnown, rep.MissingHistories)
	}
	if len(rep.Gaps) != 1 || rep.Gaps[0].First != wal.SegmentFileName(1, 4, seg) || rep.Gaps[0].Count != 1 {
		t.Fatalf("gaps %+v, want exactly segment 4 of timeline 1", rep.Gaps)
	}
	if rep.From != wal.SegmentFileName(1, 1, seg) || rep.To != wal.SegmentFileName(2, 12, seg) || rep.Checked != 12 {
		t.Fatalf("walked %s..%s (%d)", rep.From, rep.To, rep.Checked)
	}
	if rep.Window != nil {
		t.Fatalf("a window without backups: %+v", rep.Window)
	}

	// A stray far segment: one gap range, at once.
	put(t, r, wal.SegmentFileName(2, 1<<30, seg), nil)
	start := time.Now()
	rep, err = Analyze(context.Background(), r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > time.Minute || len(rep.Gaps) != 2 || rep.Gaps[1].First != wal.SegmentFileName(2, 13, seg) || rep.Gaps[1].Count != 1<<30-13 {
		t.Fatalf("after a jump: %+v in %s", rep.Gaps, time.Since(start))
	}

	// Timeline 3 with segments but no history file.
	put(t, r, wal.SegmentFileName(3, 1<<30+1, seg), nil)
	rep, _ = Analyze(context.Background(), r, nil)
	if len(rep.MissingHistories) != 1 || rep.MissingHistories[0] != 3 {
		t.Fatalf("missing histories %v", rep.MissingHistories)
	}
}
