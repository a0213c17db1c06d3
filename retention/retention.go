// Package retention decides which backups and WAL a retention policy keeps,
// and deletes the rest in an order that leaves a usable repository whenever
// it stops.
package retention

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/walinventory"
)

// Policy says what to keep. With both set, a backup either keeps is kept.
type Policy struct {
	KeepLast   int           // the newest N backups on the current timeline (0: not set)
	KeepWithin time.Duration // everything needed to recover to any point this far back (0: not set)
	Now        time.Time
	// ObjectLock is the repository's S3 Object Lock period (0: none): what
	// was written less than this long ago cannot be deleted yet, so it is
	// kept and reported instead (see lock.go).
	ObjectLock time.Duration
}

func (p Policy) String() string {
	var parts []string
	if p.KeepLast > 0 {
		parts = append(parts, fmt.Sprintf("keep-last %d", p.KeepLast))
	}
	if p.KeepWithin > 0 {
		parts = append(parts, "keep-within "+FormatDuration(p.KeepWithin))
	}
	return strings.Join(parts, ", ")
}

// Decision is what happens to one backup, and why.
type Decision struct {
	Backup *catalog.Meta
	Keep   bool
	Why    string
}

// Plan is what a retention run deletes and keeps.
type Plan struct {
	Policy    Policy
	Timeline  uint32
	Backups   []Decision // oldest first
	Leftovers []string   // incomplete backups older than every kept one: deleted
	KeepWALAt string     // the first segment kept (the oldest kept backup's start); "" when no WAL is deleted
	DeleteWAL []walinventory.Object
	KeptWAL   int
	// Locked says what the plan keeps only because it is still under
	// Object Lock retention.
	Locked     LockedKept
	walCut     uint64
	haveWALCut bool

	// DeleteGaps are the keys of the gap records (archive-queue-max) of
	// WAL that is deleted.
	DeleteGaps []string
}

// MakePlan applies the policy to the repository's state. Backups are ordered
// by their recorded LSNs and times, never by names, and only backups on the
// newest timeline's history count as its newest; backups on abandoned
// timelines are kept while they are newer than the oldest kept backup or
// inside the keep-within window.
func MakePlan(rep *walinventory.Report, p Policy) (*Plan, error) {
	if p.KeepLast <= 0 && p.KeepWithin <= 0 {
		return nil, fmt.Errorf("no retention policy: set keep-last and/or keep-within (on the command line or in the config file)")
	}
	if rep.Timeline > 1 && !rep.HistoryKnown {
		return nil, fmt.Errorf("the history of timeline %d cannot be read (missing, or encrypted without its plaintext switch points: give age-identity-file): retention needs it to tell abandoned timelines apart", rep.Timeline)
	}
	plan := &Plan{Policy: p, Timeline: rep.Timeline}
	all := rep.Backups // oldest first
	keep := make(map[*catalog.Meta]string)
	var current []*catalog.Meta
	for _, b := range all {
		if rep.History.Contains(b.EndTimeline, b.End()) {
			current = append(current, b)
		}
	}
	if n := len(current); n > 0 {
		keep[current[n-1]] = fmt.Sprintf("the newest backup on timeline %d", rep.Timeline)
	}
	if n := len(all); n > 0 {
		if _, ok := keep[all[n-1]]; !ok {
			keep[all[n-1]] = "the newest backup"
		}
	}
	if p.KeepLast > 0 {
		for i := max(0, len(current)-p.KeepLast); i < len(current); i++ {
			if _, ok := keep[current[i]]; !ok {
				keep[current[i]] = fmt.Sprintf("one of the %d newest on timeline %d (keep-last)", p.KeepLast, rep.Timeline)
			}
		}
	}
	var windowStart time.Time
	if p.KeepWithin > 0 {
		windowStart = p.Now.Add(-p.KeepWithin)
		var before *catalog.Meta
		for _, b := range current {
			if !b.StopTime.Before(windowStart) {
				if _, ok := keep[b]; !ok {
					keep[b] = "consistent within the keep-within window"
				}
			} else {
				before = b
			}
		}
		if before != nil {
			if _, ok := keep[before]; !ok {
				keep[before] = fmt.Sprintf("the newest backup before the window starts (%s): needed to recover to its first moment", windowStart.UTC().Format(time.RFC3339))
			}
		}
	}
	// The oldest kept backup on the current timeline bounds the others.
	var oldestKept *catalog.Meta
	for _, b := range current {
		if _, ok := keep[b]; ok {
			oldestKept = b
			break
		}
	}
	for _, b := range all {
		if _, ok := keep[b]; ok || rep.History.Contains(b.EndTimeline, b.End()) {
			continue
		}
		switch {
		case !windowStart.IsZero() && !b.StopTime.Before(windowStart):
			keep[b] = fmt.Sprintf("on abandoned timeline %d, within the keep-within window", b.EndTimeline)
		case oldestKept != nil && b.StopTime.After(oldestKept.StopTime):
			keep[b] = fmt.Sprintf("on abandoned timeline %d, newer than the oldest kept backup", b.EndTimeline)
		}
	}
	keepLocked(all, keep, p, plan)
	// An incremental backup is restored from its whole chain: its parents
	// stay while it does.
	byID := make(map[string]*catalog.Meta, len(all))
	for _, b := range all {
		byID[b.ID] = b
	}
	for i := len(all) - 1; i >= 0; i-- {
		b := all[i]
		if _, ok := keep[b]; !ok {
			continue
		}
		for child, n := b, 0; child.Parent != "" && n < catalog.MaxChain; n++ {
			parent := byID[child.Parent]
			if parent == nil {
				break // a broken chain: verify reports it
			}
			if _, ok := keep[parent]; !ok {
				keep[parent] = fmt.Sprintf("the parent of kept backup %s (incremental backups need their chain)", child.ID)
			}
			child = parent
		}
	}
	for _, b := range all {
		why, ok := keep[b]
		if !ok {
			why = "outside the policy (" + p.String() + ")"
			if !rep.History.Contains(b.EndTimeline, b.End()) {
				why = fmt.Sprintf("on abandoned timeline %d and older than every kept backup", b.EndTimeline)
			}
		}
		plan.Backups = append(plan.Backups, Decision{Backup: b, Keep: ok, Why: why})
	}

	// WAL: everything before the oldest kept backup's start segment goes,
	// on every timeline; history files always stay.
	var oldestStart time.Time
	haveKept := false
	for _, d := range plan.Backups {
		if !d.Keep {
			continue
		}
		seg := uint64(d.Backup.Start()) / uint64(d.Backup.WalSegmentBytes)
		if !plan.haveWALCut || seg < plan.walCut {
			plan.walCut, plan.haveWALCut = seg, true
		}
		if !haveKept || d.Backup.StartTime.Before(oldestStart) {
			oldestStart, haveKept = d.Backup.StartTime, true
		}
	}
	if inv := rep.Inventory; inv != nil && plan.haveWALCut {
		plan.KeepWALAt = rep.SegmentName(plan.walCut)
		consider := func(o walinventory.Object) {
			no, ok := o.Name.SegNo(inv.SegSize)
			if ok && no < plan.walCut {
				plan.DeleteWAL = append(plan.DeleteWAL, o)
			} else {
				plan.KeptWAL++
			}
		}
		for _, segs := range inv.Segments {
			for _, o := range segs {
				consider(o)
			}
		}
		for _, o := range inv.Partials {
			consider(o)
		}
		for _, o := range inv.Backups {
			consider(o)
		}
		keepLockedWAL(p, plan)
		sort.Slice(plan.DeleteWAL, func(i, j int) bool { return plan.DeleteWAL[i].Info.Key < plan.DeleteWAL[j].Info.Key })
	}
	planGaps(plan, rep) // archive-queue-max gap records go with their WAL
	// Incomplete backups older than every kept one are what an interrupted
	// backup or retention run left (a running backup is newer than all).
	if haveKept {
		for _, id := range rep.Incomplete {
			t, err := time.Parse("20060102T150405Z", id)
			if err == nil && t.Before(oldestStart.Truncate(time.Second)) {
				plan.Leftovers = append(plan.Leftovers, id)
			}
		}
	}
	return plan, nil
}

// Apply deletes what the plan does not keep: each backup's completion marker
// (backup.json) first, so that an interrupted run never leaves a backup that
// looks complete but is not, then its objects, then the leftovers of
// incomplete backups, then the WAL.
func Apply(ctx context.Context, s storage.Store, plan *Plan, log *slog.Logger) error {
	var runs []run
	// Newest first: an interrupted run never leaves a listed incremental
	// backup whose parent it already deleted.
	for i := len(plan.Backups) - 1; i >= 0; i-- {
		d := plan.Backups[i]
		if !d.Keep {
			id := d.Backup.ID
			runs = append(runs, run{what: "backup", id: id, prefix: catalog.Prefix + id + "/", first: catalog.MetaKey(id),
				logMsg: "deleted backup", logArgs: []any{"backup", id, "why", d.Why}})
		}
	}
	for _, id := range plan.Leftovers {
		runs = append(runs, run{what: "incomplete backup", id: id, prefix: catalog.Prefix + id + "/",
			logMsg: "deleted incomplete backup", logArgs: []any{"backup", id}})
	}
	if err := deleteRuns(ctx, s, runs, log); err != nil {
		return err
	}
	for i, o := range plan.DeleteWAL {
		if err := s.Delete(ctx, o.Info.Key); err != nil {
			return fmt.Errorf("delete %s: %w", o.Name.Raw, err)
		}
		if (i+1)%1000 == 0 {
			log.Info("deleting WAL", "done", i+1, "of", len(plan.DeleteWAL))
		}
	}
	if len(plan.DeleteWAL) > 0 {
		log.Info("deleted WAL", "objects", len(plan.DeleteWAL), "kept_from", plan.KeepWALAt)
	}
	return deleteGaps(ctx, s, plan, log)
}

// ParseDuration parses a retention period: Go durations (36h, 90m) and
// whole days or weeks (14d, 2w).
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	for suf, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if v, ok := strings.CutSuffix(s, suf); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				break
			}
			return time.Duration(n) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a period such as 14d, 2w or 36h", s)
	}
	return d, nil
}

// FormatDuration prints whole days as "14d", other periods as Go does.
func FormatDuration(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}
