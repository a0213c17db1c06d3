package catalog

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pgark/pgark/manifest"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/wal"
)

// Listing is what the repository holds: complete backups (with metadata),
// oldest first by their recorded LSNs, and IDs of backups without metadata
// (in progress, or failed and never completed: never usable).
type Listing struct {
	Backups    []*Meta
	Incomplete []string
}

// List reads every backup's metadata. It uses LIST (listing, not a hot path).
func List(ctx context.Context, s storage.Store) (*Listing, error) {
	ids := map[string]bool{}
	var order []string
	err := s.List(ctx, Prefix, func(oi storage.ObjectInfo) error {
		rest := strings.TrimPrefix(oi.Key, Prefix)
		id, _, ok := strings.Cut(rest, "/")
		if !ok || !ValidID(id) {
			return nil
		}
		if _, seen := ids[id]; !seen {
			order = append(order, id)
			ids[id] = false
		}
		if strings.HasSuffix(oi.Key, "/"+MetaName) {
			ids[id] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	l := &Listing{}
	for _, id := range order {
		if !ids[id] {
			l.Incomplete = append(l.Incomplete, id)
			continue
		}
		m, err := ReadMeta(ctx, s, id)
		if err != nil {
			return nil, err
		}
		l.Backups = append(l.Backups, m)
	}
	SortBackups(l.Backups)
	return l, nil
}

// Lookup returns the complete backup id of the listing (ErrNoBackup when
// the listing has none: missing or incomplete).
func (l *Listing) Lookup(id string) (*Meta, error) {
	for _, m := range l.Backups {
		if m.ID == id {
			return m, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNoBackup, id)
}

// ReadMeta reads and checks one backup's metadata.
func ReadMeta(ctx context.Context, s storage.Store, id string) (*Meta, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%q is not a backup id (like 20261124T154500Z)", id)
	}
	var m Meta
	if err := repo.ReadMeta(ctx, s, "backup", id, MetaKey(id), &m, ErrNoBackup); err != nil {
		return nil, err
	}
	return &m, nil
}

// ErrNoBackup means no usable backup matches.
var ErrNoBackup = errors.New("no such complete backup")

// Check checks metadata read from the repository under backup id: restore
// relies on what it accepts (object keys inside the backup, a bounded
// manifest, well-formed LSNs and hashes).
func (m *Meta) Check(id string) error {
	if m.Format != MetaFormat {
		return fmt.Errorf("metadata format %d, this pgark reads %d", m.Format, MetaFormat)
	}
	if m.ID != id {
		return fmt.Errorf("the metadata names backup %q", m.ID)
	}
	start, err := wal.ParseLSN(m.StartLSN)
	if err != nil {
		return err
	}
	end, err := wal.ParseLSN(m.EndLSN)
	if err != nil {
		return err
	}
	if start > end {
		return fmt.Errorf("start LSN %s after end LSN %s", m.StartLSN, m.EndLSN)
	}
	if m.StartTimeline == 0 || m.EndTimeline < m.StartTimeline || !wal.ValidSegSize(m.WalSegmentBytes) {
		return errors.New("bad timeline or segment size")
	}
	if m.Manifest.Key != ManifestKey(m.ID) || m.Manifest.Bytes < 0 || m.Manifest.Bytes > manifest.MaxBytes || !validSHA256(m.Manifest.SHA256) {
		return fmt.Errorf("bad manifest object %q (%d bytes)", m.Manifest.Key, m.Manifest.Bytes)
	}
	switch m.Kind() {
	case TypeFull:
		if m.Parent != "" || m.Method != "" || m.References != nil {
			return fmt.Errorf("a full backup with a parent (%q) or an incremental method", m.Parent)
		}
	case TypeIncr, TypeDiff:
		if !ValidID(m.Parent) || m.Parent == m.ID {
			return fmt.Errorf("an incremental backup with a bad parent %q", m.Parent)
		}
		switch m.Method {
		case "", MethodBlock:
			if m.References != nil {
				return errors.New("a block-level incremental backup with a references list")
			}
		case MethodFile:
			if m.References == nil || m.References.Key != ReferencesKey(m.ID) || !validSHA256(m.References.SHA256) || m.References.Bytes < 0 {
				return errors.New("a file-level incremental backup without a valid references list")
			}
		default:
			return fmt.Errorf("unknown incremental method %q", m.Method)
		}
	default:
		return fmt.Errorf("unknown backup type %q", m.Type)
	}
	if m.BlockSize < 0 || m.BlockSize > 32768 || m.SegmentBlocks > 1<<31 {
		return fmt.Errorf("bad block size %d or segment size %d", m.BlockSize, m.SegmentBlocks)
	}
	if len(m.Archives) == 0 || m.Archives[len(m.Archives)-1].Name != "base.tar" {
		return errors.New("no base.tar archive")
	}
	for _, a := range m.Archives {
		for i, p := range a.Parts {
			if p.Key != PartKey(m.ID, a.Name, i) || !validSHA256(p.SHA256) || p.Bytes < 0 {
				return fmt.Errorf("bad part %q of %q", p.Key, a.Name)
			}
		}
	}
	return nil
}

func validSHA256(s string) bool {
	_, err := hex.DecodeString(s)
	return len(s) == 64 && err == nil
}

// MaxChain bounds the backups of one chain (a full one and the incremental
// ones on it) that pgark follows.
const MaxChain = 1000

// ErrBrokenChain is wrapped when an incremental backup's parents cannot be
// followed to a full backup: one is missing, damaged or inconsistent.
var ErrBrokenChain = errors.New("broken backup chain")

// Chain returns the backups m is rebuilt from, the full backup first and m
// last, reading parents with get (ReadMeta, or a lookup in a listing). It
// checks that each link is consistent: the same cluster and major, a parent
// that started before its child, a full backup at the root.
func Chain(m *Meta, get func(id string) (*Meta, error)) ([]*Meta, error) {
	chain := []*Meta{m}
	seen := map[string]bool{m.ID: true}
	for cur := m; cur.Kind() != TypeFull; {
		if len(chain) >= MaxChain {
			return nil, fmt.Errorf("%w: backup %s has more than %d backups in its chain", ErrBrokenChain, m.ID, MaxChain)
		}
		p, err := get(cur.Parent)
		if err != nil {
			return nil, fmt.Errorf("%w: backup %s needs its parent %s: %w", ErrBrokenChain, cur.ID, cur.Parent, err)
		}
		switch {
		case seen[p.ID]:
			return nil, fmt.Errorf("%w: backup %s is its own ancestor", ErrBrokenChain, p.ID)
		case p.SystemID != cur.SystemID || p.PGMajor != cur.PGMajor:
			return nil, fmt.Errorf("%w: backup %s (cluster %s, PostgreSQL %d) has parent %s of cluster %s, PostgreSQL %d", ErrBrokenChain, cur.ID, cur.SystemID, cur.PGMajor, p.ID, p.SystemID, p.PGMajor)
		case p.Start() >= cur.Start():
			return nil, fmt.Errorf("%w: backup %s starts at %s, not after its parent %s (%s)", ErrBrokenChain, cur.ID, cur.StartLSN, p.ID, p.StartLSN)
		}
		seen[p.ID] = true
		chain = append(chain, p)
		cur = p
	}
	slices.Reverse(chain)
	return chain, nil
}

// Start and End return the parsed LSNs (checked when the metadata was read).
func (m *Meta) Start() wal.LSN { l, _ := wal.ParseLSN(m.StartLSN); return l }

// End is the backup's consistency point: recovery must replay at least to it.
func (m *Meta) End() wal.LSN { l, _ := wal.ParseLSN(m.EndLSN); return l }

// SortBackups orders backups by their recorded end LSN, then stop time,
// never by name.
func SortBackups(b []*Meta) {
	sort.SliceStable(b, func(i, j int) bool {
		if b[i].End() != b[j].End() {
			return b[i].End() < b[j].End()
		}
		return b[i].StopTime.Before(b[j].StopTime)
	})
}

// Target is what a restore must reach.
type Target struct {
	Time time.Time // zero: none
	LSN  wal.LSN   // 0: none
	// Other targets (xid, name, immediate) cannot be placed before reading
	// WAL: the newest backup on the timeline is used for them and for
	// "latest".
}

// Choose picks the backup for a target on the timeline whose history is h:
// the newest backup whose consistency point (end LSN and stop time) lies on
// h's history and, for a time or LSN target, at or before the target.
// Backups on abandoned timelines never qualify.
func Choose(backups []*Meta, h wal.History, t Target) (*Meta, error) {
	var onTimeline []*Meta
	for _, m := range backups {
		if h.Contains(m.EndTimeline, m.End()) {
			onTimeline = append(onTimeline, m)
		}
	}
	if len(onTimeline) == 0 {
		return nil, fmt.Errorf("%w on timeline %d (%d backups in the repository, none on its history)", ErrNoBackup, h.TLI, len(backups))
	}
	for i := len(onTimeline) - 1; i >= 0; i-- {
		m := onTimeline[i]
		switch {
		case !t.Time.IsZero() && m.StopTime.After(t.Time):
			continue
		case t.LSN != 0 && m.End() > t.LSN:
			continue
		}
		return m, nil
	}
	oldest := onTimeline[0]
	if !t.Time.IsZero() {
		return nil, fmt.Errorf("%w that reaches %s: the oldest backup on timeline %d became consistent at %s (backup %s)", ErrNoBackup, t.Time.Format(time.RFC3339), h.TLI, oldest.StopTime.Format(time.RFC3339), oldest.ID)
	}
	return nil, fmt.Errorf("%w that reaches LSN %s: the oldest backup on timeline %d becomes consistent at %s (backup %s)", ErrNoBackup, t.LSN, h.TLI, oldest.EndLSN, oldest.ID)
}
