package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgark/pgark/replicate"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/wal"
)

// runCopy replicates one repository into the other (package replicate),
// under the destination's repository lock, so that a retain there never
// deletes what the copy is about to complete.
func runCopy(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) != 0 {
		return usageErrorf("copy takes no arguments")
	}
	if !hasRepo2(env) {
		return usageErrorf("copy needs two repositories: set repo2 (and its repo2- settings)")
	}
	from := 1
	if env.s.str("copy-from") == "2" {
		from = 2
	}
	to := 3 - from
	asJSON, err := env.s.boolean("json")
	if err != nil {
		return err
	}
	dryRun, err := env.s.boolean("dry-run")
	if err != nil {
		return err
	}
	src, err := openRepo(ctx, repoEnv(env, from))
	if err != nil {
		return fmt.Errorf("repository %d: %w", from, err)
	}
	dstEnv := repoEnv(env, to)
	dst, err := openRepo(ctx, dstEnv)
	if err != nil {
		return fmt.Errorf("repository %d: %w", to, err)
	}
	if err := sameRepoConfig(src.Config, dst.Config); err != nil {
		return err
	}
	if err := sameCluster(ctx, src, dst); err != nil {
		return err
	}
	start := time.Now()
	var res *replicate.Result
	err = withRepoLock(ctx, dstEnv, dst, "copy", func(ctx context.Context) error {
		var err error
		res, err = replicate.Copy(ctx, src.Store, dst.Store, replicate.Options{DryRun: dryRun, Log: env.log})
		return err
	})
	if res != nil {
		if asJSON {
			out := struct {
				Format int     `json:"format"`
				From   repoRef `json:"from"`
				To     repoRef `json:"to"`
				DryRun bool    `json:"dry_run"`
				Error  string  `json:"error,omitempty"`
				Result any     `json:"result"`
			}{Format: 1, From: refFor(env, from), To: refFor(env, to), DryRun: dryRun, Result: res}
			if err != nil {
				out.Error = err.Error()
			}
			if perr := printJSON(env.stdout, out); perr != nil && err == nil {
				err = perr
			}
		} else {
			verb := "copied"
			if dryRun {
				verb = "would copy"
			}
			fmt.Fprintf(env.stdout, "%s %d objects (%s) from repository %d to %d in %s; %d already there; repository %d holds %d complete backups and %d dump runs of repository %d\n",
				verb, res.Copied, humanBytes(res.CopiedBytes), from, to, time.Since(start).Round(time.Second), res.Skipped, to, len(res.Backups), len(res.Dumps), from)
			for _, k := range res.Conflicts {
				fmt.Fprintf(env.stdout, "conflict (left alone): %s\n", k)
			}
		}
	}
	if errors.Is(err, replicate.ErrConflict) {
		return fmt.Errorf("%w: %w", wal.ErrContentConflict, err)
	}
	return err
}

// sameCluster refuses to copy between repositories bound to different
// clusters (an unbound destination is bound by the copy of cluster.json).
func sameCluster(ctx context.Context, src, dst *repo.Repo) error {
	a, aok, err := src.Cluster(ctx)
	if err != nil {
		return err
	}
	b, bok, err := dst.Cluster(ctx)
	if err != nil {
		return err
	}
	if aok && bok && (a.SystemID != b.SystemID || a.WalSegmentBytes != b.WalSegmentBytes) {
		return fmt.Errorf("%w: the repositories are bound to different clusters (%d and %d)", repo.ErrWrongCluster, a.SystemID, b.SystemID)
	}
	return nil
}
