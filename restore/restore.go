package restore

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/restore/recoveryconf"
	"github.com/pgark/pgark/wal"
	"github.com/pgark/pgark/walinventory"
)

// Plan is the outcome of choosing what to restore.
type Plan struct {
	Backup   *catalog.Meta
	Timeline wal.History // the timeline recovery will follow
}

// NewPlan chooses the backup to restore. id is a backup ID or "latest";
// timeline is "latest" (the newest in the archive), "current" (the
// backup's) or a number, as recovery_target_timeline takes it.
func NewPlan(ctx context.Context, r *repo.Repo, id, timeline string, t catalog.Target, ids *crypto.Identities) (*Plan, error) {
	l, err := catalog.List(ctx, r.Store)
	if err != nil {
		return nil, err
	}
	if len(l.Backups) == 0 {
		return nil, fmt.Errorf("%w: the repository %s holds no complete backup", catalog.ErrNoBackup, r.Store)
	}
	var named *catalog.Meta
	if id != "latest" {
		if named, err = catalog.ReadMeta(ctx, r.Store, id); err != nil {
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
		if tli, err = walinventory.LatestTimeline(ctx, r.Store, from); err != nil {
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
	h, err := walinventory.TimelineHistory(ctx, r, tli, ids)
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
	m, err := catalog.Choose(l.Backups, h, t)
	if err != nil {
		return nil, err
	}
	return signedPlan(ctx, r, m, h)
}

// signedPlan checks the chosen backup's origin signature when the
// repository has trusted signers: its metadata records the size and
// SHA-256 of every part and of the manifest, so the signature covers them.
func signedPlan(ctx context.Context, r *repo.Repo, m *catalog.Meta, h wal.History) (*Plan, error) {
	if err := r.VerifyJSONSignature(ctx, catalog.MetaKey(m.ID)); err != nil {
		return nil, fmt.Errorf("backup %s: %w", m.ID, err)
	}
	return &Plan{Backup: m, Timeline: h}, nil
}

// PartOpenerFor opens parts from the repository, verified against the
// metadata's size and SHA-256.
func PartOpenerFor(r *repo.Repo, ids *crypto.Identities) PartOpener {
	return func(ctx context.Context, ref catalog.ObjectRef) (io.ReadCloser, error) {
		return r.OpenVerified(ctx, ref.Key, ref.Bytes, ref.SHA256, ids)
	}
}

// Run extracts the planned backup into o.PGDATA and writes the recovery
// configuration.
func Run(ctx context.Context, r *repo.Repo, p *Plan, ids *crypto.Identities, eo ExtractOptions, ro recoveryconf.Options, log *slog.Logger) error {
	manifest, err := catalog.FetchManifest(ctx, r, p.Backup, ids)
	if err != nil {
		return err
	}
	if err := Extract(ctx, p.Backup, PartOpenerFor(r, ids), eo); err != nil {
		return err
	}
	if err := recoveryconf.Write(eo.PGDATA, ro, manifest); err != nil {
		return fmt.Errorf("write recovery configuration: %w", err)
	}
	log.Info("restored", "backup", p.Backup.ID, "pgdata", eo.PGDATA, "timeline", p.Timeline.TLI)
	return nil
}
