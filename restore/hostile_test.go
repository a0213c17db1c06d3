package restore

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/tarstream"
	"github.com/pgark/pgark/tarstream/tarstreamtest"
)

// hostileTar writes headers as given (PAX and GNU forms included): what
// buildTar cannot express.
func hostileTar(t *testing.T, hdrs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(bytes.Repeat([]byte("e"), int(h.Size))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// paxHeader is a raw PAX extended header ('x') with one record, for the
// next member.
func paxHeader(t *testing.T, key, value string) []byte {
	t.Helper()
	body := " " + key + "=" + value + "\n"
	n := len(body) + 1
	for len(fmt.Sprint(n))+len(body) != n {
		n = len(fmt.Sprint(n)) + len(body)
	}
	rec := fmt.Sprint(n) + body
	b := tarstreamtest.Header("PaxHeaders/x", 'x', []byte(fmt.Sprintf("%011o\x00", len(rec))))
	b = append(b, rec...)
	return append(b, make([]byte, -len(rec)&(tarstream.BlockSize-1))...)
}

// TestExtractHostileHeaders covers the header forms that carry a name or a
// size outside the classic fields (PAX records, GNU long names, base-256
// sizes) and checks that every refusal is a *RefusedError (exit 3 in the
// CLI), with nothing written outside PGDATA.
func TestExtractHostileHeaders(t *testing.T) {
	long := strings.Repeat("l", 150)
	reg := func(name string, f tar.Format) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o600, Size: 4, Format: f}
	}
	cases := []struct {
		name string
		tar  func(t *testing.T, sandbox string) []byte
		want string
	}{
		{"PAX path with ..", func(t *testing.T, _ string) []byte {
			return hostileTar(t, reg("../../"+long, tar.FormatPAX))
		}, ".. component"},
		{"GNU long name with ..", func(t *testing.T, _ string) []byte {
			return hostileTar(t, reg("../../"+long, tar.FormatGNU))
		}, ".. component"},
		{"PAX absolute path", func(t *testing.T, sb string) []byte {
			return hostileTar(t, reg(sb+"/"+long, tar.FormatPAX))
		}, "absolute path"},
		{"PAX path record overriding a benign name", func(t *testing.T, sb string) []byte {
			// archive/tar's writer never writes this: a PAX header whose path
			// record replaces the next member's benign name.
			return append(paxHeader(t, "path", "../escape"), hostileTar(t, reg("benign", tar.FormatUSTAR))...)
		}, ".. component"},
		{"GNU long symlink target", func(t *testing.T, sb string) []byte {
			return hostileTar(t, &tar.Header{Name: "l", Linkname: sb + "/" + long, Typeflag: tar.TypeSymlink, Mode: 0o777, Format: tar.FormatGNU})
		}, "symlink"},
		{"directory named ..", func(t *testing.T, _ string) []byte {
			return hostileTar(t, &tar.Header{Name: "../", Typeflag: tar.TypeDir, Mode: 0o700})
		}, ".. component"},
		{"file then a directory through it", func(t *testing.T, _ string) []byte {
			return hostileTar(t, reg("f", tar.FormatUSTAR), &tar.Header{Name: "f/d/", Typeflag: tar.TypeDir, Mode: 0o700})
		}, "not a directory"},
		{"garbage instead of a header", func(t *testing.T, _ string) []byte {
			return bytes.Repeat([]byte("garbage!"), 128)
		}, "tar header"},
		{"data after the end-of-archive marker", func(t *testing.T, _ string) []byte {
			return append(hostileTar(t, reg("x", tar.FormatUSTAR)), bytes.Repeat([]byte("z"), 512)...)
		}, "after the end-of-archive marker"},
		{"base-256 size of 8 EiB", func(t *testing.T, _ string) []byte {
			b := hostileTar(t, reg("huge", tar.FormatGNU))
			field := b[124:136]
			copy(field, []byte{0x80, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) // 2^63-1
			tarstreamtest.FixChecksum(b[:512])
			return b
		}, "claims"},
		{"sparse file", func(t *testing.T, _ string) []byte {
			return append(paxHeader(t, "GNU.sparse.major", "1"), hostileTar(t, reg("sparse", tar.FormatUSTAR))...)
		}, "sparse"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sandbox := t.TempDir()
			pgdata := filepath.Join(sandbox, "pgdata")
			s := &partStore{}
			var body []byte
			body = append(body, buildTar(t, false, fileM("backup_label", "L"), dirM("global"))...)
			body = append(body, tc.tar(t, sandbox)...)
			m := &catalog.Meta{Format: catalog.MetaFormat, ID: testID, PGMajor: 15, PGVersionNum: 150010}
			m.Archives = append(m.Archives, s.add(testID, "base.tar", body))
			err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: pgdata, Jobs: 1})
			var re *RefusedError
			if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v (%T), want a refusal about %q", err, err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("multi-line error: %q", err)
			}
			t.Logf("refused: %v", err)
			for _, p := range listTree(t, sandbox) {
				if p != "pgdata" && !strings.HasPrefix(p, "pgdata/") {
					t.Errorf("written outside PGDATA: %s", p)
				}
			}
			if exists(filepath.Join(pgdata, controlFile)) {
				t.Error("pg_control in place after a refusal")
			}
		})
	}
}

// TestExtractRefusalsAreRefusedErrors: the refusals of the older table tests
// are *RefusedError too (the CLI maps them to exit 3), and an I/O failure of a
// part is not (it stays a storage error).
func TestExtractRefusalsAreRefusedErrors(t *testing.T) {
	for _, members := range [][]tm{
		{fileM("../x", "evil")},
		{{name: "hl", typ: tar.TypeLink, mode: 0o600, link: "/etc/passwd"}},
		{{name: "null", typ: tar.TypeChar, mode: 0o600}},
		{{name: "big", typ: tar.TypeReg, mode: 0o600, body: "0123456789", claim: 1 << 30}},
		{fileM("PG_VERSION", "twice")},
	} {
		parts := baseMembers()
		parts[1] = append(parts[1], members...)
		s := &partStore{}
		m := testBackup(t, s, parts, nil, nil)
		err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: filepath.Join(t.TempDir(), "d"), Jobs: 2})
		if !errors.As(err, new(*RefusedError)) {
			t.Errorf("%q: err = %v, not a *RefusedError", members[0].name, err)
		}
	}
	s := &partStore{fail: func(ref catalog.ObjectRef) (int, error) { return 100, io.ErrUnexpectedEOF }}
	m := testBackup(t, s, baseMembers(), nil, nil)
	err := Extract(context.Background(), m, s.open, ExtractOptions{PGDATA: filepath.Join(t.TempDir(), "d"), Jobs: 1})
	if err == nil || errors.As(err, new(*RefusedError)) {
		t.Errorf("a failing part: err = %v, want an error that is not a refusal", err)
	}
}

// memStore serves objects from a map (Get, Stat, List).
type memStore struct {
	storage.Store
	objs map[string][]byte
}

func (m *memStore) Get(_ context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	b, ok := m.objs[key]
	if !ok {
		return nil, storage.ObjectInfo{}, storage.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(b)), storage.ObjectInfo{Key: key, Size: int64(len(b))}, nil
}

func (m *memStore) ReadSmall(_ context.Context, key string, limit int64) ([]byte, string, error) {
	b, ok := m.objs[key]
	if !ok {
		return nil, "", storage.ErrNotFound
	}
	if int64(len(b)) > limit {
		return nil, "", fmt.Errorf("%s: %w", key, storage.ErrTooLarge)
	}
	return b, "v1", nil
}

func (m *memStore) String() string { return "memory" }

func TestReadMetaDamaged(t *testing.T) {
	good := fuzzMeta(t)
	if _, err := catalog.ReadMeta(context.Background(), &memStore{objs: map[string][]byte{catalog.MetaKey(testID): good}}, testID); err != nil {
		t.Fatalf("good metadata: %v", err)
	}
	for name, raw := range map[string][]byte{
		"truncated":        good[:len(good)-10],
		"empty":            nil,
		"wrongly typed":    bytes.Replace(good, []byte(`"end_timeline":1`), []byte(`"end_timeline":"1"`), 1),
		"negative uint":    bytes.Replace(good, []byte(`"end_timeline":1`), []byte(`"end_timeline":-1`), 1),
		"null":             []byte("null"),
		"oversized":        append(good, bytes.Repeat([]byte(" "), 2<<20)...),
		"other id":         bytes.Replace(good, []byte(`"id":"`+testID+`"`), []byte(`"id":"20261124T215701Z"`), 1),
		"escaping key":     bytes.Replace(good, []byte(`/base.tar.000.pgark"`), []byte(`/../../pgark.json"`), 1),
		"bad sha256":       bytes.Replace(good, []byte(`"sha256":"`), []byte(`"sha256":"zz`), 1),
		"end before start": bytes.Replace(good, []byte(`"end_lsn":"0/2000138"`), []byte(`"end_lsn":"0/1"`), 1),
		"huge manifest":    bytes.Replace(good, []byte(`"bytes":100,`), []byte(`"bytes":1099511627776,`), 1),
		"no manifest":      bytes.Replace(good, []byte(`"key":"backups/`+testID+`/backup_manifest.pgark"`), []byte(`"key":""`), 1),
	} {
		if bytes.Equal(raw, good) {
			t.Fatalf("%s: the case changes nothing", name)
		}
		_, err := catalog.ReadMeta(context.Background(), &memStore{objs: map[string][]byte{catalog.MetaKey(testID): raw}}, testID)
		if !errors.Is(err, repo.ErrDamaged) || !strings.Contains(err.Error(), catalog.MetaName) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: err = %v, want one line naming %s that wraps repo.ErrDamaged", name, err, catalog.MetaName)
		}
	}
}
