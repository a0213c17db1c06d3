package wal

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// HistoryEntry is one line of a timeline history file: the server switched
// from timeline Parent to the next one at LSN Switch.
type HistoryEntry struct {
	Parent uint32
	Switch LSN
	Reason string
}

// History is a timeline's ancestry, from the history file NNNNNNNN.history
// of timeline TLI (empty for timeline 1).
type History struct {
	TLI     uint32
	Entries []HistoryEntry // oldest first
}

// ParseHistory parses a timeline history file.
func ParseHistory(tli uint32, b []byte) (History, error) {
	h := History{TLI: tli}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return h, fmt.Errorf("%08X.history line %d: expected \"parentTLI switchpoint reason\"", tli, ln)
		}
		p, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil || p == 0 || uint32(p) >= tli {
			return h, fmt.Errorf("%08X.history line %d: bad parent timeline %q", tli, ln, f[0])
		}
		sw, err := ParseLSN(f[1])
		if err != nil {
			return h, fmt.Errorf("%08X.history line %d: %w", tli, ln, err)
		}
		if n := len(h.Entries); n > 0 && (h.Entries[n-1].Parent >= uint32(p) || h.Entries[n-1].Switch > sw) {
			return h, fmt.Errorf("%08X.history line %d: timelines or switch points out of order", tli, ln)
		}
		h.Entries = append(h.Entries, HistoryEntry{Parent: uint32(p), Switch: sw, Reason: strings.Join(f[2:], " ")})
	}
	return h, sc.Err()
}

// Contains reports whether the position (timeline tli, lsn) lies on this
// timeline's history: tli is this timeline (any LSN), or an ancestor and lsn
// is at or before the point where the history left it.
func (h History) Contains(tli uint32, lsn LSN) bool {
	if tli == h.TLI {
		return true
	}
	for _, e := range h.Entries {
		if e.Parent == tli {
			return lsn <= e.Switch
		}
	}
	return false
}

// MetaTimelines is the object metadata key under which a pushed history file
// carries its entries in plaintext, "parent:switch,parent:switch", so that
// continuity checks need no private key (switch points are not secret).
const MetaTimelines = "pgark-timelines"

// FormatTimelinesMeta renders h's entries for MetaTimelines.
func FormatTimelinesMeta(h History) string {
	parts := make([]string, len(h.Entries))
	for i, e := range h.Entries {
		parts[i] = fmt.Sprintf("%d:%s", e.Parent, e.Switch)
	}
	return strings.Join(parts, ",")
}

// ParseTimelinesMeta parses MetaTimelines back into a history of tli.
func ParseTimelinesMeta(tli uint32, v string) (History, error) {
	var b strings.Builder
	for _, p := range strings.Split(v, ",") {
		if p == "" {
			continue
		}
		parent, sw, ok := strings.Cut(p, ":")
		if !ok {
			return History{TLI: tli}, fmt.Errorf("bad %s entry %q", MetaTimelines, p)
		}
		fmt.Fprintf(&b, "%s\t%s\n", parent, sw)
	}
	return ParseHistory(tli, []byte(b.String()))
}
