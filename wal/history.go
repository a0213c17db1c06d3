package wal

import (
	"bufio"
	"bytes"
	"errors"
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
		if err := h.add(f[0], f[1], strings.Join(f[2:], " ")); err != nil {
			return h, fmt.Errorf("%08X.history line %d: %w", tli, ln, err)
		}
	}
	return h, sc.Err()
}

// add appends the entry "parent switch reason" after checking that it
// continues the history: a parent below h.TLI, after the previous entry's.
func (h *History) add(parent, switchPoint, reason string) error {
	p, err := strconv.ParseUint(parent, 10, 32)
	if err != nil || p == 0 || uint32(p) >= h.TLI {
		return fmt.Errorf("bad parent timeline %q", parent)
	}
	sw, err := ParseLSN(switchPoint)
	if err != nil {
		return err
	}
	if n := len(h.Entries); n > 0 && (h.Entries[n-1].Parent >= uint32(p) || h.Entries[n-1].Switch > sw) {
		return errors.New("timelines or switch points out of order")
	}
	h.Entries = append(h.Entries, HistoryEntry{Parent: uint32(p), Switch: sw, Reason: reason})
	return nil
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

// ParseTimelinesMeta parses MetaTimelines back into a history of tli. Each
// non-empty comma-separated item must be exactly "parent:switch" (the value
// comes from object metadata: nothing else may slip in).
func ParseTimelinesMeta(tli uint32, v string) (History, error) {
	h := History{TLI: tli}
	for _, p := range strings.Split(v, ",") {
		if p == "" {
			continue
		}
		parent, sw, ok := strings.Cut(p, ":")
		if !ok {
			return h, fmt.Errorf("bad %s entry %q", MetaTimelines, p)
		}
		if err := h.add(parent, sw, ""); err != nil {
			return h, fmt.Errorf("bad %s entry %q: %w", MetaTimelines, p, err)
		}
	}
	return h, nil
}
