package replicate

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/dump"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
)

// Options configure a copy.
type Options struct {
	// DryRun lists what would be copied, copies nothing.
	DryRun bool
	Log    *slog.Logger
}

// Result counts what a copy did.
type Result struct {
	Copied      int      `json:"copied"`
	CopiedBytes int64    `json:"copied_bytes"`
	Skipped     int      `json:"skipped"` // already in the destination
	Conflicts   []string `json:"conflicts"`
	// Backups and Dumps are the ids of the complete backups and dump runs
	// the destination holds after the copy (copied now or before).
	Backups []string `json:"backups"`
	Dumps   []string `json:"dumps"`
}

// ErrConflict is returned when the destination holds an object under a
// key with other content.
var ErrConflict = errors.New("the destination holds different objects under the same keys")

// ErrVerify is returned when an object read back from the destination is
// not the one read from the source.
var ErrVerify = errors.New("a copied object differs from its source")

// Copy copies what src holds and dst lacks (see the package documentation).
func Copy(ctx context.Context, src, dst storage.Store, o Options) (*Result, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	res := &Result{Conflicts: []string{}, Backups: []string{}, Dumps: []string{}}
	have, err := listSizes(ctx, dst, "")
	if err != nil {
		return res, fmt.Errorf("list the destination %s: %w", dst, err)
	}
	one := func(key string, size int64) error {
		if got, ok := have[key]; ok {
			if got != size {
				res.Conflicts = append(res.Conflicts, key)
				o.Log.Error("the destination holds another object under this key; left alone", "key", key, "source_size", size, "destination_size", got)
				return nil
			}
			res.Skipped++
			return nil
		}
		if o.DryRun {
			res.Copied++
			res.CopiedBytes += size
			return nil
		}
		n, err := copyOne(ctx, src, dst, key)
		if storage.IsExists(err) {
			// Written meanwhile (a wal-push into both): compare.
			info, serr := dst.Stat(ctx, key)
			if serr == nil && info.Size == size {
				res.Skipped++
				return nil
			}
			res.Conflicts = append(res.Conflicts, key)
			return nil
		}
		if err != nil {
			return err
		}
		res.Copied++
		res.CopiedBytes += n
		o.Log.Debug("copied", "key", key, "bytes", n)
		return nil
	}

	// The cluster binding, when the destination has none.
	if info, err := src.Stat(ctx, repo.ClusterKey); err == nil {
		if err := one(repo.ClusterKey, info.Size); err != nil {
			return res, err
		}
	} else if !storage.IsNotFound(err) {
		return res, fmt.Errorf("read the source's %s: %w", repo.ClusterKey, err)
	}

	// WAL, in key order (timeline, then position).
	wal, err := listSizes(ctx, src, "wal/")
	if err != nil {
		return res, fmt.Errorf("list the source's WAL: %w", err)
	}
	for _, k := range sortedKeys(wal) {
		if err := one(k, wal[k]); err != nil {
			return res, err
		}
	}

	// Complete backups and dump runs: objects first, metadata last.
	for _, set := range []struct {
		prefix, meta string
		ids          *[]string
	}{{catalog.Prefix, catalog.MetaName, &res.Backups}, {dump.Prefix, dump.MetaName, &res.Dumps}} {
		objs, err := listSizes(ctx, src, set.prefix)
		if err != nil {
			return res, fmt.Errorf("list the source's %s: %w", set.prefix, err)
		}
		runs := map[string][]string{}
		for k := range objs {
			id, _, ok := strings.Cut(strings.TrimPrefix(k, set.prefix), "/")
			if ok {
				runs[id] = append(runs[id], k)
			}
		}
		ids := make([]string, 0, len(runs))
		for id := range runs {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			metaKey := set.prefix + id + "/" + set.meta
			if _, complete := objs[metaKey]; !complete {
				o.Log.Debug("not copied: incomplete (in progress or failed)", "id", id, "prefix", set.prefix)
				continue
			}
			keys := runs[id]
			sort.Strings(keys)
			conflicts := len(res.Conflicts)
			for _, k := range keys {
				if k == metaKey {
					continue
				}
				if err := one(k, objs[k]); err != nil {
					return res, err
				}
			}
			if len(res.Conflicts) > conflicts {
				o.Log.Error("metadata not copied: the destination holds other objects of this run", "id", id)
				continue
			}
			if err := one(metaKey, objs[metaKey]); err != nil {
				return res, err
			}
			*set.ids = append(*set.ids, id)
		}
	}
	if len(res.Conflicts) > 0 {
		return res, fmt.Errorf("%w: %d objects, e.g. %s", ErrConflict, len(res.Conflicts), res.Conflicts[0])
	}
	return res, nil
}

// copyOne copies one object as stored and reads it back to compare. It
// returns the stored size.
func copyOne(ctx context.Context, src, dst storage.Store, key string) (int64, error) {
	rc, info, err := src.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("read %s from %s: %w", key, src, err)
	}
	defer rc.Close()
	h := sha256.New()
	err = dst.Put(ctx, key, io.TeeReader(rc, h), storage.PutOptions{Meta: info.Meta, Size: info.Size})
	if err != nil {
		return 0, fmt.Errorf("write %s to %s: %w", key, dst, err)
	}
	want := h.Sum(nil)
	back, _, err := dst.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("read back %s from %s: %w", key, dst, err)
	}
	defer back.Close()
	h2 := sha256.New()
	n, err := io.Copy(h2, back)
	if err != nil {
		return 0, fmt.Errorf("read back %s from %s: %w", key, dst, err)
	}
	if got := h2.Sum(nil); string(got) != string(want) || n != info.Size {
		return 0, fmt.Errorf("%w: %s in %s: %d bytes with SHA-256 %x, the source's %d bytes with SHA-256 %x", ErrVerify, key, dst, n, got, info.Size, want)
	}
	return n, nil
}

func listSizes(ctx context.Context, s storage.Store, prefix string) (map[string]int64, error) {
	m := map[string]int64{}
	err := s.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		m[oi.Key] = oi.Size
		return nil
	})
	return m, err
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
