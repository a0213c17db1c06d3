package retention

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/dump"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/mem"
	"github.com/pgark/pgark/wal"
	"github.com/pgark/pgark/walinventory"
)

// deleteLog is a Store that records the keys it is asked to delete.
type deleteLog struct {
	storage.Store
	mu      sync.Mutex
	deleted []string
}

func (d *deleteLog) Delete(ctx context.Context, key string) error {
	d.mu.Lock()
	d.deleted = append(d.deleted, key)
	d.mu.Unlock()
	return d.Store.Delete(ctx, key)
}

func putKeys(t *testing.T, s storage.Store, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if err := s.Put(t.Context(), k, strings.NewReader(k), storage.PutOptions{Size: int64(len(k))}); err != nil {
			t.Fatal(err)
		}
	}
}

func listAll(t *testing.T, s storage.Store) []string {
	t.Helper()
	var keys []string
	if err := s.List(t.Context(), "", func(oi storage.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestApplyOrder: a dropped backup loses its backup.json before its other
// objects, leftovers go whole, WAL below the cut goes, and what the plan
// keeps stays.
func TestApplyOrder(t *testing.T) {
	s := &deleteLog{Store: mem.New(t.Name())}
	const old, kept, left = "20261101T000000Z", "20261120T000000Z", "20261010T000000Z"
	putKeys(t, s,
		catalog.MetaKey(old), catalog.Prefix+old+"/base.tar.pgark", catalog.Prefix+old+"/pg_tblspc.tar.pgark",
		catalog.MetaKey(kept), catalog.Prefix+kept+"/base.tar.pgark",
		catalog.Prefix+left+"/base.tar.pgark",
		"wal/0000000100000000/000000010000000000000001.pgark", "wal/0000000100000000/000000010000000000000009.pgark")
	plan := &Plan{
		Backups: []Decision{
			{Backup: &catalog.Meta{ID: old}, Why: "outside the policy"},
			{Backup: &catalog.Meta{ID: kept}, Keep: true},
		},
		Leftovers: []string{left},
		DeleteWAL: []walinventory.Object{{
			Name: wal.Name{Raw: "000000010000000000000001"},
			Info: storage.ObjectInfo{Key: "wal/0000000100000000/000000010000000000000001.pgark"},
		}},
		KeepWALAt: "000000010000000000000009",
	}
	var logs bytes.Buffer
	if err := Apply(t.Context(), s, plan, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	want := []string{
		catalog.MetaKey(old), catalog.Prefix + old + "/base.tar.pgark", catalog.Prefix + old + "/pg_tblspc.tar.pgark",
		catalog.Prefix + left + "/base.tar.pgark",
		"wal/0000000100000000/000000010000000000000001.pgark",
	}
	if !slices.Equal(s.deleted, want) {
		t.Errorf("deleted\n%q\nwant\n%q", s.deleted, want)
	}
	if got, want := listAll(t, s), []string{catalog.MetaKey(kept), catalog.Prefix + kept + "/base.tar.pgark", "wal/0000000100000000/000000010000000000000009.pgark"}; !slices.Equal(got, want) {
		t.Errorf("left in the store %q, want %q", got, want)
	}
	for _, msg := range []string{"deleted backup", "backup=" + old, "deleted incomplete backup", "backup=" + left, "deleted WAL"} {
		if !strings.Contains(logs.String(), msg) {
			t.Errorf("log does not say %q:\n%s", msg, logs.String())
		}
	}
}

// TestApplyDumpsOrder: a dropped dump loses its dump.json first; a failed
// run keeps its failed.json until the rest of it is gone.
func TestApplyDumpsOrder(t *testing.T) {
	s := &deleteLog{Store: mem.New(t.Name())}
	const old, kept, failed = "20261101T000000Z", "20261120T000000Z", "20261105T000000Z"
	putKeys(t, s,
		dump.MetaKey(old), dump.Prefix+old+"/db1.dump.pgark", dump.Prefix+old+"/globals.sql.pgark",
		dump.MetaKey(kept), dump.Prefix+kept+"/db1.dump.pgark",
		dump.FailedKey(failed), dump.Prefix+failed+"/a.dump.pgark", dump.Prefix+failed+"/z.dump.pgark")
	plan := &DumpPlan{
		Dumps: []DumpDecision{
			{Dump: &dump.Meta{ID: old}, Why: "outside the policy"},
			{Dump: &dump.Meta{ID: kept}, Keep: true},
		},
		Leftovers: []string{failed},
	}
	var logs bytes.Buffer
	if err := ApplyDumps(t.Context(), s, plan, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	want := []string{
		dump.MetaKey(old), dump.Prefix + old + "/db1.dump.pgark", dump.Prefix + old + "/globals.sql.pgark",
		dump.Prefix + failed + "/a.dump.pgark", dump.Prefix + failed + "/z.dump.pgark", dump.FailedKey(failed),
	}
	if !slices.Equal(s.deleted, want) {
		t.Errorf("deleted\n%q\nwant\n%q", s.deleted, want)
	}
	if got, want := listAll(t, s), []string{dump.Prefix + kept + "/db1.dump.pgark", dump.MetaKey(kept)}; !slices.Equal(got, want) {
		t.Errorf("left in the store %q, want %q", got, want)
	}
	for _, msg := range []string{"deleted dump", "dump=" + old, "deleted failed or incomplete dump", "dump=" + failed} {
		if !strings.Contains(logs.String(), msg) {
			t.Errorf("log does not say %q:\n%s", msg, logs.String())
		}
	}
}

// TestApplyStopsAtFailure: a failed deletion stops the run and names it.
func TestApplyStopsAtFailure(t *testing.T) {
	s := &deleteLog{Store: mem.New(t.Name())}
	const id = "20261101T000000Z"
	plan := &DumpPlan{Leftovers: []string{id, "20261102T000000Z"}}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := ApplyDumps(ctx, s, plan, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "delete failed dump "+id) {
		t.Fatalf("ApplyDumps with a cancelled context: %v", err)
	}
	if len(s.deleted) != 0 {
		t.Fatalf("deleted %q after the failure", s.deleted)
	}
}
