package wal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pgark/pgark/repo"
)

// AheadOptions configure push-ahead: when PostgreSQL asks for one segment,
// the next .ready segments are pushed with it, in parallel, and recorded in
// a spool so that PostgreSQL's calls for them answer at once.
type AheadOptions struct {
	// SpoolBase is the directory under which spools are made ("" turns
	// push-ahead off).
	SpoolBase string
	// RepoID names the repository (its location), to key the spool.
	RepoID string
	// Ahead is how many .ready segments are pushed besides the one asked
	// for (0 turns push-ahead off); Jobs how many pushes run at once.
	Ahead int
	Jobs  int
	// MaxAge is how long a record may answer for a segment. Older records
	// are dropped and the segment is pushed again (a duplicate push is one
	// HEAD or one refused PUT).
	MaxAge time.Duration
	// LockWait bounds the wait for another pgark working on the same spool.
	LockWait time.Duration
}

func (o AheadOptions) enabled() bool { return o.SpoolBase != "" && o.Ahead > 0 }

// pushRecord says that a segment was durably stored in the repository. It
// answers for the file only while the file still has the identity (device,
// inode, size, mtime, ctime) that it had while it was read for the push, or
// else the size and CRC-32C that were pushed.
type pushRecord struct {
	Name     string     `json:"name"`
	Size     int64      `json:"size"`
	CRC32C   uint32     `json:"crc32c"`
	Ident    *fileIdent `json:"ident,omitempty"`
	SHA256   string     `json:"sha256"`
	Key      string     `json:"key"`
	PushedAt time.Time  `json:"pushed_at"`
}

const recordSuffix = ".pushed"

// pushSpool is the spool of one pg_wal directory, repository and cluster.
type pushSpool struct {
	dir    string
	walDir string
	log    *slog.Logger
}

// openPushSpool finds the spool for the segment at path (in pg_wal). With
// create false it reports ok=false when there is none.
func openPushSpool(o AheadOptions, path string, create bool, log *slog.Logger) (s *pushSpool, ok bool, err error) {
	walDir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, false, err
	}
	sysid, err := segmentSystemID(path)
	if err != nil {
		return nil, false, err
	}
	s = &pushSpool{dir: spoolDir(o.SpoolBase, "push", sysid, o.RepoID, walDir), walDir: walDir, log: log}
	if !create {
		if _, err := os.Stat(s.dir); err != nil {
			return nil, false, nil
		}
		return s, true, nil
	}
	if err := makePrivateDir(s.dir); err != nil {
		return nil, false, fmt.Errorf("%w: %w", errSpoolDir, err)
	}
	return s, true, nil
}

var errSpoolDir = errors.New("spool directory")

// answer reports whether a record proves that the file at path is durably
// in the repository: the record is fresh and the file still has the
// identity it had while push read it (nothing wrote to it, renamed it or
// made it anew since), or else the size and CRC-32C that were pushed (read
// again). A record that answers is consumed; one that does not match is
// dropped.
func (s *pushSpool) answer(path string, maxAge time.Duration) (bool, error) {
	name := filepath.Base(path)
	recPath := filepath.Join(s.dir, name+recordSuffix)
	b, err := os.ReadFile(recPath)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var rec pushRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.Name != name {
		os.Remove(recPath)
		return false, nil
	}
	if age := time.Since(rec.PushedAt); age > maxAge || age < -time.Minute {
		os.Remove(recPath)
		return false, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if id, ok := identOf(fi); !ok || rec.Ident == nil || id != *rec.Ident {
		// The identity moved (or was not recorded): read the file.
		if fi.Size() != rec.Size {
			s.log.Warn("spool record does not match the file, pushing it again", "wal", name, "size", fi.Size(), "recorded_size", rec.Size)
			os.Remove(recPath)
			return false, nil
		}
		h := crc32.New(castagnoli)
		if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
			return false, err
		}
		if h.Sum32() != rec.CRC32C {
			s.log.Warn("spool record does not match the file's content, pushing it again", "wal", name)
			os.Remove(recPath)
			return false, nil
		}
	}
	// Consumed: PostgreSQL marks the segment done on our answer. Should
	// that fail, its next call pushes again (an identical push is success).
	os.Remove(recPath)
	return true, nil
}

func (s *pushSpool) record(res PushResult) error {
	b, err := json.Marshal(pushRecord{Name: res.Name, Size: res.Size, CRC32C: res.CRC32C, Ident: res.ident, SHA256: res.SHA256, Key: res.Key, PushedAt: time.Now()})
	if err != nil {
		return err
	}
	return writeFileAtomic(s.dir, res.Name+recordSuffix, b)
}

// sweep drops the records of segments that are no longer waiting to be
// archived (their .ready file is gone) and records that are too old, and the
// temporary files of killed processes.
func (s *pushSpool) sweep(maxAge time.Duration) {
	removeTempFiles(s.dir, time.Minute)
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), recordSuffix)
		if !ok {
			continue
		}
		stale := false
		if _, err := os.Stat(filepath.Join(s.walDir, "archive_status", name+".ready")); errors.Is(err, os.ErrNotExist) {
			stale = true
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > maxAge {
			stale = true
		}
		if stale {
			os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
}

// readySegments lists the segments in pg_wal/archive_status that wait to be
// archived and have no record, oldest first, without those in skip, at most
// n. With newer, only those newer than every record and every name in skip:
// an older one without a record is being answered right now (its record
// consumed, its .ready not yet renamed by PostgreSQL) or its own call
// pushes it. It reads two directories, whatever the backlog.
func (s *pushSpool) readySegments(skip []string, n int, newer bool) []string {
	ents, err := os.ReadDir(filepath.Join(s.walDir, "archive_status"))
	if err != nil {
		return nil
	}
	recorded := map[string]bool{}
	newest := ""
	for _, name := range skip {
		recorded[name] = true
		newest = max(newest, name)
	}
	if spooled, err := os.ReadDir(s.dir); err == nil {
		for _, e := range spooled {
			if name, ok := strings.CutSuffix(e.Name(), recordSuffix); ok {
				recorded[name] = true
				newest = max(newest, name)
			}
		}
	}
	var names []string
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".ready")
		if !ok || recorded[name] || newer && name <= newest {
			continue
		}
		if pn, err := ParseName(name); err != nil || pn.Kind != KindSegment {
			continue // .history, .partial and .backup files take the normal path
		}
		names = append(names, name)
	}
	// Oldest first, as PostgreSQL will ask for them: by timeline, then
	// position, which is the names' order.
	sort.Strings(names)
	return names[:min(n, len(names))]
}

// AnswerFromSpool reports whether the segment at path was pushed ahead by an
// earlier call and is unchanged since: then it is durably in the repository
// and archive_command may answer 0 without touching the repository. It never
// answers true for anything else; any doubt is false (push it).
func AnswerFromSpool(o AheadOptions, path string, log *slog.Logger) bool {
	if !o.enabled() {
		return false
	}
	if n, err := ParseName(filepath.Base(path)); err != nil || n.Kind != KindSegment {
		return false
	}
	s, ok, err := openPushSpool(o, path, false, orDiscard(log))
	if err != nil || !ok {
		return false
	}
	ok, err = s.answer(path, o.MaxAge)
	if err != nil {
		orDiscard(log).Debug("push spool", "err", err)
	}
	return ok && err == nil
}

// PushAhead pushes the segment at path, and with it up to o.Ahead of the next
// .ready segments of its pg_wal directory, o.Jobs at a time. It returns the
// result for path alone, once every push it started is over; the segments
// pushed ahead are recorded in the spool (only once durably stored), their
// failures logged and left to their own calls. A spool that cannot be used
// degrades to a plain push.
func PushAhead(ctx context.Context, r *repo.Repo, path string, po PushOptions, o AheadOptions) (PushResult, error) {
	log := orDiscard(po.Log)
	n, err := ParseName(filepath.Base(path))
	if !o.enabled() || err != nil || n.Kind != KindSegment {
		return Push(ctx, r, path, po)
	}
	s, _, err := openPushSpool(o, path, true, log)
	if err != nil {
		if errors.Is(err, errSpoolDir) {
			log.Warn("push-ahead is off for this call: the spool cannot be used", "err", err)
		}
		// Otherwise the file cannot be read as a segment: the push says
		// why.
		return Push(ctx, r, path, po)
	}
	// One batch at a time per spool: a second pgark (a manual wal-push, a
	// second archiver) waits, then usually finds its answer recorded.
	lock, err := waitLock(filepath.Join(s.dir, "lock"), o.LockWait)
	if err != nil {
		log.Warn("push-ahead is off for this call", "err", err)
		return Push(ctx, r, path, po)
	}
	defer lock.unlock()
	if ok, err := s.answer(path, o.MaxAge); err == nil && ok {
		return PushResult{Name: n.Raw, Key: ObjectKey(n), AlreadyStored: true}, nil
	}
	s.sweep(o.MaxAge)
	removeStaleSpools(o.SpoolBase, s.dir)
	ahead := s.readySegments([]string{n.Raw}, o.Ahead, false)
	res, pushed, err := s.pushBatch(ctx, r, n.Raw, ahead, po, o)
	if len(pushed) > 0 {
		log.Info("pushed ahead", "count", len(pushed), "first", pushed[0], "last", pushed[len(pushed)-1])
	}
	return res, err
}

// pushBatch pushes first (unless "") and the segments in ahead, o.Jobs at a
// time, with one encoder for all, and records the segments of ahead that
// are durably stored. It returns first's result and the names recorded, in
// order. Failures of the others are logged and left to their own calls.
func (s *pushSpool) pushBatch(ctx context.Context, r *repo.Repo, first string, ahead []string, po PushOptions, o AheadOptions) (PushResult, []string, error) {
	log := orDiscard(po.Log)
	if len(ahead) > 0 {
		enc, err := repo.NewFrameEncoder(po.Codec, max(1, o.Jobs)*workers())
		if err != nil {
			return PushResult{}, nil, err
		}
		defer enc.Close()
		po.enc = enc
	}
	jobs := make(chan string)
	var res PushResult
	var resErr error
	var wg sync.WaitGroup
	var mu sync.Mutex
	var pushed []string
	for range max(1, o.Jobs) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wpo := po
			wpo.scratch = new([]byte) // this goroutine's pushes, one after another
			for name := range jobs {
				got, err := Push(ctx, r, filepath.Join(s.walDir, name), wpo)
				if name == first {
					res, resErr = got, err // one goroutine only: first is sent once
					continue
				}
				if err != nil {
					if ctx.Err() == nil {
						log.Warn("push ahead failed; it is retried when PostgreSQL asks for it", "wal", name, "err", err)
					}
					continue
				}
				if err := s.record(got); err != nil {
					log.Warn("push ahead: cannot record in the spool", "wal", name, "err", err)
					continue
				}
				mu.Lock()
				pushed = append(pushed, name)
				mu.Unlock()
			}
		}()
	}
	if first != "" {
		jobs <- first
	}
	for _, name := range ahead {
		if ctx.Err() != nil {
			break
		}
		jobs <- name
	}
	close(jobs)
	wg.Wait()
	sort.Strings(pushed)
	return res, pushed, resErr
}

// BatchClaim is the spool lock taken for a background batch by the call
// that starts it. The batch's process inherits the locked descriptor
// (File), so that no other batch can start in between; the call then
// closes its own copy (Release), and the lock lasts as long as the batch.
type BatchClaim struct {
	lock     *flock
	SpoolDir string
}

// File is the locked descriptor, to hand to the batch's process.
func (c *BatchClaim) File() *os.File { return c.lock.f }

// Release closes this process's copy of the descriptor (the lock stays
// while another process holds a copy).
func (c *BatchClaim) Release() { c.lock.unlock() }

// ClaimBackgroundBatch decides, for a call that was just answered (or
// pushed) for the segment at path, whether a background batch should start
// (PushAheadBackground, in a detached process): push-ahead is on, no batch
// holds the spool, and a .ready segment newer than path and than every
// record has no record. If so it takes the spool lock and returns it, else
// nil. The batch then pushes while PostgreSQL's next calls are answered,
// instead of after the records run out.
func ClaimBackgroundBatch(o AheadOptions, path string) *BatchClaim {
	if !o.enabled() {
		return nil
	}
	s, ok, err := openPushSpool(o, path, false, orDiscard(nil))
	if err != nil || !ok {
		return nil
	}
	lock, ok, err := tryLock(filepath.Join(s.dir, "lock"))
	if err != nil || !ok {
		return nil
	}
	if len(s.readySegments([]string{filepath.Base(path)}, 1, true)) == 0 {
		lock.unlock()
		return nil
	}
	return &BatchClaim{lock: lock, SpoolDir: s.dir}
}

// ErrNotClaimed means that a background batch does not hold its spool's
// lock (it was started by hand, or the descriptor it was given is not the
// lock): it pushes nothing.
var ErrNotClaimed = errors.New("the spool lock was not handed to this batch (wal-push-ahead is started by wal-push, not by hand)")

// PushAheadBackground is the background batch: it pushes up to o.Ahead of
// the oldest .ready segments of path's pg_wal directory that are newer than
// path (its call was answered) and than every record, o.Jobs at a time, and
// records each once it is durably stored. lockFile is the spool lock that
// the starting call claimed (ClaimBackgroundBatch) and handed down; it is
// checked to be that lock, and closed at the end. open opens the repository
// once the lock is confirmed. A kill at any moment loses at most some
// records: their segments are pushed by their own calls.
func PushAheadBackground(ctx context.Context, path string, o AheadOptions, lockFile *os.File, open func() (*repo.Repo, PushOptions, error)) ([]string, error) {
	if lockFile == nil {
		return nil, ErrNotClaimed
	}
	lock := &flock{lockFile}
	defer lock.unlock()
	if !o.enabled() {
		return nil, nil
	}
	s, _, err := openPushSpool(o, path, true, orDiscard(nil))
	if err != nil {
		return nil, err
	}
	held, err1 := lockFile.Stat()
	want, err2 := os.Stat(filepath.Join(s.dir, "lock"))
	if err1 != nil || err2 != nil || !os.SameFile(held, want) {
		return nil, ErrNotClaimed
	}
	r, po, err := open()
	if err != nil {
		return nil, err
	}
	s.log = orDiscard(po.Log)
	s.sweep(o.MaxAge)
	ahead := s.readySegments([]string{filepath.Base(path)}, o.Ahead, true)
	_, pushed, _ := s.pushBatch(ctx, r, "", ahead, po, o)
	if len(pushed) > 0 {
		s.log.Info("pushed ahead in the background", "count", len(pushed), "first", pushed[0], "last", pushed[len(pushed)-1])
	}
	return pushed, nil
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
