package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgark/pgark/internal/testenv"
)

// tmpfs mounts a size-limited tmpfs at dir for the test, or skips the test
// when mounts are not allowed here.
func tmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s): the disk-full test needs one", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

// leftovers lists temporary files and empty objects under dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var bad []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && (strings.HasPrefix(fi.Name(), ".tmp-") && !strings.HasPrefix(fi.Name(), ".tmp-swap-") || fi.Size() == 0) {
			bad = append(bad, p)
		}
		return nil
	})
	return bad
}

// TestLocalRepositoryFaults: a full disk, a read-only file system and a
// permission error each give a clear one-line error (exit 5), leave no
// partial object and no temporary file, and the next push after the fault
// is gone succeeds; what was stored before reads back intact.
func TestLocalRepositoryFaults(t *testing.T) {
	fx := realWAL(t)
	base := testenv.SharedDir(t)
	mnt := filepath.Join(base, "small")
	tmpfs(t, mnt, "6m")
	repo := filepath.Join(mnt, "repo")
	env := []string{"PGARK_REPO=" + repo, "PGARK_COMPRESSION=none", "PGARK_PUSH_AHEAD=0", "PGARK_RETRY_TIMEOUT=1s"}
	mustOK(t, pgark(t, env, "init"))

	// Disk full: 16 MB segments stored uncompressed cannot fit.
	seg := fx.segments[0]
	r := pgark(t, env, "wal-push", seg)
	wantCode(t, r, 5, "no space left on device")
	if bad := leftovers(t, repo); len(bad) > 0 {
		t.Fatalf("a push on a full disk left %v", bad)
	}
	if _, err := os.Stat(objectPath(repo, filepath.Base(seg))); !os.IsNotExist(err) {
		t.Fatalf("a push on a full disk left an object: %v", err)
	}
	// Space comes back: the same push succeeds and reads back.
	if out, err := exec.Command("mount", "-o", "remount,size=64m", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	mustOK(t, pgark(t, env, "wal-push", seg))
	dest := filepath.Join(base, "back")
	mustOK(t, pgark(t, append(env, "PGARK_FETCH_AHEAD=0"), "wal-fetch", filepath.Base(seg), dest))
	if !bytes.Equal(readFile(t, dest), readFile(t, seg)) {
		t.Fatal("the segment came back different")
	}

	// A read-only file system.
	if out, err := exec.Command("mount", "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount ro: %v %s", err, out)
	}
	wantCode(t, pgark(t, env, "wal-push", fx.segments[1]), 5, "read-only file system")
	os.Remove(dest)
	mustOK(t, pgark(t, append(env, "PGARK_FETCH_AHEAD=0"), "wal-fetch", filepath.Base(seg), dest))
	if out, err := exec.Command("mount", "-o", "remount,rw", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount rw: %v %s", err, out)
	}
	if bad := leftovers(t, repo); len(bad) > 0 {
		t.Fatalf("a push on a read-only file system left %v", bad)
	}

	// A permission error: the postgres user cannot write into a directory
	// root made read-only for it (root itself is never refused).
	testenv.ChownToPostgres(t, repo)
	walDir := filepath.Dir(objectPath(repo, filepath.Base(fx.segments[1])))
	os.MkdirAll(walDir, 0o755)
	os.Chown(walDir, 0, 0)
	os.Chmod(walDir, 0o755)
	copyOf := copyTo(t, fx.segments[1], testenv.SharedDir(t), filepath.Base(fx.segments[1]))
	testenv.ChownToPostgres(t, copyOf)
	r = asPostgres(t, env, "wal-push", copyOf)
	if r.code != 5 || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("push into a directory without write permission: want exit 5 naming the permission: %s", r)
	}
	if bad := leftovers(t, repo); len(bad) > 0 {
		t.Fatalf("a refused push left %v", bad)
	}
	testenv.ChownToPostgres(t, walDir)
	if r := asPostgres(t, env, "wal-push", copyOf); r.code != 0 {
		t.Fatalf("push after the permission fix: %s", r)
	}
}
