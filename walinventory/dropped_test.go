package walinventory

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/wal"
	"github.com/pgark/pgark/walgap"
)

// putBackup writes a backup.json for a full backup from segment start to
// segment end of timeline 1.
func putBackup(t *testing.T, r *repo.Repo, id string, start, end uint64) {
	t.Helper()
	m := &catalog.Meta{Format: catalog.MetaFormat, ID: id, Type: catalog.TypeFull, StartTimeline: 1, EndTimeline: 1, WalSegmentBytes: seg,
		StartLSN: wal.LSN(start*seg + 40).String(), EndLSN: wal.LSN(end*seg + 100).String(),
		StartTime: time.Unix(int64(start), 0).UTC(), StopTime: time.Unix(int64(end), 0).UTC(),
		Manifest: catalog.ObjectRef{Key: catalog.ManifestKey(id), Bytes: 1, SHA256: strings.Repeat("a", 64)},
		Archives: []catalog.Archive{{Name: "base.tar"}}}
	if err := repo.PutJSON(context.Background(), r.Store, catalog.MetaKey(id), m); err != nil {
		t.Fatal(err)
	}
}

// TestDroppedGap: segments 6..8 were dropped under archive-queue-max and
// recorded in gaps/ (in two records of one outage). The gap is named as
// dropped, the dropped range is one, there is no window to the present but
// the backup before the gap reaches the end of segment 5; a backup after
// the gap gives a window again. A plain hole stays a plain gap.
func TestDroppedGap(t *testing.T) {
	r := testRepo(t)
	ctx := context.Background()
	for i := uint64(2); i <= 12; i++ {
		if i < 6 || i > 8 {
			put(t, r, wal.SegmentFileName(1, i, seg), nil)
		}
	}
	putBackup(t, r, "20261120T000000Z", 2, 3)
	for _, g := range [][2]uint64{{6, 7}, {8, 8}} {
		rg := walgap.Range{Timeline: 1, First: wal.SegmentFileName(1, g[0], seg), Last: wal.SegmentFileName(1, g[1], seg)}
		if err := repo.PutJSON(ctx, r.Store, walgap.Key(rg), rg); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := Analyze(ctx, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Gaps) != 1 || rep.Gaps[0].First != wal.SegmentFileName(1, 6, seg) || rep.Gaps[0].Count != 3 || rep.Gaps[0].Cause != CauseDropped {
		t.Fatalf("gaps %+v, want 6..8 dropped", rep.Gaps)
	}
	if len(rep.Dropped) != 1 || rep.Dropped[0].Count != 3 || len(rep.DroppedRecords) != 2 {
		t.Fatalf("dropped %+v, records %d", rep.Dropped, len(rep.DroppedRecords))
	}
	if rep.Window != nil || rep.WindowBeforeGap == nil || rep.WindowBeforeGap.FromBackup != "20261120T000000Z" || rep.WindowBeforeGap.ToSegment != wal.SegmentFileName(1, 5, seg) {
		t.Fatalf("window %+v, before the gap %+v", rep.Window, rep.WindowBeforeGap)
	}
	if !rep.Archived(wal.SegmentFileName(1, 5, seg)) || rep.Archived(wal.SegmentFileName(1, 6, seg)) {
		t.Fatal("Archived does not match the inventory")
	}
	if open, covered := rep.DroppedAfter(); len(open) != 1 || len(covered) != 0 {
		t.Fatalf("open %v covered %v", open, covered)
	}

	putBackup(t, r, "20261121T000000Z", 9, 10)
	if rep, err = Analyze(ctx, r, nil); err != nil {
		t.Fatal(err)
	}
	if rep.Window == nil || rep.Window.FromBackup != "20261121T000000Z" || rep.WindowBeforeGap != nil {
		t.Fatalf("after a backup past the gap: window %+v, before %+v", rep.Window, rep.WindowBeforeGap)
	}
	if open, covered := rep.DroppedAfter(); len(open) != 0 || len(covered) != 1 {
		t.Fatalf("after a backup past the gap: open %v covered %v", open, covered)
	}

	// A plain hole after it (segment 11 deleted): missing, no cause.
	if err := r.Store.Delete(ctx, wal.ObjectKey(mustName(t, wal.SegmentFileName(1, 11, seg)))); err != nil {
		t.Fatal(err)
	}
	rep, _ = Analyze(ctx, r, nil)
	if len(rep.Gaps) != 2 || rep.Gaps[1].Cause != "" || rep.Gaps[0].Cause != CauseDropped {
		t.Fatalf("gaps %+v", rep.Gaps)
	}
	if rep.WindowBeforeGap == nil || rep.WindowBeforeGap.FromBackup != "20261121T000000Z" || rep.WindowBeforeGap.ToSegment != wal.SegmentFileName(1, 10, seg) {
		t.Fatalf("window before the plain gap %+v", rep.WindowBeforeGap)
	}
}

func mustName(t *testing.T, s string) wal.Name {
	n, err := wal.ParseName(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDroppedGapTrust: with trusted-signers, only signed gap records
// explain a gap; an unsigned one is set aside (its gap reads as missing)
// and still listed for retention.
func TestDroppedGapTrust(t *testing.T) {
	r := testRepo(t)
	ctx := context.Background()
	kf := filepath.Join(t.TempDir(), "signing.key")
	pub, err := crypto.GenerateSigningKey(kf)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := crypto.LoadSigner(kf)
	if err != nil {
		t.Fatal(err)
	}
	if r.Trust, err = crypto.ParseTrusted(pub); err != nil {
		t.Fatal(err)
	}
	for i := uint64(2); i <= 12; i++ {
		if i != 4 && i != 8 {
			put(t, r, wal.SegmentFileName(1, i, seg), nil)
		}
	}
	putBackup(t, r, "20261120T000000Z", 2, 3)
	signed := walgap.Range{Timeline: 1, First: wal.SegmentFileName(1, 4, seg), Last: wal.SegmentFileName(1, 4, seg)}
	unsigned := walgap.Range{Timeline: 1, First: wal.SegmentFileName(1, 8, seg), Last: wal.SegmentFileName(1, 8, seg)}
	if err := repo.PutSignedJSON(ctx, r.Store, walgap.Key(signed), signed, signer); err != nil {
		t.Fatal(err)
	}
	if err := repo.PutJSON(ctx, r.Store, walgap.Key(unsigned), unsigned); err != nil {
		t.Fatal(err)
	}
	rep, err := Analyze(ctx, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Gaps) != 2 || rep.Gaps[0].Cause != CauseDropped || rep.Gaps[1].Cause != "" {
		t.Fatalf("gaps %+v: want 4 dropped, 8 missing", rep.Gaps)
	}
	if len(rep.Dropped) != 1 || rep.Dropped[0].First != signed.First || len(rep.UnverifiedDropped) != 1 || rep.UnverifiedDropped[0] != walgap.Key(unsigned) || len(rep.DroppedRecords) != 2 {
		t.Fatalf("dropped %+v, unverified %v, records %d", rep.Dropped, rep.UnverifiedDropped, len(rep.DroppedRecords))
	}
}
