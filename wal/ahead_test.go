package wal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
)

// pgWal makes a pg_wal directory with segments 1..n of 1 MiB, each with a
// .ready file, and returns its path and the segment names.
func pgWal(t *testing.T, n int) (string, []string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pg_wal")
	if err := os.MkdirAll(filepath.Join(dir, "archive_status"), 0o700); err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := 1; i <= n; i++ {
		name := SegmentFileName(1, uint64(i), 1<<20)
		synthSegment(t, dir, name, 42, 1<<20)
		ready(t, dir, name)
		names = append(names, name)
	}
	return dir, names
}

func ready(t *testing.T, walDir, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(walDir, "archive_status", name+".ready"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

func aheadOpts(t *testing.T, ahead int) AheadOptions {
	return AheadOptions{SpoolBase: t.TempDir(), RepoID: "test", Ahead: ahead, Jobs: 2, MaxAge: time.Minute, LockWait: 5 * time.Second}
}

// aheadFixture is what the push-ahead tests share: a pg_wal directory of
// segments with .ready files, an encrypted repository, and options.
type aheadFixture struct {
	ctx    context.Context
	r      *repo.Repo
	po     PushOptions
	o      AheadOptions
	walDir string
	names  []string
}

func newAheadFixture(t *testing.T, segments, ahead int) *aheadFixture {
	t.Helper()
	r, c, _ := newRepo(t, true)
	walDir, names := pgWal(t, segments)
	return &aheadFixture{ctx: context.Background(), r: r, po: PushOptions{Codec: c, RetryFor: time.Second},
		o: aheadOpts(t, ahead), walDir: walDir, names: names}
}

// seg is the path of the i-th segment.
func (f *aheadFixture) seg(i int) string { return filepath.Join(f.walDir, f.names[i]) }

// done marks the i-th segment archived, as PostgreSQL does after exit 0.
func (f *aheadFixture) done(i int) {
	st := filepath.Join(f.walDir, "archive_status", f.names[i])
	os.Rename(st+".ready", st+".done")
}

func stored(t *testing.T, ctx context.Context, st storage.Store, name string) bool {
	t.Helper()
	n, _ := ParseName(name)
	_, err := st.Stat(ctx, ObjectKey(n))
	if err != nil && !storage.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func TestPushAhead(t *testing.T) {
	fx := newAheadFixture(t, 7, 4)
	ctx, r, po, o, seg, walDir, names := fx.ctx, fx.r, fx.po, fx.o, fx.seg, fx.walDir, fx.names
	// Files that push-ahead leaves to their own synchronous calls.
	os.WriteFile(filepath.Join(walDir, "00000002.history"), []byte("1\t0/3000000\tno recovery target specified\n"), 0o600)
	ready(t, walDir, "00000002.history")
	partial := names[6] + ".partial"
	synthSegment(t, walDir, partial, 42, 1<<20)
	ready(t, walDir, partial)

	if AnswerFromSpool(o, seg(0), nil) {
		t.Fatal("answered for a segment never pushed")
	}
	res, err := PushAhead(ctx, r, seg(0), po, o)
	if err != nil || res.Name != names[0] || res.AlreadyStored {
		t.Fatalf("push: %+v %v", res, err)
	}
	for i, name := range names {
		if got, want := stored(t, ctx, r.Store, name), i <= 4; got != want {
			t.Fatalf("%s stored: %v, want %v (the asked one and the next 4 .ready)", name, got, want)
		}
	}
	for _, n := range []string{"00000002.history", partial} {
		if stored(t, ctx, r.Store, n) {
			t.Fatalf("%s was pushed ahead; it must take the synchronous path", n)
		}
	}
	// PostgreSQL marks names[0] done, then asks for names[1]: answered
	// from the spool, once.
	fx.done(0)
	if !AnswerFromSpool(o, seg(1), nil) {
		t.Fatal("a segment pushed ahead was not answered from the spool")
	}
	if AnswerFromSpool(o, seg(1), nil) {
		t.Fatal("a record answered twice")
	}
	// A file that changed since it was pushed ahead is not answered for.
	f, _ := os.OpenFile(seg(2), os.O_WRONLY, 0)
	f.WriteAt([]byte("changed"), 300000)
	f.Close()
	if AnswerFromSpool(o, seg(2), nil) {
		t.Fatal("answered for a file whose content changed")
	}
	// Nor is one whose content changed while its mtime was set back: the
	// ctime still moved, so the identity does not match and the CRC-32C,
	// read again, does not either.
	fi, _ := os.Stat(seg(4))
	f, _ = os.OpenFile(seg(4), os.O_WRONLY, 0)
	f.WriteAt([]byte("changed"), 300000)
	f.Close()
	os.Chtimes(seg(4), fi.ModTime(), fi.ModTime())
	if AnswerFromSpool(o, seg(4), nil) {
		t.Fatal("answered for a file whose content changed (mtime set back)")
	}
	// Another repository (other key) has no records.
	other := o
	other.RepoID = "another"
	if AnswerFromSpool(other, seg(3), nil) {
		t.Fatal("answered from another repository's spool")
	}
	// An expired record is not trusted.
	expired := o
	expired.MaxAge = time.Nanosecond
	if AnswerFromSpool(expired, seg(3), nil) {
		t.Fatal("an expired record answered")
	}
	// The changed file: its own call pushes it and finds the conflict.
	if _, err := PushAhead(ctx, r, seg(2), po, o); err == nil {
		t.Fatal("a changed file under an archived name was accepted")
	}
}

// TestPushAheadConcurrent: whatever the interleaving of concurrent
// batches, a record exists only for a segment whose object is stored with
// the recorded content.
func TestPushAheadConcurrent(t *testing.T) {
	ctx := context.Background()
	r, c, _ := newRepo(t, false)
	walDir, names := pgWal(t, 12)
	o := aheadOpts(t, 4)
	po := PushOptions{Codec: c, RetryFor: time.Second}
	var wg sync.WaitGroup
	errs := make(chan error, len(names))
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := filepath.Join(walDir, name)
			if AnswerFromSpool(o, p, nil) {
				return
			}
			if _, err := PushAhead(ctx, r, p, po, o); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, name := range names {
		if !stored(t, ctx, r.Store, name) {
			t.Fatalf("%s not stored", name)
		}
	}
	s, ok, err := openPushSpool(o, filepath.Join(walDir, names[0]), false, nil)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		if filepath.Ext(e.Name()) == recordSuffix {
			name := e.Name()[:len(e.Name())-len(recordSuffix)]
			if !stored(t, ctx, r.Store, name) {
				t.Fatalf("record %s without an object", name)
			}
		}
	}
}

func TestNextSegments(t *testing.T) {
	const seg = 16 << 20
	want, _ := ParseName("000000010000000000000003")
	got := nextSegments(want, seg, History{}, false, 2)
	if exp := []string{"000000010000000000000004", "000000010000000000000005"}; !equal(got, exp) {
		t.Fatalf("no history: %v", got)
	}
	// Timeline 3: 1 until 0/5800000 (inside segment 5), 2 until 0/7000000
	// (the start of segment 7).
	h, err := ParseHistory(3, []byte("1\t0/5800000\tbefore\n2\t0/7000000\tagain\n"))
	if err != nil {
		t.Fatal(err)
	}
	got = nextSegments(want, seg, h, true, 6)
	exp := []string{
		"000000010000000000000004",
		"000000020000000000000005", // the switch segment is read from the new timeline
		"000000020000000000000006",
		"000000030000000000000007",
		"000000030000000000000008",
		"000000030000000000000009",
	}
	if !equal(got, exp) {
		t.Fatalf("with history:\n got %v\nwant %v", got, exp)
	}
	// Never back to an older timeline than the one asked for.
	want2, _ := ParseName("000000030000000000000001")
	if got := nextSegments(want2, seg, h, true, 1); got[0] != "000000030000000000000002" {
		t.Fatalf("went back: %v", got)
	}
	// A history older than the request is ignored.
	h1, _ := ParseHistory(2, []byte("1\t0/5800000\tx\n"))
	want4, _ := ParseName("000000040000000000000009")
	if got := nextSegments(want4, seg, h1, true, 1); got[0] != "00000004000000000000000A" {
		t.Fatalf("older history: %v", got)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPrefetcher(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, c, ids := newRepo(t, true)
	walDir, names := pgWal(t, 10)
	for _, n := range names {
		if _, err := Push(ctx, r, filepath.Join(walDir, n), PushOptions{Codec: c}); err != nil {
			t.Fatal(err)
		}
	}
	pgdata := t.TempDir()
	os.WriteFile(filepath.Join(pgdata, "recovery.signal"), nil, 0o600)
	o := PrefetchOptions{SpoolBase: t.TempDir(), RepoID: "test", PGData: pgdata, Ahead: 4, Jobs: 2,
		MaxSize: 3 << 20, Idle: time.Minute, MaxAge: time.Minute, Wait: 10 * time.Second}
	sp, err := OpenFetchSpool(o, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	// The spool never holds more than MaxSize (ready and in flight).
	var peak int64
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(time.Millisecond):
			}
			var sum int64
			ents, _ := os.ReadDir(sp.Dir())
			for _, e := range ents {
				if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && strings.HasPrefix(strings.TrimPrefix(e.Name(), "."), "0") {
					sum += fi.Size()
				}
			}
			peak = max(peak, sum)
		}
	}()
	if err := sp.Request(names[0]); err != nil {
		t.Fatal(err)
	}
	helperDone := make(chan error, 1)
	go func() { helperDone <- RunPrefetcher(ctx, r, sp, FetchOptions{Identities: ids, RetryFor: time.Second}) }()
	waitFor(t, func() bool { return sp.HelperRunning() })
	// A second helper for the same spool returns at once.
	if err := RunPrefetcher(ctx, r, sp, FetchOptions{Identities: ids}); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	for _, n := range names[1:] {
		// Recovery replays the previous segment meanwhile: the helper
		// gets it ready. Then the call asks for it, as wal-fetch does.
		waitFor(t, func() bool { _, err := os.Stat(filepath.Join(sp.Dir(), n)); return err == nil })
		if err := sp.Request(n); err != nil {
			t.Fatal(err)
		}
		ok, err := sp.Take(ctx, n, dest)
		if err != nil || !ok {
			t.Fatalf("%s: not served from the spool: %v", n, err)
		}
		a, _ := os.ReadFile(filepath.Join(walDir, n))
		b, _ := os.ReadFile(dest)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: prefetched content differs", n)
		}
	}
	// Past the end of the archive: nothing is served, nothing remembered;
	// once archived, it is prefetched.
	next := SegmentFileName(1, 11, 1<<20)
	sp.Request(names[len(names)-1])
	time.Sleep(300 * time.Millisecond)
	if ok, _ := sp.Take(ctx, next, dest); ok {
		t.Fatal("served a segment that is not archived")
	}
	synthSegment(t, walDir, next, 42, 1<<20)
	if _, err := Push(ctx, r, filepath.Join(walDir, next), PushOptions{Codec: c}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := os.Stat(filepath.Join(sp.Dir(), next)); return err == nil })
	// Recovery ends: the helper empties the spool and exits.
	os.Remove(filepath.Join(pgdata, "recovery.signal"))
	select {
	case err := <-helperDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the helper did not exit at the end of recovery")
	}
	close(stopWatch)
	<-watched
	if _, err := os.Stat(sp.Dir()); !os.IsNotExist(err) {
		t.Fatalf("spool left after recovery: %v", err)
	}
	if peak > o.MaxSize || peak == 0 {
		t.Fatalf("spool peak %d bytes, limit %d", peak, o.MaxSize)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPushRecordIdent: a record answers through the file's identity (no
// read) while it matches, and falls back to the CRC-32C when it does not.
func TestPushRecordIdent(t *testing.T) {
	fx := newAheadFixture(t, 4, 3)
	o, seg, names := fx.o, fx.seg, fx.names
	if _, err := PushAhead(fx.ctx, fx.r, seg(0), fx.po, o); err != nil {
		t.Fatal(err)
	}
	s, ok, err := openPushSpool(o, seg(1), false, orDiscard(nil))
	if err != nil || !ok {
		t.Fatalf("no spool: %v", err)
	}
	edit := func(i int, f func(*pushRecord)) {
		p := filepath.Join(s.dir, names[i]+recordSuffix)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var rec pushRecord
		if err := json.Unmarshal(b, &rec); err != nil || rec.Ident == nil {
			t.Fatalf("record of %s: %s (%v): no identity", names[i], b, err)
		}
		f(&rec)
		b, _ = json.Marshal(rec)
		os.WriteFile(p, b, 0o600)
	}
	// A wrong CRC-32C with the right identity: answered without reading.
	edit(1, func(r *pushRecord) { r.CRC32C++ })
	if !AnswerFromSpool(o, seg(1), nil) {
		t.Fatal("a matching identity did not answer")
	}
	// Another identity (a chmod moves the ctime): the CRC-32C decides.
	edit(2, func(r *pushRecord) { r.Ident.CtimeNs-- })
	if !AnswerFromSpool(o, seg(2), nil) {
		t.Fatal("an unchanged file whose identity moved was not answered through its CRC-32C")
	}
	edit(3, func(r *pushRecord) { r.Ident.Ino++; r.CRC32C++ })
	if AnswerFromSpool(o, seg(3), nil) {
		t.Fatal("answered with neither the identity nor the CRC-32C matching")
	}
}

// TestPushAheadBackground: after a batch, a background batch is claimed
// while .ready segments wait without a record; with the claimed lock it
// pushes and records the oldest of them (never the one just answered, never
// one already recorded); no batch is claimed while another holds the spool,
// a batch without the claimed lock pushes nothing, and none is claimed once
// every waiting segment is recorded.
func TestPushAheadBackground(t *testing.T) {
	fx := newAheadFixture(t, 8, 2)
	ctx, r, po, o, seg, names, done := fx.ctx, fx.r, fx.po, fx.o, fx.seg, fx.names, fx.done
	open := func() (*repo.Repo, PushOptions, error) { return r, po, nil }
	// batch claims for seg(i), hands the descriptor down as a process
	// would (a copy of it), and runs the batch.
	batch := func(i int) ([]string, error) {
		t.Helper()
		claim := ClaimBackgroundBatch(o, seg(i))
		if claim == nil {
			t.Fatalf("no background batch claimed after %s", names[i])
		}
		fd, err := syscall.Dup(int(claim.File().Fd()))
		if err != nil {
			t.Fatal(err)
		}
		claim.Release()
		return PushAheadBackground(ctx, seg(i), o, os.NewFile(uintptr(fd), "lock"), open)
	}
	if _, err := PushAhead(ctx, r, seg(0), po, o); err != nil { // 0, and 1-2 ahead
		t.Fatal(err)
	}
	done(0)
	if !AnswerFromSpool(o, seg(1), nil) {
		t.Fatal("not answered from the spool")
	}
	// 1 was answered (its .ready is still there until PostgreSQL renames
	// it), 2 is recorded, 3-7 wait. While a claim holds the spool, no
	// second one is given.
	claim := ClaimBackgroundBatch(o, seg(1))
	if claim == nil {
		t.Fatal("no background batch claimed while 5 segments wait without a record")
	}
	if ClaimBackgroundBatch(o, seg(1)) != nil {
		t.Fatal("a second background batch claimed while the first holds the spool")
	}
	// A batch without the claimed lock (started by hand, or handed another
	// file) pushes nothing.
	if got, err := PushAheadBackground(ctx, seg(1), o, nil, open); !errors.Is(err, ErrNotClaimed) || len(got) != 0 {
		t.Fatalf("a batch without a lock pushed %v (%v)", got, err)
	}
	other, _ := os.Create(filepath.Join(t.TempDir(), "other"))
	if got, err := PushAheadBackground(ctx, seg(1), o, other, open); !errors.Is(err, ErrNotClaimed) || len(got) != 0 {
		t.Fatalf("a batch with another file pushed %v (%v)", got, err)
	}
	claim.Release()
	got, err := batch(1)
	if err != nil || strings.Join(got, ",") != names[3]+","+names[4] {
		t.Fatalf("background batch pushed %v (%v), want %s and %s", got, err, names[3], names[4])
	}
	for i, name := range names {
		if got, want := stored(t, ctx, r.Store, name), i <= 4; got != want {
			t.Fatalf("%s stored: %v, want %v", name, got, want)
		}
	}
	// The batch released the lock when it ended.
	if l, ok, err := tryLock(filepath.Join(claim.SpoolDir, "lock")); err != nil || !ok {
		t.Fatalf("the spool is still locked after the batch: %v", err)
	} else {
		l.unlock()
	}
	done(1)
	for i := 2; i <= 4; i++ {
		if !AnswerFromSpool(o, seg(i), nil) {
			t.Fatalf("%s not answered from the spool", names[i])
		}
		done(i)
	}
	if got, err := batch(4); err != nil || len(got) != 2 {
		t.Fatalf("second background batch: %v %v", got, err)
	}
	if got, err := batch(4); err != nil || len(got) != 1 {
		t.Fatalf("third background batch: %v %v", got, err)
	}
	// Every waiting segment is recorded: nothing to claim.
	if ClaimBackgroundBatch(o, seg(4)) != nil {
		t.Fatal("a background batch claimed with every waiting segment recorded")
	}
}
