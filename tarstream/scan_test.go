package tarstream_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/pgark/pgark/tarstream"
	"github.com/pgark/pgark/tarstream/tarstreamtest"
)

// sampleTar is an archive exercising every header form the scanner must read.
func sampleTar(t testing.TB) []byte {
	long := strings.Repeat("d", 60) + "/" + strings.Repeat("e", 60) + "/file" // > 100 bytes, fits ustar prefix
	veryLong := strings.Repeat("x", 180) + "/" + strings.Repeat("y", 120)     // needs PAX or GNU long name
	return tarstreamtest.Build(t, []tarstreamtest.Entry{
		{Hdr: tar.Header{Name: "backup_label", Mode: 0o600, Typeflag: tar.TypeReg}, Data: []byte("START WAL LOCATION: 0/2000028\n")},
		{Hdr: tar.Header{Name: "base/", Mode: 0o700, Typeflag: tar.TypeDir}},
		{Hdr: tar.Header{Name: "base/empty", Mode: 0o600, Typeflag: tar.TypeReg}},
		{Hdr: tar.Header{Name: "base/511", Mode: 0o600, Typeflag: tar.TypeReg}, Data: tarstreamtest.Data(511, 1)},
		{Hdr: tar.Header{Name: "base/512", Mode: 0o600, Typeflag: tar.TypeReg}, Data: tarstreamtest.Data(512, 2)},
		{Hdr: tar.Header{Name: "base/513", Mode: 0o600, Typeflag: tar.TypeReg}, Data: tarstreamtest.Data(513, 3)},
		{Hdr: tar.Header{Name: "base/big", Mode: 0o640, Typeflag: tar.TypeReg}, Data: tarstreamtest.Data(100000, 4)},
		{Hdr: tar.Header{Name: long, Mode: 0o600, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}, Data: []byte("prefix")},
		{Hdr: tar.Header{Name: veryLong, Mode: 0o600, Typeflag: tar.TypeReg, Format: tar.FormatGNU}, Data: []byte("gnu long name")},
		{Hdr: tar.Header{Name: veryLong + "2", Mode: 0o600, Typeflag: tar.TypeReg, Format: tar.FormatPAX}, Data: []byte("pax path")},
		{Hdr: tar.Header{Name: "pg_tblspc/16384", Linkname: "/srv/ts1", Typeflag: tar.TypeSymlink, Mode: 0o777}},
		{Hdr: tar.Header{Name: "lnk-gnu", Linkname: "/" + veryLong, Typeflag: tar.TypeSymlink, Mode: 0o777, Format: tar.FormatGNU}},
		{Hdr: tar.Header{Name: "lnk-pax", Linkname: "/" + veryLong, Typeflag: tar.TypeSymlink, Mode: 0o777, Format: tar.FormatPAX}},
		{Hdr: tar.Header{Name: "hard", Linkname: "base/512", Typeflag: tar.TypeLink, Mode: 0o600}},
		{Hdr: tar.Header{Name: "global-pax", Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "hello"}}},
		{Hdr: tar.Header{Name: "global/pg_control", Mode: 0o600, Typeflag: tar.TypeReg}, Data: tarstreamtest.Data(8192, 5)},
	})
}

// refMembers lists the members of an archive as archive/tar reads them.
type refMember struct {
	Name, Linkname string
	Typeflag       byte
	Mode, Size     int64
	SHA256, CRC32C string
}

func refMembers(t testing.TB, b []byte) []refMember {
	t.Helper()
	out, err := refMembersErr(b)
	if err != nil {
		t.Fatalf("archive/tar: %v", err)
	}
	return out
}

// refMembersErr is refMembers that returns archive/tar's error.
func refMembersErr(b []byte) ([]refMember, error) {
	tr := tar.NewReader(bytes.NewReader(b))
	var out []refMember
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return out, err
		}
		m := refMember{Name: h.Name, Linkname: h.Linkname, Typeflag: h.Typeflag, Mode: h.Mode, Size: h.Size}
		if h.Typeflag == tar.TypeReg {
			s := sha256.Sum256(data)
			m.SHA256 = hex.EncodeToString(s[:])
			m.CRC32C = tarstreamtest.CRC32C(data)
		}
		out = append(out, m)
	}
}

func TestTarScanMatchesArchiveTar(t *testing.T) {
	b := sampleTar(t)
	ref := refMembers(t, b)
	for _, alg := range []string{"CRC32C", "SHA256", ""} {
		for _, n := range []int{1, 7, 511, 512, 513, 4096, len(b)} {
			got, s, err := tarstreamtest.Scan(t, b, alg, n)
			if err != nil {
				t.Fatalf("alg %q chunk %d: %v", alg, n, err)
			}
			if len(got) != len(ref) {
				t.Fatalf("alg %q chunk %d: %d members, archive/tar sees %d", alg, n, len(got), len(ref))
			}
			var prevEnd int64
			for i, m := range got {
				r := ref[i]
				if m.Name != r.Name || m.Linkname != r.Linkname || m.Typeflag != r.Typeflag || m.Mode != r.Mode || m.Size != r.Size {
					t.Fatalf("member %d: scanner %+v, archive/tar %+v", i, m, r)
				}
				want := map[string]string{"CRC32C": r.CRC32C, "SHA256": r.SHA256}[alg]
				if m.Checksum != want {
					t.Fatalf("member %q alg %q: checksum %q, want %q", m.Name, alg, m.Checksum, want)
				}
				if m.Offset != prevEnd || m.DataStart <= m.Offset || m.DataEnd < m.DataStart || m.DataEnd%512 != 0 {
					t.Fatalf("member %q: offsets %d %d %d after %d", m.Name, m.Offset, m.DataStart, m.DataEnd, prevEnd)
				}
				prevEnd = m.DataEnd
			}
			if s.EndOffset() != prevEnd || s.Boundary() != prevEnd || s.Offset() != int64(len(b)) || !s.Ended() {
				t.Fatalf("end %d boundary %d offset %d (len %d, last member end %d)", s.EndOffset(), s.Boundary(), s.Offset(), len(b), prevEnd)
			}
		}
	}
}

func TestTarScanCRC32CByteOrder(t *testing.T) {
	// CRC-32C("123456789") = 0xE3069283; PostgreSQL prints the uint32's bytes as
	// they lie in memory (little-endian).
	h := tarstream.NewChecksumHash("CRC32C")
	h.Write([]byte("123456789"))
	if got := hex.EncodeToString(h.Sum(nil)); got != "839206e3" {
		t.Fatalf("CRC32C = %s", got)
	}
}

func TestTarScanBase256Size(t *testing.T) {
	// PostgreSQL writes sizes >= 8 GiB in GNU base-256. A small size in that
	// form, with its data, parses like archive/tar reads it.
	var b []byte
	b = append(b, tarstreamtest.Header("base/1/16384", '0', tarstreamtest.Base256(1000))...)
	b = append(b, tarstreamtest.Data(1000, 9)...)
	b = append(b, make([]byte, 24)...)
	b = append(b, make([]byte, 1024)...)
	ref := refMembers(t, b)
	got, _, err := tarstreamtest.Scan(t, b, "SHA256", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Size != 1000 || got[0].Checksum != ref[0].SHA256 || got[0].DataEnd != 1536 {
		t.Fatalf("got %+v, ref %+v", got, ref)
	}

}

func TestTarScanErrors(t *testing.T) {
	good := sampleTar(t)
	badSum := bytes.Clone(good)
	badSum[10] ^= 1
	nonZeroAfterEnd := append(bytes.Clone(good), 0, 0, 1)
	zeroThenData := append(make([]byte, 512), tarstreamtest.Header("x", '0', []byte("00000000000\x00"))...)
	hugeExt := tarstreamtest.Header("././@LongLink", 'L', []byte("77777777777\x00"))
	negative := tarstreamtest.Header("neg", '0', []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	sparse := tarstreamtest.Header("sparse", 'S', []byte("00000000000\x00"))
	extThenEnd := append(tarstreamtest.Header("././@LongLink", 'L', []byte("00000000005\x00")), []byte("hello")...)
	extThenEnd = append(extThenEnd, make([]byte, 507+1024)...)
	badPAX := append(tarstreamtest.Header("pax", 'x', []byte("00000000004\x00")), []byte("3 a\n")...)
	badPAX = append(badPAX, make([]byte, 508)...)

	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"checksum", badSum, "bad header checksum"},
		{"after end", nonZeroAfterEnd, "after the end-of-archive marker"},
		{"zero then data", zeroThenData, "zero block followed by a non-zero block"},
		{"huge extended header", hugeExt, "extended header"},
		{"negative size", negative, "negative size"},
		{"sparse", sparse, "sparse"},
		{"extended header then end", extThenEnd, "after an extended header"},
		{"bad pax", badPAX, "bad PAX header"},
		{"truncated member", good[:1500], "truncated"},
		{"no trailer", good[:len(good)-1024], "without the end-of-archive marker"},
		{"one zero block", good[:len(good)-512], "inside the end-of-archive marker"},
		{"half header", good[:100], "truncated inside a member header"},
	} {
		for _, n := range []int{1, 512, len(c.b)} {
			_, _, err := tarstreamtest.Scan(t, c.b, "CRC32C", n)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s (chunk %d): error %v, want %q", c.name, n, err, c.want)
			}
		}
	}
}

func TestTarScanCallbackError(t *testing.T) {
	b := sampleTar(t)
	boom := errors.New("boom")
	s, _ := tarstream.NewScanner("", func(m tarstream.Member) error {
		if m.Name == "base/512" {
			return boom
		}
		return nil
	})
	if _, err := s.Write(b); !errors.Is(err, boom) {
		t.Fatalf("Write = %v", err)
	}
	if _, err := s.Write(b); !errors.Is(err, boom) {
		t.Fatalf("second Write = %v", err)
	}
}

func TestTarSplit(t *testing.T) {
	b := sampleTar(t)
	for _, limit := range []int64{1, 512, 1024, 1600, 4096, 20000, 100000, 200000, 1 << 30} {
		for _, n := range []int{1, 100, 512, 32768, len(b)} {
			parts, infos, members, err := tarstreamtest.Split(t, b, limit, n)
			if err != nil {
				t.Fatalf("limit %d chunk %d: %v", limit, n, err)
			}
			tarstreamtest.CheckParts(t, b, limit, parts, infos, members)
			if limit == 1<<30 && len(parts) != 1 {
				t.Fatalf("%d parts with a huge limit", len(parts))
			}
			if limit == 1 && len(parts) != len(members) {
				t.Fatalf("limit 1: %d parts for %d members", len(parts), len(members))
			}
		}
	}
}

func TestTarSplitEmptyArchive(t *testing.T) {
	b := make([]byte, 1024)
	parts, infos, members, err := tarstreamtest.Split(t, b, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 1 || len(members) != 0 || !infos[0].Last || infos[0].Members != 0 || len(parts[0]) != 1024 {
		t.Fatalf("parts %d infos %+v", len(parts), infos)
	}
	if _, _, _, err := tarstreamtest.Split(t, sampleTar(t)[:3000], 1000, 512); err == nil {
		t.Fatal("truncated stream accepted")
	}
}

// FuzzTarScan feeds arbitrary bytes to the scanner and the splitter. The seeds
// are kept small (one header form each). Run it with a short minimization
// budget, e.g.
//
//	go test ./tarstream/ -run XXX -fuzz FuzzTarScan -fuzzminimizetime 2s
//
// (every execution scans and splits its input in several ways and compares
// with archive/tar, so minimizing a kilobyte-sized tar input with the
// default 60 s budget would take most of the time).
func FuzzTarScan(f *testing.F) {
	long := strings.Repeat("d", 60) + "/" + strings.Repeat("e", 60) + "/f"
	veryLong := strings.Repeat("x", 101)
	for _, e := range [][]tarstreamtest.Entry{
		{{Hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o600}, Data: []byte("abc")}, {Hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o700}}},
		{{Hdr: tar.Header{Name: long, Typeflag: tar.TypeReg, Mode: 0o600, Format: tar.FormatUSTAR}, Data: []byte("p")}},
		{{Hdr: tar.Header{Name: veryLong, Linkname: veryLong, Typeflag: tar.TypeSymlink, Format: tar.FormatGNU}}},
		{{Hdr: tar.Header{Name: veryLong, Typeflag: tar.TypeReg, Format: tar.FormatPAX}, Data: []byte("x")}},
		{{Hdr: tar.Header{Name: "g", Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"c": "d"}}}, {Hdr: tar.Header{Name: "h", Linkname: "a", Typeflag: tar.TypeLink}}},
	} {
		f.Add(tarstreamtest.Build(f, e), uint16(511), uint32(600))
	}
	f.Add(make([]byte, 1024), uint16(3), uint32(10))
	var b256 []byte
	b256 = append(b256, tarstreamtest.Header("b", '0', tarstreamtest.Base256(3))...)
	b256 = append(b256, "xyz"...)
	b256 = append(b256, make([]byte, 509+1024)...)
	f.Add(b256, uint16(100), uint32(600))
	f.Add(append(tarstreamtest.Header("././@LongLink", 'L', []byte("00000000005\x00")), "hello"...), uint16(7), uint32(100))
	f.Add([]byte(strconv.Itoa(12345)), uint16(2), uint32(2))
	f.Fuzz(func(t *testing.T, b []byte, chunk uint16, limit uint32) {
		n := int(chunk)%4096 + 1
		got, s, err := tarstreamtest.Scan(t, b, "CRC32C", n)
		var prev int64
		for _, m := range got {
			if m.Offset != prev || m.DataEnd < m.DataStart || m.DataStart < m.Offset || m.DataEnd > int64(len(b)) {
				t.Fatalf("bad offsets %+v after %d", m, prev)
			}
			prev = m.DataEnd
		}
		if s.Offset() > int64(len(b)) {
			t.Fatalf("offset %d > %d", s.Offset(), len(b))
		}
		if err == nil {
			// What the scanner accepts, archive/tar (restore's reader) reads
			// the same way: same members, same content.
			ref, rerr := refMembersErr(b)
			if rerr != nil {
				t.Fatalf("the scanner accepts a stream archive/tar refuses: %v", rerr)
			}
			if len(ref) != len(got) {
				t.Fatalf("scanner: %d members, archive/tar: %d", len(got), len(ref))
			}
			for i, m := range got {
				r := ref[i]
				if m.Name != r.Name || m.Linkname != r.Linkname || m.Typeflag != r.Typeflag || m.Mode != r.Mode || m.Size != r.Size {
					t.Fatalf("member %d: scanner %+v, archive/tar %+v", i, m, r)
				}
				if m.Typeflag == tar.TypeReg && m.Checksum != r.CRC32C {
					t.Fatalf("member %q: checksum %s, archive/tar content %s", m.Name, m.Checksum, r.CRC32C)
				}
			}
		}
		parts, infos, members, serr := tarstreamtest.Split(t, b, int64(limit)+1, n)
		if (err == nil) != (serr == nil) {
			t.Fatalf("scanner error %v, splitter error %v", err, serr)
		}
		if err == nil {
			if !bytes.Equal(bytes.Join(parts, nil), b) || len(members) != len(got) {
				t.Fatalf("splitter output differs")
			}
			var off int64
			for i, p := range infos {
				if p.Offset != off || p.Bytes != int64(len(parts[i])) {
					t.Fatalf("part %+v", p)
				}
				off += p.Bytes
			}
		}
	})
}
