package replicate

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/mem"
)

func put(t *testing.T, s storage.Store, key, data string) {
	t.Helper()
	if err := s.Put(t.Context(), key, bytes.NewReader([]byte(data)), storage.PutOptions{Size: int64(len(data)), Meta: map[string]string{"k": key}}); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, s storage.Store, key string) (string, map[string]string, error) {
	t.Helper()
	rc, info, err := s.Get(t.Context(), key)
	if err != nil {
		return "", nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), info.Meta, err
}

// writeOrder records the order of Puts.
type writeOrder struct {
	storage.Store
	keys []string
}

func (w *writeOrder) Put(ctx context.Context, key string, r io.Reader, o storage.PutOptions) error {
	w.keys = append(w.keys, key)
	return w.Store.Put(ctx, key, r, o)
}

func TestCopyIncremental(t *testing.T) {
	src := mem.New("src")
	dst := &writeOrder{Store: mem.New("dst")}
	put(t, src, "pgark.json", "config")
	put(t, src, "cluster.json", "cluster")
	put(t, src, "wal/00000001/0000000000000001.pgark", "seg1")
	put(t, src, "wal/00000001/0000000000000002.pgark", "seg2")
	put(t, src, "backups/20261124T154500Z/base.tar.000.pgark", "part")
	put(t, src, "backups/20261124T154500Z/backup.json", "meta")
	put(t, src, "backups/20261125T000000Z/base.tar.000.pgark", "in progress")
	put(t, src, "dumps/20261124T020000Z/shop.dump.pgark", "dump")
	put(t, src, "dumps/20261124T020000Z/dump.json", "dmeta")
	put(t, src, "locks/repository.json", "lock")
	put(t, dst, "wal/00000001/0000000000000001.pgark", "seg1")

	res, err := Copy(t.Context(), src, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 6 || res.Skipped != 1 || len(res.Backups) != 1 || len(res.Dumps) != 1 {
		t.Fatalf("result %+v", res)
	}
	for _, k := range []string{"cluster.json", "wal/00000001/0000000000000002.pgark", "backups/20261124T154500Z/base.tar.000.pgark", "backups/20261124T154500Z/backup.json", "dumps/20261124T020000Z/dump.json"} {
		want, wm, _ := get(t, src, k)
		got, gm, err := get(t, dst, k)
		if err != nil || got != want || gm["k"] != wm["k"] {
			t.Fatalf("%s: %q %v %v, want %q %v", k, got, gm, err, want, wm)
		}
	}
	for _, k := range []string{"pgark.json", "locks/repository.json", "backups/20261125T000000Z/base.tar.000.pgark"} {
		if _, _, err := get(t, dst, k); !storage.IsNotFound(err) {
			t.Fatalf("%s copied: %v", k, err)
		}
	}
	// The metadata object comes after the run's objects.
	pos := map[string]int{}
	for i, k := range dst.keys {
		pos[k] = i
	}
	if pos["backups/20261124T154500Z/backup.json"] < pos["backups/20261124T154500Z/base.tar.000.pgark"] {
		t.Fatalf("backup.json written before its part: %v", dst.keys)
	}

	// Again: nothing to copy.
	res, err = Copy(t.Context(), src, dst, Options{})
	if err != nil || res.Copied != 0 || res.Skipped != 7 {
		t.Fatalf("second copy: %+v, %v", res, err)
	}
}

func TestCopyConflict(t *testing.T) {
	src, dst := mem.New("src"), mem.New("dst")
	put(t, src, "backups/20261124T154500Z/base.tar.000.pgark", "part")
	put(t, src, "backups/20261124T154500Z/backup.json", "meta")
	put(t, dst, "backups/20261124T154500Z/base.tar.000.pgark", "other part")
	res, err := Copy(t.Context(), src, dst, Options{})
	if !errors.Is(err, ErrConflict) || len(res.Conflicts) != 1 {
		t.Fatalf("%+v, %v; want a conflict", res, err)
	}
	if _, _, err := get(t, dst, "backups/20261124T154500Z/backup.json"); !storage.IsNotFound(err) {
		t.Fatalf("backup.json copied over a conflicting part: %v", err)
	}
	if got, _, _ := get(t, dst, "backups/20261124T154500Z/base.tar.000.pgark"); got != "other part" {
		t.Fatalf("conflicting object replaced: %q", got)
	}
}
