// Package tarstreamtest holds test helpers for code built on package tarstream: tar streams
// made with archive/tar, raw header blocks, and runs of the scanner and the splitter that
// check the splitter's contract. Tests of tarstream, basebackup, manifest and restore use it.
package tarstreamtest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"testing"
	"time"

	"github.com/pgark/pgark/tarstream"
)

// Entry is a member for Build.
type Entry struct {
	Hdr  tar.Header
	Data []byte
}

// Build writes entries with archive/tar.
func Build(t testing.TB, entries []Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Hdr
		if h.Typeflag == tar.TypeReg || h.Typeflag == 0 {
			h.Size = int64(len(e.Data))
		}
		if h.ModTime.IsZero() && h.Typeflag != tar.TypeXGlobalHeader {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("WriteHeader %q: %v", h.Name, err)
		}
		if len(e.Data) > 0 {
			if _, err := tw.Write(e.Data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func Data(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

func CRC32C(b []byte) string {
	v := crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
	return fmt.Sprintf("%02x%02x%02x%02x", byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}

// Scan feeds b to a scanner in chunks of n bytes.
func Scan(t testing.TB, b []byte, alg string, n int) ([]tarstream.Member, *tarstream.Scanner, error) {
	t.Helper()
	var got []tarstream.Member
	s, err := tarstream.NewScanner(alg, func(m tarstream.Member) error { got = append(got, m); return nil })
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

// Split splits b with limit, feeding chunks of n bytes.
func Split(t testing.TB, b []byte, limit int64, n int) ([][]byte, []tarstream.Part, []tarstream.Member, error) {
	t.Helper()
	var parts []*bytes.Buffer
	var infos []tarstream.Part
	var members []tarstream.Member
	sp, err := tarstream.NewSplitter(tarstream.SplitOptions{
		Limit:    limit,
		Checksum: "SHA256",
		NewPart: func(i int, off int64) (io.Writer, error) {
			if i != len(parts) {
				return nil, fmt.Errorf("part %d after %d parts", i, len(parts))
			}
			parts = append(parts, new(bytes.Buffer))
			return parts[i], nil
		},
		EndPart: func(p tarstream.Part) error { infos = append(infos, p); return nil },
		Member:  func(m tarstream.Member) error { members = append(members, m); return nil },
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

// CheckParts checks the splitter's contract on one result.
func CheckParts(t testing.TB, b []byte, limit int64, parts [][]byte, infos []tarstream.Part, members []tarstream.Member) {
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
			var next tarstream.Member
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

// Header builds a raw ustar header block with a valid checksum.
func Header(name string, typ byte, size []byte) []byte {
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
	FixChecksum(b[:])
	return b[:]
}

func FixChecksum(b []byte) {
	copy(b[148:156], "        ")
	var sum int64
	for _, c := range b[:512] {
		sum += int64(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// Base256 is n as a 12-byte GNU base-256 numeric field.
func Base256(n int64) []byte {
	f := make([]byte, 12)
	for i := 11; i > 0; i-- {
		f[i] = byte(n)
		n >>= 8
	}
	f[0] = 0x80
	return f
}
