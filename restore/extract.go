package restore

// Extraction of a backup's tar streams into a data directory. Safety rules (see the tests in extract_test.go):
//
//   - Only an empty or missing PGDATA is written to, or one that pgark itself marked as an
//     unfinished restore (markerName, written first, removed last); Force cleans such a
//     directory and starts again. Tablespace targets follow the same rule for their
//     PG_<major>_* directories, so that a rehearsal on a production host never writes into a
//     live tablespace.
//   - global/pg_control is written under a temporary name and renamed into place only after
//     everything else is written and fsynced (files and directories): a restore killed at any
//     point leaves a directory that PostgreSQL refuses to start.
//   - Every tar member is validated before anything is written for it. All writes go through
//     an os.Root per target (openat-based, cannot escape the directory), parent directories
//     are created component by component after checking that none is a symlink, regular
//     files are created with O_EXCL|O_NOFOLLOW. The only symlinks pgark creates are
//     pg_tblspc/<oid>, at the end, pointing at the final tablespace locations.

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pgark/pgark/internal/rootdir"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/incremental"
	"github.com/pgark/pgark/restore/recoveryconf"
	"github.com/pgark/pgark/tarstream"
	"github.com/pgark/pgark/wal"
)

// PartOpener returns the plaintext of one stored part (decrypted, decompressed); the
// caller's reader verifies the SHA-256 and size at EOF and returns an error instead of
// io.EOF on a mismatch. Extract always reads every part to EOF, so that check runs.
type PartOpener func(ctx context.Context, ref catalog.ObjectRef) (io.ReadCloser, error)

// ExtractOptions configures Extract.
type ExtractOptions struct {
	PGDATA        string
	TablespaceMap map[uint32]string // OID -> new location; unmapped tablespaces go to their original Location
	Owner         *Owner            // chown everything to this uid/gid (when running as root; nil = leave as the running user)
	Jobs          int               // parts extracted in parallel (>=1; 0 means 1)
	Force         bool              // allowed to clean a PGDATA that pgark marked as an unfinished restore
	Log           *slog.Logger
	Progress      func(bytesDone int64) // optional; called with the plaintext bytes read so far, never concurrently
}

// RefusedError is restore's refusal of a backup's content, whatever the
// repository or the metadata say: a member that would leave the target
// directory, a link, device node or FIFO, a mode looser than PostgreSQL's, a
// malformed tar stream or a member larger than its part. It is raised before
// anything is written for the member.
type RefusedError struct{ Err error }

// ErrTargetInUse is wrapped when the restore target (the data directory or a
// tablespace location) is not empty: pgark never writes over data.
var ErrTargetInUse = errors.New("the target is in use")

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

func refused(format string, args ...any) error {
	return &RefusedError{Err: fmt.Errorf(format, args...)}
}

// Owner is a numeric uid/gid.
type Owner struct{ UID, GID int }

const (
	// markerName marks a directory (PGDATA or a tablespace location) as an unfinished
	// pgark restore. It is created before anything else and removed last.
	markerName = recoveryconf.RestoreMarker
	// controlTmp is where global/pg_control is written until the very end.
	controlTmp  = "global/pg_control.pgark-tmp"
	controlFile = "global/pg_control"

	tablespaceMapLimit = 1 << 20 // a tablespace_map larger than this is refused
	copyBufSize        = 256 << 10
	progressStep       = 1 << 20
)

// ensureDirs are the directories the server sends empty (or not at all when they are
// missing on the source); PostgreSQL needs them to start. They are created, with the data
// directory's mode, if base.tar lacks them. pg_wal/summaries is added for PostgreSQL 17+.
var ensureDirs = []string{
	"pg_wal", "pg_wal/archive_status",
	"pg_tblspc",
	"pg_stat_tmp", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_subtrans",
}

// destDir is one directory that receives an archive: PGDATA for base.tar, a tablespace
// location for <oid>.tar.
type destDir struct {
	oid      uint32 // 0 for PGDATA
	archive  *catalog.Archive
	dir      string // absolute, cleaned, as the user gave it
	root     *os.Root
	existed  bool // the directory existed before this restore
	hadMark  bool // it holds the marker of an earlier, unfinished restore
	stale    []string
	spcMajor string // "PG_<major>_" for tablespaces

	mu    sync.Mutex
	dirs  map[string]fs.FileMode // directories known to exist (rel path) -> fs.ModeDir|mode from the tar, or 0 (use dmode)
	dmode fs.FileMode            // mode of directories the tar has no entry for
}

type extractor struct {
	m      *catalog.Meta   // the backup restored (the last of the chain)
	chain  []*catalog.Meta // the backups it is rebuilt from, full first; chain[len-1] == m
	layer  int             // index in chain of the backup being extracted
	limits incremental.Limits
	o      ExtractOptions
	open   PartOpener
	log    *slog.Logger
	base   *destDir
	spcs   []*destDir // sorted by OID
	byOID  map[uint32]*destDir

	progMu   sync.Mutex
	progDone int64

	mu         sync.Mutex // guards what follows, set while reading base.tar
	sawControl bool       // in the current layer
	sawLabel   bool       // in the current layer
	tsMap      []byte
	tsMapMode  fs.FileMode
	sawTsMap   bool // in the current layer
	globalMode fs.FileMode
	files      int
	// seen holds, per target, what the current layer wrote (files, under
	// their final names, and directories): after a layer of a chain, what
	// it does not hold is removed.
	seen    map[*destDir]map[string]bool
	rebuilt map[string]Rebuilt // by manifest path: files the last layer rebuilt from an incremental file
	applied int                // incremental files applied, all layers
	// changed holds, per target, the relations (main fork file name
	// without segment number) whose main fork a block-level incremental
	// layer changed: their visibility maps are dropped at the end.
	changed map[*destDir]map[string]bool
}

// Rebuilt is a file rebuilt from an incremental file: its size and its
// checksum in the backup manifest's algorithm, for the manifest written
// into the restored directory.
type Rebuilt struct {
	Size     int64
	Checksum string
	Removed  bool // the file was removed: the manifest no longer lists it
}

// Extract restores the tar streams of backup m into o.PGDATA (and its tablespaces into
// their locations). See the package-level rules at the top of this file. On error the
// directories are left marked as an unfinished restore and not startable; Extract with
// Force cleans them and starts again.
func Extract(ctx context.Context, m *catalog.Meta, open PartOpener, o ExtractOptions) error {
	_, err := ExtractChain(ctx, []*catalog.Meta{m}, open, o)
	return err
}

// ExtractChain restores the last backup of chain (as from catalog.Chain:
// a full backup first, each next one incremental on the one before it).
// The backups are extracted in order into the same directories: a file of
// a later backup replaces the earlier one, an incremental file is applied
// in place to the file its parent left, and what a later backup does not
// hold is removed, so that the result holds exactly the last backup's
// files, rebuilt. It returns the files the last backup rebuilt from
// incremental files, for its manifest.
func ExtractChain(ctx context.Context, chain []*catalog.Meta, open PartOpener, o ExtractOptions) (map[string]Rebuilt, error) {
	if len(chain) == 0 {
		return nil, errors.New("restore: no backup to extract")
	}
	for i, b := range chain {
		switch {
		case i == 0 && b.Kind() != catalog.TypeFull:
			return nil, fmt.Errorf("restore: backup %s is incremental: its chain must start with a full backup", b.ID)
		case i > 0 && (b.Kind() == catalog.TypeFull || b.Parent != chain[i-1].ID):
			return nil, fmt.Errorf("restore: backup %s is not built on backup %s", b.ID, chain[i-1].ID)
		}
	}
	m := chain[len(chain)-1]
	x, err := newExtractor(m, open, o)
	if err != nil {
		return nil, err
	}
	defer x.close()
	x.chain = chain
	x.limits = incremental.Limits{BlockSize: m.BlockSize, SegmentBlocks: m.SegmentBlocks}
	if x.limits.BlockSize == 0 {
		x.limits.BlockSize = 8192
	}
	if x.limits.SegmentBlocks == 0 {
		x.limits.SegmentBlocks = incremental.DefaultSegmentBlocks
	}
	start := time.Now()
	if err := x.prepare(); err != nil {
		return nil, err
	}
	fail := func(err error) error {
		return fmt.Errorf("restore of backup %s into %s failed: %w (the directory is marked as an unfinished restore and cannot be started; `pgark restore --force` cleans it and starts again)", m.ID, x.base.dir, err)
	}
	for i, b := range chain {
		x.layer = i
		x.log.Info("restore: extracting backup", "backup", b.ID, "type", b.Kind(), "layer", i+1, "of", len(chain),
			"pgdata", x.base.dir, "tablespaces", len(x.spcs), "jobs", x.o.Jobs)
		if err := x.runLayer(ctx, b); err != nil {
			return nil, fail(err)
		}
	}
	if err := x.finish(); err != nil {
		return nil, fmt.Errorf("restore of backup %s into %s failed while finishing: %w", m.ID, x.base.dir, err)
	}
	x.log.Info("restore: extraction complete", "backup", m.ID, "pgdata", x.base.dir, "backups", len(chain),
		"files", x.files, "incremental_files", x.applied, "bytes", x.progDone, "elapsed", time.Since(start).Round(time.Millisecond))
	return x.rebuilt, nil
}

// runLayer extracts one backup of the chain and checks that it was whole;
// after a layer other than the first, it removes what that backup does not
// hold.
func (x *extractor) runLayer(ctx context.Context, b *catalog.Meta) error {
	x.sawControl, x.sawLabel, x.sawTsMap = false, false, false
	x.seen = map[*destDir]map[string]bool{}
	for _, t := range append(slices.Clone(x.spcs), x.base) {
		x.seen[t] = map[string]bool{}
	}
	if x.layer == len(x.chain)-1 {
		x.rebuilt = map[string]Rebuilt{}
	}
	refs, err := x.markReferences(ctx, b)
	if err != nil {
		return err
	}
	var tasks []task
	for i := range b.Archives {
		a := &b.Archives[i]
		t := x.base
		if a.Name != "base.tar" {
			if t = x.byOID[a.OID]; t == nil {
				// A tablespace dropped before the last backup: nothing of it stays.
				continue
			}
		}
		for j, p := range a.Parts {
			tasks = append(tasks, task{t: t, idx: j, ref: p, archive: a.Name})
		}
	}
	if err := x.run(ctx, tasks); err != nil {
		return err
	}
	if !x.sawControl {
		return refused("backup %s: base.tar has no global/pg_control: the backup is incomplete", b.ID)
	}
	if !x.sawLabel {
		return refused("backup %s: base.tar has no backup_label: the backup is incomplete (starting without it would corrupt the cluster silently)", b.ID)
	}
	for _, r := range refs {
		st, err := r.t.root.Lstat(r.rel)
		if err != nil || !st.Mode().IsRegular() {
			return fmt.Errorf("%w: backup %s takes %s from backup %s, which does not hold it", catalog.ErrBrokenChain, b.ID, filepath.Join(r.t.dir, r.rel), x.chain[x.layer-1].ID)
		}
	}
	if x.layer == 0 {
		return nil
	}
	return x.prune()
}

// reference is a file a file-level incremental backup takes from its parent.
type reference struct {
	t   *destDir
	rel string
}

// markReferences reads a file-level incremental backup's references and
// marks them as held by the layer: the files its parent left stay.
func (x *extractor) markReferences(ctx context.Context, b *catalog.Meta) ([]reference, error) {
	if b.Method != catalog.MethodFile {
		return nil, nil
	}
	if x.layer == 0 || b.References == nil {
		return nil, refused("backup %s: a file-level incremental backup without its parent or references list", b.ID)
	}
	rc, err := x.open(ctx, *b.References)
	if err != nil {
		return nil, fmt.Errorf("backup %s: references list: %w", b.ID, err)
	}
	paths, err := catalog.ParseReferences(rc)
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", b.ID, err)
	}
	out := make([]reference, 0, len(paths))
	for _, p := range paths {
		t, rel := x.base, p
		if rest, ok := strings.CutPrefix(p, "pg_tblspc/"); ok {
			oidStr, sub, _ := strings.Cut(rest, "/")
			oid, err := strconv.ParseUint(oidStr, 10, 32)
			if err != nil || sub == "" || x.byOID[uint32(oid)] == nil {
				return nil, refused("backup %s: reference %q is not in a tablespace of the backup", b.ID, p)
			}
			t, rel = x.byOID[uint32(oid)], sub
		}
		if _, err := cleanName(rel); err != nil || rel == markerName || rel == controlTmp {
			return nil, refused("backup %s: bad reference %q", b.ID, p)
		}
		x.seen[t][rel] = true
		out = append(out, reference{t: t, rel: rel})
	}
	x.log.Debug("restore: files taken from the parent backup", "backup", b.ID, "files", len(out))
	return out, nil
}

// prune removes from every target what the current layer did not write.
func (x *extractor) prune() error {
	for t, seen := range x.seen {
		var gone []string
		err := fs.WalkDir(t.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch {
			case p == ".":
				return nil
			case p == markerName:
				return nil
			case t.oid != 0 && !strings.Contains(p, "/") && !strings.HasPrefix(p, t.spcMajor):
				// Not ours: another major's tablespace directory, or anything else.
				if d.IsDir() {
					return fs.SkipDir
				}
				return nil
			case seen[p]:
				return nil
			}
			gone = append(gone, p)
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("listing %s: %w", t.dir, err)
		}
		for _, p := range gone {
			if err := t.root.RemoveAll(p); err != nil {
				return fmt.Errorf("removing %s, which the newer backup does not hold: %w", filepath.Join(t.dir, p), err)
			}
			t.mu.Lock()
			for d := range t.dirs {
				if d == p || strings.HasPrefix(d, p+"/") {
					delete(t.dirs, d)
				}
			}
			t.mu.Unlock()
			if err := rootdir.Sync(t.root, path.Dir(p)); err != nil {
				return err
			}
		}
		if len(gone) > 0 {
			x.log.Debug("restore: removed what the newer backup does not hold", "dir", t.dir, "entries", len(gone))
		}
	}
	return nil
}

// ---------------------------------------------------------------- planning and checks

func newExtractor(m *catalog.Meta, open PartOpener, o ExtractOptions) (*extractor, error) {
	if m == nil {
		return nil, errors.New("restore: no backup metadata")
	}
	if open == nil {
		return nil, errors.New("restore: no part opener")
	}
	if m.ID == "" || strings.ContainsAny(m.ID, "\n\r\x00") {
		return nil, fmt.Errorf("restore: bad backup id %q", m.ID)
	}
	if m.PGMajor < 10 {
		return nil, fmt.Errorf("restore: backup %s records PostgreSQL major %d; it cannot be restored", m.ID, m.PGMajor)
	}
	if strings.TrimSpace(o.PGDATA) == "" {
		return nil, errors.New("restore: no target data directory (PGDATA)")
	}
	if o.Jobs < 1 {
		o.Jobs = 1
	}
	if o.Owner != nil && os.Geteuid() != 0 && (o.Owner.UID != os.Geteuid() || o.Owner.GID != os.Getegid()) {
		return nil, fmt.Errorf("restore: files can be given to uid %d gid %d only when running as root", o.Owner.UID, o.Owner.GID)
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pgdata, err := filepath.Abs(o.PGDATA)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	x := &extractor{m: m, o: o, open: open, log: log, byOID: map[uint32]*destDir{}}
	x.base = &destDir{dir: filepath.Clean(pgdata), dirs: map[string]fs.FileMode{}, dmode: 0o700}

	locs := map[uint32]string{}
	for _, ts := range m.Tablespaces {
		if _, dup := locs[ts.OID]; dup || ts.OID == 0 {
			return nil, fmt.Errorf("restore: backup %s lists tablespace %d twice (or OID 0)", m.ID, ts.OID)
		}
		locs[ts.OID] = ts.Location
	}
	for i := range m.Archives {
		a := &m.Archives[i]
		if a.Name == "base.tar" {
			if x.base.archive != nil || a.OID != 0 {
				return nil, fmt.Errorf("restore: backup %s has a malformed base.tar archive entry", m.ID)
			}
			x.base.archive = a
			continue
		}
		if a.OID == 0 || a.Name != fmt.Sprintf("%d.tar", a.OID) {
			return nil, fmt.Errorf("restore: backup %s has an unexpected archive %q (oid %d)", m.ID, a.Name, a.OID)
		}
		if x.byOID[a.OID] != nil {
			return nil, fmt.Errorf("restore: backup %s has archive %s twice", m.ID, a.Name)
		}
		loc, mapped := o.TablespaceMap[a.OID]
		if !mapped {
			var ok bool
			if loc, ok = locs[a.OID]; !ok {
				return nil, fmt.Errorf("restore: backup %s has archive %s but no location for tablespace %d; map it with a tablespace mapping", m.ID, a.Name, a.OID)
			}
		}
		if loc == "" || !filepath.IsAbs(loc) {
			return nil, fmt.Errorf("restore: tablespace %d: location %q is not an absolute path", a.OID, loc)
		}
		t := &destDir{oid: a.OID, archive: a, dir: filepath.Clean(loc), dirs: map[string]fs.FileMode{},
			dmode: 0o700, spcMajor: fmt.Sprintf("PG_%d_", m.PGMajor)}
		x.byOID[a.OID] = t
		x.spcs = append(x.spcs, t)
	}
	if x.base.archive == nil {
		return nil, fmt.Errorf("restore: backup %s has no base.tar archive", m.ID)
	}
	for oid := range locs {
		if x.byOID[oid] == nil {
			return nil, fmt.Errorf("restore: backup %s lists tablespace %d but has no archive for it", m.ID, oid)
		}
	}
	for oid := range o.TablespaceMap {
		if x.byOID[oid] == nil {
			return nil, fmt.Errorf("restore: tablespace mapping for OID %d, but backup %s has no such tablespace", oid, m.ID)
		}
	}
	sort.Slice(x.spcs, func(i, j int) bool { return x.spcs[i].oid < x.spcs[j].oid })
	seen := map[string]uint32{}
	for _, t := range x.spcs {
		if t.dir == x.base.dir {
			return nil, fmt.Errorf("restore: tablespace %d would be restored into the data directory itself (%s)", t.oid, t.dir)
		}
		if other, dup := seen[t.dir]; dup {
			return nil, fmt.Errorf("restore: tablespaces %d and %d would both be restored into %s", other, t.oid, t.dir)
		}
		seen[t.dir] = t.oid
	}
	for _, a := range m.Archives {
		for i, p := range a.Parts {
			if p.Bytes < 0 {
				return nil, fmt.Errorf("restore: %s part %d has a negative size", a.Name, i)
			}
		}
	}
	return x, nil
}

func (x *extractor) close() {
	for _, t := range append([]*destDir{x.base}, x.spcs...) {
		if t.root != nil {
			t.root.Close()
		}
	}
}

// readMarker returns the first line of dir's marker, and whether dir has one.
func readMarker(dir string) (string, bool, error) {
	p := filepath.Join(dir, markerName)
	st, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	if !st.Mode().IsRegular() {
		return "", false, fmt.Errorf("%s is not a regular file", p)
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 512))
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line), true, nil
}

// inspect checks t.dir: it sets existed and hadMark, and returns the entries that make it
// unusable (for PGDATA: anything but the marker; for a tablespace: non-empty
// PG_<major>_* entries).
func (x *extractor) inspect(t *destDir) error {
	st, err := os.Stat(t.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s exists and is not a directory", t.dir)
	}
	t.existed = true
	ents, err := os.ReadDir(t.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Name() == markerName {
			continue
		}
		if t.oid == 0 {
			t.stale = append(t.stale, e.Name())
			continue
		}
		if !strings.HasPrefix(e.Name(), t.spcMajor) {
			continue // another major's tablespace directory, or anything else: not ours
		}
		if !e.IsDir() {
			t.stale = append(t.stale, e.Name())
			continue
		}
		sub, err := os.ReadDir(filepath.Join(t.dir, e.Name()))
		if err != nil {
			return err
		}
		if len(sub) > 0 {
			t.stale = append(t.stale, e.Name())
		}
	}
	_, t.hadMark, err = readMarker(t.dir)
	return err
}

func listNames(names []string) string {
	const show = 5
	if len(names) <= show {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:show], ", ") + fmt.Sprintf(" and %d more", len(names)-show)
}

// prepare checks every target, then creates them, writes the markers and, with Force,
// cleans what an unfinished restore left. Nothing is written before every check passed.
func (x *extractor) prepare() error {
	b := x.base
	if err := x.inspect(b); err != nil {
		return fmt.Errorf("restore: data directory %s: %w", b.dir, err)
	}
	if len(b.stale) > 0 {
		if !b.hadMark {
			return fmt.Errorf("restore: data directory %s is not empty (%s) and is not an unfinished pgark restore; pgark restores only into an empty or missing directory (%w)", b.dir, listNames(b.stale), ErrTargetInUse)
		}
		if !x.o.Force {
			line, _, _ := readMarker(b.dir)
			return fmt.Errorf("restore: data directory %s holds an unfinished pgark restore (%s); `pgark restore --force` cleans it and starts again", b.dir, line)
		}
	}
	for _, t := range x.spcs {
		if err := x.inspect(t); err != nil {
			return fmt.Errorf("restore: tablespace %d location %s: %w", t.oid, t.dir, err)
		}
		if len(t.stale) == 0 {
			continue
		}
		if !t.hadMark {
			return fmt.Errorf("restore: tablespace %d location %s already holds %s, which is not empty: it may be a live tablespace; restore it elsewhere with a tablespace mapping (OID %d=DIR) (%w)", t.oid, t.dir, listNames(t.stale), t.oid, ErrTargetInUse)
		}
		if !x.o.Force {
			return fmt.Errorf("restore: tablespace %d location %s holds an unfinished pgark restore (%s); `pgark restore --force` cleans it and starts again", t.oid, t.dir, listNames(t.stale))
		}
	}

	// Create (or open) PGDATA, mark it, clean it.
	if err := x.openTarget(b); err != nil {
		return fmt.Errorf("restore: data directory %s: %w", b.dir, err)
	}
	if b.hadMark && len(b.stale) > 0 {
		line, _, _ := readMarker(b.dir)
		x.log.Warn("restore: --force: cleaning an unfinished restore", "dir", b.dir, "marker", line, "entries", len(b.stale))
	}
	if err := x.writeMarker(b); err != nil {
		return fmt.Errorf("restore: data directory %s: %w", b.dir, err)
	}
	if len(b.stale) > 0 {
		for _, name := range b.stale {
			if err := b.root.RemoveAll(name); err != nil {
				return fmt.Errorf("restore: cleaning %s: %w", b.dir, err)
			}
		}
		if err := rootdir.Sync(b.root, "."); err != nil {
			return err
		}
	}
	// PostgreSQL refuses a data directory with looser permissions than 0750.
	if err := chmodDir(b.root, ".", 0o700); err != nil {
		return err
	}
	if x.o.Owner != nil {
		if err := b.root.Lchown(".", x.o.Owner.UID, x.o.Owner.GID); err != nil {
			return err
		}
	}
	for _, t := range x.spcs {
		if err := x.openTarget(t); err != nil {
			return fmt.Errorf("restore: tablespace %d location %s: %w", t.oid, t.dir, err)
		}
		if t.hadMark && len(t.stale) > 0 {
			x.log.Warn("restore: --force: cleaning an unfinished restore", "tablespace", t.oid, "dir", t.dir, "entries", listNames(t.stale))
		}
		if err := x.writeMarker(t); err != nil {
			return fmt.Errorf("restore: tablespace %d location %s: %w", t.oid, t.dir, err)
		}
		for _, name := range t.stale {
			if err := t.root.RemoveAll(name); err != nil {
				return fmt.Errorf("restore: cleaning %s: %w", filepath.Join(t.dir, name), err)
			}
		}
		if len(t.stale) > 0 {
			if err := rootdir.Sync(t.root, "."); err != nil {
				return err
			}
		}
		x.log.Info("restore: tablespace", "oid", t.oid, "location", t.dir)
	}
	return nil
}

// openTarget creates t.dir if missing (parents 0755, the directory itself 0700, given to
// Owner) and opens it as an os.Root.
func (x *extractor) openTarget(t *destDir) error {
	if !t.existed {
		parent := filepath.Dir(t.dir)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return err
		}
		if err := os.Mkdir(t.dir, 0o700); err != nil {
			return err
		}
		if x.o.Owner != nil {
			if err := os.Lchown(t.dir, x.o.Owner.UID, x.o.Owner.GID); err != nil {
				return err
			}
		}
		if err := syncPath(parent); err != nil {
			return err
		}
	}
	r, err := os.OpenRoot(t.dir)
	if err != nil {
		return err
	}
	t.root = r
	return nil
}

func (x *extractor) writeMarker(t *destDir) error {
	if err := t.root.Remove(markerName); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	what := "data directory"
	if t.oid != 0 {
		what = fmt.Sprintf("tablespace %d", t.oid)
	}
	body := fmt.Sprintf("pgark restore of backup %s in progress since %s\n"+
		"This %s is incomplete and must not be used. `pgark restore --force` cleans it and starts again.\n",
		x.m.ID, time.Now().UTC().Format(time.RFC3339), what)
	f, err := t.root.OpenFile(markerName, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(body); err != nil {
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
	return rootdir.Sync(t.root, ".")
}

// ---------------------------------------------------------------- extraction

type task struct {
	t       *destDir
	idx     int
	ref     catalog.ObjectRef
	archive string
}

func (x *extractor) run(ctx context.Context, tasks []task) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ch := make(chan task)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	for range min(x.o.Jobs, max(len(tasks), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, copyBufSize)
			for task := range ch {
				if ctx.Err() != nil {
					continue
				}
				if err := x.part(ctx, task, buf); err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					cancel(err)
				}
			}
		}()
	}
feed:
	for _, task := range tasks {
		select {
		case ch <- task:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return context.Cause(ctx)
}

// counter counts what is read from a part and reports progress.
type counter struct {
	r       io.Reader
	n       int64
	pending int64
	x       *extractor
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.pending += int64(n)
	if c.pending >= progressStep {
		c.flush()
	}
	return n, err
}

func (c *counter) flush() {
	if c.pending > 0 {
		c.x.progress(c.pending)
		c.pending = 0
	}
}

func (x *extractor) progress(n int64) {
	x.progMu.Lock()
	defer x.progMu.Unlock()
	x.progDone += n
	if x.o.Progress != nil {
		x.o.Progress(x.progDone)
	}
}

// part extracts one part: a sequence of complete tar members (the last part of an
// archive ends with the end-of-archive trailer). It reads the part to EOF, so that the
// opener's checksum and size check runs.
func (x *extractor) part(ctx context.Context, task task, buf []byte) (err error) {
	name := fmt.Sprintf("%s part %d (%s)", task.archive, task.idx, task.ref.Key)
	rc, err := x.open(ctx, task.ref)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer func() {
		if cerr := rc.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("%s: %w", name, cerr)
		}
	}()
	cr := &counter{r: rc, x: x}
	defer cr.flush()
	tr := tar.NewReader(cr)
	members := 0
	for {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, tar.ErrHeader) {
			return refused("%s: reading a tar header at byte %d: %w", name, cr.n, err)
		}
		if err != nil {
			return fmt.Errorf("%s: reading a tar header at byte %d: %w", name, cr.n, err)
		}
		members++
		if task.ref.Bytes > 0 && hdr.Size > task.ref.Bytes-cr.n {
			return refused("%s: member %q claims %d bytes, more than the %d left in the part", name, hdr.Name, hdr.Size, task.ref.Bytes-cr.n)
		}
		if err := x.member(ctx, task.t, hdr, tr, buf); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	// After the end-of-archive trailer only zero padding may follow; read it to EOF.
	for {
		n, rerr := cr.Read(buf)
		if slices.ContainsFunc(buf[:n], func(c byte) bool { return c != 0 }) {
			return refused("%s: data after the end-of-archive marker at byte %d", name, cr.n-int64(n))
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%s: %w", name, rerr)
		}
	}
	if task.ref.Bytes > 0 && cr.n != task.ref.Bytes {
		return fmt.Errorf("%s: read %d bytes, the backup records %d", name, cr.n, task.ref.Bytes)
	}
	x.log.Debug("restore: part extracted", "archive", task.archive, "part", task.idx, "members", members, "bytes", cr.n)
	return nil
}

var spcDirRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^PG_[0-9]+_[0-9]+$`) })

// cleanName validates a member name and returns it relative to the target ("" for the
// target itself). It refuses absolute names, ".." components and anything that would leave
// the target once cleaned.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", refused("empty member name")
	}
	if strings.ContainsRune(name, 0) {
		return "", refused("member name %q contains a NUL byte", name)
	}
	if strings.HasPrefix(name, "/") {
		return "", refused("member %q has an absolute path", name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", refused("member %q has a .. component", name)
		}
	}
	rel := path.Clean(name)
	if rel == "." {
		return "", nil
	}
	if rel == ".." || strings.HasPrefix(rel, "../") || strings.HasPrefix(rel, "/") || !filepath.IsLocal(rel) {
		return "", refused("member %q leaves the target directory", name)
	}
	return rel, nil
}

// memberKind is what member() does with a validated member.
type memberKind int

const (
	kindDir memberKind = iota
	kindFile
	kindSpcLink // pg_tblspc/<oid> symlink (backups taken without TABLESPACE_MAP)
	kindSkip    // the target directory itself
	kindIncr    // INCREMENTAL.<file>: applied to <file> (PostgreSQL 17+ chains)
)

// validate checks one member and returns its relative path and what to do with it.
// Nothing has been written for the member when it returns.
func (x *extractor) validate(t *destDir, hdr *tar.Header) (string, memberKind, error) {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return "", 0, err
	}
	perm := hdr.Mode & 0o7777
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return "", 0, refused("member %q is a sparse file: refused", hdr.Name)
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
	case tar.TypeReg:
		if rel == "" {
			return "", 0, refused("member %q: a regular file where the target directory is", hdr.Name)
		}
	case tar.TypeSymlink:
	case tar.TypeLink:
		return "", 0, refused("member %q is a hard link (to %q): refused", hdr.Name, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock:
		return "", 0, refused("member %q is a device node: refused", hdr.Name)
	case tar.TypeFifo:
		return "", 0, refused("member %q is a FIFO: refused", hdr.Name)
	default:
		return "", 0, refused("member %q has an unsupported tar type %q: refused", hdr.Name, hdr.Typeflag)
	}
	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return "", 0, refused("member %q: not a directory", hdr.Name)
		}
		return "", kindSkip, nil
	}
	first, rest, _ := strings.Cut(rel, "/")
	if t.oid == 0 {
		switch {
		case rel == markerName || rel == controlTmp:
			return "", 0, refused("member %q uses a name reserved by pgark", hdr.Name)
		case first == "pg_tblspc" && rest != "":
			oid, perr := strconv.ParseUint(rest, 10, 32)
			if hdr.Typeflag != tar.TypeSymlink || perr != nil || x.byOID[uint32(oid)] == nil {
				return "", 0, refused("member %q: pg_tblspc may hold only the symlinks of the backup's tablespaces", hdr.Name)
			}
			if !filepath.IsAbs(hdr.Linkname) {
				return "", 0, refused("member %q: tablespace link target %q is not absolute", hdr.Name, hdr.Linkname)
			}
			return rel, kindSpcLink, nil
		}
	} else if !spcDirRe().MatchString(first) || !strings.HasPrefix(first, t.spcMajor) {
		return "", 0, refused("member %q of tablespace %d is outside its %s<catalog version> directory", hdr.Name, t.oid, t.spcMajor)
	}
	if hdr.Typeflag == tar.TypeSymlink {
		return "", 0, refused("member %q is a symlink (to %q): PostgreSQL puts symlinks only in pg_tblspc/; refused", hdr.Name, hdr.Linkname)
	}
	if hdr.Typeflag == tar.TypeDir {
		if perm&^0o750 != 0 {
			return "", 0, refused("directory %q has mode %04o, looser than PostgreSQL's 0750: refused", hdr.Name, perm)
		}
		return rel, kindDir, nil
	}
	if perm&^0o640 != 0 {
		return "", 0, refused("file %q has mode %04o, looser than PostgreSQL's 0640: refused", hdr.Name, perm)
	}
	if target, ok := incremental.Target(rel); ok {
		if x.layer == 0 || x.m.PGMajor < 17 || x.chain[x.layer].Method == catalog.MethodFile {
			return "", 0, refused("member %q is an incremental file in backup %s, which is not a PostgreSQL 17+ incremental backup: refused", hdr.Name, x.chain[x.layer].ID)
		}
		if _, err := cleanName(target); err != nil {
			return "", 0, err
		}
		return target, kindIncr, nil
	}
	if t.oid == 0 && rel == "tablespace_map" && hdr.Size > tablespaceMapLimit {
		return "", 0, refused("member tablespace_map is %d bytes: refused", hdr.Size)
	}
	return rel, kindFile, nil
}

func (x *extractor) member(ctx context.Context, t *destDir, hdr *tar.Header, tr io.Reader, buf []byte) error {
	rel, kind, err := x.validate(t, hdr)
	if err != nil {
		return err
	}
	perm := fs.FileMode(hdr.Mode & 0o777)
	switch kind {
	case kindSkip:
		return nil
	case kindSpcLink:
		// Recreated at the end, pointing at the final location.
		return nil
	case kindDir:
		if err := x.mkdirs(t, rel); err != nil {
			return err
		}
		x.markSeen(t, rel)
		t.mu.Lock()
		t.dirs[rel] = fs.ModeDir | perm
		t.mu.Unlock()
		if t.oid == 0 && rel == "global" {
			x.mu.Lock()
			x.globalMode = perm
			x.mu.Unlock()
		}
		return nil
	}
	if kind == kindIncr {
		return x.applyIncremental(ctx, t, rel, perm, hdr.Size, tr, buf)
	}
	// A regular file.
	if t.oid == 0 {
		switch rel {
		case "tablespace_map":
			// Rewritten at the end with the final locations.
			b, err := io.ReadAll(io.LimitReader(tr, tablespaceMapLimit+1))
			if err != nil {
				return fmt.Errorf("reading tablespace_map: %w", err)
			}
			if int64(len(b)) != hdr.Size {
				return refused("tablespace_map: read %d bytes, header says %d", len(b), hdr.Size)
			}
			x.mu.Lock()
			defer x.mu.Unlock()
			if x.sawTsMap {
				return refused("tablespace_map appears twice")
			}
			x.sawTsMap, x.tsMap, x.tsMapMode = true, b, perm
			x.seen[t][rel] = true
			return nil
		case controlFile:
			rel = controlTmp
		case "backup_label":
			return x.writeLabel(ctx, t, perm, hdr.Size, tr, buf)
		}
	}
	if err := x.claim(t, rel); err != nil {
		return err
	}
	if x.layer > 0 && x.chain[x.layer].Method != catalog.MethodFile {
		x.relationChanged(t, rel)
	}
	if err := x.writeFile(ctx, t, rel, perm, hdr.Size, tr, buf); err != nil {
		return err
	}
	x.mu.Lock()
	x.files++
	if t.oid == 0 {
		switch rel {
		case controlTmp:
			x.sawControl = true
		case "backup_label":
			x.sawLabel = true
		}
	}
	x.mu.Unlock()
	return nil
}

// markSeen records that the current layer holds rel in t.
func (x *extractor) markSeen(t *destDir, rel string) {
	x.mu.Lock()
	x.seen[t][rel] = true
	x.mu.Unlock()
}

// claim prepares rel for a regular file of the current layer: it must not
// have been written by this layer already (a member twice), its parent
// directories exist, and the file an earlier layer wrote there is removed.
func (x *extractor) claim(t *destDir, rel string) error {
	x.mu.Lock()
	dup := x.seen[t][rel]
	x.seen[t][rel] = true
	x.mu.Unlock()
	if dup {
		return refused("%s already exists: it appears twice in backup %s: refused", filepath.Join(t.dir, rel), x.chain[x.layer].ID)
	}
	if dir := path.Dir(rel); dir != "." {
		if err := x.mkdirs(t, dir); err != nil {
			return err
		}
	}
	if x.layer == 0 {
		return nil
	}
	st, err := t.root.Lstat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case st.IsDir():
		return t.root.RemoveAll(rel)
	default:
		return t.root.Remove(rel)
	}
}

// writeLabel writes backup_label without its INCREMENTAL FROM lines, after
// checking that they name the start of the previous backup of the chain.
func (x *extractor) writeLabel(ctx context.Context, t *destDir, perm fs.FileMode, size int64, r io.Reader, buf []byte) error {
	const limit = 64 << 10
	if size > limit {
		return refused("backup_label is %d bytes: refused", size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("backup_label: %w", err)
	}
	out, from, inc, err := incremental.StripLabel(b)
	if err != nil {
		return refused("%v", err)
	}
	cur := x.chain[x.layer]
	switch {
	case (x.layer == 0 || cur.Method == catalog.MethodFile) && inc:
		return refused("backup %s is recorded as full or file-level, but its backup_label says it is block-level incremental", cur.ID)
	case cur.Method == catalog.MethodFile:
		// A file-level backup is a full one to the server: its label names
		// no parent, the metadata does.
	case x.layer > 0 && !inc:
		return refused("backup %s is recorded as incremental, but its backup_label has no INCREMENTAL FROM lines", cur.ID)
	case x.layer > 0:
		parent := x.chain[x.layer-1]
		lsn, err := wal.ParseLSN(from.LSN)
		if err != nil || lsn != parent.Start() || from.Timeline != parent.StartTimeline {
			return refused("backup %s was taken against a backup that started at %s on timeline %d, not against %s (%s, timeline %d)", cur.ID, from.LSN, from.Timeline, parent.ID, parent.StartLSN, parent.StartTimeline)
		}
	}
	if err := x.claim(t, "backup_label"); err != nil {
		return err
	}
	if err := x.writeFile(ctx, t, "backup_label", perm, int64(len(out)), bytes.NewReader(out), buf); err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.files++
	x.sawLabel = true
	if inc && x.layer == len(x.chain)-1 {
		x.rebuilt["backup_label"] = Rebuilt{Size: int64(len(out)), Checksum: checksumHex(x.m.ManifestChecksums, out)}
	}
	return nil
}

// relFileRe matches a relation file: <relfilenode>[_<fork>][.<segno>].
var relFileRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^([0-9]+)(_[a-z]+)?(\.[0-9]+)?$`) })

// relationChanged records that a block-level incremental layer changed
// (or sent whole) rel, if it is a main-fork relation file.
func (x *extractor) relationChanged(t *destDir, rel string) {
	dir, base := path.Split(rel)
	m := relFileRe().FindStringSubmatch(base)
	if m == nil || m[2] != "" {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.changed == nil {
		x.changed = map[*destDir]map[string]bool{}
	}
	if x.changed[t] == nil {
		x.changed[t] = map[string]bool{}
	}
	x.changed[t][dir+m[1]] = true
}

// dropVisibilityMaps removes the visibility map of every relation a
// block-level incremental layer changed. PostgreSQL 17 and 18's WAL
// summaries do not record the visibility map blocks that heap changes clear
// (the heap records clear them as a side effect), so an incremental backup
// can carry a stale "all visible" bit for a page whose tuples changed, and
// index-only scans of the rebuilt cluster would return deleted rows.
// Without a visibility map PostgreSQL treats no page as all-visible; the
// next VACUUM rebuilds it.
func (x *extractor) dropVisibilityMaps() error {
	for t, rels := range x.changed {
		for rel := range rels {
			dir, base := path.Split(rel)
			ents, err := fs.ReadDir(t.root.FS(), path.Clean("./"+dir))
			if err != nil {
				continue // the relation is gone
			}
			for _, e := range ents {
				m := relFileRe().FindStringSubmatch(e.Name())
				if m == nil || m[1] != base || m[2] != "_vm" {
					continue
				}
				p := dir + e.Name()
				if err := t.root.Remove(p); err != nil {
					return fmt.Errorf("removing the visibility map %s: %w", filepath.Join(t.dir, p), err)
				}
				mp := p
				if t.oid != 0 {
					mp = fmt.Sprintf("pg_tblspc/%d/%s", t.oid, p)
				}
				x.rebuilt[mp] = Rebuilt{Removed: true}
				if err := rootdir.Sync(t.root, path.Clean("./"+dir)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// checksumHex is b's checksum as the manifest writes it ("" for NONE).
func checksumHex(alg string, b []byte) string {
	h := tarstream.NewChecksumHash(alg)
	if h == nil {
		return ""
	}
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// applyIncremental applies the incremental file for rel (read from r, size
// bytes) to the file an earlier layer left there.
func (x *extractor) applyIncremental(ctx context.Context, t *destDir, rel string, perm fs.FileMode, size int64, r io.Reader, buf []byte) (err error) {
	x.mu.Lock()
	dup := x.seen[t][rel]
	x.seen[t][rel] = true
	x.mu.Unlock()
	if dup {
		return refused("%s already exists: it appears twice in backup %s: refused", filepath.Join(t.dir, rel), x.chain[x.layer].ID)
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}
	f, err := t.root.OpenFile(rel, os.O_RDWR|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: backup %s changes %s, which backup %s does not hold", catalog.ErrBrokenChain, x.chain[x.layer].ID, rel, x.chain[x.layer-1].ID)
	}
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return refused("%s is not a regular file", filepath.Join(t.dir, rel))
	}
	ih, err := incremental.Apply(f, r, size, x.limits, buf)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if len(ih.Blocks) > 0 {
		x.relationChanged(t, rel)
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if x.o.Owner != nil {
		if err := f.Chown(x.o.Owner.UID, x.o.Owner.GID); err != nil {
			return err
		}
	}
	if err := x.syncFile(f); err != nil {
		return err
	}
	x.mu.Lock()
	x.applied++
	x.files++
	x.mu.Unlock()
	if x.layer != len(x.chain)-1 {
		return nil
	}
	// The last backup's manifest lists INCREMENTAL.<name>: the restored
	// directory's manifest lists the rebuilt file, with its checksum.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	var w io.Writer = io.Discard
	h := tarstream.NewChecksumHash(x.m.ManifestChecksums)
	if h != nil {
		w = h
	}
	n, err := io.CopyBuffer(w, f, buf)
	if err != nil {
		return fmt.Errorf("%s: checksum of the rebuilt file: %w", rel, err)
	}
	mp := rel
	if t.oid != 0 {
		mp = fmt.Sprintf("pg_tblspc/%d/%s", t.oid, rel)
	}
	sum := ""
	if h != nil {
		sum = hex.EncodeToString(h.Sum(nil))
	}
	x.mu.Lock()
	x.rebuilt[mp] = Rebuilt{Size: n, Checksum: sum}
	x.mu.Unlock()
	return nil
}

// mkdirs makes sure rel (a directory, relative to t) exists, creating missing components
// one by one (mode 0700 until the end, Owner applied) after checking that no existing
// component is a symlink or something other than a directory.
func (x *extractor) mkdirs(t *destDir, rel string) error {
	comps := strings.Split(rel, "/")
	for i := range comps {
		p := strings.Join(comps[:i+1], "/")
		t.mu.Lock()
		_, known := t.dirs[p]
		t.mu.Unlock()
		if known {
			continue
		}
		st, err := t.root.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			err = t.root.Mkdir(p, 0o700)
			if err == nil && x.o.Owner != nil {
				err = t.root.Lchown(p, x.o.Owner.UID, x.o.Owner.GID)
			}
			if errors.Is(err, fs.ErrExist) {
				st, err = t.root.Lstat(p) // created meanwhile by another worker
			} else if err == nil {
				t.mu.Lock()
				if _, ok := t.dirs[p]; !ok {
					t.dirs[p] = 0
				}
				t.mu.Unlock()
				continue
			}
		}
		if err != nil {
			return err
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%s: path component %s is a symlink: refused", filepath.Join(t.dir, rel), p)
		}
		if !st.IsDir() {
			return refused("%s: path component %s is not a directory", filepath.Join(t.dir, rel), p)
		}
		t.mu.Lock()
		if _, ok := t.dirs[p]; !ok {
			t.dirs[p] = 0
		}
		t.mu.Unlock()
	}
	return nil
}

// writeFile creates rel (which must not exist) and copies size bytes from r into it, then
// applies mode and owner and fsyncs it.
func (x *extractor) writeFile(ctx context.Context, t *destDir, rel string, perm fs.FileMode, size int64, r io.Reader, buf []byte) (err error) {
	f, err := t.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return refused("%s already exists (a member appears twice?): refused", filepath.Join(t.dir, rel))
	}
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	var done int64
	for done < size {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		n := int(min(int64(len(buf)), size-done))
		k, rerr := io.ReadFull(r, buf[:n])
		if k > 0 {
			if _, werr := f.Write(buf[:k]); werr != nil {
				return werr
			}
			done += int64(k)
		}
		if rerr != nil {
			if errors.Is(rerr, io.ErrUnexpectedEOF) || errors.Is(rerr, io.EOF) {
				return fmt.Errorf("%s: the part ends after %d of the member's %d bytes: %w", rel, done, size, io.ErrUnexpectedEOF)
			}
			return fmt.Errorf("%s: %w", rel, rerr)
		}
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if x.o.Owner != nil {
		if err := f.Chown(x.o.Owner.UID, x.o.Owner.GID); err != nil {
			return err
		}
	}
	return x.syncFile(f)
}

// syncFile fsyncs a file written by the last backup of the chain. The
// files of earlier backups may still be replaced or changed: finish
// fsyncs those that stay, once.
func (x *extractor) syncFile(f *os.File) error {
	if x.layer < len(x.chain)-1 {
		return nil
	}
	return f.Sync()
}

// syncEarlier fsyncs, after a chain's last backup, every file that an
// earlier backup wrote and the last one left as it was.
func (x *extractor) syncEarlier() error {
	if len(x.chain) < 2 {
		return nil
	}
	for t, seen := range x.seen {
		err := fs.WalkDir(t.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() || seen[p] || p == markerName {
				return err
			}
			f, err := t.root.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			serr := f.Sync()
			if cerr := f.Close(); serr == nil {
				serr = cerr
			}
			return serr
		})
		if err != nil {
			return fmt.Errorf("fsync %s: %w", t.dir, err)
		}
	}
	return nil
}

// ---------------------------------------------------------------- the end

// finish runs after every part was extracted: it creates the directories the server
// expects, rewrites tablespace_map, creates the pg_tblspc symlinks, applies directory
// modes, fsyncs every directory, and only then renames pg_control into place. The markers
// are removed last.
func (x *extractor) finish() error {
	b := x.base
	if err := x.dropVisibilityMaps(); err != nil {
		return err
	}
	if err := x.syncEarlier(); err != nil {
		return err
	}
	dataMode := fs.FileMode(0o700)
	if x.globalMode == 0o750 {
		dataMode = 0o750 // initdb -g (group access): PostgreSQL takes the mode from PGDATA
	}
	ensure := slices.Clone(ensureDirs)
	if x.m.PGMajor >= 17 {
		ensure = append(ensure, "pg_wal/summaries")
	}
	for _, d := range ensure {
		b.mu.Lock()
		_, known := b.dirs[d]
		b.mu.Unlock()
		if known {
			continue
		}
		if err := x.mkdirs(b, d); err != nil {
			return err
		}
		x.log.Debug("restore: created a directory the backup lacks", "dir", d)
	}
	b.dmode = dataMode

	if x.sawTsMap {
		out, err := x.rewriteTablespaceMap()
		if err != nil {
			return err
		}
		if err := x.writeFile(context.Background(), b, "tablespace_map", x.tsMapMode, int64(len(out)), bytes.NewReader(out), make([]byte, 32<<10)); err != nil {
			return err
		}
		if !bytes.Equal(out, x.tsMap) {
			// Remapped locations: the restored manifest describes this file.
			x.rebuilt["tablespace_map"] = Rebuilt{Size: int64(len(out)), Checksum: checksumHex(x.m.ManifestChecksums, out)}
		}
	}
	for _, t := range x.spcs {
		link := "pg_tblspc/" + strconv.FormatUint(uint64(t.oid), 10)
		if err := b.root.Symlink(t.dir, link); err != nil {
			return fmt.Errorf("creating %s: %w", link, err)
		}
		if x.o.Owner != nil {
			if err := b.root.Lchown(link, x.o.Owner.UID, x.o.Owner.GID); err != nil {
				return err
			}
		}
	}

	// Directory modes and fsync, deepest first, every target.
	for _, t := range append(slices.Clone(x.spcs), b) {
		dirs := make([]string, 0, len(t.dirs))
		for d := range t.dirs {
			dirs = append(dirs, d)
		}
		sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
		for _, d := range dirs {
			m := t.dirs[d] &^ fs.ModeDir
			if t.dirs[d] == 0 {
				m = t.dmode
			}
			if err := chmodDir(t.root, d, m); err != nil {
				return err
			}
			if err := rootdir.Sync(t.root, d); err != nil {
				return err
			}
		}
		if t == b {
			if err := chmodDir(t.root, ".", dataMode); err != nil {
				return err
			}
		}
		if err := rootdir.Sync(t.root, "."); err != nil {
			return err
		}
	}

	// Everything is durable: now the directory may become startable.
	if _, err := b.root.Lstat(controlFile); err == nil {
		return fmt.Errorf("%s exists before the end of the restore", controlFile)
	}
	if err := b.root.Rename(controlTmp, controlFile); err != nil {
		return err
	}
	if err := rootdir.Sync(b.root, "global"); err != nil {
		return err
	}
	for _, t := range x.spcs {
		if err := t.root.Remove(markerName); err != nil {
			return err
		}
		if err := rootdir.Sync(t.root, "."); err != nil {
			return err
		}
	}
	if err := b.root.Remove(markerName); err != nil {
		return err
	}
	return rootdir.Sync(b.root, ".")
}

// tablespaceMapEntry is one line of tablespace_map.
type tablespaceMapEntry struct {
	OID  uint32
	Path string
}

// parseTablespaceMap parses PostgreSQL's tablespace_map: lines "<oid> <path>", where
// '\n', '\r' and '\\' in the path are preceded by a backslash (xlog.c do_pg_backup_start,
// read_tablespace_map).
func parseTablespaceMap(b []byte) ([]tablespaceMapEntry, error) {
	var out []tablespaceMapEntry
	var line []byte
	flush := func() error {
		if len(line) == 0 {
			return nil
		}
		s := string(line)
		line = line[:0]
		i := strings.IndexAny(s, " \t")
		if i <= 0 {
			return refused("invalid line %q in tablespace_map", s)
		}
		oid, err := strconv.ParseUint(s[:i], 10, 32)
		if err != nil || oid == 0 {
			return refused("invalid OID in tablespace_map line %q", s)
		}
		p := strings.TrimLeft(s[i:], " \t")
		if p == "" {
			return refused("no path in tablespace_map line %q", s)
		}
		out = append(out, tablespaceMapEntry{OID: uint32(oid), Path: p})
		return nil
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == '\\' && i+1 < len(b) && (b[i+1] == '\n' || b[i+1] == '\r' || b[i+1] == '\\') {
			line = append(line, b[i+1])
			i++
			continue
		}
		if c == '\n' {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		line = append(line, c)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// formatTablespaceMap writes entries the way PostgreSQL does.
func formatTablespaceMap(entries []tablespaceMapEntry) []byte {
	var sb strings.Builder
	for _, e := range entries {
		sb.WriteString(strconv.FormatUint(uint64(e.OID), 10))
		sb.WriteByte(' ')
		for _, c := range []byte(e.Path) {
			if c == '\n' || c == '\r' || c == '\\' {
				sb.WriteByte('\\')
			}
			sb.WriteByte(c)
		}
		sb.WriteByte('\n')
	}
	return []byte(sb.String())
}

// rewriteTablespaceMap returns tablespace_map with the final locations. When no location
// changed, the server's bytes are kept as they are (so pg_verifybackup still matches them).
func (x *extractor) rewriteTablespaceMap() ([]byte, error) {
	entries, err := parseTablespaceMap(x.tsMap)
	if err != nil {
		return nil, err
	}
	changed := false
	seen := map[uint32]bool{}
	for i, e := range entries {
		t := x.byOID[e.OID]
		if t == nil {
			return nil, refused("tablespace_map names tablespace %d, which the backup has no archive for", e.OID)
		}
		if seen[e.OID] {
			return nil, refused("tablespace_map names tablespace %d twice", e.OID)
		}
		seen[e.OID] = true
		if e.Path != t.dir {
			entries[i].Path = t.dir
			changed = true
		}
	}
	for _, t := range x.spcs {
		if !seen[t.oid] {
			x.log.Warn("restore: tablespace_map does not list a tablespace of the backup; its pg_tblspc symlink is created anyway", "oid", t.oid)
		}
	}
	if !changed && bytes.Equal(formatTablespaceMap(entries), x.tsMap) {
		return x.tsMap, nil
	}
	x.log.Info("restore: tablespace_map rewritten with the new locations (pg_verifybackup will report it as modified: use --ignore=tablespace_map)")
	return formatTablespaceMap(entries), nil
}

// ---------------------------------------------------------------- small helpers

func chmodDir(r *os.Root, rel string, m fs.FileMode) error {
	f, err := rootdir.Open(r, rel)
	if err != nil {
		return err
	}
	err = f.Chmod(m)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncPath fsyncs a directory given by path (the parent of a target we created).
func syncPath(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
