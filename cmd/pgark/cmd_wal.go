package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/wal"
)

func runWalPush(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) != 1 {
		return usageErrorf("wal-push takes one argument, the WAL file's path (archive_command = 'pgark wal-push %%p')")
	}
	start := time.Now()
	ahead, err := aheadOptions(env)
	if err != nil {
		return err
	}
	if wal.AnswerFromSpool(ahead, args[0], env.log) {
		env.log.Info("archived", "wal", filepath.Base(args[0]), "pushed_ahead", true, "ms", time.Since(start).Milliseconds())
		startBackgroundBatch(env, ahead, args[0])
		return nil
	}
	r, po, err := walPushSetup(ctx, env)
	if err != nil {
		return dropOnQueueMax(ctx, env, args[0], err) // archive-queue-max
	}
	res, err := wal.PushAhead(ctx, r, args[0], po, ahead)
	if err != nil {
		return dropOnQueueMax(ctx, env, args[0], err) // archive-queue-max
	}
	flushGaps(ctx, env, r, po) // archive-queue-max: record earlier drops
	env.log.Info("archived", "wal", res.Name, "bytes", res.Size, "already_stored", res.AlreadyStored,
		"ms", time.Since(start).Milliseconds())
	startBackgroundBatch(env, ahead, args[0])
	return nil
}

// walPushSetup opens the repository and makes the push options of wal-push
// and wal-push-ahead.
func walPushSetup(ctx context.Context, env *cmdEnv) (*repo.Repo, wal.PushOptions, error) {
	r, err := openRepoMirror(ctx, env)
	if err != nil {
		return nil, wal.PushOptions{}, err
	}
	c, err := codec(env, r)
	if err != nil {
		return nil, wal.PushOptions{}, err
	}
	if c.Level, err = walLevel(env, c.Level); err != nil {
		return nil, wal.PushOptions{}, err
	}
	retryFor, err := env.s.duration("retry-timeout")
	if err != nil {
		return nil, wal.PushOptions{}, err
	}
	return r, wal.PushOptions{Codec: c, RetryFor: retryFor, Log: env.log}, nil
}

// startBackgroundBatch starts `pgark wal-push-ahead` for the segment at path
// when more segments wait without a record and no batch runs
// (wal.ClaimBackgroundBatch). The batch inherits the spool lock that this
// call takes for it, so that no second batch starts in between. A failure
// to start it only costs speed: the next calls push themselves.
func startBackgroundBatch(env *cmdEnv, o wal.AheadOptions, path string) {
	claim := wal.ClaimBackgroundBatch(o, path)
	if claim == nil {
		return
	}
	defer claim.Release()
	abs, err := filepath.Abs(path)
	if err == nil {
		err = startHelper(env, "wal-push-ahead", []string{abs}, filepath.Join(claim.SpoolDir, "push-helper.log"), claim.File())
	}
	if err != nil {
		env.log.Warn("cannot start a background push-ahead batch", "err", err)
	}
}

// inheritedLockEnv names, in a background batch's environment, the
// descriptor of the spool lock that its wal-push handed down.
const inheritedLockEnv = "PGARK_INTERNAL_SPOOL_LOCK_FD"

func runWalPushAhead(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) != 1 {
		return usageErrorf("wal-push-ahead takes one argument, the path of a WAL segment in pg_wal")
	}
	var lockFile *os.File
	if fd, err := strconv.Atoi(env.getenv(inheritedLockEnv)); err == nil && fd > 2 {
		lockFile = os.NewFile(uintptr(fd), "spool lock")
	}
	ahead, err := aheadOptions(env)
	if err != nil {
		if lockFile != nil {
			lockFile.Close()
		}
		return err
	}
	_, err = wal.PushAheadBackground(ctx, args[0], ahead, lockFile, func() (*repo.Repo, wal.PushOptions, error) {
		return walPushSetup(ctx, env)
	})
	if errors.Is(err, wal.ErrNotClaimed) {
		return usageErrorf("%v", err)
	}
	return err
}

// defaultWALLevel is wal-push's zstd level unless one is set. Archiving must
// keep up with the write load, and a segment's push is mostly compression:
// on the 100 pgbench segments of bench/wal.sh, level 1 (the encoder's fastest
// mode) stores 436 MiB against 432 MiB at level 3 (and 429 MiB for
// pgBackRest's zst level 3), with 30% less compression CPU (38.6 against
// 55.7 ms per segment).
const defaultWALLevel = 1

// walLevel is the zstd level of wal-push: wal-compression-level, else
// compression-level when set (on the command line or in the config file),
// else defaultWALLevel. repoLevel is what codec chose (the repository's,
// unless compression-level is set).
func walLevel(env *cmdEnv, repoLevel int) (int, error) {
	lvl, err := env.s.integer("wal-compression-level")
	if err != nil {
		return 0, err
	}
	switch {
	case lvl != 0:
		if lvl < 1 || lvl > 22 {
			return 0, usageErrorf("wal-compression-level (%s): %d is out of range 1-22", env.s.src["wal-compression-level"], lvl)
		}
		return lvl, nil
	case env.s.src["compression-level"] != "default" && env.s.str("compression-level") != "0":
		return repoLevel, nil
	}
	return defaultWALLevel, nil
}

func runWalFetch(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) != 2 {
		return usageErrorf("wal-fetch takes two arguments, the WAL file name and the destination path (restore_command = 'pgark wal-fetch %%f %%p')")
	}
	start := time.Now()
	name, dest := args[0], args[1]
	n, err := wal.ParseName(name)
	if err != nil {
		return fmt.Errorf("%w: %w", wal.ErrBadInput, err)
	}
	sp := openFetchSpool(env, n)
	if sp != nil && n.Kind == wal.KindSegment {
		ok, err := sp.Take(ctx, name, dest)
		if err != nil {
			env.log.Warn("prefetch spool", "err", err)
		}
		if ok {
			env.log.Info("restored", "wal", name, "prefetched", true, "ms", time.Since(start).Milliseconds())
			return nil
		}
	}
	r, ids, err := openRepoFallback(ctx, env)
	if err != nil {
		return err
	}
	retryFor, err := env.s.duration("retry-timeout")
	if err != nil {
		return err
	}
	err = wal.Fetch(ctx, r, name, dest, wal.FetchOptions{Identities: ids, RetryFor: retryFor, Log: env.log})
	if err == nil && sp != nil && n.Kind == wal.KindHistory {
		if err := sp.SaveHistory(name, dest); err != nil {
			env.log.Warn("prefetch spool: cannot keep the timeline history", "err", err)
		}
	}
	if errors.Is(err, wal.ErrNotArchived) {
		lvl := env.log.Info
		if n.Kind == wal.KindHistory {
			lvl = env.log.Debug // PostgreSQL probes for future timelines
		}
		lvl("not in the repository", "wal", name)
		return err
	}
	if err != nil {
		return err
	}
	env.log.Info("restored", "wal", name, "ms", time.Since(start).Milliseconds())
	return nil
}

// openFetchSpool opens the prefetch spool, records the request for the helper
// and starts the helper if none runs. It returns nil when prefetch is off or
// the spool cannot be used (the call then fetches on its own).
func openFetchSpool(env *cmdEnv, n wal.Name) *wal.FetchSpool {
	o, err := prefetchOptions(env)
	if err != nil {
		env.log.Warn("prefetch is off for this call", "err", err)
		return nil
	}
	sp, err := wal.OpenFetchSpool(o, env.log)
	if err != nil || sp == nil {
		if err != nil {
			env.log.Warn("prefetch is off for this call", "err", err)
		}
		return nil
	}
	if n.Kind != wal.KindSegment {
		return sp
	}
	if err := sp.Request(n.Raw); err != nil {
		env.log.Warn("prefetch spool", "err", err)
		return nil
	}
	if !sp.HelperRunning() {
		if err := startPrefetcher(env, sp, o); err != nil {
			env.log.Warn("cannot start the prefetch helper", "err", err)
		}
	}
	return sp
}

func runWalPrefetch(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) != 0 {
		return usageErrorf("wal-prefetch takes no arguments")
	}
	o, err := prefetchOptions(env)
	if err != nil {
		return err
	}
	sp, err := wal.OpenFetchSpool(o, env.log)
	if err != nil || sp == nil {
		return err
	}
	r, ids, err := openRepoFallback(ctx, env)
	if err != nil {
		return err
	}
	retryFor, err := env.s.duration("retry-timeout")
	if err != nil {
		return err
	}
	return wal.RunPrefetcher(ctx, r, sp, wal.FetchOptions{Identities: ids, RetryFor: min(retryFor, 30*time.Second), Log: env.log})
}

// fetchExitCode maps wal-fetch's errors: only "not archived" is 1; every
// other failure stops archive recovery (>125), or, on a standby, is reported
// below 126 so the standby keeps running and retries.
func fetchExitCode(env *cmdEnv) func(error) int {
	return func(err error) int {
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, wal.ErrNotArchived):
			return exitNotFound
		case isStandby(env):
			return exitStorage
		}
		return exitRecoveryStop
	}
}
