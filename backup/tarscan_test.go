package backup

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tarscanEntry is a member for tarscanBuild.
type tarscanEntry struct {
	hdr  tar.Header
	data []byte
}

// tarscanBuild writes entries with archive/tar.
func tarscanBuild(t testing.TB, entries []tarscanEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg || h.Typeflag == 0 {
			h.Size = int64(len(e.data))
		}
		if h.ModTime.IsZero() && h.Typeflag != tar.TypeXGlobalHeader {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("WriteHeader %q: %v", h.Name, err)
		}
		if len(e.data) > 0 {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tarscanData(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// tarscanSample is an archive exercising every header form the scanner must read.
func tarscanSample(t testing.TB) []byte {
	long := strings.Repeat("d", 60) + "/" + strings.Repeat("e", 60) + "/file" // > 100 bytes, fits ustar prefix
	veryLong := strings.Repeat("x", 180) + "/" + strings.Repeat("y", 120)     // needs PAX or GNU long name
	return tarscanBuild(t, []tarscanEntry{
		{hdr: tar.Header{Name: "backup_label", Mode: 0o600, Typeflag: tar.TypeReg}, data: []byte("START WAL LOCATION: 0/2000028\n")},
		{hdr: tar.Header{Name: "base/", Mode: 0o700, Typeflag: tar.TypeDir}},
		{hdr: tar.Header{Name: "base/empty", Mode: 0o600, Typeflag: tar.TypeReg}},
		{hdr: tar.Header{Name: "base/511", Mode: 0o600, Typeflag: tar.TypeReg}, data: tarscanData(511, 1)},
		{hdr: tar.Header{Name: "base/512", Mode: 0o600, Typeflag: tar.TypeReg}, data: tarscanData(512, 2)},
		{hdr: tar.Header{Name: "base/513", Mode: 0o600, Typeflag: tar.TypeReg}, data: tarscanData(513, 3)},
		{hdr: tar.Header{Name: "base/big", Mode: 0o640, Typeflag: tar.TypeReg}, data: tarscanData(100000, 4)},
		{hdr: tar.Header{Name: long, Mode: 0o600, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}, data: []byte("prefix")},
		{hdr: tar.Header{Name: veryLong, Mode: 0o600, Typeflag: tar.TypeReg, Format: tar.FormatGNU}, data: []byte("gnu long name")},
		{hdr: tar.Header{Name: veryLong + "2", Mode: 0o600, Typeflag: tar.TypeReg, Format: tar.FormatPAX}, data: []byte("pax path")},
		{hdr: tar.Header{Name: "pg_tblspc/16384", Linkname: "/srv/ts1", Typeflag: tar.TypeSymlink, Mode: 0o777}},
		{hdr: tar.Header{Name: "lnk-gnu", Linkname: "/" + veryLong, Typeflag: tar.TypeSymlink, Mode: 0o777, Format: tar.FormatGNU}},
		{hdr: tar.Header{Name: "lnk-pax", Linkname: "/" + veryLong, Typeflag: tar.TypeSymlink, Mode: 0o777, Format: tar.FormatPAX}},
		{hdr: tar.Header{Name: "hard", Linkname: "base/512", Typeflag: tar.TypeLink, Mode: 0o600}},
		{hdr: tar.Header{Name: "global-pax", Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "hello"}}},
		{hdr: tar.Header{Name: "global/pg_control", Mode: 0o600, Typeflag: tar.TypeReg}, data: tarscanData(8192, 5)},
	})
}

// tarscanRef lists the members of an archive as archive/tar reads them.
type tarscanRefMember struct {
	Name, Linkname string
	Typeflag       byte
	Mode, Size     int64
	SHA256, CRC32C string
}

func tarscanRef(t testing.TB, b []byte) []tarscanRefMember {
	t.Helper()
	out, err := tarscanRefErr(b)
	if err != nil {
		t.Fatalf("archive/tar: %v", err)
	}
	return out
}

// tarscanRefErr is tarscanRef that returns archive/tar's error.
func tarscanRefErr(b []byte) ([]tarscanRefMember, error) {
	tr := tar.NewReader(bytes.NewReader(b))
	var out []tarscanRefMember
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
		m := tarscanRefMember{Name: h.Name, Linkname: h.Linkname, Typeflag: h.Typeflag, Mode: h.Mode, Size: h.Size}
		if h.Typeflag == tar.TypeReg {
			s := sha256.Sum256(data)
			m.SHA256 = hex.EncodeToString(s[:])
			m.CRC32C = tarscanCRC32C(data)
		}
		out = append(out, m)
	}
}

func tarscanCRC32C(b []byte) string {
	v := crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
	return fmt.Sprintf("%02x%02x%02x%02x", byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}

// tarscanScan feeds b to a scanner in chunks of n bytes.
func tarscanScan(t testing.TB, b []byte, alg string, n int) ([]Member, *TarScanner, error) {
	t.Helper()
	var got []Member
	s, err := NewTarScanner(alg, func(m Member) error { got = append(got, m); return nil })
	if err != nil {
		t.Fatal(err)
	}
	for len(b) > 0 {
		k := min(n, len(b))
		w, err := s.Write(b[:k])
		if err != nil {
			return got, s, err
		}
		if w != k {
			t.Fatalf("short write %d of %d without error", w, k)
		}
		b = b[k:]
	}
	return got, s, s.Close()
}

func TestTarScanMatchesArchiveTar(t *testing.T) {
	b := tarscanSample(t)
	ref := tarscanRef(t, b)
	for _, alg := range []string{"CRC32C", "SHA256", ""} {
		for _, n := range []int{1, 7, 511, 512, 513, 4096, len(b)} {
			got, s, err := tarscanScan(t, b, alg, n)
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
	h := newChecksumHash("CRC32C")
	h.Write([]byte("123456789"))
	if got := hex.EncodeToString(h.Sum(nil)); got != "839206e3" {
		t.Fatalf("CRC32C = %s", got)
	}
}

// tarscanHeader builds a raw ustar header block with a valid checksum.
func tarscanHeader(name string, typ byte, size []byte) []byte {
	var b [512]byte
	copy(b[0:], name)
	copy(b[100:], "0000600\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:136], size)
	copy(b[136:], "14000000000\x00")
	b[156] = typ
	copy(b[257:], "ustar\x00")
	copy(b[263:], "00")
	tarscanFixChecksum(b[:])
	return b[:]
}

func tarscanFixChecksum(b []byte) {
	copy(b[148:156], "        ")
	var sum int64
	for _, c := range b[:512] {
		sum += int64(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

func tarscanBase256(n int64) []byte {
	f := make([]byte, 12)
	for i := 11; i > 0; i-- {
		f[i] = byte(n)
		n >>= 8
	}
	f[0] = 0x80
	return f
}

func TestTarScanBase256Size(t *testing.T) {
	// PostgreSQL writes sizes >= 8 GiB in GNU base-256. A small size in that
	// form, with its data, parses like archive/tar reads it.
	var b []byte
	b = append(b, tarscanHeader("base/1/16384", '0', tarscanBase256(1000))...)
	b = append(b, tarscanData(1000, 9)...)
	b = append(b, make([]byte, 24)...)
	b = append(b, make([]byte, 1024)...)
	ref := tarscanRef(t, b)
	got, _, err := tarscanScan(t, b, "SHA256", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Size != 1000 || got[0].Checksum != ref[0].SHA256 || got[0].DataEnd != 1536 {
		t.Fatalf("got %+v, ref %+v", got, ref)
	}

	// A 9 GiB member: the scanner knows its extent from the header, and does
	// not allocate for it.
	const big = 9 << 30
	s, _ := NewTarScanner("CRC32C", nil)
	if _, err := s.Write(tarscanHeader("base/1/16385", '0', tarscanBase256(big))); err != nil {
		t.Fatal(err)
	}
	if s.state != tsData || s.cur.Size != big || s.cur.DataEnd != 512+big {
		t.Fatalf("state %d cur %+v", s.state, s.cur)
	}
	if _, err := s.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "truncated inside member") {
		t.Fatalf("Close = %v", err)
	}
}

func TestTarScanErrors(t *testing.T) {
	good := tarscanSample(t)
	badSum := bytes.Clone(good)
	badSum[10] ^= 1
	nonZeroAfterEnd := append(bytes.Clone(good), 0, 0, 1)
	zeroThenData := append(make([]byte, 512), tarscanHeader("x", '0', []byte("00000000000\x00"))...)
	hugeExt := tarscanHeader("././@LongLink", 'L', []byte("77777777777\x00"))
	negative := tarscanHeader("neg", '0', []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	sparse := tarscanHeader("sparse", 'S', []byte("00000000000\x00"))
	extThenEnd := append(tarscanHeader("././@LongLink", 'L', []byte("00000000005\x00")), []byte("hello")...)
	extThenEnd = append(extThenEnd, make([]byte, 507+1024)...)
	badPAX := append(tarscanHeader("pax", 'x', []byte("00000000004\x00")), []byte("3 a\n")...)
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
			_, _, err := tarscanScan(t, c.b, "CRC32C", n)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s (chunk %d): error %v, want %q", c.name, n, err, c.want)
			}
		}
	}
}

func TestTarScanCallbackError(t *testing.T) {
	b := tarscanSample(t)
	boom := errors.New("boom")
	s, _ := NewTarScanner("", func(m Member) error {
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

// tarscanSplit splits b with limit, feeding chunks of n bytes.
func tarscanSplit(t testing.TB, b []byte, limit int64, n int) ([][]byte, []Part, []Member, error) {
	t.Helper()
	var parts []*bytes.Buffer
	var infos []Part
	var members []Member
	sp, err := NewTarSplitter(SplitOptions{
		Limit:    limit,
		Checksum: "SHA256",
		NewPart: func(i int, off int64) (io.Writer, error) {
			if i != len(parts) {
				return nil, fmt.Errorf("part %d after %d parts", i, len(parts))
			}
			parts = append(parts, new(bytes.Buffer))
			return parts[i], nil
		},
		EndPart: func(p Part) error { infos = append(infos, p); return nil },
		Member:  func(m Member) error { members = append(members, m); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	for len(b) > 0 {
		k := min(n, len(b))
		if _, err := sp.Write(b[:k]); err != nil {
			return nil, nil, nil, err
		}
		b = b[k:]
	}
	if err := sp.Close(); err != nil {
		return nil, nil, nil, err
	}
	out := make([][]byte, len(parts))
	for i, p := range parts {
		out[i] = p.Bytes()
	}
	return out, infos, members, nil
}

// tarscanCheckParts checks the splitter's contract on one result.
func tarscanCheckParts(t testing.TB, b []byte, limit int64, parts [][]byte, infos []Part, members []Member) {
	t.Helper()
	if len(parts) != len(infos) || len(parts) == 0 {
		t.Fatalf("%d parts, %d part infos", len(parts), len(infos))
	}
	if !bytes.Equal(bytes.Join(parts, nil), b) {
		t.Fatalf("limit %d: the parts do not concatenate to the stream", limit)
	}
	var off int64
	total := 0
	for i, p := range parts {
		in := infos[i]
		if in.Index != i || in.Offset != off || in.Bytes != int64(len(p)) || in.Last != (i == len(parts)-1) {
			t.Fatalf("part %d info %+v (offset %d, %d bytes)", i, in, off, len(p))
		}
		// Each part on its own is a sequence of complete members.
		tr := tar.NewReader(bytes.NewReader(p))
		n := 0
		first := ""
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("part %d: archive/tar: %v", i, err)
			}
			if n == 0 {
				first = h.Name
			}
			if _, err := io.Copy(io.Discard, tr); err != nil {
				t.Fatalf("part %d: %v", i, err)
			}
			n++
		}
		if n != in.Members || first != in.FirstMember {
			t.Fatalf("part %d: archive/tar sees %d members from %q, info %+v", i, n, first, in)
		}
		body := int64(len(p))
		if in.Last {
			body -= int64(len(b)) - members[len(members)-1].DataEnd
		}
		if body > limit && in.Members != 1 {
			t.Fatalf("part %d: %d bytes of members > limit %d with %d members", i, body, limit, in.Members)
		}
		// A cut happens only when the next member would not fit.
		if i+1 < len(parts) {
			var next Member
			for _, m := range members {
				if m.Offset == off+int64(len(p)) {
					next = m
				}
			}
			if int64(len(p))+(next.DataEnd-next.Offset) <= limit {
				t.Fatalf("part %d (%d bytes) cut although the next member (%d bytes) fits in %d", i, len(p), next.DataEnd-next.Offset, limit)
			}
		}
		total += n
		off += int64(len(p))
	}
	if total != len(members) {
		t.Fatalf("%d members in parts, %d reported", total, len(members))
	}
}

func TestTarSplit(t *testing.T) {
	b := tarscanSample(t)
	for _, limit := range []int64{1, 512, 1024, 1600, 4096, 20000, 100000, 200000, 1 << 30} {
		for _, n := range []int{1, 100, 512, 32768, len(b)} {
			parts, infos, members, err := tarscanSplit(t, b, limit, n)
			if err != nil {
				t.Fatalf("limit %d chunk %d: %v", limit, n, err)
			}
			tarscanCheckParts(t, b, limit, parts, infos, members)
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
	parts, infos, members, err := tarscanSplit(t, b, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 1 || len(members) != 0 || !infos[0].Last || infos[0].Members != 0 || len(parts[0]) != 1024 {
		t.Fatalf("parts %d infos %+v", len(parts), infos)
	}
	if _, _, _, err := tarscanSplit(t, tarscanSample(t)[:3000], 1000, 512); err == nil {
		t.Fatal("truncated stream accepted")
	}
}

// FuzzTarScan feeds arbitrary bytes to the scanner and the splitter. The seeds
// are kept small (one header form each). Run it with a short minimization
// budget, e.g.
//
//	go test ./backup/ -run XXX -fuzz FuzzTarScan -fuzzminimizetime 2s
//
// this package's fuzzing binary instruments all its dependencies (the AWS
// SDK...), so executions are slow, and minimizing a kilobyte-sized tar input
// with the default 60 s budget would take most of the time.
func FuzzTarScan(f *testing.F) {
	long := strings.Repeat("d", 60) + "/" + strings.Repeat("e", 60) + "/f"
	veryLong := strings.Repeat("x", 101)
	for _, e := range [][]tarscanEntry{
		{{hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o600}, data: []byte("abc")}, {hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o700}}},
		{{hdr: tar.Header{Name: long, Typeflag: tar.TypeReg, Mode: 0o600, Format: tar.FormatUSTAR}, data: []byte("p")}},
		{{hdr: tar.Header{Name: veryLong, Linkname: veryLong, Typeflag: tar.TypeSymlink, Format: tar.FormatGNU}}},
		{{hdr: tar.Header{Name: veryLong, Typeflag: tar.TypeReg, Format: tar.FormatPAX}, data: []byte("x")}},
		{{hdr: tar.Header{Name: "g", Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"c": "d"}}}, {hdr: tar.Header{Name: "h", Linkname: "a", Typeflag: tar.TypeLink}}},
	} {
		f.Add(tarscanBuild(f, e), uint16(511), uint32(600))
	}
	f.Add(make([]byte, 1024), uint16(3), uint32(10))
	var b256 []byte
	b256 = append(b256, tarscanHeader("b", '0', tarscanBase256(3))...)
	b256 = append(b256, "xyz"...)
	b256 = append(b256, make([]byte, 509+1024)...)
	f.Add(b256, uint16(100), uint32(600))
	f.Add(append(tarscanHeader("././@LongLink", 'L', []byte("00000000005\x00")), "hello"...), uint16(7), uint32(100))
	f.Add([]byte(strconv.Itoa(12345)), uint16(2), uint32(2))
	f.Fuzz(func(t *testing.T, b []byte, chunk uint16, limit uint32) {
		n := int(chunk)%4096 + 1
		got, s, err := tarscanScan(t, b, "CRC32C", n)
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
			ref, rerr := tarscanRefErr(b)
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
		parts, infos, members, serr := tarscanSplit(t, b, int64(limit)+1, n)
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
