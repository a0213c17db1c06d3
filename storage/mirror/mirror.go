package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/fallback"
)

// Config configures a mirror.
type Config struct {
	// Stores receive every object; Names name them in messages and queue
	// directories (default "1", "2", ...).
	Stores []storage.Store
	Names  []string
	// QueueDir holds one queue directory per store (QueueDir/<name>); it
	// must be on a local disk and private.
	QueueDir string
	// Timeout bounds each store's part of a Put (default 15s).
	Timeout time.Duration
	// Backoff is how long a store that failed is not tried directly
	// (default 30s).
	Backoff time.Duration
	// CatchUpBudget bounds the time one Put spends catching queues up
	// (default 5s; negative: no catch-up in Put).
	CatchUpBudget time.Duration
	Log           *slog.Logger
}

// Store is a mirror over Config.Stores.
type Store struct {
	*fallback.Store
	cfg Config
}

// New returns the mirror. It creates the queue directories.
func New(cfg Config) (*Store, error) {
	if len(cfg.Stores) == 0 {
		return nil, errors.New("mirror: no stores")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 30 * time.Second
	}
	if cfg.CatchUpBudget == 0 {
		cfg.CatchUpBudget = 5 * time.Second
	}
	if len(cfg.Names) != len(cfg.Stores) {
		cfg.Names = make([]string, len(cfg.Stores))
		for i := range cfg.Stores {
			cfg.Names[i] = fmt.Sprint(i + 1)
		}
	}
	for _, n := range cfg.Names {
		if err := os.MkdirAll(filepath.Join(cfg.QueueDir, n), 0o700); err != nil {
			return nil, fmt.Errorf("mirror queue: %w", err)
		}
		sweep(filepath.Join(cfg.QueueDir, n))
	}
	sweep(cfg.QueueDir)
	// Reads skip a store that failed within the backoff, as Put does.
	readers := make([]storage.Store, len(cfg.Stores))
	for i, st := range cfg.Stores {
		readers[i] = st
		if (&queue{dir: filepath.Join(cfg.QueueDir, cfg.Names[i])}).down(cfg.Backoff) {
			readers[i] = skipped{st}
		}
	}
	return &Store{Store: fallback.NewForWriter(cfg.Log, readers...), cfg: cfg}, nil
}

// skipped is a store that failed within the backoff, for reads: they fail
// at once instead of waiting for its retries again.
type skipped struct{ storage.Store }

func (s skipped) err() error {
	return fmt.Errorf("%s failed recently; not asked", s.Store)
}

func (s skipped) Get(context.Context, string) (io.ReadCloser, storage.ObjectInfo, error) {
	return nil, storage.ObjectInfo{}, s.err()
}

func (s skipped) GetRange(context.Context, string, int64, int64) (io.ReadCloser, error) {
	return nil, s.err()
}

func (s skipped) Stat(context.Context, string) (storage.ObjectInfo, error) {
	return storage.ObjectInfo{}, s.err()
}

func (s skipped) List(context.Context, string, func(storage.ObjectInfo) error) error {
	return s.err()
}

func (s skipped) ReadSmall(context.Context, string, int64) ([]byte, string, error) {
	return nil, "", s.err()
}

// String names the stores.
func (s *Store) String() string {
	names := make([]string, len(s.cfg.Stores))
	for i, st := range s.cfg.Stores {
		names[i] = st.String()
	}
	return strings.Join(names, " and ")
}

func (s *Store) queue(i int) *queue {
	return &queue{dir: filepath.Join(s.cfg.QueueDir, s.cfg.Names[i])}
}

// source gives the object's bytes as a ReaderAt: r itself when it can
// (bytes.Reader, os.File), else a temporary copy in the queue directory.
func (s *Store) source(r io.Reader) (io.ReaderAt, int64, func(), error) {
	if rs, ok := r.(interface {
		io.ReaderAt
		io.Seeker
	}); ok {
		pos, err := rs.Seek(0, io.SeekCurrent)
		if err == nil {
			end, err := rs.Seek(0, io.SeekEnd)
			if err == nil {
				if _, err := rs.Seek(pos, io.SeekStart); err == nil {
					return io.NewSectionReader(rs, pos, end-pos), end - pos, func() {}, nil
				}
			}
		}
	}
	f, err := os.CreateTemp(s.cfg.QueueDir, ".put-*")
	if err != nil {
		return nil, 0, nil, fmt.Errorf("mirror: stage the object: %w", err)
	}
	cleanup := func() { f.Close(); os.Remove(f.Name()) }
	n, err := io.Copy(f, r)
	if err != nil {
		cleanup()
		return nil, 0, nil, fmt.Errorf("mirror: stage the object: %w", err)
	}
	return f, n, cleanup, nil
}

// Put stores the object in every store, or queues it for those that do
// not take it in time (see the package documentation).
func (s *Store) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) error {
	src, size, cleanup, err := s.source(r)
	if err != nil {
		return err
	}
	defer cleanup()
	if opts.Size >= 0 && opts.Size != size {
		return &storage.PermanentError{Err: fmt.Errorf("put %q: %d bytes given, %d declared", key, size, opts.Size)}
	}
	n := len(s.cfg.Stores)
	errs := make([]error, n)
	skipped := make([]bool, n)
	var wg sync.WaitGroup
	for i, st := range s.cfg.Stores {
		q := s.queue(i)
		if q.down(s.cfg.Backoff) {
			skipped[i] = true
			errs[i] = fmt.Errorf("%s failed less than %s ago", st, s.cfg.Backoff)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
			defer cancel()
			o := opts
			o.Size = size
			errs[i] = st.Put(pctx, key, io.NewSectionReader(src, 0, size), o)
			if errs[i] != nil && !storage.IsExists(errs[i]) && ctx.Err() == nil {
				q.markDown()
			} else if errs[i] == nil || storage.IsExists(errs[i]) {
				q.clearDown()
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	stored, exists := false, false
	for _, e := range errs {
		stored = stored || e == nil
		exists = exists || storage.IsExists(e)
	}
	if !stored && !exists {
		var parts []error
		for i, e := range errs {
			parts = append(parts, fmt.Errorf("%s: %w", s.cfg.Stores[i], e))
		}
		return errors.Join(parts...)
	}
	for i, e := range errs {
		if e == nil || storage.IsExists(e) {
			continue
		}
		ent := entry{Key: key, Meta: opts.Meta}
		var body io.Reader
		if stored {
			body = io.NewSectionReader(src, 0, size)
		} else {
			ent.Copy = true // the others hold the key: copy theirs as stored
		}
		if err := s.queue(i).add(ent, body); err != nil {
			return fmt.Errorf("%q stored, but not in %s, and it cannot be queued for it: %w", key, s.cfg.Stores[i], err)
		}
		lvl := s.cfg.Log.Warn
		if skipped[i] {
			lvl = s.cfg.Log.Info
		}
		lvl("repository unavailable: object queued for it", "key", key, "repository", s.cfg.Stores[i].String(), "queue", s.queue(i).dir, "err", e)
	}
	if s.cfg.CatchUpBudget > 0 {
		s.CatchUp(ctx, s.cfg.CatchUpBudget)
	}
	if exists {
		if stored {
			s.warnDivergence(ctx, key, opts.Meta, errs)
		}
		return fmt.Errorf("%q in %s: %w", key, s, storage.ErrExists)
	}
	return nil
}

// warnDivergence logs an error when a store that already held the key
// holds other content than the one just stored in another store: the
// caller refuses the push (it compares with the first store), but the
// stores now differ under that key, which only two servers archiving into
// the same repositories can cause.
func (s *Store) warnDivergence(ctx context.Context, key string, meta map[string]string, errs []error) {
	if meta[storage.MetaSHA256] == "" {
		return
	}
	for i, e := range errs {
		if !storage.IsExists(e) {
			continue
		}
		info, err := s.cfg.Stores[i].Stat(ctx, key)
		if err == nil && !sameContent(info.Meta, meta) {
			s.cfg.Log.Error("the repositories now hold different content under this key: one already held other content, another took this push's",
				"key", key, "holds_other", s.cfg.Stores[i].String())
		}
	}
}

// CatchUp sends queued objects to their stores, oldest first, for at most
// budget; it stops a queue at its store's first failure. It returns how
// many objects it delivered; failures are logged, the queue keeps them.
func (s *Store) CatchUp(ctx context.Context, budget time.Duration) int {
	deadline := time.Now().Add(budget)
	total := 0
	for i := range s.cfg.Stores {
		q := s.queue(i)
		if q.down(s.cfg.Backoff) {
			continue
		}
		n, err := s.catchUpOne(ctx, i, q, deadline)
		total += n
		if n > 0 {
			s.cfg.Log.Info("caught up queued objects", "repository", s.cfg.Stores[i].String(), "objects", n)
		}
		if err != nil {
			s.cfg.Log.Warn("catching up a repository failed; the queue keeps the rest", "repository", s.cfg.Stores[i].String(), "err", err)
		}
	}
	return total
}

func (s *Store) catchUpOne(ctx context.Context, i int, q *queue, deadline time.Time) (int, error) {
	unlock, ok := q.tryLock()
	if !ok {
		return 0, nil // another process catches this queue up
	}
	defer unlock()
	names, err := q.pending()
	if err != nil {
		return 0, err
	}
	done := 0
	for _, name := range names {
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		pctx, cancel := context.WithDeadline(ctx, deadline.Add(s.cfg.Timeout))
		err := s.deliver(pctx, i, q, name)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				q.markDown()
			}
			return done, err
		}
		done++
	}
	return done, nil
}

// deliver sends one queued entry to store i and removes it.
func (s *Store) deliver(ctx context.Context, i int, q *queue, name string) error {
	ent, f, err := q.open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil // delivered by another process
	}
	if err != nil {
		return err
	}
	defer f.Close()
	dst := s.cfg.Stores[i]
	var body io.Reader = f
	meta := ent.Meta
	size := ent.Size
	if ent.Copy {
		var others []storage.Store
		for j, st := range s.cfg.Stores {
			if j != i {
				others = append(others, st)
			}
		}
		rc, info, err := fallback.New(s.cfg.Log, others...).Get(ctx, ent.Key)
		if err != nil {
			return fmt.Errorf("copy %q to %s: %w", ent.Key, dst, err)
		}
		defer rc.Close()
		body, meta, size = rc, info.Meta, info.Size
	}
	err = dst.Put(ctx, ent.Key, body, storage.PutOptions{Meta: meta, Size: size})
	if storage.IsExists(err) {
		info, serr := dst.Stat(ctx, ent.Key)
		if serr != nil {
			return fmt.Errorf("compare %q in %s: %w", ent.Key, dst, serr)
		}
		if !sameContent(info.Meta, meta) {
			s.cfg.Log.Error("a queued object differs from the one its repository holds under its key; the repository's is kept and the queued one set aside",
				"key", ent.Key, "repository", dst.String(), "set_aside", q.setAside(name))
			return nil
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("deliver %q to %s: %w", ent.Key, dst, err)
	}
	return q.remove(name)
}

// sameContent compares the plaintext hash and size recorded in metadata;
// objects without them (streamed parts) count as the same.
func sameContent(a, b map[string]string) bool {
	return a[storage.MetaSHA256] == b[storage.MetaSHA256] && a[storage.MetaSize] == b[storage.MetaSize]
}

// Swap is refused: compare-and-swap across stores is not atomic.
func (s *Store) Swap(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	return "", &storage.PermanentError{Err: errors.New("mirror: compare-and-swap is per repository")}
}

// Delete deletes the key from every store.
func (s *Store) Delete(ctx context.Context, key string) error {
	var errs []error
	for _, st := range s.cfg.Stores {
		if err := st.Delete(ctx, key); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Pending is the number of objects queued in dir (a queue directory,
// QueueDir/<name>) and the time the oldest was queued (zero when none).
func Pending(dir string) (int, time.Time, error) {
	q := &queue{dir: dir}
	names, err := q.pending()
	if err != nil || len(names) == 0 {
		return 0, time.Time{}, err
	}
	oldest := time.Time{}
	if fi, err := os.Stat(filepath.Join(dir, names[0])); err == nil {
		oldest = fi.ModTime()
	}
	return len(names), oldest, nil
}

var _ storage.Store = (*Store)(nil)

// staleAfter is the age past which a staging or temporary file is taken
// for the leftover of a killed process and removed.
const staleAfter = time.Hour

// sweep removes what a killed Put left behind: staged objects (.put-*) and
// queue entries never renamed into place (.tmp-*).
func sweep(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".put-") && !strings.HasPrefix(e.Name(), ".tmp-") {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleAfter {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
