package walgap

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Local is the local record of dropped segments of one cluster and
// repository: a private directory under the spool base, outside the data
// directory, one file per dropped segment.
type Local struct {
	Dir string
}

const droppedSuffix = ".dropped"

// LocalFor is the local record under spool base base for the repository
// repoID and the cluster sysid. It is not created until a drop is recorded.
func LocalFor(base, repoID string, sysid uint64) Local {
	h := sha256.Sum256([]byte(repoID))
	return Local{Dir: filepath.Join(base, fmt.Sprintf("gaps-%s-%d", hex.EncodeToString(h[:6]), sysid))}
}

// Add records a dropped segment durably: the file and the directory are
// fsynced before Add returns, so that a crash right after wal-push answered
// never loses the fact that the segment is not in the repository.
func (l Local) Add(d Dropped) error {
	if err := os.MkdirAll(l.Dir, 0o700); err != nil {
		return fmt.Errorf("gap record directory: %w", err)
	}
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(l.Dir, "."+d.Name+".tmp-*")
	if err != nil {
		return fmt.Errorf("record dropped %s: %w", d.Name, err)
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(l.Dir, d.Name+droppedSuffix))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("record dropped %s: %w", d.Name, err)
	}
	if err := syncDir(l.Dir); err != nil {
		return fmt.Errorf("record dropped %s: %w", d.Name, err)
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// Pending reads the recorded drops not yet written to the repository. A
// missing directory is none; unreadable files are skipped.
func (l Local) Pending() ([]Dropped, error) {
	ents, err := os.ReadDir(l.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the gap records: %w", err)
	}
	var out []Dropped
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), droppedSuffix)
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(l.Dir, e.Name()))
		if err != nil {
			continue
		}
		var d Dropped
		if json.Unmarshal(b, &d) != nil || d.Name != name {
			continue
		}
		out = append(out, d)
	}
	return out, nil
}

// Forget removes the local records of names (once the repository holds
// their record), and syncs the directory.
func (l Local) Forget(names []string) error {
	for _, n := range names {
		if err := os.Remove(filepath.Join(l.Dir, n+droppedSuffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return syncDir(l.Dir)
}

// AnyLocal reports whether base holds a local record directory for the
// repository repoID, of any cluster: one directory read, so that pushes
// look for records to flush without reading the repository.
func AnyLocal(base, repoID string) bool {
	h := sha256.Sum256([]byte(repoID))
	m, _ := filepath.Glob(filepath.Join(base, "gaps-"+hex.EncodeToString(h[:6])+"-*"))
	return len(m) > 0
}
