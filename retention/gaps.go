package retention

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/walinventory"
)

// planGaps adds to the plan the gap records of archive-queue-max (gaps/)
// that describe only WAL the plan deletes: every segment of the range lies
// before the cut. A record of a range that reaches the cut or beyond stays,
// with the WAL around it.
func planGaps(plan *Plan, rep *walinventory.Report) {
	if !plan.haveWALCut || rep.SegSize == 0 {
		return
	}
	for _, r := range rep.DroppedRecords {
		if _, hi, ok := r.Segs(rep.SegSize); ok && hi < plan.walCut {
			plan.DeleteGaps = append(plan.DeleteGaps, r.Key)
		}
	}
}

// deleteGaps deletes the gap records of the plan, after the WAL they
// describe (an interrupted run leaves a record of a range that is gone,
// which only names it).
func deleteGaps(ctx context.Context, s storage.Store, plan *Plan, log *slog.Logger) error {
	for _, k := range plan.DeleteGaps {
		if err := s.Delete(ctx, k); err != nil {
			return fmt.Errorf("delete the gap record %s: %w", k, err)
		}
	}
	if len(plan.DeleteGaps) > 0 {
		log.Info("deleted gap records of archive-queue-max with their WAL", "records", len(plan.DeleteGaps))
	}
	return nil
}
