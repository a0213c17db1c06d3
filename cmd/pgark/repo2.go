package main

// A second repository (repo2). Each repository is opened through its own
// view of the settings: repository 2's view has repo = repo2 and every
// per-store setting replaced by its repo2- twin (options.go), so that the
// store opening code reads one repository's settings whichever it opens.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/health"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/fallback"
	"github.com/pgark/pgark/storage/mirror"
	"github.com/pgark/pgark/walinventory"
)

const repo2Prefix = "repo2-"

// repo1Key keeps, in a repository's view of the settings, the location of
// repository 1 (never an option name).
const repo1Key = "(repo1)"

// archiveRepo is the repository that archive_command names with --repo:
// repository 1, whichever repository's view env is.
func archiveRepo(env *cmdEnv) string {
	if v, ok := env.s.vals[repo1Key]; ok {
		return v
	}
	return env.s.str("repo")
}

// hasRepo2 reports whether a second repository is configured.
func hasRepo2(env *cmdEnv) bool { return env.s.str("repo2") != "" }

// repoEnv is env seen as repository idx (1 or 2): for 2, repo and the
// per-store settings take the values of repo2 and their repo2- twins.
// Its repo-index setting says which it is.
func repoEnv(env *cmdEnv, idx int) *cmdEnv {
	s := &settings{vals: maps.Clone(env.s.vals), src: maps.Clone(env.s.src)}
	s.vals["repo-index"] = strconv.Itoa(idx)
	s.vals[repo1Key] = env.s.vals["repo"]
	e := *env
	e.s = s
	if idx == 1 {
		return &e
	}
	for name, v := range env.s.vals {
		if base, ok := strings.CutPrefix(name, repo2Prefix); ok {
			s.vals[base], s.src[base] = v, env.s.src[name]
		}
	}
	s.vals["repo"], s.src["repo"] = env.s.vals["repo2"], env.s.src["repo2"]
	e.log = env.log.With("repo", 2)
	return &e
}

// repoIndexes are the repositories a per-repository command works on:
// --repo-index, else every configured one.
func repoIndexes(env *cmdEnv) ([]int, error) {
	switch env.s.str("repo-index") {
	case "1":
		return []int{1}, nil
	case "2":
		if !hasRepo2(env) {
			return nil, usageErrorf("repo-index 2: no second repository configured (set repo2)")
		}
		return []int{2}, nil
	}
	if hasRepo2(env) {
		return []int{1, 2}, nil
	}
	return []int{1}, nil
}

// repoRef names a repository in JSON output.
type repoRef struct {
	Index    int    `json:"index"`
	Location string `json:"location"`
}

func refFor(env *cmdEnv, idx int) repoRef {
	return repoRef{Index: idx, Location: repoEnv(env, idx).s.str("repo")}
}

// openRawStore opens repository idx's store (retries included) without
// reading anything from it.
func openRawStore(ctx context.Context, env *cmdEnv, idx int) (storage.Store, error) {
	e := repoEnv(env, idx)
	loc, err := parseLocation(e.s.str("repo"))
	if err != nil {
		return nil, fmt.Errorf("repository %d: %w", idx, err)
	}
	st, err := openStore(ctx, e, loc, "")
	if err != nil {
		return nil, fmt.Errorf("repository %d: %w", idx, err)
	}
	return st, nil
}

// openRepoFallback opens the repositories for reading: with repo2, one
// repository whose reads go to repository 1 and, when it fails or lacks an
// object, to repository 2 (package fallback); with --repo-index, that
// repository alone.
func openRepoFallback(ctx context.Context, env *cmdEnv) (*repo.Repo, *crypto.Identities, error) {
	if !hasRepo2(env) {
		if env.s.str("repo-index") == "2" {
			return nil, nil, usageErrorf("repo-index 2: no second repository configured (set repo2)")
		}
		return openRepoToRead(ctx, env)
	}
	switch idx := env.s.str("repo-index"); idx {
	case "1", "2":
		// One repository alone, no fallback: a drill or restore that
		// proves that this copy restores by itself.
		n, _ := strconv.Atoi(idx)
		return openRepoToRead(ctx, repoEnv(env, n))
	}
	var stores []storage.Store
	for _, idx := range []int{1, 2} {
		st, err := openRawStore(ctx, env, idx)
		if isUsage(err) {
			return nil, nil, err
		}
		if err != nil {
			env.log.Warn("cannot open a repository; reading from the other", "repository", idx, "err", err)
			st = unavailable{name: fmt.Sprintf("repository %d", idx), err: err}
		}
		stores = append(stores, st)
	}
	fb := fallback.New(env.log, stores...)
	r, err := repo.Open(ctx, fb)
	if err != nil {
		return nil, nil, err
	}
	if r.Trust, err = crypto.ParseTrusted(env.s.str("trusted-signers")); err != nil {
		return nil, nil, fmt.Errorf("%w: trusted-signers: %w", errKey, err)
	}
	ids, err := identities(env)
	if err != nil {
		return nil, nil, err
	}
	return r, ids, nil
}

// openRepoMirror opens the repositories for wal-push: with repo2, one
// repository whose writes go to both (package mirror), with a queue per
// repository in the spool for what one of them could not take in time.
// The repository configuration comes from the first one that answers; a
// repository that failed within the mirror's backoff, or does not answer
// within mirror-timeout, is written to through its bare store (its queue
// takes what it cannot), so that a dead repository does not slow archiving.
func openRepoMirror(ctx context.Context, env *cmdEnv) (*repo.Repo, error) {
	if !hasRepo2(env) {
		return openRepo(ctx, env)
	}
	dir, err := mirrorQueueDir(env)
	if err != nil {
		return nil, err
	}
	timeout, err := env.s.duration("mirror-timeout")
	if err != nil {
		return nil, err
	}
	if timeout < time.Second {
		return nil, usageErrorf("mirror-timeout: at least 1s")
	}
	backoff := max(2*timeout, 30*time.Second)
	stores := make([]storage.Store, 2)
	var r *repo.Repo
	var firstErr, fatal error
	noRepo := make([]error, 2)
	open := func(idx int, limit time.Duration) {
		octx, cancel := ctx, context.CancelFunc(func() {})
		if limit > 0 {
			octx, cancel = context.WithTimeout(ctx, limit)
		}
		defer cancel()
		ri, err := openRepo(octx, repoEnv(env, idx))
		if isUsage(err) {
			fatal = fmt.Errorf("repository %d: %w", idx, err)
			return
		}
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("repository %d: %w", idx, err)
			}
			if errors.Is(err, repo.ErrNoRepository) {
				// Never write into a location init has not made a
				// repository: queue everything for it instead.
				noRepo[idx-1] = err
				env.log.Error("no repository at this location (run pgark init for it); queueing for it", "repository", idx, "err", err)
				return
			}
			env.log.Warn("cannot open a repository; storing in the other and queueing for it", "repository", idx, "err", err)
			if ctx.Err() == nil {
				mirror.MarkDown(filepath.Join(dir, strconv.Itoa(idx)))
			}
			return
		}
		stores[idx-1] = ri.Store
		// Each repository enforces its own encryption on this writer
		// (fail closed): the codec is checked against the first one.
		if rs, err := recipients(env); err != nil {
			fatal = err
		} else if _, err := ri.CheckRecipients(rs); err != nil {
			fatal = fmt.Errorf("%w: repository %d: %w", errKey, idx, err)
		}
		if r == nil {
			r = ri
		}
	}
	for _, idx := range []int{1, 2} {
		if !mirror.IsDown(filepath.Join(dir, strconv.Itoa(idx)), backoff) {
			open(idx, timeout)
		}
	}
	for _, idx := range []int{1, 2} {
		if r == nil && fatal == nil && stores[idx-1] == nil {
			open(idx, 0) // the last chance: the full retry-timeout
		}
	}
	if fatal != nil {
		return nil, fatal
	}
	if r == nil {
		return nil, firstErr
	}
	for i := range stores {
		if stores[i] == nil && noRepo[i] != nil {
			stores[i] = unavailable{name: fmt.Sprintf("repository %d", i+1), err: noRepo[i]}
		}
		if stores[i] == nil {
			if stores[i], err = openRawStore(ctx, env, i+1); isUsage(err) {
				return nil, err
			} else if err != nil {
				stores[i] = unavailable{name: fmt.Sprintf("repository %d", i+1), err: err}
			}
		}
	}
	m, err := mirror.New(mirror.Config{Stores: stores, QueueDir: dir, Timeout: timeout, Backoff: backoff, CatchUpBudget: timeout / 2, Log: env.log})
	if err != nil {
		return nil, err
	}
	r.Store = m
	return r, nil
}

// sameRepoConfig refuses two repositories that would store objects
// differently readable: other recipients or another format.
func sameRepoConfig(a, b repo.Config) error {
	if a.Encryption != b.Encryption || !sameSet(a.Recipients, b.Recipients) {
		return fmt.Errorf("%w: repository 1 is encrypted to [%s] and repository 2 to [%s]; both must have the same registered recipients (pgark key add on the other)",
			errKey, strings.Join(a.Recipients, ", "), strings.Join(b.Recipients, ", "))
	}
	return nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// mirrorQueueDir is the spool directory of wal-push's queues when two
// repositories are configured, keyed by both repositories: <spool>/mirror/<id>.
// Its subdirectories 1 and 2 hold what repository 1 or 2 still lacks.
func mirrorQueueDir(env *cmdEnv) (string, error) {
	base, err := spoolBase(env)
	if err != nil {
		return "", err
	}
	if base == "" {
		return "", usageErrorf("two repositories need a spool directory outside the data directory for what one of them cannot take: set spool-dir")
	}
	id1, err := repoID(env)
	if err != nil {
		return "", err
	}
	id2, err := repoID(repoEnv(env, 2))
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(id1 + "\n" + id2))
	return filepath.Join(base, "mirror", hex.EncodeToString(h[:8])), nil
}

// mirrorBacklog is the number of objects queued for repository idx and
// the age of the oldest (0 when none, or no queue).
func mirrorBacklog(env *cmdEnv, idx int) (int, time.Duration) {
	if !hasRepo2(env) {
		return 0, 0
	}
	dir, err := mirrorQueueDir(env)
	if err != nil {
		return 0, 0
	}
	n, oldest, err := mirror.Pending(filepath.Join(dir, strconv.Itoa(idx)))
	if err != nil || n == 0 {
		return 0, 0
	}
	return n, time.Since(oldest)
}

// perRepo runs a per-repository command (list, verify, retain, check) on
// each repository that repoIndexes names. Without repo2 and --repo-index
// it is the command as it was. Text output comes in one section per
// repository, after the line that summary makes (when set: check's Nagios
// status line); JSON output is the command's object with a "repo" field
// ({"index", "location"}), and with both repositories
// {"format": 1, "repositories": [those objects]}. Every repository is
// worked on even when one fails; worst picks the error returned (default:
// the first).
//
// repoHooks adapt it to a command; every field may be nil.
type repoHooks struct {
	// worst picks the error returned from those of the failed repositories
	// (default: the first).
	worst func([]error) error
	// summary is a first line above the text sections.
	summary func(idxs []int, outs []string, errs []error) string
	// prepare adjusts a repository's view before the command runs.
	prepare func(e *cmdEnv, idx int)
	// output, when it returns true, has written the whole output (after
	// every repository ran) instead of the sections or JSON.
	output func(env *cmdEnv, idxs []int, outs []string) (bool, error)
}

func perRepo(run func(context.Context, *cmdEnv, []string) error, h repoHooks) func(context.Context, *cmdEnv, []string) error {
	return func(ctx context.Context, env *cmdEnv, args []string) error {
		if !hasRepo2(env) && env.s.str("repo-index") == "" {
			return run(ctx, env, args)
		}
		idxs, err := repoIndexes(env)
		if err != nil {
			return err
		}
		asJSON := false
		if _, ok := env.s.vals["json"]; ok { // not every command prints JSON
			if asJSON, err = env.s.boolean("json"); err != nil {
				return err
			}
		}
		outs := make([]string, len(idxs))
		errs := make([]error, len(idxs))
		for i, idx := range idxs {
			e := repoEnv(env, idx)
			var buf bytes.Buffer
			e.stdout = &buf
			if h.prepare != nil {
				h.prepare(e, idx)
			}
			if err := run(ctx, e, args); err != nil {
				// check's statuses are in its report; the error returned
				// is logged once by run's caller.
				if se := new(checkStatusError); !errors.As(err, &se) && len(idxs) > 1 {
					env.log.Warn("repository failed", "repository", idx, "err", err)
				}
				errs[i] = fmt.Errorf("repository %d: %w", idx, err)
			}
			outs[i] = buf.String()
		}
		handled := false
		if h.output != nil {
			if handled, err = h.output(env, idxs, outs); err != nil {
				return err
			}
		}
		switch {
		case handled:
		case asJSON:
			var objs []map[string]any
			for i, idx := range idxs {
				obj := map[string]any{}
				if jerr := json.Unmarshal([]byte(outs[i]), &obj); jerr != nil {
					obj = map[string]any{"error": storage.OneLine(fmt.Sprint(errs[i]))}
				}
				obj["repo"] = refFor(env, idx)
				objs = append(objs, obj)
			}
			var perr error
			if len(objs) == 1 {
				perr = printJSON(env.stdout, objs[0])
			} else {
				perr = printJSON(env.stdout, map[string]any{"format": 1, "repositories": objs})
			}
			if perr != nil {
				return perr
			}
		default:
			if h.summary != nil {
				fmt.Fprintln(env.stdout, h.summary(idxs, outs, errs))
			}
			for i, idx := range idxs {
				if i > 0 {
					fmt.Fprintln(env.stdout)
				}
				fmt.Fprintf(env.stdout, "== repository %d: %s ==\n%s", idx, refFor(env, idx).Location, outs[i])
			}
		}
		var failed []error
		for _, e := range errs {
			if e != nil {
				failed = append(failed, e)
			}
		}
		if len(failed) == 0 {
			return nil
		}
		if h.worst != nil {
			return h.worst(failed)
		}
		return failed[0]
	}
}

// worstCheck is the error of the most severe check result.
func worstCheck(errs []error) error {
	w := errs[0]
	for _, e := range errs[1:] {
		if checkExitCode(e) > checkExitCode(w) {
			w = e
		}
	}
	return w
}

// runCheckRepos is check over each repository. With two repositories, the
// Prometheus metrics of both (--prometheus, prometheus-file) are merged,
// each sample labelled repo_index="1" or "2" (check_repo2.go).
func runCheckRepos(ctx context.Context, env *cmdEnv, args []string) error {
	return perRepo(runCheck, repoHooks{worst: worstCheck, summary: checkSummary, prepare: checkPrepare, output: checkOutputMerged})(ctx, env, args)
}

// checkSummary is the first line of check's text output with two
// repositories (what Nagios shows): the worst status, then each
// repository's own first line.
func checkSummary(idxs []int, outs []string, errs []error) string {
	worst := exitOK
	var parts []string
	for i, idx := range idxs {
		worst = max(worst, checkExitCode(errs[i]))
		line, _, _ := strings.Cut(outs[i], "\n")
		line = strings.TrimPrefix(line, "PGARK CHECK ")
		parts = append(parts, fmt.Sprintf("repository %d: %s", idx, line))
	}
	return fmt.Sprintf("PGARK CHECK %s - %s", strings.ToUpper(health.Status(worst).String()), strings.Join(parts, "; "))
}

// repositoryArchiveCheck is check's comparison of this repository's archive
// with the server's, when two repositories are configured.
func repositoryArchiveCheck(env *cmdEnv, srv *health.Server, rep *walinventory.Report, maxLag int) (health.Check, bool) {
	if !hasRepo2(env) {
		return health.Check{}, false
	}
	idx, err := strconv.Atoi(env.s.str("repo-index"))
	if err != nil {
		idx = 1
	}
	n, oldest := mirrorBacklog(env, idx)
	return health.RepositoryArchive(idx, srv, rep, health.Backlog{Queued: n, Oldest: oldest}, maxLag), true
}

// unavailable stands for a repository whose store cannot even be opened
// (a local repository's disk not mounted): every operation fails with the
// reason, so that reads go to the other repository and writes are queued.
type unavailable struct {
	name string
	err  error
}

func (u unavailable) String() string { return u.name }

func (u unavailable) fail() error { return fmt.Errorf("%s cannot be opened: %w", u.name, u.err) }

func (u unavailable) Put(context.Context, string, io.Reader, storage.PutOptions) error {
	return u.fail()
}

func (u unavailable) Get(context.Context, string) (io.ReadCloser, storage.ObjectInfo, error) {
	return nil, storage.ObjectInfo{}, u.fail()
}

func (u unavailable) GetRange(context.Context, string, int64, int64) (io.ReadCloser, error) {
	return nil, u.fail()
}

func (u unavailable) Stat(context.Context, string) (storage.ObjectInfo, error) {
	return storage.ObjectInfo{}, u.fail()
}

func (u unavailable) List(context.Context, string, func(storage.ObjectInfo) error) error {
	return u.fail()
}

func (u unavailable) ReadSmall(context.Context, string, int64) ([]byte, string, error) {
	return nil, "", u.fail()
}

func (u unavailable) Swap(context.Context, string, []byte, string) (string, error) {
	return "", u.fail()
}

func (u unavailable) Delete(context.Context, string) error { return u.fail() }
