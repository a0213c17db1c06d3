package backup

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/wal"
)

// RestorePlan is the outcome of choosing what to restore.
type RestorePlan struct {
	Backup   *Meta
	Timeline wal.History // the timeline recovery will follow
}

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

// Plan chooses the backup to restore. id is a backup ID or "latest";
// timeline is "latest" (the newest in the archive), "current" (the
// backup's) or a number, as recovery_target_timeline takes it.
func Plan(ctx context.Context, r *repo.Repo, id, timeline string, t Target, ids *crypto.Identities) (*RestorePlan, error) {
	l, err := List(ctx, r.Store)
	if err != nil {
		return nil, err
	}
	if len(l.Backups) == 0 {
		return nil, fmt.Errorf("%w: the repository %s holds no complete backup", ErrNoBackup, r.Store)
	}
	var named *Meta
	if id != "latest" {
		if named, err = ReadMeta(ctx, r.Store, id); err != nil {
			return nil, err
		}
	}
	var tli uint32
	switch timeline {
	case "", "latest":
		from := l.Backups[len(l.Backups)-1].EndTimeline
		if named != nil {
			from = named.EndTimeline
		}
		if tli, err = LatestTimeline(ctx, r.Store, from); err != nil {
			return nil, err
		}
	case "current":
		if named == nil {
			named = l.Backups[len(l.Backups)-1]
		}
		tli = named.EndTimeline
	default:
		v, err := strconv.ParseUint(timeline, 0, 32)
		if err != nil || v == 0 {
			return nil, fmt.Errorf("target timeline %q is not latest, current or a timeline number", timeline)
		}
		tli = uint32(v)
	}
	h, err := TimelineHistory(ctx, r, tli, ids)
	if err != nil {
		return nil, err
	}
	if named != nil {
		if !h.Contains(named.EndTimeline, named.End()) {
			return nil, fmt.Errorf("backup %s (timeline %d, consistent at %s) is not on the history of timeline %d", named.ID, named.EndTimeline, named.EndLSN, tli)
		}
		if !t.Time.IsZero() && named.StopTime.After(t.Time) {
			return nil, fmt.Errorf("the target time %s lies before backup %s became consistent (%s): choose an older backup, or omit the backup id", t.Time, named.ID, named.StopTime)
		}
		if t.LSN != 0 && named.End() > t.LSN {
			return nil, fmt.Errorf("the target LSN %s lies before backup %s becomes consistent (%s)", t.LSN, named.ID, named.EndLSN)
		}
		return signedPlan(ctx, r, named, h)
	}
	m, err := Choose(l.Backups, h, t)
	if err != nil {
		return nil, err
	}
	return signedPlan(ctx, r, m, h)
}

// signedPlan checks the chosen backup's origin signature when the
// repository has trusted signers: its metadata records the size and
// SHA-256 of every part and of the manifest, so the signature covers them.
func signedPlan(ctx context.Context, r *repo.Repo, m *Meta, h wal.History) (*RestorePlan, error) {
	if err := r.VerifyJSONSignature(ctx, MetaKey(m.ID)); err != nil {
		return nil, fmt.Errorf("backup %s: %w", m.ID, err)
	}
	return &RestorePlan{Backup: m, Timeline: h}, nil
}

// PartOpenerFor opens parts from the repository, verified against the
// metadata's size and SHA-256.
func PartOpenerFor(r *repo.Repo, ids *crypto.Identities) PartOpener {
	return func(ctx context.Context, ref ObjectRef) (io.ReadCloser, error) {
		return r.OpenVerified(ctx, ref.Key, ref.Bytes, ref.SHA256, ids)
	}
}

// FetchManifest reads a backup's manifest object, verified.
func FetchManifest(ctx context.Context, r *repo.Repo, m *Meta, ids *crypto.Identities) ([]byte, error) {
	if m.Manifest.Bytes < 0 || m.Manifest.Bytes > MaxManifestBytes {
		return nil, fmt.Errorf("backup %s: the metadata records a manifest of %d bytes (at most %d)", m.ID, m.Manifest.Bytes, MaxManifestBytes)
	}
	rc, err := r.OpenVerified(ctx, m.Manifest.Key, m.Manifest.Bytes, m.Manifest.SHA256, ids)
	if err != nil {
		return nil, fmt.Errorf("open manifest: %w", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	return b, nil
}

// Restore extracts the planned backup into o.PGDATA and writes the recovery
// configuration.
func Restore(ctx context.Context, r *repo.Repo, p *RestorePlan, ids *crypto.Identities, eo ExtractOptions, ro RecoveryOptions, log *slog.Logger) error {
	manifest, err := FetchManifest(ctx, r, p.Backup, ids)
	if err != nil {
		return err
	}
	if err := Extract(ctx, p.Backup, PartOpenerFor(r, ids), eo); err != nil {
		return err
	}
	if err := WriteRecoveryConfig(eo.PGDATA, ro, manifest); err != nil {
		return fmt.Errorf("write recovery configuration: %w", err)
	}
	log.Info("restored", "backup", p.Backup.ID, "pgdata", eo.PGDATA, "timeline", p.Timeline.TLI)
	return nil
}
