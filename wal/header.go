package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// LongHeaderSize is the size of XLogLongPageHeaderData, which starts every
// WAL segment: the short page header (magic, info, timeline, page address,
// remaining length, padded to 24 bytes), then the system identifier, the
// segment size and the WAL block size.
const LongHeaderSize = 40

const xlpLongHeader = 0x0002 // XLP_LONG_HEADER in xlp_info

// Header is what a segment's first page says about the segment.
type Header struct {
	Magic      uint16 // xlp_magic: changes with every major; reported, never whitelisted
	Info       uint16
	Timeline   uint32 // the timeline the page was written on (may differ from the file name's for a new timeline's first segment)
	PageAddr   LSN
	SystemID   uint64
	SegSize    uint32
	XLogBlcksz uint32
}

// ErrNotWAL is wrapped by every header check failure that means "this file is
// not a PostgreSQL WAL segment at all".
var ErrNotWAL = errors.New("not a PostgreSQL WAL segment")

// ParseHeader decodes and sanity-checks a segment's long page header. It does
// not whitelist xlp_magic (it changes with every major, and an unknown one must
// not stop archiving) and it does not compare the header's timeline with the
// file name's.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < LongHeaderSize {
		return Header{}, fmt.Errorf("%w: only %d bytes, a segment header has %d", ErrNotWAL, len(b), LongHeaderSize)
	}
	le := binary.LittleEndian
	h := Header{
		Magic:      le.Uint16(b[0:]),
		Info:       le.Uint16(b[2:]),
		Timeline:   le.Uint32(b[4:]),
		PageAddr:   LSN(le.Uint64(b[8:])),
		SystemID:   le.Uint64(b[24:]),
		SegSize:    le.Uint32(b[32:]),
		XLogBlcksz: le.Uint32(b[36:]),
	}
	if h.Info&xlpLongHeader == 0 {
		return h, fmt.Errorf("%w: the first page has no long header (xlp_info=%#04x)", ErrNotWAL, h.Info)
	}
	if !ValidSegSize(h.SegSize) {
		return h, fmt.Errorf("%w: segment size %d in the header is not a power of two from 1 MiB to 1 GiB", ErrNotWAL, h.SegSize)
	}
	if h.XLogBlcksz < 1024 || h.XLogBlcksz > 65536 || h.XLogBlcksz&(h.XLogBlcksz-1) != 0 {
		return h, fmt.Errorf("%w: WAL block size %d in the header is not a power of two from 1 KiB to 64 KiB", ErrNotWAL, h.XLogBlcksz)
	}
	if h.Timeline == 0 {
		return h, fmt.Errorf("%w: timeline 0 in the header", ErrNotWAL)
	}
	if h.SystemID == 0 {
		return h, fmt.Errorf("%w: system identifier 0 in the header", ErrNotWAL)
	}
	return h, nil
}

// ValidSegSize reports whether s is a segment size PostgreSQL allows.
func ValidSegSize(s uint32) bool {
	return s >= 1<<20 && s <= 1<<30 && s&(s-1) == 0
}

// CheckSegment checks that a segment-kind file (segment or .partial) with this
// name, size and header is what the name says: the page address is the
// segment's start and the size is the header's segment size.
func CheckSegment(n Name, size int64, h Header) error {
	start, ok := n.StartLSN(h.SegSize)
	if !ok {
		return fmt.Errorf("%w: the name %s does not fit the header's segment size %d", ErrNotWAL, n.Raw, h.SegSize)
	}
	if h.PageAddr != start {
		return fmt.Errorf("%w: the header's page address %s is not the start of segment %s (%s): the file is not this segment", ErrNotWAL, h.PageAddr, n.Raw, start)
	}
	if size != int64(h.SegSize) {
		return fmt.Errorf("%w: the file has %d bytes but the header's segment size is %d (truncated or not a segment)", ErrNotWAL, size, h.SegSize)
	}
	return nil
}
