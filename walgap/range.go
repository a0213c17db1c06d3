package walgap

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pgark/pgark/wal"
)

// Range is a run of consecutive segments of one timeline that wal-push
// dropped. It is the content of a repository record.
type Range struct {
	Timeline uint32 `json:"timeline"`
	First    string `json:"first"`
	Last     string `json:"last"`
	Count    int    `json:"count"`
	// SegSize is the WAL segment size in bytes.
	SegSize uint32 `json:"wal_segment_size"`
	// FirstDropped and LastDropped are when the first and the last of
	// them were dropped (zero when only the key was read).
	FirstDropped time.Time `json:"first_dropped,omitzero"`
	LastDropped  time.Time `json:"last_dropped,omitzero"`
	// QueueMax is the archive-queue-max in force, in bytes.
	QueueMax int64 `json:"archive_queue_max,omitempty"`
	// Cause says why, for people reading the object.
	Cause string `json:"cause,omitempty"`
}

// Cause is the cause every record names.
const Cause = "dropped by archive-queue-max: the repository was unreachable while the WAL waiting in pg_wal exceeded archive-queue-max"

// String is "first" or "first..last".
func (r Range) String() string {
	if r.First == r.Last {
		return r.First
	}
	return r.First + ".." + r.Last
}

// Segs are the segment numbers of First and Last for segSize.
func (r Range) Segs(segSize uint32) (first, last uint64, ok bool) {
	f, err1 := wal.ParseName(r.First)
	l, err2 := wal.ParseName(r.Last)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	a, ok1 := f.SegNo(segSize)
	b, ok2 := l.SegNo(segSize)
	return a, b, ok1 && ok2 && a <= b
}

// Dropped is one dropped segment, as recorded locally.
type Dropped struct {
	Name      string    `json:"name"`
	SegSize   uint32    `json:"wal_segment_size"`
	DroppedAt time.Time `json:"dropped_at"`
	// QueueBytes is the WAL that was waiting in pg_wal when it was
	// dropped; QueueMax the limit.
	QueueBytes int64 `json:"queue_bytes"`
	QueueMax   int64 `json:"archive_queue_max"`
}

// Merge turns dropped segments into ranges of consecutive segments, by
// timeline then position. Duplicates count once; names that are not
// segments are left out.
func Merge(ds []Dropped) []Range {
	type seg struct {
		tl  uint32
		no  uint64
		d   Dropped
		per uint32
	}
	var segs []seg
	seen := map[string]bool{}
	for _, d := range ds {
		n, err := wal.ParseName(d.Name)
		if err != nil || n.Kind != wal.KindSegment || d.SegSize == 0 || seen[d.Name] {
			continue
		}
		no, ok := n.SegNo(d.SegSize)
		if !ok {
			continue
		}
		seen[d.Name] = true
		segs = append(segs, seg{n.Timeline, no, d, d.SegSize})
	}
	sort.Slice(segs, func(i, j int) bool {
		if segs[i].tl != segs[j].tl {
			return segs[i].tl < segs[j].tl
		}
		return segs[i].no < segs[j].no
	})
	var out []Range
	var lastNo uint64
	for i, s := range segs {
		if i > 0 && s.tl == segs[i-1].tl && s.per == segs[i-1].per && s.no == lastNo+1 {
			r := &out[len(out)-1]
			r.Last, r.Count = s.d.Name, r.Count+1
			r.FirstDropped = minTime(r.FirstDropped, s.d.DroppedAt)
			r.LastDropped = maxTime(r.LastDropped, s.d.DroppedAt)
			r.QueueMax = max(r.QueueMax, s.d.QueueMax)
		} else {
			out = append(out, Range{Timeline: s.tl, First: s.d.Name, Last: s.d.Name, Count: 1, SegSize: s.per,
				FirstDropped: s.d.DroppedAt, LastDropped: s.d.DroppedAt, QueueMax: s.d.QueueMax, Cause: Cause})
		}
		lastNo = s.no
	}
	return out
}

// Coalesce merges ranges that touch or overlap (records written by
// different flushes of one outage), by timeline then position.
func Coalesce(rs []Range, segSize uint32) []Range {
	type span struct {
		r      Range
		lo, hi uint64
	}
	var ss []span
	for _, r := range rs {
		lo, hi, ok := r.Segs(segSize)
		if !ok {
			continue
		}
		ss = append(ss, span{r, lo, hi})
	}
	sort.Slice(ss, func(i, j int) bool {
		if ss[i].r.Timeline != ss[j].r.Timeline {
			return ss[i].r.Timeline < ss[j].r.Timeline
		}
		return ss[i].lo < ss[j].lo
	})
	var out []span
	for _, s := range ss {
		if n := len(out); n > 0 && out[n-1].r.Timeline == s.r.Timeline && s.lo <= out[n-1].hi+1 {
			p := &out[n-1]
			if s.hi > p.hi {
				p.hi, p.r.Last = s.hi, s.r.Last
			}
			p.r.FirstDropped = minTime(p.r.FirstDropped, s.r.FirstDropped)
			p.r.LastDropped = maxTime(p.r.LastDropped, s.r.LastDropped)
			p.r.QueueMax = max(p.r.QueueMax, s.r.QueueMax)
			continue
		}
		out = append(out, s)
	}
	res := make([]Range, len(out))
	for i, s := range out {
		s.r.Count = int(min(s.hi-s.lo+1, 1<<62))
		s.r.SegSize = segSize
		res[i] = s.r
	}
	return res
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Prefix is where the repository records live.
const Prefix = "gaps/"

// Key is the repository key of a range's record.
func Key(r Range) string {
	return fmt.Sprintf("%s%08X/%s-%s.json", Prefix, r.Timeline, r.First, r.Last)
}

// ParseKey reads a record's timeline, first and last segment from its key
// (a listing needs no reads).
func ParseKey(key string) (Range, bool) {
	rest, ok := strings.CutPrefix(key, Prefix)
	if !ok {
		return Range{}, false
	}
	tl, file, ok := strings.Cut(rest, "/")
	if !ok {
		return Range{}, false
	}
	base, ok := strings.CutSuffix(file, ".json")
	if !ok {
		return Range{}, false
	}
	first, last, ok := strings.Cut(base, "-")
	if !ok {
		return Range{}, false
	}
	f, err1 := wal.ParseName(first)
	l, err2 := wal.ParseName(last)
	if err1 != nil || err2 != nil || f.Kind != wal.KindSegment || l.Kind != wal.KindSegment ||
		f.Timeline != l.Timeline || first > last || fmt.Sprintf("%08X", f.Timeline) != tl {
		return Range{}, false
	}
	return Range{Timeline: f.Timeline, First: first, Last: last}, true
}
