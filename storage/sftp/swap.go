package sftp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"strings"
	"time"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/objfile"
)

// The guard that serializes the replacements of one key (see the package
// documentation).
const (
	// GuardHold is the longest a writer holds a guard: past it, it gives
	// up before replacing the key (a retryable error) and leaves the guard
	// to be broken.
	GuardHold = 30 * time.Second
	// GuardStale is the age (by the server's clock) past which a guard is
	// taken for a dead writer's and broken. It must be well above
	// GuardHold.
	GuardStale = 2 * time.Minute
	guardInfix = "guard-"
)

// Swap creates key (ifVersion "") or replaces it if it is at ifVersion.
func (s *Store) Swap(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	header, err := objfile.EncodeHeader(nil)
	if err != nil {
		return "", err
	}
	newVersion := objfile.Version(append(header[:len(header):len(header)], data...))
	if ifVersion == "" {
		if err := s.Put(ctx, key, bytes.NewReader(data), storage.PutOptions{Size: int64(len(data))}); err != nil {
			return "", err
		}
		return newVersion, nil
	}
	if err := storage.ValidKey(key); err != nil {
		return "", err
	}
	c, err := s.client(ctx)
	if err != nil {
		return "", err
	}
	final := s.path(key)
	dir := path.Dir(final)
	// The new version first, outside the guard: its modification time is
	// also the server's "now", against which guards age.
	tmp, _, err := s.writeTemp(ctx, c, key, dir, header, bytes.NewReader(data))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("swap %s: %w", s.describe(key), storage.ErrChanged)
		}
		return "", err
	}
	defer c.sftp.Remove(tmp)
	fi, err := c.sftp.Stat(tmp)
	if err != nil {
		return "", s.check(c, s.wrapErr("swap", key, err, false))
	}
	clock := serverClock{at: fi.ModTime(), seen: time.Now()}

	g := guard{s: s, c: c, key: key, name: path.Join(dir, storage.TempPrefix+guardInfix+path.Base(final))}
	if err := g.acquire(ctx, clock); err != nil {
		return "", err
	}
	defer g.release()

	cur, err := s.readFile(c, "swap", key, 64<<20)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return "", fmt.Errorf("swap %s: %w", s.describe(key), storage.ErrChanged)
		}
		return "", err
	}
	if objfile.Version(cur) != ifVersion {
		return "", fmt.Errorf("swap %s: %w", s.describe(key), storage.ErrChanged)
	}
	if time.Since(g.since) > GuardHold {
		return "", fmt.Errorf("swap %s: held the guard %s for more than %s; gave up so as not to race with a writer that broke it", s.describe(key), g.name, GuardHold)
	}
	if err := c.sftp.PosixRename(tmp, final); err != nil {
		return "", s.check(c, s.wrapErr("swap", key, err, false))
	}
	if err := s.syncDir(c, dir); err != nil {
		return "", s.check(c, s.wrapErr("swap: fsync directory of", key, err, false))
	}
	return newVersion, nil
}

// serverClock estimates the server's current time from a modification time
// it set and our monotonic clock since.
type serverClock struct {
	at   time.Time
	seen time.Time
}

func (k serverClock) now() time.Time { return k.at.Add(time.Since(k.seen)) }

type guard struct {
	s     *Store
	c     *conn
	key   string
	name  string
	token string
	since time.Time
}

// acquire creates the guard exclusively, waiting while another writer
// holds it and breaking it when it is stale.
func (g *guard) acquire(ctx context.Context, clock serverClock) error {
	s, c := g.s, g.c
	g.token = randHex()
	wait := 5 * time.Millisecond
	for {
		f, err := c.sftp.OpenFile(g.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		if err == nil {
			g.since = time.Now()
			_, werr := f.Write([]byte(g.token))
			cerr := f.Close()
			if werr != nil || cerr != nil {
				c.sftp.Remove(g.name)
				return s.check(c, s.wrapErr("swap: write guard of", g.key, errors.Join(werr, cerr), false))
			}
			return nil
		}
		if !isStatus(err) {
			return s.check(c, s.wrapErr("swap: create guard of", g.key, err, false))
		}
		fi, serr := c.sftp.Lstat(g.name)
		switch {
		case errors.Is(serr, os.ErrNotExist):
			if errors.Is(err, os.ErrNotExist) {
				// The directory is gone, and the key with it.
				return fmt.Errorf("swap %s: %w", s.describe(g.key), storage.ErrChanged)
			}
			continue // released meanwhile
		case serr != nil:
			return s.check(c, s.wrapErr("swap: guard of", g.key, serr, false))
		case clock.now().Sub(fi.ModTime()) > GuardStale:
			if err := g.breakStale(); err != nil {
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait/2 + rand.N(wait/2+1)):
		}
		wait = min(wait*2, 200*time.Millisecond)
	}
}

// breakStale removes a stale guard. Its content (the dead writer's token)
// names a link that only one breaker can create; the guard is removed only
// if that link holds the content judged stale, so that two breakers never
// remove a guard that a third writer took in between.
func (g *guard) breakStale() error {
	s, c := g.s, g.c
	token, err := g.readToken(g.name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return s.check(c, s.wrapErr("swap: read stale guard of", g.key, err, false))
	}
	broken := g.name + ".broken-" + token
	if err := c.sftp.Link(g.name, broken); err != nil {
		if isStatus(err) {
			return nil // another writer breaks it, or it is gone
		}
		return s.check(c, err)
	}
	defer c.sftp.Remove(broken)
	got, err := g.readToken(broken)
	if err != nil {
		return s.check(c, s.wrapErr("swap: read stale guard of", g.key, err, false))
	}
	if got != token {
		return nil // we linked a newer guard: leave it
	}
	if err := c.sftp.Remove(g.name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return s.check(c, s.wrapErr("swap: remove stale guard of", g.key, err, false))
	}
	return nil
}

func (g *guard) readToken(name string) (string, error) {
	f, err := g.c.sftp.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 256))
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	if t == "" || strings.ContainsAny(t, "/\x00") {
		t = "empty"
	}
	return t, nil
}

// release removes the guard, unless it was held too long (then it may have
// been broken and taken by another writer: it is left to age instead).
func (g *guard) release() {
	if time.Since(g.since) > GuardHold {
		return
	}
	g.c.sftp.Remove(g.name)
}
