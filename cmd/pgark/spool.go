package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pgark/pgark/wal"
)

// Spool timings. Not options: they bound how stale a hint may be, and a
// stale hint only costs a repeated push or download.
const (
	pushRecordMaxAge  = 10 * time.Minute
	prefetchIdle      = 60 * time.Second
	prefetchMaxAge    = 10 * time.Minute
	prefetchMaxWait   = 30 * time.Second
	helperLogMaxBytes = 1 << 20
)

// pgdataDir is the data directory of the server that runs the command:
// --pgdata, else the working directory (PostgreSQL runs archive_command and
// restore_command there).
func pgdataDir(env *cmdEnv) string {
	dir := env.s.str("pgdata")
	if dir == "" {
		dir = "."
	}
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return dir
}

// isStandby reports whether the data directory (pgdataDir) has
// standby.signal.
func isStandby(env *cmdEnv) bool {
	_, err := os.Stat(filepath.Join(pgdataDir(env), "standby.signal"))
	return err == nil
}

// spoolBase is the directory under which spools live: --spool-dir, else the
// user's cache directory, never inside the data directory (base backups and
// pg_rewind copy what is there into clones).
func spoolBase(env *cmdEnv) (string, error) {
	if v := env.s.str("spool-dir"); v != "" {
		if !filepath.IsAbs(v) {
			return "", usageErrorf("spool-dir (%s): %q is a relative path; give an absolute directory path", env.s.src["spool-dir"], v)
		}
		if inside(filepath.Clean(v), pgdataDir(env)) {
			return "", usageErrorf("spool-dir (%s): %q is inside the data directory %s; base backups and pg_rewind would copy it into clones", env.s.src["spool-dir"], v, pgdataDir(env))
		}
		return filepath.Clean(v), nil
	}
	var candidates []string
	if x := env.getenv("XDG_CACHE_HOME"); filepath.IsAbs(x) {
		candidates = append(candidates, filepath.Join(x, "pgark"))
	} else if h := env.getenv("HOME"); filepath.IsAbs(h) && h != "/" {
		candidates = append(candidates, filepath.Join(h, ".cache", "pgark"))
	}
	tmp := fmt.Sprintf("pgark-%d", os.Geteuid())
	candidates = append(candidates, filepath.Join(os.TempDir(), tmp), filepath.Join("/tmp", tmp))
	for _, c := range candidates {
		if !inside(c, pgdataDir(env)) {
			return c, nil
		}
	}
	env.log.Warn("push-ahead and prefetch are off: no spool directory outside the data directory; set spool-dir", "pgdata", pgdataDir(env))
	return "", nil
}

// inside reports whether path is dir or lies under it.
func inside(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// repoID names the configured repository, to key spools: the same location
// always maps to the same spools, two locations never share one.
func repoID(env *cmdEnv) (string, error) {
	loc, err := parseLocation(env.s.str("repo"))
	if err != nil {
		return "", err
	}
	if loc.local != "" {
		return "file://" + loc.local, nil
	}
	if loc.azureContainer != "" {
		return fmt.Sprintf("azure://%s/%s@%s", loc.azureContainer, loc.prefix, env.s.str("azure-endpoint")), nil
	}
	if loc.gcs {
		return fmt.Sprintf("gs://%s/%s@%s", loc.bucket, loc.prefix, env.s.str("gcs-endpoint")), nil
	}
	if loc.sftp != nil {
		return loc.sftp.URL(), nil
	}
	return fmt.Sprintf("s3://%s/%s@%s", loc.bucket, loc.prefix, env.s.str("s3-endpoint")), nil
}

// spoolLocation is the spool base directory ("" when no spool can be used)
// and the repository's identity that keys the spools in it.
func spoolLocation(env *cmdEnv) (base, id string, err error) {
	if base, err = spoolBase(env); err != nil {
		return "", "", err
	}
	if id, err = repoID(env); err != nil {
		return "", "", err
	}
	if at := env.s.str("repo-target-time"); at != "" {
		// The repository as of a past time is another repository: never
		// share prefetched WAL with reads of its current state.
		id += " as of " + at
	}
	return base, id, nil
}

func aheadOptions(env *cmdEnv) (wal.AheadOptions, error) {
	var o wal.AheadOptions
	var err error
	if o.Ahead, err = nonNegative(env, "push-ahead"); err != nil {
		return o, err
	}
	if o.Jobs, err = nonNegative(env, "push-jobs"); err != nil {
		return o, err
	}
	if o.LockWait, err = env.s.duration("retry-timeout"); err != nil {
		return o, err
	}
	if o.Ahead == 0 || o.Jobs == 0 {
		return wal.AheadOptions{}, nil
	}
	if o.SpoolBase, o.RepoID, err = spoolLocation(env); err != nil {
		return o, err
	}
	o.MaxAge = pushRecordMaxAge
	return o, nil
}

func prefetchOptions(env *cmdEnv) (wal.PrefetchOptions, error) {
	var o wal.PrefetchOptions
	var err error
	if o.Ahead, err = nonNegative(env, "fetch-ahead"); err != nil {
		return o, err
	}
	if o.Jobs, err = nonNegative(env, "fetch-jobs"); err != nil {
		return o, err
	}
	if o.MaxSize, err = env.s.size("spool-max-size"); err != nil {
		return o, err
	}
	if o.Ahead == 0 || o.Jobs == 0 {
		return wal.PrefetchOptions{}, nil
	}
	if o.SpoolBase, o.RepoID, err = spoolLocation(env); err != nil {
		return o, err
	}
	if idx := env.s.str("repo-index"); idx != "" && hasRepo2(env) {
		// One repository alone (a drill of the second copy): never
		// served WAL that the fallback view fetched from the other.
		o.RepoID += " repository " + idx + " only"
	}
	o.PGData = pgdataDir(env)
	o.Idle, o.MaxAge, o.Wait = prefetchIdle, prefetchMaxAge, prefetchMaxWait
	if rt, err := env.s.duration("retry-timeout"); err == nil {
		o.Wait = min(o.Wait, rt)
	}
	return o, nil
}

func nonNegative(env *cmdEnv, name string) (int, error) {
	v, err := env.s.integer(name)
	if err == nil && v < 0 {
		err = usageErrorf("%s (%s): %d is negative", name, env.s.src[name], v)
	}
	return v, err
}

// startPrefetcher starts the prefetch helper, `pgark wal-prefetch`, detached,
// with this call's settings. Its log goes to helper.log in the spool.
func startPrefetcher(env *cmdEnv, sp *wal.FetchSpool, o wal.PrefetchOptions) error {
	return startHelper(env, "wal-prefetch", nil, filepath.Join(sp.Dir(), "helper.log"), nil)
}

// startHelper starts `pgark COMMAND --pgdata=... ARGS` detached (its own
// session, so that neither PostgreSQL's signals nor the end of this call
// stop it), with this call's settings, its output appended to logPath. A
// lock, when given, is handed down as descriptor 3 (named by
// inheritedLockEnv).
func startHelper(env *cmdEnv, command string, cmdArgs []string, logPath string, lock *os.File) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	// Settings given as flags are passed on; the environment (PGARK_*,
	// AWS_*) and the config file path are inherited.
	args := []string{command, "--pgdata=" + pgdataDir(env)}
	for _, opt := range options {
		if opt.name == "pgdata" || !opt.forCommand(command) || !strings.HasPrefix(env.s.src[opt.name], "--") {
			continue
		}
		args = append(args, "--"+opt.name+"="+env.s.str(opt.name))
	}
	if p := env.s.str("config"); p != "" && strings.HasPrefix(env.s.src["config"], "--") {
		args = append(args, "--config="+p)
	}
	args = append(args, cmdArgs...)
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if fi, err := os.Stat(logPath); err == nil && fi.Size() > helperLogMaxBytes {
		flags |= os.O_TRUNC
	}
	logf, err := os.OpenFile(logPath, flags, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, args...)
	// The working directory is inherited, so relative paths in settings
	// mean what they meant to the call.
	cmd.Stdout, cmd.Stderr = logf, logf
	if lock != nil {
		cmd.ExtraFiles = []*os.File{lock}
		cmd.Env = append(os.Environ(), inheritedLockEnv+"=3")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}
