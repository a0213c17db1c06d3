package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Fuzzers for the parsers that read hostile input: segment headers (any file
// handed to wal-push) and timeline history files (objects from the
// repository, and their plaintext metadata). Run one with
//
//	go test -run '^$' -fuzz '^FuzzParseHeader$' -fuzztime 3m ./wal/
//
// or all of them with `make fuzz`. Crashers are kept under testdata/fuzz.

// encodeHeader is the inverse of ParseHeader for the fields it reads.
func encodeHeader(h Header) []byte {
	b := make([]byte, LongHeaderSize)
	le := binary.LittleEndian
	le.PutUint16(b[0:], h.Magic)
	le.PutUint16(b[2:], h.Info)
	le.PutUint32(b[4:], h.Timeline)
	le.PutUint64(b[8:], uint64(h.PageAddr))
	le.PutUint64(b[24:], h.SystemID)
	le.PutUint32(b[32:], h.SegSize)
	le.PutUint32(b[36:], h.XLogBlcksz)
	return b
}

func FuzzParseHeader(f *testing.F) {
	f.Add(header(7, 1, 0x1_03000000, 16<<20, 8192, 2), "000000020000000100000003")
	f.Add(header(7, 2, 0x1_03000000, 16<<20, 8192, 2), "000000020000000100000003.partial")
	f.Add(header(1<<63, 1, 0, 1<<30, 65536, 0xffff), "000000010000000000000000")
	f.Add(header(7, 1, 0, 1<<20, 1024, 2), "0000000100000000000000FF")
	f.Add(header(7, 1, 0x3000000, 16<<20, 8192, 2), "000000010000000000000003.00000028.backup")
	f.Add([]byte("not wal"), "00000001.history")
	f.Add(make([]byte, 8192), "000000010000000000000001")
	f.Fuzz(func(t *testing.T, b []byte, name string) {
		h, err := ParseHeader(b)
		if err != nil {
			if !errors.Is(err, ErrNotWAL) {
				t.Fatalf("a header error that does not wrap ErrNotWAL: %v", err)
			}
		} else {
			// An accepted header is consistent.
			if len(b) < LongHeaderSize {
				t.Fatalf("accepted a %d-byte header", len(b))
			}
			if h.Info&xlpLongHeader == 0 || !ValidSegSize(h.SegSize) || h.Timeline == 0 || h.SystemID == 0 {
				t.Fatalf("accepted an inconsistent header %+v", h)
			}
			if h.XLogBlcksz < 1024 || h.XLogBlcksz > 65536 || h.XLogBlcksz&(h.XLogBlcksz-1) != 0 {
				t.Fatalf("accepted WAL block size %d", h.XLogBlcksz)
			}
			// Round trip: the fields are exactly the header's bytes (but
			// xlp_rem_len and the padding at 16-23, which are not read).
			if enc := encodeHeader(h); !bytes.Equal(enc[:16], b[:16]) || !bytes.Equal(enc[24:], b[24:LongHeaderSize]) {
				t.Fatalf("header %+v does not encode back to %x", h, b[:LongHeaderSize])
			}
			if h2, err := ParseHeader(encodeHeader(h)); err != nil || h2 != h {
				t.Fatalf("parse(encode(%+v)) = %+v, %v", h, h2, err)
			}
		}
		n, nerr := ParseName(name)
		if nerr != nil {
			return
		}
		if n.Raw != name {
			t.Fatalf("ParseName(%q).Raw = %q", name, n.Raw)
		}
		if n.Kind != KindHistory {
			if got := n.SegmentName(); len(got) != 24 || !strings.HasPrefix(name, got) {
				t.Fatalf("ParseName(%q).SegmentName() = %q", name, got)
			}
		}
		if err != nil || n.Kind == KindHistory {
			return
		}
		if cerr := CheckSegment(n, int64(len(b)), h); cerr == nil {
			// An accepted segment is the one its name says, whole.
			start, ok := n.StartLSN(h.SegSize)
			if !ok || h.PageAddr != start || int64(len(b)) != int64(h.SegSize) {
				t.Fatalf("CheckSegment accepted %s (start %s, ok %v) with %+v and %d bytes", name, start, ok, h, len(b))
			}
			if SegmentFileName(n.Timeline, uint64(start)/uint64(h.SegSize), h.SegSize) != n.SegmentName() {
				t.Fatalf("segment name of %s at %s is %s", name, start, SegmentFileName(n.Timeline, uint64(start)/uint64(h.SegSize), h.SegSize))
			}
		} else if !errors.Is(cerr, ErrNotWAL) {
			t.Fatalf("a segment check error that does not wrap ErrNotWAL: %v", cerr)
		}
	})
}

// formatHistory writes h the way PostgreSQL writes a history file.
func formatHistory(h History) []byte {
	var b bytes.Buffer
	for _, e := range h.Entries {
		fmt.Fprintf(&b, "%d\t%s\t%s\n", e.Parent, e.Switch, e.Reason)
	}
	return b.Bytes()
}

func FuzzParseHistory(f *testing.F) {
	f.Add(uint32(2), []byte("1\t0/3000000\tno recovery target specified\n"))
	f.Add(uint32(4), []byte("1\t0/3000000\tno recovery target specified\n\n2\t0/5000000\tbefore 2026-11-24 15:45:00+01\n3\t1/0\tat restore point \"x\"\n"))
	f.Add(uint32(3), []byte("# comment\n  1 0/16B3D70 reason with  spaces \r\n2\t0/16B3D70\n"))
	f.Add(uint32(2), []byte("2\t0/1\n"))
	f.Add(uint32(9), []byte("1\t0/5\n3\t0/4\n"))
	f.Add(uint32(1), []byte(""))
	f.Add(uint32(0xFFFFFFFF), []byte("4294967294\tFFFFFFFF/FFFFFFFF\n"))
	f.Fuzz(func(t *testing.T, tli uint32, b []byte) {
		h, err := ParseHistory(tli, b)
		if err != nil {
			return
		}
		if h.TLI != tli {
			t.Fatalf("TLI %d, want %d", h.TLI, tli)
		}
		// Invariants: parents are real timelines below tli, strictly
		// increasing; switch points never go back.
		for i, e := range h.Entries {
			if e.Parent == 0 || e.Parent >= tli {
				t.Fatalf("entry %d: parent %d on timeline %d", i, e.Parent, tli)
			}
			if i > 0 && (e.Parent <= h.Entries[i-1].Parent || e.Switch < h.Entries[i-1].Switch) {
				t.Fatalf("entries out of order: %+v", h.Entries)
			}
			if strings.ContainsAny(e.Reason, "\n\r") {
				t.Fatalf("entry %d: reason %q spans lines", i, e.Reason)
			}
			// Contains agrees with the entry: up to the switch point the
			// parent is on this history, after it not.
			if !h.Contains(e.Parent, e.Switch) || (e.Switch < ^LSN(0) && h.Contains(e.Parent, e.Switch+1)) {
				t.Fatalf("Contains disagrees with entry %+v", e)
			}
		}
		if !h.Contains(tli, ^LSN(0)) {
			t.Fatal("a timeline's history does not contain the timeline itself")
		}
		// Round trips: the history file as PostgreSQL writes it, and the
		// plaintext metadata of a pushed history object.
		h2, err := ParseHistory(tli, formatHistory(h))
		if err != nil || !historyEqual(h, h2, true) {
			t.Fatalf("parse(format(%+v)) = %+v, %v", h, h2, err)
		}
		meta := FormatTimelinesMeta(h)
		h3, err := ParseTimelinesMeta(tli, meta)
		if err != nil || !historyEqual(h, h3, false) {
			t.Fatalf("ParseTimelinesMeta(%q) = %+v, %v; want %+v", meta, h3, err, h)
		}
	})
}

func historyEqual(a, b History, reasons bool) bool {
	if a.TLI != b.TLI || len(a.Entries) != len(b.Entries) {
		return false
	}
	for i := range a.Entries {
		x, y := a.Entries[i], b.Entries[i]
		if x.Parent != y.Parent || x.Switch != y.Switch || (reasons && x.Reason != y.Reason) {
			return false
		}
	}
	return true
}

func FuzzParseTimelinesMeta(f *testing.F) {
	f.Add(uint32(3), "1:0/3000000,2:0/5000000")
	f.Add(uint32(2), "")
	f.Add(uint32(2), "1:0/1,,")
	f.Add(uint32(3), "1:0/1 2\t0/2")
	f.Add(uint32(3), "1:0/1\n2:0/2")
	f.Add(uint32(2), "x:y")
	f.Fuzz(func(t *testing.T, tli uint32, v string) {
		h, err := ParseTimelinesMeta(tli, v)
		if err != nil {
			return
		}
		// One entry per non-empty comma-separated "parent:switch" pair, and
		// nothing else smuggled in (the value comes from object metadata).
		n := 0
		for _, p := range strings.Split(v, ",") {
			if p != "" {
				n++
			}
		}
		if len(h.Entries) != n {
			t.Fatalf("%q gives %d entries, it has %d pairs: %+v", v, len(h.Entries), n, h.Entries)
		}
		for _, e := range h.Entries {
			if e.Reason != "" {
				t.Fatalf("%q gives a reason %q", v, e.Reason)
			}
		}
		if got := FormatTimelinesMeta(h); got != strings.Join(nonEmpty(strings.Split(v, ",")), ",") {
			// Accepted values are canonical: PostgreSQL's X/X, decimal parents.
			h2, err := ParseTimelinesMeta(tli, got)
			if err != nil || !historyEqual(h, h2, false) {
				t.Fatalf("round trip of %q: %q -> %+v, %v", v, got, h2, err)
			}
		}
	})
}

func nonEmpty(s []string) []string {
	var out []string
	for _, x := range s {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}
