package basebackup

// Wire framings (see shared/notes/base-backup-protocol.md):
//
//	PG15+: start LSN result set, tablespace result set, ONE CopyOutResponse whose
//	       CopyData payloads start with a type byte: 'n' new archive (name\0
//	       location\0), 'd' data (archive or, after 'm', manifest), 'p' progress
//	       (uint64 big-endian), 'm' manifest follows; CopyDone; end LSN result set;
//	       CommandComplete; ReadyForQuery. Archives include the tar trailer.
//	PG13/14: the same result sets; then one CopyOutResponse .. CopyDone per
//	       tablespace (data directory last) holding raw tar bytes WITHOUT the
//	       end-of-archive trailer; then one more COPY holding the manifest; then
//	       the end LSN result set, CommandComplete, ReadyForQuery.
//
// NoticeResponses may arrive anywhere (archive-wait notices inside the COPY,
// page checksum warnings during data); an ErrorResponse may replace any
// message, and ends the backup (the connection is then unusable).

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgark/pgark/tarstream"
	"github.com/pgark/pgark/wal"
)

// Options are the BASE_BACKUP options pgark uses. TABLESPACE_MAP and
// MANIFEST 'yes' are always sent; WAL never (WAL comes from the archive).
type Options struct {
	Label             string // default "pgark base backup"; goes into backup_label
	Fast              bool   // CHECKPOINT 'fast' (15+) / FAST (13-14); false = spread
	MaxRateKB         int    // 0 = unlimited; else 32..1048576 (kB/s), MAX_RATE
	NoWait            bool   // WAIT false (15+) / NOWAIT (13-14): do not wait for WAL archiving (standby)
	Progress          bool   // PROGRESS: size estimates per tablespace
	ManifestChecksums string // "CRC32C" (default), "SHA224", "SHA256", "SHA384", "SHA512" or "NONE"
	// StallTimeout fails the backup when the server sends nothing for this
	// long while it streams an archive or the manifest (0: no limit). The
	// checkpoint and the waits between archives are never timed: they may
	// legitimately be long and silent.
	StallTimeout time.Duration
	// Incremental asks for a block-level incremental backup (INCREMENTAL,
	// PostgreSQL 17+) against the manifest uploaded on the same connection
	// with UploadManifest.
	Incremental bool
}

// TablespaceInfo is one row of the server's tablespace list.
type TablespaceInfo struct {
	OID      uint32
	Location string
	SizeKB   int64 // -1 if NULL (no PROGRESS)
}

// StartInfo is what the server reports when the backup starts.
type StartInfo struct {
	StartLSN    wal.LSN
	Timeline    uint32
	Tablespaces []TablespaceInfo // excluding the data directory row
	TotalKB     int64            // sum of the size estimates incl. the data directory, -1 if unknown
}

// EndInfo is what the server reports when the backup ends.
type EndInfo struct {
	EndLSN   wal.LSN
	Timeline uint32
}

// Handler receives the backup as it streams. Calls are sequential: Started,
// then Archive once per tar stream, then Manifest. Progress and Notice may also
// be called from inside the Read method of an Archive or Manifest reader (that
// is, on the goroutine reading it, while Archive or Manifest runs): they must
// return quickly and must not read from that reader.
type Handler interface {
	// Started is called once the start LSN and the tablespace list are known.
	Started(StartInfo) error
	// Archive is called once per tar stream, in the server's order
	// (tablespaces first, base.tar last on every version). name is
	// "base.tar" or "<oid>.tar"; location is "" for base.tar. r yields the
	// COMPLETE tar stream, including the 1024-byte end-of-archive trailer
	// (appended by pgark for PostgreSQL 13/14, which omit it); on every
	// version r returns io.EOF as soon as that trailer has been read, so the
	// handler can finish base.tar while the server waits for WAL archiving
	// (the wait and its notices come after base.tar, before the manifest).
	// The handler must read r to io.EOF, or return an error (which aborts the
	// backup); r must be read by one goroutine at a time and is unusable once
	// Archive returns. When the server reports an error while r is being
	// read, Read returns it (a *ServerError); a stream that is not a
	// well-formed tar stream makes Read return a *ProtocolError (PG15+).
	Archive(name, location string, r io.Reader) error
	// Progress reports the bytes streamed so far (all archives): the server's
	// 'p' messages on 15+, counted by pgark on 13/14.
	Progress(bytesDone uint64)
	// Notice receives every NoticeResponse, wherever it arrives; a notice
	// never ends the stream.
	Notice(*pgconn.Notice)
	// Manifest receives the backup_manifest bytes, byte-exact; the same rules
	// as for Archive's reader apply.
	Manifest(r io.Reader) error
}

// ServerError is an ErrorResponse received during BASE_BACKUP, with the phase
// of the backup it interrupted. After it the connection is unusable.
type ServerError struct {
	Phase string          // e.g. "starting the backup", "streaming base.tar", "finishing the backup"
	Err   *pgconn.PgError // the server's error
	// ChecksumWarnings are the server's warnings about page checksum
	// failures seen before the error (at most 20).
	ChecksumWarnings []string
}

// IsChecksumFailure reports whether the backup failed because of page
// checksum verification failures (SQLSTATE XX001, data_corrupted).
func (e *ServerError) IsChecksumFailure() bool { return e.Err != nil && e.Err.Code == "XX001" }

func (e *ServerError) Error() string {
	if e.IsChecksumFailure() {
		s := "page checksum failures: the server verified the data pages it sent and found corrupt ones: " +
			e.Err.Message + " (SQLSTATE XX001)"
		if len(e.ChecksumWarnings) > 0 {
			s += ": " + strings.Join(e.ChecksumWarnings, "; ")
		}
		return s
	}
	return fmt.Sprintf("BASE_BACKUP failed while %s: %s: %s (SQLSTATE %s)", e.Phase, e.Err.Severity, e.Err.Message, e.Err.Code)
}

func (e *ServerError) Unwrap() error { return e.Err }

// ProtocolError is a message from the server that does not fit the
// BASE_BACKUP protocol. The connection is unusable after it.
type ProtocolError struct {
	Phase string
	Msg   string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("BASE_BACKUP protocol error while %s: %s", e.Phase, e.Msg)
}

// errArchiveReaderDone is what an archive or manifest reader returns once its
// handler call has returned.
var errArchiveReaderDone = errors.New("base backup stream reader used after its handler returned")

const (
	minBaseBackupVersion = 130000
	// MinIncrementalVersion is the first server version with UPLOAD_MANIFEST
	// and BASE_BACKUP (INCREMENTAL).
	minIncrementalVersion = 170000
	maxLabelBytes         = 1023 // MAXPGPATH - 1
	defaultLabel          = "pgark base backup"
)

// quoteReplString quotes s for the replication grammar: '...' with ' doubled.
func quoteReplString(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// baseBackupCommand builds the BASE_BACKUP command for a server version.
func baseBackupCommand(serverVersionNum int, o Options) (string, error) {
	if serverVersionNum < minBaseBackupVersion {
		return "", fmt.Errorf("PostgreSQL server version %d is not supported (pgark needs 13 or later)", serverVersionNum)
	}
	label := o.Label
	if label == "" {
		label = defaultLabel
	}
	if len(label) > maxLabelBytes {
		return "", fmt.Errorf("backup label is %d bytes long; PostgreSQL allows at most %d", len(label), maxLabelBytes)
	}
	for _, r := range label {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("backup label %q holds a control character", label)
		}
	}
	if o.MaxRateKB != 0 && (o.MaxRateKB < 32 || o.MaxRateKB > 1048576) {
		return "", fmt.Errorf("MAX_RATE %d kB/s is out of range (32 to 1048576, or 0 for unlimited)", o.MaxRateKB)
	}
	alg, err := tarstream.CanonicalChecksum(o.ManifestChecksums)
	if err != nil {
		return "", fmt.Errorf("manifest checksums: %w", err)
	}
	switch {
	case strings.EqualFold(strings.TrimSpace(o.ManifestChecksums), "NONE"):
		alg = "NONE"
	case alg == "":
		alg = "CRC32C"
	}

	var opts []string
	legacy := serverVersionNum < 150000
	opts = append(opts, "LABEL "+quoteReplString(label))
	if o.Progress {
		opts = append(opts, "PROGRESS")
	}
	if legacy {
		if o.Fast {
			opts = append(opts, "FAST")
		}
		if o.NoWait {
			opts = append(opts, "NOWAIT")
		}
	} else {
		if o.Fast {
			opts = append(opts, "CHECKPOINT 'fast'")
		} else {
			opts = append(opts, "CHECKPOINT 'spread'")
		}
		if o.NoWait {
			opts = append(opts, "WAIT false")
		}
	}
	if o.MaxRateKB != 0 {
		opts = append(opts, "MAX_RATE "+strconv.Itoa(o.MaxRateKB))
	}
	opts = append(opts, "TABLESPACE_MAP", "MANIFEST 'yes'", "MANIFEST_CHECKSUMS "+quoteReplString(alg))
	if o.Incremental {
		if serverVersionNum < minIncrementalVersion {
			return "", fmt.Errorf("PostgreSQL %d has no block-level incremental backup (17 and later have)", serverVersionNum/10000)
		}
		opts = append(opts, "INCREMENTAL")
	}
	if legacy {
		return "BASE_BACKUP " + strings.Join(opts, " "), nil
	}
	return "BASE_BACKUP (" + strings.Join(opts, ", ") + ")", nil
}

// messageSource yields backend messages; *pgconn.PgConn is one. A returned
// message is valid only until the next call.
type messageSource interface {
	ReceiveMessage(ctx context.Context) (pgproto3.BackendMessage, error)
}

// Run sends BASE_BACKUP on conn (a physical replication connection:
// replication=true, idle) and drives h until the server reports the end of
// the backup. serverVersionNum is as from `SHOW server_version_num` (see
// ServerVersionNum), e.g. 150018.
//
// There is no read deadline (a spread checkpoint or the wait for WAL archiving
// may keep the server silent for long); cancel ctx to stop. On any error the
// connection must be considered unusable: close it. Errors from the server
// are *ServerError (checksum failures: IsChecksumFailure), malformed streams
// *ProtocolError, and handler errors are returned wrapped with the archive
// name.
func Run(ctx context.Context, conn *pgconn.PgConn, serverVersionNum int, o Options, h Handler) (StartInfo, EndInfo, error) {
	if conn == nil || h == nil {
		return StartInfo{}, EndInfo{}, errors.New("Run: nil connection or handler")
	}
	cmd, err := baseBackupCommand(serverVersionNum, o)
	if err != nil {
		return StartInfo{}, EndInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return StartInfo{}, EndInfo{}, err
	}
	fe := conn.Frontend()
	fe.SendQuery(&pgproto3.Query{String: cmd})
	if err := fe.Flush(); err != nil {
		return StartInfo{}, EndInfo{}, fmt.Errorf("sending BASE_BACKUP: %w", err)
	}
	d := &demux{ctx: ctx, src: conn, h: h, legacy: serverVersionNum < 150000, stall: o.StallTimeout}
	return d.run()
}

// demux drives a Handler from a message source.
type demux struct {
	ctx    context.Context
	src    messageSource
	h      Handler
	legacy bool

	phase     string
	pending   pgproto3.BackendMessage // a message read by a stream reader, for the main loop
	err       error                   // sticky: the stream is dead
	bytesDone uint64
	reported  uint64
	ckWarn    []string
	stall     time.Duration
}

// errStalled is the cause of a read that timed out while streaming.
var errStalled = errors.New("stream stalled")

// runBaseBackup runs the protocol after the command was sent: the testable,
// fuzzable part of Run.
func runBaseBackup(ctx context.Context, src messageSource, legacy bool, h Handler) (StartInfo, EndInfo, error) {
	d := &demux{ctx: ctx, src: src, h: h, legacy: legacy}
	return d.run()
}

func (d *demux) protoErr(format string, args ...any) error {
	if d.err == nil {
		d.err = &ProtocolError{Phase: d.phase, Msg: fmt.Sprintf(format, args...)}
	}
	return d.err
}

// next returns the next message that is not a notice or a parameter status
// report. Notices go to the handler; an ErrorResponse becomes a *ServerError.
func (d *demux) next() (pgproto3.BackendMessage, error) {
	if d.pending != nil {
		m := d.pending
		d.pending = nil
		return m, nil
	}
	if d.err != nil {
		return nil, d.err
	}
	for {
		rctx, cancel := d.ctx, context.CancelFunc(func() {})
		if d.stall > 0 && strings.HasPrefix(d.phase, "streaming ") {
			rctx, cancel = context.WithTimeoutCause(d.ctx, d.stall, errStalled)
		}
		msg, err := d.src.ReceiveMessage(rctx)
		stalled := err != nil && errors.Is(context.Cause(rctx), errStalled)
		cancel()
		if stalled {
			d.err = fmt.Errorf("BASE_BACKUP: the server sent nothing for %s while %s (--stream-timeout): the connection stalled", d.stall, d.phase)
			return nil, d.err
		}
		if err != nil {
			// pgconn's default OnPgError closes the connection on a FATAL
			// ErrorResponse and returns it as an error instead of a message.
			var pe *pgconn.PgError
			if errors.As(err, &pe) {
				d.err = &ServerError{Phase: d.phase, Err: pe, ChecksumWarnings: d.ckWarn}
				return nil, d.err
			}
			if cerr := d.ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
				err = fmt.Errorf("%w (%v)", cerr, err)
			}
			d.err = fmt.Errorf("BASE_BACKUP: connection failed while %s: %w", d.phase, err)
			return nil, d.err
		}
		switch m := msg.(type) {
		case *pgproto3.NoticeResponse:
			n := (*pgconn.Notice)(pgconn.ErrorResponseToPgError((*pgproto3.ErrorResponse)(m)))
			if strings.Contains(strings.ToLower(n.Message), "checksum verification fail") && len(d.ckWarn) < 20 {
				d.ckWarn = append(d.ckWarn, n.Message)
			}
			d.h.Notice(n)
			continue
		case *pgproto3.ParameterStatus, *pgproto3.NotificationResponse:
			continue
		case *pgproto3.ErrorResponse:
			d.err = &ServerError{Phase: d.phase, Err: pgconn.ErrorResponseToPgError(m), ChecksumWarnings: d.ckWarn}
			return nil, d.err
		case nil:
			return nil, d.protoErr("no message")
		}
		return msg, nil
	}
}

type resultCell struct {
	v    string
	null bool
}

// readResultSet reads RowDescription (cols columns), DataRows, CommandComplete.
func (d *demux) readResultSet(cols, maxRows int) ([][]resultCell, error) {
	msg, err := d.next()
	if err != nil {
		return nil, err
	}
	rd, ok := msg.(*pgproto3.RowDescription)
	if !ok {
		return nil, d.protoErr("expected a result set (RowDescription), got %T", msg)
	}
	if len(rd.Fields) != cols {
		return nil, d.protoErr("expected a result set of %d columns, got %d", cols, len(rd.Fields))
	}
	var rows [][]resultCell
	for {
		msg, err := d.next()
		if err != nil {
			return nil, err
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			if len(m.Values) != cols {
				return nil, d.protoErr("expected a row of %d values, got %d", cols, len(m.Values))
			}
			if len(rows) >= maxRows {
				return nil, d.protoErr("more than %d rows", maxRows)
			}
			row := make([]resultCell, cols)
			for i, v := range m.Values {
				row[i] = resultCell{v: string(v), null: v == nil}
			}
			rows = append(rows, row)
		case *pgproto3.CommandComplete:
			return rows, nil
		default:
			return nil, d.protoErr("expected a row or CommandComplete, got %T", msg)
		}
	}
}

// readLSNResult reads a one-row (recptr, tli) result set.
func (d *demux) readLSNResult() (wal.LSN, uint32, error) {
	rows, err := d.readResultSet(2, 1)
	if err != nil {
		return 0, 0, err
	}
	if len(rows) != 1 || rows[0][0].null || rows[0][1].null {
		return 0, 0, d.protoErr("expected one row of (LSN, timeline)")
	}
	lsn, err := wal.ParseLSN(rows[0][0].v)
	if err != nil {
		return 0, 0, d.protoErr("bad LSN: %v", err)
	}
	tli, err := strconv.ParseUint(rows[0][1].v, 10, 32)
	if err != nil || tli == 0 {
		return 0, 0, d.protoErr("bad timeline %q", rows[0][1].v)
	}
	return lsn, uint32(tli), nil
}

func (d *demux) run() (StartInfo, EndInfo, error) {
	var si StartInfo
	d.phase = "starting the backup (checkpoint)"
	lsn, tli, err := d.readLSNResult()
	if err != nil {
		return si, EndInfo{}, err
	}
	si.StartLSN, si.Timeline = lsn, tli

	d.phase = "reading the tablespace list"
	rows, err := d.readResultSet(3, 1<<16)
	if err != nil {
		return si, EndInfo{}, err
	}
	si.TotalKB = 0
	sawBase := false
	for i, r := range rows {
		size := int64(-1)
		if !r[2].null {
			size, err = strconv.ParseInt(r[2].v, 10, 64)
			if err != nil || size < 0 {
				return si, EndInfo{}, d.protoErr("bad tablespace size %q", r[2].v)
			}
		}
		if size < 0 || si.TotalKB < 0 {
			si.TotalKB = -1
		} else {
			si.TotalKB += size
		}
		if r[0].null { // the data directory: last
			if i != len(rows)-1 {
				return si, EndInfo{}, d.protoErr("the data directory is not the last row of the tablespace list")
			}
			sawBase = true
			continue
		}
		oid, err := strconv.ParseUint(r[0].v, 10, 32)
		if err != nil || oid == 0 {
			return si, EndInfo{}, d.protoErr("bad tablespace OID %q", r[0].v)
		}
		for _, t := range si.Tablespaces {
			if t.OID == uint32(oid) {
				return si, EndInfo{}, d.protoErr("tablespace %d listed twice", oid)
			}
		}
		si.Tablespaces = append(si.Tablespaces, TablespaceInfo{OID: uint32(oid), Location: r[1].v, SizeKB: size})
	}
	if !sawBase {
		return si, EndInfo{}, d.protoErr("the tablespace list has no data directory row")
	}
	if err := d.h.Started(si); err != nil {
		return si, EndInfo{}, fmt.Errorf("backup handler (start): %w", err)
	}

	if d.legacy {
		err = d.streamLegacy(si)
	} else {
		err = d.streamModern(si)
	}
	if err != nil {
		return si, EndInfo{}, err
	}

	d.phase = "finishing the backup"
	var ei EndInfo
	ei.EndLSN, ei.Timeline, err = d.readLSNResult()
	if err != nil {
		return si, ei, err
	}
	completes := 0
	for {
		msg, err := d.next()
		if err != nil {
			return si, ei, err
		}
		switch msg.(type) {
		case *pgproto3.CommandComplete:
			completes++
			if completes > 4 {
				return si, ei, d.protoErr("too many CommandComplete messages")
			}
			continue
		case *pgproto3.ReadyForQuery:
			if completes == 0 {
				return si, ei, d.protoErr("ReadyForQuery without CommandComplete")
			}
			return si, ei, nil
		default:
			return si, ei, d.protoErr("expected CommandComplete or ReadyForQuery, got %T", msg)
		}
	}
}

func archiveName(t *TablespaceInfo) string {
	if t == nil {
		return "base.tar"
	}
	return strconv.FormatUint(uint64(t.OID), 10) + ".tar"
}

// expectCopyOut reads the next message, which must be a CopyOutResponse.
func (d *demux) expectCopyOut() error {
	msg, err := d.next()
	if err != nil {
		return err
	}
	if _, ok := msg.(*pgproto3.CopyOutResponse); !ok {
		return d.protoErr("expected CopyOutResponse, got %T", msg)
	}
	return nil
}

// streamLegacy handles PG13/14: one COPY per tablespace, then the manifest.
func (d *demux) streamLegacy(si StartInfo) error {
	for i := 0; i <= len(si.Tablespaces); i++ {
		var ts *TablespaceInfo
		loc := ""
		if i < len(si.Tablespaces) {
			ts = &si.Tablespaces[i]
			loc = ts.Location
		}
		name := archiveName(ts)
		d.phase = "waiting for archive " + name
		if err := d.expectCopyOut(); err != nil {
			return err
		}
		d.phase = "streaming " + name
		if err := d.callArchive(name, loc); err != nil {
			return err
		}
		d.h.Progress(d.bytesDone)
		d.reported = d.bytesDone
	}
	d.phase = "waiting for WAL archiving (before the manifest)"
	if err := d.expectCopyOut(); err != nil {
		return err
	}
	d.phase = "streaming the backup manifest"
	return d.callManifest()
}

// streamModern handles PG15+: one COPY with typed payloads.
func (d *demux) streamModern(si StartInfo) error {
	d.phase = "waiting for the archives"
	if err := d.expectCopyOut(); err != nil {
		return err
	}
	idx := 0
	for {
		msg, err := d.next()
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				return d.protoErr("empty CopyData message")
			}
			switch m.Data[0] {
			case 'n':
				name, loc, err := parseNewArchive(m.Data[1:])
				if err != nil {
					return d.protoErr("%v", err)
				}
				var ts *TablespaceInfo
				if idx < len(si.Tablespaces) {
					ts = &si.Tablespaces[idx]
				}
				if idx > len(si.Tablespaces) || name != archiveName(ts) {
					return d.protoErr("unexpected archive %q (expected %s)", name, archiveName(ts))
				}
				if ts == nil && loc != "" {
					return d.protoErr("base.tar with a location %q", loc)
				}
				idx++
				d.phase = "streaming " + name
				if err := d.callArchive(name, loc); err != nil {
					return err
				}
				if idx == len(si.Tablespaces)+1 {
					d.phase = "waiting for WAL archiving (after the last archive)"
				} else {
					d.phase = "waiting for the next archive"
				}
			case 'p':
				if err := d.progress(m.Data[1:]); err != nil {
					return err
				}
			case 'm':
				if idx != len(si.Tablespaces)+1 {
					return d.protoErr("manifest after %d of %d archives", idx, len(si.Tablespaces)+1)
				}
				if len(m.Data) != 1 {
					return d.protoErr("manifest message with a payload")
				}
				d.phase = "streaming the backup manifest"
				if err := d.callManifest(); err != nil {
					return err
				}
				msg, err := d.next()
				if err != nil {
					return err
				}
				if _, ok := msg.(*pgproto3.CopyDone); !ok {
					return d.protoErr("expected CopyDone after the manifest, got %T", msg)
				}
				return nil
			case 'd':
				return d.protoErr("archive data outside an archive")
			default:
				return d.protoErr("unknown CopyData type byte 0x%02x", m.Data[0])
			}
		case *pgproto3.CopyDone:
			return d.protoErr("the server ended the stream without a backup manifest (after %d archives)", idx)
		default:
			return d.protoErr("unexpected %T inside the COPY stream", msg)
		}
	}
}

func parseNewArchive(b []byte) (name, loc string, err error) {
	i := indexNUL(b)
	if i < 0 {
		return "", "", errors.New("malformed new-archive message")
	}
	name, b = string(b[:i]), b[i+1:]
	i = indexNUL(b)
	if i < 0 || i != len(b)-1 {
		return "", "", errors.New("malformed new-archive message")
	}
	return name, string(b[:i]), nil
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

func (d *demux) progress(b []byte) error {
	if len(b) != 8 {
		return d.protoErr("progress message of %d bytes", len(b))
	}
	d.bytesDone = binary.BigEndian.Uint64(b)
	d.h.Progress(d.bytesDone)
	return nil
}

// legacyProgressStep is how often progress is synthesized for PG13/14.
const legacyProgressStep = 1 << 20

func (d *demux) countBytes(n int) {
	d.bytesDone += uint64(n)
	if d.bytesDone-d.reported >= legacyProgressStep {
		d.reported = d.bytesDone
		d.h.Progress(d.bytesDone)
	}
}

func (d *demux) callArchive(name, loc string) error {
	r := &streamReader{d: d, legacy: d.legacy, name: name}
	if !d.legacy {
		// PG15+ sends no end-of-archive message: the next 'n', 'm' or CopyDone
		// ends an archive, and the wait for WAL archiving comes before 'm'.
		// Following the tar structure lets the reader return io.EOF right after
		// the end-of-archive marker, so the handler can finish the last archive
		// while the server waits for archiving; and it checks the stream.
		r.sc, _ = tarstream.NewScanner("", nil)
	}
	herr := d.h.Archive(name, loc, r)
	return d.afterHandler(r, "archive "+name, herr)
}

func (d *demux) callManifest() error {
	r := &streamReader{d: d, legacy: d.legacy, manifest: true}
	herr := d.h.Manifest(r)
	return d.afterHandler(r, "manifest", herr)
}

func (d *demux) afterHandler(r *streamReader, what string, herr error) error {
	defer func() { r.done = true; r.buf = nil }()
	if d.err != nil {
		// The stream broke (the handler saw it in Read, or ignored it).
		return d.err
	}
	if herr != nil {
		return fmt.Errorf("backup handler (%s): %w", what, herr)
	}
	if r.err != nil {
		return r.err
	}
	atEOF, err := r.atEOF()
	if err != nil {
		return err
	}
	if !atEOF {
		return fmt.Errorf("backup handler (%s) returned before reading the stream to its end", what)
	}
	return nil
}

// streamReader is the io.Reader given to Archive and Manifest: it pulls
// CopyData payloads from the connection as it is read, so nothing is
// buffered beyond one message.
type streamReader struct {
	d        *demux
	legacy   bool
	manifest bool
	name     string
	sc       *tarstream.Scanner // PG15+ archives: finds the end-of-archive marker
	buf      []byte             // rest of the current payload (valid until the next receive)
	eof      bool               // no more payloads: EOF once buf is drained
	done     bool               // the handler returned
	err      error
}

var zeroTarTrailer [2 * tarstream.BlockSize]byte

func (r *streamReader) Read(p []byte) (int, error) {
	if r.done {
		return 0, errArchiveReaderDone
	}
	if r.err != nil {
		return 0, r.err
	}
	for len(r.buf) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		if err := r.fill(); err != nil {
			r.err = err
			return 0, err
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// atEOF reports whether nothing is left to read (reading ahead, if needed,
// past empty payloads).
func (r *streamReader) atEOF() (bool, error) {
	for len(r.buf) == 0 {
		if r.eof {
			return true, nil
		}
		if err := r.fill(); err != nil {
			r.err = err
			return false, err
		}
	}
	return false, nil
}

// fill fetches the next payload into buf, or sets eof.
func (r *streamReader) fill() error {
	d := r.d
	for {
		msg, err := d.next()
		if err != nil {
			return err
		}
		if r.legacy {
			switch m := msg.(type) {
			case *pgproto3.CopyData:
				r.buf = m.Data
				if !r.manifest {
					d.countBytes(len(m.Data))
				}
				return nil
			case *pgproto3.CopyDone:
				if !r.manifest {
					// PG13/14 do not terminate the tar stream.
					r.buf = zeroTarTrailer[:]
				}
				r.eof = true
				return nil
			default:
				return d.protoErr("unexpected %T inside a COPY stream", msg)
			}
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				return d.protoErr("empty CopyData message")
			}
			switch m.Data[0] {
			case 'd':
				r.buf = m.Data[1:]
				if r.sc != nil {
					if _, err := r.sc.Write(r.buf); err != nil {
						return d.protoErr("%s is not a well-formed tar stream: %v", r.name, err)
					}
					r.eof = r.sc.Ended()
				}
				return nil
			case 'p':
				if err := d.progress(m.Data[1:]); err != nil {
					return err
				}
				continue
			case 'n', 'm':
				if r.manifest {
					return d.protoErr("archive or manifest start inside the manifest")
				}
				d.pending = msg
				r.eof = true
				return r.checkEnded()
			default:
				return d.protoErr("unknown CopyData type byte 0x%02x", m.Data[0])
			}
		case *pgproto3.CopyDone:
			d.pending = msg
			r.eof = true
			return r.checkEnded()
		default:
			return d.protoErr("unexpected %T inside the COPY stream", msg)
		}
	}
}

// checkEnded fails when a PG15+ archive ends before its end-of-archive marker.
func (r *streamReader) checkEnded() error {
	if r.sc != nil && !r.sc.Ended() {
		return r.d.protoErr("archive %s ends without the tar end-of-archive marker (%v)", r.name, r.sc.Close())
	}
	return nil
}

// IdentifySystem runs IDENTIFY_SYSTEM on a replication connection.
func IdentifySystem(ctx context.Context, conn *pgconn.PgConn) (sysid uint64, timeline uint32, xlogpos wal.LSN, err error) {
	res, err := conn.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) < 3 {
		return 0, 0, 0, errors.New("IDENTIFY_SYSTEM: unexpected result shape")
	}
	row := res[0].Rows[0]
	sysid, err = strconv.ParseUint(string(row[0]), 10, 64)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("IDENTIFY_SYSTEM: bad system identifier %q", row[0])
	}
	tli, err := strconv.ParseUint(string(row[1]), 10, 32)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("IDENTIFY_SYSTEM: bad timeline %q", row[1])
	}
	xlogpos, err = wal.ParseLSN(string(row[2]))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	return sysid, uint32(tli), xlogpos, nil
}

// MinIncrementalVersion is the first server_version_num with block-level
// incremental backups.
const MinIncrementalVersion = minIncrementalVersion

// UploadManifest sends the parent backup's backup_manifest, byte-exact as
// the server wrote it, on a replication connection (PostgreSQL 17+): the
// next BASE_BACKUP with Options.Incremental on the same connection is taken
// against it. The server checks the manifest's checksum, its system
// identifier and that its WAL summaries reach back to the parent's start;
// its refusal is a *ServerError.
func UploadManifest(ctx context.Context, conn *pgconn.PgConn, serverVersionNum int, manifest []byte) error {
	if serverVersionNum < minIncrementalVersion {
		return fmt.Errorf("PostgreSQL %d has no block-level incremental backup (17 and later have)", serverVersionNum/10000)
	}
	if _, err := conn.CopyFrom(ctx, bytes.NewReader(manifest), "UPLOAD_MANIFEST"); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return &ServerError{Phase: "uploading the parent's backup_manifest", Err: pe}
		}
		return fmt.Errorf("UPLOAD_MANIFEST: %w", err)
	}
	return nil
}

// ServerVersionNum returns `SHOW server_version_num` (e.g. 150018); SHOW works
// on replication connections.
func ServerVersionNum(ctx context.Context, conn *pgconn.PgConn) (int, error) {
	res, err := conn.Exec(ctx, "SHOW server_version_num").ReadAll()
	if err != nil {
		return 0, fmt.Errorf("SHOW server_version_num: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return 0, errors.New("SHOW server_version_num: unexpected result shape")
	}
	v, err := strconv.Atoi(string(res[0].Rows[0][0]))
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("SHOW server_version_num: bad value %q", res[0].Rows[0][0])
	}
	return v, nil
}
