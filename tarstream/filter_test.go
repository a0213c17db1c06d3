package tarstream_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/pgark/pgark/tarstream"
	"github.com/pgark/pgark/tarstream/tarstreamtest"
)

// TestFilter: the members Skip chooses are left out whole, in writes of
// every size; the rest reads back with archive/tar byte for byte; Skipped
// sees the skipped members' checksums and its error stops the stream.
func TestFilter(t *testing.T) {
	long := strings.Repeat("d", 120) + "/file" // a PAX or GNU long name
	entries := []tarstreamtest.Entry{
		{Hdr: tar.Header{Name: "backup_label", Typeflag: tar.TypeReg, Mode: 0o600}, Data: []byte("START WAL LOCATION: 0/2000028\n")},
		{Hdr: tar.Header{Name: "base/", Typeflag: tar.TypeDir, Mode: 0o700}},
		{Hdr: tar.Header{Name: "base/1/1259", Typeflag: tar.TypeReg, Mode: 0o600}, Data: tarstreamtest.Data(20000, 1)},
		{Hdr: tar.Header{Name: long, Typeflag: tar.TypeReg, Mode: 0o600}, Data: tarstreamtest.Data(1000, 2)},
		{Hdr: tar.Header{Name: "base/1/empty", Typeflag: tar.TypeReg, Mode: 0o600}},
		{Hdr: tar.Header{Name: "base/1/2619", Typeflag: tar.TypeReg, Mode: 0o600}, Data: tarstreamtest.Data(8192, 3)},
		{Hdr: tar.Header{Name: "global/pg_control", Typeflag: tar.TypeReg, Mode: 0o600}, Data: tarstreamtest.Data(8192, 4)},
	}
	in := tarstreamtest.Build(t, entries)
	skipNames := map[string]bool{"base/1/1259": true, long: true, "base/1/empty": true}
	for _, chunk := range []int{1, 7, 512, 513, 4096, len(in)} {
		var out bytes.Buffer
		var all, skipped []string
		f, err := tarstream.NewFilter(&out, tarstream.FilterOptions{
			Checksum: "CRC32C",
			Skip:     func(m tarstream.Member) bool { return skipNames[m.Name] },
			Skipped: func(m tarstream.Member) error {
				for _, e := range entries {
					if e.Hdr.Name == m.Name && m.Checksum != tarstreamtest.CRC32C(e.Data) {
						t.Errorf("%s: checksum %s", m.Name, m.Checksum)
					}
				}
				skipped = append(skipped, m.Name)
				return nil
			},
			Member: func(m tarstream.Member) error { all = append(all, m.Name); return nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(in); off += chunk {
			if _, err := f.Write(in[off:min(off+chunk, len(in))]); err != nil {
				t.Fatalf("chunk %d: %v", chunk, err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatalf("chunk %d: close: %v", chunk, err)
		}
		if len(all) != len(entries) || len(skipped) != 3 {
			t.Fatalf("chunk %d: members %v, skipped %v", chunk, all, skipped)
		}
		// What is left is a tar stream of the other members, intact.
		tr := tar.NewReader(bytes.NewReader(out.Bytes()))
		var kept []string
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("chunk %d: output: %v", chunk, err)
			}
			b, _ := io.ReadAll(tr)
			for _, e := range entries {
				if e.Hdr.Name == h.Name && !bytes.Equal(b, e.Data) {
					t.Fatalf("chunk %d: %s differs", chunk, h.Name)
				}
			}
			kept = append(kept, h.Name)
		}
		if strings.Join(kept, ",") != "backup_label,base/,base/1/2619,global/pg_control" {
			t.Fatalf("chunk %d: kept %v", chunk, kept)
		}
		if f.SkippedBytes() != int64(len(in)-out.Len()) {
			t.Fatalf("chunk %d: skipped %d bytes, the output is %d shorter", chunk, f.SkippedBytes(), len(in)-out.Len())
		}
		if _, _, err := tarstreamtest.Scan(t, out.Bytes(), "CRC32C", 4096); err != nil {
			t.Fatalf("chunk %d: the output does not scan: %v", chunk, err)
		}
	}

	// An error from Skipped stops the stream.
	bad := errors.New("changed without a new modification time")
	f, _ := tarstream.NewFilter(io.Discard, tarstream.FilterOptions{
		Skip:    func(m tarstream.Member) bool { return m.Name == "base/1/2619" },
		Skipped: func(tarstream.Member) error { return bad },
	})
	if _, err := f.Write(in); !errors.Is(err, bad) {
		t.Fatalf("Skipped's error: %v", err)
	}
	// A truncated stream is an error at Close.
	f, _ = tarstream.NewFilter(io.Discard, tarstream.FilterOptions{Skip: func(tarstream.Member) bool { return false }, Skipped: func(tarstream.Member) error { return nil }})
	f.Write(in[:len(in)-1024])
	if err := f.Close(); err == nil {
		t.Fatal("a stream without its end-of-archive marker closed cleanly")
	}
}
