package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
)

// verifyLockJSON is verify's Object Lock check.
type verifyLockJSON struct {
	Mode     string              `json:"mode"`
	Days     int                 `json:"days"`
	Checked  int                 `json:"checked"`
	Problems []verifyLockProblem `json:"problems"`
}

type verifyLockProblem struct {
	Key         string     `json:"key"`
	Written     time.Time  `json:"written"`
	RetainUntil *time.Time `json:"retain_until"` // null: no retention
	Problem     string     `json:"problem"`
}

// lockSlack absorbs the difference between the writer's clock (which sets
// the retain-until date) and the store's (which sets the object's time).
const lockSlack = 10 * time.Minute

// lockCheckJobs is how many HEADs the check has in flight.
const lockCheckJobs = 16

// verifyRetention checks, with one HEAD per object (lockCheckJobs at
// once), that every object but
// the repository lock carries a retention until at least its write time
// plus the repository's Object Lock period: an object written by an old
// pgark, by hand or by a writer that dropped the headers has none, and a
// retention shortened in governance mode shows too. Nil when the
// repository records no Object Lock.
func verifyRetention(ctx context.Context, r *repo.Repo) (*verifyLockJSON, error) {
	l := r.Config.ObjectLock
	if l == nil {
		return nil, nil
	}
	out := &verifyLockJSON{Mode: l.Mode, Days: l.Days, Problems: []verifyLockProblem{}}
	var keys []storage.ObjectInfo
	err := r.Store.List(ctx, "", func(oi storage.ObjectInfo) error {
		for _, p := range repo.LockExempt {
			if strings.HasPrefix(oi.Key, p) {
				return nil
			}
		}
		keys = append(keys, oi)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", r.Store, err)
	}
	// HEADs in parallel, each result in its key's slot: the report stays
	// in key order.
	type result struct {
		info  storage.ObjectInfo
		found bool
		err   error
	}
	res := make([]result, len(keys))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(lockCheckJobs, len(keys)) {
		wg.Go(func() {
			for i := range next {
				info, err := r.Store.Stat(ctx, keys[i].Key)
				switch {
				case storage.IsNotFound(err): // deleted since the listing (retain)
				case err != nil:
					res[i].err = err
				default:
					res[i] = result{info: info, found: true}
				}
			}
		})
	}
	for i := range keys {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for i, oi := range keys {
		if res[i].err != nil {
			return nil, fmt.Errorf("object lock check: %w", res[i].err)
		}
		if !res[i].found {
			continue
		}
		info := res[i].info
		out.Checked++
		written := info.ModTime
		if written.IsZero() {
			written = oi.ModTime
		}
		want := written.Add(l.Period() - lockSlack)
		switch {
		case info.RetainUntil.IsZero():
			out.Problems = append(out.Problems, verifyLockProblem{Key: oi.Key, Written: written,
				Problem: "no Object Lock retention: it can be deleted or overwritten"})
		case info.RetainUntil.Before(want):
			until := info.RetainUntil
			out.Problems = append(out.Problems, verifyLockProblem{Key: oi.Key, Written: written, RetainUntil: &until,
				Problem: fmt.Sprintf("retained until %s, shorter than the repository's %d days", until.UTC().Format(time.RFC3339), l.Days)})
		}
	}
	return out, nil
}

func printVerifyLock(w io.Writer, v *verifyLockJSON) {
	if v == nil {
		return
	}
	if len(v.Problems) == 0 {
		fmt.Fprintf(w, "object lock (%s, %d days): OK, %d objects retained\n", v.Mode, v.Days, v.Checked)
		return
	}
	fmt.Fprintf(w, "object lock (%s, %d days): %d of %d objects not retained as configured\n", v.Mode, v.Days, len(v.Problems), v.Checked)
	for _, p := range v.Problems {
		fmt.Fprintf(w, "  %s (written %s): %s\n", p.Key, p.Written.UTC().Format(time.RFC3339), p.Problem)
	}
}
