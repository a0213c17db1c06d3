package walinventory

import (
	"context"
	"fmt"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/wal"
)

// TimelineHistory reads the history of timeline tli from the archive
// (timeline 1 has none).
func TimelineHistory(ctx context.Context, r *repo.Repo, tli uint32, ids *crypto.Identities) (wal.History, error) {
	if tli <= 1 {
		return wal.History{TLI: 1}, nil
	}
	name := fmt.Sprintf("%08X.history", tli)
	n, _ := wal.ParseName(name)
	b, err := r.ReadVerified(ctx, wal.ObjectKey(n), 1<<20, ids)
	if err != nil {
		if storage.IsNotFound(err) {
			return wal.History{}, fmt.Errorf("timeline %d has no history file %s in the repository", tli, name)
		}
		return wal.History{}, fmt.Errorf("read %s: %w", name, err)
	}
	return wal.ParseHistory(tli, b)
}

// LatestTimeline finds the newest timeline in the archive, probing history
// files upward from `from` as PostgreSQL does (one HEAD per timeline).
func LatestTimeline(ctx context.Context, s storage.Store, from uint32) (uint32, error) {
	tli := max(from, 1)
	for {
		n, _ := wal.ParseName(fmt.Sprintf("%08X.history", tli+1))
		_, err := s.Stat(ctx, wal.ObjectKey(n))
		if storage.IsNotFound(err) {
			return tli, nil
		}
		if err != nil {
			return 0, fmt.Errorf("probe timeline %d: %w", tli+1, err)
		}
		tli++
	}
}
