package restore

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/incremental"
	"github.com/pgark/pgark/manifest"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/restore/recoveryconf"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/wal"
	"github.com/pgark/pgark/walinventory"
)

// Plan is the outcome of choosing what to restore.
type Plan struct {
	Backup   *catalog.Meta
	Chain    []*catalog.Meta // the backups Backup is rebuilt from, the full one first and Backup last
	Timeline wal.History     // the timeline recovery will follow
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
		return signedPlan(ctx, r, l, named, h)
	}
	m, err := catalog.Choose(l.Backups, h, t)
	if err != nil {
		return nil, err
	}
	return signedPlan(ctx, r, l, m, h)
}

// signedPlan follows the chosen backup's chain to its full backup and
// checks each backup's origin signature when the repository has trusted
// signers: the metadata records the size and SHA-256 of every part and of
// the manifest, so the signature covers them.
func signedPlan(ctx context.Context, r *repo.Repo, l *catalog.Listing, m *catalog.Meta, h wal.History) (*Plan, error) {
	chain, err := catalog.Chain(m, l.Lookup)
	if err != nil {
		return nil, err
	}
	for _, b := range chain {
		if err := r.VerifyJSONSignature(ctx, catalog.MetaKey(b.ID)); err != nil {
			return nil, fmt.Errorf("backup %s: %w", b.ID, err)
		}
	}
	return &Plan{Backup: m, Chain: chain, Timeline: h}, nil
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
	raw, err := catalog.FetchManifest(ctx, r, p.Backup, ids)
	if err != nil {
		return err
	}
	chain := p.Chain
	if len(chain) == 0 {
		chain = []*catalog.Meta{p.Backup}
	}
	if err := checkParts(ctx, r, chain); err != nil {
		return err
	}
	rebuilt, err := ExtractChain(ctx, chain, PartOpenerFor(r, ids), eo)
	if err != nil {
		return err
	}
	if len(chain) > 1 || len(rebuilt) > 0 {
		if raw, err = RebuiltManifest(raw, rebuilt); err != nil {
			return fmt.Errorf("restore of backup %s: %w", p.Backup.ID, err)
		}
	}
	if err := recoveryconf.Write(eo.PGDATA, ro, raw); err != nil {
		return fmt.Errorf("write recovery configuration: %w", err)
	}
	log.Info("restored", "backup", p.Backup.ID, "pgdata", eo.PGDATA, "timeline", p.Timeline.TLI)
	return nil
}

// checkParts makes sure, before anything is written, that every part of
// every backup of the chain is in the repository: a restore that would
// fail half-way on a missing part of a parent fails now, naming it.
func checkParts(ctx context.Context, r *repo.Repo, chain []*catalog.Meta) error {
	last := chain[len(chain)-1]
	for _, b := range chain {
		var refs []catalog.ObjectRef
		if b.References != nil {
			refs = append(refs, *b.References)
		}
		for _, a := range b.Archives {
			refs = append(refs, a.Parts...)
		}
		for _, p := range refs {
			_, err := r.Store.Stat(ctx, p.Key)
			switch {
			case storage.IsNotFound(err) && b == last:
				return fmt.Errorf("%w: backup %s: its part %s is missing", repo.ErrDamaged, b.ID, p.Key)
			case storage.IsNotFound(err):
				return fmt.Errorf("%w: backup %s needs backup %s, whose part %s is missing (%w)", catalog.ErrBrokenChain, last.ID, b.ID, p.Key, repo.ErrDamaged)
			case err != nil:
				return fmt.Errorf("backup %s: %s: %w", b.ID, p.Key, err)
			}
		}
	}
	return nil
}

// RebuiltManifest turns an incremental backup's backup_manifest into the
// manifest of the directory rebuilt from its chain: each INCREMENTAL.<name>
// entry becomes <name> with the rebuilt file's size and checksum, and
// backup_label's entry describes the label without its INCREMENTAL FROM
// lines (and tablespace_map's the map with remapped locations), so that
// pg_verifybackup checks the rebuilt directory.
func RebuiltManifest(raw []byte, rebuilt map[string]Rebuilt) ([]byte, error) {
	m, err := manifest.Parse(raw)
	if err != nil {
		return nil, err
	}
	used := 0
	files := m.Files[:0]
	for _, f := range m.Files {
		path := f.Path
		target, inc := incremental.Target(f.Path)
		if inc {
			path = target
		}
		rb, found := rebuilt[path]
		switch {
		case inc && !found:
			return nil, fmt.Errorf("the manifest lists %s, but no file was rebuilt from it", f.Path)
		case !found:
			files = append(files, f)
			continue
		}
		used++
		if rb.Removed {
			continue
		}
		// A rebuilt file; backup_label without its INCREMENTAL FROM lines;
		// a remapped tablespace_map.
		f.Path, f.Size, f.Checksum = path, rb.Size, rb.Checksum
		if rb.Checksum == "" {
			f.ChecksumAlgorithm = ""
		}
		files = append(files, f)
	}
	m.Files = files
	if used != len(rebuilt) {
		return nil, fmt.Errorf("%d files were rebuilt or removed, the manifest lists %d of them", len(rebuilt), used)
	}
	return manifest.Marshal(m)
}
