package lock

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/mem"
)

// newStore returns a store in memory: the lock only needs the Store
// contract (Swap), which every backend's conformance run checks.
func newStore(t *testing.T) storage.Store { return mem.New(t.Name()) }

// clock is a settable clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }
func alive(int, string) bool         { return true }
func dead(int, string) bool          { return false }
func opts(cmd string, pid int) Options {
	return Options{Command: cmd, Host: "db1", PID: pid, Alive: alive}
}
func withClock(o Options, c *clock) Options { o.Now = c.Now; return o }

func TestBusyNamesHolder(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	a, err := Acquire(ctx, s, opts("backup", 101))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(ctx, s, opts("retain", 202))
	var busy *BusyError
	if !errors.As(err, &busy) {
		t.Fatalf("second Acquire: %v, want a BusyError", err)
	}
	for _, want := range []string{"backup", "pid 101", "db1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("busy error %q does not name %q", err, want)
		}
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	info, ok, err := Read(ctx, s)
	if err != nil || !ok || info.State != StateReleased {
		t.Fatalf("after release: %+v %v %v", info, ok, err)
	}
	b, err := Acquire(ctx, s, opts("retain", 202))
	if err != nil {
		t.Fatalf("Acquire after release: %v", err)
	}
	if b.Info().Command != "retain" {
		t.Fatalf("holder %+v", b.Info())
	}
	b.Release(ctx)
}

func TestTakeOverExpiredAndOldHolderLoses(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	c := newClock()
	o := withClock(opts("backup", 101), c)
	o.TTL = 150 * time.Millisecond
	a, err := Acquire(ctx, s, o)
	if err != nil {
		t.Fatal(err)
	}
	// The holder's heartbeat stalls (its clock stands still, but the
	// other process sees the expiry pass).
	c.Add(time.Hour)
	var logs bytes.Buffer
	ob := withClock(opts("retain", 202), c)
	ob.Log = slog.New(slog.NewTextHandler(&logs, nil))
	b, err := Acquire(ctx, s, ob)
	if err != nil {
		t.Fatalf("take over an expired lock: %v", err)
	}
	defer b.Release(ctx)
	if !strings.Contains(logs.String(), "stale") || !strings.Contains(logs.String(), "expired") {
		t.Fatalf("no warning about the takeover: %q", logs.String())
	}
	select {
	case <-a.Context().Done():
		if !errors.Is(context.Cause(a.Context()), ErrLost) {
			t.Fatalf("cause %v, want ErrLost", context.Cause(a.Context()))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the old holder did not notice that its lock was taken over")
	}
	// The old holder's release must not free the new holder's lock.
	a.Release(ctx)
	info, _, _ := Read(ctx, s)
	if info.State != StateHeld || info.Command != "retain" {
		t.Fatalf("after the old holder's release: %+v", info)
	}
}

func TestTakeOverDeadProcess(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := Acquire(ctx, s, opts("backup", 101)); err != nil {
		t.Fatal(err)
	}
	// Another host cannot know whether pid 101 lives: busy.
	other := opts("backup", 303)
	other.Host, other.Alive = "db2", dead
	if _, err := Acquire(ctx, s, other); err == nil {
		t.Fatal("a process on another host took a live lock")
	}
	// On the holder's host, the pid is gone: stale.
	same := opts("backup", 303)
	same.Alive = dead
	l, err := Acquire(ctx, s, same)
	if err != nil {
		t.Fatalf("take over a dead process's lock: %v", err)
	}
	l.Release(ctx)
}

func TestHeartbeatKeepsLock(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	o := opts("backup", 101)
	o.TTL = time.Second
	a, err := Acquire(ctx, s, o)
	if err != nil {
		t.Fatal(err)
	}
	first := a.Info().Expires
	// Wait until the record has been renewed past three TTLs from the start.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		info, _, err := Read(ctx, s)
		if err == nil && info.Expires.After(first.Add(2*o.TTL)) {
			break
		}
		if time.Now().After(deadline) || a.Context().Err() != nil {
			t.Fatalf("expiry not renewed past %v: %+v, %v (lock: %v)", first.Add(2*o.TTL), info, err, context.Cause(a.Context()))
		}
	}
	if a.Context().Err() != nil {
		t.Fatalf("lock lost: %v", context.Cause(a.Context()))
	}
	other := opts("retain", 202)
	other.TTL = o.TTL
	if _, err := Acquire(ctx, s, other); err == nil {
		t.Fatal("a renewed lock was taken")
	}
	info, _, _ := Read(ctx, s)
	if !info.Expires.After(first) {
		t.Fatalf("expiry not renewed: %v, was %v", info.Expires, first)
	}
	a.Release(ctx)
}

func TestWaitForRelease(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	a, err := Acquire(ctx, s, opts("backup", 101))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		a.Release(ctx)
	}()
	o := opts("retain", 202)
	o.Wait, o.Poll = 10*time.Second, 50*time.Millisecond
	b, err := Acquire(ctx, s, o)
	if err != nil {
		t.Fatalf("waiting Acquire: %v", err)
	}
	b.Release(ctx)
	// A short wait on a busy lock ends in a BusyError that says it waited.
	c, _ := Acquire(ctx, s, opts("backup", 101))
	o.Wait = 200 * time.Millisecond
	_, err = Acquire(ctx, s, o)
	var busy *BusyError
	if !errors.As(err, &busy) || busy.Waited < 200*time.Millisecond {
		t.Fatalf("short wait: %v", err)
	}
	c.Release(ctx)
}

func TestConcurrentTakeOverOneWins(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	c := newClock()
	if _, err := Acquire(ctx, s, withClock(opts("backup", 101), c)); err != nil {
		t.Fatal(err)
	}
	c.Add(time.Hour) // stale for everyone
	var (
		wg   sync.WaitGroup
		wins atomic.Int32
	)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			l, err := Acquire(ctx, s, withClock(opts("retain", 1000+i), c))
			var busy *BusyError
			switch {
			case err == nil:
				wins.Add(1)
				_ = l // held until the test ends
			case errors.As(err, &busy):
			default:
				t.Errorf("Acquire: %v", err)
			}
		}(i)
	}
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Fatalf("%d processes took over the stale lock, want 1", n)
	}
}

func TestProcessStart(t *testing.T) {
	if processStart(1) == "" {
		t.Skip("no /proc")
	}
	self := processStart(mypid())
	if self == "" {
		t.Fatal("no start time for this process")
	}
	if !processAlive(mypid(), self) {
		t.Fatal("this process is not alive")
	}
	if processAlive(mypid(), self+"1") {
		t.Fatal("a different start time must mean a reused pid")
	}
}

func mypid() int { return os.Getpid() }
