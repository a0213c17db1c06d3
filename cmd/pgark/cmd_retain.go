package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/retention"
	"github.com/pgark/pgark/walinventory"
)

type retainJSON struct {
	Format     int                `json:"format"`
	Repository string             `json:"repository"`
	DryRun     bool               `json:"dry_run"`
	KeepLast   int                `json:"keep_last"`
	KeepWithin string             `json:"keep_within"`
	Timeline   uint32             `json:"timeline"`
	Backups    []retainBackupJSON `json:"backups"`
	Leftovers  []string           `json:"incomplete_deleted"`
	WAL        retainWALJSON      `json:"wal"`
	Dumps      *retainDumpsJSON   `json:"dumps,omitempty"`
	// ObjectLock is what is kept only because Object Lock forbids its
	// deletion yet (repositories with Object Lock only).
	ObjectLock *retainLockJSON `json:"object_lock,omitempty"`
}

type retainBackupJSON struct {
	ID       string    `json:"id"`
	StopTime time.Time `json:"stop_time"`
	Timeline uint32    `json:"timeline"`
	StartLSN string    `json:"start_lsn"`
	EndLSN   string    `json:"end_lsn"`
	Keep     bool      `json:"keep"`
	Why      string    `json:"why"`
}

type retainWALJSON struct {
	KeepFrom    string `json:"keep_from"`
	Deleted     int    `json:"deleted"`
	DeleteFirst string `json:"delete_first,omitempty"`
	DeleteLast  string `json:"delete_last,omitempty"`
	Kept        int    `json:"kept"`

	// GapRecords are the archive-queue-max gap records deleted with the WAL.
	GapRecords []string `json:"gap_records,omitempty"`
}

func runRetain(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) != 0 {
		return usageErrorf("retain takes no arguments (the policy: --keep-last, --keep-within)")
	}
	asJSON, err := env.s.boolean("json")
	if err != nil {
		return err
	}
	dry, err := env.s.boolean("dry-run")
	if err != nil {
		return err
	}
	p := retention.Policy{Now: time.Now()}
	if p.KeepLast, err = nonNegative(env, "keep-last"); err != nil {
		return err
	}
	if v := env.s.str("keep-within"); v != "" {
		if p.KeepWithin, err = retention.ParseDuration(v); err != nil {
			return usageErrorf("keep-within (%s): %v", env.s.src["keep-within"], err)
		}
	}
	dp, err := dumpPolicy(env)
	if err != nil {
		return err
	}
	if p.KeepLast == 0 && p.KeepWithin == 0 {
		if dp.Set() {
			return runRetainDumpsOnly(ctx, env, dp, asJSON, dry)
		}
		return usageErrorf("no retention policy: set --keep-last and/or --keep-within (or keep-last / keep-within in the config file), or for dumps --keep-dumps and/or --keep-dumps-within")
	}
	r, ids, err := openRepoToRead(ctx, env)
	if err != nil {
		return err
	}
	p.ObjectLock = r.Config.ObjectLock.Period()
	dp.ObjectLock = p.ObjectLock
	if dry {
		// Reads only: no lock.
		return planRetain(ctx, env, r, ids, p, dp, asJSON, dry)
	}
	return withRepoLock(ctx, env, r, "retain", func(ctx context.Context) error {
		return planRetain(ctx, env, r, ids, p, dp, asJSON, dry)
	})
}

// planRetain plans the deletions, prints the plan and, unless dry, applies it.
func planRetain(ctx context.Context, env *cmdEnv, r *repo.Repo, ids *crypto.Identities, p retention.Policy, dp retention.DumpPolicy, asJSON, dry bool) error {
	var dplan *retention.DumpPlan
	var dumpsOut *retainDumpsJSON
	var err error
	if dp.Set() {
		if dplan, dumpsOut, err = planDumps(ctx, r, dp); err != nil {
			return err
		}
	}
	rep, err := walinventory.Analyze(ctx, r, ids)
	if err != nil {
		return err
	}
	plan, err := retention.MakePlan(rep, p)
	if err != nil {
		return err
	}
	out := retainJSON{Format: 1, Repository: r.Store.String(), DryRun: dry, KeepLast: p.KeepLast, Timeline: plan.Timeline,
		Backups: []retainBackupJSON{}, Leftovers: nonNil(plan.Leftovers),
		WAL: retainWALJSON{KeepFrom: plan.KeepWALAt, Deleted: len(plan.DeleteWAL), Kept: plan.KeptWAL}}
	if p.KeepWithin > 0 {
		out.KeepWithin = retention.FormatDuration(p.KeepWithin)
	}
	for _, d := range plan.Backups {
		out.Backups = append(out.Backups, retainBackupJSON{ID: d.Backup.ID, StopTime: d.Backup.StopTime, Timeline: d.Backup.EndTimeline,
			StartLSN: d.Backup.StartLSN, EndLSN: d.Backup.EndLSN, Keep: d.Keep, Why: d.Why})
	}
	if n := len(plan.DeleteWAL); n > 0 {
		out.WAL.DeleteFirst, out.WAL.DeleteLast = plan.DeleteWAL[0].Name.Raw, plan.DeleteWAL[n-1].Name.Raw
	}
	out.WAL.GapRecords = plan.DeleteGaps // archive-queue-max
	out.Dumps = dumpsOut
	out.ObjectLock = retainLock(r, plan)
	if asJSON {
		if err := printJSON(env.stdout, out); err != nil {
			return err
		}
	} else {
		printRetain(env.stdout, &out)
		printRetainLock(env.stdout, out.ObjectLock)
		if dumpsOut != nil {
			printRetainDumps(env.stdout, dumpsOut, dry)
		}
	}
	if dry {
		return nil
	}
	if err := retention.Apply(ctx, r.Store, plan, env.log); err != nil {
		return err
	}
	if dplan != nil {
		return retention.ApplyDumps(ctx, r.Store, dplan, env.log)
	}
	return nil
}

func printRetain(w io.Writer, o *retainJSON) {
	verb, keep := "DELETE", "keep"
	if o.DryRun {
		verb = "would delete"
	}
	policy := ""
	if o.KeepLast > 0 {
		policy = fmt.Sprintf("keep-last %d", o.KeepLast)
	}
	if o.KeepWithin != "" {
		if policy != "" {
			policy += ", "
		}
		policy += "keep-within " + o.KeepWithin
	}
	fmt.Fprintf(w, "repository %s, policy %s, newest timeline %d\n", o.Repository, policy, o.Timeline)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "BACKUP\tSTOP (UTC)\tTL\tLSN\tACTION\tWHY\n")
	for _, b := range o.Backups {
		act := keep
		if !b.Keep {
			act = verb
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s-%s\t%s\t%s\n", b.ID, b.StopTime.UTC().Format("2006-01-02 15:04:05"), b.Timeline, b.StartLSN, b.EndLSN, act, b.Why)
	}
	tw.Flush()
	for _, id := range o.Leftovers {
		fmt.Fprintf(w, "incomplete backup %s (older than every kept backup): %s\n", id, verb)
	}
	switch {
	case o.WAL.KeepFrom == "":
		fmt.Fprintln(w, "WAL: nothing deleted (no backup)")
	case o.WAL.Deleted == 0:
		fmt.Fprintf(w, "WAL: nothing before %s to delete; %d objects kept\n", o.WAL.KeepFrom, o.WAL.Kept)
	default:
		fmt.Fprintf(w, "WAL: %s %d objects before %s (%s .. %s); %d kept; history files kept\n", verb, o.WAL.Deleted, o.WAL.KeepFrom, o.WAL.DeleteFirst, o.WAL.DeleteLast, o.WAL.Kept)
	}
}
