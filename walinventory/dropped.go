package walinventory

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/wal"
	"github.com/pgark/pgark/walgap"
)

// CauseDropped names a gap whose segments wal-push dropped under
// archive-queue-max (recorded in gaps/), rather than a plain loss.
const CauseDropped = "dropped by archive-queue-max"

// CausePartlyDropped names a gap of which only some segments were dropped
// under archive-queue-max; the others are missing for another reason.
const CausePartlyDropped = "partly dropped by archive-queue-max, partly missing"

// scanDropped lists the gap records (one LIST of gaps/) into the report.
// With trusted-signers, a record that is not signed by one of them is left
// out (its gap then reads as plainly missing): a record must not explain
// away a loss on its writer's word alone.
func (rep *Report) scanDropped(ctx context.Context, r *repo.Repo) error {
	all, err := walgap.List(ctx, r.Store)
	if err != nil {
		return err
	}
	var recs []walgap.Record
	for _, rec := range all {
		if err := r.VerifyJSONSignature(ctx, rec.Key); err != nil {
			if storage.IsNotFound(err) { // deleted since the listing
				continue
			}
			if errors.Is(err, crypto.ErrBadSignature) {
				rep.UnverifiedDropped = append(rep.UnverifiedDropped, rec.Key)
				continue
			}
			return fmt.Errorf("read the gap record %s: %w", rec.Key, err)
		}
		recs = append(recs, rec)
	}
	rep.DroppedRecords = all // retention deletes them all with their WAL
	rs := make([]walgap.Range, len(recs))
	for i, r := range recs {
		rs[i] = r.Range
	}
	rep.Dropped = walgap.Coalesce(rs, rep.SegSize)
	return nil
}

// AddDropped adds ranges of dropped segments (from the repository's records,
// or the local records of wal-push that are not in the repository yet) to
// the report: Dropped is their union, the gaps they explain name the cause,
// and a window that ends at a gap is computed when no backup starts after
// the last gap.
func (rep *Report) AddDropped(rs []walgap.Range) {
	if rep.SegSize == 0 || len(rs) == 0 {
		return
	}
	rep.Dropped = walgap.Coalesce(append(append([]walgap.Range(nil), rep.Dropped...), rs...), rep.SegSize)
	rep.annotateGaps()
}

// annotateGaps names the cause of the gaps that dropped ranges explain.
func (rep *Report) annotateGaps() {
	for i := range rep.Gaps {
		g := &rep.Gaps[i]
		lo, hi, ok := walgap.Range{First: g.First, Last: g.Last}.Segs(rep.SegSize)
		if !ok {
			continue
		}
		var covered uint64
		for _, d := range rep.Dropped {
			dlo, dhi, ok := d.Segs(rep.SegSize)
			if !ok || d.Timeline != g.Timeline || dhi < lo || dlo > hi {
				continue
			}
			covered += min(hi, dhi) - max(lo, dlo) + 1
		}
		switch {
		case covered == 0:
			g.Cause = ""
		case covered >= hi-lo+1:
			g.Cause = CauseDropped
		default:
			g.Cause = CausePartlyDropped
		}
	}
}

// DroppedAfter are the dropped ranges that no backup started after: they
// cut the recoverable window short until a backup is taken.
func (rep *Report) DroppedAfter() (open, covered []walgap.Range) {
	for _, d := range rep.Dropped {
		_, hi, ok := d.Segs(rep.SegSize)
		if !ok {
			continue
		}
		after := false
		for _, b := range rep.Backups {
			if uint64(b.Start())/uint64(rep.SegSize) > hi && b.EndTimeline >= d.Timeline {
				after = true
				break
			}
		}
		if after {
			covered = append(covered, d)
		} else {
			open = append(open, d)
		}
	}
	return open, covered
}

// windowBeforeGap is the longest window that a gap cuts short: from the
// oldest backup whose WAL is unbroken from its start to its end and on to
// the segment before the first gap after it, to that segment. It is set
// only when gaps exist; nil when no backup reaches a gap.
func (rep *Report) windowBeforeGap(l *catalog.Listing, onPath func(*catalog.Meta) bool) {
	if len(rep.Gaps) == 0 || rep.SegSize == 0 || rep.Window != nil {
		return
	}
	type span struct{ lo, hi uint64 }
	var gaps []span
	for _, g := range rep.Gaps {
		if lo, hi, ok := (walgap.Range{First: g.First, Last: g.Last}).Segs(rep.SegSize); ok {
			gaps = append(gaps, span{lo, hi})
		}
	}
	var best *Window
	var bestEnd uint64
	for _, b := range l.Backups {
		if !onPath(b) {
			continue
		}
		if _, err := catalog.Chain(b, l.Lookup); err != nil {
			continue
		}
		bs, be := uint64(b.Start())/uint64(rep.SegSize), uint64(b.End())/uint64(rep.SegSize)
		cut, found := uint64(0), false
		for _, g := range gaps {
			if g.hi >= bs && (!found || g.lo < cut) {
				cut, found = g.lo, true
			}
		}
		if !found || cut <= be || cut == 0 {
			continue // no gap after it, or its own WAL is broken
		}
		end := cut - 1
		if best != nil && end <= bestEnd {
			continue
		}
		o, ok := rep.Inventory.Segments[rep.TimelineOf(end)][end]
		if !ok {
			continue
		}
		best, bestEnd = &Window{FromBackup: b.ID, FromTime: b.StopTime, FromLSN: b.EndLSN,
			ToSegment: rep.SegmentName(end), ToLSN: wal.LSN((end + 1) * uint64(rep.SegSize)).String(), ToArchivedAt: o.Info.ModTime}, end
	}
	rep.WindowBeforeGap = best
}

// DroppedString names dropped ranges for messages: "A..B (n segments)".
func DroppedString(rs []walgap.Range) string {
	s := ""
	for i, r := range rs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s (%d %s)", r.String(), r.Count, map[bool]string{true: "segment", false: "segments"}[r.Count == 1])
	}
	return s
}

// Archived reports whether the inventory holds the segment name.
func (rep *Report) Archived(name string) bool {
	n, err := wal.ParseName(name)
	if err != nil || rep.Inventory == nil || n.Kind != wal.KindSegment {
		return false
	}
	no, ok := n.SegNo(rep.SegSize)
	if !ok {
		return false
	}
	_, ok = rep.Inventory.Segments[n.Timeline][no]
	return ok
}
