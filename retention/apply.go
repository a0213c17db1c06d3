package retention

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pgark/pgark/storage"
)

// A run is one backup or dump run that a plan deletes: every object below
// prefix, in an order that never leaves it looking like something it is
// not if the deletion stops halfway.
type run struct {
	what   string // names it in errors: "backup", "failed dump", ...
	id     string
	prefix string // its objects are below it
	// first is deleted before the others ("" for none): the completion
	// marker, so that no run looks complete once part of it is gone.
	first string
	// last is deleted after the others ("" for none): the failure record,
	// which says what the rest is while it is there.
	last string
	// logMsg and logArgs are logged once the run is deleted.
	logMsg  string
	logArgs []any
}

// deleteRuns deletes the runs in order, and stops at the first failure.
func deleteRuns(ctx context.Context, s storage.Store, runs []run, log *slog.Logger) error {
	for _, r := range runs {
		if err := r.delete(ctx, s); err != nil {
			return fmt.Errorf("delete %s %s: %w", r.what, r.id, err)
		}
		log.Info(r.logMsg, r.logArgs...)
	}
	return nil
}

// delete deletes the run's first object, then every other object below its
// prefix, then its last object.
func (r run) delete(ctx context.Context, s storage.Store) error {
	if r.first != "" {
		if err := s.Delete(ctx, r.first); err != nil {
			return err
		}
	}
	var keys []string
	if err := s.List(ctx, r.prefix, func(oi storage.ObjectInfo) error {
		if oi.Key != r.last {
			keys = append(keys, oi.Key)
		}
		return nil
	}); err != nil {
		return err
	}
	if r.last != "" {
		keys = append(keys, r.last)
	}
	for _, k := range keys {
		if err := s.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}
