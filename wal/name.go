// Package wal knows PostgreSQL's write-ahead log: file names, timelines, LSN
// arithmetic, segment header checks, and the archive operations built on
// them (push to a repository, fetch back).
package wal

import (
	"fmt"
	"strconv"
	"strings"
)

// Kind is the kind of a file that PostgreSQL archives.
type Kind int

// The kinds of archived WAL files.
const (
	KindSegment Kind = iota + 1 // 000000010000000000000001
	KindPartial                 // 000000010000000000000001.partial
	KindBackup                  // 000000010000000000000001.00000028.backup
	KindHistory                 // 00000002.history
)

func (k Kind) String() string {
	switch k {
	case KindSegment:
		return "segment"
	case KindPartial:
		return "partial segment"
	case KindBackup:
		return "backup history file"
	case KindHistory:
		return "timeline history file"
	}
	return "unknown"
}

// Name is a parsed WAL file name.
type Name struct {
	Kind     Kind
	Timeline uint32
	Log      uint32 // high 32 bits of the segment's start LSN (not for history files)
	Seg      uint32 // segment number within Log (not for history files)
	Offset   uint32 // start offset inside the segment (backup history files only)
	Raw      string // the name as given
}

func parseHex8(s string) (uint32, bool) {
	if len(s) != 8 {
		return 0, false
	}
	for i := 0; i < 8; i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 16, 32)
	return uint32(v), err == nil
}

// ParseName parses the name of a file that PostgreSQL archives or restores.
// It accepts segments, .partial and .backup files and .history files, with
// PostgreSQL's upper-case hex digits, and nothing else: a name that could
// escape a directory or mean something else is refused.
func ParseName(s string) (Name, error) {
	n := Name{Raw: s}
	bad := func() (Name, error) {
		return Name{}, fmt.Errorf("%q is not a WAL file name (expected a segment like 000000010000000000000001, or a .partial, .backup or .history file)", s)
	}
	if strings.HasSuffix(s, ".history") {
		tli, ok := parseHex8(strings.TrimSuffix(s, ".history"))
		if !ok || tli == 0 {
			return bad()
		}
		n.Kind, n.Timeline = KindHistory, tli
		return n, nil
	}
	if len(s) < 24 {
		return bad()
	}
	tli, ok1 := parseHex8(s[0:8])
	log, ok2 := parseHex8(s[8:16])
	seg, ok3 := parseHex8(s[16:24])
	if !ok1 || !ok2 || !ok3 || tli == 0 {
		return bad()
	}
	n.Timeline, n.Log, n.Seg = tli, log, seg
	rest := s[24:]
	switch {
	case rest == "":
		n.Kind = KindSegment
	case rest == ".partial":
		n.Kind = KindPartial
	case len(rest) == len(".00000028.backup") && rest[0] == '.' && strings.HasSuffix(rest, ".backup"):
		off, ok := parseHex8(rest[1:9])
		if !ok {
			return bad()
		}
		n.Kind, n.Offset = KindBackup, off
	default:
		return bad()
	}
	return n, nil
}

// SegmentName is the 24-character name of the segment this file belongs to
// (empty for history files).
func (n Name) SegmentName() string {
	if n.Kind == KindHistory {
		return ""
	}
	return fmt.Sprintf("%08X%08X%08X", n.Timeline, n.Log, n.Seg)
}

// SegNo returns the segment number for a segment size, and whether the name
// is valid for that size (the segment part must be below 4 GiB / segSize).
func (n Name) SegNo(segSize uint32) (uint64, bool) {
	per := SegmentsPerLogID(segSize)
	if uint64(n.Seg) >= per {
		return 0, false
	}
	return uint64(n.Log)*per + uint64(n.Seg), true
}

// StartLSN is the LSN of the segment's first byte for a segment size.
func (n Name) StartLSN(segSize uint32) (LSN, bool) {
	no, ok := n.SegNo(segSize)
	return LSN(no * uint64(segSize)), ok
}

// SegmentsPerLogID is how many segments one "log id" (4 GiB of WAL) holds.
func SegmentsPerLogID(segSize uint32) uint64 { return 0x100000000 / uint64(segSize) }

// SegmentFileName builds a segment name from a timeline and segment number.
func SegmentFileName(tli uint32, segNo uint64, segSize uint32) string {
	per := SegmentsPerLogID(segSize)
	return fmt.Sprintf("%08X%08X%08X", tli, uint32(segNo/per), uint32(segNo%per))
}

// LSN is a PostgreSQL log sequence number.
type LSN uint64

func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }

// ParseLSN parses the X/X form PostgreSQL prints.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("%q is not an LSN (expected X/X)", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil || hi == "" || lo == "" {
		return 0, fmt.Errorf("%q is not an LSN (expected X/X)", s)
	}
	return LSN(h<<32 | l), nil
}

// ObjectKey is the repository key of an archived WAL file. It depends on the
// file name alone, so that restore_command, duplicate checks and continuity
// checks find an object with one GET or HEAD. Segment-kind files are grouped
// by timeline and log id (at most 4 GiB of WAL per directory); history files
// sit at the timeline level. The WAL file name stays a whole path component,
// so `find -name '000000010000000000000001*'` finds it in a local repository.
func ObjectKey(n Name) string {
	tli := n.Raw[:8]
	if n.Kind == KindHistory {
		return "wal/" + tli + "/" + n.Raw + ObjectSuffix
	}
	return "wal/" + tli + "/" + n.Raw[8:16] + "/" + n.Raw + ObjectSuffix
}

// ObjectSuffix ends every WAL object's key. The codec and encryption are
// recorded inside the object, so the suffix never changes with settings.
const ObjectSuffix = ".pgark"
