package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/wal"
	"github.com/pgark/pgark/walgap"
	"github.com/pgark/pgark/walinventory"
)

// dropOnQueueMax decides, for a wal-push of path that failed with pushErr,
// whether archive-queue-max drops the segment: the option is set, the
// failure is the repository's (storage, after retry-timeout; never bad
// input, a content conflict or a key problem), the file is a complete
// segment (never a .history, .backup or .partial file), the WAL waiting in
// pg_wal exceeds the limit, and the drop is recorded durably. Then it logs
// one error line naming the segment and returns nil: wal-push answers 0 and
// PostgreSQL recycles the segment. Otherwise it returns pushErr.
func dropOnQueueMax(ctx context.Context, env *cmdEnv, path string, pushErr error) error {
	limit, err := env.s.size("archive-queue-max")
	if err != nil || limit == 0 {
		return pushErr
	}
	if exitCode(pushErr) != exitStorage || ctx.Err() != nil {
		return pushErr
	}
	q, err := wal.MeasureQueue(path)
	if err != nil {
		if errors.Is(err, wal.ErrNotDroppable) {
			env.log.Debug("archive-queue-max: not dropped", "wal", filepath.Base(path), "reason", err)
		}
		return pushErr
	}
	if q.Bytes <= limit {
		env.log.Debug("archive-queue-max: queue below the limit, not dropped", "wal", q.Name.Raw, "queue_bytes", q.Bytes, "archive_queue_max", limit)
		return pushErr
	}
	base, id, err := spoolLocation(env)
	if err != nil || base == "" {
		env.log.Warn("archive-queue-max: cannot record a drop (no spool directory), the segment is NOT dropped", "wal", q.Name.Raw, "err", err)
		return pushErr
	}
	l := walgap.LocalFor(base, id, q.SystemID)
	d := walgap.Dropped{Name: q.Name.Raw, SegSize: q.SegSize, DroppedAt: time.Now().UTC(), QueueBytes: q.Bytes, QueueMax: limit}
	if err := l.Add(d); err != nil {
		env.log.Warn("archive-queue-max: cannot record a drop, the segment is NOT dropped", "wal", q.Name.Raw, "err", err)
		return pushErr
	}
	env.log.Error("archive-queue-max: WAL segment DROPPED, not archived; point-in-time recovery across it is lost until the next backup",
		"wal", q.Name.Raw, "ready_segments", q.Ready, "queue_bytes", q.Bytes, "archive_queue_max", limit, "push_err", pushErr.Error(), "record", l.Dir)
	return nil
}

// flushGaps writes the drops recorded locally to the repository (walgap),
// once a push reached it. It costs one directory read when there are none;
// a failure is logged and retried by the next push.
func flushGaps(ctx context.Context, env *cmdEnv, r *repo.Repo, po wal.PushOptions) {
	base, id, err := spoolLocation(env)
	if err != nil || base == "" || !walgap.AnyLocal(base, id) {
		return
	}
	c, bound, err := r.Cluster(ctx)
	if err != nil || !bound {
		return
	}
	rs, err := walgap.Flush(ctx, r.Store, po.Codec.Signer, walgap.LocalFor(base, id, c.SystemID))
	if err != nil {
		env.log.Warn("archive-queue-max: cannot write the gap record to the repository yet", "err", err)
	}
	for _, g := range rs {
		env.log.Warn("archive-queue-max: recorded the WAL gap in the repository", "first", g.First, "last", g.Last, "segments", g.Count, "key", walgap.Key(g))
	}
}

// addLocalDropped adds to check's report the drops that wal-push recorded
// locally and has not written to the repository yet (no push has reached
// it since). They are found when check runs as the server's user with the
// same spool-dir (on the database host); elsewhere the repository's
// records are what check sees.
func addLocalDropped(env *cmdEnv, rep *walinventory.Report, sysid uint64) {
	id, err := repoID(env)
	if err != nil {
		return
	}
	for _, base := range localGapBases(env) {
		if !walgap.AnyLocal(base, id) {
			continue
		}
		ds, err := walgap.LocalFor(base, id, sysid).Pending()
		if err != nil {
			env.log.Warn("archive-queue-max: cannot read the local gap records", "err", err)
			continue
		}
		var lost []walgap.Dropped
		for _, d := range ds {
			if !rep.Archived(d.Name) { // stored after all: not lost
				lost = append(lost, d)
			}
		}
		rep.AddDropped(walgap.Merge(lost))
	}
}

// localGapBases are the spool bases where check looks for local gap
// records: spool-dir, else the defaults of spoolBase. Unlike spoolBase it
// does not compare them with a data directory: check does not run in one
// (a unit's working directory is often /), and it only reads.
func localGapBases(env *cmdEnv) []string {
	if v := env.s.str("spool-dir"); v != "" {
		if filepath.IsAbs(v) {
			return []string{filepath.Clean(v)}
		}
		return nil
	}
	var out []string
	if x := env.getenv("XDG_CACHE_HOME"); filepath.IsAbs(x) {
		out = append(out, filepath.Join(x, "pgark"))
	} else if h := env.getenv("HOME"); filepath.IsAbs(h) && h != "/" {
		out = append(out, filepath.Join(h, ".cache", "pgark"))
	}
	tmp := fmt.Sprintf("pgark-%d", os.Geteuid())
	return append(out, filepath.Join(os.TempDir(), tmp), filepath.Join("/tmp", tmp))
}
