package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgark/pgark/basebackup"
	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/manifest"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/tarstream"
	"github.com/pgark/pgark/wal"
)

// Config is what one base backup needs.
type Config struct {
	Repo  *repo.Repo
	Codec repo.Codec
	// Replication is a physical replication connection (replication=true);
	// SQL is a normal connection to the same server.
	Replication *pgconn.PgConn
	SQL         *pgconn.PgConn

	Label          string
	Fast           bool
	MaxRateKB      int
	PartLimit      int64         // split tar streams into objects of at most this many bytes
	ArchiveTimeout time.Duration // how long to wait for the needed WAL in the repository
	StallTimeout   time.Duration // fail when the stream stays silent this long (0: never)
	// SwitchPrimary, for a backup from a standby, makes the primary finish
	// its current WAL segment (pg_create_restore_point and pg_switch_wal) so
	// that the backup's last segment is archived. Nil: not available.
	SwitchPrimary func(ctx context.Context) error
	Progress      func(done, total int64) // optional; total -1 when unknown
	Version       string                  // pgark's
	FromHost      string
	Log           *slog.Logger

	// Type is catalog.TypeFull (or ""), TypeIncr or TypeDiff. An
	// incremental or differential backup with no usable parent is a full
	// one (Meta.Fallback says why), or fails with ErrNoParent when
	// RequireParent is set.
	Type          string
	RequireParent bool
	MaxChain      int // incremental backups after a full one, at most, in one chain
	// ManifestCache is a local directory where completed backups' manifests
	// are kept for the next incremental backup ("" for none); Identities
	// read a parent's manifest from an encrypted repository when there is
	// no local copy (nil for none).
	ManifestCache string
	Identities    *crypto.Identities
	// Reconnect opens a new replication connection, for a full backup after
	// the server refused an incremental one (its error leaves the first
	// connection unusable). Nil: no fallback after such a refusal.
	Reconnect func(ctx context.Context) (*pgconn.PgConn, error)
}

// ErrManifestMismatch means the streamed files differ from the server's
// backup_manifest.
var ErrManifestMismatch = errors.New("the backup does not match the server's backup_manifest")

// server facts read over the SQL connection.
type serverInfo struct {
	versionNum    int
	inRecovery    bool
	segSize       uint32
	dataChecksums bool
	sysid         uint64
	summarizeWAL  bool
	blockSize     int
	segBlocks     uint32
}

func queryServer(ctx context.Context, c *pgconn.PgConn) (serverInfo, error) {
	var si serverInfo
	res, err := c.Exec(ctx, `SELECT current_setting('server_version_num'), pg_is_in_recovery()::text,
		(SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), current_setting('data_checksums'),
		(SELECT system_identifier::text FROM pg_control_system()),
		coalesce((SELECT setting FROM pg_settings WHERE name = 'summarize_wal'), 'off'),
		current_setting('block_size'), (SELECT setting FROM pg_settings WHERE name = 'segment_size')`).ReadAll()
	if err != nil {
		return si, fmt.Errorf("query server settings: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 8 {
		return si, errors.New("query server settings: unexpected result")
	}
	row := res[0].Rows[0]
	si.versionNum, _ = strconv.Atoi(string(row[0]))
	si.inRecovery = string(row[1]) == "true"
	seg, _ := strconv.ParseUint(string(row[2]), 10, 32)
	si.segSize = uint32(seg)
	si.dataChecksums = string(row[3]) == "on"
	si.sysid, _ = strconv.ParseUint(string(row[4]), 10, 64)
	si.summarizeWAL = string(row[5]) == "on"
	si.blockSize, _ = strconv.Atoi(string(row[6]))
	segBlocks, _ := strconv.ParseUint(string(row[7]), 10, 32)
	si.segBlocks = uint32(segBlocks)
	if si.versionNum < 130000 {
		return si, fmt.Errorf("PostgreSQL %d is not supported (13 to 18 are)", si.versionNum/10000)
	}
	if !wal.ValidSegSize(si.segSize) || si.sysid == 0 {
		return si, fmt.Errorf("unexpected server settings: wal_segment_size %q, system identifier %q", row[2], row[4])
	}
	return si, nil
}

func serverNow(ctx context.Context, c *pgconn.PgConn) (time.Time, error) {
	res, err := c.Exec(ctx, `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`).ReadAll()
	if err != nil {
		return time.Time{}, err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 {
		return time.Time{}, errors.New("clock_timestamp: unexpected result")
	}
	return time.Parse(time.RFC3339Nano, string(res[0].Rows[0][0]))
}

// Run takes a base backup into the repository. The backup becomes visible
// (its metadata object is written) only after every file matched the
// server's manifest and every WAL file it needs is confirmed in the
// repository. On failure the parts written are deleted when possible; in any
// case no metadata exists, so the backup is never listed as usable.
func Run(ctx context.Context, c Config) (*catalog.Meta, error) {
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	si, err := queryServer(ctx, c.SQL)
	if err != nil {
		return nil, err
	}
	sysid, tli, _, err := basebackup.IdentifySystem(ctx, c.Replication)
	if err != nil {
		return nil, err
	}
	if sysid != si.sysid {
		return nil, fmt.Errorf("the replication and SQL connections reach different clusters (%d, %d)", sysid, si.sysid)
	}
	if err := c.Repo.BindCluster(ctx, sysid, si.segSize, "backup"); err != nil {
		return nil, err
	}
	if si.inRecovery && c.SwitchPrimary == nil {
		log.Warn("backing up a standby without --primary-dsn: the last WAL segment is archived only when the primary switches segments; the backup fails after --archive-timeout otherwise")
	}
	c.Log = log
	var parent parentChoice
	switch c.Type {
	case "", catalog.TypeFull:
		c.Type = catalog.TypeFull
	case catalog.TypeIncr, catalog.TypeDiff:
		parent = chooseParent(ctx, &c, si, tli)
		if parent.meta == nil {
			if c.RequireParent {
				return nil, fmt.Errorf("%w for a %s backup: %s", ErrNoParent, c.Type, parent.why)
			}
			log.Warn("taking a full backup instead", "requested", c.Type, "reason", parent.why)
		}
	default:
		return nil, fmt.Errorf("unknown backup type %q (full, incr or diff)", c.Type)
	}
	m, err := attempt(ctx, c, si, sysid, parent)
	var se *basebackup.ServerError
	var fc *FileChangedError
	refused := err != nil && errors.As(err, &se) && strings.HasPrefix(se.Phase, startPhase)
	if err != nil && parent.meta != nil && (refused || errors.As(err, &fc)) && c.Reconnect != nil && !c.RequireParent {
		// The server refused the incremental backup (WAL summaries that do
		// not reach back to the parent, most often), or a file changed
		// without a new modification time: a full one instead.
		why := fmt.Sprintf("the server refused an incremental backup on backup %s: ", parent.meta.ID)
		if fc != nil {
			why = fmt.Sprintf("a file-level incremental backup on backup %s was abandoned: ", parent.meta.ID)
			why += fc.Error()
		} else {
			why += se.Err.Message
		}
		log.Warn("taking a full backup instead", "requested", c.Type, "reason", why)
		// The caller closes the first connection; this one is ours.
		if c.Replication, err = c.Reconnect(ctx); err != nil {
			return nil, fmt.Errorf("replication connection for the full backup: %w", err)
		}
		defer c.Replication.Close(context.Background())
		m, err = attempt(ctx, c, si, sysid, parentChoice{why: why})
	}
	if err != nil {
		if parent.meta != nil && errors.As(err, &se) && strings.HasPrefix(se.Phase, startPhase) {
			return nil, fmt.Errorf("%w (summarize_wal must be on since the parent backup %s started, and wal_summary_keep_time must reach back to it)", err, parent.meta.ID)
		}
		return nil, err
	}
	return m, nil
}

// startPhase is the ServerError phase of a refusal before any data.
const startPhase = "starting the backup"

// attempt takes one backup, incremental on parent.meta when set.
func attempt(ctx context.Context, c Config, si serverInfo, sysid uint64, parent parentChoice) (*catalog.Meta, error) {
	start := time.Now().UTC()
	id, err := newBackupID(ctx, c.Repo.Store, start)
	if err != nil {
		return nil, err
	}
	h := &handler{ctx: ctx, c: &c, log: c.Log, id: id, parent: parent.meta, meta: &catalog.Meta{
		Format: catalog.MetaFormat, ID: id, Label: c.Label, Pgark: c.Version, FromHost: c.FromHost,
		FromStandby: si.inRecovery, SystemID: strconv.FormatUint(sysid, 10), PGVersionNum: si.versionNum,
		PGMajor: si.versionNum / 10000, WalSegmentBytes: si.segSize, DataChecksums: si.dataChecksums,
		ManifestChecksums: "CRC32C", Tablespaces: []catalog.Tablespace{},
		Recipients: c.Codec.Recipients.Fingerprints(),
		Type:       catalog.TypeFull, BlockSize: si.blockSize, SegmentBlocks: si.segBlocks,
		Fallback: parent.why,
	}}
	if parent.meta != nil {
		h.meta.Type, h.meta.Parent, h.meta.Fallback, h.meta.Method = c.Type, parent.meta.ID, "", parent.method
		if parent.method == catalog.MethodFile {
			if err := h.fileLevel(parent); err != nil {
				return nil, err
			}
		} else if err := basebackup.UploadManifest(ctx, c.Replication, si.versionNum, parent.manifest); err != nil {
			return nil, fmt.Errorf("incremental backup on backup %s: %w", parent.meta.ID, err)
		}
	}
	h.files, err = manifest.NewFiles("CRC32C")
	if err != nil {
		return nil, err
	}
	m, err := h.run(ctx, si)
	if err != nil {
		h.cleanup(c.Log)
		return nil, err
	}
	cacheManifest(&c, m, h.rawManifest)
	return m, nil
}

// newBackupID picks an unused ID for the start time.
func newBackupID(ctx context.Context, s storage.Store, t time.Time) (string, error) {
	// The ids in use, leftovers of failed or killed runs included (the
	// repository lock keeps another backup from picking one meanwhile).
	used := map[string]bool{}
	err := s.List(ctx, catalog.Prefix, func(oi storage.ObjectInfo) error {
		if id, _, ok := strings.Cut(strings.TrimPrefix(oi.Key, catalog.Prefix), "/"); ok {
			used[id] = true
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("list the backup ids in use: %w", err)
	}
	for i := 0; i < 3600; i++ {
		if id := catalog.NewID(t.Add(time.Duration(i) * time.Second)); !used[id] {
			return id, nil
		}
	}
	return "", errors.New("no free backup id within an hour of the start time")
}

type handler struct {
	ctx    context.Context
	c      *Config
	log    *slog.Logger
	id     string
	meta   *catalog.Meta
	parent *catalog.Meta // nil for a full backup
	// File level: the parent's manifest, the server time before which a
	// file unchanged since the parent may be left out, and what was.
	fileParent  *manifest.Manifest
	parentSince int64
	refs        []string
	files       *manifest.Files
	rawManifest []byte
	start       basebackup.StartInfo
	parsed      *manifest.Manifest
	written     []string // keys written, for cleanup
	total       int64
}

func (h *handler) run(ctx context.Context, si serverInfo) (*catalog.Meta, error) {
	c := h.c
	po := basebackup.Options{
		Label: c.Label, Fast: c.Fast, MaxRateKB: c.MaxRateKB, Progress: true, ManifestChecksums: "CRC32C",
		// pgark confirms the needed WAL in the repository itself (bounded by
		// --archive-timeout, naming what is missing) instead of letting the
		// server wait without limit; this also makes the end time accurate.
		NoWait:       true,
		StallTimeout: c.StallTimeout,
		Incremental:  h.parent != nil && h.fileParent == nil,
	}
	startInfo, end, err := basebackup.Run(ctx, c.Replication, si.versionNum, po, h)
	if err != nil {
		var se *basebackup.ServerError
		if errors.As(err, &se) && se.IsChecksumFailure() {
			return nil, fmt.Errorf("the server found page checksum failures (data corruption on the database host); the backup is not usable: %w", err)
		}
		return nil, fmt.Errorf("base backup: %w", err)
	}
	m := h.meta
	m.EndLSN, m.EndTimeline = end.EndLSN.String(), end.Timeline
	m.EndTime = time.Now().UTC()
	if m.StopTime, err = serverNow(ctx, c.SQL); err != nil {
		return nil, fmt.Errorf("read the server's clock: %w", err)
	}
	if h.parsed == nil {
		return nil, errors.New("the server sent no backup_manifest")
	}
	if mm := h.parsed.Check(h.files); len(mm) > 0 {
		var b strings.Builder
		for i, x := range mm {
			if i == 5 {
				fmt.Fprintf(&b, "; and %d more", len(mm)-5)
				break
			}
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(x.String())
		}
		return nil, fmt.Errorf("%w: %s", ErrManifestMismatch, b.String())
	}
	if h.parsed.SystemID != 0 && h.parsed.SystemID != si.sysid {
		return nil, fmt.Errorf("%w: System-Identifier %d", ErrManifestMismatch, h.parsed.SystemID)
	}
	m.Files = h.files.Len()
	if h.fileParent != nil {
		if err := h.storeReferences(); err != nil {
			return nil, err
		}
	}

	// The WAL the backup needs, confirmed in the repository.
	needed, err := RequiredWAL(h.parsed.WALRanges, si.segSize, startInfo.StartLSN, startInfo.Timeline, !si.inRecovery)
	if err != nil {
		return nil, err
	}
	m.WALFirst, m.WALLast = firstLastSegment(needed)
	if si.inRecovery && c.SwitchPrimary != nil {
		if err := c.SwitchPrimary(ctx); err != nil {
			return nil, fmt.Errorf("switch WAL on the primary: %w", err)
		}
	}
	h.log.Info("waiting for the backup's WAL in the repository", "backup", h.id, "first", m.WALFirst, "last", m.WALLast, "files", len(needed))
	if err := WaitArchived(ctx, c.Repo.Store, needed, c.ArchiveTimeout, h.log); err != nil {
		return nil, err
	}
	// Complete: the metadata object, last.
	if err := repo.PutSignedJSON(ctx, c.Repo.Store, catalog.MetaKey(h.id), m, c.Codec.Signer); err != nil {
		return nil, fmt.Errorf("write backup metadata: %w", err)
	}
	return m, nil
}

func firstLastSegment(names []string) (string, string) {
	var first, last string
	for _, n := range names {
		if p, err := wal.ParseName(n); err == nil && p.Kind == wal.KindSegment {
			if first == "" || n < first {
				first = n
			}
			if n > last {
				last = n
			}
		}
	}
	return first, last
}

// cleanup deletes what a failed backup wrote (best effort: a push-only role
// may lack delete; the objects are never used without metadata, and
// retention removes them).
func (h *handler) cleanup(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The completion marker first: a metadata write that failed with an
	// ambiguous error (the reply lost) may still have landed, and a listed
	// backup must never lose its parts. The id is this run's alone.
	keys := append([]string{catalog.MetaKey(h.id)}, h.written...)
	for _, k := range keys {
		if err := h.c.Repo.Store.Delete(ctx, k); err != nil {
			log.Warn("could not delete a failed backup's object (it is never used; retention removes it)", "key", k, "err", err)
			return
		}
	}
}

func (h *handler) Started(si basebackup.StartInfo) error {
	h.start = si
	h.meta.StartLSN, h.meta.StartTimeline = si.StartLSN.String(), si.Timeline
	h.meta.StartTime = time.Now().UTC()
	for _, t := range si.Tablespaces {
		h.meta.Tablespaces = append(h.meta.Tablespaces, catalog.Tablespace{OID: t.OID, Location: t.Location})
	}
	if si.TotalKB >= 0 {
		h.total = si.TotalKB * 1024
	} else {
		h.total = -1
	}
	h.log.Info("backup started", "backup", h.id, "start_lsn", si.StartLSN, "timeline", si.Timeline, "tablespaces", len(si.Tablespaces), "estimated_bytes", h.total)
	return nil
}

func (h *handler) Progress(done uint64) {
	if h.c.Progress != nil {
		h.c.Progress(int64(done), h.total)
	}
}

func (h *handler) Notice(n *pgconn.Notice) {
	h.log.Info("server notice", "severity", n.Severity, "message", n.Message)
}

func (h *handler) Manifest(r io.Reader) error {
	b, parsed, err := manifest.Read(r)
	if err != nil {
		return fmt.Errorf("backup_manifest: %w", err)
	}
	h.parsed, h.rawManifest = parsed, b
	key := catalog.ManifestKey(h.id)
	h.written = append(h.written, key)
	u := startPartUpload(h.ctx, h.c.Repo.Store, key, h.c.Codec)
	if _, err := u.Write(b); err != nil {
		u.abort(err)
		return fmt.Errorf("store backup_manifest: %w", err)
	}
	ref, err := u.finish()
	if err != nil {
		return fmt.Errorf("backup_manifest: %w", err)
	}
	h.meta.Manifest = ref
	h.meta.StoredBytes += ref.StoredBytes
	return nil
}

// Archive streams one tar stream into parts of at most PartLimit bytes.
func (h *handler) Archive(name, location string, r io.Reader) error {
	ctx := h.ctx
	a := catalog.Archive{Name: name}
	if name != "base.tar" {
		oid, err := strconv.ParseUint(strings.TrimSuffix(name, ".tar"), 10, 32)
		if err != nil {
			return fmt.Errorf("unexpected archive name %q", name)
		}
		a.OID = uint32(oid)
	}
	var cur *partUpload
	spl, err := tarstream.NewSplitter(tarstream.SplitOptions{
		Limit:    h.c.PartLimit,
		Checksum: "CRC32C",
		NewPart: func(n int, off int64) (io.Writer, error) {
			key := catalog.PartKey(h.id, name, n)
			h.written = append(h.written, key)
			cur = startPartUpload(ctx, h.c.Repo.Store, key, h.c.Codec)
			return cur, nil
		},
		EndPart: func(p tarstream.Part) error {
			ref, err := cur.finish()
			cur = nil
			if err != nil {
				return err
			}
			ref.Members, ref.FirstMember = p.Members, p.FirstMember
			a.Parts = append(a.Parts, ref)
			a.Bytes += ref.Bytes
			h.meta.StoredBytes += ref.StoredBytes
			return nil
		},
		Member: func(m tarstream.Member) error {
			if h.fileParent != nil {
				return nil // the filter saw it, and the members left out too
			}
			return h.files.Add(name, m)
		},
	})
	if err != nil {
		return err
	}
	if h.fileParent != nil {
		err = h.copyFiltered(name, spl, r)
	} else {
		_, err = io.Copy(spl, r)
	}
	if err == nil {
		err = spl.Close()
	}
	if err != nil {
		if cur != nil {
			cur.abort(err)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	h.meta.Archives = append(h.meta.Archives, a)
	h.meta.RawBytes += a.Bytes
	h.log.Info("archive stored", "backup", h.id, "archive", name, "bytes", a.Bytes, "parts", len(a.Parts))
	return nil
}

// startPartUpload starts streaming one part into the store.
func startPartUpload(ctx context.Context, s storage.Store, key string, c repo.Codec) *partUpload {
	return &partUpload{repo.StartUpload(ctx, s, key, c)}
}

// partUpload is one part being compressed, encrypted and uploaded.
type partUpload struct{ *repo.Upload }

func (u *partUpload) finish() (catalog.ObjectRef, error) {
	r, err := u.Finish()
	if err != nil {
		return catalog.ObjectRef{}, err
	}
	return catalog.ObjectRef{Key: r.Key, Bytes: r.Bytes, SHA256: r.SHA256, StoredBytes: r.StoredBytes}, nil
}

func (u *partUpload) abort(cause error) { u.Abort(cause) }
