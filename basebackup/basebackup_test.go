package basebackup

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/manifest"
	"github.com/pgark/pgark/tarstream"
	"github.com/pgark/pgark/tarstream/tarstreamtest"
)

// ---------------------------------------------------------------- command syntax

func TestProtoCommand(t *testing.T) {
	o := Options{Label: "it's", Fast: true, MaxRateKB: 64, NoWait: true, Progress: true, ManifestChecksums: "sha256"}
	for _, c := range []struct {
		v    int
		o    Options
		want string
	}{
		{130012, o, `BASE_BACKUP LABEL 'it''s' PROGRESS FAST NOWAIT MAX_RATE 64 TABLESPACE_MAP MANIFEST 'yes' MANIFEST_CHECKSUMS 'SHA256'`},
		{140018, Options{}, `BASE_BACKUP LABEL 'pgark base backup' TABLESPACE_MAP MANIFEST 'yes' MANIFEST_CHECKSUMS 'CRC32C'`},
		{150018, o, `BASE_BACKUP (LABEL 'it''s', PROGRESS, CHECKPOINT 'fast', WAIT false, MAX_RATE 64, TABLESPACE_MAP, MANIFEST 'yes', MANIFEST_CHECKSUMS 'SHA256')`},
		{180001, Options{Label: "x", ManifestChecksums: "none"}, `BASE_BACKUP (LABEL 'x', CHECKPOINT 'spread', TABLESPACE_MAP, MANIFEST 'yes', MANIFEST_CHECKSUMS 'NONE')`},
		{170000, Options{Label: "x", Incremental: true}, `BASE_BACKUP (LABEL 'x', CHECKPOINT 'spread', TABLESPACE_MAP, MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C', INCREMENTAL)`},
	} {
		got, err := baseBackupCommand(c.v, c.o)
		if err != nil || got != c.want {
			t.Errorf("%d: %q, %v\nwant %q", c.v, got, err, c.want)
		}
	}
	for _, bad := range []Options{
		{MaxRateKB: 31}, {MaxRateKB: 1048577}, {ManifestChecksums: "MD5"},
		{Label: "a\nb"}, {Label: strings.Repeat("x", 1024)},
	} {
		if _, err := baseBackupCommand(150000, bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := baseBackupCommand(120000, Options{}); err == nil {
		t.Error("PostgreSQL 12 accepted")
	}
}

// ---------------------------------------------------------------- fake server

// protoSource replays an encoded backend byte stream.
type protoSource struct{ fe *pgproto3.Frontend }

func protoNewSource(b []byte) protoSource {
	fe := pgproto3.NewFrontend(bytes.NewReader(b), io.Discard)
	fe.SetMaxBodyLen(1 << 20)
	return protoSource{fe: fe}
}

func (s protoSource) ReceiveMessage(ctx context.Context) (pgproto3.BackendMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.fe.Receive()
}

func protoEncode(t testing.TB, msgs []pgproto3.BackendMessage) []byte {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		var err error
		b, err = m.Encode(b)
		if err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func protoResult(cols []string, rows ...[]any) []pgproto3.BackendMessage {
	rd := &pgproto3.RowDescription{}
	for _, c := range cols {
		rd.Fields = append(rd.Fields, pgproto3.FieldDescription{Name: []byte(c), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1})
	}
	msgs := []pgproto3.BackendMessage{rd}
	for _, r := range rows {
		dr := &pgproto3.DataRow{}
		for _, v := range r {
			if v == nil {
				dr.Values = append(dr.Values, nil)
			} else {
				dr.Values = append(dr.Values, []byte(fmt.Sprint(v)))
			}
		}
		msgs = append(msgs, dr)
	}
	return append(msgs, &pgproto3.CommandComplete{CommandTag: []byte("SELECT")})
}

type protoArchive struct {
	name, loc string
	oid       uint32
	data      []byte // the tar stream as the handler must see it (with trailer)
}

func protoNotice(msg string) *pgproto3.NoticeResponse {
	return &pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000", Message: msg}
}

func protoChunks(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		k := min(n, len(b))
		out = append(out, b[:k])
		b = b[k:]
	}
	return out
}

// protoStream builds a whole BASE_BACKUP response. For legacy framing the
// archives' trailers are stripped (PG13/14 do not send them). extra is
// inserted in the middle of the first archive's data (notices, errors...).
func protoStream(t testing.TB, legacy bool, archives []protoArchive, manifest []byte, extra []pgproto3.BackendMessage, tail []pgproto3.BackendMessage) []pgproto3.BackendMessage {
	var msgs []pgproto3.BackendMessage
	msgs = append(msgs, protoResult([]string{"recptr", "tli"}, []any{"0/2000028", 1})...)
	var rows [][]any
	total := 0
	for _, a := range archives {
		total += len(a.data) / 1024
		if a.oid == 0 {
			rows = append(rows, []any{nil, nil, len(a.data) / 1024})
		} else {
			rows = append(rows, []any{a.oid, a.loc, len(a.data) / 1024})
		}
	}
	msgs = append(msgs, protoResult([]string{"spcoid", "spclocation", "size"}, rows...)...)
	var done uint64
	if !legacy {
		msgs = append(msgs, &pgproto3.CopyOutResponse{})
	}
	for i, a := range archives {
		data := a.data
		if legacy {
			data = data[:len(data)-1024]
			msgs = append(msgs, &pgproto3.CopyOutResponse{})
		} else {
			msgs = append(msgs, &pgproto3.CopyData{Data: append(append(append([]byte{'n'}, a.name...), 0), append([]byte(a.loc), 0)...)})
		}
		for j, c := range protoChunks(data, 1000) {
			if i == 0 && j == 1 {
				msgs = append(msgs, extra...)
			}
			if legacy {
				msgs = append(msgs, &pgproto3.CopyData{Data: c})
			} else {
				msgs = append(msgs, &pgproto3.CopyData{Data: append([]byte{'d'}, c...)})
				done += uint64(len(c))
				if j%3 == 0 {
					msgs = append(msgs, &pgproto3.CopyData{Data: binary.BigEndian.AppendUint64([]byte{'p'}, done)})
				}
			}
		}
		if legacy {
			msgs = append(msgs, &pgproto3.CopyDone{})
		}
	}
	msgs = append(msgs, protoNotice("all required WAL segments have been archived"))
	if legacy {
		msgs = append(msgs, &pgproto3.CopyOutResponse{})
		for _, c := range protoChunks(manifest, 100) {
			msgs = append(msgs, &pgproto3.CopyData{Data: c})
		}
	} else {
		msgs = append(msgs, &pgproto3.CopyData{Data: []byte{'m'}})
		for _, c := range protoChunks(manifest, 100) {
			msgs = append(msgs, &pgproto3.CopyData{Data: append([]byte{'d'}, c...)})
		}
	}
	msgs = append(msgs, &pgproto3.CopyDone{})
	if tail != nil {
		return append(msgs, tail...)
	}
	msgs = append(msgs, protoResult([]string{"recptr", "tli"}, []any{"0/2000100", 1})...)
	return append(msgs, &pgproto3.CommandComplete{CommandTag: []byte("BASE_BACKUP")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
}

func protoSampleArchives(t testing.TB) []protoArchive {
	ts := tarstreamtest.Build(t, []tarstreamtest.Entry{
		{Hdr: tar.Header{Name: "PG_15_202209061/", Typeflag: tar.TypeDir, Mode: 0o700}},
		{Hdr: tar.Header{Name: "PG_15_202209061/5/16385", Typeflag: tar.TypeReg, Mode: 0o600}, Data: tarstreamtest.Data(20000, 1)},
	})
	base := tarstreamtest.Build(t, []tarstreamtest.Entry{
		{Hdr: tar.Header{Name: "backup_label", Typeflag: tar.TypeReg, Mode: 0o600}, Data: []byte("START WAL LOCATION: 0/2000028\n")},
		{Hdr: tar.Header{Name: "base/1/1259", Typeflag: tar.TypeReg, Mode: 0o600}, Data: tarstreamtest.Data(9000, 2)},
		{Hdr: tar.Header{Name: "global/pg_control", Typeflag: tar.TypeReg, Mode: 0o600}, Data: tarstreamtest.Data(8192, 3)},
	})
	return []protoArchive{{name: "16385.tar", loc: "/srv/ts1", oid: 16385, data: ts}, {name: "base.tar", data: base}}
}

// protoRecorder is a Handler that records everything.
type protoRecorder struct {
	start     StartInfo
	names     []string
	locs      []string
	archives  [][]byte
	manifest  []byte
	progress  []uint64
	notices   []string
	readErrs  []error
	readLimit int       // read at most this many bytes of each archive, then return nil (0: all)
	failOn    string    // return an error from Archive for this archive
	leaked    io.Reader // the last reader, kept after Archive returned
}

func (p *protoRecorder) Started(si StartInfo) error { p.start = si; return nil }
func (p *protoRecorder) Archive(name, loc string, r io.Reader) error {
	p.names = append(p.names, name)
	p.locs = append(p.locs, loc)
	p.leaked = r
	if name == p.failOn {
		return errors.New("upload failed")
	}
	var src io.Reader = r
	if p.readLimit > 0 {
		src = io.LimitReader(r, int64(p.readLimit))
	}
	b, err := io.ReadAll(src)
	p.archives = append(p.archives, b)
	if err != nil {
		p.readErrs = append(p.readErrs, err)
		return fmt.Errorf("upload of %s: %w", name, err)
	}
	return nil
}
func (p *protoRecorder) Progress(n uint64)       { p.progress = append(p.progress, n) }
func (p *protoRecorder) Notice(n *pgconn.Notice) { p.notices = append(p.notices, n.Message) }
func (p *protoRecorder) Manifest(r io.Reader) error {
	b, err := io.ReadAll(r)
	p.manifest = b
	return err
}

func protoRun(t testing.TB, legacy bool, msgs []pgproto3.BackendMessage, h Handler) (StartInfo, EndInfo, error) {
	return runBaseBackup(context.Background(), protoNewSource(protoEncode(t, msgs)), legacy, h)
}

func TestProtoDemux(t *testing.T) {
	archives := protoSampleArchives(t)
	manifest := []byte(`{"manifest": true}` + "\n")
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			extra := []pgproto3.BackendMessage{protoNotice("mid-archive notice"), &pgproto3.ParameterStatus{Name: "x", Value: "y"}}
			h := &protoRecorder{}
			si, ei, err := protoRun(t, legacy, protoStream(t, legacy, archives, manifest, extra, nil), h)
			if err != nil {
				t.Fatal(err)
			}
			if si.StartLSN != 0x2000028 || si.Timeline != 1 || ei.EndLSN != 0x2000100 || ei.Timeline != 1 {
				t.Fatalf("start %+v end %+v", si, ei)
			}
			if len(si.Tablespaces) != 1 || si.Tablespaces[0] != (TablespaceInfo{OID: 16385, Location: "/srv/ts1", SizeKB: int64(len(archives[0].data) / 1024)}) {
				t.Fatalf("tablespaces %+v", si.Tablespaces)
			}
			if want := int64(len(archives[0].data)/1024 + len(archives[1].data)/1024); si.TotalKB != want {
				t.Fatalf("TotalKB %d, want %d", si.TotalKB, want)
			}
			if fmt.Sprint(h.names) != "[16385.tar base.tar]" || fmt.Sprint(h.locs) != "[/srv/ts1 ]" {
				t.Fatalf("archives %v %q", h.names, h.locs)
			}
			for i, a := range archives {
				if !bytes.Equal(h.archives[i], a.data) {
					t.Fatalf("archive %s: %d bytes, want %d (trailer included)", a.name, len(h.archives[i]), len(a.data))
				}
			}
			if !bytes.Equal(h.manifest, manifest) {
				t.Fatalf("manifest %q", h.manifest)
			}
			if fmt.Sprint(h.notices) != "[mid-archive notice all required WAL segments have been archived]" {
				t.Fatalf("notices %q", h.notices)
			}
			if len(h.progress) == 0 {
				t.Fatal("no progress")
			}
			for i := 1; i < len(h.progress); i++ {
				if h.progress[i] < h.progress[i-1] {
					t.Fatalf("progress goes back: %v", h.progress)
				}
			}
			if _, err := h.leaked.Read(make([]byte, 10)); !errors.Is(err, errArchiveReaderDone) {
				t.Fatalf("reader after Archive returned: %v", err)
			}
		})
	}
}

func TestProtoDemuxErrors(t *testing.T) {
	archives := protoSampleArchives(t)
	manifest := []byte("{}\n")
	fatal := &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"}
	corrupt := &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "XX001", Message: "checksum verification failure during base backup"}
	warn := &pgproto3.NoticeResponse{Severity: "WARNING", SeverityUnlocalized: "WARNING", Code: "01000", Message: `checksum verification failed in file "./base/5/16384", block 0: calculated 1234 but expected 5678`}
	endOK := protoResult([]string{"recptr", "tli"}, []any{"0/2000100", 1})

	for _, legacy := range []bool{false, true} {
		// An ErrorResponse in the middle of an archive: the reader returns it,
		// and so does Run.
		h := &protoRecorder{}
		_, _, err := protoRun(t, legacy, protoStream(t, legacy, archives, manifest, []pgproto3.BackendMessage{fatal}, nil), h)
		var se *ServerError
		if !errors.As(err, &se) || se.Err.Code != "57P01" || !strings.Contains(se.Phase, "16385.tar") {
			t.Fatalf("legacy=%v: error mid-archive: %v", legacy, err)
		}
		if len(h.readErrs) != 1 || !errors.As(h.readErrs[0], &se) {
			t.Fatalf("legacy=%v: the reader did not return the server error: %v", legacy, h.readErrs)
		}
		if len(h.names) != 1 {
			t.Fatalf("archives after the error: %v", h.names)
		}

		// Page checksum failures: warnings during the data, ERROR XX001 after
		// the end LSN.
		h = &protoRecorder{}
		tail := append(endOK, corrupt)
		_, _, err = protoRun(t, legacy, protoStream(t, legacy, archives, manifest, []pgproto3.BackendMessage{warn}, tail), h)
		if !errors.As(err, &se) || !se.IsChecksumFailure() || !strings.HasPrefix(err.Error(), "page checksum failures: ") ||
			!strings.Contains(err.Error(), `base/5/16384", block 0`) {
			t.Fatalf("legacy=%v: checksum failure: %v", legacy, err)
		}

		// The handler returns before reading everything.
		h = &protoRecorder{readLimit: 100}
		_, _, err = protoRun(t, legacy, protoStream(t, legacy, archives, manifest, nil, nil), h)
		if err == nil || !strings.Contains(err.Error(), "returned before reading the stream to its end") {
			t.Fatalf("legacy=%v: early return: %v", legacy, err)
		}

		// The handler fails.
		h = &protoRecorder{failOn: "base.tar"}
		_, _, err = protoRun(t, legacy, protoStream(t, legacy, archives, manifest, nil, nil), h)
		if err == nil || !strings.Contains(err.Error(), "upload failed") || !strings.Contains(err.Error(), "archive base.tar") {
			t.Fatalf("legacy=%v: handler failure: %v", legacy, err)
		}

		// The stream ends early (connection lost).
		msgs := protoStream(t, legacy, archives, manifest, nil, nil)
		h = &protoRecorder{}
		cut, seen := 0, 0
		for i, m := range msgs {
			if _, ok := m.(*pgproto3.CopyData); ok {
				if seen++; seen == 4 {
					cut = i
					break
				}
			}
		}
		_, _, err = protoRun(t, legacy, msgs[:cut], h)
		if err == nil || !strings.Contains(err.Error(), "connection failed while streaming") || len(h.readErrs) != 1 {
			t.Fatalf("legacy=%v: truncated stream: %v (read errors %v)", legacy, err, h.readErrs)
		}
	}

	// Unknown CopyData type, data outside an archive, a wrong archive (PG15+).
	for name, bad := range map[string][]byte{
		"unknown type":   {'x', 1, 2},
		"stray data":     {'d', 1, 2},
		"bad progress":   {'p', 1},
		"wrong archive":  append([]byte("n99.tar\x00\x00"), 0),
		"empty":          {},
		"early manifest": {'m'},
	} {
		var msgs []pgproto3.BackendMessage
		msgs = append(msgs, protoResult([]string{"recptr", "tli"}, []any{"0/2000028", 1})...)
		msgs = append(msgs, protoResult([]string{"spcoid", "spclocation", "size"}, []any{nil, nil, nil})...)
		msgs = append(msgs, &pgproto3.CopyOutResponse{}, &pgproto3.CopyData{Data: bad})
		_, _, err := protoRun(t, false, msgs, &protoRecorder{})
		var pe *ProtocolError
		if !errors.As(err, &pe) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A PG15+ archive that ends without the tar end-of-archive marker.
	short := []protoArchive{{name: "base.tar", data: append(bytes.Clone(archives[1].data[:len(archives[1].data)-1024]), make([]byte, 1024)...)}}
	msgs := protoStream(t, false, short, manifest, nil, nil)
	for _, m := range msgs {
		if cd, ok := m.(*pgproto3.CopyData); ok && cd.Data[0] == 'd' && len(cd.Data) > 1 && bytes.Count(cd.Data[1:], []byte{0}) == len(cd.Data)-1 {
			cd.Data = cd.Data[:1] // drop the trailer's bytes
		}
	}
	h := &protoRecorder{}
	_, _, err := protoRun(t, false, msgs, h)
	var pe *ProtocolError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "end-of-archive marker") || len(h.readErrs) != 1 {
		t.Errorf("archive without trailer: %v (read errors %v)", err, h.readErrs)
	}
	// Something other than a result set at the start.
	_, _, err = protoRun(t, false, []pgproto3.BackendMessage{&pgproto3.CopyDone{}}, &protoRecorder{})
	if !errors.As(err, &pe) {
		t.Errorf("CopyDone at start: %v", err)
	}
	// An unknown message type byte.
	_, _, err = runBaseBackup(context.Background(), protoNewSource([]byte{'!', 0, 0, 0, 4}), false, &protoRecorder{})
	if err == nil || !strings.Contains(err.Error(), "unknown message type") {
		t.Errorf("unknown message: %v", err)
	}
	// A cancelled context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err = runBaseBackup(ctx, protoNewSource(protoEncode(t, protoStream(t, false, archives, manifest, nil, nil))), false, &protoRecorder{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// FuzzDemux feeds an arbitrary backend byte stream to the demultiplexer (both
// framings). Seeds are small, so that the fuzzer's minimization stays quick
// (see FuzzTarScan: -fuzzminimizetime 2s helps).
func FuzzDemux(f *testing.F) {
	archives := []protoArchive{
		{name: "16385.tar", loc: "/t", oid: 16385, data: tarstreamtest.Build(f, []tarstreamtest.Entry{{Hdr: tar.Header{Name: "PG/", Typeflag: tar.TypeDir}}})},
		{name: "base.tar", data: tarstreamtest.Build(f, []tarstreamtest.Entry{{Hdr: tar.Header{Name: "backup_label", Typeflag: tar.TypeReg}, Data: []byte("L")}})},
	}
	manifest := []byte("{}\n")
	fatal := &pgproto3.ErrorResponse{Severity: "FATAL", Code: "57P01", Message: "bye"}
	for _, legacy := range []bool{false, true} {
		f.Add(protoEncode(f, protoStream(f, legacy, archives, manifest, nil, nil)), legacy)
		f.Add(protoEncode(f, protoStream(f, legacy, archives, manifest, []pgproto3.BackendMessage{protoNotice("n"), fatal}, nil)), legacy)
		small := []protoArchive{{name: "base.tar", data: make([]byte, 1024)}}
		f.Add(protoEncode(f, protoStream(f, legacy, small, manifest, nil, nil)), legacy)
	}
	f.Add([]byte{'!', 0, 0, 0, 4}, false)
	f.Fuzz(func(t *testing.T, b []byte, legacy bool) {
		for _, limit := range []int{0, 700} {
			h := &protoRecorder{readLimit: limit}
			si, ei, err := runBaseBackup(context.Background(), protoNewSource(b), legacy, h)
			if err != nil {
				// Every failure is the server's, the stream's or the connection's
				// (this handler never fails by itself, but for a read error).
				var pe *ProtocolError
				var se *ServerError
				if !errors.As(err, &pe) && !errors.As(err, &se) && !strings.Contains(err.Error(), "connection failed") &&
					!strings.Contains(err.Error(), "before reading the stream to its end") && len(h.readErrs) == 0 {
					t.Fatalf("unexpected kind of error: %v", err)
				}
				continue
			}
			// Success: one archive per tablespace, in order, base.tar last, each a
			// complete tar stream; then the manifest; sane start and end.
			want := []string{}
			for _, ts := range si.Tablespaces {
				want = append(want, strconv.FormatUint(uint64(ts.OID), 10)+".tar")
			}
			want = append(want, "base.tar")
			if strings.Join(h.names, ",") != strings.Join(want, ",") || h.locs[len(h.locs)-1] != "" {
				t.Fatalf("archives %v (locations %q), want %v", h.names, h.locs, want)
			}
			if si.Timeline == 0 || ei.Timeline == 0 {
				t.Fatalf("timeline 0 accepted: %+v %+v", si, ei)
			}
			for i, a := range h.archives {
				if limit > 0 && len(a) > limit {
					t.Fatalf("archive %s: the handler read %d of at most %d bytes and still succeeded", h.names[i], len(a), limit)
				}
				if limit > 0 && len(a) == limit {
					continue // maybe cut: the stream happened to end there
				}
				if legacy {
					if len(a) < 1024 || !bytes.Equal(a[len(a)-1024:], make([]byte, 1024)) {
						t.Fatalf("archive %s does not end with the end-of-archive trailer", h.names[i])
					}
					continue
				}
				if _, _, err := tarstreamtest.Scan(t, a, "", 512); err != nil {
					t.Fatalf("archive %s is not a complete tar stream: %v", h.names[i], err)
				}
			}
		}
	})
}

// ---------------------------------------------------------------- real servers

// protoVerifier is a Handler that checks every archive with archive/tar
// and tarstream.Scanner (and Splitter), and the manifest against the members.
type protoVerifier struct {
	t       *testing.T
	alg     string
	legacy  bool
	files   *manifest.Files
	start   StartInfo
	names   []string
	locs    []string
	members map[string][]tarstream.Member // by archive
	sizes   map[string]int64
	label   string
	tsmap   string
	raw     []byte
	m       *manifest.Manifest
	last    uint64

	mu           sync.Mutex
	notices      []string // "<where>: <severity> <message>"
	where        string
	onNotice     func(*pgconn.Notice)
	pauseInBase  func() // called once, after 1 MiB of base.tar
	readErr      error
	archiveBytes int64
}

func (v *protoVerifier) Started(si StartInfo) error {
	v.start = si
	v.where = "after start, before the first archive"
	return nil
}

func (v *protoVerifier) Archive(name, loc string, r io.Reader) error {
	v.names = append(v.names, name)
	v.locs = append(v.locs, loc)
	v.where = "inside " + name
	defer func() { v.where = "after " + name }()

	var stream bytes.Buffer
	var scanned []tarstream.Member
	sc, err := tarstream.NewScanner(v.alg, func(m tarstream.Member) error {
		scanned = append(scanned, m)
		return v.files.Add(name, m)
	})
	if err != nil {
		return err
	}
	src := r
	if name == "base.tar" && v.pauseInBase != nil {
		head := make([]byte, 1<<20)
		if _, err := io.ReadFull(r, head); err != nil {
			v.readErr = err
			return err
		}
		v.pauseInBase()
		src = io.MultiReader(bytes.NewReader(head), r)
	}
	tee := io.TeeReader(src, io.MultiWriter(sc, &stream))
	tr := tar.NewReader(tee)
	type ref struct {
		h   *tar.Header
		sum string
	}
	var refs []ref
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			v.readErr = err
			return fmt.Errorf("archive/tar on %s: %w", name, err)
		}
		hh := tarstream.NewChecksumHash(v.alg)
		if _, err := io.Copy(hh, tr); err != nil {
			v.readErr = err
			return fmt.Errorf("archive/tar on %s: %w", name, err)
		}
		sum := ""
		if h.Typeflag == tar.TypeReg {
			sum = hex.EncodeToString(hh.Sum(nil))
		}
		refs = append(refs, ref{h, sum})
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		v.readErr = err
		return err
	}
	if err := sc.Close(); err != nil {
		return fmt.Errorf("scanner on %s: %w", name, err)
	}
	t := v.t
	if len(refs) != len(scanned) {
		t.Errorf("%s: archive/tar sees %d members, the scanner %d", name, len(refs), len(scanned))
	}
	for i := range min(len(refs), len(scanned)) {
		h, m := refs[i].h, scanned[i]
		if h.Name != m.Name || h.Typeflag != m.Typeflag || h.Size != m.Size || h.Linkname != m.Linkname || h.Mode != m.Mode || refs[i].sum != m.Checksum {
			t.Errorf("%s member %d: archive/tar %q %c %d %q %o %s, scanner %+v", name, i, h.Name, h.Typeflag, h.Size, h.Linkname, h.Mode, refs[i].sum, m)
		}
	}
	total := int64(stream.Len())
	v.archiveBytes += total
	if sc.EndOffset() != total-1024 {
		t.Errorf("%s: end-of-archive marker at %d of %d bytes (want exactly 1024 trailing bytes)", name, sc.EndOffset(), total)
	}
	if n := len(scanned); n > 0 && scanned[n-1].DataEnd != sc.EndOffset() {
		t.Errorf("%s: last member ends at %d, marker at %d", name, scanned[n-1].DataEnd, sc.EndOffset())
	}
	if v.members == nil {
		v.members, v.sizes = map[string][]tarstream.Member{}, map[string]int64{}
	}
	v.members[name] = scanned
	v.sizes[name] = total
	if name == "base.tar" {
		for i, m := range scanned {
			if m.Name == "backup_label" || m.Name == "tablespace_map" {
				body := stream.Bytes()[m.DataStart : m.DataStart+m.Size]
				if m.Name == "backup_label" {
					v.label = string(body)
				} else {
					v.tsmap = string(body)
				}
				_ = i
			}
		}
	}

	// The splitter on the real stream: 1 MiB parts.
	parts, infos, splitMembers, err := tarstreamtest.Split(t, stream.Bytes(), 1<<20, 32<<10)
	if err != nil {
		t.Errorf("%s: splitter: %v", name, err)
	} else {
		tarstreamtest.CheckParts(t, stream.Bytes(), 1<<20, parts, infos, splitMembers)
	}
	return nil
}

func (v *protoVerifier) Progress(n uint64) { v.last = n }

func (v *protoVerifier) Notice(n *pgconn.Notice) {
	v.mu.Lock()
	v.notices = append(v.notices, fmt.Sprintf("[%s] %s: %s", v.where, n.Severity, n.Message))
	v.mu.Unlock()
	if v.onNotice != nil {
		v.onNotice(n)
	}
}

func (v *protoVerifier) Manifest(r io.Reader) error {
	v.where = "inside the manifest"
	defer func() { v.where = "after the manifest" }()
	raw, m, err := manifest.Read(r)
	v.raw = raw
	if err != nil {
		return err
	}
	v.m = m
	return nil
}

func (v *protoVerifier) noticesText() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return strings.Join(v.notices, "\n")
}

func protoConnect(t *testing.T, c *testenv.Cluster) (*pgconn.PgConn, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, c.ReplicationDSN())
	if err != nil {
		t.Fatalf("replication connection: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	v, err := ServerVersionNum(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if v/10000 != c.Major {
		t.Fatalf("server_version_num %d for major %d", v, c.Major)
	}
	return conn, v
}

func protoNewVerifier(t *testing.T, alg string, legacy bool) *protoVerifier {
	files, err := manifest.NewFiles(alg)
	if err != nil {
		t.Fatal(err)
	}
	return &protoVerifier{t: t, alg: alg, legacy: legacy, files: files}
}

// TestProtoRealServers runs BASE_BACKUP against every supported major.
func TestProtoRealServers(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL servers")
	}
	for _, major := range testenv.Majors() {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) { protoRealServer(t, major) })
	}
}

func protoRealServer(t *testing.T, major int) {
	t0 := time.Now()
	shared := testenv.SharedDir(t)
	tsDir := filepath.Join(shared, "ts1")
	testenv.MkdirShared(t, tsDir)
	c := testenv.StartPG(t, testenv.PGOptions{
		Major:      major,
		InitdbArgs: []string{"--data-checksums"},
		Conf:       map[string]string{"autovacuum": "off"},
	})
	c.Exec(t, fmt.Sprintf("CREATE TABLESPACE ts1 LOCATION '%s'", tsDir))
	c.Exec(t, "CREATE TABLE t_ts (id int, v text) TABLESPACE ts1")
	c.Exec(t, "INSERT INTO t_ts SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g")
	c.Exec(t, "CREATE TABLE t_main AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g")
	tsOID := c.QueryRow(t, "SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")
	t.Logf("cluster ready in %v", time.Since(t0).Round(time.Millisecond))

	t.Run("backup", func(t *testing.T) {
		t1 := time.Now()
		conn, ver := protoConnect(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		sysid, tli, pos, err := IdentifySystem(ctx, conn)
		if err != nil || sysid == 0 || tli != 1 || pos == 0 {
			t.Fatalf("IDENTIFY_SYSTEM: %d %d %s %v", sysid, tli, pos, err)
		}
		alg := "CRC32C"
		if major%2 == 0 {
			alg = "SHA256"
		}
		v := protoNewVerifier(t, alg, ver < 150000)
		o := Options{Label: "pgark's test", Fast: true, Progress: major%3 != 1, ManifestChecksums: alg}
		si, ei, err := Run(ctx, conn, ver, o, v)
		if err != nil {
			t.Fatalf("Run: %v\nnotices:\n%s", err, v.noticesText())
		}
		// The connection is usable again after a complete backup.
		if _, _, _, err := IdentifySystem(ctx, conn); err != nil {
			t.Errorf("IDENTIFY_SYSTEM after the backup: %v", err)
		}
		if si.Timeline != 1 || ei.Timeline != 1 || ei.EndLSN <= si.StartLSN {
			t.Errorf("start %s/%d end %s/%d", si.StartLSN, si.Timeline, ei.EndLSN, ei.Timeline)
		}
		if len(si.Tablespaces) != 1 || strconv.FormatUint(uint64(si.Tablespaces[0].OID), 10) != tsOID || si.Tablespaces[0].Location != tsDir {
			t.Errorf("tablespaces %+v (want %s at %s)", si.Tablespaces, tsOID, tsDir)
		}
		if o.Progress != (si.TotalKB > 0) || o.Progress != (si.Tablespaces[0].SizeKB > 0) {
			t.Errorf("PROGRESS %v but TotalKB %d, tablespace size %d", o.Progress, si.TotalKB, si.Tablespaces[0].SizeKB)
		}
		if fmt.Sprint(v.names) != "["+tsOID+".tar base.tar]" || v.locs[0] != tsDir || v.locs[1] != "" {
			t.Errorf("archives %v at %q", v.names, v.locs)
		}
		base := v.members["base.tar"]
		if len(base) < 100 || base[0].Name != "backup_label" || base[len(base)-1].Name != "global/pg_control" {
			t.Fatalf("base.tar: %d members, first %q, last %q", len(base), base[0].Name, base[len(base)-1].Name)
		}
		if !strings.Contains(v.label, "START WAL LOCATION: "+si.StartLSN.String()) || !strings.Contains(v.label, "LABEL: pgark's test") {
			t.Errorf("backup_label:\n%s", v.label)
		}
		if v.tsmap != tsOID+" "+tsDir+"\n" {
			t.Errorf("tablespace_map %q", v.tsmap)
		}
		if v.last == 0 {
			t.Error("no progress reported")
		}

		// The manifest.
		if v.m == nil {
			t.Fatal("no manifest")
		}
		if err := manifest.VerifyChecksum(v.raw); err != nil {
			t.Fatal(err)
		}
		wantVersion := 1
		if major >= 17 {
			wantVersion = 2
		}
		if v.m.Version != wantVersion || (wantVersion == 2 && v.m.SystemID != sysid) {
			t.Errorf("manifest version %d system id %d (want %d, %d)", v.m.Version, v.m.SystemID, wantVersion, sysid)
		}
		if len(v.m.WALRanges) != 1 || v.m.WALRanges[0] != (manifest.WALRange{Timeline: 1, Start: si.StartLSN, End: ei.EndLSN}) {
			t.Errorf("WAL ranges %+v, backup %s-%s", v.m.WALRanges, si.StartLSN, ei.EndLSN)
		}
		for _, f := range v.m.Files {
			if f.ChecksumAlgorithm != alg {
				t.Fatalf("manifest file %+v: algorithm", f)
			}
		}
		mism := v.m.Check(v.files)
		for _, x := range mism {
			t.Errorf("manifest mismatch: %s", x)
		}
		if len(mism) == 0 && len(v.m.Files) < 100 {
			t.Errorf("only %d files in the manifest", len(v.m.Files))
		}
		// What the tars hold that the manifest does not list.
		var notListed []string
		kinds := map[string]int{}
		for arch, ms := range v.members {
			for _, m := range ms {
				p, _ := manifest.BackupPath(arch, m.Name)
				kinds[tarstream.TypeName(m.Typeflag)]++
				if _, ok := v.m.File(p); !ok && !m.IsDir() {
					notListed = append(notListed, p)
				}
			}
		}
		if len(notListed) != 0 {
			t.Errorf("non-directory members not in the manifest: %v", notListed)
		}
		for _, p := range []string{"backup_label", "tablespace_map", "global/pg_control", "postgresql.auto.conf"} {
			if _, ok := v.m.File(p); !ok {
				t.Errorf("%s not in the manifest", p)
			}
		}
		if _, ok := v.m.File("backup_manifest"); ok {
			t.Error("backup_manifest lists itself")
		}
		if !strings.Contains(v.noticesText(), "WAL archiving is not enabled") {
			t.Errorf("no 'WAL archiving is not enabled' notice; notices:\n%s", v.noticesText())
		}
		t.Logf("PG %d (%d): %s, manifest v%d %d files (%s), members by type %v, base.tar %d bytes, %s.tar %d bytes, manifest %d bytes, start %s end %s, TotalKB %d, last progress %d, took %v",
			major, ver, strings.TrimSpace(strings.SplitN(v.label, "\n", 2)[0]), v.m.Version, len(v.m.Files), alg, kinds,
			v.sizes["base.tar"], tsOID, v.sizes[tsOID+".tar"], len(v.raw), si.StartLSN, ei.EndLSN, si.TotalKB, v.last, time.Since(t1).Round(time.Millisecond))
		t.Logf("notices:\n%s", v.noticesText())
	})

	t.Run("terminate", func(t *testing.T) {
		t1 := time.Now()
		conn, ver := protoConnect(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		v := protoNewVerifier(t, "CRC32C", ver < 150000)
		v.pauseInBase = func() {
			n := c.QueryRow(t, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'walsender'")
			if n != "1" {
				t.Errorf("terminated %s walsenders", n)
			}
		}
		_, _, err := Run(ctx, conn, ver, Options{Fast: true}, v)
		if err == nil {
			t.Fatal("Run succeeded although its walsender was terminated")
		}
		if ctx.Err() != nil {
			t.Fatalf("hung until the timeout: %v", err)
		}
		if v.readErr == nil {
			t.Errorf("the archive reader returned no error (handler saw %v)", v.names)
		}
		var se *ServerError
		if errors.As(err, &se) {
			if se.Err.Code != "57P01" || !strings.Contains(se.Phase, "base.tar") {
				t.Errorf("server error %v in phase %q", se.Err, se.Phase)
			}
		} else if !strings.Contains(err.Error(), "while streaming base.tar") {
			t.Errorf("error without the phase: %v", err)
		}
		t.Logf("PG %d: terminated backup: %v (reader error: %v), took %v", major, err, v.readErr, time.Since(t1).Round(time.Millisecond))
	})

	t.Run("cancel", func(t *testing.T) {
		// A spread checkpoint keeps the server silent; cancelling ctx ends the
		// wait at once.
		t1 := time.Now()
		c.Exec(t, "UPDATE t_main SET v = v || 'x'")
		conn, ver := protoConnect(t, c)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Second, cancel)
		v := protoNewVerifier(t, "CRC32C", ver < 150000)
		_, _, err := Run(ctx, conn, ver, Options{Fast: false}, v)
		took := time.Since(t1)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run with a cancelled context: %v (after %v, archives %v)", err, took, v.names)
		}
		if took > 20*time.Second {
			t.Errorf("cancel took %v", took)
		}
		conn.Close(context.Background())
		c.Exec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'walsender'")
		t.Logf("PG %d: cancelled after %v: %v", major, took.Round(time.Millisecond), err)
	})
	t.Run("archive-wait", func(t *testing.T) {
		t1 := time.Now()
		gate := filepath.Join(shared, "archive-gate")
		c.Stop(t)
		c.SetConf(map[string]string{
			"archive_mode":    "on",
			"archive_command": fmt.Sprintf("while [ -e '%s' ]; do sleep 0.1; done; true", gate),
		})
		c.Start(t)
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		open := func() { once.Do(func() { os.Remove(gate) }) }
		t.Cleanup(open)
		timer := time.AfterFunc(90*time.Second, open)
		defer timer.Stop()

		conn, ver := protoConnect(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		v := protoNewVerifier(t, "CRC32C", ver < 150000)
		v.onNotice = func(n *pgconn.Notice) {
			if strings.Contains(n.Message, "waiting for") {
				open()
			}
		}
		si, ei, err := Run(ctx, conn, ver, Options{Fast: true}, v)
		if err != nil {
			t.Fatalf("Run: %v\nnotices:\n%s", err, v.noticesText())
		}
		notices := v.noticesText()
		if !strings.Contains(notices, "waiting for required WAL segments to be archived") {
			t.Errorf("no 'waiting' notice:\n%s", notices)
		}
		if !strings.Contains(notices, "all required WAL segments have been archived") {
			t.Errorf("no 'all required WAL segments have been archived' notice:\n%s", notices)
		}
		for _, n := range strings.Split(notices, "\n") {
			if strings.Contains(n, "WAL segments") && !strings.HasPrefix(n, "[after base.tar]") {
				t.Errorf("archive-wait notice outside the wait between base.tar and the manifest: %s", n)
			}
		}
		if mm := v.m.Check(v.files); len(mm) != 0 {
			t.Errorf("mismatches: %v", mm)
		}
		t.Logf("PG %d: archive wait backup %s-%s, took %v; notices:\n%s", major, si.StartLSN, ei.EndLSN, time.Since(t1).Round(time.Millisecond), notices)
	})

	t.Run("checksum-failure", func(t *testing.T) {
		t1 := time.Now()
		rel := c.QueryRow(t, "SELECT pg_relation_filepath('t_main')")
		c.Exec(t, "CHECKPOINT")
		c.Stop(t)
		c.SetConf(map[string]string{"archive_mode": "off", "archive_command": ""})
		f, err := os.OpenFile(filepath.Join(c.DataDir, rel), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xAB}, 64), 8192+4096); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		c.Start(t)
		conn, ver := protoConnect(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		v := protoNewVerifier(t, "CRC32C", ver < 150000)
		_, _, err = Run(ctx, conn, ver, Options{Fast: true}, v)
		var se *ServerError
		if !errors.As(err, &se) || !se.IsChecksumFailure() || !strings.HasPrefix(err.Error(), "page checksum failures: ") ||
			!strings.Contains(err.Error(), rel) {
			t.Fatalf("want a page checksum failure naming %s, got %v\nnotices:\n%s", rel, err, v.noticesText())
		}
		if fmt.Sprint(v.names) == "" || v.m == nil {
			t.Errorf("the data and manifest should have streamed before the error: archives %v", v.names)
		}
		t.Logf("PG %d: %v (phase %q), took %v", major, err, se.Phase, time.Since(t1).Round(time.Millisecond))
	})
	t.Logf("PG %d: all subtests took %v", major, time.Since(t0).Round(time.Millisecond))
}

// TestIncrementalRealServers: UPLOAD_MANIFEST of a full backup's manifest,
// then BASE_BACKUP (INCREMENTAL) on PostgreSQL 17 and 18: the stream holds
// INCREMENTAL.* files that match the server's manifest, and backup_label
// names the parent's start. The server's refusals (no uploaded manifest, a
// damaged manifest, summaries off) come back as *ServerError.
func TestIncrementalRealServers(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL servers")
	}
	if _, err := baseBackupCommand(160000, Options{Incremental: true}); err == nil {
		t.Error("INCREMENTAL accepted for PostgreSQL 16")
	}
	for _, major := range []int{17, 18} {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			testenv.NeedPG(t, major)
			c := testenv.StartPG(t, testenv.PGOptions{Major: major, Conf: map[string]string{"summarize_wal": "on", "autovacuum": "off"}})
			c.Exec(t, "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g")
			// Hint bits set now, not by the first read after the full backup
			// (with data checksums, PostgreSQL 18's default, that read logs
			// every page).
			c.Exec(t, "VACUUM FREEZE big")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			conn, ver := protoConnect(t, c)
			full := protoNewVerifier(t, "CRC32C", false)
			fsi, _, err := Run(ctx, conn, ver, Options{Fast: true}, full)
			if err != nil {
				t.Fatalf("full backup: %v", err)
			}

			// Without an uploaded manifest the server refuses.
			conn2, _ := protoConnect(t, c)
			_, _, err = Run(ctx, conn2, ver, Options{Fast: true, Incremental: true}, protoNewVerifier(t, "CRC32C", false))
			var se *ServerError
			if !errors.As(err, &se) || !strings.Contains(se.Error(), "UPLOAD_MANIFEST") {
				t.Fatalf("incremental without a manifest: %v", err)
			}
			// A manifest with one byte changed fails its checksum.
			conn3, _ := protoConnect(t, c)
			bad := bytes.Clone(full.raw)
			bad[len(bad)/2] ^= 1
			if err := UploadManifest(ctx, conn3, ver, bad); !errors.As(err, &se) {
				t.Fatalf("damaged manifest: %v", err)
			}

			c.Exec(t, "UPDATE big SET v = 'changed' WHERE id % 1000 = 0")
			conn4, _ := protoConnect(t, c)
			if err := UploadManifest(ctx, conn4, ver, full.raw); err != nil {
				t.Fatalf("UPLOAD_MANIFEST: %v", err)
			}
			inc := protoNewVerifier(t, "CRC32C", false)
			if _, _, err := Run(ctx, conn4, ver, Options{Fast: true, Incremental: true}, inc); err != nil {
				t.Fatalf("incremental backup: %v", err)
			}
			for _, x := range inc.m.Check(inc.files) {
				t.Errorf("manifest mismatch: %s", x)
			}
			n := 0
			var incBytes, fullBytes int64
			for _, m := range inc.members["base.tar"] {
				if strings.Contains(m.Name, "/INCREMENTAL.") {
					n++
				}
				incBytes += m.Size
			}
			for _, m := range full.members["base.tar"] {
				fullBytes += m.Size
			}
			if n < 100 {
				t.Errorf("%d INCREMENTAL files in the incremental backup", n)
			}
			if incBytes*4 > fullBytes {
				t.Errorf("the incremental holds %d bytes of files, the full %d: not a block-level increment", incBytes, fullBytes)
			}
			if !strings.Contains(inc.label, "INCREMENTAL FROM LSN: "+fsi.StartLSN.String()) {
				t.Errorf("backup_label does not name the parent's start %s:\n%s", fsi.StartLSN, inc.label)
			}
			t.Logf("full %d bytes of files, incremental %d, %d INCREMENTAL files", fullBytes, incBytes, n)

			// With summaries off, the server names the setting.
			c.Exec(t, "ALTER SYSTEM SET summarize_wal = off")
			c.Exec(t, "SELECT pg_reload_conf()")
			c.WaitFor(t, time.Minute, func() bool { return c.QueryRow(t, "SHOW summarize_wal") == "off" })
			conn5, _ := protoConnect(t, c)
			if err := UploadManifest(ctx, conn5, ver, inc.raw); err != nil {
				t.Fatalf("UPLOAD_MANIFEST: %v", err)
			}
			_, _, err = Run(ctx, conn5, ver, Options{Fast: true, Incremental: true}, protoNewVerifier(t, "CRC32C", false))
			if !errors.As(err, &se) || !strings.Contains(se.Error(), "summar") {
				t.Fatalf("incremental with summarize_wal off: %v", err)
			}
		})
	}
}
