package incremental

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgark/pgark/internal/testenv"
)

// TestChainMatchesCombineBackup: real PostgreSQL 17 and 18 block-level
// incremental backups (pg_basebackup --incremental) applied forward with
// Apply give, file for file and byte for byte, what pg_combinebackup of the
// same major rebuilds from the same backups: through updates, a VACUUM
// that truncates a table, a dropped table, a new table and a new database.
func TestChainMatchesCombineBackup(t *testing.T) {
	for _, major := range []int{17, 18} {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) { chainMatches(t, major) })
	}
}

func chainMatches(t *testing.T, major int) {
	testenv.NeedPG(t, major)
	basebackup, ok1 := testenv.ClientTool(t, major, "pg_basebackup")
	combine, ok2 := testenv.ClientTool(t, major, "pg_combinebackup")
	if !ok1 || !ok2 {
		t.Skipf("no PostgreSQL %d pg_basebackup and pg_combinebackup", major)
	}
	c := testenv.StartPG(t, testenv.PGOptions{Major: major, Conf: map[string]string{"summarize_wal": "on"}})
	dir := t.TempDir()
	backup := func(name string, parent string) string {
		t.Helper()
		out := filepath.Join(dir, name)
		args := []string{"-D", out, "-Fp", "-X", "none", "-c", "fast", "--no-sync"}
		if parent != "" {
			args = append(args, "--incremental", filepath.Join(parent, "backup_manifest"))
		}
		cmd := exec.Command(basebackup, args...)
		cmd.Env = append(os.Environ(), c.PGEnv()...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pg_basebackup %s: %v\n%s", name, err, b)
		}
		return out
	}
	c.Exec(t, "CREATE TABLE keep(id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off)")
	c.Exec(t, "INSERT INTO keep SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 40000) g")
	c.Exec(t, "CREATE TABLE shrink(id int, v text) WITH (autovacuum_enabled = off)")
	c.Exec(t, "INSERT INTO shrink SELECT g, repeat('x', 500) FROM generate_series(1, 20000) g")
	c.Exec(t, "CREATE TABLE gone(id int)")
	c.Exec(t, "INSERT INTO gone SELECT generate_series(1, 1000)")
	full := backup("full", "")

	c.Exec(t, "UPDATE keep SET v = v || 'a' WHERE id % 97 = 0")
	c.Exec(t, "DELETE FROM shrink WHERE id > 5000")
	c.Exec(t, "VACUUM shrink")
	c.Exec(t, "DROP TABLE gone")
	c.Exec(t, "CREATE TABLE fresh AS SELECT g AS id FROM generate_series(1, 5000) g")
	inc1 := backup("inc1", full)

	c.Exec(t, "INSERT INTO shrink SELECT g, repeat('y', 500) FROM generate_series(1, 3000) g")
	c.Exec(t, "UPDATE keep SET v = 'b' WHERE id % 101 = 0")
	c.Exec(t, "CREATE DATABASE newdb")
	inc2 := backup("inc2", inc1)

	combined := filepath.Join(dir, "combined")
	if b, err := exec.Command(combine, "-o", combined, "--no-sync", full, inc1, inc2).CombinedOutput(); err != nil {
		t.Fatalf("pg_combinebackup: %v\n%s", err, b)
	}

	work := filepath.Join(dir, "work")
	copyTree(t, full, work)
	applied := 0
	for _, inc := range []string{inc1, inc2} {
		applied += applyBackup(t, inc, work)
	}
	if applied == 0 {
		t.Fatal("the backups held no incremental file")
	}
	// backup_label: the newest one without its INCREMENTAL FROM lines.
	label, err := os.ReadFile(filepath.Join(inc2, "backup_label"))
	if err != nil {
		t.Fatal(err)
	}
	stripped, from, ok, err := StripLabel(label)
	if err != nil || !ok || from.LSN == "" {
		t.Fatalf("inc2's backup_label: %v %v %+v", err, ok, from)
	}
	if err := os.WriteFile(filepath.Join(work, "backup_label"), stripped, 0o600); err != nil {
		t.Fatal(err)
	}

	want, got := treeOf(t, combined), treeOf(t, work)
	for p, w := range want {
		g, ok := got[p]
		switch {
		case p == "backup_manifest":
		case !ok:
			t.Errorf("%s: missing after the forward rebuild", p)
		case !bytes.Equal(g, w):
			t.Errorf("%s: %d bytes differ from pg_combinebackup's %d", p, len(g), len(w))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok && p != "backup_manifest" {
			t.Errorf("%s: left by the forward rebuild, absent from pg_combinebackup's", p)
		}
	}
	t.Logf("PostgreSQL %d: %d incremental files applied, %d files compared", major, applied, len(want))
}

// applyBackup makes work the rebuilt copy of the plain-format backup inc:
// its full files replace, its incremental files are applied, and files it
// does not hold are removed. It returns how many incremental files it applied.
func applyBackup(t *testing.T, inc, work string) int {
	t.Helper()
	keep := map[string]bool{}
	n := 0
	err := filepath.WalkDir(inc, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(inc, p)
		if rel == "." {
			return nil
		}
		dst := filepath.Join(work, rel)
		if d.IsDir() {
			keep[rel] = true
			return os.MkdirAll(dst, 0o700)
		}
		if target, ok := Target(rel); ok {
			keep[target] = true
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			st, err := src.Stat()
			if err != nil {
				return err
			}
			f, err := os.OpenFile(filepath.Join(work, target), os.O_RDWR, 0)
			if err != nil {
				return fmt.Errorf("the parent has no %s: %w", target, err)
			}
			defer f.Close()
			if _, err := Apply(f, src, st.Size(), Limits{BlockSize: 8192, SegmentBlocks: DefaultSegmentBlocks}, nil); err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			n++
			return nil
		}
		keep[rel] = true
		return copyFile(p, dst)
	})
	if err != nil {
		t.Fatal(err)
	}
	var gone []string
	filepath.WalkDir(work, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(work, p)
		if err == nil && rel != "." && !keep[rel] {
			gone = append(gone, p)
			if d.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	for _, p := range gone {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		return copyFile(p, filepath.Join(dst, rel))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// treeOf reads every regular file under dir (directories as empty entries
// ending in /).
func treeOf(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case rel == ".":
		case d.IsDir():
			m[rel+"/"] = nil
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m[rel] = b
		default:
			return errors.New(rel + ": not a regular file or directory")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(m) < 100 || !strings.Contains(string(m["PG_VERSION"]), "1") {
		t.Fatalf("%s does not look like a data directory (%d entries)", dir, len(m))
	}
	return m
}
