package main

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/restore"
)

func runRestore(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) != 2 {
		return usageErrorf("restore takes two arguments: a backup id (or latest) and the data directory")
	}
	id, pgdata := args[0], args[1]
	if !filepath.IsAbs(pgdata) {
		abs, err := filepath.Abs(pgdata)
		if err != nil {
			return usageErrorf("PGDATA: %v", err)
		}
		pgdata = abs
	}
	if id != "latest" && !catalog.ValidID(id) {
		return usageErrorf("%q is not a backup id (like 20261124T154500Z) or latest", id)
	}
	s := env.s
	ro, tgt, err := recoveryTargets(s)
	if err != nil {
		return err
	}
	ro.TargetAction = s.str("target-action")
	if ro.Standby, err = s.boolean("standby"); err != nil {
		return err
	}
	if ro.KeepArchiving, err = s.boolean("keep-archiving"); err != nil {
		return err
	}
	eo := restore.ExtractOptions{PGDATA: pgdata, Log: env.log, TablespaceMap: map[uint32]string{}}
	if eo.Jobs, err = s.integer("jobs"); err != nil || eo.Jobs < 1 {
		return usageErrorf("jobs: must be a whole number of at least 1")
	}
	if eo.Force, err = s.boolean("force"); err != nil {
		return err
	}
	for _, kv := range strings.Split(s.str("tablespace-map"), ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		oid, err := strconv.ParseUint(k, 10, 32)
		if !ok || err != nil || !filepath.IsAbs(v) {
			return usageErrorf("tablespace-map: %q is not OID=/absolute/path", kv)
		}
		eo.TablespaceMap[uint32(oid)] = filepath.Clean(v)
	}
	if eo.Owner, err = restoreOwner(s.str("owner")); err != nil {
		return err
	}
	if ro.RestoreCommand, err = restoreCommand(env); err != nil {
		return err
	}
	// Before anything is downloaded: a typo in a target fails in seconds.
	if err := ro.Validate(); err != nil {
		return usageErrorf("%v", err)
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
	env.log.Info("restoring", "backup", m.ID, "consistent_at", m.EndLSN, "stop_time", m.StopTime.Format(time.RFC3339),
		"timeline", plan.Timeline.TLI, "pgdata", pgdata)
	start := time.Now()
	if err := restore.Run(ctx, r, plan, ids, eo, ro, env.log); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "restored backup %s (PostgreSQL %d, %s) into %s in %s\n", m.ID, m.PGMajor, humanBytes(m.RawBytes), pgdata, time.Since(start).Round(time.Second))
	fmt.Fprintf(env.stdout, "next: start PostgreSQL %d on it (e.g. pg_ctl -D %s start). It replays WAL from the archive through pgark wal-fetch", m.PGMajor, pgdata)
	switch {
	case ro.TargetTime != "":
		fmt.Fprintf(env.stdout, " up to %s", ro.TargetTime)
	case ro.TargetLSN != "":
		fmt.Fprintf(env.stdout, " up to LSN %s", ro.TargetLSN)
	case ro.TargetXID != "":
		fmt.Fprintf(env.stdout, " up to transaction %s", ro.TargetXID)
	case ro.TargetName != "":
		fmt.Fprintf(env.stdout, " up to restore point %q", ro.TargetName)
	case ro.TargetImmediate:
		fmt.Fprintf(env.stdout, " until the backup is consistent (%s)", m.EndLSN)
	default:
		fmt.Fprintf(env.stdout, " to the end of the archive on timeline %d", plan.Timeline.TLI)
	}
	fmt.Fprintf(env.stdout, ".\nwatch the server log for \"redo starts\", \"consistent recovery state reached\" and \"archive recovery complete\"; SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(); shows progress.\n")
	return nil
}

// restoreOwner resolves --owner; as root it is required (PostgreSQL refuses
// to run as root, and a root-owned PGDATA would not start).
func restoreOwner(spec string) (*restore.Owner, error) {
	if spec == "" {
		if os.Geteuid() == 0 {
			return nil, usageErrorf("running as root: give --owner USER (the user that will run the server, usually postgres)")
		}
		return nil, nil
	}
	if u, g, ok := strings.Cut(spec, ":"); ok {
		uid, err1 := strconv.Atoi(u)
		gid, err2 := strconv.Atoi(g)
		if err1 != nil || err2 != nil {
			return nil, usageErrorf("owner: %q is not USER or UID:GID", spec)
		}
		return &restore.Owner{UID: uid, GID: gid}, nil
	}
	u, err := user.Lookup(spec)
	if err != nil {
		return nil, usageErrorf("owner: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &restore.Owner{UID: uid, GID: gid}, nil
}

// restoreCommand builds restore_command for the restored node: this pgark's
// absolute path and the settings wal-fetch needs, never a secret (the file
// it goes into is copied into the next backup). With a config file, that file
// is named; otherwise the repository and identity-file settings are.
func restoreCommand(env *cmdEnv) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locate the pgark binary: %w", err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return "", fmt.Errorf("locate the pgark binary: %w", err)
	}
	parts := []string{shellQuote(exe), "wal-fetch"}
	if conf := env.s.str("config"); conf != "" {
		abs, err := filepath.Abs(conf)
		if err != nil {
			return "", err
		}
		parts = append(parts, shellQuote("--config="+abs))
	}
	// The store settings (every option that all repository commands take)
	// (repo2 and its twins included), the keys that reading needs, the
	// view of the repository as of a past time and the one repository to
	// read alone.
	names := []string{"age-identity-file", "trusted-signers", "repo-target-time", "repo-index"}
	for _, o := range options {
		if slices.Equal(o.cmds, repoCmds) {
			names = append(names, o.name)
		}
	}
	for _, name := range names {
		src := env.s.src[name]
		if src == "default" || src == "config file" || src == "" {
			continue // the config file, named above, carries it
		}
		v := env.s.str(name)
		if strings.HasSuffix(name, "-file") || name == "sftp-known-hosts" {
			if abs, err := filepath.Abs(v); err == nil {
				v = abs
			}
		}
		parts = append(parts, shellQuote("--"+name+"="+v))
	}
	return strings.Join(parts, " ") + " %f %p", nil
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:=,+@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
