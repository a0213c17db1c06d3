package retention

import (
	"fmt"
	"time"

	"github.com/pgark/pgark/catalog"
)

// LockedKept counts what a plan keeps because S3 Object Lock forbids its
// deletion yet. Deleting it would fail (or, on a versioned bucket, only
// hide it behind a delete marker while the locked version stays and is
// billed): retention keeps it visible instead and deletes it in the first
// run after its retention ends.
type LockedKept struct {
	Backups int
	WAL     int
	// Until is when the earliest of these retentions ends (zero: none).
	Until time.Time
}

func (l *LockedKept) add(until time.Time) {
	if l.Until.IsZero() || until.Before(l.Until) {
		l.Until = until
	}
}

// keepLocked keeps the backups that the policy would delete but whose
// objects are still under retention: a backup's last object (backup.json)
// is written at its stop time, so it is locked until its stop time plus
// the period.
func keepLocked(all []*catalog.Meta, keep map[*catalog.Meta]string, p Policy, plan *Plan) {
	if p.ObjectLock <= 0 {
		return
	}
	for _, b := range all {
		if _, ok := keep[b]; ok {
			continue
		}
		until := b.StopTime.Add(p.ObjectLock)
		if until.After(p.Now) {
			keep[b] = fmt.Sprintf("under Object Lock retention until about %s", until.UTC().Format(time.RFC3339))
			plan.Locked.Backups++
			plan.Locked.add(until)
		}
	}
}

// keepLockedWAL moves the WAL objects written less than the lock period
// ago from the deletions to the kept objects.
func keepLockedWAL(p Policy, plan *Plan) {
	if p.ObjectLock <= 0 {
		return
	}
	kept := plan.DeleteWAL[:0]
	for _, o := range plan.DeleteWAL {
		until := o.Info.ModTime.Add(p.ObjectLock)
		if !o.Info.ModTime.IsZero() && until.After(p.Now) {
			plan.KeptWAL++
			plan.Locked.WAL++
			plan.Locked.add(until)
			continue
		}
		kept = append(kept, o)
	}
	plan.DeleteWAL = kept
}
