// Package retry wraps a storage.Store so that transient errors are retried
// with exponential backoff and jitter, within a total deadline.
//
// An error is retried when !storage.IsPermanent(err): not-found, exists,
// PermanentError and context cancellation end the operation at once;
// storage.ErrConflict (a concurrent conditional write) is retried.
//
//   - Stat, Delete: retried.
//   - Get, GetRange: opening is retried; errors while reading are the
//     caller's.
//   - List: restarted only if fn has not been called yet; once objects were
//     delivered, an error is returned.
//   - Put: retried only when the reader is an io.Seeker, which is sought
//     back to where it was when Put was called; otherwise one attempt. A
//     retried Put whose earlier attempt did reach the store (its answer was
//     lost) fails with ErrExists; callers compare contents on ErrExists
//     anyway.
package retry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/pgark/pgark/storage"
)

// Config sets the backoff. Zero fields take their defaults.
type Config struct {
	// MaxElapsed is the total time allowed for an operation, retries and
	// backoff included (default 60s). The last attempt starts before it
	// passes.
	MaxElapsed time.Duration
	// Initial is the first backoff delay (default 100ms); it doubles after
	// every attempt up to Max (default 5s). Each delay is jittered between
	// half and all of its value.
	Initial time.Duration
	Max     time.Duration
}

// Defaults of Config.
const (
	DefaultMaxElapsed = 60 * time.Second
	DefaultInitial    = 100 * time.Millisecond
	DefaultMax        = 5 * time.Second
)

type store struct {
	inner storage.Store
	cfg   Config
	log   *slog.Logger
}

// New returns inner wrapped with retries. log receives a Warn record for
// every retry; nil discards them.
func New(inner storage.Store, cfg Config, log *slog.Logger) storage.Store {
	if cfg.MaxElapsed <= 0 {
		cfg.MaxElapsed = DefaultMaxElapsed
	}
	if cfg.Initial <= 0 {
		cfg.Initial = DefaultInitial
	}
	if cfg.Max <= 0 {
		cfg.Max = DefaultMax
	}
	if cfg.Max < cfg.Initial {
		cfg.Max = cfg.Initial
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &store{inner: inner, cfg: cfg, log: log}
}

func (s *store) String() string { return s.inner.String() }

func retryable(err error) bool { return !storage.IsPermanent(err) }

// do runs attempt until it succeeds, fails permanently, canRetry says no
// (nil: always yes), the context ends or the deadline passes.
func (s *store) do(ctx context.Context, op, key string, canRetry func() bool, attempt func() error) error {
	start := time.Now()
	deadline := start.Add(s.cfg.MaxElapsed)
	delay := s.cfg.Initial
	for n := 1; ; n++ {
		err := attempt()
		if err == nil || !retryable(err) || (canRetry != nil && !canRetry()) {
			return err
		}
		if ctx.Err() != nil {
			return s.ctxErr(ctx, op, key, n, err)
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return fmt.Errorf("%s %q in %s: giving up after %d attempts in %s: %w",
				op, key, s.inner, n, time.Since(start).Round(time.Millisecond), err)
		}
		wait := min(delay/2+rand.N(delay/2+1), remaining)
		s.log.Warn("storage operation failed; retrying",
			"op", op, "key", key, "store", s.inner.String(),
			"attempt", n, "retry_in", wait.Round(time.Millisecond), "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return s.ctxErr(ctx, op, key, n, err)
		case <-t.C:
		}
		delay = min(delay*2, s.cfg.Max)
	}
}

// ctxErr reports the end of the context, with the last error.
func (s *store) ctxErr(ctx context.Context, op, key string, attempts int, last error) error {
	if errors.Is(last, ctx.Err()) {
		return last
	}
	return fmt.Errorf("%s %q in %s: %w after %d attempts (last error: %v)", op, key, s.inner, ctx.Err(), attempts, last)
}

func (s *store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	var info storage.ObjectInfo
	err := s.do(ctx, "stat", key, nil, func() error {
		var err error
		info, err = s.inner.Stat(ctx, key)
		return err
	})
	return info, err
}

func (s *store) Get(ctx context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	var (
		rc   io.ReadCloser
		info storage.ObjectInfo
	)
	err := s.do(ctx, "get", key, nil, func() error {
		var err error
		rc, info, err = s.inner.Get(ctx, key)
		return err
	})
	if err != nil {
		return nil, storage.ObjectInfo{}, err
	}
	return rc, info, nil
}

func (s *store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := s.do(ctx, "get range", key, nil, func() error {
		var err error
		rc, err = s.inner.GetRange(ctx, key, offset, length)
		return err
	})
	if err != nil {
		return nil, err
	}
	return rc, nil
}

func (s *store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	called := false
	return s.do(ctx, "list", prefix, func() bool { return !called }, func() error {
		return s.inner.List(ctx, prefix, func(oi storage.ObjectInfo) error {
			called = true
			return fn(oi)
		})
	})
}

func (s *store) Delete(ctx context.Context, key string) error {
	return s.do(ctx, "delete", key, nil, func() error { return s.inner.Delete(ctx, key) })
}

func (s *store) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) error {
	seeker, ok := r.(io.Seeker)
	if !ok {
		return s.inner.Put(ctx, key, r, opts)
	}
	start, err := seeker.Seek(0, io.SeekCurrent)
	if err != nil {
		// Not really seekable (a pipe behind an *os.File, say).
		return s.inner.Put(ctx, key, r, opts)
	}
	first := true
	rewind := func() error {
		if _, err := seeker.Seek(start, io.SeekStart); err != nil {
			return &storage.PermanentError{Err: fmt.Errorf("put %q in %s: rewinding the data for a retry: %w", key, s.inner, err)}
		}
		return nil
	}
	return s.do(ctx, "put", key, nil, func() error {
		retried := !first
		if retried {
			if err := rewind(); err != nil {
				return err
			}
		}
		first = false
		err := s.inner.Put(ctx, key, r, opts)
		if retried && storage.IsExists(err) {
			// An earlier attempt may have landed with its reply lost: the
			// object holding exactly our bytes means that it did.
			if rerr := rewind(); rerr != nil {
				return rerr
			}
			if same, serr := s.sameContent(ctx, key, r); serr == nil && same {
				s.log.Info("an earlier attempt of this put had succeeded (its reply was lost)", "key", key, "store", s.inner.String())
				return nil
			}
		}
		return err
	})
}

// sameContent reports whether the object key holds exactly the bytes of r.
func (s *store) sameContent(ctx context.Context, key string, r io.Reader) (bool, error) {
	rc, _, err := s.inner.Get(ctx, key)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	stored, mine := sha256.New(), sha256.New()
	if _, err := io.Copy(stored, rc); err != nil {
		return false, err
	}
	if _, err := io.Copy(mine, r); err != nil {
		return false, err
	}
	return bytes.Equal(stored.Sum(nil), mine.Sum(nil)), nil
}

func (s *store) ReadSmall(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	var (
		data    []byte
		version string
	)
	err := s.do(ctx, "read", key, nil, func() error {
		var err error
		data, version, err = s.inner.ReadSmall(ctx, key, limit)
		return err
	})
	return data, version, err
}

// Swap retries transient failures. A failed attempt may still have been
// applied (the reply was lost), so when a retry finds the object exists or
// changed, it reads it back: holding exactly our bytes means our write won.
func (s *store) Swap(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	var version string
	attempts := 0
	err := s.do(ctx, "swap", key, nil, func() error {
		attempts++
		var err error
		version, err = s.inner.Swap(ctx, key, data, ifVersion)
		if attempts > 1 && (storage.IsExists(err) || errors.Is(err, storage.ErrChanged)) {
			cur, v, rerr := s.inner.ReadSmall(ctx, key, int64(len(data)))
			if rerr == nil && bytes.Equal(cur, data) {
				version = v
				return nil
			}
		}
		return err
	})
	return version, err
}
