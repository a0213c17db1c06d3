package mirror

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// entry is the header line of a queued object. The stored bytes follow it
// (none for a copy job).
type entry struct {
	Key  string            `json:"key"`
	Meta map[string]string `json:"meta,omitempty"`
	Size int64             `json:"size"`
	// SHA256 is the hash of the stored bytes that follow, checked before
	// they are sent.
	SHA256 string `json:"sha256,omitempty"`
	// Copy: no bytes follow; copy the object as stored from another store.
	Copy bool `json:"copy,omitempty"`
}

// queue is one store's queue directory: one file per object, named so that
// lexical order is the order they were queued in.
type queue struct{ dir string }

const (
	entrySuffix = ".queued"
	headerMax   = 1 << 20
)

var seq atomic.Uint64

// add writes the entry and body durably: a temporary file, fsynced, renamed
// to its final name, and the directory fsynced.
func (q *queue) add(ent entry, body io.Reader) (err error) {
	tmp, err := os.CreateTemp(q.dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if body != nil {
		// The body goes after a fixed-size header slot, hashed on the way.
		h := sha256.New()
		if _, err := tmp.Seek(headerMax, io.SeekStart); err != nil {
			return err
		}
		n, err := io.Copy(io.MultiWriter(tmp, h), body)
		if err != nil {
			return err
		}
		ent.Size, ent.SHA256 = n, hex.EncodeToString(h.Sum(nil))
	}
	hdr, err := json.Marshal(ent)
	if err != nil {
		return err
	}
	if len(hdr)+1 > headerMax {
		return errors.New("metadata too large to queue")
	}
	hdr = append(hdr, '\n')
	if _, err := tmp.WriteAt(hdr, 0); err != nil {
		return err
	}
	if body == nil {
		if err := tmp.Truncate(int64(len(hdr))); err != nil {
			return err
		}
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	name := fmt.Sprintf("%020d-%08d-%06d%s", time.Now().UnixNano(), os.Getpid(), seq.Add(1)%1e6, entrySuffix)
	if err := os.Rename(tmp.Name(), filepath.Join(q.dir, name)); err != nil {
		return err
	}
	return syncDir(q.dir)
}

// pending lists the queued entries, oldest first.
func (q *queue) pending() ([]string, error) {
	ents, err := os.ReadDir(q.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), entrySuffix) && e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// open reads an entry's header and checks its body's hash; the returned
// file is positioned at the body.
func (q *queue) open(name string) (entry, *os.File, error) {
	var ent entry
	f, err := os.Open(filepath.Join(q.dir, name))
	if err != nil {
		return ent, nil, err
	}
	line, err := bufio.NewReader(io.LimitReader(f, headerMax)).ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &ent)
	}
	if err != nil || ent.Key == "" {
		f.Close()
		return ent, nil, fmt.Errorf("queued object %s: bad header: %v", name, err)
	}
	if ent.Copy {
		return ent, f, nil
	}
	if _, err := f.Seek(headerMax, io.SeekStart); err != nil {
		f.Close()
		return ent, nil, err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err == nil && (n != ent.Size || hex.EncodeToString(h.Sum(nil)) != ent.SHA256) {
		err = fmt.Errorf("%d bytes with SHA-256 %x, queued %d bytes with SHA-256 %s", n, h.Sum(nil), ent.Size, ent.SHA256)
	}
	if err == nil {
		_, err = f.Seek(headerMax, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return ent, nil, fmt.Errorf("queued object %s (%s) is damaged: %w", name, ent.Key, err)
	}
	return ent, f, nil
}

func (q *queue) remove(name string) error {
	if err := os.Remove(filepath.Join(q.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(q.dir)
}

// setAside renames an entry out of the queue and returns its new path.
func (q *queue) setAside(name string) string {
	p := filepath.Join(q.dir, strings.TrimSuffix(name, entrySuffix)+".conflict")
	if err := os.Rename(filepath.Join(q.dir, name), p); err != nil {
		return err.Error()
	}
	return p
}

// IsDown reports whether the store whose queue directory is dir failed
// less than backoff ago (Put then queues for it without trying it).
func IsDown(dir string, backoff time.Duration) bool { return (&queue{dir: dir}).down(backoff) }

// MarkDown records that the store whose queue directory is dir failed now
// (for a caller that found it unreachable before a Put).
func MarkDown(dir string) {
	if err := os.MkdirAll(dir, 0o700); err == nil {
		(&queue{dir: dir}).markDown()
	}
}

// down reports whether the store failed less than backoff ago.
func (q *queue) down(backoff time.Duration) bool {
	fi, err := os.Stat(filepath.Join(q.dir, "down"))
	return err == nil && time.Since(fi.ModTime()) < backoff
}

func (q *queue) markDown() {
	p := filepath.Join(q.dir, "down")
	if err := os.WriteFile(p, nil, 0o600); err == nil {
		now := time.Now()
		_ = os.Chtimes(p, now, now)
	}
}

func (q *queue) clearDown() { _ = os.Remove(filepath.Join(q.dir, "down")) }

// tryLock takes the queue's catch-up lock without waiting.
func (q *queue) tryLock() (func(), bool) {
	f, err := os.OpenFile(filepath.Join(q.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return func() { f.Close() }, true
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
