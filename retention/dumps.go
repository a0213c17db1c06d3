package retention

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pgark/pgark/dump"
	"github.com/pgark/pgark/storage"
)

// DumpPolicy says which logical dump runs to keep. With both set, a run
// either keeps is kept. The newest complete run is always kept.
type DumpPolicy struct {
	KeepLast   int           // the newest N complete runs (0: not set)
	KeepWithin time.Duration // runs started this far back or later (0: not set)
	Now        time.Time
	// ObjectLock is the repository's Object Lock period (0: none): a run
	// that ended less than this long ago is still retained, so it is kept.
	ObjectLock time.Duration
}

// Set reports whether the policy says anything.
func (p DumpPolicy) Set() bool { return p.KeepLast > 0 || p.KeepWithin > 0 }

func (p DumpPolicy) String() string {
	var parts []string
	if p.KeepLast > 0 {
		parts = append(parts, fmt.Sprintf("keep-dumps %d", p.KeepLast))
	}
	if p.KeepWithin > 0 {
		parts = append(parts, "keep-dumps-within "+FormatDuration(p.KeepWithin))
	}
	return strings.Join(parts, ", ")
}

// DumpDecision is what happens to one complete run, and why.
type DumpDecision struct {
	Dump *dump.Meta
	Keep bool
	Why  string
}

// DumpPlan is what a retention run deletes and keeps among the dumps.
type DumpPlan struct {
	Policy DumpPolicy
	Dumps  []DumpDecision // oldest first
	// Leftovers are failed and incomplete runs older than the newest
	// complete one: deleted (a newer one may still be running).
	Leftovers []string
}

// MakeDumpPlan applies the policy to the listed runs.
func MakeDumpPlan(l *dump.Listing, p DumpPolicy) (*DumpPlan, error) {
	if !p.Set() {
		return nil, fmt.Errorf("no dump retention policy: set keep-dumps and/or keep-dumps-within")
	}
	plan := &DumpPlan{Policy: p}
	n := len(l.Dumps)
	for i, m := range l.Dumps {
		d := DumpDecision{Dump: m, Why: "outside the policy (" + p.String() + ")"}
		switch {
		case i == n-1:
			d.Keep, d.Why = true, "the newest complete dump"
		case p.KeepLast > 0 && i >= n-p.KeepLast:
			d.Keep, d.Why = true, fmt.Sprintf("one of the %d newest (keep-dumps)", p.KeepLast)
		case p.KeepWithin > 0 && !m.StartTime.Before(p.Now.Add(-p.KeepWithin)):
			d.Keep, d.Why = true, "started within the keep-dumps-within window"
		case p.ObjectLock > 0 && m.EndTime.Add(p.ObjectLock).After(p.Now):
			d.Keep, d.Why = true, "under Object Lock retention until about "+m.EndTime.Add(p.ObjectLock).UTC().Format(time.RFC3339)
		}
		plan.Dumps = append(plan.Dumps, d)
	}
	if n > 0 {
		newest := l.Dumps[n-1].ID
		for _, f := range l.Failed {
			if f.ID < newest {
				plan.Leftovers = append(plan.Leftovers, f.ID)
			}
		}
		for _, id := range l.Incomplete {
			if id < newest {
				plan.Leftovers = append(plan.Leftovers, id)
			}
		}
	}
	return plan, nil
}

// ApplyDumps deletes what the plan does not keep: each run's completion
// marker (dump.json) first, so that an interrupted run never leaves a dump
// that looks complete but is not, then its objects; then the leftovers of
// failed and incomplete runs (their failed.json last).
func ApplyDumps(ctx context.Context, s storage.Store, plan *DumpPlan, log *slog.Logger) error {
	var runs []run
	for _, d := range plan.Dumps {
		if !d.Keep {
			id := d.Dump.ID
			runs = append(runs, run{what: "dump", id: id, prefix: dump.Prefix + id + "/", first: dump.MetaKey(id),
				logMsg: "deleted dump", logArgs: []any{"dump", id, "why", d.Why}})
		}
	}
	for _, id := range plan.Leftovers {
		runs = append(runs, run{what: "failed dump", id: id, prefix: dump.Prefix + id + "/", last: dump.FailedKey(id),
			logMsg: "deleted failed or incomplete dump", logArgs: []any{"dump", id}})
	}
	return deleteRuns(ctx, s, runs, log)
}
