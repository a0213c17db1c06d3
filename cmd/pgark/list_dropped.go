package main

import (
	"context"
	"fmt"
	"io"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/walgap"
)

// listDropped reads the gap records of archive-queue-max (one LIST of
// gaps/), merged into ranges.
func listDropped(ctx context.Context, r *repo.Repo) ([]walgap.Range, error) {
	recs, err := walgap.List(ctx, r.Store)
	if err != nil || len(recs) == 0 {
		return []walgap.Range{}, err
	}
	c, bound, err := r.Cluster(ctx)
	if err != nil || !bound {
		return []walgap.Range{}, err
	}
	rs := make([]walgap.Range, len(recs))
	for i, rec := range recs {
		rs[i] = rec.Range
	}
	return walgap.Coalesce(rs, c.WalSegmentBytes), nil
}

// printListDropped writes list's section on dropped WAL: point-in-time
// recovery cannot cross these ranges.
func printListDropped(w io.Writer, rs []walgap.Range) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintln(w)
	for _, d := range rs {
		fmt.Fprintf(w, "WAL DROPPED by archive-queue-max (recovery cannot cross it; a backup taken after it starts a new window): timeline %d, %s (%d segments)\n", d.Timeline, d.String(), d.Count)
	}
}
