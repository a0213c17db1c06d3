package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/drill"
	"github.com/pgark/pgark/health"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/restore"
	"github.com/pgark/pgark/restore/recoveryconf"
	"github.com/pgark/pgark/scratch"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/wal"
	"github.com/pgark/pgark/walinventory"
)

// drillFailedError is a drill that ran and failed a check (exit exitDrillFailed).
type drillFailedError struct{ msg string }

func (e *drillFailedError) Error() string { return e.msg }

// drillExitCodes maps a failed check to exitDrillFailed, the rest as usual.
func drillExitCodes(*cmdEnv) func(error) int {
	return func(err error) int {
		if errors.As(err, new(*drillFailedError)) {
			return exitDrillFailed
		}
		return exitCode(err)
	}
}

// drillRun is one drill in progress.
type drillRun struct {
	env    *cmdEnv
	rec    *drill.Record
	srv    *scratch.Server
	keep   bool
	plan   *restore.Plan
	binDir string
}

func runDrill(ctx context.Context, env *cmdEnv, args []string) error {
	s := env.s
	id := "latest"
	switch len(args) {
	case 0:
	case 1:
		id = args[0]
	default:
		return usageErrorf("drill takes at most one argument: a backup id (or latest)")
	}
	if id != "latest" && !catalog.ValidID(id) {
		return usageErrorf("%q is not a backup id (like 20261124T154500Z) or latest", id)
	}
	asJSON, err := s.boolean("json")
	if err != nil {
		return err
	}
	keep, err := s.boolean("keep")
	if err != nil {
		return err
	}
	force, err := s.boolean("force")
	if err != nil {
		return err
	}
	amcheck, err := s.boolean("amcheck")
	if err != nil {
		return err
	}
	var queries []drill.Query
	if f := s.str("check-sql"); f != "" {
		if queries, err = drill.ReadCheckSQL(f); err != nil {
			return usageErrorf("check-sql: %v", err)
		}
	}
	ro, tgt, err := recoveryTargets(s)
	if err != nil {
		return err
	}
	target := targetLabel(ro)
	if target == "" {
		target = "end of archive"
	} else {
		ro.TargetAction = "promote"
	}
	owner, markers, base, err := scratchPlaces(env, &ro)
	if err != nil {
		return err
	}
	var signer *crypto.Signer
	if f := s.str("signing-key-file"); f != "" {
		if signer, err = crypto.LoadSigner(f); err != nil {
			return fmt.Errorf("%w: %w", errKey, err)
		}
	}

	// A drill killed with -9 left a server and a directory: clean them up first.
	if err := cleanStaleScratch(ctx, env, markers, force, true); err != nil {
		return err
	}

	r, ids, err := openRepoFallback(ctx, env)
	if err != nil {
		return err
	}
	plan, err := restore.NewPlan(ctx, r, id, ro.TargetTimeline, tgt, ids)
	if err != nil {
		return err
	}
	m := plan.Backup
	binDir, err := scratch.FindBinDir(ctx, m.PGMajor, s.str("pg-bin"))
	if err != nil {
		return err
	}

	start := time.Now().UTC()
	host, _ := os.Hostname()
	rec := &drill.Record{Format: drill.Format, ID: repo.NewRunID(start), Host: host, Version: version, StartedAt: start,
		Backup: m.ID, BackupStopLSN: m.EndLSN, PGMajor: m.PGMajor, Target: target, DataBytes: m.RawBytes, Databases: []string{}, Checks: []drill.Check{}}
	srv, err := newScratch(env, plan, scratchSpec{what: "a drill", dir: s.str("scratch"), base: base, name: rec.ID,
		markers: markers, binDir: binDir, owner: owner, ro: ro})
	if err != nil {
		return err
	}
	dir := srv.Dir()
	d := &drillRun{env: env, rec: rec, srv: srv, keep: keep, plan: plan, binDir: binDir}
	runErr := d.run(ctx, r, ids, ro, owner, queries, amcheck)

	// Always clean up, interrupted or not.
	cctx := context.WithoutCancel(ctx)
	if cerr := srv.Close(cctx, keep); cerr != nil {
		env.log.Error("cleaning up the scratch server", "dir", dir, "err", cerr)
	} else if keep {
		env.log.Info("kept the scratch directory (--keep); remove it when done", "dir", dir, "data_dir", srv.DataDir(), "log", srv.LogFile())
	}
	if ctx.Err() != nil {
		return fmt.Errorf("drill interrupted: %w", ctx.Err()) // no record: nothing was learnt
	}
	rec.FinishedAt = time.Now().UTC()
	rec.TotalSeconds = seconds(rec.FinishedAt.Sub(start))
	rec.RecoverySeconds = math.Round((rec.RestoreSeconds+rec.ReplaySeconds)*1000) / 1000
	if runErr != nil {
		rec.Status, rec.Error = drill.Failed, storage.OneLine(runErr.Error())
	} else {
		rec.Status = drill.Passed
	}
	if perr := putDrillRecord(cctx, env, rec, signer); perr != nil {
		env.log.Error("recording the drill", "err", perr)
		if runErr == nil {
			runErr = perr
		}
	}
	if err := d.print(asJSON); err != nil {
		return err
	}
	return runErr
}

// run restores, starts, waits and checks; it fills d.rec. An error from a check is a
// *drillFailedError; others (restore, storage) keep their kind for the exit code.
func (d *drillRun) run(ctx context.Context, r *repo.Repo, ids *crypto.Identities, ro recoveryconf.Options, owner *restore.Owner, queries []drill.Query, amcheck bool) error {
	env, rec, srv, m := d.env, d.rec, d.srv, d.plan.Backup
	check := func(c drill.Check) bool {
		rec.Checks = append(rec.Checks, c)
		return c.Status != drill.Failed
	}
	failCheck := func(phase string) error {
		rec.Phase = phase
		var msgs []string
		for _, c := range rec.Checks {
			if c.Status == drill.Failed {
				msgs = append(msgs, c.Name+": "+c.Message)
			}
		}
		return &drillFailedError{"drill failed: " + strings.Join(msgs, "; ")}
	}

	// Restore.
	env.log.Info("drill: restoring", "backup", m.ID, "scratch", srv.Dir(), "target", rec.Target)
	t0 := time.Now()
	jobs := 2
	if j, err := env.s.integer("jobs"); err == nil && j > 0 {
		jobs = j
	}
	err := restoreScratch(ctx, env, r, ids, d.plan, srv, ro, owner, jobs)
	rec.RestoreSeconds = seconds(time.Since(t0))
	if err != nil {
		rec.Phase = drill.PhaseRestore
		return fmt.Errorf("drill: %w", err)
	}
	t1 := time.Now()
	ok := check(drill.VerifyBackup(ctx, scratch.Tool(ctx, m.PGMajor, d.binDir, "pg_verifybackup"), srv.DataDir()))
	checkSecs := seconds(time.Since(t1))
	if !ok {
		rec.CheckSeconds = checkSecs
		return failCheck(drill.PhaseRestore)
	}

	// Replay. The archive's end is read before: segments archived meanwhile (a busy
	// primary) may or may not be replayed, those before must be.
	lastSeg, lastErr := d.lastArchived(ctx, r)
	env.log.Info("drill: starting the scratch server and replaying WAL", "socket_dir", srv.SocketDir())
	t2 := time.Now()
	err = srv.Start(ctx)
	if err == nil {
		err = srv.WaitPromoted(ctx)
	}
	rec.ReplaySeconds = seconds(time.Since(t2))
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		check(drill.Check{Name: drill.CheckRecovery, Status: drill.Failed, Message: storage.OneLine(err.Error())})
		rec.CheckSeconds = checkSecs
		return failCheck(drill.PhaseReplay)
	}
	check(drill.Check{Name: drill.CheckRecovery, Status: drill.Passed, Message: "recovery ended and the server promoted"})

	// Checks.
	t3 := time.Now()
	defer func() { rec.CheckSeconds = checkSecs + seconds(time.Since(t3)) }()
	info, err := srv.Recovery(ctx)
	if err != nil {
		check(drill.Check{Name: drill.CheckTarget, Status: drill.Failed, Message: storage.OneLine(err.Error())})
		return failCheck(drill.PhaseCheck)
	}
	rec.ReachedLSN, rec.ReachedTimeline, rec.Databases = info.LSN, info.Timeline, info.Databases
	if !info.Time.IsZero() {
		t := info.Time
		rec.ReachedTime = &t
	}
	reached, _ := wal.ParseLSN(info.LSN)
	if segSize := uint64(m.WalSegmentBytes); segSize > 0 && reached > 0 {
		rec.WALSegments = int(uint64(reached-1)/segSize-uint64(m.Start())/segSize) + 1
	}
	check(d.targetCheck(ro, reached, lastSeg, lastErr))
	check(drill.ConnectAll(ctx, info.Databases, srv.ConnString))
	if len(queries) > 0 {
		check(drill.RunCheckSQL(ctx, queries, srv.ConnString))
	}
	if amcheck {
		check(drill.AmCheck(ctx, scratch.Tool(ctx, m.PGMajor, d.binDir, "pg_amcheck"), srv.SocketDir(), srv.Port(), "postgres"))
	}
	if len(rec.FailedChecks()) > 0 {
		return failCheck(drill.PhaseCheck)
	}
	return nil
}

// lastArchived is the newest archived segment on the timeline recovery follows (0: none).
func (d *drillRun) lastArchived(ctx context.Context, r *repo.Repo) (uint64, error) {
	inv, err := walinventory.Scan(ctx, r.Store, d.plan.Backup.WalSegmentBytes)
	if err != nil {
		return 0, err
	}
	var last uint64
	for no := range inv.Segments[d.plan.Timeline.TLI] {
		last = max(last, no)
	}
	return last, nil
}

// targetCheck checks that recovery reached its target: the end of the archive on the
// timeline it followed (lastSeg, read before recovery started), or the LSN given.
func (d *drillRun) targetCheck(ro recoveryconf.Options, reached wal.LSN, lastSeg uint64, lastErr error) drill.Check {
	m := d.plan.Backup
	switch {
	case ro.TargetLSN != "":
		want, _ := wal.ParseLSN(ro.TargetLSN)
		if reached < want && (ro.TargetInclusive == nil || *ro.TargetInclusive) {
			return drill.Check{Name: drill.CheckTarget, Status: drill.Failed, Message: fmt.Sprintf("recovery stopped at LSN %s, before the target %s", reached, want)}
		}
		return drill.Check{Name: drill.CheckTarget, Status: drill.Passed, Message: fmt.Sprintf("recovery reached LSN %s (target %s)", reached, want)}
	case d.rec.Target != "end of archive":
		// PostgreSQL stops with "recovery ended before configured recovery target was
		// reached" otherwise (the recovery check).
		return drill.Check{Name: drill.CheckTarget, Status: drill.Passed, Message: fmt.Sprintf("recovery reached the %s at LSN %s", d.rec.Target, reached)}
	}
	if reached < m.End() {
		return drill.Check{Name: drill.CheckTarget, Status: drill.Failed, Message: fmt.Sprintf("recovery stopped at LSN %s, before the backup's consistency point %s", reached, m.EndLSN)}
	}
	if lastErr != nil {
		return drill.Check{Name: drill.CheckTarget, Status: drill.Failed, Message: storage.OneLine(lastErr.Error())}
	}
	tli, last := d.plan.Timeline.TLI, lastSeg
	if last == 0 {
		return drill.Check{Name: drill.CheckTarget, Status: drill.Passed, Message: fmt.Sprintf("recovery reached LSN %s (timeline %d has no archived segment yet to compare with)", reached, tli)}
	}
	return drill.ReachedEnd(reached, tli, last, m.WalSegmentBytes)
}

func (d *drillRun) print(asJSON bool) error {
	env := d.env
	if asJSON {
		if err := printJSON(env.stdout, d.rec); err != nil {
			return err
		}
	} else if err := drill.WriteText(env.stdout, d.rec); err != nil {
		return err
	}
	if file := env.s.str("prometheus-file"); file != "" {
		if err := writePromFile(file, func(w io.Writer) error { return drill.WritePrometheus(w, d.rec) }); err != nil {
			return err
		}
	}
	return nil
}

func seconds(d time.Duration) float64 { return float64(d.Milliseconds()) / 1000 }

// defaultScratchBase is where the scratch directory goes without --scratch: the spool
// base; as root without spool-dir, the server's user's own cache directory
// (~postgres/.cache/pgark), which that user can reach, unlike root's home.
func defaultScratchBase(env *cmdEnv, base string, owner *restore.Owner) string {
	if owner == nil || os.Geteuid() != 0 || env.s.str("spool-dir") != "" {
		return base
	}
	u, err := user.LookupId(strconv.Itoa(owner.UID))
	if err != nil || !filepath.IsAbs(u.HomeDir) || u.HomeDir == "/" {
		return base
	}
	return filepath.Join(u.HomeDir, ".cache", "pgark")
}

// drillOwner is the user that runs the scratch server: --owner, else (as root) postgres.
func drillOwner(spec string) (*restore.Owner, error) {
	if spec == "" && os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, usageErrorf("running as root: give --owner USER (the user that runs the scratch server; there is no postgres user)")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &restore.Owner{UID: uid, GID: gid}, nil
	}
	return restoreOwner(spec)
}

var tablespaceVersionDir = regexp.MustCompile(`^PG_\d+_\d+$`)

// insideDataDir returns the data directory or tablespace that holds dir (or one of its
// parents), "" when none does: a PG_VERSION file or a PG_<major>_<catversion> directory.
func insideDataDir(dir string) string {
	for p := dir; ; p = filepath.Dir(p) {
		if st, err := os.Stat(filepath.Join(p, "PG_VERSION")); err == nil && st.Mode().IsRegular() {
			return "the data directory " + p
		}
		if ents, err := os.ReadDir(p); err == nil {
			for _, e := range ents {
				if e.IsDir() && tablespaceVersionDir.MatchString(e.Name()) {
					return "the tablespace " + p
				}
			}
		}
		if filepath.Base(p) != "" && tablespaceVersionDir.MatchString(filepath.Base(p)) {
			return "the tablespace " + filepath.Dir(p)
		}
		if p == "/" || p == "." {
			return ""
		}
	}
}

// lastDrills reads the drill records for check: the last drill and the last that passed.
func lastDrills(ctx context.Context, r *repo.Repo, env *cmdEnv) (last, lastPassed *health.DrillSummary, err error) {
	recs, bad, err := drill.List(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	for _, b := range bad {
		env.log.Warn("a drill record cannot be used", "err", b)
	}
	l, lp := drill.Latest(recs)
	return drillSummary(l), drillSummary(lp), nil
}

func drillSummary(r *drill.Record) *health.DrillSummary {
	if r == nil {
		return nil
	}
	return &health.DrillSummary{ID: r.ID, Passed: r.Passed(), FinishedAt: r.FinishedAt, Backup: r.Backup, Error: r.Error, RecoverySeconds: r.RecoverySeconds}
}

// listDrillsJSON is the --json schema of `pgark list --drills` (format 1).
type listDrillsJSON struct {
	Format     int             `json:"format"`
	Repository string          `json:"repository"`
	Drills     []*drill.Record `json:"drills"`
	Unreadable []string        `json:"unreadable"`
}

// runListDrills lists the recorded drills, oldest first.
func runListDrills(ctx context.Context, env *cmdEnv, asJSON bool) error {
	r, err := openRepo(ctx, env)
	if err != nil {
		return err
	}
	recs, bad, err := drill.List(ctx, r)
	if err != nil {
		return err
	}
	out := listDrillsJSON{Format: 1, Repository: r.Store.String(), Drills: recs, Unreadable: bad}
	if out.Drills == nil {
		out.Drills = []*drill.Record{}
	}
	if out.Unreadable == nil {
		out.Unreadable = []string{}
	}
	if asJSON {
		return printJSON(env.stdout, out)
	}
	w := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "DRILL\tSTATUS\tBACKUP\tTARGET\tREACHED LSN\tRECOVERY\tTOTAL\tSEGMENTS\tHOST\tPROBLEM\n")
	for _, d := range recs {
		problem := d.Error
		if problem == "" {
			problem = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%.1fs\t%.1fs\t%d\t%s\t%s\n", d.ID, d.Status, d.Backup, d.Target, orDash(d.ReachedLSN),
			d.RecoverySeconds, d.TotalSeconds, d.WALSegments, d.Host, problem)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(recs) == 0 {
		fmt.Fprintln(env.stdout, "(no restore drills recorded: run pgark drill)")
	}
	for _, b := range bad {
		fmt.Fprintf(env.stdout, "unreadable: %s\n", b)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// putDrillRecord records a drill in the repositories it read (with repo2
// and no --repo-index, both), in their live view even when the drill read
// them as of a past time.
func putDrillRecord(ctx context.Context, env *cmdEnv, rec *drill.Record, signer *crypto.Signer) error {
	w := *env
	w.s = &settings{vals: maps.Clone(env.s.vals), src: maps.Clone(env.s.src)}
	delete(w.s.vals, "repo-target-time")
	// The repositories the drill read: --repo-index, else every one.
	idxs, err := repoIndexes(env)
	if err != nil {
		return err
	}
	var errs []error
	for _, idx := range idxs {
		// openRepo: the repository's write mode and Object Lock retention.
		r, err := openRepo(ctx, repoEnv(&w, idx))
		if err == nil {
			err = drill.Put(ctx, r.Store, rec, signer)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("repository %d: %w", idx, err))
		}
	}
	return errors.Join(errs...)
}
