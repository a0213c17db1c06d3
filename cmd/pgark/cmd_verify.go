package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/wal"
	"github.com/pgark/pgark/walgap"
	"github.com/pgark/pgark/walinventory"
)

// verifyJSON is the --json schema of `pgark verify` (format 1).
type verifyJSON struct {
	Format              int                  `json:"format"`
	Repository          string               `json:"repository"`
	OK                  bool                 `json:"ok"`
	Full                bool                 `json:"full"`
	Timeline            uint32               `json:"timeline"`
	From                string               `json:"from"`
	To                  string               `json:"to"`
	SegmentsChecked     int                  `json:"segments_checked"`
	Gaps                []walinventory.Gap   `json:"gaps"`
	MissingHistories    []uint32             `json:"missing_histories"`
	UnreadableHistories []uint32             `json:"unreadable_histories"`
	Window              *walinventory.Window `json:"window"`
	Backups             []verifyBackupJSON   `json:"backups"`
	WALProblems         []verifyWALProblem   `json:"wal_problems"`
	Incomplete          []string             `json:"incomplete"`
	// Keys groups the verified objects by the recipients they are
	// encrypted to (encrypted repositories only).
	Keys []keyUseJSON `json:"keys,omitempty"`
	// ObjectLock reports the objects whose Object Lock retention is missing
	// or shorter than the repository's (repositories with one only).
	ObjectLock *verifyLockJSON `json:"object_lock,omitempty"`

	// archive-queue-max: the dropped ranges, and the window that ends at
	// a gap when no backup starts after the last one.
	Dropped         []walgap.Range       `json:"dropped_wal"`
	WindowBeforeGap *walinventory.Window `json:"window_before_gap,omitempty"`
	// UnsignedGapRecords are gap records that trusted-signers refuse:
	// ignored, so their gaps count as missing.
	UnsignedGapRecords []string `json:"unsigned_gap_records,omitempty"`
}

type verifyBackupJSON struct {
	ID       string            `json:"id"`
	Type     string            `json:"type"`
	Parent   string            `json:"parent,omitempty"`
	OK       bool              `json:"ok"`
	Problems []catalog.Problem `json:"problems"`
}

type verifyWALProblem struct {
	WAL     string `json:"wal"`
	Problem string `json:"problem"`
}

// errVerifyFailed is verify's "something is missing or damaged" (exit 1).
var errVerifyFailed = errors.New("verification failed")

// verifyExitCode maps verify's errors: "not restorable" is 1.
func verifyExitCode(*cmdEnv) func(error) int {
	return func(err error) int {
		if errors.Is(err, errVerifyFailed) {
			return 1
		}
		return exitCode(err)
	}
}

func runVerify(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) != 0 {
		return usageErrorf("verify takes no arguments")
	}
	asJSON, err := env.s.boolean("json")
	if err != nil {
		return err
	}
	full, err := env.s.boolean("full")
	if err != nil {
		return err
	}
	r, ids, err := openRepoToRead(ctx, env)
	if err != nil {
		return err
	}
	if full && ids == nil && r.Config.Encrypted() {
		return fmt.Errorf("%w: --full on an encrypted repository needs age-identity-file", errKey)
	}
	rep, err := walinventory.Analyze(ctx, r, ids)
	if err != nil {
		return err
	}
	out := verifyJSON{Format: 1, Repository: r.Store.String(), Full: full, Timeline: rep.Timeline, From: rep.From, To: rep.To,
		SegmentsChecked: rep.Checked, Gaps: nonNil(rep.Gaps), MissingHistories: nonNil(rep.MissingHistories),
		UnreadableHistories: nonNil(rep.UnreadableHistories), Window: rep.Window,
		Dropped: nonNil(rep.Dropped), WindowBeforeGap: rep.WindowBeforeGap, UnsignedGapRecords: rep.UnverifiedDropped,
		Backups: []verifyBackupJSON{}, WALProblems: []verifyWALProblem{}, Incomplete: nonNil(rep.Incomplete)}

	listed := &catalog.Listing{Backups: rep.Backups}
	selected := rep.Backups
	if id := env.s.str("backup"); id != "" {
		m, err := catalog.ReadMeta(ctx, r.Store, id)
		if err != nil {
			return usageErrorf("%v", err)
		}
		// The backup and the chain it is restored from.
		selected = []*catalog.Meta{m}
		if chain, err := catalog.Chain(m, listed.Lookup); err == nil {
			selected = chain
		}
	}
	ownOK := map[string]bool{}
	for _, m := range selected {
		start := time.Now()
		probs, err := catalog.Verify(ctx, r, m, ids, full)
		if err != nil {
			return err
		}
		env.log.Debug("backup verified", "backup", m.ID, "problems", len(probs), "ms", time.Since(start).Milliseconds())
		ownOK[m.ID] = len(probs) == 0
		out.Backups = append(out.Backups, verifyBackupJSON{ID: m.ID, Type: m.Kind(), Parent: m.Parent, Problems: probs})
	}
	// An incremental backup restores only with its whole chain: a missing
	// or damaged parent makes every descendant unrestorable.
	for i, m := range selected {
		if m.Parent == "" {
			continue
		}
		chain, err := catalog.Chain(m, listed.Lookup)
		if err != nil {
			out.Backups[i].Problems = append(out.Backups[i].Problems, catalog.Problem{Backup: m.ID, What: err.Error()})
			continue
		}
		for _, a := range chain[:len(chain)-1] {
			if ok, checked := ownOK[a.ID]; checked && !ok {
				out.Backups[i].Problems = append(out.Backups[i].Problems, catalog.Problem{Backup: m.ID,
					What: fmt.Sprintf("not restorable: it needs backup %s (its chain), which is damaged", a.ID)})
			}
		}
	}
	for i := range out.Backups {
		out.Backups[i].OK = len(out.Backups[i].Problems) == 0
		out.Backups[i].Problems = nonNil(out.Backups[i].Problems)
	}

	if full && rep.Inventory != nil && rep.From != "" {
		c, _, err := r.Cluster(ctx)
		if err != nil {
			return err
		}
		check := func(name string) error {
			err := wal.VerifyObject(ctx, r, name, c.SystemID, c.WalSegmentBytes, ids)
			switch {
			case err == nil || storage.IsNotFound(err): // gaps are reported above
				return nil
			case errors.Is(err, wal.ErrVerify):
				out.WALProblems = append(out.WALProblems, verifyWALProblem{WAL: name, Problem: err.Error()})
				return nil
			}
			return fmt.Errorf("verify %s: %w", name, err)
		}
		for tl := range rep.Inventory.Histories {
			if err := check(fmt.Sprintf("%08X.history", tl)); err != nil {
				return err
			}
		}
		for _, no := range rep.Present {
			name := rep.SegmentName(no)
			if err := check(name); err != nil {
				return err
			}
		}
	}

	keysOK := true
	if r.Config.Encrypted() {
		if out.Keys, err = keyUse(ctx, r, rep, selected, ids); err != nil {
			return err
		}
		for _, k := range out.Keys {
			keysOK = keysOK && (k.Readable == nil || *k.Readable)
		}
	}
	if out.ObjectLock, err = verifyRetention(ctx, r); err != nil {
		return err
	}
	out.OK = failingGaps(out.Gaps, out.Window) == 0 && len(out.MissingHistories) == 0 && len(out.WALProblems) == 0 && out.Window != nil && keysOK &&
		(out.ObjectLock == nil || len(out.ObjectLock.Problems) == 0)
	for _, b := range out.Backups {
		out.OK = out.OK && b.OK
	}
	if asJSON {
		if err := printJSON(env.stdout, out); err != nil {
			return err
		}
	} else {
		printVerify(env.stdout, &out)
	}
	if !out.OK {
		return fmt.Errorf("%w: something needed for recovery is missing or damaged (see the report)", errVerifyFailed)
	}
	return nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func printVerify(w io.Writer, v *verifyJSON) {
	mode := "presence and sizes"
	if v.Full {
		mode = "full content"
	}
	fmt.Fprintf(w, "repository %s (%s)\n", v.Repository, mode)
	if v.From == "" {
		fmt.Fprintf(w, "WAL: nothing archived on timeline %d\n", v.Timeline)
	} else {
		fmt.Fprintf(w, "WAL: timeline %d, %s .. %s, %d segments walked\n", v.Timeline, v.From, v.To, v.SegmentsChecked)
	}
	if len(v.Gaps) == 0 {
		fmt.Fprintln(w, "  continuity: OK")
	}
	for _, g := range v.Gaps {
		cause := ""
		if g.Cause != "" {
			cause = ", " + g.Cause
		}
		if g.Count == 1 {
			fmt.Fprintf(w, "  MISSING %s (timeline %d%s)\n", g.First, g.Timeline, cause)
		} else {
			fmt.Fprintf(w, "  MISSING %s .. %s (%d segments, timeline %d%s)\n", g.First, g.Last, g.Count, g.Timeline, cause)
		}
	}
	for _, tl := range v.MissingHistories {
		fmt.Fprintf(w, "  MISSING history file %08X.history (timeline %d)\n", tl, tl)
	}
	for _, tl := range v.UnreadableHistories {
		fmt.Fprintf(w, "  warning: %08X.history is not readable without the identity; switch points were guessed from the segments present\n", tl)
	}
	for _, p := range v.WALProblems {
		fmt.Fprintf(w, "  DAMAGED %s: %s\n", p.WAL, p.Problem)
	}
	fmt.Fprintf(w, "backups: %d checked\n", len(v.Backups))
	for _, b := range v.Backups {
		if b.OK {
			fmt.Fprintf(w, "  %s OK\n", b.ID)
			continue
		}
		for _, p := range b.Problems {
			if p.Object != "" {
				fmt.Fprintf(w, "  %s DAMAGED %s: %s\n", b.ID, p.Object, p.What)
			} else {
				fmt.Fprintf(w, "  %s DAMAGED: %s\n", b.ID, p.What)
			}
		}
	}
	for _, id := range v.Incomplete {
		fmt.Fprintf(w, "  incomplete (never usable; in progress, failed or partly deleted): %s\n", id)
	}
	for _, k := range v.Keys {
		who := "recipients not recorded (written before pgark recorded them)"
		if len(k.Recipients) > 0 {
			who = "an identity of " + strings.Join(k.Recipients, " or ")
		}
		state := ""
		if k.Readable != nil && *k.Readable {
			state = " (the identity file has it)"
		} else if k.Readable != nil {
			state = " -- NOT READABLE with the identity file"
		}
		fmt.Fprintf(w, "keys: %d objects (%s .. %s) need %s%s\n", k.Objects, k.First, k.Last, who, state)
	}
	printVerifyLock(w, v.ObjectLock)
	if v.Window == nil {
		fmt.Fprintln(w, "recoverable window: NONE (no backup with unbroken WAL after it)")
	} else {
		fmt.Fprintf(w, "recoverable window: from %s (backup %s, LSN %s) to LSN %s (end of %s, archived %s)\n",
			v.Window.FromTime.UTC().Format(time.RFC3339), v.Window.FromBackup, v.Window.FromLSN,
			v.Window.ToLSN, v.Window.ToSegment, v.Window.ToArchivedAt.UTC().Format(time.RFC3339))
	}
	printDropped(w, v.Dropped, v.WindowBeforeGap, v.UnsignedGapRecords) // archive-queue-max
	if v.OK {
		fmt.Fprintln(w, "result: OK")
	} else {
		fmt.Fprintln(w, "result: FAILED")
	}
}

// keyUseJSON is a group of objects encrypted to one set of recipients.
type keyUseJSON struct {
	// Recipients are the fingerprints the objects are encrypted to: one of
	// their identities reads them. Empty when not recorded.
	Recipients []string `json:"recipients"`
	Objects    int      `json:"objects"`
	First      string   `json:"first"`
	Last       string   `json:"last"`
	// Readable says whether the loaded age-identity-file reads them
	// (absent without one, or when the recipients are not recorded).
	Readable *bool `json:"readable,omitempty"`
}

// keyUse groups the backups and the WAL that verify looked at by the
// recipients they are encrypted to: backups from their metadata, WAL
// objects from their stored metadata (one HEAD each, several at a time).
func keyUse(ctx context.Context, r *repo.Repo, rep *walinventory.Report, backups []*catalog.Meta, ids *crypto.Identities) ([]keyUseJSON, error) {
	type item struct{ name, set string }
	var items []item
	for _, m := range backups {
		items = append(items, item{"backup " + m.ID, strings.Join(m.Recipients, ",")})
	}
	var names []string
	if rep.Inventory != nil {
		for tl := range rep.Inventory.Histories {
			names = append(names, fmt.Sprintf("%08X.history", tl))
		}
		for _, no := range rep.Present {
			names = append(names, rep.SegmentName(no))
		}
	}
	slices.Sort(names)
	sets := make([]string, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			n, err := wal.ParseName(name)
			if err != nil {
				errs[i] = err
				return
			}
			info, err := r.Store.Stat(ctx, wal.ObjectKey(n))
			switch {
			case storage.IsNotFound(err): // a gap, reported above
			case err != nil:
				errs[i] = fmt.Errorf("read the recipients of %s: %w", name, err)
			default:
				sets[i] = info.Meta[storage.MetaRecipients]
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err // the first; the others are alike
		}
	}
	for i, name := range names {
		items = append(items, item{name, sets[i]})
	}
	var out []keyUseJSON
	index := map[string]int{}
	for _, it := range items {
		i, ok := index[it.set]
		if !ok {
			k := keyUseJSON{Recipients: []string{}, First: it.name}
			if it.set != "" {
				k.Recipients = strings.Split(it.set, ",")
				if ids != nil {
					readable := false
					for _, fp := range k.Recipients {
						readable = readable || slices.Contains(ids.Fingerprints(), fp)
					}
					k.Readable = &readable
				}
			}
			i = len(out)
			index[it.set] = i
			out = append(out, k)
		}
		out[i].Objects++
		out[i].Last = it.name
	}
	return out, nil
}
