package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgark/pgark/internal/human"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/wal"
	"github.com/pgark/pgark/walgap"
	"github.com/pgark/pgark/walinventory"
)

// listJSON is the --json schema of `pgark list` (format 1).
type listJSON struct {
	Format     int              `json:"format"`
	Repository string           `json:"repository"`
	Backups    []listBackupJSON `json:"backups"`
	Incomplete []string         `json:"incomplete"`
	WAL        []timelineJSON   `json:"wal"`
	// DroppedWAL are the ranges wal-push dropped under archive-queue-max;
	// when there are any, the recoverable window, or the one that ends at
	// the gap (see verify).
	DroppedWAL      []walgap.Range       `json:"dropped_wal"`
	Window          *walinventory.Window `json:"window,omitempty"`
	WindowBeforeGap *walinventory.Window `json:"window_before_gap,omitempty"`
}

type listBackupJSON struct {
	ID              string    `json:"id"`
	Type            string    `json:"type"`             // full, incr or diff
	Parent          string    `json:"parent,omitempty"` // the backup an incr or diff was taken against
	Method          string    `json:"method,omitempty"` // incr, diff: block or file
	Label           string    `json:"label"`
	StartTime       time.Time `json:"start_time"`
	StopTime        time.Time `json:"stop_time"`
	DurationSeconds float64   `json:"duration_seconds"`
	StartLSN        string    `json:"start_lsn"`
	EndLSN          string    `json:"end_lsn"`
	Timeline        uint32    `json:"timeline"`
	PGVersionNum    int       `json:"pg_version_num"`
	RawBytes        int64     `json:"raw_bytes"`
	StoredBytes     int64     `json:"stored_bytes"` // what this backup alone added to the repository
	FromStandby     bool      `json:"from_standby"`
	WALFirst        string    `json:"wal_first"`
	WALLast         string    `json:"wal_last"`
}

type timelineJSON struct {
	Timeline uint32 `json:"timeline"`
	First    string `json:"first_segment"`
	Last     string `json:"last_segment"`
	Segments int    `json:"segments"`
	Partial  int    `json:"partial_segments"`
	History  bool   `json:"history_file"`
}

func runList(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) != 0 {
		return usageErrorf("list takes no arguments")
	}
	asJSON, err := env.s.boolean("json")
	if err != nil {
		return err
	}
	if dumps, err := env.s.boolean("dumps"); err != nil || dumps {
		if err != nil {
			return err
		}
		return runListDumps(ctx, env, asJSON)
	}
	if drills, err := env.s.boolean("drills"); err != nil || drills {
		if err != nil {
			return err
		}
		return runListDrills(ctx, env, asJSON) // cmd_drill.go
	}
	r, err := openRepo(ctx, env)
	if err != nil {
		return err
	}
	l, err := catalog.List(ctx, r.Store)
	if err != nil {
		return err
	}
	tls, err := walTimelines(ctx, r.Store)
	if err != nil {
		return err
	}
	out := listJSON{Format: 1, Repository: r.Store.String(), Incomplete: l.Incomplete, WAL: tls, Backups: []listBackupJSON{}}
	if out.DroppedWAL, out.Window, out.WindowBeforeGap, err = listDropped(ctx, r); err != nil { // archive-queue-max
		return err
	}
	if out.Incomplete == nil {
		out.Incomplete = []string{}
	}
	for _, m := range l.Backups {
		out.Backups = append(out.Backups, listBackupJSON{
			ID: m.ID, Type: m.Kind(), Parent: m.Parent, Method: method(m), Label: m.Label, StartTime: m.StartTime, StopTime: m.StopTime,
			DurationSeconds: m.StopTime.Sub(m.StartTime).Round(time.Second).Seconds(),
			StartLSN:        m.StartLSN, EndLSN: m.EndLSN, Timeline: m.EndTimeline, PGVersionNum: m.PGVersionNum,
			RawBytes: m.RawBytes, StoredBytes: m.StoredBytes, FromStandby: m.FromStandby,
			WALFirst: m.WALFirst, WALLast: m.WALLast,
		})
	}
	if asJSON {
		return printJSON(env.stdout, out)
	}
	w := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "BACKUP\tTYPE\tPARENT\tSTART (UTC)\tSTOP (UTC)\tDURATION\tLSN\tTL\tPG\tSIZE\tSTORED\n")
	for _, b := range out.Backups {
		parent := b.Parent
		if parent == "" {
			parent = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s-%s\t%d\t%d\t%s\t%s\n", b.ID, b.Type, parent,
			b.StartTime.UTC().Format("2006-01-02 15:04:05"), b.StopTime.UTC().Format("2006-01-02 15:04:05"),
			time.Duration(b.DurationSeconds)*time.Second, b.StartLSN, b.EndLSN, b.Timeline, b.PGVersionNum/10000,
			humanBytes(b.RawBytes), humanBytes(b.StoredBytes))
	}
	w.Flush()
	if len(out.Backups) == 0 {
		fmt.Fprintln(env.stdout, "(no complete backups)")
	}
	for _, id := range out.Incomplete {
		fmt.Fprintf(env.stdout, "incomplete (never usable; in progress or failed): %s\n", id)
	}
	fmt.Fprintln(env.stdout)
	w = tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "TIMELINE\tFIRST SEGMENT\tLAST SEGMENT\tSEGMENTS\tHISTORY\n")
	for _, t := range tls {
		fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%v\n", t.Timeline, t.First, t.Last, t.Segments, t.History)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	printListDropped(env.stdout, out.DroppedWAL, out.Window, out.WindowBeforeGap)
	return nil
}

// walTimelines summarises the archive per timeline (one LIST of wal/).
func walTimelines(ctx context.Context, s storage.Store) ([]timelineJSON, error) {
	var out []timelineJSON
	idx := map[uint32]int{}
	err := s.List(ctx, "wal/", func(oi storage.ObjectInfo) error {
		base := oi.Key[strings.LastIndex(oi.Key, "/")+1:]
		n, err := wal.ParseName(strings.TrimSuffix(base, wal.ObjectSuffix))
		if err != nil {
			return nil
		}
		i, ok := idx[n.Timeline]
		if !ok {
			idx[n.Timeline] = len(out)
			out = append(out, timelineJSON{Timeline: n.Timeline})
			i = len(out) - 1
		}
		t := &out[i]
		switch n.Kind {
		case wal.KindHistory:
			t.History = true
		case wal.KindPartial:
			t.Partial++
		case wal.KindSegment:
			if t.First == "" || n.Raw < t.First {
				t.First = n.Raw
			}
			if n.Raw > t.Last {
				t.Last = n.Raw
			}
			t.Segments++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list WAL: %w", err)
	}
	if out == nil {
		out = []timelineJSON{}
	}
	return out, nil
}

func humanBytes(n int64) string { return human.Bytes(n) }

// method is how an incremental backup was taken ("" for a full one).
func method(m *catalog.Meta) string {
	switch {
	case m.Kind() == catalog.TypeFull:
		return ""
	case m.Method == "":
		return catalog.MethodBlock
	}
	return m.Method
}
