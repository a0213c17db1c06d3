package wal

import (
	"encoding/binary"
	"errors"
	"testing"
)

func TestParseName(t *testing.T) {
	good := []struct {
		in   string
		kind Kind
		tli  uint32
		log  uint32
		seg  uint32
		key  string
	}{
		{"000000010000000000000001", KindSegment, 1, 0, 1, "wal/00000001/00000000/000000010000000000000001.pgark"},
		{"0000000A00000002000000FF.partial", KindPartial, 10, 2, 255, "wal/0000000A/00000002/0000000A00000002000000FF.partial.pgark"},
		{"000000010000000000000002.00000028.backup", KindBackup, 1, 0, 2, "wal/00000001/00000000/000000010000000000000002.00000028.backup.pgark"},
		{"00000002.history", KindHistory, 2, 0, 0, "wal/00000002/00000002.history.pgark"},
	}
	for _, g := range good {
		n, err := ParseName(g.in)
		if err != nil {
			t.Fatalf("ParseName(%q): %v", g.in, err)
		}
		if n.Kind != g.kind || n.Timeline != g.tli || n.Log != g.log || n.Seg != g.seg {
			t.Errorf("ParseName(%q) = %+v", g.in, n)
		}
		if k := ObjectKey(n); k != g.key {
			t.Errorf("ObjectKey(%q) = %q, want %q", g.in, k, g.key)
		}
	}
	for _, b := range []string{
		"", "0000000100000000000000", "00000001000000000000000g", "000000010000000000000001x",
		"../../etc/passwd", "00000000.history", "000000000000000000000001", "0000000100000000000000001",
		"000000010000000000000001.backup", "000000010000000000000001.0000002.backup", "history",
		"000000010000000000000001/..", "00000001.history/x", "0000000a0000000000000001",
	} {
		if _, err := ParseName(b); err == nil {
			t.Errorf("ParseName(%q) accepted a bad name", b)
		}
	}
}

func TestSegNoAndLSN(t *testing.T) {
	n, _ := ParseName("0000000100000002000000FF")
	no, ok := n.SegNo(16 << 20)
	if !ok || no != 2*256+255 {
		t.Fatalf("SegNo = %d %v", no, ok)
	}
	lsn, _ := n.StartLSN(16 << 20)
	if lsn.String() != "2/FF000000" {
		t.Fatalf("StartLSN = %s", lsn)
	}
	if _, ok := n.SegNo(1 << 30); ok {
		t.Fatal("segment 0xFF is not valid with 1 GiB segments")
	}
	if got := SegmentFileName(1, no, 16<<20); got != n.Raw {
		t.Fatalf("SegmentFileName = %s", got)
	}
	l, err := ParseLSN("2/FF000000")
	if err != nil || l != lsn {
		t.Fatalf("ParseLSN = %v %v", l, err)
	}
	for _, b := range []string{"", "1", "/1", "1/", "G/0", "1/100000000"} {
		if _, err := ParseLSN(b); err == nil {
			t.Errorf("ParseLSN(%q) accepted", b)
		}
	}
}

func header(sysid uint64, tli uint32, addr uint64, segSize, blck uint32, info uint16) []byte {
	b := make([]byte, LongHeaderSize)
	le := binary.LittleEndian
	le.PutUint16(b[0:], 0xD118)
	le.PutUint16(b[2:], info)
	le.PutUint32(b[4:], tli)
	le.PutUint64(b[8:], addr)
	le.PutUint64(b[24:], sysid)
	le.PutUint32(b[32:], segSize)
	le.PutUint32(b[36:], blck)
	return b
}

func TestParseHeader(t *testing.T) {
	n, _ := ParseName("000000020000000100000003")
	seg := uint32(16 << 20)
	h, err := ParseHeader(header(7, 1, 0x1_03000000, seg, 8192, 0x0002))
	if err != nil {
		t.Fatal(err)
	}
	// The header's timeline (1) differs from the name's (2): allowed, a new
	// timeline's first segment carries the old one.
	if err := CheckSegment(n, int64(seg), h); err != nil {
		t.Fatalf("CheckSegment: %v", err)
	}
	if h.SystemID != 7 || h.XLogBlcksz != 8192 {
		t.Fatalf("header = %+v", h)
	}
	if err := CheckSegment(n, int64(seg)-1, h); !errors.Is(err, ErrNotWAL) {
		t.Fatalf("truncated file accepted: %v", err)
	}
	wrongAddr, _ := ParseHeader(header(7, 1, 0x1_04000000, seg, 8192, 2))
	if err := CheckSegment(n, int64(seg), wrongAddr); !errors.Is(err, ErrNotWAL) {
		t.Fatalf("wrong page address accepted: %v", err)
	}
	for name, b := range map[string][]byte{
		"short":        make([]byte, 39),
		"zeros":        make([]byte, 8192),
		"no long flag": header(7, 1, 0, seg, 8192, 0),
		"seg size":     header(7, 1, 0, 3<<20, 8192, 2),
		"blcksz":       header(7, 1, 0, seg, 1000, 2),
		"sysid 0":      header(0, 1, 0, seg, 8192, 2),
	} {
		if _, err := ParseHeader(b); !errors.Is(err, ErrNotWAL) {
			t.Errorf("%s: ParseHeader accepted: %v", name, err)
		}
	}
}
