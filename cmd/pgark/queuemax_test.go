package main

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage/local"
	"github.com/pgark/pgark/wal"
)

// testSegment writes a 1 MiB segment of cluster 42 with a valid long header
// and its .ready file into walDir.
func testSegment(t *testing.T, walDir string, no uint64) string {
	t.Helper()
	const segSize = 1 << 20
	name := wal.SegmentFileName(1, no, segSize)
	b := make([]byte, segSize)
	le := binary.LittleEndian
	le.PutUint16(b[0:], 0xD118)
	le.PutUint16(b[2:], 0x0002) // XLP_LONG_HEADER
	le.PutUint32(b[4:], 1)
	le.PutUint64(b[8:], no*segSize)
	le.PutUint64(b[24:], 42)
	le.PutUint32(b[32:], segSize)
	le.PutUint32(b[36:], 8192)
	copy(b[64:], strings.Repeat(name, 100))
	p := filepath.Join(walDir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(walDir, "archive_status", name+".ready"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestQueueMaxDrop: with the store failing and more than archive-queue-max
// of segments waiting, wal-push answers 0 for a segment, logs an error and
// records it; under the limit, for a history file, or for bad input it
// fails as usual. Once the store works again, the next push writes the gap
// record to the repository and forgets the local one.
func TestQueueMaxDrop(t *testing.T) {
	dir := t.TempDir()
	repoDir, spool, walDir := filepath.Join(dir, "repo"), filepath.Join(dir, "spool"), filepath.Join(dir, "pg_wal")
	if err := os.MkdirAll(filepath.Join(walDir, "archive_status"), 0o700); err != nil {
		t.Fatal(err)
	}
	var segs []string
	for no := uint64(1); no <= 10; no++ {
		segs = append(segs, testSegment(t, walDir, no))
	}
	env := map[string]string{"PGARK_REPO": repoDir, "PGARK_SPOOL_DIR": spool, "PGARK_PUSH_AHEAD": "0", "PGARK_RETRY_TIMEOUT": "100ms",
		"PGARK_ARCHIVE_QUEUE_MAX": "8MiB"}
	if code, _, stderr := runCLI(t, env, "init"); code != 0 {
		t.Fatalf("init: %d %s", code, stderr)
	}
	keyFile := filepath.Join(dir, "signing.key")
	code, signer, stderr := runCLI(t, nil, "key", "generate-signing", keyFile)
	if code != 0 {
		t.Fatalf("key generate-signing: %d %s", code, stderr)
	}
	env["PGARK_SIGNING_KEY_FILE"] = keyFile
	// The store fails: wal/ is a file.
	if err := os.WriteFile(filepath.Join(repoDir, "wal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, _, stderr = runCLI(t, env, "wal-push", segs[0])
	if time.Since(start) > time.Minute {
		t.Errorf("the first push took %s: retry-timeout not honoured", time.Since(start))
	}
	if code != 0 || !strings.Contains(stderr, "WAL segment DROPPED") || !strings.Contains(stderr, filepath.Base(segs[0])) {
		t.Fatalf("10 MiB waiting, limit 8 MiB: exit %d, %s", code, stderr)
	}
	if n := strings.Count(stderr, "level=ERROR"); n != 1 {
		t.Fatalf("want one error line per drop, got %d: %s", n, stderr)
	}
	if m, _ := filepath.Glob(filepath.Join(spool, "gaps-*", filepath.Base(segs[0])+".dropped")); len(m) != 1 {
		t.Fatalf("no local record of the drop: %v", m)
	}
	os.Remove(filepath.Join(walDir, "archive_status", filepath.Base(segs[0])+".ready"))

	// Not dropped: under the limit; a history file; bad input.
	env["PGARK_ARCHIVE_QUEUE_MAX"] = "16MiB"
	if code, _, stderr := runCLI(t, env, "wal-push", segs[1]); code != exitStorage {
		t.Fatalf("under the limit: exit %d, want %d: %s", code, exitStorage, stderr)
	}
	env["PGARK_ARCHIVE_QUEUE_MAX"] = "1MiB"
	hist := filepath.Join(walDir, "00000002.history")
	os.WriteFile(hist, []byte("1\t0/3000000\tno recovery target specified\n"), 0o600)
	os.WriteFile(filepath.Join(walDir, "archive_status", "00000002.history.ready"), nil, 0o600)
	if code, _, stderr := runCLI(t, env, "wal-push", hist); code == 0 || strings.Contains(stderr, "DROPPED") {
		t.Fatalf("a history file: exit %d: %s", code, stderr)
	}
	short := filepath.Join(walDir, wal.SegmentFileName(1, 20, 1<<20))
	os.WriteFile(short, []byte("not WAL"), 0o600)
	if code, _, stderr := runCLI(t, env, "wal-push", short); code != exitRepository || strings.Contains(stderr, "DROPPED") {
		t.Fatalf("bad input: exit %d: %s", code, stderr)
	}
	env["PGARK_ARCHIVE_QUEUE_MAX"] = "0"
	if code, _, stderr := runCLI(t, env, "wal-push", segs[1]); code != exitStorage {
		t.Fatalf("off: exit %d: %s", code, stderr)
	}

	// The store works again: the next push records the gap in the
	// repository.
	os.Remove(filepath.Join(repoDir, "wal"))
	if code, _, stderr := runCLI(t, env, "wal-push", segs[1]); code != 0 || !strings.Contains(stderr, "recorded the WAL gap") {
		t.Fatalf("push after the outage: exit %d: %s", code, stderr)
	}
	name := filepath.Base(segs[0])
	st, err := local.New(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	// Signed like the other metadata: trusted-signers readers can check it.
	trust, err := crypto.ParseTrusted(strings.TrimSpace(signer))
	if err != nil {
		t.Fatal(err)
	}
	rp := &repo.Repo{Store: st, Trust: trust}
	if err := rp.VerifyJSONSignature(context.Background(), "gaps/00000001/"+name+"-"+name+".json"); err != nil {
		t.Fatalf("gap record signature: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(spool, "gaps-*", "*.dropped")); len(m) != 0 {
		t.Fatalf("local records left: %v", m)
	}
	code, stdout, _ := runCLI(t, env, "list")
	if code != 0 || !strings.Contains(stdout, "WAL DROPPED by archive-queue-max") || !strings.Contains(stdout, name) {
		t.Fatalf("list: %d\n%s", code, stdout)
	}
}
