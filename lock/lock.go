// Package lock is the repository lock that keeps `backup` and `retain` (and
// two backups) from running at the same time on one repository.
//
// The lock is one small JSON object, Key, that names its holder: the
// command, the host, the pid (with the process's start time, so that a
// reused pid is not mistaken for the holder), a random token and an expiry.
// Every change goes through storage.Store.Swap, a compare-and-swap:
//
//   - taking a free lock creates the object create-only (If-None-Match: *
//     on S3); a released lock is taken by swapping it at the version read;
//   - the holder renews the expiry every TTL/3 by a swap at the version it
//     wrote last (a heartbeat), so a backup may run for hours;
//   - a stale lock (expired, or held on this host by a process that is
//     gone) is taken over by a swap at the stale version, with a warning,
//     never by delete-then-create: of two processes taking over at once,
//     one wins;
//   - releasing swaps in a "released" record (the object stays).
//
// A holder that cannot renew (it was taken over, or the store refused it
// until the lock expired) cancels the context it was given: the backup or
// retention stops instead of running unprotected.
package lock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pgark/pgark/storage"
)

// Key is the lock object's key in the repository.
const Key = "locks/repository.json"

// DefaultTTL is how long a lock lives without a heartbeat.
const DefaultTTL = 2 * time.Minute

// maxLockSize bounds the lock object read back.
const maxLockSize = 64 << 10

// States of the lock record.
const (
	StateHeld     = "held"
	StateReleased = "released"
)

// Info is the lock record.
type Info struct {
	State    string    `json:"state"`
	Command  string    `json:"command"`
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	PIDStart string    `json:"pid_start,omitempty"` // start time of the process, from /proc
	Token    string    `json:"token"`
	Acquired time.Time `json:"acquired"`
	Renewed  time.Time `json:"renewed"`
	Expires  time.Time `json:"expires"`
	Version  string    `json:"pgark_version,omitempty"`
}

// String names the holder for messages.
func (i Info) String() string {
	return fmt.Sprintf("%s (pid %d on %s, since %s, expires %s)", i.Command, i.PID, i.Host,
		i.Acquired.UTC().Format(time.RFC3339), i.Expires.UTC().Format(time.RFC3339))
}

// BusyError is returned when another process holds the lock.
type BusyError struct {
	Holder Info
	Waited time.Duration
}

func (e *BusyError) Error() string {
	s := "the repository is locked by " + e.Holder.String()
	if e.Waited > 0 {
		s += fmt.Sprintf("; waited %s", e.Waited.Round(time.Second))
	}
	return s + "; backup and retain never run at the same time: try again later, or pass --lock-wait"
}

// ErrLost is the cause of the holder's context when the lock was lost.
var ErrLost = errors.New("the repository lock was lost")

// Options configure Acquire.
type Options struct {
	Command string        // what the holder runs ("backup", "retain")
	TTL     time.Duration // 0: DefaultTTL
	// Wait is how long to wait for a busy lock; 0 fails at once.
	Wait time.Duration
	// Poll is how often a waiter looks again; 0: a second or so.
	Poll    time.Duration
	Version string // pgark version, recorded
	Log     *slog.Logger

	// For tests: the clock, and who we are.
	Now  func() time.Time
	Host string
	PID  int
	// Alive reports whether a process of this host runs with that pid and
	// start time; nil: look in /proc.
	Alive func(pid int, start string) bool
}

func (o *Options) defaults() {
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	if o.PID == 0 {
		o.PID = os.Getpid()
	}
	if o.Alive == nil {
		o.Alive = processAlive
	}
}

// Lock is a held lock.
type Lock struct {
	store storage.Store
	opts  Options
	// info is written by the heartbeat only, under mu; Info reads it
	// under mu, the heartbeat and Release (once it ended) without.
	mu      sync.Mutex
	info    Info
	version string

	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   chan struct{}
	done   chan struct{}
}

// Context is canceled, with ErrLost as its cause, when the lock is lost.
func (l *Lock) Context() context.Context { return l.ctx }

// Info is the record of the held lock.
func (l *Lock) Info() Info {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.info
}

// Acquire takes the lock, waiting up to o.Wait for a busy one, and starts
// the heartbeat. The returned lock's Context derives from ctx.
func Acquire(ctx context.Context, s storage.Store, o Options) (*Lock, error) {
	o.defaults()
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		return nil, err
	}
	now := o.Now()
	me := Info{
		State: StateHeld, Command: o.Command, Host: o.Host, PID: o.PID,
		Token: hex.EncodeToString(token), Acquired: now, Renewed: now,
		Expires: now.Add(o.TTL), Version: o.Version,
	}
	if o.PID == os.Getpid() {
		me.PIDStart = processStart(o.PID)
	}
	start := time.Now()
	// A waiter also watches the holder: a lock whose version has not
	// changed for longer than its TTL is stale whatever the clocks say.
	var watched string
	var watchedSince time.Time
	for {
		me.Renewed = o.Now()
		me.Expires = me.Renewed.Add(o.TTL)
		data, err := json.Marshal(me)
		if err != nil {
			return nil, err
		}
		v, err := s.Swap(ctx, Key, data, "")
		if err == nil {
			return newHeld(ctx, s, o, me, v), nil
		}
		if !storage.IsExists(err) {
			return nil, fmt.Errorf("take the repository lock: %w", err)
		}
		raw, cur, err := s.ReadSmall(ctx, Key, maxLockSize)
		if storage.IsNotFound(err) {
			continue // released by deletion meanwhile: create again
		}
		if err != nil {
			return nil, fmt.Errorf("read the repository lock: %w", err)
		}
		if cur == "" {
			return nil, fmt.Errorf("read the repository lock: %w", storage.ErrNoVersion)
		}
		var held Info
		damaged := json.Unmarshal(raw, &held) != nil
		if cur != watched {
			watched, watchedSince = cur, time.Now()
		}
		reason := ""
		switch {
		case damaged:
			reason = "the lock object is damaged"
		case held.Token == me.Token:
			return newHeld(ctx, s, o, me, cur), nil // our own write, its reply lost
		case held.State == StateReleased:
		case o.Now().After(held.Expires):
			reason = fmt.Sprintf("it expired at %s", held.Expires.UTC().Format(time.RFC3339))
		case held.Host == o.Host && held.PID > 0 && !o.Alive(held.PID, held.PIDStart):
			reason = fmt.Sprintf("process %d is gone from this host", held.PID)
		case time.Since(watchedSince) > o.TTL+o.Poll:
			reason = fmt.Sprintf("it has not been renewed for %s", time.Since(watchedSince).Round(time.Second))
		default:
			waited := time.Since(start)
			if waited >= o.Wait {
				return nil, &BusyError{Holder: held, Waited: waited}
			}
			t := time.NewTimer(min(o.Poll, o.Wait-waited))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("waiting for the repository lock held by %s: %w", held, ctx.Err())
			case <-t.C:
			}
			continue
		}
		if reason != "" {
			o.Log.Warn("taking over a stale repository lock", "holder", held.String(), "why", reason)
		}
		data, err = json.Marshal(me)
		if err != nil {
			return nil, err
		}
		v, err = s.Swap(ctx, Key, data, cur)
		if err == nil {
			return newHeld(ctx, s, o, me, v), nil
		}
		if !errors.Is(err, storage.ErrChanged) {
			return nil, fmt.Errorf("take over the repository lock: %w", err)
		}
		// Someone else moved first: look again.
	}
}

func newHeld(ctx context.Context, s storage.Store, o Options, me Info, version string) *Lock {
	lctx, cancel := context.WithCancelCause(ctx)
	l := &Lock{store: s, opts: o, info: me, version: version, ctx: lctx, cancel: cancel,
		stop: make(chan struct{}), done: make(chan struct{})}
	go l.heartbeat()
	return l
}

// heartbeat renews the lock every TTL/3 until Release. When a renewal finds
// the lock taken, or renewals fail until the lock has expired, it cancels
// the holder's context.
func (l *Lock) heartbeat() {
	defer close(l.done)
	t := time.NewTicker(l.opts.TTL / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		next := l.info
		next.Renewed = l.opts.Now()
		next.Expires = next.Renewed.Add(l.opts.TTL)
		data, err := json.Marshal(next)
		if err != nil {
			l.cancel(fmt.Errorf("%w: %v", ErrLost, err))
			return
		}
		// The renewal must not outlive the lock it renews.
		rctx, cancel := context.WithDeadline(context.Background(), l.info.Expires)
		v, err := l.store.Swap(rctx, Key, data, l.version)
		cancel()
		switch {
		case err == nil:
			l.mu.Lock()
			l.info, l.version = next, v
			l.mu.Unlock()
		case errors.Is(err, storage.ErrChanged):
			holder := "another process"
			if raw, _, rerr := l.store.ReadSmall(context.Background(), Key, maxLockSize); rerr == nil {
				var h Info
				if json.Unmarshal(raw, &h) == nil {
					holder = h.String()
				}
			}
			l.opts.Log.Error("the repository lock was taken over", "by", holder)
			l.cancel(fmt.Errorf("%w: taken over by %s", ErrLost, holder))
			return
		case !l.opts.Now().Before(l.info.Expires):
			l.opts.Log.Error("the repository lock expired: it could not be renewed", "err", err)
			l.cancel(fmt.Errorf("%w: it could not be renewed before it expired: %v", ErrLost, err))
			return
		default:
			l.opts.Log.Warn("renewing the repository lock failed; retrying", "err", err,
				"expires", l.info.Expires.UTC().Format(time.RFC3339))
		}
	}
}

// Release stops the heartbeat and marks the lock released. A lock that was
// lost is not touched.
func (l *Lock) Release(ctx context.Context) error {
	close(l.stop)
	<-l.done
	defer l.cancel(nil)
	if l.ctx.Err() != nil && errors.Is(context.Cause(l.ctx), ErrLost) {
		return nil
	}
	rel := l.info
	rel.State = StateReleased
	rel.Renewed = l.opts.Now()
	rel.Expires = rel.Renewed
	data, err := json.Marshal(rel)
	if err != nil {
		return err
	}
	if _, err := l.store.Swap(ctx, Key, data, l.version); err != nil {
		return fmt.Errorf("release the repository lock (it expires by itself at %s): %w",
			l.info.Expires.UTC().Format(time.RFC3339), err)
	}
	return nil
}

// Read returns the current lock record, for status reports; ok is false
// when there is none.
func Read(ctx context.Context, s storage.Store) (info Info, ok bool, err error) {
	raw, _, err := s.ReadSmall(ctx, Key, maxLockSize)
	if storage.IsNotFound(err) {
		return Info{}, false, nil
	}
	if err != nil {
		return Info{}, false, err
	}
	if err := json.Unmarshal(raw, &info); err != nil {
		return Info{}, false, fmt.Errorf("the repository lock object is damaged: %w", err)
	}
	return info, true, nil
}

// processStart returns the start time of a process (field 22 of
// /proc/PID/stat, in clock ticks since boot), or "" when unknown.
func processStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// processAlive reports whether pid runs on this host as the process that
// took the lock (same start time when both are known).
func processAlive(pid int, start string) bool {
	err := syscall.Kill(pid, 0)
	if err != nil && errors.Is(err, syscall.ESRCH) {
		return false
	}
	// EPERM: it exists, owned by someone else.
	if start != "" {
		if now := processStart(pid); now != "" && now != start {
			return false // the pid was reused
		}
	}
	return true
}
