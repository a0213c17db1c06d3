package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgark/pgark/basebackup"
	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/wal"
)

// DefaultMaxChain is how many incremental backups may follow a full one in
// a chain before the next backup is a full one again: restore reads every
// backup of the chain, so its length bounds restore time.
const DefaultMaxChain = 10

// ErrNoParent is wrapped when an incremental or differential backup finds
// no usable parent and the configuration asks to fail instead of taking a
// full backup.
var ErrNoParent = errors.New("no usable parent backup")

// parentChoice is what an incremental or differential backup is taken
// against, or why it cannot be.
type parentChoice struct {
	meta     *catalog.Meta
	method   string // catalog.MethodBlock or MethodFile
	chain    int    // backups in the parent's chain, its full one included
	manifest []byte // the parent's backup_manifest, byte-exact
	why      string // when meta is nil: why there is no usable parent
}

// chooseParent picks the parent of a backup of type typ: for "incr" the
// newest complete backup on the server's timeline history, for "diff" the
// newest full one; its chain must be whole and shorter than MaxChain.
func chooseParent(ctx context.Context, c *Config, si serverInfo, tli uint32) parentChoice {
	no := func(format string, args ...any) parentChoice { return parentChoice{why: fmt.Sprintf(format, args...)} }
	// Block level where the server summarizes WAL (17+), else file level.
	method := catalog.MethodBlock
	if si.versionNum < basebackup.MinIncrementalVersion || !si.summarizeWAL {
		method = catalog.MethodFile
	}
	if c.MaxChain < 1 {
		return no("max-chain is 0: every backup is a full one")
	}
	h, err := serverHistory(ctx, c.Replication, tli)
	if err != nil {
		return no("the server's timeline history: %v", err)
	}
	l, err := catalog.List(ctx, c.Repo.Store)
	if err != nil {
		return no("listing the repository: %v", err)
	}
	for i := len(l.Backups) - 1; i >= 0; i-- {
		m := l.Backups[i]
		switch {
		case c.Type == catalog.TypeDiff && m.Kind() != catalog.TypeFull:
			continue
		case m.PGMajor != si.versionNum/10000 || m.SystemID != strconv.FormatUint(si.sysid, 10):
			continue
		case !h.Contains(m.EndTimeline, m.End()):
			continue
		}
		chain, err := catalog.Chain(m, l.Lookup)
		if err != nil {
			c.Log.Warn("a backup whose chain is broken is not used as a parent", "backup", m.ID, "err", err)
			continue
		}
		if len(chain) > c.MaxChain {
			return no("backup %s ends a chain of %d incremental backups, max-chain is %d", m.ID, len(chain)-1, c.MaxChain)
		}
		b, err := parentManifest(ctx, c, m)
		if err != nil {
			return no("the backup_manifest of backup %s: %v", m.ID, err)
		}
		return parentChoice{meta: m, method: method, chain: len(chain), manifest: b}
	}
	if c.Type == catalog.TypeDiff {
		return no("no full backup of this cluster (PostgreSQL %d) on timeline %d's history", si.versionNum/10000, tli)
	}
	return no("no backup of this cluster (PostgreSQL %d) on timeline %d's history", si.versionNum/10000, tli)
}

// serverHistory is the timeline history of timeline tli, from the server.
func serverHistory(ctx context.Context, conn *pgconn.PgConn, tli uint32) (wal.History, error) {
	if tli <= 1 {
		return wal.History{TLI: 1}, nil
	}
	res, err := conn.Exec(ctx, fmt.Sprintf("TIMELINE_HISTORY %d", tli)).ReadAll()
	if err != nil {
		return wal.History{}, fmt.Errorf("TIMELINE_HISTORY %d: %w", tli, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 2 {
		return wal.History{}, fmt.Errorf("TIMELINE_HISTORY %d: unexpected result", tli)
	}
	return wal.ParseHistory(tli, res[0].Rows[0][1])
}

// parentManifest returns a backup's backup_manifest: the local copy when
// it matches the metadata's SHA-256, else the repository's object (which
// needs an identity when the repository is encrypted).
func parentManifest(ctx context.Context, c *Config, m *catalog.Meta) ([]byte, error) {
	if p := manifestCachePath(c, m.SystemID, m.ID); p != "" {
		if b, err := os.ReadFile(p); err == nil {
			sum := sha256.Sum256(b)
			if int64(len(b)) == m.Manifest.Bytes && hex.EncodeToString(sum[:]) == m.Manifest.SHA256 {
				return b, nil
			}
			c.Log.Warn("the local copy of a backup manifest does not match the repository's record; not used", "path", p)
		}
	}
	if len(m.Recipients) > 0 && c.Identities == nil {
		return nil, errors.New("it is encrypted, this host has no local copy (it keeps one for the backups it takes, in spool-dir), and no age-identity-file is set to read it")
	}
	return catalog.FetchManifest(ctx, c.Repo, m, c.Identities)
}

func manifestCachePath(c *Config, sysid, id string) string {
	if c.ManifestCache == "" {
		return ""
	}
	return filepath.Join(c.ManifestCache, sysid, id+".backup_manifest")
}

// cacheManifest keeps a local copy of a completed backup's manifest, for
// the next incremental backup taken on this host (best effort: without
// it, that backup reads the repository's copy).
func cacheManifest(c *Config, m *catalog.Meta, b []byte) {
	p := manifestCachePath(c, m.SystemID, m.ID)
	if p == "" {
		return
	}
	err := func() error {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		f, err := os.CreateTemp(filepath.Dir(p), ".tmp-manifest-*")
		if err != nil {
			return err
		}
		defer os.Remove(f.Name())
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		return os.Rename(f.Name(), p)
	}()
	if err != nil {
		c.Log.Warn("could not keep a local copy of the backup manifest (the next incremental backup reads the repository's)", "path", p, "err", err)
		return
	}
	// Copies of backups that are gone are of no use.
	ents, err := os.ReadDir(filepath.Dir(p))
	if err != nil {
		return
	}
	for _, e := range ents {
		id, ok := bytes.CutSuffix([]byte(e.Name()), []byte(".backup_manifest"))
		if !ok || string(id) == m.ID || string(id) == m.Parent {
			continue
		}
		if _, err := catalog.ReadMeta(context.Background(), c.Repo.Store, string(id)); errors.Is(err, catalog.ErrNoBackup) {
			os.Remove(filepath.Join(filepath.Dir(p), e.Name()))
		}
	}
}
