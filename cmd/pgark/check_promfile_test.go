package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWritePromFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pgark-main.prom")
	if err := os.WriteFile(p, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writePromFile(p, func(w io.Writer) error { _, err := io.WriteString(w, "pgark_check_status 0\n"); return err }); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if b, _ := os.ReadFile(p); err != nil || string(b) != "pgark_check_status 0\n" || fi.Mode().Perm() != 0o644 {
		t.Fatalf("after writePromFile: %q, %v, %v", b, fi.Mode(), err)
	}
	// A failing writer leaves the old file and no temporary file.
	if err := writePromFile(p, func(io.Writer) error { return errors.New("boom") }); err == nil {
		t.Fatal("a failing writer succeeded")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("files left: %v", ents)
	}
	if b, _ := os.ReadFile(p); string(b) != "pgark_check_status 0\n" {
		t.Fatalf("a failed write changed the file: %q", b)
	}
	if err := writePromFile(filepath.Join(dir, "missing", "x.prom"), func(io.Writer) error { return nil }); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
}

// TestCheckUnknownPromFile: a check that cannot run says so in the
// prometheus-file too, for a bad setting as for a missing repository.
func TestCheckUnknownPromFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pgark.prom")
	for _, args := range [][]string{
		{"check", "--repo", filepath.Join(dir, "no-repo"), "--dsn", "host=/nonexistent", "--prometheus-file", p},
		{"check", "--repo", filepath.Join(dir, "no-repo"), "--max-archive-lag", "x", "--prometheus-file", p},
	} {
		os.Remove(p)
		code, out, _ := runCLI(t, nil, args...)
		b, err := os.ReadFile(p)
		if code != 3 || err != nil || !strings.Contains(string(b), "pgark_check_status 3") || !strings.HasPrefix(out, "PGARK CHECK UNKNOWN") {
			t.Errorf("pgark %v: exit %d, stdout %q, file %q (%v)", args, code, out, b, err)
		}
	}
}
