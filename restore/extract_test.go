package restore

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/restore/recoveryconf"
)

// ---------------------------------------------------------------- test helpers

// tm is one crafted tar member.
type tm struct {
	name string
	typ  byte
	mode int64
	body string
	link string
	// claim, when > len(body), makes the header claim more bytes than the stream holds
	// (the stream is cut right after body).
	claim int64
}

func fileM(name, body string) tm {
	return tm{name: name, typ: tar.TypeReg, mode: 0o600, body: body}
}
func dirM(name string) tm { return tm{name: name, typ: tar.TypeDir, mode: 0o700} }

// buildTar writes members as one tar fragment; with trailer, the end-of-archive marker
// follows. A member with claim set ends the stream (truncated) right after its body.
func buildTar(t testing.TB, trailer bool, members ...tm) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		size := int64(len(m.body))
		if m.claim > size {
			size = m.claim
		}
		hdr := &tar.Header{Name: m.name, Typeflag: m.typ, Mode: m.mode, Size: size, Linkname: m.link,
			Uname: "postgres", Gname: "postgres", ModTime: time.Unix(1700000000, 0)}
		if m.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if m.typ == tar.TypeChar || m.typ == tar.TypeBlock {
			hdr.Devmajor, hdr.Devminor = 1, 3
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if m.typ == tar.TypeReg {
			if _, err := io.WriteString(tw, m.body); err != nil {
				t.Fatal(err)
			}
		}
		if m.claim > int64(len(m.body)) {
			return buf.Bytes() // truncated: the header promised more
		}
	}
	if trailer {
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
	} else if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// partStore holds parts in memory and opens them like the repository does: the reader
// checks SHA-256 and size at EOF.
type partStore struct {
	mu    sync.Mutex
	parts map[string][]byte
	// fail, when set, may return an error for a part instead of opening it, or a number of
	// bytes after which its reader fails (>= 0).
	fail   func(ref catalog.ObjectRef) (int, error)
	opened []string
}

func (s *partStore) add(id, archive string, parts ...[]byte) catalog.Archive {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.parts == nil {
		s.parts = map[string][]byte{}
	}
	a := catalog.Archive{Name: archive}
	if archive != "base.tar" {
		oid, _ := strconv.ParseUint(strings.TrimSuffix(archive, ".tar"), 10, 32)
		a.OID = uint32(oid)
	}
	for i, p := range parts {
		key := catalog.PartKey(id, archive, i)
		s.parts[key] = p
		sum := sha256.Sum256(p)
		a.Parts = append(a.Parts, catalog.ObjectRef{Key: key, Bytes: int64(len(p)), SHA256: hex.EncodeToString(sum[:]), StoredBytes: int64(len(p))})
		a.Bytes += int64(len(p))
	}
	return a
}

func (s *partStore) open(ctx context.Context, ref catalog.ObjectRef) (io.ReadCloser, error) {
	s.mu.Lock()
	b, ok := s.parts[ref.Key]
	s.opened = append(s.opened, ref.Key)
	fail := s.fail
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no object %s", ref.Key)
	}
	var r io.Reader = bytes.NewReader(b)
	if fail != nil {
		after, err := fail(ref)
		if err != nil && after < 0 {
			return nil, err
		}
		if err != nil {
			r = io.MultiReader(io.LimitReader(r, int64(after)), &errReader{err})
		}
	}
	return verifying(r, ref), nil
}

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }

// verifying implements the PartOpener contract: SHA-256 and size checked at EOF.
func verifying(r io.Reader, ref catalog.ObjectRef) io.ReadCloser {
	return &verifyReader{r: r, ref: ref, h: sha256.New()}
}

type verifyReader struct {
	r   io.Reader
	ref catalog.ObjectRef
	h   interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func (v *verifyReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF {
		if v.n != v.ref.Bytes || hex.EncodeToString(v.h.Sum(nil)) != v.ref.SHA256 {
			return n, fmt.Errorf("%s: checksum or size mismatch (%d bytes read, %d expected)", v.ref.Key, v.n, v.ref.Bytes)
		}
	}
	return n, err
}

func (v *verifyReader) Close() error { return nil }

const testID = "20261124T215700Z"

var controlBody = strings.Repeat("C", 8192)

// baseMembers is a small but complete data directory in three parts.
func baseMembers() [][]tm {
	return [][]tm{
		{
			fileM("backup_label", "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nLABEL: test\n"),
			fileM("PG_VERSION", "15\n"),
			fileM("postgresql.conf", "# conf\n"),
			dirM("global"),
			fileM("global/1262", strings.Repeat("g", 8192)),
			dirM("base"),
		},
		{
			dirM("base/1"),
			fileM("base/1/1259", strings.Repeat("r", 100000)),
			fileM("base/1/PG_VERSION", "15\n"),
			dirM("pg_wal"),
			dirM("./pg_wal/archive_status"),
			dirM("pg_tblspc"),
			dirM("pg_notify"),
		},
		{
			dirM("pg_xact"),
			fileM("pg_xact/0000", strings.Repeat("x", 8192)),
			fileM("global/pg_control", controlBody),
		},
	}
}

// testBackup builds a backup from base parts (members per part; the last gets the
// trailer) and optional tablespace archives.
func testBackup(t testing.TB, s *partStore, base [][]tm, spcs map[uint32][][]tm, locs map[uint32]string) *catalog.Meta {
	t.Helper()
	m := &catalog.Meta{Format: catalog.MetaFormat, ID: testID, PGMajor: 15, PGVersionNum: 150010}
	for oid, parts := range spcs {
		var bs [][]byte
		for i, p := range parts {
			bs = append(bs, buildTar(t, i == len(parts)-1, p...))
		}
		m.Archives = append(m.Archives, s.add(testID, fmt.Sprintf("%d.tar", oid), bs...))
		m.Tablespaces = append(m.Tablespaces, catalog.Tablespace{OID: oid, Location: locs[oid]})
	}
	var bs [][]byte
	for i, p := range base {
		bs = append(bs, buildTar(t, i == len(base)-1, p...))
	}
	m.Archives = append(m.Archives, s.add(testID, "base.tar", bs...))
	return m
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLogger(buf *logBuf) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func modeOf(t testing.TB, p string) fs.FileMode {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode()
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// listTree lists every path below dir (relative), for "nothing was written" checks.
func listTree(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		if rel != "." {
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// ---------------------------------------------------------------- tests

func TestExtractBasic(t *testing.T) {
	sandbox := t.TempDir()
	pgdata := filepath.Join(sandbox, "new", "pgdata")
	s := &partStore{}
	m := testBackup(t, s, baseMembers(), nil, nil)
	var progress []int64
	var logs logBuf
	err := Extract(context.Background(), m, s.open, ExtractOptions{
		PGDATA: pgdata, Jobs: 3, Log: testLogger(&logs),
		Progress: func(n int64) { progress = append(progress, n) },
	})
	if err != nil {
		t.Fatalf("Extract: %v\n%s", err, logs.String())
	}
	for name, want := range map[string]string{
		"backup_label": "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nLABEL: test\n",
		"PG_VERSION":   "15\n", "global/pg_control": controlBody,
		"base/1/1259": strings.Repeat("r", 100000), "pg_xact/0000": strings.Repeat("x", 8192),
	} {
		b, err := os.ReadFile(filepath.Join(pgdata, name))
		if err != nil || string(b) != want {
			t.Errorf("%s: %v (%d bytes)", name, err, len(b))
		}
	}
	for _, gone := range []string{markerName, controlTmp} {
		if exists(filepath.Join(pgdata, gone)) {
			t.Errorf("%s left behind", gone)
		}
	}
	// Directories the server sends empty, created when the tar lacks them.
	for _, d := range ensureDirs {
		if m := modeOf(t, filepath.Join(pgdata, d)); !m.IsDir() || m.Perm() != 0o700 {
			t.Errorf("%s: mode %v, want a 0700 directory", d, m)
		}
	}
	if exists(filepath.Join(pgdata, "pg_wal/summaries")) {
		t.Error("pg_wal/summaries created for PostgreSQL 15")
	}
	if m := modeOf(t, pgdata); m.Perm() != 0o700 {
		t.Errorf("PGDATA mode %v, want 0700", m)
	}
	if m := modeOf(t, filepath.Join(pgdata, "global/pg_control")); m.Perm() != 0o600 {
		t.Errorf("pg_control mode %v", m)
	}
	var total int64
	for _, a := range m.Archives {
		total += a.Bytes
	}
	if len(progress) == 0 || progress[len(progress)-1] != total {
		t.Errorf("progress %v, want to end at %d", progress, total)
	}
	for i := 1; i < len(progress); i++ {
		if progress[i] < progress[i-1] {
			t.Errorf("progress not monotonic: %v", progress)
		}
	}
	if len(s.opened) != 3 {
		t.Errorf("opened %v", s.opened)
	}

	// PostgreSQL 17+: pg_wal/summaries too.
	s2 := &partStore{}
	m2 := testBackup(t, s2, baseMembers(), nil, nil)
	m2.PGMajor = 17
	pg17 := filepath.Join(sandbox, "pg17")
	if err := Extract(context.Background(), m2, s2.open, ExtractOptions{PGDATA: pg17, Jobs: 1}); err != nil {
		t.Fatal(err)
	}
	if m := modeOf(t, filepath.Join(pg17, "pg_wal/summaries")); !m.IsDir() {
		t.Errorf("pg_wal/summaries: %v", m)
	}
}

func TestExtractRefusesNonEmpty(t *testing.T) {
	pgdata := t.TempDir()
	if err := os.WriteFile(filepath.Join(pgdata, "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &partStore{}
	m := testBackup(t, s, baseMembers(), nil, nil)
	for _, force := range []bool{false, true} {
		err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2, Force: force})
		if err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Fatalf("Force=%v: err = %v, want a refusal of a non-empty directory", force, err)
		}
	}
	if got := listTree(t, pgdata); len(got) != 1 {
		t.Errorf("PGDATA touched: %v", got)
	}
	if len(s.opened) != 0 {
		t.Errorf("parts opened: %v", s.opened)
	}
	// An existing empty directory is fine, and gets mode 0700.
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: empty, Jobs: 2}); err != nil {
		t.Fatal(err)
	}
	if m := modeOf(t, empty); m.Perm() != 0o700 {
		t.Errorf("mode %v", m)
	}
}

func TestExtractMarkerAndForce(t *testing.T) {
	pgdata := filepath.Join(t.TempDir(), "pgdata")
	s := &partStore{}
	m := testBackup(t, s, baseMembers(), nil, nil)
	last := m.Archives[len(m.Archives)-1].Parts[2]
	// The last part fails just before its end: every member, pg_control included, was
	// written; only the trailer's checksum is missing.
	s.fail = func(ref catalog.ObjectRef) (int, error) {
		if ref.Key == last.Key {
			return int(ref.Bytes) - 100, errors.New("connection reset")
		}
		return 0, nil
	}
	err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 1})
	if err == nil || !strings.Contains(err.Error(), "connection reset") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("interrupted Extract: err = %v", err)
	}
	if exists(filepath.Join(pgdata, "global/pg_control")) {
		t.Fatal("global/pg_control exists after an interrupted restore: the directory is startable")
	}
	if !exists(filepath.Join(pgdata, controlTmp)) {
		t.Error("expected pg_control under its temporary name")
	}
	marker, err := os.ReadFile(filepath.Join(pgdata, markerName))
	if err != nil || !strings.Contains(string(marker), testID) {
		t.Fatalf("marker: %v %q", err, marker)
	}

	s.fail = nil
	err = Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2})
	if err == nil || !strings.Contains(err.Error(), "--force") || !strings.Contains(err.Error(), "unfinished") {
		t.Fatalf("Extract without Force on an unfinished restore: err = %v", err)
	}
	var logs logBuf
	if err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2, Force: true, Log: testLogger(&logs)}); err != nil {
		t.Fatalf("Extract with Force: %v", err)
	}
	if !strings.Contains(logs.String(), "cleaning an unfinished restore") {
		t.Errorf("Force did not log the cleaning:\n%s", logs.String())
	}
	if b, err := os.ReadFile(filepath.Join(pgdata, "global/pg_control")); err != nil || string(b) != controlBody {
		t.Fatalf("pg_control after Force: %v", err)
	}
	if exists(filepath.Join(pgdata, markerName)) || exists(filepath.Join(pgdata, controlTmp)) {
		t.Error("marker or temporary pg_control left")
	}
	// A completed restore is not "unfinished": Force does not clean it.
	err = Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2, Force: true})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Force on a finished restore: %v", err)
	}
}

func TestExtractMissingControlOrLabel(t *testing.T) {
	for _, drop := range []string{"global/pg_control", "backup_label"} {
		parts := baseMembers()
		for i := range parts {
			var keep []tm
			for _, mm := range parts[i] {
				if mm.name != drop {
					keep = append(keep, mm)
				}
			}
			parts[i] = keep
		}
		s := &partStore{}
		m := testBackup(t, s, parts, nil, nil)
		pgdata := filepath.Join(t.TempDir(), "d")
		err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2})
		if err == nil || !strings.Contains(err.Error(), drop) {
			t.Errorf("without %s: err = %v", drop, err)
		}
		if exists(filepath.Join(pgdata, "global/pg_control")) || !exists(filepath.Join(pgdata, markerName)) {
			t.Errorf("without %s: the directory looks finished", drop)
		}
	}
}

func TestExtractHostileMembers(t *testing.T) {
	const spc = 16385
	cases := []struct {
		name    string
		members func(sandbox string) []tm
		want    string
	}{
		{"dotdot", func(string) []tm { return []tm{fileM("../x", "evil")} }, ".."},
		{"absolute", func(sb string) []tm { return []tm{fileM(sb+"/x", "evil")} }, "absolute"},
		{"inner dotdot", func(string) []tm { return []tm{fileM("a/../../x", "evil")} }, ".."},
		{"harmless dotdot", func(string) []tm { return []tm{dirM("a"), fileM("a/../b", "evil")} }, ".."},
		{"symlink then file through it", func(sb string) []tm {
			return []tm{{name: "evil", typ: tar.TypeSymlink, mode: 0o777, link: sb}, fileM("evil/x", "evil")}
		}, "symlink"},
		{"relative symlink", func(string) []tm {
			return []tm{{name: "base/evil", typ: tar.TypeSymlink, mode: 0o777, link: "../../.."}, fileM("base/evil/x", "evil")}
		}, "symlink"},
		{"file through a tablespace link", func(sb string) []tm {
			return []tm{{name: "pg_tblspc/16385", typ: tar.TypeSymlink, mode: 0o777, link: sb}, fileM("pg_tblspc/16385/x", "evil")}
		}, "pg_tblspc"},
		{"link of an unknown tablespace", func(sb string) []tm {
			return []tm{{name: "pg_tblspc/99999", typ: tar.TypeSymlink, mode: 0o777, link: sb}}
		}, "pg_tblspc"},
		{"char device", func(string) []tm { return []tm{{name: "null", typ: tar.TypeChar, mode: 0o600}} }, "device"},
		{"block device", func(string) []tm { return []tm{{name: "sda", typ: tar.TypeBlock, mode: 0o600}} }, "device"},
		{"fifo", func(string) []tm { return []tm{{name: "fifo", typ: tar.TypeFifo, mode: 0o600}} }, "FIFO"},
		{"hard link", func(string) []tm {
			return []tm{{name: "hl", typ: tar.TypeLink, mode: 0o600, link: "/etc/passwd"}}
		}, "hard link"},
		{"member larger than the part", func(string) []tm {
			return []tm{{name: "big", typ: tar.TypeReg, mode: 0o600, body: "0123456789", claim: 1 << 30}}
		}, "claims"},
		{"reserved marker name", func(string) []tm { return []tm{fileM(markerName, "x")} }, "reserved"},
		{"reserved pg_control name", func(string) []tm { return []tm{fileM(controlTmp, "x")} }, "reserved"},
		{"duplicate file", func(string) []tm { return []tm{fileM("PG_VERSION", "14\n")} }, "exists"},
		{"setuid", func(string) []tm { return []tm{{name: "s", typ: tar.TypeReg, mode: 0o4600, body: "x"}} }, "mode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sandbox := t.TempDir()
			pgdata := filepath.Join(sandbox, "pgdata")
			loc := filepath.Join(sandbox, "ts")
			parts := baseMembers()
			// The hostile members come in the middle part, between valid ones.
			parts[1] = append(append(parts[1][:2:2], tc.members(sandbox)...), parts[1][2:]...)
			s := &partStore{}
			spcParts := map[uint32][][]tm{spc: {{dirM("PG_15_202209061"), fileM("PG_15_202209061/x", "ts")}}}
			m := testBackup(t, s, parts, spcParts, map[uint32]string{spc: loc})
			err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 3})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one about %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
			// Nothing outside PGDATA and the tablespace location.
			for _, p := range listTree(t, sandbox) {
				if p != "pgdata" && p != "ts" && !strings.HasPrefix(p, "pgdata/") && !strings.HasPrefix(p, "ts/") {
					t.Errorf("written outside the targets: %s", p)
				}
			}
			if exists(filepath.Join(pgdata, "global/pg_control")) {
				t.Error("pg_control in place after a refused member")
			}
			for _, p := range []string{"big", "evil", "null", "sda", "fifo", "hl", "s", "a/b", "base/evil"} {
				if exists(filepath.Join(pgdata, p)) {
					t.Errorf("%s was created", p)
				}
			}
		})
	}
}

func TestExtractHostileTablespaceMembers(t *testing.T) {
	const spc = 16385
	cases := []struct {
		name    string
		members []tm
		want    string
	}{
		{"other major", []tm{dirM("PG_14_202107181"), fileM("PG_14_202107181/x", "x")}, "outside"},
		{"top level file", []tm{fileM("x", "x")}, "outside"},
		{"marker", []tm{fileM(markerName, "x")}, "outside"},
		{"symlink", []tm{dirM("PG_15_202209061"), {name: "PG_15_202209061/l", typ: tar.TypeSymlink, mode: 0o777, link: "/"}}, "symlink"},
		{"dotdot", []tm{fileM("PG_15_202209061/../../x", "x")}, ".."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sandbox := t.TempDir()
			loc := filepath.Join(sandbox, "ts")
			s := &partStore{}
			m := testBackup(t, s, baseMembers(), map[uint32][][]tm{spc: {tc.members}}, map[uint32]string{spc: loc})
			err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: filepath.Join(sandbox, "pgdata"), Jobs: 2})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one about %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
			for _, p := range listTree(t, loc) {
				if p != markerName && !strings.HasPrefix(p, "PG_15_") {
					t.Errorf("written in the tablespace location: %s", p)
				}
			}
		})
	}
}

func TestExtractModes(t *testing.T) {
	t.Run("group access", func(t *testing.T) {
		parts := baseMembers()
		for i := range parts {
			for j := range parts[i] {
				if parts[i][j].typ == tar.TypeDir {
					parts[i][j].mode = 0o750
				} else {
					parts[i][j].mode = 0o640
				}
			}
		}
		s := &partStore{}
		m := testBackup(t, s, parts, nil, nil)
		pgdata := filepath.Join(t.TempDir(), "pgdata")
		if err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2}); err != nil {
			t.Fatal(err)
		}
		for p, want := range map[string]fs.FileMode{
			".": 0o750, "global": 0o750, "base/1": 0o750, "pg_wal/archive_status": 0o750,
			"pg_stat_tmp":       0o750, // created by pgark: the data directory's mode
			"global/pg_control": 0o640, "base/1/1259": 0o640,
		} {
			if got := modeOf(t, filepath.Join(pgdata, p)).Perm(); got != want {
				t.Errorf("%s: mode %04o, want %04o", p, got, want)
			}
		}
	})
	t.Run("recorded modes kept", func(t *testing.T) {
		parts := baseMembers()
		parts[1] = append(parts[1], tm{name: "server.key", typ: tar.TypeReg, mode: 0o400, body: "k"})
		s := &partStore{}
		m := testBackup(t, s, parts, nil, nil)
		pgdata := filepath.Join(t.TempDir(), "pgdata")
		if err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2}); err != nil {
			t.Fatal(err)
		}
		if got := modeOf(t, filepath.Join(pgdata, "server.key")).Perm(); got != 0o400 {
			t.Errorf("server.key mode %04o, want 0400", got)
		}
	})
	for _, tc := range []struct {
		name string
		mut  func(parts [][]tm) [][]tm
	}{
		{"dir 0755", func(p [][]tm) [][]tm { p[0][3].mode = 0o755; return p }},
		{"dir 0770", func(p [][]tm) [][]tm { p[0][3].mode = 0o770; return p }},
		{"file 0644", func(p [][]tm) [][]tm { p[0][2].mode = 0o644; return p }},
		{"file 0660", func(p [][]tm) [][]tm { p[0][2].mode = 0o660; return p }},
		{"pg_control 0644", func(p [][]tm) [][]tm { p[2][2].mode = 0o644; return p }},
		{"sticky dir", func(p [][]tm) [][]tm { p[1][0].mode = 0o1700; return p }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &partStore{}
			m := testBackup(t, s, tc.mut(baseMembers()), nil, nil)
			pgdata := filepath.Join(t.TempDir(), "pgdata")
			err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2})
			if err == nil || !strings.Contains(err.Error(), "looser") {
				t.Fatalf("err = %v, want a refusal of a loose mode", err)
			}
		})
	}
}

func TestExtractOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	s := &partStore{}
	const spc = 16385
	sandbox := t.TempDir()
	m := testBackup(t, s, baseMembers(), map[uint32][][]tm{spc: {{dirM("PG_15_202209061"), fileM("PG_15_202209061/x", "ts")}}},
		map[uint32]string{spc: filepath.Join(sandbox, "ts")})
	pgdata := filepath.Join(sandbox, "pgdata")
	if err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2, Owner: &Owner{UID: 4321, GID: 8765}}); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{pgdata, filepath.Join(sandbox, "ts")} {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Error(err)
				return nil
			}
			st, _ := os.Lstat(p)
			sys := st.Sys().(*syscall.Stat_t)
			if sys.Uid != 4321 || sys.Gid != 8765 {
				t.Errorf("%s belongs to %d:%d", p, sys.Uid, sys.Gid)
			}
			return nil
		})
	}
}

func TestExtractTablespaces(t *testing.T) {
	const spc = 16385
	spcParts := func() map[uint32][][]tm {
		return map[uint32][][]tm{spc: {
			{dirM("PG_15_202209061"), dirM("PG_15_202209061/5"), fileM("PG_15_202209061/5/16386", strings.Repeat("t", 20000))},
			{fileM("PG_15_202209061/5/16386_fsm", strings.Repeat("f", 24576))},
		}}
	}
	withMap := func(loc string) [][]tm {
		parts := baseMembers()
		mapBody := string(formatTablespaceMap([]tablespaceMapEntry{{OID: spc, Path: loc}}))
		parts[0] = append([]tm{parts[0][0], fileM("tablespace_map", mapBody)}, parts[0][1:]...)
		return parts
	}

	t.Run("original location", func(t *testing.T) {
		sandbox := t.TempDir()
		loc := filepath.Join(sandbox, "ts")
		s := &partStore{}
		m := testBackup(t, s, withMap(loc), spcParts(), map[uint32]string{spc: loc})
		pgdata := filepath.Join(sandbox, "pgdata")
		if err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 4}); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(pgdata, "tablespace_map"))
		if want := fmt.Sprintf("%d %s\n", spc, loc); string(b) != want {
			t.Errorf("tablespace_map = %q, want the server's bytes %q", b, want)
		}
		if target, err := os.Readlink(filepath.Join(pgdata, "pg_tblspc", "16385")); err != nil || target != loc {
			t.Errorf("pg_tblspc/16385 -> %q, %v", target, err)
		}
		if b, err := os.ReadFile(filepath.Join(loc, "PG_15_202209061/5/16386")); err != nil || len(b) != 20000 {
			t.Errorf("tablespace file: %v", err)
		}
		if m := modeOf(t, loc); m.Perm() != 0o700 {
			t.Errorf("created tablespace location has mode %v", m)
		}
		if exists(filepath.Join(loc, markerName)) {
			t.Error("tablespace marker left")
		}
	})

	t.Run("refuses a live tablespace", func(t *testing.T) {
		sandbox := t.TempDir()
		loc := filepath.Join(sandbox, "ts")
		live := filepath.Join(loc, "PG_15_202209061", "5")
		if err := os.MkdirAll(live, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(live, "16386"), []byte("LIVE"), 0o600); err != nil {
			t.Fatal(err)
		}
		s := &partStore{}
		m := testBackup(t, s, withMap(loc), spcParts(), map[uint32]string{spc: loc})
		pgdata := filepath.Join(sandbox, "pgdata")
		for _, force := range []bool{false, true} {
			err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2, Force: force})
			if err == nil || !strings.Contains(err.Error(), "live tablespace") || !strings.Contains(err.Error(), "PG_15_202209061") {
				t.Fatalf("Force=%v: err = %v", force, err)
			}
		}
		if exists(pgdata) {
			t.Error("PGDATA created although the restore was refused")
		}
		if got := listTree(t, loc); strings.Join(got, ",") != "PG_15_202209061,PG_15_202209061/5,PG_15_202209061/5/16386" {
			t.Errorf("the live tablespace was touched: %v", got)
		}
		if len(s.opened) != 0 {
			t.Errorf("parts opened: %v", s.opened)
		}
		// Mapped elsewhere it works, and the live one stays untouched.
		newLoc := filepath.Join(sandbox, "ts-copy")
		if err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2, TablespaceMap: map[uint32]string{spc: newLoc}}); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(live, "16386")); string(b) != "LIVE" {
			t.Error("live tablespace modified")
		}
	})

	t.Run("empty version dir and other majors are fine", func(t *testing.T) {
		sandbox := t.TempDir()
		loc := filepath.Join(sandbox, "ts")
		for _, d := range []string{"PG_15_202209061", "PG_14_202107181/5"} {
			if err := os.MkdirAll(filepath.Join(loc, d), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		s := &partStore{}
		m := testBackup(t, s, withMap(loc), spcParts(), map[uint32]string{spc: loc})
		if err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: filepath.Join(sandbox, "pgdata"), Jobs: 2}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("remapped with escapes", func(t *testing.T) {
		sandbox := t.TempDir()
		orig := "/srv/old\\ts"
		loc := filepath.Join(sandbox, "new ts\\with\nnewline")
		s := &partStore{}
		m := testBackup(t, s, withMap(orig), spcParts(), map[uint32]string{spc: orig})
		pgdata := filepath.Join(sandbox, "pgdata")
		var logs logBuf
		if err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2, TablespaceMap: map[uint32]string{spc: loc}, Log: testLogger(&logs)}); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(pgdata, "tablespace_map"))
		want := fmt.Sprintf("%d %s\n", spc, strings.ReplaceAll(strings.ReplaceAll(loc, "\\", "\\\\"), "\n", "\\\n"))
		if string(b) != want {
			t.Errorf("tablespace_map = %q, want %q", b, want)
		}
		entries, err := parseTablespaceMap(b)
		if err != nil || len(entries) != 1 || entries[0].OID != spc || entries[0].Path != loc {
			t.Errorf("parsed back: %+v %v", entries, err)
		}
		if target, _ := os.Readlink(filepath.Join(pgdata, "pg_tblspc", "16385")); target != loc {
			t.Errorf("pg_tblspc/16385 -> %q", target)
		}
		if !exists(filepath.Join(loc, "PG_15_202209061/5/16386_fsm")) {
			t.Error("tablespace not restored at the mapped location")
		}
		if exists("/srv/old\\ts") {
			t.Error("original location written")
		}
		if !strings.Contains(logs.String(), "ignore=tablespace_map") {
			t.Errorf("no hint about pg_verifybackup: %s", logs.String())
		}
	})

	t.Run("marker and force in a tablespace", func(t *testing.T) {
		sandbox := t.TempDir()
		loc := filepath.Join(sandbox, "ts")
		s := &partStore{}
		m := testBackup(t, s, withMap(loc), spcParts(), map[uint32]string{spc: loc})
		pgdata := filepath.Join(sandbox, "pgdata")
		s.fail = func(ref catalog.ObjectRef) (int, error) {
			if strings.Contains(ref.Key, "base.tar.002") {
				return -1, errors.New("gone")
			}
			return 0, nil
		}
		if err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 1}); err == nil {
			t.Fatal("no error")
		}
		if !exists(filepath.Join(loc, markerName)) || !exists(filepath.Join(loc, "PG_15_202209061/5/16386")) {
			t.Fatalf("expected a marked, partly restored tablespace: %v", listTree(t, loc))
		}
		s.fail = nil
		if err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2}); err == nil || !strings.Contains(err.Error(), "--force") {
			t.Fatalf("err = %v", err)
		}
		if err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2, Force: true}); err != nil {
			t.Fatal(err)
		}
		if exists(filepath.Join(loc, markerName)) {
			t.Error("marker left")
		}
	})

	t.Run("bad plans", func(t *testing.T) {
		sandbox := t.TempDir()
		s := &partStore{}
		m := testBackup(t, s, baseMembers(), spcParts(), map[uint32]string{spc: filepath.Join(sandbox, "ts")})
		pgdata := filepath.Join(sandbox, "pgdata")
		for _, tc := range []struct {
			o    ExtractOptions
			want string
		}{
			{ExtractOptions{PGDATA: pgdata, TablespaceMap: map[uint32]string{99: "/x"}}, "no such tablespace"},
			{ExtractOptions{PGDATA: pgdata, TablespaceMap: map[uint32]string{spc: "relative"}}, "absolute"},
			{ExtractOptions{PGDATA: pgdata, TablespaceMap: map[uint32]string{spc: pgdata}}, "data directory itself"},
			{ExtractOptions{}, "PGDATA"},
		} {
			if err := Extract(context.Background(), m, s.open, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%+v: err = %v, want %q", tc.o, err, tc.want)
			}
		}
		if exists(pgdata) {
			t.Error("PGDATA created")
		}
	})
}

func TestExtractTablespaceMapFormat(t *testing.T) {
	in := []tablespaceMapEntry{{16385, "/a/b"}, {16386, "/with space/and\\back"}, {16387, "/nl\nx\rcr"}}
	b := formatTablespaceMap(in)
	if want := "16385 /a/b\n16386 /with space/and\\\\back\n16387 /nl\\\nx\\\rcr\n"; string(b) != want {
		t.Fatalf("format = %q, want %q", b, want)
	}
	out, err := parseTablespaceMap(b)
	if err != nil || fmt.Sprint(out) != fmt.Sprint(in) {
		t.Fatalf("parse = %+v, %v", out, err)
	}
	for _, bad := range []string{"x /a\n", "16385\n", "0 /a\n"} {
		if _, err := parseTablespaceMap([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestExtractCanceled(t *testing.T) {
	s := &partStore{}
	m := testBackup(t, s, baseMembers(), nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	pgdata := filepath.Join(t.TempDir(), "pgdata")
	if err := Extract(ctx, m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if exists(filepath.Join(pgdata, "global/pg_control")) {
		t.Error("pg_control in place")
	}
}

// ---------------------------------------------------------------- kill -9

// killBackup is a deterministic backup big enough for a restore to take a moment.
func killBackup(t testing.TB, s *partStore) (*catalog.Meta, map[string]string) {
	want := map[string]string{}
	base := baseMembers()
	for _, p := range base {
		for _, mm := range p {
			if mm.typ == tar.TypeReg {
				want[mm.name] = mm.body
			}
		}
	}
	for i := range 24 {
		name := fmt.Sprintf("base/1/%d", 20000+i)
		body := strings.Repeat(string(rune('a'+i%26)), 64<<10+i)
		want[name] = body
		p := 1 + i%2 // parts 1 and 2, before pg_control
		base[p] = append([]tm{fileM(name, body)}, base[p]...)
	}
	return testBackup(t, s, base, nil, nil), want
}

// TestExtractKillHelper is the child process of TestExtractKill9.
func TestExtractKillHelper(t *testing.T) {
	dir := os.Getenv("PGARK_EXT_KILL_PGDATA")
	if dir == "" {
		t.Skip("helper process for TestExtractKill9")
	}
	s := &partStore{}
	m, _ := killBackup(t, s)
	slow := func(ctx context.Context, ref catalog.ObjectRef) (io.ReadCloser, error) {
		rc, err := s.open(ctx, ref)
		if err != nil {
			return nil, err
		}
		return &slowReader{rc}, nil
	}
	if err := Extract(context.Background(), m, slow, ExtractOptions{PGDATA: dir, Jobs: 2}); err != nil {
		t.Fatal(err)
	}
	fmt.Println("EXTRACT-DONE")
}

type slowReader struct{ io.ReadCloser }

func (r *slowReader) Read(p []byte) (int, error) {
	time.Sleep(3 * time.Millisecond)
	return r.ReadCloser.Read(p[:min(len(p), 16<<10)])
}

// TestExtractKill9 kills a restore (SIGKILL) at several moments and checks that the
// directory is either finished (pg_control in place, every file complete) or not
// startable (no pg_control) and marked; Extract with Force then completes it.
func TestExtractKill9(t *testing.T) {
	s := &partStore{}
	m, want := killBackup(t, s)
	sawUnfinished, sawDone := false, false
	// The last run is not killed: it must finish on its own.
	for _, delay := range []time.Duration{0, 30 * time.Millisecond, 80 * time.Millisecond, 150 * time.Millisecond, 250 * time.Millisecond, 400 * time.Millisecond, -1} {
		pgdata := filepath.Join(t.TempDir(), "pgdata")
		cmd := exec.Command(os.Args[0], "-test.run=^TestExtractKillHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), "PGARK_EXT_KILL_PGDATA="+pgdata)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var timer <-chan time.Time
		if delay >= 0 {
			timer = time.After(delay)
		}
		select {
		case err := <-done:
			if err != nil || !strings.Contains(out.String(), "EXTRACT-DONE") {
				t.Fatalf("helper failed: %v\n%s", err, out.String())
			}
		case <-timer:
			cmd.Process.Signal(syscall.SIGKILL)
			<-done
		}
		control := exists(filepath.Join(pgdata, "global/pg_control"))
		if control {
			sawDone = true
			for name, body := range want {
				b, err := os.ReadFile(filepath.Join(pgdata, name))
				if err != nil || string(b) != body {
					t.Fatalf("delay %v: pg_control is in place but %s is incomplete (%v, %d bytes)", delay, name, err, len(b))
				}
			}
			continue
		}
		sawUnfinished = true
		if exists(pgdata) && len(listTree(t, pgdata)) > 0 && !exists(filepath.Join(pgdata, markerName)) {
			t.Fatalf("delay %v: killed restore without pg_control and without marker: %v", delay, listTree(t, pgdata))
		}
		// Force completes it.
		if err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 2, Force: true}); err != nil {
			t.Fatalf("delay %v: Extract --force after kill: %v", delay, err)
		}
		if b, err := os.ReadFile(filepath.Join(pgdata, "global/pg_control")); err != nil || string(b) != controlBody {
			t.Fatalf("delay %v: after Force: %v", delay, err)
		}
	}
	if !sawUnfinished || !sawDone {
		t.Errorf("kill points did not cover both outcomes (unfinished %v, done %v)", sawUnfinished, sawDone)
	}
}

func TestExtractNoFollow(t *testing.T) {
	sandbox := t.TempDir()
	target := filepath.Join(sandbox, "target")
	outside := filepath.Join(sandbox, "outside")
	for _, d := range []string{target, outside} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// Symlinks that something else put there: pgark never creates any during extraction.
	if err := os.Symlink(outside, filepath.Join(target, "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "f"), filepath.Join(target, "f")); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(target)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	x := &extractor{o: ExtractOptions{}, log: slog.New(slog.DiscardHandler)}
	tg := &destDir{dir: target, root: root, dirs: map[string]fs.FileMode{}}
	if err := x.mkdirs(tg, "a/b"); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("mkdirs through a symlink: %v", err)
	}
	if err := x.writeFile(context.Background(), tg, "f", 0o600, 1, strings.NewReader("x"), make([]byte, 16)); err == nil {
		t.Error("writeFile followed a symlink")
	}
	if got := listTree(t, outside); len(got) != 0 {
		t.Errorf("written outside: %v", got)
	}
}

// ---------------------------------------------------------------- real PostgreSQL

// splitRealTar cuts a tar file into n parts at member boundaries (raw byte ranges, as
// the backup writer stores them), writes them into outDir and returns the archive entry.
func splitRealTar(t *testing.T, file string, n int, outDir, name string, oid uint32) (catalog.Archive, []*tar.Header) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cr := &counter{r: bytes.NewReader(b), x: &extractor{}}
	tr := tar.NewReader(cr)
	var starts []int64
	var hdrs []*tar.Header
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		start := cr.n - 512 // PostgreSQL writes plain ustar headers: one block each
		if !bytes.HasPrefix(b[start:], []byte(hdr.Name)) {
			t.Fatalf("%s: member %q does not start at %d", file, hdr.Name, start)
		}
		starts = append(starts, start)
		hdrs = append(hdrs, hdr)
	}
	a := catalog.Archive{Name: name, OID: oid, Bytes: int64(len(b))}
	var cuts []int64
	for k := 1; k < n; k++ {
		cuts = append(cuts, starts[len(starts)*k/n])
	}
	cuts = append(cuts, int64(len(b)))
	prev := int64(0)
	for k, c := range cuts {
		part := b[prev:c]
		p := filepath.Join(outDir, fmt.Sprintf("%s.%03d", name, k))
		if err := os.WriteFile(p, part, 0o600); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(part)
		a.Parts = append(a.Parts, catalog.ObjectRef{Key: p, Bytes: int64(len(part)), SHA256: hex.EncodeToString(sum[:]), StoredBytes: int64(len(part))})
		prev = c
	}
	return a, hdrs
}

type filePart struct {
	io.Reader
	f *os.File
}

func (p *filePart) Close() error { return p.f.Close() }

// TestExtractPostgres restores real pg_basebackup tar streams (PostgreSQL 15, with a
// tablespace), split into parts, checks them with pg_verifybackup and starts a server
// on the result; an interrupted restore is refused by PostgreSQL and completed by Force.
func TestExtractPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	const major = 15
	ctx := context.Background()
	dir := testenv.SharedDir(t)
	arch := filepath.Join(dir, "archive")
	tsLive := filepath.Join(dir, "ts")
	testenv.MkdirShared(t, arch)
	testenv.MkdirShared(t, tsLive)
	src := testenv.StartPG(t, testenv.PGOptions{Major: major, Conf: map[string]string{
		"archive_mode": "on", "archive_command": "cp %p " + arch + "/%f",
	}})
	src.Exec(t, "CREATE TABLESPACE ts LOCATION '"+tsLive+"'")
	src.Exec(t, `CREATE TABLE in_ts(i int, t text) TABLESPACE ts;
		INSERT INTO in_ts SELECT i, md5(i::text) FROM generate_series(1, 20000) i;
		CREATE TABLE in_main(i int); INSERT INTO in_main SELECT generate_series(1, 50000)`)
	oid64, err := strconv.ParseUint(src.QueryRow(t, "SELECT oid FROM pg_tablespace WHERE spcname = 'ts'"), 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	oid := uint32(oid64)

	bb := filepath.Join(dir, "bb")
	pgbb, err := testenv.ClientBin("pg_basebackup")
	if err != nil {
		testenv.Missing(t, err)
	}
	cmd := exec.Command(pgbb, "-Ft", "-X", "none", "--manifest-checksums=CRC32C", "-c", "fast", "-D", bb)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), src.PGEnv()...)
	testenv.RunAsPostgres(cmd)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	// Changes after the backup: only WAL replay through restore_command brings them back.
	src.Exec(t, `INSERT INTO in_ts SELECT i, 'after' FROM generate_series(20001, 21000) i;
		INSERT INTO in_main SELECT generate_series(50001, 51000)`)
	src.WaitArchived(t, src.SwitchWAL(t), 2*time.Minute)

	partsDir := filepath.Join(dir, "parts")
	if err := os.Mkdir(partsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	tsArch, _ := splitRealTar(t, filepath.Join(bb, fmt.Sprintf("%d.tar", oid)), 2, partsDir, fmt.Sprintf("%d.tar", oid), oid)
	baseArch, baseHdrs := splitRealTar(t, filepath.Join(bb, "base.tar"), 3, partsDir, "base.tar", 0)
	m := &catalog.Meta{Format: catalog.MetaFormat, ID: testID, PGMajor: major, PGVersionNum: 150000,
		Tablespaces: []catalog.Tablespace{{OID: oid, Location: tsLive}},
		Archives:    []catalog.Archive{tsArch, baseArch}}

	// Which of the directories pgark creates when missing does the server send itself?
	sent := map[string]bool{}
	for _, h := range baseHdrs {
		if h.Typeflag == tar.TypeDir {
			rel, _ := cleanName(h.Name)
			sent[rel] = true
		}
	}
	for _, d := range ensureDirs {
		if !sent[d] {
			t.Errorf("PostgreSQL %d's base.tar lacks %s/ (pgark creates it)", major, d)
		}
	}
	if baseHdrs[len(baseHdrs)-1].Name != "global/pg_control" {
		t.Errorf("last member of base.tar is %q", baseHdrs[len(baseHdrs)-1].Name)
	}

	var failKey string
	open := func(ctx context.Context, ref catalog.ObjectRef) (io.ReadCloser, error) {
		f, err := os.Open(ref.Key)
		if err != nil {
			return nil, err
		}
		var r io.Reader = f
		if ref.Key == failKey {
			r = io.MultiReader(io.LimitReader(f, ref.Bytes-600), &errReader{errors.New("simulated crash")})
		}
		return &filePart{Reader: verifying(r, ref), f: f}, nil
	}
	var owner *Owner
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		owner = &Owner{UID: uid, GID: gid}
	}
	var logs logBuf
	restored := filepath.Join(dir, "restored")
	tsNew := filepath.Join(dir, "ts-restored")
	opts := ExtractOptions{PGDATA: restored, Owner: owner, Jobs: 2, Log: testLogger(&logs)}

	// 1. The original tablespace location is live: refused, nothing written.
	liveBefore := listTree(t, tsLive)
	err = Extract(ctx, m, open, opts)
	if err == nil || !strings.Contains(err.Error(), "live tablespace") {
		t.Fatalf("restore onto the live tablespace: err = %v", err)
	}
	if exists(restored) {
		t.Fatal("PGDATA created by a refused restore")
	}

	// 2. Interrupted at the very end of base.tar (pg_control written under its temporary
	// name): PostgreSQL refuses the directory.
	opts.TablespaceMap = map[uint32]string{oid: tsNew}
	failKey = baseArch.Parts[len(baseArch.Parts)-1].Key
	opts.Jobs = 1
	err = Extract(ctx, m, open, opts)
	if err == nil || !strings.Contains(err.Error(), "simulated crash") {
		t.Fatalf("interrupted restore: err = %v", err)
	}
	if exists(filepath.Join(restored, "global/pg_control")) || !exists(filepath.Join(restored, markerName)) {
		t.Fatal("interrupted restore: pg_control in place or no marker")
	}
	bad := testenv.StartPG(t, testenv.PGOptions{DataDir: restored, NoWait: true})
	if err := bad.WaitExit(t, time.Minute); err == nil {
		t.Fatal("PostgreSQL started on an interrupted restore")
	}
	if log := bad.Log(); !strings.Contains(log, "could not open file") || !strings.Contains(log, `global/pg_control": No such file`) {
		t.Fatalf("PostgreSQL did not refuse for the missing pg_control:\n%s", log)
	}
	failKey = ""
	opts.Jobs = 2
	if err := Extract(ctx, m, open, opts); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("restore over an unfinished one without Force: err = %v", err)
	}
	opts.Force = true
	if err := Extract(ctx, m, open, opts); err != nil {
		t.Fatalf("restore with Force: %v\n%s", err, logs.String())
	}
	if got := listTree(t, tsLive); strings.Join(got, "\n") != strings.Join(liveBefore, "\n") {
		t.Errorf("the live tablespace changed:\nbefore %v\nafter %v", liveBefore, got)
	}

	// 3. Recovery configuration, pg_verifybackup, start.
	manifest, err := os.ReadFile(filepath.Join(bb, "backup_manifest"))
	if err != nil {
		t.Fatal(err)
	}
	if err := recoveryconf.Write(restored, recoveryconf.Options{RestoreCommand: "cp " + arch + "/%f %p"}, manifest); err != nil {
		t.Fatal(err)
	}
	bin, err := testenv.PGBinDir(major)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(bin, "pg_verifybackup"), append(args, restored)...)
		cmd.Dir = dir
		testenv.RunAsPostgres(cmd)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := verify("-n", "--ignore=tablespace_map"); err != nil {
		t.Fatalf("pg_verifybackup: %v\n%s", err, out)
	}
	// The remapped tablespace_map is the one file that differs from the manifest.
	if out, err := verify("-n"); err == nil || !strings.Contains(out, "tablespace_map") || strings.Count(out, "error:") != 1 {
		t.Errorf("pg_verifybackup without --ignore: %v\n%s", err, out)
	} else {
		t.Logf("pg_verifybackup without --ignore=tablespace_map (expected): %s", strings.TrimSpace(out))
	}
	t.Logf("restore log:\n%s", logs.String())

	pg := testenv.StartPG(t, testenv.PGOptions{DataDir: restored})
	pg.WaitRecoveryDone(t, 3*time.Minute)
	for q, want := range map[string]string{
		"SELECT count(*) FROM in_ts":                                     "21000",
		"SELECT count(*) FROM in_ts WHERE t = 'after'":                   "1000",
		"SELECT count(*) FROM in_main":                                   "51000",
		"SELECT sum(i) FROM in_main":                                     "1300525500",
		fmt.Sprintf("SELECT pg_tablespace_location(%d)", oid):            tsNew,
		"SELECT current_setting('archive_mode')":                         "off",
		"SELECT count(*) FROM pg_stat_archiver WHERE archived_count > 0": "0",
	} {
		if got := pg.QueryRow(t, q); got != want {
			t.Errorf("%s = %q, want %q", q, got, want)
		}
	}
	if target, err := os.Readlink(filepath.Join(restored, "pg_tblspc", strconv.FormatUint(uint64(oid), 10))); err != nil || target != tsNew {
		t.Errorf("pg_tblspc link -> %q, %v", target, err)
	}
}
