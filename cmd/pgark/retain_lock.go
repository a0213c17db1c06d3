package main

import (
	"fmt"
	"io"
	"time"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/retention"
)

// retainLockJSON is what retain keeps because of Object Lock.
type retainLockJSON struct {
	Mode          string     `json:"mode"`
	Days          int        `json:"days"`
	KeptBackups   int        `json:"kept_backups"`
	KeptWAL       int        `json:"kept_wal"`
	EarliestUntil *time.Time `json:"earliest_expiry,omitempty"`
}

func retainLock(r *repo.Repo, plan *retention.Plan) *retainLockJSON {
	l := r.Config.ObjectLock
	if l == nil {
		return nil
	}
	out := &retainLockJSON{Mode: l.Mode, Days: l.Days, KeptBackups: plan.Locked.Backups, KeptWAL: plan.Locked.WAL}
	if !plan.Locked.Until.IsZero() {
		u := plan.Locked.Until.UTC()
		out.EarliestUntil = &u
	}
	return out
}

func printRetainLock(w io.Writer, o *retainLockJSON) {
	if o == nil || (o.KeptBackups == 0 && o.KeptWAL == 0) {
		return
	}
	fmt.Fprintf(w, "object lock (%s, %d days): kept %d backups and %d WAL objects that the policy would delete but are still retained; the earliest retention ends about %s, after which retain deletes them\n",
		o.Mode, o.Days, o.KeptBackups, o.KeptWAL, o.EarliestUntil.Format(time.RFC3339))
}
