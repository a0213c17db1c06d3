package wal

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// A spool is a private local directory where pgark keeps what outlives one
// archive_command or restore_command process: the records of segments pushed
// ahead, and the segments fetched ahead. It lives outside the data directory
// (base backups and pg_rewind copy what is inside into clones), one
// directory per repository, cluster and data directory, so that two clusters
// or two repositories never share records. Losing a spool is harmless: the
// next call pushes or fetches again.

// spoolDir is the directory of one spool under base: kind, then a hash of
// what keys it, then the cluster's system identifier (for people who look).
func spoolDir(base, kind string, sysid uint64, key ...string) string {
	h := sha256.Sum256([]byte(strings.Join(key, "\x00")))
	return filepath.Join(base, fmt.Sprintf("%s-%s-%d", kind, hex.EncodeToString(h[:6]), sysid))
}

// makePrivateDir creates dir (and its parents) and makes sure that it is a
// directory of this user that nobody else can read or write: prefetched WAL
// is plaintext.
func makePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to uid %d, not to this user (uid %d)", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return os.Chmod(dir, 0o700)
	}
	return nil
}

// flock is an advisory lock on a file in a spool. The kernel releases it
// when its holder dies, so a crash never leaves a spool locked.
type flock struct{ f *os.File }

// tryLock takes the exclusive lock on path, or reports false if another
// process holds it.
func tryLock(path string) (*flock, bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return &flock{f}, true, nil
}

// waitLock takes the exclusive lock on path, waiting up to max for another
// holder to let go.
func waitLock(path string, max time.Duration) (*flock, error) {
	deadline := time.Now().Add(max)
	for {
		l, ok, err := tryLock(path)
		if err != nil || ok {
			return l, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s is still locked by another pgark after %s", path, max)
		}
		// A waiting wal-push usually waits for a batch that holds its
		// answer: look often, it answers as soon as the batch ends.
		time.Sleep(2 * time.Millisecond)
	}
}

// isLocked reports whether another process holds the lock on path.
func isLocked(path string) bool {
	l, ok, err := tryLock(path)
	if err != nil {
		return false
	}
	if ok {
		l.unlock()
		return false
	}
	return true
}

func (l *flock) unlock() {
	if l != nil {
		l.f.Close() // closing the descriptor releases the lock
	}
}

// writeFileAtomic writes name in dir through a temporary file and a rename,
// so that readers see the whole file or none. It does not fsync: spool files
// are hints that a crash may lose (a lost record means one more push).
func writeFileAtomic(dir, name string, b []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// removeTempFiles removes the temporary files that a process killed in the
// middle of a write left in dir.
func removeTempFiles(dir string, olderThan time.Duration) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") || !strings.Contains(e.Name(), ".tmp-") && !strings.Contains(e.Name(), ".pgark-tmp-") {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > olderThan {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// segmentSystemID reads the system identifier from the long page header at
// the start of the segment at path.
func segmentSystemID(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b := make([]byte, LongHeaderSize)
	if _, err := io.ReadFull(f, b); err != nil {
		return 0, err
	}
	h, err := ParseHeader(b)
	if err != nil {
		return 0, err
	}
	return h.SystemID, nil
}

// fileIdent identifies a file's content without reading it: any write to a
// file changes its mtime and ctime, a rename or a new link its ctime, and a
// file made anew (a restored data directory, a recycled segment) has a new
// inode or new times. Two equal identities of one path taken at different
// moments mean that nothing changed the file in between.
type fileIdent struct {
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns"`
}

// identOf is fi's identity; ok is false when the system does not give one.
func identOf(fi os.FileInfo) (id fileIdent, ok bool) {
	if fi == nil {
		return id, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Ino == 0 {
		return id, false
	}
	return fileIdent{
		Dev: uint64(st.Dev), Ino: st.Ino, Size: st.Size,
		MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano(),
	}, true
}

// sameIdent is the identity of a file whose stats before and after it was
// read (size bytes) are equal, or nil.
func sameIdent(before, after os.FileInfo, size int64) *fileIdent {
	a, ok1 := identOf(before)
	b, ok2 := identOf(after)
	if !ok1 || !ok2 || a != b || a.Size != size {
		return nil
	}
	return &a
}

// ControlSystemID reads the system identifier of the cluster whose data
// directory is pgdata, from global/pg_control (its first field, in every
// version).
func ControlSystemID(pgdata string) (uint64, error) {
	f, err := os.Open(filepath.Join(pgdata, "global", "pg_control"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b := make([]byte, 8)
	if _, err := io.ReadFull(f, b); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// staleSpoolAge is how long a spool of another data directory or repository
// may sit unused before a spool operation removes it.
const staleSpoolAge = 7 * 24 * time.Hour

// removeStaleSpools removes the spools under base other than self that
// nothing has touched for staleSpoolAge (clusters and repositories that are
// gone), so that the spool base stays small.
func removeStaleSpools(base, self string) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(base, e.Name())
		if !e.IsDir() || p == self || !(strings.HasPrefix(e.Name(), "push-") || strings.HasPrefix(e.Name(), "fetch-")) {
			continue
		}
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < staleSpoolAge || isLocked(filepath.Join(p, helperLock)) || isLocked(filepath.Join(p, "lock")) {
			continue
		}
		os.RemoveAll(p)
	}
}
