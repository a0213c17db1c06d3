package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgark/pgark/dump"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/retention"
)

// listValues splits a repeatable option's comma-joined values.
func listValues(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// dumpJobs is --jobs for dump and dump-restore (their default is 1).
func dumpJobs(env *cmdEnv) (int, error) {
	j, err := env.s.integer("jobs")
	if err == nil && j < 1 {
		err = usageErrorf("jobs: must be a whole number of at least 1")
	}
	return j, err
}

func hostOf(dsn string) string {
	c, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%s:%d", c.Host, c.Port)
}

func runDump(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) != 0 {
		return usageErrorf("dump takes no arguments (connection settings come from --dsn or the libpq environment)")
	}
	s := env.s
	cfg := dump.Config{Version: version, Log: env.log, Stderr: env.stderr, DSN: s.str("dsn"), BinDir: s.str("pg-bin"),
		Databases: listValues(s.str("db")), Exclude: listValues(s.str("exclude-db")), FromHost: hostOf(s.str("dsn"))}
	var err error
	if cfg.Jobs, err = dumpJobs(env); err != nil {
		return err
	}
	if cfg.LockWaitTimeout, err = s.duration("lock-wait-timeout"); err != nil {
		return err
	}
	if cfg.NoRolePasswords, err = s.boolean("no-role-passwords"); err != nil {
		return err
	}
	asJSON, err := s.boolean("json")
	if err != nil {
		return err
	}
	if _, err := pgconn.ParseConfig(cfg.DSN); err != nil {
		return usageErrorf("dsn: %v", err)
	}
	r, err := openRepo(ctx, env)
	if err != nil {
		return err
	}
	if cfg.Codec, err = codec(env, r); err != nil {
		return err
	}
	cfg.Repo = r
	m, err := dump.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(env.stdout, m)
	}
	fmt.Fprintf(env.stdout, "dump %s complete: %d databases and the globals of PostgreSQL %s (pg_dump %s) in %s, %s dumped, %s stored\n",
		m.ID, len(m.Databases), m.ServerVersion, m.PgDumpVersion, m.EndTime.Sub(m.StartTime).Round(time.Second), humanBytes(m.RawBytes), humanBytes(m.StoredBytes))
	return nil
}

func runDumpRestore(ctx context.Context, env *cmdEnv, args []string) error {
	s := env.s
	ro, tgt, err := recoveryTargets(s)
	if err != nil {
		return err
	}
	atTarget := targetLabel(ro) != ""
	switch {
	case atTarget && len(args) > 1:
		return usageErrorf("dump-restore with a --target-* option takes at most one argument: the backup to start from (a backup id or latest, the default)")
	case !atTarget && len(args) != 1:
		return usageErrorf("dump-restore takes one argument: a dump id (or latest); or give a --target-* option to restore from the backups and WAL as of that moment")
	}
	bools := map[string]bool{}
	for _, n := range []string{"create", "clean", "schema-only", "data-only", "no-owner", "list", "globals", "overwrite-roles", "no-role-passwords", "dry-run"} {
		v, err := s.boolean(n)
		if err != nil {
			return err
		}
		bools[n] = v
	}
	jobs, err := dumpJobs(env)
	if err != nil {
		return err
	}
	dbs := listValues(s.str("db"))
	tables, schemas := listValues(s.str("table")), listValues(s.str("schema"))
	toFile := s.str("to-file")
	if toFile != "" && !filepath.IsAbs(toFile) {
		if toFile, err = filepath.Abs(toFile); err != nil {
			return usageErrorf("to-file: %v", err)
		}
	}
	if bools["globals"] {
		for _, n := range []string{"create", "clean", "schema-only", "data-only", "no-owner", "list"} {
			if bools[n] {
				return usageErrorf("--globals replays roles and tablespaces: --%s does not apply", n)
			}
		}
		if len(dbs)+len(tables)+len(schemas) > 0 || s.str("target-db") != "" {
			return usageErrorf("--globals replays roles and tablespaces: --db, --target-db, --table and --schema do not apply")
		}
	} else {
		switch {
		case bools["overwrite-roles"] || bools["dry-run"]:
			return usageErrorf("--overwrite-roles and --dry-run go with --globals")
		case bools["schema-only"] && bools["data-only"]:
			return usageErrorf("--schema-only and --data-only exclude each other")
		case bools["data-only"] && (bools["create"] || bools["clean"]):
			return usageErrorf("--data-only cannot go with --create or --clean")
		case len(dbs) > 1:
			return usageErrorf("dump-restore restores one database at a time (--db given %d times)", len(dbs))
		}
	}
	if _, err := pgconn.ParseConfig(s.str("dsn")); err != nil {
		return usageErrorf("dsn: %v", err)
	}
	if atTarget {
		if bools["globals"] {
			return usageErrorf("--globals replays the roles of a stored dump; a --target-* restore brings back one database (--db)")
		}
		if len(dbs) != 1 {
			return usageErrorf("dump-restore with a --target-* option restores one database as of the target: give --db NAME")
		}
		id := "latest"
		if len(args) == 1 {
			id = args[0]
		}
		rc := dump.RestoreConfig{Source: dbs[0], Target: s.str("target-db"), DSN: s.str("dsn"),
			BinDir: s.str("pg-bin"), Create: bools["create"], Clean: bools["clean"], Jobs: jobs, Tables: tables, Schemas: schemas,
			SchemaOnly: bools["schema-only"], DataOnly: bools["data-only"], NoOwner: bools["no-owner"],
			Stdout: env.stdout, Stderr: env.stderr, Log: env.log}
		return runDumpRestoreAt(ctx, env, id, ro, tgt, rc, bools["list"], toFile)
	}
	r, ids, err := openRepoFallback(ctx, env)
	if err != nil {
		return err
	}
	m, err := dump.Find(ctx, r.Store, args[0])
	if err != nil {
		return err
	}
	// With trusted-signers, the run's metadata (which records every
	// object's size and SHA-256) must carry a trusted signature.
	if err := r.VerifyJSONSignature(ctx, dump.MetaKey(m.ID)); err != nil {
		return fmt.Errorf("dump %s: %w", m.ID, err)
	}
	if bools["globals"] {
		if toFile != "" {
			if err := dump.WriteFile(ctx, r, ids, m.Globals, toFile); err != nil {
				return err
			}
			fmt.Fprintf(env.stdout, "globals of dump %s written to %s (%s)\n", m.ID, toFile, humanBytes(m.Globals.Bytes))
			return nil
		}
		_, err := dump.RestoreGlobals(ctx, dump.GlobalsConfig{Repo: r, Identities: ids, Meta: m, DSN: s.str("dsn"),
			Options: dump.GlobalsOptions{Overwrite: bools["overwrite-roles"], NoPasswords: bools["no-role-passwords"]},
			DryRun:  bools["dry-run"], Out: env.stdout, Log: env.log})
		if err == nil && m.NoRolePasswords {
			env.log.Warn("this dump was taken with --no-role-passwords: the roles it created have no password")
		}
		return err
	}
	source := ""
	switch {
	case len(dbs) == 1:
		source = dbs[0]
	case len(m.Databases) == 1:
		source = m.Databases[0].Name
	default:
		var names []string
		for _, d := range m.Databases {
			names = append(names, d.Name)
		}
		return usageErrorf("dump %s holds %d databases: pick one with --db (%s)", m.ID, len(m.Databases), strings.Join(names, ", "))
	}
	if toFile != "" {
		d := m.Database(source)
		if d == nil {
			return usageErrorf("dump %s holds no database %q", m.ID, source)
		}
		if err := dump.WriteFile(ctx, r, ids, d.Object, toFile); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "database %s of dump %s written to %s (%s, pg_restore format -Fc)\n", source, m.ID, toFile, humanBytes(d.Bytes))
		return nil
	}
	rc := dump.RestoreConfig{Repo: r, Identities: ids, Meta: m, Source: source, Target: s.str("target-db"), DSN: s.str("dsn"),
		BinDir: s.str("pg-bin"), Create: bools["create"], Clean: bools["clean"], Jobs: jobs, Tables: tables, Schemas: schemas,
		SchemaOnly: bools["schema-only"], DataOnly: bools["data-only"], NoOwner: bools["no-owner"],
		Stdout: env.stdout, Stderr: env.stderr, Log: env.log}
	if bools["list"] {
		return dump.ListTOC(ctx, rc, env.stdout)
	}
	start := time.Now()
	if err := dump.Restore(ctx, rc); err != nil {
		return err
	}
	target := rc.Target
	if target == "" {
		target = source
	}
	fmt.Fprintf(env.stdout, "database %s of dump %s restored into %s in %s\n", source, m.ID, target, time.Since(start).Round(time.Second))
	return nil
}

// listDumpsJSON is the --json schema of `pgark list --dumps` (format 1).
type listDumpsJSON struct {
	Format     int           `json:"format"`
	Repository string        `json:"repository"`
	Dumps      []*dump.Meta  `json:"dumps"`
	Failed     []dump.Failed `json:"failed"`
	Incomplete []string      `json:"incomplete"`
}

func runListDumps(ctx context.Context, env *cmdEnv, asJSON bool) error {
	r, err := openRepo(ctx, env)
	if err != nil {
		return err
	}
	l, err := dump.List(ctx, r.Store)
	if err != nil {
		return err
	}
	out := listDumpsJSON{Format: 1, Repository: r.Store.String(), Dumps: nonNil(l.Dumps), Failed: nonNil(l.Failed), Incomplete: nonNil(l.Incomplete)}
	if asJSON {
		return printJSON(env.stdout, out)
	}
	w := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "DUMP\tSTART (UTC)\tDURATION\tPG\tPG_DUMP\tDATABASES\tSIZE\tSTORED\n")
	for _, m := range out.Dumps {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", m.ID, m.StartTime.UTC().Format("2006-01-02 15:04:05"),
			m.EndTime.Sub(m.StartTime).Round(time.Second), m.ServerVersion, m.PgDumpVersion, len(m.Databases), humanBytes(m.RawBytes), humanBytes(m.StoredBytes))
		for _, d := range m.Databases {
			loc := d.Collate
			if d.LocaleProvider != "libc" {
				loc = d.LocaleProvider + " " + d.Locale
			}
			fmt.Fprintf(w, "  %s\t%s %s\t\t\t\t\t%s\t%s\n", d.Name, d.Encoding, loc, humanBytes(d.Bytes), humanBytes(d.StoredBytes))
		}
		fmt.Fprintf(w, "  (globals)\t\t\t\t\t\t%s\t%s\n", humanBytes(m.Globals.Bytes), humanBytes(m.Globals.StoredBytes))
	}
	w.Flush()
	if len(out.Dumps) == 0 {
		fmt.Fprintln(env.stdout, "(no complete dumps)")
	}
	for _, f := range out.Failed {
		fmt.Fprintf(env.stdout, "failed (never used): %s at %s: %s\n", f.ID, f.Time.UTC().Format("2006-01-02 15:04:05"), f.Error)
	}
	for _, id := range out.Incomplete {
		fmt.Fprintf(env.stdout, "incomplete (never used; in progress or interrupted): %s\n", id)
	}
	return nil
}

// dumpPolicy reads --keep-dumps and --keep-dumps-within.
func dumpPolicy(env *cmdEnv) (retention.DumpPolicy, error) {
	p := retention.DumpPolicy{Now: time.Now()}
	var err error
	if p.KeepLast, err = nonNegative(env, "keep-dumps"); err != nil {
		return p, err
	}
	if v := env.s.str("keep-dumps-within"); v != "" {
		if p.KeepWithin, err = retention.ParseDuration(v); err != nil {
			return p, usageErrorf("keep-dumps-within (%s): %v", env.s.src["keep-dumps-within"], err)
		}
	}
	return p, nil
}

type retainDumpsJSON struct {
	KeepDumps       int                   `json:"keep_dumps"`
	KeepDumpsWithin string                `json:"keep_dumps_within"`
	Dumps           []retainDumpEntryJSON `json:"dumps"`
	Leftovers       []string              `json:"failed_deleted"`
}

type retainDumpEntryJSON struct {
	ID        string    `json:"id"`
	StartTime time.Time `json:"start_time"`
	Keep      bool      `json:"keep"`
	Why       string    `json:"why"`
}

// planDumps makes the dump retention plan and its report.
func planDumps(ctx context.Context, r *repo.Repo, p retention.DumpPolicy) (*retention.DumpPlan, *retainDumpsJSON, error) {
	l, err := dump.List(ctx, r.Store)
	if err != nil {
		return nil, nil, err
	}
	plan, err := retention.MakeDumpPlan(l, p)
	if err != nil {
		return nil, nil, err
	}
	out := &retainDumpsJSON{KeepDumps: p.KeepLast, Dumps: []retainDumpEntryJSON{}, Leftovers: nonNil(plan.Leftovers)}
	if p.KeepWithin > 0 {
		out.KeepDumpsWithin = retention.FormatDuration(p.KeepWithin)
	}
	for _, d := range plan.Dumps {
		out.Dumps = append(out.Dumps, retainDumpEntryJSON{ID: d.Dump.ID, StartTime: d.Dump.StartTime, Keep: d.Keep, Why: d.Why})
	}
	return plan, out, nil
}

func printRetainDumps(w io.Writer, o *retainDumpsJSON, dry bool) {
	verb := "DELETE"
	if dry {
		verb = "would delete"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "DUMP\tSTART (UTC)\tACTION\tWHY\n")
	for _, d := range o.Dumps {
		act := "keep"
		if !d.Keep {
			act = verb
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.ID, d.StartTime.UTC().Format("2006-01-02 15:04:05"), act, d.Why)
	}
	tw.Flush()
	for _, id := range o.Leftovers {
		fmt.Fprintf(w, "failed or incomplete dump %s (older than the newest complete one): %s\n", id, verb)
	}
}

// runRetainDumpsOnly applies a dump retention policy when no backup policy
// is given: backups and WAL are left alone (and the archive is not read).
func runRetainDumpsOnly(ctx context.Context, env *cmdEnv, p retention.DumpPolicy, asJSON, dry bool) error {
	r, err := openRepo(ctx, env)
	if err != nil {
		return err
	}
	p.ObjectLock = r.Config.ObjectLock.Period()
	plan, out, err := planDumps(ctx, r, p)
	if err != nil {
		return err
	}
	if asJSON {
		if err := printJSON(env.stdout, struct {
			Format     int              `json:"format"`
			Repository string           `json:"repository"`
			DryRun     bool             `json:"dry_run"`
			Dumps      *retainDumpsJSON `json:"dumps"`
		}{1, r.Store.String(), dry, out}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(env.stdout, "repository %s, dump policy %s (backups and WAL: no policy given, left alone)\n", r.Store.String(), p)
		printRetainDumps(env.stdout, out, dry)
	}
	if dry {
		return nil
	}
	return retention.ApplyDumps(ctx, r.Store, plan, env.log)
}
