package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/restore"
	"github.com/pgark/pgark/restore/recoveryconf"
	"github.com/pgark/pgark/scratch"
	"github.com/pgark/pgark/wal"
)

// This file holds what drill and dump-restore --target-* share: the
// recovery target options and a scratch server restored at that target.

// recoveryTargets reads the --target-* options that restore, drill and
// dump-restore share (target-action is restore's alone), checked.
func recoveryTargets(s *settings) (recoveryconf.Options, catalog.Target, error) {
	ro := recoveryconf.Options{
		TargetTime:     s.str("target-time"),
		TargetLSN:      s.str("target-lsn"),
		TargetXID:      s.str("target-xid"),
		TargetName:     s.str("target-name"),
		TargetTimeline: s.str("target-timeline"),
	}
	var tgt catalog.Target
	var err error
	if ro.TargetImmediate, err = s.boolean("target-immediate"); err != nil {
		return ro, tgt, err
	}
	if v := s.str("target-inclusive"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return ro, tgt, usageErrorf("target-inclusive: %q is not true or false", v)
		}
		ro.TargetInclusive = &b
	}
	if ro.TargetTime != "" {
		if tgt.Time, err = recoveryconf.ParseTargetTime(ro.TargetTime); err != nil {
			return ro, tgt, usageErrorf("target-time: %v", err)
		}
	}
	if ro.TargetLSN != "" {
		if tgt.LSN, err = wal.ParseLSN(ro.TargetLSN); err != nil {
			return ro, tgt, usageErrorf("target-lsn: %v", err)
		}
	}
	return ro, tgt, nil
}

// targetLabel describes a recovery target for reports ("" when there is
// none: the end of the archive).
func targetLabel(ro recoveryconf.Options) string {
	switch {
	case ro.TargetTime != "":
		return "time " + ro.TargetTime
	case ro.TargetLSN != "":
		return "lsn " + ro.TargetLSN
	case ro.TargetXID != "":
		return "xid " + ro.TargetXID
	case ro.TargetName != "":
		return "restore point " + ro.TargetName
	case ro.TargetImmediate:
		return "consistency (immediate)"
	}
	return ""
}

// scratchPlaces completes ro for a scratch server (the restore_command,
// checked) and returns the user that runs the server and the marker and
// state directories.
func scratchPlaces(env *cmdEnv, ro *recoveryconf.Options) (owner *restore.Owner, markers, base string, err error) {
	if ro.RestoreCommand, err = restoreCommand(env); err != nil {
		return nil, "", "", err
	}
	if err := ro.Validate(); err != nil {
		return nil, "", "", usageErrorf("%v", err)
	}
	if owner, err = drillOwner(env.s.str("owner")); err != nil {
		return nil, "", "", err
	}
	markers, base, err = scratchMarkers(env)
	return owner, markers, base, err
}

// scratchMarkers returns the state directory's marker directory, shared by
// every scratch server (drills and point-in-time dump-restores), and the
// state directory itself.
func scratchMarkers(env *cmdEnv) (markers, base string, err error) {
	base, err = spoolBase(env)
	if err != nil {
		return "", "", err
	}
	if base == "" {
		return "", "", usageErrorf("no state directory for the scratch server's markers: set spool-dir")
	}
	return filepath.Join(base, "drill", "markers"), base, nil
}

// cleanStaleScratch stops the servers and removes the directories that a
// drill or dump-restore killed with -9 left behind. With exclusive, a live
// run's server is an error (two drills at once would measure each other);
// otherwise it is left alone.
func cleanStaleScratch(ctx context.Context, env *cmdEnv, markers string, force, exclusive bool) error {
	stale, err := scratch.CleanStale(ctx, markers, force, env.log)
	for _, st := range stale {
		if st.OwnerRunning {
			if exclusive {
				return usageErrorf("another drill or dump-restore (pid %d) is running in %s; wait for it, or give --force if it is stuck", st.OwnerPID, st.Dir)
			}
			continue
		}
		env.log.Info("cleaned up after an interrupted scratch server", "dir", st.Dir, "postmaster_stopped", st.Postmaster)
	}
	return err
}

// scratchSpec is what newScratch needs besides the plan.
type scratchSpec struct {
	what    string // "drill" or "dump-restore", for messages
	dir     string // --scratch ("": <state directory>/drill/<name>)
	base    string // the state directory
	name    string // the default directory name
	markers string
	binDir  string // the server binaries (found already)
	owner   *restore.Owner
	ro      recoveryconf.Options
}

// newScratch checks the scratch directory and creates the scratch server
// (marker first, then the empty directory) for a plan's backup.
func newScratch(env *cmdEnv, plan *restore.Plan, sp scratchSpec) (*scratch.Server, error) {
	dir := sp.dir
	if dir == "" {
		dir = filepath.Join(defaultScratchBase(env, sp.base, sp.owner), "drill", sp.name)
	} else if !filepath.IsAbs(dir) {
		return nil, usageErrorf("scratch: %q is a relative path; give an absolute directory path", dir)
	}
	dir = filepath.Clean(dir)
	if where := insideDataDir(dir); where != "" {
		return nil, usageErrorf("scratch: %s is inside %s; %s never writes into a data directory or tablespace", dir, where, sp.what)
	}
	cfg := scratch.Config{Dir: dir, MarkerDir: sp.markers, Major: plan.Backup.PGMajor, BinDir: sp.binDir,
		RestoreCommand: sp.ro.RestoreCommand, UID: -1, GID: -1, Log: env.log}
	if sp.owner != nil {
		cfg.UID, cfg.GID = sp.owner.UID, sp.owner.GID
	}
	srv, err := scratch.New(cfg)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	return srv, nil
}

// restoreScratch restores the plan's backup into the scratch server's data
// directory, its tablespaces inside the scratch directory, with the
// recovery settings ro.
func restoreScratch(ctx context.Context, env *cmdEnv, r *repo.Repo, ids *crypto.Identities, plan *restore.Plan, srv *scratch.Server, ro recoveryconf.Options, owner *restore.Owner, jobs int) error {
	eo := restore.ExtractOptions{PGDATA: srv.DataDir(), Log: env.log, TablespaceMap: map[uint32]string{}, Jobs: jobs, Owner: owner}
	for _, c := range plan.Chain {
		for _, ts := range c.Tablespaces {
			eo.TablespaceMap[ts.OID] = filepath.Join(srv.Dir(), "tablespaces", strconv.FormatUint(uint64(ts.OID), 10))
		}
	}
	for _, ts := range plan.Backup.Tablespaces {
		eo.TablespaceMap[ts.OID] = filepath.Join(srv.Dir(), "tablespaces", strconv.FormatUint(uint64(ts.OID), 10))
	}
	if err := restore.Run(ctx, r, plan, ids, eo, ro, env.log); err != nil {
		return fmt.Errorf("restore of backup %s failed: %w", plan.Backup.ID, err)
	}
	return nil
}
