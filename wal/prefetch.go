package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/pgark/pgark/repo"
)

// Prefetch: when restore_command asks for segment X, the next segments of the
// same timeline are downloaded, verified, decrypted and decompressed into a
// spool by a helper process that outlives the call, so that the following
// calls only rename a file. The calls and the helper talk through the spool
// directory:
//
//	want            the name the newest call asked for (written by calls)
//	helper.lock     held (flock) by the running helper: at most one per spool
//	NAME            a verified segment, ready to be renamed into place
//	NAME.inflight   the helper is downloading NAME
//	history/        copies of the .history files that calls fetched, from
//	                which the helper learns the timeline switches to follow
//
// A segment that the repository does not have is never remembered: the
// helper retries it later, and a call that does not find its segment ready
// asks the repository itself, so exit status 1 only ever comes from a live
// answer in that call.

// PrefetchOptions configure the prefetch spool and its helper.
type PrefetchOptions struct {
	SpoolBase string // "" turns prefetch off
	RepoID    string // the repository's location, to key the spool
	PGData    string // the data directory being recovered (absolute)
	Ahead     int    // segments kept ready ahead of the newest request (0: off)
	Jobs      int    // downloads at once
	MaxSize   int64  // bytes of ready and in-flight segments, at most
	// Idle is how long the helper waits for the next call before it
	// cleans up and exits.
	Idle time.Duration
	// MaxAge is how long a prefetched file may wait to be served.
	MaxAge time.Duration
	// Wait bounds how long a call waits for a download in progress
	// before it fetches the segment itself.
	Wait time.Duration
}

func (o PrefetchOptions) enabled() bool { return o.SpoolBase != "" && o.Ahead > 0 && o.Jobs > 0 }

// FetchSpool is the prefetch spool of one repository and data directory.
type FetchSpool struct {
	dir string
	o   PrefetchOptions
	log *slog.Logger
}

const (
	wantFile     = "want"
	helperLock   = "helper.lock"
	inflightSufx = ".inflight"
	historyDir   = "history"
)

// OpenFetchSpool creates (if needed) and returns the prefetch spool for
// o.RepoID and o.PGData, or nil when prefetch is off.
func OpenFetchSpool(o PrefetchOptions, log *slog.Logger) (*FetchSpool, error) {
	if !o.enabled() {
		return nil, nil
	}
	pgdata, err := filepath.Abs(o.PGData)
	if err != nil {
		return nil, err
	}
	o.PGData = pgdata
	if !recovering(pgdata) {
		// Not archive recovery or a standby (pg_rewind, a manual call):
		// no helper, nothing to prefetch for.
		return nil, nil
	}
	sysid, _ := ControlSystemID(pgdata) // 0 when unreadable: the data directory still keys it
	s := &FetchSpool{dir: spoolDir(o.SpoolBase, "fetch", sysid, o.RepoID, pgdata), o: o, log: orDiscard(log)}
	if err := makePrivateDir(filepath.Join(s.dir, historyDir)); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := makePrivateDir(s.dir); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return s, nil
}

// Dir is the spool's directory.
func (s *FetchSpool) Dir() string { return s.dir }

// Request tells the helper which segment recovery needs now.
func (s *FetchSpool) Request(name string) error {
	return writeFileAtomic(s.dir, wantFile, []byte(name+"\n"))
}

// HelperRunning reports whether a helper serves this spool.
func (s *FetchSpool) HelperRunning() bool { return isLocked(filepath.Join(s.dir, helperLock)) }

// Take moves the prefetched segment name to dest, waiting for a download in
// progress (up to the Wait option). It reports false when the segment is not
// in the spool: the caller then fetches it from the repository.
func (s *FetchSpool) Take(ctx context.Context, name, dest string) (bool, error) {
	ready := filepath.Join(s.dir, name)
	deadline := time.Now().Add(s.o.Wait)
	aliveChecked := time.Now()
	for {
		fi, err := os.Stat(ready)
		if err == nil {
			if time.Since(fi.ModTime()) > s.o.MaxAge {
				os.Remove(ready)
				return false, nil
			}
			err = os.Rename(ready, dest)
			if errors.Is(err, syscall.EXDEV) {
				err = moveAcross(ready, dest)
			}
			if err == nil {
				return true, nil
			}
			if !errors.Is(err, os.ErrNotExist) { // a concurrent call took it
				return false, err
			}
		}
		if _, err := os.Stat(ready + inflightSufx); err != nil || time.Now().After(deadline) || ctx.Err() != nil {
			return false, nil
		}
		if time.Since(aliveChecked) > 100*time.Millisecond {
			if !s.HelperRunning() { // a killed helper's marker
				return false, nil
			}
			aliveChecked = time.Now()
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// moveAcross moves src to dest on another file system: a copy to a
// temporary file beside dest, renamed into place, then src removed.
func moveAcross(src, dest string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	dir, base := filepath.Split(dest)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".pgark-tmp-*")
	if err != nil {
		return err
	}
	_, err = io.Copy(tmp, in)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dest)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	os.Remove(src)
	return nil
}

// SaveHistory keeps a copy of a .history file that a call fetched to path,
// so that the helper follows the timeline switches it names.
func (s *FetchSpool) SaveHistory(name, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.dir, historyDir), name, b)
}

// targetHistory is the history of the newest timeline whose history file a
// call fetched: recovery's target timeline.
func (s *FetchSpool) targetHistory() (History, bool) {
	ents, _ := os.ReadDir(filepath.Join(s.dir, historyDir))
	var best History
	found := false
	for _, e := range ents {
		n, err := ParseName(e.Name())
		if err != nil || n.Kind != KindHistory || (found && n.Timeline <= best.TLI) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, historyDir, e.Name()))
		if err != nil {
			continue
		}
		if h, err := ParseHistory(n.Timeline, b); err == nil {
			best, found = h, true
		}
	}
	return best, found
}

// nextSegments are the n segment names that recovery reads after want, on
// the timelines it follows: for each segment, the newest timeline of the
// target's history that began at or before it (as PostgreSQL picks them),
// never older than want's.
func nextSegments(want Name, segSize uint32, h History, haveHistory bool, n int) []string {
	no, ok := want.SegNo(segSize)
	if !ok {
		return nil
	}
	type begin struct {
		tli uint32
		seg uint64
	}
	var begins []begin // newest first
	if haveHistory && h.TLI >= want.Timeline {
		prev := uint64(0)
		for _, e := range h.Entries {
			begins = append(begins, begin{e.Parent, prev})
			prev = uint64(e.Switch) / uint64(segSize)
		}
		begins = append(begins, begin{h.TLI, prev})
		sort.Slice(begins, func(i, j int) bool { return begins[i].tli > begins[j].tli })
	}
	out := make([]string, 0, n)
	for k := 1; k <= n; k++ {
		seg := no + uint64(k)
		tli := want.Timeline
		for _, b := range begins {
			if b.seg <= seg {
				tli = max(tli, b.tli)
				break
			}
		}
		out = append(out, SegmentFileName(tli, seg, segSize))
	}
	return out
}

// RunPrefetcher is the helper: it keeps the segments that follow the newest
// request downloaded, verified and decoded in the spool, within the size
// limit, until recovery ends (neither recovery.signal nor standby.signal in
// the data directory) or no call came for the Idle time; then it empties the
// spool and returns. A second helper for the same spool returns at once.
func RunPrefetcher(ctx context.Context, r *repo.Repo, s *FetchSpool, fo FetchOptions) error {
	// A call checking whether a helper runs holds the lock for an instant:
	// wait that out. A helper holds it for good: then this one is not
	// needed.
	lock, err := waitLock(filepath.Join(s.dir, helperLock), 300*time.Millisecond)
	if err != nil {
		return nil
	}
	defer lock.unlock()
	log := s.log
	c, bound, err := r.Cluster(ctx)
	if err != nil {
		return err
	}
	if !bound {
		return errors.New("the repository holds no WAL yet (no cluster binding)")
	}
	segSize := c.WalSegmentBytes
	s.removeLeftovers()
	removeStaleSpools(s.o.SpoolBase, s.dir)
	if s.o.MaxSize < int64(segSize) {
		log.Warn("spool-max-size is smaller than one segment: nothing is prefetched", "spool_max_size", s.o.MaxSize, "segment_size", segSize)
	}
	log.Info("prefetch helper started", "spool", s.dir, "pgdata", s.o.PGData, "ahead", s.o.Ahead, "jobs", s.o.Jobs)

	type result struct {
		name string
		err  error
	}
	done := make(chan result, s.o.Jobs)
	// A decoder per download: their buffers serve segment after segment.
	decoders := make(chan *repo.Decoder, s.o.Jobs)
	for range s.o.Jobs {
		decoders <- repo.NewDecoder(decodeWorkers())
	}
	inflight := map[string]context.CancelFunc{}
	retryAt := map[string]time.Time{}
	backoff := map[string]time.Duration{}
	var want Name
	lastCheck := time.Time{}
	defer func() {
		for _, cancel := range inflight {
			cancel()
		}
		for range inflight {
			<-done
		}
		for range s.o.Jobs {
			(<-decoders).Close()
		}
	}()
	for {
		if time.Since(lastCheck) > 500*time.Millisecond {
			lastCheck = time.Now()
			if why := s.finished(); why != "" {
				log.Info("prefetch helper exits", "why", why)
				s.empty(why == "recovery ended")
				return nil
			}
		}
		if b, err := os.ReadFile(filepath.Join(s.dir, wantFile)); err == nil {
			if n, err := ParseName(strings.TrimSpace(string(b))); err == nil && n.Kind == KindSegment {
				want = n
			}
		}
		var targets []string
		if want.Kind == KindSegment {
			h, ok := s.targetHistory()
			targets = nextSegments(want, segSize, h, ok, s.o.Ahead)
		}
		keep := map[string]bool{want.Raw: true}
		for _, t := range targets {
			keep[t] = true
		}
		for name, cancel := range inflight {
			if !keep[name] {
				cancel()
			}
		}
		used := s.evict(keep) + int64(len(inflight))*int64(segSize)
		now := time.Now()
		for _, t := range targets {
			if _, busy := inflight[t]; busy {
				continue
			}
			if _, err := os.Stat(filepath.Join(s.dir, t)); err == nil {
				continue
			}
			if len(inflight) >= s.o.Jobs || used+int64(segSize) > s.o.MaxSize || now.Before(retryAt[t]) {
				break // in order: never past the end of the archive or the limit
			}
			dctx, cancel := context.WithCancel(ctx)
			inflight[t] = cancel
			used += int64(segSize)
			marker := filepath.Join(s.dir, t+inflightSufx)
			if err := os.WriteFile(marker, nil, 0o600); err != nil {
				log.Warn("cannot write to the spool", "err", err)
			}
			go func(name string) {
				d := <-decoders // never waits: one per job
				o := fo
				o.Decoder = d
				err := Fetch(dctx, r, name, filepath.Join(s.dir, name), o)
				decoders <- d
				os.Remove(marker)
				done <- result{name, err}
			}(t)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case res := <-done:
			inflight[res.name]()
			delete(inflight, res.name)
			switch {
			case res.err == nil:
				delete(retryAt, res.name)
				delete(backoff, res.name)
				log.Debug("prefetched", "wal", res.name)
			case errors.Is(res.err, context.Canceled):
			default:
				// The end of the archive (for now), or a failure: try
				// again later, never remember it.
				d := min(max(backoff[res.name]*2, 250*time.Millisecond), 5*time.Second)
				backoff[res.name], retryAt[res.name] = d, time.Now().Add(d)
				if errors.Is(res.err, ErrNotArchived) {
					log.Debug("not archived (yet)", "wal", res.name, "retry_in", d)
				} else {
					log.Warn("prefetch failed", "wal", res.name, "err", res.err, "retry_in", d)
				}
			}
		case <-time.After(5 * time.Millisecond):
			// Calls change want and take files: a look every 5 ms
			// (a read of two small directories) keeps up with
			// back-to-back calls.
		}
	}
}

// finished says why the helper should stop, or "" to go on.
func (s *FetchSpool) finished() string {
	if _, err := os.Stat(s.o.PGData); err != nil {
		return "recovery ended"
	}
	if !recovering(s.o.PGData) {
		return "recovery ended"
	}
	fi, err := os.Stat(filepath.Join(s.dir, wantFile))
	if err != nil || time.Since(fi.ModTime()) > s.o.Idle {
		return "idle"
	}
	return ""
}

// recovering reports whether the server of pgdata is in archive recovery or a
// standby: PostgreSQL removes the signal files when recovery ends.
func recovering(pgdata string) bool {
	for _, f := range []string{"recovery.signal", "standby.signal"} {
		if _, err := os.Stat(filepath.Join(pgdata, f)); err == nil {
			return true
		}
	}
	return false
}

// evict removes the ready segments that are not in keep and returns the
// bytes that the others use.
func (s *FetchSpool) evict(keep map[string]bool) int64 {
	ents, _ := os.ReadDir(s.dir)
	var used int64
	for _, e := range ents {
		n, err := ParseName(e.Name())
		if err != nil || n.Kind != KindSegment {
			continue
		}
		if !keep[e.Name()] {
			os.Remove(filepath.Join(s.dir, e.Name()))
			continue
		}
		if fi, err := e.Info(); err == nil {
			used += fi.Size()
		}
	}
	return used
}

// removeLeftovers removes what a killed helper left: markers and temporary
// files.
func (s *FetchSpool) removeLeftovers() {
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), inflightSufx) {
			os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
	removeTempFiles(s.dir, 0)
}

// empty removes the spool's segments and history copies, and with all the
// spool itself.
func (s *FetchSpool) empty(all bool) {
	s.evict(map[string]bool{})
	s.removeLeftovers()
	os.RemoveAll(filepath.Join(s.dir, historyDir))
	if all {
		os.RemoveAll(s.dir)
	}
}
