package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgark/pgark/lock"
	"github.com/pgark/pgark/repo"
)

// withRepoLock takes the repository lock for command, runs fn with a
// context that is canceled if the lock is lost, and releases the lock.
func withRepoLock(ctx context.Context, env *cmdEnv, r *repo.Repo, command string, fn func(ctx context.Context) error) error {
	wait, err := env.s.duration("lock-wait")
	if err != nil {
		return err
	}
	l, err := lock.Acquire(ctx, r.Store, lock.Options{Command: command, Wait: wait, Version: version, Log: env.log})
	if err != nil {
		return err
	}
	env.log.Debug("repository lock taken", "token", l.Info().Token)
	err = fn(l.Context())
	if cause := context.Cause(l.Context()); errors.Is(cause, lock.ErrLost) {
		err = fmt.Errorf("%s stopped: %w", command, cause)
	}
	if rerr := l.Release(context.WithoutCancel(ctx)); rerr != nil {
		env.log.Warn("releasing the repository lock failed", "err", rerr)
	}
	return err
}
