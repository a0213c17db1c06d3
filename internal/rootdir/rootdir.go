// Package rootdir holds the directory steps that restore and its recovery configuration
// take inside an os.Root: opening a directory without following links, and fsyncing one so
// that the names created in it survive a crash.
package rootdir

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Open opens the directory rel of r for reading. Like every access through r, it never
// leaves the root, whatever links it meets.
func Open(r *os.Root, rel string) (*os.File, error) {
	return r.OpenFile(rel, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
}

// Sync fsyncs the directory rel of r: the entries created, renamed or removed in it are
// durable once it returns.
func Sync(r *os.Root, rel string) error {
	f, err := Open(r, rel)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", filepath.Join(r.Name(), rel), err)
	}
	return nil
}
