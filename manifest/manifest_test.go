package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pgark/pgark/tarstream"
	"github.com/pgark/pgark/tarstream/tarstreamtest"
)

type manifestTestFile struct {
	path    string // written as Encoded-Path when it is not valid for Path (here: starts with "\xff")
	size    int64
	alg     string
	sum     string
	encoded bool
}

// manifestBuild writes a manifest the way PostgreSQL's backup_manifest.c does.
func manifestBuild(version int, sysid uint64, files []manifestTestFile, ranges string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "{ \"PostgreSQL-Backup-Manifest-Version\": %d,\n", version)
	if version >= 2 {
		fmt.Fprintf(&b, "\"System-Identifier\": %d,\n", sysid)
	}
	b.WriteString("\"Files\": [")
	for i, f := range files {
		if i > 0 {
			b.WriteString(",")
		}
		if f.encoded {
			fmt.Fprintf(&b, "\n{ \"Encoded-Path\": \"%s\", ", hex.EncodeToString([]byte(f.path)))
		} else {
			fmt.Fprintf(&b, "\n{ \"Path\": %q, ", f.path)
		}
		fmt.Fprintf(&b, "\"Size\": %d, \"Last-Modified\": \"2025-05-01 10:00:00 GMT\"", f.size)
		if f.alg != "" {
			fmt.Fprintf(&b, ", \"Checksum-Algorithm\": \"%s\", \"Checksum\": \"%s\"", f.alg, f.sum)
		}
		b.WriteString(" }")
	}
	b.WriteString(" ],\n")
	b.WriteString("\"WAL-Ranges\": [\n" + ranges + "\n],\n")
	sum := sha256.Sum256(b.Bytes())
	fmt.Fprintf(&b, "\"Manifest-Checksum\": \"%x\"}\n", sum)
	return b.Bytes()
}

const manifestTestRange = `{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000138" }`

func manifestSample() []manifestTestFile {
	return []manifestTestFile{
		{path: "backup_label", size: 3, alg: "CRC32C", sum: tarstreamtest.CRC32C([]byte("abc"))},
		{path: "base/1/1259", size: 5, alg: "CRC32C", sum: tarstreamtest.CRC32C([]byte("hello"))},
		{path: "weird\xffname", size: 0, alg: "CRC32C", sum: tarstreamtest.CRC32C(nil), encoded: true},
		{path: "pg_tblspc/16384/PG_15_1/5/16385", size: 2, alg: "CRC32C", sum: tarstreamtest.CRC32C([]byte("ts"))},
	}
}

func TestManifestParse(t *testing.T) {
	for _, v := range []int{1, 2} {
		b := manifestBuild(v, 7301234567890123456, manifestSample(), manifestTestRange+",\n"+`{ "Timeline": 2, "Start-LSN": "0/3000000", "End-LSN": "1/10" }`)
		m, err := Parse(b)
		if err != nil {
			t.Fatalf("v%d: %v\n%s", v, err, b)
		}
		if m.Version != v || len(m.Files) != 4 || len(m.WALRanges) != 2 {
			t.Fatalf("v%d: %+v", v, m)
		}
		if v == 2 && m.SystemID != 7301234567890123456 {
			t.Fatalf("system identifier %d", m.SystemID)
		}
		f, ok := m.File("weird\xffname")
		if !ok || f.Size != 0 || f.ChecksumAlgorithm != "CRC32C" {
			t.Fatalf("encoded path: %+v %v", f, ok)
		}
		if r := m.WALRanges[1]; r.Timeline != 2 || r.Start != 0x3000000 || r.End != 1<<32|0x10 {
			t.Fatalf("range %+v", r)
		}
		if err := VerifyChecksum(b); err != nil {
			t.Fatal(err)
		}
	}
}

func TestManifestParseErrors(t *testing.T) {
	good := manifestBuild(1, 0, manifestSample(), manifestTestRange)
	flip := bytes.Clone(good)
	flip[bytes.Index(flip, []byte("base/1"))] = 'c'
	noNL := good[:len(good)-1]
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"content changed", flip, "manifest checksum mismatch"},
		{"no final newline", noNL, "newline-terminated"},
		{"one line", []byte("{}\n"), "at least 2 lines"},
		{"empty", nil, "newline-terminated"},
		{"version 3", manifestBuild(3, 0, nil, manifestTestRange), "unsupported manifest version"},
		{"v2 without sysid", bytes.Replace(manifestBuild(1, 0, nil, manifestTestRange), []byte("Version\": 1"), []byte("Version\": 2"), 1), "checksum mismatch"},
		{"bad checksum length", manifestBuild(1, 0, []manifestTestFile{{path: "a", size: 1, alg: "CRC32C", sum: "abc"}}, manifestTestRange), "bad CRC32C checksum"},
		{"unknown algorithm", manifestBuild(1, 0, []manifestTestFile{{path: "a", size: 1, alg: "MD5", sum: "abc"}}, manifestTestRange), "unknown checksum algorithm"},
		{"duplicate", manifestBuild(1, 0, []manifestTestFile{{path: "a", size: 1}, {path: "a", size: 1}}, manifestTestRange), "listed twice"},
		{"no ranges", manifestBuild(1, 0, nil, ""), "no WAL ranges"},
		{"bad range", manifestBuild(1, 0, nil, `{ "Timeline": 1, "Start-LSN": "0/3", "End-LSN": "0/2" }`), "invalid"},
		{"bad lsn", manifestBuild(1, 0, nil, `{ "Timeline": 1, "Start-LSN": "zz", "End-LSN": "0/2" }`), "not an LSN"},
		{"bad json", manifestBuild(1, 0, nil, `{ "Timeline": 1,, }`), "backup_manifest"},
	} {
		_, err := Parse(c.b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

func TestManifestCheck(t *testing.T) {
	m, err := Parse(manifestBuild(1, 0, manifestSample(), manifestTestRange))
	if err != nil {
		t.Fatal(err)
	}
	files, _ := NewFiles("CRC32C")
	add := func(archive string, mem tarstream.Member) {
		t.Helper()
		if err := files.Add(archive, mem); err != nil {
			t.Fatal(err)
		}
	}
	reg := func(name string, data string) tarstream.Member {
		return tarstream.Member{Name: name, Typeflag: '0', Size: int64(len(data)), Checksum: tarstreamtest.CRC32C([]byte(data))}
	}
	add("base.tar", reg("backup_label", "abc"))
	add("base.tar", tarstream.Member{Name: "base/", Typeflag: '5'})
	add("base.tar", reg("base/1/1259", "hello"))
	add("base.tar", reg("weird\xffname", ""))
	add("base.tar", tarstream.Member{Name: "pg_tblspc/", Typeflag: '5'})
	add("16384.tar", tarstream.Member{Name: "PG_15_1/", Typeflag: '5'})
	add("16384.tar", reg("PG_15_1/5/16385", "ts"))
	if mm := m.Check(files); len(mm) != 0 {
		t.Fatalf("mismatches on a good backup: %v", mm)
	}

	bad, _ := NewFiles("CRC32C")
	files = bad
	add("base.tar", reg("backup_label", "abd"))                             // checksum
	add("base.tar", reg("base/1/1259", "hello!"))                           // size
	add("base.tar", reg("base/1/extra", "x"))                               // extra
	add("base.tar", tarstream.Member{Name: "weird\xffname", Typeflag: '5'}) // type
	add("base.tar", reg("base/1/extra", "x"))                               // duplicate
	add("base.tar", tarstream.Member{Name: "pg_tblspc/16384", Typeflag: '2', Linkname: "/ts"})
	add("base.tar", tarstream.Member{Name: "fifo", Typeflag: '6'})
	// pg_tblspc/16384/PG_15_1/5/16385 missing
	got := map[MismatchKind][]string{}
	for _, x := range m.Check(files) {
		got[x.Kind] = append(got[x.Kind], x.Path)
		if x.String() == "" {
			t.Fatal("empty mismatch text")
		}
	}
	want := map[MismatchKind][]string{
		MismatchChecksum:  {"backup_label"},
		MismatchSize:      {"base/1/1259"},
		MismatchExtra:     {"base/1/extra"},
		MismatchDuplicate: {"base/1/extra"},
		MismatchType:      {"fifo", "weird\xffname"},
		MismatchMissing:   {"pg_tblspc/16384/PG_15_1/5/16385"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("mismatches\n got %v\nwant %v", got, want)
	}

	other, _ := NewFiles("SHA256")
	files = other
	add("base.tar", tarstream.Member{Name: "backup_label", Typeflag: '0', Size: 3, Checksum: strings.Repeat("0", 64)})
	for _, x := range m.Check(files) {
		if x.Path == "backup_label" && x.Kind != MismatchAlgorithm {
			t.Fatalf("algorithm mismatch reported as %v", x)
		}
	}
	if _, err := BackupPath("x.tar", "a"); err == nil {
		t.Fatal("bad archive name accepted")
	}
	if _, err := BackupPath("0123.tar", "a"); err == nil {
		t.Fatal("non-canonical OID accepted")
	}
}

func FuzzManifest(f *testing.F) {
	f.Add(manifestBuild(1, 0, manifestSample(), manifestTestRange))
	f.Add(manifestBuild(2, 42, manifestSample(), manifestTestRange))
	f.Add(manifestBuild(2, 42, nil, ""))
	f.Add([]byte("{}\n\"Manifest-Checksum\": \"00\"}\n"))
	f.Add([]byte("\n\n"))
	f.Add([]byte("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [{\"Path\": \"../x\", \"Size\": 1}],\n\"WAL-Ranges\": [{\"Timeline\": 1, \"Start-LSN\": \"0/1\", \"End-LSN\": \"0/2\"}],\n\"Manifest-Checksum\": \"0000000000000000000000000000000000000000000000000000000000000000\"}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if m != nil {
				t.Fatal("a manifest and an error")
			}
			return
		}
		if VerifyChecksum(b) != nil {
			t.Fatal("parsed a manifest whose checksum does not verify")
		}
		if m.Version != 1 && m.Version != 2 || len(m.WALRanges) == 0 {
			t.Fatalf("accepted version %d with %d WAL ranges", m.Version, len(m.WALRanges))
		}
		// Every accepted path stays inside the data directory.
		for _, mf := range m.Files {
			if !filepath.IsLocal(mf.Path) || path.Clean(mf.Path) != mf.Path || mf.Size < 0 {
				t.Fatalf("accepted file %q (size %d)", mf.Path, mf.Size)
			}
			if got, ok := m.File(mf.Path); !ok || got != mf {
				t.Fatalf("File(%q) = %+v, %v", mf.Path, got, ok)
			}
		}
		for _, r := range m.WALRanges {
			if r.Timeline == 0 || r.End < r.Start {
				t.Fatalf("accepted WAL range %+v", r)
			}
		}
		// Round trip: the same manifest written the way PostgreSQL writes it.
		var files []manifestTestFile
		for _, mf := range m.Files {
			files = append(files, manifestTestFile{path: mf.Path, size: mf.Size, alg: mf.ChecksumAlgorithm, sum: mf.Checksum, encoded: true})
		}
		var ranges []string
		for _, r := range m.WALRanges {
			ranges = append(ranges, fmt.Sprintf(`{ "Timeline": %d, "Start-LSN": "%s", "End-LSN": "%s" }`, r.Timeline, r.Start, r.End))
		}
		m2, err := Parse(manifestBuild(m.Version, m.SystemID, files, strings.Join(ranges, ",\n")))
		if err != nil {
			t.Fatalf("the manifest written back does not parse: %v", err)
		}
		noTimes := func(fs []File) []File {
			out := make([]File, len(fs))
			for i, f := range fs {
				f.LastModified = ""
				out[i] = f
			}
			return out
		}
		if m2.Version != m.Version || m2.SystemID != m.SystemID || !reflect.DeepEqual(noTimes(m2.Files), noTimes(m.Files)) || !reflect.DeepEqual(m2.WALRanges, m.WALRanges) {
			t.Fatalf("round trip: %+v, want %+v", m2, m)
		}
		files2, _ := NewFiles("CRC32C")
		for _, mf := range m.Files {
			_ = files2.Add("base.tar", tarstream.Member{Name: mf.Path, Typeflag: '0', Size: mf.Size, Checksum: mf.Checksum})
		}
		for _, x := range m.Check(files2) {
			if x.Kind != MismatchAlgorithm && x.Kind != MismatchDuplicate {
				t.Fatalf("self-check mismatch %v", x)
			}
		}
	})
}
