package main

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
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
