package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/dump"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/restore"
	"github.com/pgark/pgark/restore/recoveryconf"
	"github.com/pgark/pgark/scratch"
)

// runDumpRestoreAt is dump-restore with a --target-* option: the source is
// not a stored dump but the physical backup and WAL at that moment. A
// scratch server (as for a drill) is restored from the backup before the
// target, replays to it and promotes; the database is dumped from it with
// pg_dump -Fc into the scratch directory, and that archive goes through the
// same restore as a stored dump (rc: every selection option). The scratch
// server and its directory are removed at the end, whatever happens.
func runDumpRestoreAt(ctx context.Context, env *cmdEnv, id string, ro recoveryconf.Options, tgt catalog.Target, rc dump.RestoreConfig, list bool, toFile string) error {
	s := env.s
	if id != "latest" && !catalog.ValidID(id) {
		return usageErrorf("%q is not a backup id (like 20261124T154500Z) or latest", id)
	}
	force, err := s.boolean("force")
	if err != nil {
		return err
	}
	ro.TargetAction = "promote"
	owner, markers, base, err := scratchPlaces(env, &ro)
	if err != nil {
		return err
	}
	if err := cleanStaleScratch(ctx, env, markers, force, false); err != nil {
		return err
	}
	// The client tools first: a missing one fails in seconds, not after
	// the restore.
	pgDump, err := dump.FindTool(ctx, "pg_dump", rc.BinDir)
	if err != nil {
		return err
	}
	if _, err := dump.FindTool(ctx, "pg_restore", rc.BinDir); err != nil {
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
	if pgDump.Major < m.PGMajor {
		return fmt.Errorf("%w: %s cannot dump PostgreSQL %d, the major of backup %s; install the PostgreSQL %d client tools and put them on PATH or give --pg-bin DIR",
			dump.ErrClientTooOld, pgDump, m.PGMajor, m.ID, m.PGMajor)
	}
	binDir, err := scratchServerBin(ctx, m.PGMajor, rc.BinDir)
	if err != nil {
		return err
	}
	start := time.Now()
	srv, err := newScratch(env, plan, scratchSpec{what: "dump-restore", dir: s.str("scratch"), base: base,
		name: "dump-restore-" + repo.NewRunID(start), markers: markers, binDir: binDir, owner: owner, ro: ro})
	if err != nil {
		return err
	}
	defer func() {
		if err := srv.Close(context.WithoutCancel(ctx), false); err != nil {
			env.log.Error("cleaning up the scratch server", "dir", srv.Dir(), "err", err)
		}
	}()

	label := targetLabel(ro)
	env.log.Info("dump-restore: restoring the backup into a scratch server", "backup", m.ID, "target", label, "scratch", srv.Dir())
	if err := restoreScratch(ctx, env, r, ids, plan, srv, ro, owner, 2); err != nil {
		return fmt.Errorf("dump-restore: %w", err)
	}
	env.log.Info("dump-restore: replaying WAL to the target", "target", label)
	if err := srv.Start(ctx); err != nil {
		return fmt.Errorf("dump-restore: %w", err)
	}
	if err := srv.WaitPromoted(ctx); err != nil {
		return fmt.Errorf("dump-restore: the scratch server did not reach %s: %w", label, err)
	}
	info, err := srv.Recovery(ctx)
	if err != nil {
		return fmt.Errorf("dump-restore: %w", err)
	}
	reached := "LSN " + info.LSN
	if !info.Time.IsZero() {
		reached += ", last transaction " + info.Time.Format(time.RFC3339Nano)
	}
	if !slices.Contains(info.Databases, rc.Source) {
		return fmt.Errorf("%w: there was no database %q at %s (backup %s, recovery reached %s); databases then: %s",
			dump.ErrSelection, rc.Source, label, m.ID, reached, strings.Join(info.Databases, ", "))
	}

	archive := filepath.Join(srv.Dir(), "source.dump")
	if toFile != "" {
		archive = toFile
	}
	env.log.Info("dump-restore: dumping the database as of the target", "database", rc.Source, "reached", reached)
	meta, err := dump.DumpFile(ctx, dump.FileConfig{Tool: pgDump, ConnStr: srv.ConnString(rc.Source), Database: rc.Source, Path: archive,
		ServerVersion: info.Version, ServerVersionNum: m.PGMajor * 10000, Stderr: env.stderr})
	if err != nil {
		return err
	}
	if toFile != "" {
		fmt.Fprintf(env.stdout, "database %s as of %s (backup %s, recovery reached %s) written to %s (%s, pg_restore format -Fc)\n",
			rc.Source, label, m.ID, reached, toFile, humanBytes(meta.RawBytes))
		return nil
	}
	rc.Meta, rc.File = meta, archive
	if list {
		return dump.ListTOC(ctx, rc, env.stdout)
	}
	if err := dump.Restore(ctx, rc); err != nil {
		return err
	}
	into := rc.Target
	if into == "" {
		into = rc.Source
	}
	what := "database " + rc.Source
	if len(rc.Tables)+len(rc.Schemas) > 0 {
		what = strings.Join(append(slices.Clone(rc.Tables), rc.Schemas...), ", ") + " of database " + rc.Source
	}
	fmt.Fprintf(env.stdout, "%s as of %s (backup %s, recovery reached %s) restored into %s in %s\n",
		what, label, m.ID, reached, into, time.Since(start).Round(time.Second))
	return nil
}

// scratchServerBin finds the server binaries of a major for a scratch
// server of dump-restore: in --pg-bin when it holds them (a Debian
// /usr/lib/postgresql/N/bin holds the server and the client tools), else in
// the usual places.
func scratchServerBin(ctx context.Context, major int, pgBin string) (string, error) {
	if pgBin != "" {
		if d, err := scratch.FindBinDir(ctx, major, pgBin); err == nil {
			return d, nil
		}
	}
	return scratch.FindBinDir(ctx, major, "")
}
