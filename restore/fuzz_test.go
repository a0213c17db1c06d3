package restore

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/manifest"
)

// Fuzzers for what restore reads from a repository: the tar streams of a
// backup (through the whole extractor, into a scratch directory), one member
// header at a time (validate), and backup.json (catalog.Meta.Check, then
// the extractor's planning). The other parsers have theirs beside their
// tests: FuzzTarScan (tarstream), FuzzDemux (basebackup), FuzzManifest
// (manifest). Run one with
//
//	go test -run '^$' -fuzz '^FuzzExtract$' -fuzztime 3m ./restore/
//
// or all of them with `make fuzz`. Crashers are kept under testdata/fuzz.

// fuzzScratch is a directory for extraction fuzzing: on tmpfs when there is
// one (every restore fsyncs), else the test's temporary directory.
func fuzzScratch(t *testing.T) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "pgark-fuzz-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// fuzzOneTar joins members into one tar stream with its trailer.
func fuzzOneTar(t testing.TB, members ...tm) []byte {
	return buildTar(t, true, members...)
}

func FuzzExtract(f *testing.F) {
	var all []tm
	for _, p := range baseMembers() {
		all = append(all, p...)
	}
	f.Add(fuzzOneTar(f, all...))
	f.Add(fuzzOneTar(f, fileM("backup_label", "L"), dirM("global"), fileM("global/pg_control", "C")))
	for _, hostile := range [][]tm{
		{fileM("../x", "evil")},
		{fileM("/tmp/x", "evil")},
		{{name: "l", typ: tar.TypeSymlink, mode: 0o777, link: "/"}, fileM("l/x", "evil")},
		{{name: "h", typ: tar.TypeLink, mode: 0o600, link: "/etc/passwd"}},
		{{name: "c", typ: tar.TypeChar, mode: 0o600}},
		{{name: "p", typ: tar.TypeFifo, mode: 0o600}},
		{{name: "pg_tblspc/16385", typ: tar.TypeSymlink, mode: 0o777, link: "/"}, fileM("pg_tblspc/16385/x", "evil")},
		{{name: "big", typ: tar.TypeReg, mode: 0o600, body: "x", claim: 1 << 40}},
		{{name: "s", typ: tar.TypeReg, mode: 0o4755, body: "x"}},
	} {
		f.Add(fuzzOneTar(f, append([]tm{fileM("backup_label", "L"), dirM("global")}, hostile...)...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sandbox := fuzzScratch(t)
		pgdata := filepath.Join(sandbox, "pgdata")
		s := &partStore{}
		m := &catalog.Meta{Format: catalog.MetaFormat, ID: testID, PGMajor: 15, PGVersionNum: 150010}
		m.Archives = append(m.Archives, s.add(testID, "base.tar", b))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err := Extract(ctx, m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 1})

		// Whatever the input: nothing outside PGDATA, no links, devices or
		// FIFOs, no mode looser than PostgreSQL's.
		ents, rerr := os.ReadDir(sandbox)
		if rerr != nil || len(ents) != 1 || ents[0].Name() != "pgdata" {
			t.Fatalf("the sandbox holds %v (%v)", ents, rerr)
		}
		werr := filepath.WalkDir(pgdata, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			st, err := os.Lstat(p)
			if err != nil {
				return err
			}
			switch mode := st.Mode(); {
			case mode.IsDir():
				if mode.Perm()&^0o750 != 0 || mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
					t.Errorf("directory %s has mode %v", p, mode)
				}
			case mode.IsRegular():
				if mode.Perm()&^0o640 != 0 || mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
					t.Errorf("file %s has mode %v", p, mode)
				}
			default:
				t.Errorf("%s is a %v", p, mode.Type())
			}
			return nil
		})
		if werr != nil {
			t.Fatal(werr)
		}
		control := exists(filepath.Join(pgdata, controlFile))
		marker := exists(filepath.Join(pgdata, markerName))
		if err != nil {
			if control || !marker {
				t.Fatalf("failed restore (%v) left pg_control %v, marker %v", err, control, marker)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		if !control || marker || !exists(filepath.Join(pgdata, "backup_label")) {
			t.Fatalf("successful restore without pg_control (%v) or backup_label, or with the marker (%v)", control, marker)
		}
	})
}

func FuzzExtractValidate(f *testing.F) {
	f.Add("base/1/1259", byte(tar.TypeReg), int64(0o600), "", false)
	f.Add("global/", byte(tar.TypeDir), int64(0o750), "", false)
	f.Add("./", byte(tar.TypeDir), int64(0o700), "", false)
	f.Add("pg_tblspc/16385", byte(tar.TypeSymlink), int64(0o777), "/srv/ts", false)
	f.Add("pg_tblspc/16385/x", byte(tar.TypeReg), int64(0o600), "", false)
	f.Add("PG_15_202209061/1/2", byte(tar.TypeReg), int64(0o600), "", true)
	f.Add("PG_15_202209061/../../etc", byte(tar.TypeDir), int64(0o700), "", true)
	f.Add("a/../../b", byte(tar.TypeReg), int64(0o600), "", false)
	f.Add("/etc/passwd", byte(tar.TypeReg), int64(0o600), "", false)
	f.Add("l", byte(tar.TypeLink), int64(0o600), "/etc/passwd", false)
	f.Add("x", byte(tar.TypeReg), int64(0o104600), "", false)
	f.Fuzz(func(t *testing.T, name string, typ byte, mode int64, link string, spc bool) {
		const oid = 16385
		x := &extractor{byOID: map[uint32]*destDir{}}
		base := &destDir{dir: "/pgdata"}
		ts := &destDir{oid: oid, dir: "/ts", spcMajor: "PG_15_"}
		x.byOID[oid] = ts
		tg := base
		if spc {
			tg = ts
		}
		hdr := &tar.Header{Name: name, Typeflag: typ, Mode: mode, Linkname: link}
		rel, kind, err := x.validate(tg, hdr)
		if err != nil {
			return
		}
		if kind == kindSkip {
			if rel != "" || typ != tar.TypeDir {
				t.Fatalf("skipped %q (%q) of type %q", name, rel, typ)
			}
			return
		}
		// The path stays inside the target, whatever it is joined to.
		if rel == "" || !filepath.IsLocal(rel) || path.Clean(rel) != rel || strings.Contains("/"+rel+"/", "/../") {
			t.Fatalf("accepted %q as %q", name, rel)
		}
		if j := filepath.Join(tg.dir, rel); !strings.HasPrefix(j, tg.dir+"/") {
			t.Fatalf("%q joins to %s, outside %s", name, j, tg.dir)
		}
		if rel == markerName || rel == controlTmp {
			t.Fatalf("accepted the reserved name %q", rel)
		}
		perm := mode & 0o7777
		switch kind {
		case kindFile:
			if typ != tar.TypeReg || perm&^0o640 != 0 {
				t.Fatalf("file %q accepted with type %q mode %o", name, typ, mode)
			}
		case kindDir:
			if typ != tar.TypeDir || perm&^0o750 != 0 {
				t.Fatalf("directory %q accepted with type %q mode %o", name, typ, mode)
			}
		case kindSpcLink:
			if spc || typ != tar.TypeSymlink || rel != "pg_tblspc/16385" || !filepath.IsAbs(link) {
				t.Fatalf("tablespace link %q -> %q accepted (type %q)", name, link, typ)
			}
		default:
			t.Fatalf("kind %d", kind)
		}
		if spc {
			first, _, _ := strings.Cut(rel, "/")
			if !spcDirRe().MatchString(first) || !strings.HasPrefix(first, "PG_15_") {
				t.Fatalf("tablespace member %q outside PG_15_*", name)
			}
		}
	})
}

// fuzzMetaStore serves one backup.json.
func fuzzMeta(t testing.TB) []byte {
	t.Helper()
	s := &partStore{}
	m := testBackup(t, s, baseMembers(), map[uint32][][]tm{16385: {{dirM("PG_15_202209061")}}}, map[uint32]string{16385: "/srv/ts"})
	m.StartLSN, m.EndLSN, m.StartTimeline, m.EndTimeline, m.WalSegmentBytes = "0/2000028", "0/2000138", 1, 1, 16<<20
	m.StopTime = time.Date(2026, 11, 24, 21, 57, 0, 0, time.UTC)
	m.Manifest = catalog.ObjectRef{Key: catalog.ManifestKey(testID), Bytes: 100, SHA256: strings.Repeat("0", 64)}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzMeta(f *testing.F) {
	good := fuzzMeta(f)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(bytes.Replace(good, []byte(`"format":1`), []byte(`"format":"1"`), 1))
	f.Add(bytes.Replace(good, []byte(`"/base.tar.000.pgark"`), []byte(`/../../pgark.json"`), 1))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"format":1,"id":"20261124T215700Z","start_lsn":"0/1","end_lsn":"0/1","start_timeline":1,"end_timeline":1,"wal_segment_size":16777216,"archives":[{"name":"base.tar"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m catalog.Meta
		if err := json.Unmarshal(b, &m); err != nil {
			return
		}
		if err := m.Check(testID); err != nil {
			return
		}
		// What check accepts is what restore may rely on.
		if m.ID != testID || !catalog.ValidID(m.ID) {
			t.Fatalf("accepted id %q", m.ID)
		}
		if m.Start() > m.End() || m.EndTimeline < m.StartTimeline {
			t.Fatalf("accepted start %s (timeline %d) after end %s (timeline %d)", m.StartLSN, m.StartTimeline, m.EndLSN, m.EndTimeline)
		}
		if m.Manifest.Key != catalog.ManifestKey(m.ID) || m.Manifest.Bytes < 0 || m.Manifest.Bytes > manifest.MaxBytes {
			t.Fatalf("accepted manifest %+v", m.Manifest)
		}
		for _, a := range m.Archives {
			for i, p := range a.Parts {
				if p.Key != catalog.PartKey(m.ID, a.Name, i) {
					t.Fatalf("part %d of %s has key %q", i, a.Name, p.Key)
				}
				if _, err := hex.DecodeString(p.SHA256); err != nil || len(p.SHA256) != 2*sha256.Size || p.Bytes < 0 {
					t.Fatalf("accepted part %+v", p)
				}
			}
		}
		// Round trip.
		out, err := json.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		var m2 catalog.Meta
		if err := json.Unmarshal(out, &m2); err != nil {
			t.Fatal(err)
		}
		if err := m2.Check(testID); err != nil {
			t.Fatalf("written back, the metadata is refused: %v", err)
		}
		if out2, _ := json.Marshal(&m2); !bytes.Equal(out, out2) {
			t.Fatalf("round trip:\n%s\n%s", out, out2)
		}
		// The restore planner takes it, or refuses it with an error.
		_, _ = newExtractor(&m, func(context.Context, catalog.ObjectRef) (io.ReadCloser, error) { return nil, os.ErrNotExist }, ExtractOptions{PGDATA: "/nonexistent/pgdata"})
	})
}
