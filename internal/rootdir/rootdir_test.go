package rootdir

import (
	"os"
	"path/filepath"
	"testing"
)

// Sync works on directories inside the root, and refuses files, missing names and links
// that lead out of the root.
func TestSyncStaysInside(t *testing.T) {
	outside := t.TempDir()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := Sync(r, "d"); err != nil {
		t.Fatalf("Sync of a directory: %v", err)
	}
	if err := Sync(r, "."); err != nil {
		t.Fatalf("Sync of the root: %v", err)
	}
	for _, bad := range []string{"f", "link", "missing"} {
		if err := Sync(r, bad); err == nil {
			t.Errorf("Sync(%q) succeeded", bad)
		}
	}
}
