package walgap

import (
	"context"
	"fmt"
	"sort"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/wal"
)

// Flush writes the local records of l to the repository, merged into
// ranges, create-only (an existing record of the same range is success:
// an earlier flush was interrupted before it forgot the local records),
// then forgets them locally. It returns the ranges written.
func Flush(ctx context.Context, s storage.Store, signer *crypto.Signer, l Local) ([]Range, error) {
	ds, err := l.Pending()
	if err != nil || len(ds) == 0 {
		return nil, err
	}
	// A segment that is in the repository after all (an earlier push
	// stored it, but its answer never reached PostgreSQL) was not lost.
	var lost []Dropped
	for _, d := range ds {
		n, err := wal.ParseName(d.Name)
		if err != nil {
			continue
		}
		_, err = s.Stat(ctx, wal.ObjectKey(n))
		switch {
		case storage.IsNotFound(err):
			lost = append(lost, d)
		case err != nil:
			return nil, fmt.Errorf("check the dropped %s in the repository: %w", d.Name, err)
		}
	}
	rs := Merge(lost)
	for _, r := range rs {
		err := repo.PutSignedJSON(ctx, s, Key(r), r, signer)
		if err != nil && !storage.IsExists(err) {
			return nil, fmt.Errorf("write the gap record %s: %w", Key(r), err)
		}
	}
	names := make([]string, len(ds))
	for i, d := range ds {
		names[i] = d.Name
	}
	if err := l.Forget(names); err != nil {
		return rs, fmt.Errorf("forget the local gap records: %w", err)
	}
	return rs, nil
}

// Record is a repository record as listed: its range (read from the key)
// and its key.
type Record struct {
	Range
	Key string
}

// List lists the repository's gap records (one LIST, no reads), by key.
func List(ctx context.Context, s storage.Store) ([]Record, error) {
	var out []Record
	err := s.List(ctx, Prefix, func(oi storage.ObjectInfo) error {
		if r, ok := ParseKey(oi.Key); ok {
			out = append(out, Record{Range: r, Key: oi.Key})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the gap records: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}
