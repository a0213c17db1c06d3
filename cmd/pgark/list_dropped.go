package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/walgap"
	"github.com/pgark/pgark/walinventory"
)

// listDropped reads the gap records of archive-queue-max (one LIST of
// gaps/), merged into ranges. When there are any, it also walks the WAL
// (walinventory) for the window they leave: the window to the present, or
// the one that ends at the gap when no backup starts after it.
func listDropped(ctx context.Context, r *repo.Repo) ([]walgap.Range, *walinventory.Window, *walinventory.Window, error) {
	recs, err := walgap.List(ctx, r.Store)
	if err != nil || len(recs) == 0 {
		return []walgap.Range{}, nil, nil, err
	}
	rep, err := walinventory.Analyze(ctx, r, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	return nonNil(rep.Dropped), rep.Window, rep.WindowBeforeGap, nil
}

// printListDropped writes list's section on dropped WAL: point-in-time
// recovery cannot cross these ranges.
func printListDropped(w io.Writer, rs []walgap.Range, win, before *walinventory.Window) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintln(w)
	for _, d := range rs {
		fmt.Fprintf(w, "WAL DROPPED by archive-queue-max (recovery cannot cross it; a backup taken after it starts a new window): timeline %d, %s (%d segments)\n", d.Timeline, d.String(), d.Count)
	}
	switch {
	case win != nil:
		fmt.Fprintf(w, "recoverable window: from %s (backup %s) to the end of %s\n", win.FromTime.UTC().Format(time.RFC3339), win.FromBackup, win.ToSegment)
	case before != nil:
		fmt.Fprintf(w, "recoverable window: from %s (backup %s) to the end of %s, before the gap; take a backup\n", before.FromTime.UTC().Format(time.RFC3339), before.FromBackup, before.ToSegment)
	default:
		fmt.Fprintln(w, "recoverable window: NONE; take a backup")
	}
}
