package walinventory

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/wal"
	"github.com/pgark/pgark/walgap"
)

// Object is one archived WAL file.
type Object struct {
	Name wal.Name
	Info storage.ObjectInfo
}

// Inventory is what one listing of wal/ found.
type Inventory struct {
	SegSize   uint32
	Segments  map[uint32]map[uint64]Object // timeline → segment number → object
	Partials  []Object
	Backups   []Object // .backup files
	Histories map[uint32]Object
	Unknown   []storage.ObjectInfo // keys that are not WAL objects
}

// Scan lists wal/ once.
func Scan(ctx context.Context, s storage.Store, segSize uint32) (*Inventory, error) {
	inv := &Inventory{SegSize: segSize, Segments: map[uint32]map[uint64]Object{}, Histories: map[uint32]Object{}}
	err := s.List(ctx, "wal/", func(oi storage.ObjectInfo) error {
		base := oi.Key[strings.LastIndex(oi.Key, "/")+1:]
		n, err := wal.ParseName(strings.TrimSuffix(base, wal.ObjectSuffix))
		if err != nil || !strings.HasSuffix(base, wal.ObjectSuffix) || wal.ObjectKey(n) != oi.Key {
			inv.Unknown = append(inv.Unknown, oi)
			return nil
		}
		o := Object{Name: n, Info: oi}
		switch n.Kind {
		case wal.KindSegment:
			no, ok := n.SegNo(segSize)
			if !ok {
				inv.Unknown = append(inv.Unknown, oi)
				return nil
			}
			if inv.Segments[n.Timeline] == nil {
				inv.Segments[n.Timeline] = map[uint64]Object{}
			}
			inv.Segments[n.Timeline][no] = o
		case wal.KindPartial:
			inv.Partials = append(inv.Partials, o)
		case wal.KindBackup:
			inv.Backups = append(inv.Backups, o)
		case wal.KindHistory:
			inv.Histories[n.Timeline] = o
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the WAL archive: %w", err)
	}
	return inv, nil
}

// NewestTimeline is the highest timeline with a segment or a history file.
func (inv *Inventory) NewestTimeline() uint32 {
	var t uint32 = 1
	for tl := range inv.Segments {
		t = max(t, tl)
	}
	for tl := range inv.Histories {
		t = max(t, tl)
	}
	return t
}

// Gap is a run of missing segments on one timeline.
type Gap struct {
	Timeline uint32 `json:"timeline"`
	First    string `json:"first"`
	Last     string `json:"last"`
	Count    int    `json:"count"`
	// Cause is CauseDropped or CausePartlyDropped when gap records of
	// archive-queue-max explain the gap, else empty (missing).
	Cause string `json:"cause,omitempty"`
}

// Window is the span a restore can reach: from the consistency point of the
// oldest backup with unbroken WAL after it, to the end of the newest
// continuously archived segment.
type Window struct {
	FromBackup string    `json:"from_backup"`
	FromTime   time.Time `json:"from_time"`
	FromLSN    string    `json:"from_lsn"`
	ToSegment  string    `json:"to_segment"`
	ToLSN      string    `json:"to_lsn"`
	// ToArchivedAt is when the last segment was stored: the latest
	// reachable time is at most this.
	ToArchivedAt time.Time `json:"to_archived_at"`
}

// Report is the state of the archive along the newest timeline.
type Report struct {
	Timeline uint32 `json:"timeline"` // the newest timeline
	SegSize  uint32 `json:"wal_segment_size"`
	// From and To are the first and last segments walked: from the oldest
	// backup's start (else the oldest segment) to the newest segment.
	From    string `json:"from,omitempty"`
	To      string `json:"to,omitempty"`
	Checked int    `json:"segments_checked"`
	Gaps    []Gap  `json:"gaps"`
	// MissingHistories are timelines above 1 that are in use (segments, or
	// the newest timeline's ancestry) without a history file.
	MissingHistories []uint32 `json:"missing_histories"`
	// UnreadableHistories could not be read (no identity for an encrypted
	// repository, or damaged); the walk then guesses switch points from
	// the segments present.
	UnreadableHistories []uint32 `json:"unreadable_histories"`
	Window              *Window  `json:"window"` // nil: nothing is recoverable
	// WindowBeforeGap, when Window is nil because of a gap, is the
	// window of older backups that ends at the segment before the gap.
	WindowBeforeGap *Window `json:"window_before_gap,omitempty"`
	// Dropped are the ranges of segments that wal-push dropped under
	// archive-queue-max (gaps/ records, merged), oldest first.
	Dropped []walgap.Range `json:"dropped"`
	// DroppedRecords are the gaps/ records as listed, for retention.
	DroppedRecords []walgap.Record `json:"-"`
	// UnverifiedDropped are the keys of gap records left out because
	// they are not signed by a trusted signer.
	UnverifiedDropped []string `json:"-"`
	// Present are the numbers of the segments on the path from From to To
	// that are archived, in order.
	Present []uint64        `json:"-"`
	Backups []*catalog.Meta `json:"-"`
	// Incomplete are the ids of backups without metadata (in progress,
	// failed, or half deleted): never used.
	Incomplete []string    `json:"-"`
	Inventory  *Inventory  `json:"-"`
	History    wal.History `json:"-"` // of Timeline (as far as known)
	// HistoryKnown says whether History was read (else switch points are
	// guessed from the segments present).
	HistoryKnown bool `json:"-"`

	begins []begin
}

// TimelineOf is the timeline recovery along the newest timeline reads
// segment number no from.
func (rep *Report) TimelineOf(no uint64) uint32 {
	for _, b := range rep.begins { // newest first
		if b.seg <= no {
			return b.tli
		}
	}
	if len(rep.begins) == 0 {
		return rep.Timeline
	}
	return rep.begins[len(rep.begins)-1].tli
}

// SegmentName is the name of segment number no on the timeline recovery
// reads it from.
func (rep *Report) SegmentName(no uint64) string {
	return wal.SegmentFileName(rep.TimelineOf(no), no, rep.SegSize)
}

// Analyze lists the repository's backups and WAL and walks the newest
// timeline's history for continuity. ids may be nil: history files then come
// from their plaintext metadata, when it is there.
func Analyze(ctx context.Context, r *repo.Repo, ids *crypto.Identities) (*Report, error) {
	c, bound, err := r.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	l, err := catalog.List(ctx, r.Store)
	if err != nil {
		return nil, err
	}
	rep := &Report{Backups: l.Backups, Incomplete: l.Incomplete}
	if !bound {
		return rep, nil // nothing archived yet
	}
	rep.SegSize = c.WalSegmentBytes
	inv, err := Scan(ctx, r.Store, c.WalSegmentBytes)
	if err != nil {
		return nil, err
	}
	rep.Inventory = inv
	if err := rep.scanDropped(ctx, r); err != nil {
		return nil, err
	}
	rep.Timeline = inv.NewestTimeline()
	for _, b := range l.Backups {
		rep.Timeline = max(rep.Timeline, b.EndTimeline)
	}
	h, ok, err := readHistory(ctx, r, inv, rep.Timeline, ids)
	if err != nil {
		return nil, err
	}
	if !ok && rep.Timeline > 1 {
		if _, present := inv.Histories[rep.Timeline]; present {
			rep.UnreadableHistories = append(rep.UnreadableHistories, rep.Timeline)
		}
	}
	rep.History, rep.HistoryKnown = h, ok
	for tl := range inv.Segments {
		if _, present := inv.Histories[tl]; tl > 1 && !present {
			rep.MissingHistories = append(rep.MissingHistories, tl)
		}
	}
	for _, e := range h.Entries {
		if _, present := inv.Histories[e.Parent]; e.Parent > 1 && !present && !contains(rep.MissingHistories, e.Parent) {
			rep.MissingHistories = append(rep.MissingHistories, e.Parent)
		}
	}
	if _, present := inv.Histories[rep.Timeline]; rep.Timeline > 1 && !present && !contains(rep.MissingHistories, rep.Timeline) {
		rep.MissingHistories = append(rep.MissingHistories, rep.Timeline)
	}
	sort.Slice(rep.MissingHistories, func(i, j int) bool { return rep.MissingHistories[i] < rep.MissingHistories[j] })

	rep.begins = timelineBegins(h, ok, inv)
	tlFor := rep.TimelineOf
	// The end: the newest segment that recovery along h would read.
	var end uint64
	found := false
	for tl, segs := range inv.Segments {
		for no := range segs {
			if tlFor(no) == tl && (!found || no > end) {
				end, found = no, true
			}
		}
	}
	onPath := func(b *catalog.Meta) bool { return h.Contains(b.EndTimeline, b.End()) || !ok }
	var start uint64
	haveStart := false
	for _, b := range l.Backups {
		if onPath(b) {
			start, haveStart = uint64(b.Start())/uint64(rep.SegSize), true
			break
		}
	}
	if !haveStart {
		for tl, segs := range inv.Segments {
			for no := range segs {
				if tlFor(no) == tl && (!haveStart || no < start) {
					start, haveStart = no, true
				}
			}
		}
	}
	if !found || !haveStart {
		return rep, nil
	}
	rep.From = wal.SegmentFileName(tlFor(start), start, rep.SegSize)
	rep.To = wal.SegmentFileName(tlFor(end), end, rep.SegSize)
	// Walk the segments present on the path, in order: the holes between
	// them are the gaps (split where the path changes timeline). Work is
	// proportional to the objects, whatever the numbering.
	for tl, segs := range inv.Segments {
		for no := range segs {
			if no >= start && no <= end && tlFor(no) == tl {
				rep.Present = append(rep.Present, no)
			}
		}
	}
	sort.Slice(rep.Present, func(i, j int) bool { return rep.Present[i] < rep.Present[j] })
	rep.Checked = int(min(end-start+1, uint64(1<<62)))
	var lastGap uint64
	haveGap := false
	addGap := func(a, b uint64) {
		for a <= b {
			tl := tlFor(a)
			stop := b
			for _, bg := range rep.begins {
				if bg.seg > a && bg.seg-1 < stop {
					stop = bg.seg - 1
				}
			}
			rep.Gaps = append(rep.Gaps, Gap{Timeline: tl, First: wal.SegmentFileName(tl, a, rep.SegSize),
				Last: wal.SegmentFileName(tl, stop, rep.SegSize), Count: int(min(stop-a+1, uint64(1<<62)))})
			lastGap, haveGap = stop, true
			a = stop + 1
		}
	}
	next := start
	for _, no := range rep.Present {
		if no > next {
			addGap(next, no-1)
		}
		next = no + 1
	}
	for _, b := range l.Backups {
		bs, be := uint64(b.Start())/uint64(rep.SegSize), uint64(b.End())/uint64(rep.SegSize)
		if !onPath(b) || (haveGap && bs <= lastGap) || be > end || bs < start {
			continue
		}
		if _, err := catalog.Chain(b, l.Lookup); err != nil {
			continue // an incremental backup whose chain is broken restores nothing
		}
		last := inv.Segments[tlFor(end)][end]
		rep.Window = &Window{
			FromBackup: b.ID, FromTime: b.StopTime, FromLSN: b.EndLSN,
			ToSegment: rep.To, ToLSN: wal.LSN((end + 1) * uint64(rep.SegSize)).String(), ToArchivedAt: last.Info.ModTime,
		}
		break
	}
	rep.annotateGaps()             // archive-queue-max: name dropped gaps
	rep.windowBeforeGap(l, onPath) // and the window that ends at a gap
	return rep, nil
}

func contains(s []uint32, v uint32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

type begin struct {
	tli uint32
	seg uint64
}

// timelineBegins returns, newest first, the segment at which each timeline
// of the path begins: from the history when it was read, else guessed from
// the segments present (each timeline begins at its lowest segment).
func timelineBegins(h wal.History, known bool, inv *Inventory) []begin {
	var bs []begin
	if known {
		prev := uint64(0)
		for _, e := range h.Entries {
			bs = append(bs, begin{e.Parent, prev})
			prev = uint64(e.Switch) / uint64(inv.SegSize)
		}
		bs = append(bs, begin{h.TLI, prev})
	} else {
		for tl, segs := range inv.Segments {
			if tl > h.TLI {
				continue
			}
			lowest := uint64(1<<63 - 1)
			for no := range segs {
				lowest = min(lowest, no)
			}
			if tl == 1 {
				lowest = 0
			}
			bs = append(bs, begin{tl, lowest})
		}
		if len(bs) == 0 {
			bs = append(bs, begin{h.TLI, 0})
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].tli > bs[j].tli })
	return bs
}

// readHistory reads timeline tli's history: from the object's plaintext
// metadata, else by decrypting it (ids). ok is false when it cannot be read.
func readHistory(ctx context.Context, r *repo.Repo, inv *Inventory, tli uint32, ids *crypto.Identities) (wal.History, bool, error) {
	if tli <= 1 {
		return wal.History{TLI: 1}, true, nil
	}
	o, present := inv.Histories[tli]
	if !present {
		return wal.History{TLI: tli}, false, nil
	}
	info, err := r.Store.Stat(ctx, o.Info.Key)
	if err != nil {
		return wal.History{TLI: tli}, false, fmt.Errorf("read %s: %w", o.Name.Raw, err)
	}
	if v, ok := info.Meta[wal.MetaTimelines]; ok {
		h, err := wal.ParseTimelinesMeta(tli, v)
		return h, err == nil, nil
	}
	if ids == nil && r.Config.Encrypted() {
		return wal.History{TLI: tli}, false, nil
	}
	h, err := TimelineHistory(ctx, r, tli, ids)
	if err != nil {
		return wal.History{TLI: tli}, false, nil
	}
	return h, true, nil
}
