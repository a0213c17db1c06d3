package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/pgark/pgark/storage/local"
	"github.com/pgark/pgark/storage/mirror"
)

// storeSettings are the prefixes of per-store settings: each needs a repo2-
// twin, so that the second repository can differ from the first.
var storeSettings = []string{"s3-", "azure-", "gcs-", "sftp-"}

// TestRepo2Twins: every per-store option has a repo2- twin of the same
// kind, default, values and commands, and every twin has its original.
func TestRepo2Twins(t *testing.T) {
	byName := map[string]option{}
	for _, o := range options {
		byName[o.name] = o
	}
	for _, o := range options {
		if base, ok := strings.CutPrefix(o.name, repo2Prefix); ok {
			if _, ok := byName[base]; !ok {
				t.Errorf("%s twins no option %s", o.name, base)
			}
			continue
		}
		if !slices.ContainsFunc(storeSettings, func(p string) bool { return strings.HasPrefix(o.name, p) }) {
			continue
		}
		tw, ok := byName[repo2Prefix+o.name]
		if !ok {
			t.Errorf("%s has no %s%s twin", o.name, repo2Prefix, o.name)
			continue
		}
		if tw.kind != o.kind || tw.def != o.def || !slices.Equal(tw.enum, o.enum) || !slices.Equal(tw.cmds, o.cmds) {
			t.Errorf("%s and its twin differ: %+v / %+v", o.name, o, tw)
		}
	}
}

// TestRepoEnv: repository 2's view takes repo2 and the repo2- settings;
// the rest is shared; repository 1's view is the settings as they are.
func TestRepoEnv(t *testing.T) {
	env := map[string]string{
		"PGARK_REPO": "/r1", "PGARK_REPO2": "s3://b/p",
		"PGARK_S3_ENDPOINT": "http://one", "PGARK_REPO2_S3_ENDPOINT": "http://two",
		"PGARK_REPO2_S3_FORCE_PATH_STYLE": "true", "PGARK_RETRY_TIMEOUT": "9s",
	}
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	addOptions(fs, "list")
	s, err := resolve(fs, "list", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	e := &cmdEnv{s: s, log: slog.New(slog.DiscardHandler)}
	one, two := repoEnv(e, 1), repoEnv(e, 2)
	for _, c := range []struct {
		env       *cmdEnv
		name, val string
	}{
		{one, "repo", "/r1"}, {one, "s3-endpoint", "http://one"}, {one, "s3-force-path-style", "false"}, {one, "repo-index", "1"},
		{two, "repo", "s3://b/p"}, {two, "s3-endpoint", "http://two"}, {two, "s3-force-path-style", "true"}, {two, "repo-index", "2"},
		{two, "retry-timeout", "9s"},
	} {
		if got := c.env.s.str(c.name); got != c.val {
			t.Errorf("repository %s: %s = %q, want %q", c.env.s.str("repo-index"), c.name, got, c.val)
		}
	}
	if e.s.str("repo") != "/r1" || e.s.str("s3-endpoint") != "http://one" {
		t.Error("repoEnv changed the settings it was given")
	}
	if archiveRepo(two) != "/r1" {
		t.Errorf("archiveRepo of repository 2's view: %q", archiveRepo(two))
	}
	if idx, err := repoIndexes(e); err != nil || !slices.Equal(idx, []int{1, 2}) {
		t.Errorf("repoIndexes: %v %v", idx, err)
	}
	delete(env, "PGARK_REPO2")
	env["PGARK_REPO_INDEX"] = "2"
	s, _ = resolve(fs, "list", func(k string) string { return env[k] })
	if _, err := repoIndexes(&cmdEnv{s: s}); err == nil || !isUsage(err) {
		t.Errorf("repo-index 2 without repo2: %v", err)
	}
}

// TestWalPushRepo2Queue: with repository 2's directory gone, wal-push
// still exits 0 (repository 1 holds the file) and queues the object for
// repository 2 in the spool; once the directory is back, the next push
// delivers the queued object, and wal-fetch reads from repository 2 when
// repository 1 lacks a file.
func TestWalPushRepo2Queue(t *testing.T) {
	dir := t.TempDir()
	r1, r2, spool, pgdata := filepath.Join(dir, "r1"), filepath.Join(dir, "r2"), filepath.Join(dir, "spool"), filepath.Join(dir, "pgdata")
	if err := os.MkdirAll(filepath.Join(pgdata, "pg_wal"), 0o700); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PGARK_REPO": r1, "PGARK_REPO2": r2, "PGARK_SPOOL_DIR": spool, "PGARK_PGDATA": pgdata,
		"PGARK_MIRROR_TIMEOUT": "1s", "PGARK_PUSH_AHEAD": "0", "PGARK_RETRY_TIMEOUT": "1s", "PGARK_FETCH_AHEAD": "0"}
	initEnv := maps.Clone(env)
	delete(initEnv, "PGARK_PGDATA") // nothing to bind to yet
	if code, out, errs := runCLI(t, initEnv, "init"); code != 0 || strings.Count(out, "initialised repository") != 2 {
		t.Fatalf("init: %d %s %s", code, out, errs)
	}
	history := func(tli int) string {
		p := filepath.Join(pgdata, "pg_wal", fmt.Sprintf("%08X.history", tli))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("%d\t0/3000000\tno recovery target specified\n", tli-1)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := func(tli int) string { return fmt.Sprintf("wal/%08X/%08X.history.pgark", tli, tli) }
	stored := func(repo string, tli int) bool {
		st, err := local.New(repo)
		if err != nil {
			return false
		}
		_, err = st.Stat(t.Context(), key(tli))
		return err == nil
	}
	if code, _, errs := runCLI(t, env, "wal-push", history(2)); code != 0 || !stored(r1, 2) || !stored(r2, 2) {
		t.Fatalf("push with both up: %d %s", code, errs)
	}

	hidden := r2 + ".away"
	if err := os.Rename(r2, hidden); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCLI(t, env, "wal-push", history(3)); code != 0 || !stored(r1, 3) {
		t.Fatalf("push with repository 2 gone: %d %s", code, errs)
	}
	queued, _ := filepath.Glob(filepath.Join(spool, "mirror", "*", "2", "*.queued"))
	if len(queued) != 1 {
		t.Fatalf("queued for repository 2: %v", queued)
	}
	if err := os.Rename(hidden, r2); err != nil {
		t.Fatal(err)
	}
	// The failure is remembered for 30 s, during which pushes queue for
	// repository 2 without trying it: age the queue's marker past that.
	qdir := filepath.Dir(queued[0])
	if !mirror.IsDown(qdir, 30*time.Second) {
		t.Fatal("repository 2 not marked down after it failed")
	}
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(qdir, "down"), past, past); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCLI(t, env, "wal-push", history(4)); code != 0 || !stored(r2, 3) || !stored(r2, 4) {
		t.Fatalf("after repository 2 returned: %d %s; 3 in repository 2: %v", code, errs, stored(r2, 3))
	}
	if left, _ := filepath.Glob(filepath.Join(spool, "mirror", "*", "2", "*.queued")); len(left) != 0 {
		t.Fatalf("still queued: %v", left)
	}

	// wal-fetch: a file only repository 2 holds is found there; one that
	// neither holds is "not found" (exit 1).
	if err := os.Remove(filepath.Join(r1, key(3))); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, "fetched")
	if code, _, errs := runCLI(t, env, "wal-fetch", "00000003.history", dest); code != 0 {
		t.Fatalf("fetch through repository 2: %d %s", code, errs)
	}
	if b, _ := os.ReadFile(dest); !strings.HasPrefix(string(b), "2\t0/3000000") {
		t.Fatalf("fetched %q", b)
	}
	if code, _, errs := runCLI(t, env, "wal-fetch", "00000009.history", dest+"2"); code != 1 {
		t.Fatalf("fetch of a file in neither: %d %s", code, errs)
	}
}

func TestMergePrometheus(t *testing.T) {
	one := "# HELP pgark_check_status s\n# TYPE pgark_check_status gauge\npgark_check_status 0\n# HELP pgark_check_result r\n# TYPE pgark_check_result gauge\npgark_check_result{check=\"cluster\"} 0\n"
	two := "# HELP pgark_check_status s\n# TYPE pgark_check_status gauge\npgark_check_status 2\n# HELP pgark_backups b\n# TYPE pgark_backups gauge\npgark_backups 3\n"
	got := mergePrometheus([]int{1, 2}, []string{one, two})
	want := `# HELP pgark_check_status s
# TYPE pgark_check_status gauge
pgark_check_status{repo_index="1"} 0
pgark_check_status{repo_index="2"} 2
# HELP pgark_check_result r
# TYPE pgark_check_result gauge
pgark_check_result{repo_index="1",check="cluster"} 0
# HELP pgark_backups b
# TYPE pgark_backups gauge
pgark_backups{repo_index="2"} 3
`
	if got != want {
		t.Fatalf("merged:\n%s\nwant:\n%s", got, want)
	}
}

// TestKeysBothRepos: key add and key remove change both repositories, so
// that a writer's recipients are registered in each (wal-push checks them
// against each repository and refuses when one of them does not accept them).
func TestKeysBothRepos(t *testing.T) {
	dir := t.TempDir()
	gen := func(name string) string {
		code, out, errs := runCLI(t, nil, "key", "generate", filepath.Join(dir, name))
		if code != 0 {
			t.Fatalf("key generate: %s", errs)
		}
		return strings.TrimSpace(out)
	}
	old, next := gen("old.key"), gen("new.key")
	r1, r2 := filepath.Join(dir, "r1"), filepath.Join(dir, "r2")
	env := map[string]string{"PGARK_REPO": r1, "PGARK_REPO2": r2, "PGARK_AGE_RECIPIENTS": old}
	if code, _, errs := runCLI(t, env, "init"); code != 0 {
		t.Fatalf("init: %s", errs)
	}
	if code, out, errs := runCLI(t, env, "key", "add", next); code != 0 || strings.Count(out, "added ") != 2 {
		t.Fatalf("key add: %d %s %s", code, out, errs)
	}
	if code, out, errs := runCLI(t, env, "key", "remove", old); code != 0 || strings.Count(out, "removed ") != 2 {
		t.Fatalf("key remove: %d %s %s", code, out, errs)
	}
	for _, r := range []string{r1, r2} {
		b, err := os.ReadFile(filepath.Join(r, "pgark.json"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"remove"`) || strings.Count(string(b), `"add"`) != 2 {
			t.Fatalf("%s: pgark.json %s", r, b)
		}
	}
	pgdata := filepath.Join(dir, "pgdata")
	os.MkdirAll(filepath.Join(pgdata, "pg_wal"), 0o700)
	h := filepath.Join(pgdata, "pg_wal", "00000002.history")
	os.WriteFile(h, []byte("1\t0/3000000\tno recovery target specified\n"), 0o600)
	env["PGARK_SPOOL_DIR"], env["PGARK_PGDATA"], env["PGARK_PUSH_AHEAD"] = filepath.Join(dir, "spool"), pgdata, "0"
	// The removed recipient is refused (by each repository), the new one taken.
	if code, _, errs := runCLI(t, env, "wal-push", h); code != exitKey {
		t.Fatalf("push to the removed recipient: %d %s", code, errs)
	}
	env["PGARK_AGE_RECIPIENTS"] = next
	if code, _, errs := runCLI(t, env, "wal-push", h); code != 0 {
		t.Fatalf("push to the new recipient: %d %s", code, errs)
	}
}

// --repo-index 2 on a reading command without repo2 is a usage error, not
// a silent read of repository 1.
func TestRepoIndexWithoutRepo2(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	env := func(string) string { return "" }
	if code := run(context.Background(), []string{"init", "--repo", dir}, &out, &errb, env); code != 0 {
		t.Fatalf("init: %d %s", code, errb.String())
	}
	errb.Reset()
	code := run(context.Background(), []string{"restore", "--repo", dir, "--repo-index", "2", "--owner", "0:0", "latest", filepath.Join(dir, "pgdata")}, &out, &errb, env)
	if code != exitUsage || !strings.Contains(errb.String(), "no second repository configured") {
		t.Fatalf("restore --repo-index 2 without repo2: exit %d, %s", code, errb.String())
	}
}
