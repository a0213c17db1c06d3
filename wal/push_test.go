package wal

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/mem"
)

// synthSegment writes a segment file with a valid long header and some
// non-zero content, for a cluster sysid and segment size.
func synthSegment(t *testing.T, dir, name string, sysid uint64, segSize uint32) string {
	t.Helper()
	n, err := ParseName(name)
	if err != nil {
		t.Fatal(err)
	}
	start, ok := n.StartLSN(segSize)
	if !ok {
		t.Fatalf("%s does not fit %d", name, segSize)
	}
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(segSize)); err != nil {
		t.Fatal(err)
	}
	f.WriteAt(header(sysid, n.Timeline, uint64(start), segSize, 8192, 2), 0)
	f.WriteAt(bytes.Repeat([]byte(name), 4096), 8192)
	f.WriteAt([]byte("tail"), int64(segSize)-4)
	return p
}

// newRepo returns a repository in memory: push and fetch are the same on
// every store (the stores' own tests are in storage/...).
func newRepo(t *testing.T, enc bool) (*repo.Repo, repo.Codec, *crypto.Identities) {
	t.Helper()
	st := mem.New(t.Name())
	c := repo.Codec{Compression: "zstd", Level: 3}
	var ids *crypto.Identities
	if enc {
		kf := filepath.Join(t.TempDir(), "key")
		recip, err := crypto.GenerateIdentity(kf)
		if err != nil {
			t.Fatal(err)
		}
		c.Recipients, _ = crypto.ParseRecipients(recip, "")
		ids, _ = crypto.LoadIdentities(kf)
	}
	cfg, err := repo.Init(context.Background(), st, repo.InitOptions{Compression: "zstd", Level: 3, Recipients: c.Recipients, WriteMode: repo.WriteIfNoneMatch})
	if err != nil {
		t.Fatal(err)
	}
	return &repo.Repo{Store: st, Config: *cfg}, c, ids
}

func TestPushFetchSizes(t *testing.T) {
	ctx := context.Background()
	for _, segSize := range []uint32{1 << 20, 16 << 20, 128 << 20} {
		r, c, ids := newRepo(t, true)
		dir := t.TempDir()
		name := SegmentFileName(1, 3, segSize)
		p := synthSegment(t, dir, name, 42, segSize)
		res, err := Push(ctx, r, p, PushOptions{Codec: c, RetryFor: time.Second})
		if err != nil {
			t.Fatalf("%d: %v", segSize, err)
		}
		if res.AlreadyStored || res.Size != int64(segSize) {
			t.Fatalf("%d: %+v", segSize, res)
		}
		dest := filepath.Join(dir, "RECOVERYXLOG")
		if err := Fetch(ctx, r, name, dest, FetchOptions{Identities: ids, RetryFor: time.Second}); err != nil {
			t.Fatalf("%d: fetch: %v", segSize, err)
		}
		a, _ := os.ReadFile(p)
		b, _ := os.ReadFile(dest)
		if !bytes.Equal(a, b) {
			t.Fatalf("%d: round trip differs", segSize)
		}
		// Again: identical, already stored.
		if res, err := Push(ctx, r, p, PushOptions{Codec: c}); err != nil || !res.AlreadyStored {
			t.Fatalf("%d: second push: %+v %v", segSize, res, err)
		}
	}
}

func TestPushRules(t *testing.T) {
	ctx := context.Background()
	r, c, _ := newRepo(t, false)
	dir := t.TempDir()
	seg := synthSegment(t, dir, "000000010000000000000005", 42, 16<<20)
	if _, err := Push(ctx, r, seg, PushOptions{Codec: c}); err != nil {
		t.Fatal(err)
	}
	// Same name, other content: conflict, stored object kept.
	info1, _ := r.Store.Stat(ctx, ObjectKey(Name{Raw: "000000010000000000000005", Kind: KindSegment}))
	f, _ := os.OpenFile(seg, os.O_WRONLY, 0)
	f.WriteAt([]byte("changed"), 100000)
	f.Close()
	if _, err := Push(ctx, r, seg, PushOptions{Codec: c}); !errors.Is(err, ErrContentConflict) {
		t.Fatalf("conflict: %v", err)
	}
	info2, _ := r.Store.Stat(ctx, info1.Key)
	if info2.Meta[storage.MetaSHA256] != info1.Meta[storage.MetaSHA256] {
		t.Fatal("a conflicting push changed the stored object")
	}
	// Another cluster: refused before anything is stored.
	other := synthSegment(t, t.TempDir(), "000000010000000000000006", 43, 16<<20)
	if _, err := Push(ctx, r, other, PushOptions{Codec: c}); !errors.Is(err, repo.ErrWrongCluster) || !errors.Is(err, ErrBadInput) {
		t.Fatalf("foreign cluster: %v", err)
	}
	// Another segment size: refused.
	small := synthSegment(t, t.TempDir(), "000000010000000000000007", 42, 1<<20)
	if _, err := Push(ctx, r, small, PushOptions{Codec: c}); !errors.Is(err, repo.ErrWrongCluster) {
		t.Fatalf("other segment size: %v", err)
	}
	// Missing: not archived, answered at once.
	start := time.Now()
	err := Fetch(ctx, r, "00000007.history", filepath.Join(dir, "h"), FetchOptions{RetryFor: time.Minute})
	// Retried as transient, it would take the minute of RetryFor.
	if !errors.Is(err, ErrNotArchived) || time.Since(start) > 30*time.Second {
		t.Fatalf("missing history: %v after %s", err, time.Since(start))
	}
}

// TestPushFetchNoCompression: compression "none", with and without age,
// through the framed push pipeline and the fetch pipeline.
func TestPushFetchNoCompression(t *testing.T) {
	ctx := context.Background()
	for _, enc := range []bool{false, true} {
		r, c, ids := newRepo(t, enc)
		c.Compression, c.Level = "none", 0
		dir := t.TempDir()
		name := SegmentFileName(1, 9, 16<<20)
		p := synthSegment(t, dir, name, 42, 16<<20)
		if _, err := Push(ctx, r, p, PushOptions{Codec: c, RetryFor: time.Second}); err != nil {
			t.Fatalf("encrypted=%v: %v", enc, err)
		}
		info, err := r.Store.Stat(ctx, ObjectKey(Name{Raw: name, Kind: KindSegment}))
		if err != nil || info.Size < 16<<20 {
			t.Fatalf("encrypted=%v: stored %d bytes for an uncompressed 16 MiB segment (%v)", enc, info.Size, err)
		}
		dest := filepath.Join(dir, "out")
		if err := Fetch(ctx, r, name, dest, FetchOptions{Identities: ids, RetryFor: time.Second}); err != nil {
			t.Fatalf("encrypted=%v: fetch: %v", enc, err)
		}
		a, _ := os.ReadFile(p)
		b, _ := os.ReadFile(dest)
		if !bytes.Equal(a, b) {
			t.Fatalf("encrypted=%v: round trip differs", enc)
		}
	}
}
