package scratch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// marker is the content of a marker file: who made the scratch server and where it is.
type marker struct {
	PID       int       `json:"pid"`        // the process that owns the scratch server
	PIDStart  uint64    `json:"pid_start"`  // its start time (clock ticks since boot), against pid reuse
	Dir       string    `json:"dir"`        // the scratch directory
	DataDir   string    `json:"data_dir"`   // the data directory inside it
	CreatedAt time.Time `json:"created_at"` // when
}

const markerSuffix = ".scratch.json"

// markerPath names the marker of a scratch directory: one file per directory.
func markerPath(markerDir, dir string) string {
	return filepath.Join(markerDir, strings.ReplaceAll(strings.Trim(dir, "/"), "/", "_")+markerSuffix)
}

// writeMarker writes m atomically (temporary file, fsync, rename, fsync of the directory).
func writeMarker(markerDir string, m marker) error {
	// The marker directory's parents are also the default scratch
	// directories' parents (drill/ under the spool): created searchable,
	// so that a server run as another user than the caller (root) can
	// reach its scratch directory. The markers themselves stay private.
	if err := os.MkdirAll(filepath.Dir(markerDir), 0o755); err != nil {
		return fmt.Errorf("scratch: marker directory: %w", err)
	}
	if err := os.MkdirAll(markerDir, 0o700); err != nil {
		return fmt.Errorf("scratch: marker directory: %w", err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	p := markerPath(markerDir, m.Dir)
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("scratch: marker: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("scratch: marker: %w", err)
	}
	return syncDir(markerDir)
}

func readMarker(p string) (marker, error) {
	var m marker
	b, err := os.ReadFile(p)
	if err != nil {
		return m, err
	}
	if len(b) > 1<<16 {
		return m, fmt.Errorf("scratch: marker %s is too large", p)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("scratch: marker %s: %w", p, err)
	}
	if !filepath.IsAbs(m.Dir) || filepath.Clean(m.Dir) != m.Dir || m.Dir == "/" || m.DataDir != filepath.Join(m.Dir, dataDirName) {
		return m, fmt.Errorf("scratch: marker %s names an unexpected directory %q", p, m.Dir)
	}
	return m, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// processStart returns the start time of a live process (field 22 of /proc/PID/stat), or
// ok false when there is no such process.
func processStart(pid int) (uint64, bool) {
	if pid <= 0 {
		return 0, false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 || f[0] == "Z" {
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	return v, err == nil
}

// alive reports whether the process that wrote m still runs.
func (m marker) alive() bool {
	st, ok := processStart(m.PID)
	return ok && (m.PIDStart == 0 || st == m.PIDStart)
}

// Stale describes a scratch server CleanStale found.
type Stale struct {
	Dir          string // the scratch directory
	OwnerPID     int    // the process that made it
	OwnerRunning bool   // that process still runs (cleaned only with force)
	Postmaster   int    // the pid of the postmaster that was stopped, 0 if none ran
}

// CleanStale cleans up after scratch servers whose process is gone (killed with -9, or a
// crashed host): for each marker in markerDir it stops a postmaster still running on the
// marker's data directory and removes the scratch directory, then the marker. A marker
// whose process still runs (another drill) is left alone unless force. It returns what it
// found; markerDir not existing is not an error.
func CleanStale(ctx context.Context, markerDir string, force bool, log *slog.Logger) ([]Stale, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	entries, err := os.ReadDir(markerDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("scratch: %w", err)
	}
	var out []Stale
	var errs []error
	for _, e := range entries {
		name := e.Name()
		p := filepath.Join(markerDir, name)
		if strings.HasSuffix(name, markerSuffix+".tmp") {
			os.Remove(p) // a marker whose writer died before the rename
			continue
		}
		if !strings.HasSuffix(name, markerSuffix) {
			continue
		}
		m, err := readMarker(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st := Stale{Dir: m.Dir, OwnerPID: m.PID, OwnerRunning: m.alive()}
		if st.OwnerRunning && m.PID == os.Getpid() {
			continue // our own
		}
		if st.OwnerRunning && !force {
			out = append(out, st)
			continue
		}
		log.Warn("cleaning up a scratch server left behind", "dir", m.Dir, "pid", m.PID)
		pm, err := stopPostmaster(m.DataDir)
		st.Postmaster = pm
		if err != nil {
			errs = append(errs, err)
			out = append(out, st)
			continue
		}
		if err := os.RemoveAll(m.Dir); err != nil {
			errs = append(errs, fmt.Errorf("scratch: removing %s: %w", m.Dir, err))
			out = append(out, st)
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("scratch: %w", err))
		}
		st.OwnerRunning = false
		out = append(out, st)
	}
	return out, errors.Join(errs...)
}

// postmasterOf returns the pid of a live postmaster of dataDir: the pid in its
// postmaster.pid, if that process is a postgres whose working directory is dataDir (a
// postmaster chdirs into its data directory). 0 when none runs.
func postmasterOf(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("scratch: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 2 {
		return 0, nil // being written, or left half-written: no server to stop
	}
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 0 {
		return 0, nil
	}
	if filepath.Clean(strings.TrimSpace(lines[1])) != filepath.Clean(dataDir) {
		return 0, fmt.Errorf("scratch: %s/postmaster.pid names another data directory (%s); not stopping pid %d", dataDir, strings.TrimSpace(lines[1]), pid)
	}
	if _, ok := processStart(pid); !ok {
		return 0, nil
	}
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil || filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != "postgres" {
		return 0, nil // the pid was reused by something else
	}
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		return 0, nil
	}
	want, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		want = dataDir
	}
	if filepath.Clean(cwd) != filepath.Clean(want) {
		return 0, nil
	}
	return pid, nil
}

// stopPostmaster stops the postmaster of dataDir, if one runs: fast shutdown (SIGINT),
// then immediate (SIGQUIT), then SIGKILL, waiting for the process to be gone.
func stopPostmaster(dataDir string) (int, error) {
	pid, err := postmasterOf(dataDir)
	if err != nil || pid == 0 {
		return 0, err
	}
	start, _ := processStart(pid)
	gone := func() bool {
		st, ok := processStart(pid)
		return !ok || st != start
	}
	steps := []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{syscall.SIGINT, 30 * time.Second}, {syscall.SIGQUIT, 10 * time.Second}, {syscall.SIGKILL, 10 * time.Second}}
	for _, s := range steps {
		if gone() {
			return pid, nil
		}
		if err := syscall.Kill(pid, s.sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return pid, fmt.Errorf("scratch: signalling postmaster %d: %w", pid, err)
		}
		if waitFor(s.wait, gone) {
			return pid, nil
		}
	}
	if gone() {
		return pid, nil
	}
	return pid, fmt.Errorf("scratch: postmaster %d of %s did not exit", pid, dataDir)
}

// waitFor polls cond every 20 ms until it holds (true) or d passes (false). It takes no
// context on purpose: cleanup must run to its end after an interrupt too.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
