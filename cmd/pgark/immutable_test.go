package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// The immutability options refuse what they cannot do in one line with the
// usage exit code: a past time on a store without versions (named), a time
// without a UTC offset, Object Lock on a store other than S3, and the
// option on a command that writes.
func TestImmutableUsageErrors(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	if code, _, stderr := runCLI(t, nil, "init", repo); code != 0 {
		t.Fatalf("init: %d %s", code, stderr)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "--repo", repo, "--repo-target-time", "2026-12-01T00:00:00Z"}, "the local store"},
		{[]string{"verify", "--repo", repo, "--repo-target-time", "2026-12-01 00:00:00"}, "no UTC offset"},
		{[]string{"restore", "--owner", "0:0", "--repo", repo, "--repo-target-time", "yesterday", "latest", filepath.Join(dir, "d")}, "repo-target-time"},
		{[]string{"init", "--object-lock-days", "7", filepath.Join(dir, "other")}, "needs an S3 repository"},
		{[]string{"init", "--object-lock-days", "-1", filepath.Join(dir, "other")}, "outside 1 to 36500"},
		{[]string{"init", "--object-lock-days", "7", "--object-lock-mode", "forever", filepath.Join(dir, "other")}, "forever"},
		{[]string{"backup", "--repo", repo, "--repo-target-time", "2026-12-01T00:00:00Z"}, "repo-target-time"},
	} {
		code, _, stderr := runCLI(t, nil, c.args...)
		if code != exitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("pgark %v: exit %d, %q; want %d mentioning %q", c.args, code, stderr, exitUsage, c.want)
		}
		oneLineErr(t, c.args, stderr)
	}
}
