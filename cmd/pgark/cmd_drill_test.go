package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDrillScratchRefusedInsideDataDirs(t *testing.T) {
	base := t.TempDir()
	pgdata := filepath.Join(base, "pgdata")
	tblspc := filepath.Join(base, "tblspc")
	os.MkdirAll(filepath.Join(pgdata, "base"), 0o700)
	os.WriteFile(filepath.Join(pgdata, "PG_VERSION"), []byte("17\n"), 0o600)
	os.MkdirAll(filepath.Join(tblspc, "PG_17_202406281"), 0o700)
	for _, tc := range []struct{ dir, want string }{
		{filepath.Join(pgdata, "drill"), "the data directory " + pgdata},
		{filepath.Join(pgdata, "base", "x", "y"), "the data directory " + pgdata},
		{filepath.Join(tblspc, "drill"), "the tablespace " + tblspc},
		{filepath.Join(tblspc, "PG_17_202406281", "drill"), "the tablespace " + tblspc},
		{filepath.Join(base, "scratch", "drill"), ""},
	} {
		if got := insideDataDir(tc.dir); got != tc.want {
			t.Errorf("insideDataDir(%s) = %q, want %q", tc.dir, got, tc.want)
		}
	}
}

func TestDrillUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"drill", "a", "b"}, "at most one argument"},
		{[]string{"drill", "notanid"}, "is not a backup id"},
		{[]string{"drill", "--target-lsn", "nope"}, "target-lsn"},
		{[]string{"drill", "--check-sql", "/nonexistent/checks.sql"}, "check-sql"},
	} {
		code, _, stderr := runCLI(t, map[string]string{"PGARK_REPO": "/nonexistent-repo"}, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}
