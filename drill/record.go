package drill

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
)

// Prefix is where the drill records live in the repository.
const Prefix = "drills/"

// Format is the version of the record this pgark writes.
const Format = 1

// Key is the key of drill id's record.
func Key(id string) string { return Prefix + id + ".json" }

// The statuses of a drill and of a check.
const (
	Passed  = "passed"
	Failed  = "failed"
	Skipped = "skipped"
)

// The phases of a drill, as Record.FailedPhase names them.
const (
	PhaseRestore = "restore"
	PhaseReplay  = "replay"
	PhaseCheck   = "check"
)

// Check is the outcome of one check of a drill.
type Check struct {
	Name    string `json:"name"`
	Status  string `json:"status"` // passed, failed or skipped
	Message string `json:"message"`
}

// Record is a drill's result: drills/<id>.json (plaintext, no secrets).
type Record struct {
	Format     int       `json:"format"`
	ID         string    `json:"id"`
	Status     string    `json:"status"` // passed or failed
	Error      string    `json:"error,omitempty"`
	Phase      string    `json:"failed_phase,omitempty"` // restore, replay or check
	Host       string    `json:"host"`
	Version    string    `json:"pgark_version"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`

	Backup        string `json:"backup"`
	BackupStopLSN string `json:"backup_end_lsn"`
	PGMajor       int    `json:"pg_major"`
	Target        string `json:"target"` // "end of archive", "lsn 0/5000000", "time ...", ...

	ReachedLSN      string     `json:"reached_lsn,omitempty"`
	ReachedTime     *time.Time `json:"reached_time,omitempty"` // the last transaction replayed
	ReachedTimeline int        `json:"reached_timeline,omitempty"`
	WALSegments     int        `json:"wal_segments"` // replayed, from the backup's start to the LSN reached
	DataBytes       int64      `json:"data_bytes"`   // restored (the backup's size before compression)
	Databases       []string   `json:"databases"`

	RestoreSeconds  float64 `json:"restore_seconds"`
	ReplaySeconds   float64 `json:"replay_seconds"`
	CheckSeconds    float64 `json:"check_seconds"`
	RecoverySeconds float64 `json:"recovery_seconds"` // restore + replay: the measured recovery time
	TotalSeconds    float64 `json:"total_seconds"`

	Checks []Check `json:"checks"`
}

// Check validates a record read under id.
func (r *Record) Check(id string) error {
	switch {
	case r.Format < 1:
		return fmt.Errorf("format %d", r.Format)
	case r.ID != id:
		return fmt.Errorf("id %q, want %q", r.ID, id)
	case r.Status != Passed && r.Status != Failed:
		return fmt.Errorf("status %q", r.Status)
	case r.FinishedAt.IsZero():
		return errors.New("no finish time")
	}
	return nil
}

// Passed reports whether the drill passed.
func (r *Record) Passed() bool { return r.Status == Passed }

// FailedChecks names the checks that failed.
func (r *Record) FailedChecks() []string {
	var out []string
	for _, c := range r.Checks {
		if c.Status == Failed {
			out = append(out, c.Name)
		}
	}
	return out
}

// Put writes the record create-only, signed when signer is not nil. Ids have a resolution
// of one second: when a record of the same id exists (two drills started in the same
// second), the id moves on by a second, up to a minute.
func Put(ctx context.Context, s storage.Store, r *Record, signer *crypto.Signer) error {
	if !repo.ValidRunID(r.ID) {
		return fmt.Errorf("drill: %q is not a run id", r.ID)
	}
	t, err := time.Parse(idLayout, r.ID)
	if err != nil {
		return fmt.Errorf("drill: %q is not a run id: %w", r.ID, err)
	}
	for i := 0; ; i++ {
		err := repo.PutSignedJSON(ctx, s, Key(r.ID), r, signer)
		if err == nil {
			return nil
		}
		if !errors.Is(err, storage.ErrExists) || i == 60 {
			return fmt.Errorf("drill: writing %s: %w", Key(r.ID), err)
		}
		t = t.Add(time.Second)
		r.ID = repo.NewRunID(t)
	}
}

// idLayout is the layout of run ids (repo.NewRunID).
const idLayout = "20060102T150405Z"

// List reads every drill record, oldest first (by finish time). Records that cannot be
// read are returned in bad (key: reason) rather than failing the listing.
func List(ctx context.Context, rp *repo.Repo) (records []*Record, bad []string, err error) {
	var keys []string
	err = rp.Store.List(ctx, Prefix, func(oi storage.ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", Prefix, err)
	}
	for _, k := range keys {
		id, ok := strings.CutSuffix(strings.TrimPrefix(k, Prefix), ".json")
		if !ok || !repo.ValidRunID(id) {
			continue // a temporary file of the local store, or foreign
		}
		var rec Record
		if err := repo.ReadMeta(ctx, rp.Store, "drill", id, k, &rec, storage.ErrNotFound); err != nil {
			if storage.IsNotFound(err) {
				continue // deleted meanwhile
			}
			bad = append(bad, storage.OneLine(err.Error()))
			continue
		}
		if err := rp.VerifyJSONSignature(ctx, k); err != nil {
			bad = append(bad, fmt.Sprintf("drill %s: %v", id, err))
			continue
		}
		records = append(records, &rec)
	}
	sort.SliceStable(records, func(i, j int) bool { return records[i].FinishedAt.Before(records[j].FinishedAt) })
	return records, bad, nil
}

// Latest returns the last drill and the last one that passed (nil when none).
func Latest(records []*Record) (last, lastPassed *Record) {
	for _, r := range records {
		if last == nil || !r.FinishedAt.Before(last.FinishedAt) {
			last = r
		}
		if r.Passed() && (lastPassed == nil || !r.FinishedAt.Before(lastPassed.FinishedAt)) {
			lastPassed = r
		}
	}
	return last, lastPassed
}
