package integration

import (
	"bytes"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
)

// localRepo creates a local repository and returns the env that selects it.
func localRepo(t *testing.T, extra ...string) (dir string, env []string) {
	t.Helper()
	dir = filepath.Join(testenv.SharedDir(t), "repo")
	env = append([]string{"PGARK_REPO=" + dir}, extra...)
	mustOK(t, pgark(t, env, "init"))
	return dir, env
}

// newKey generates an age identity and returns its file and recipient.
func newKey(t *testing.T) (file, recipient string) {
	t.Helper()
	file = filepath.Join(t.TempDir(), "key.txt")
	r := mustOK(t, pgark(t, nil, "key", "generate", file))
	return file, strings.TrimSpace(r.stdout)
}

func objectPath(repoDir, name string) string {
	return filepath.Join(repoDir, "wal", name[:8], name[8:16], name+".pgark")
}

func TestInitRules(t *testing.T) {
	base := testenv.SharedDir(t)
	// A push into a path without a repository fails and creates nothing.
	missing := filepath.Join(base, "typo")
	seg := realWAL(t).segments[0]
	wantCode(t, pgark(t, []string{"PGARK_REPO=" + missing}, "wal-push", seg), 3, "no pgark repository")
	if exists(missing) {
		t.Fatal("a push created a repository directory")
	}
	wantCode(t, pgark(t, []string{"PGARK_REPO=" + missing}, "wal-fetch", "00000001.history", filepath.Join(base, "x")), 200, "no pgark repository")

	// init creates a missing directory, refuses a second init and a non-empty one.
	mustOK(t, pgark(t, nil, "init", missing))
	if !exists(filepath.Join(missing, "pgark.json")) {
		t.Fatal("init wrote no pgark.json")
	}
	wantCode(t, pgark(t, nil, "init", missing), 2, "already holds a pgark repository")
	other := filepath.Join(base, "other")
	os.MkdirAll(other, 0o755)
	os.WriteFile(filepath.Join(other, "notes.txt"), []byte("x"), 0o644)
	wantCode(t, pgark(t, nil, "init", other), 2, "not empty")
	empty := filepath.Join(base, "empty")
	os.MkdirAll(empty, 0o755)
	mustOK(t, pgark(t, nil, "init", empty))
	// Relative paths and unknown schemes are refused.
	wantCode(t, pgark(t, nil, "init", "relative/repo"), 2, "relative path")
	wantCode(t, pgark(t, nil, "init", "webdav://host/x"), 2, "unknown scheme")
}

func TestPushFetchDuplicateAndConflict(t *testing.T) {
	fx := realWAL(t)
	repoDir, env := localRepo(t)
	work := t.TempDir()
	seg := copyTo(t, fx.segments[1], work, "")
	name := filepath.Base(seg)

	mustOK(t, pgark(t, env, "wal-push", seg))
	obj := objectPath(repoDir, name)
	before := readFile(t, obj)
	st1, _ := os.Stat(obj)

	// Identical content again: exit 0, nothing rewritten.
	time.Sleep(10 * time.Millisecond)
	mustOK(t, pgark(t, env, "wal-push", seg))
	st2, _ := os.Stat(obj)
	if !st2.ModTime().Equal(st1.ModTime()) || !bytes.Equal(readFile(t, obj), before) {
		t.Fatal("an identical push rewrote the object")
	}

	// Different content under the archived name: exit 4, object untouched.
	other := copyTo(t, fx.segments[2], t.TempDir(), name)
	b := readFile(t, other)
	// Make it a valid segment for this name: fix the page address.
	copy(b[8:16], readFile(t, seg)[8:16])
	os.WriteFile(other, b, 0o644)
	wantCode(t, pgark(t, env, "wal-push", other), 4, "different content")
	if !bytes.Equal(readFile(t, obj), before) {
		t.Fatal("a conflicting push changed the archived object")
	}

	// Fetch round trip, byte-identical.
	dest := filepath.Join(work, "RECOVERYXLOG")
	mustOK(t, pgark(t, env, "wal-fetch", name, dest))
	if !bytes.Equal(readFile(t, dest), readFile(t, seg)) {
		t.Fatal("fetched segment differs from the pushed one")
	}
	// The .backup file and a .history file round-trip too.
	bk := copyTo(t, fx.backup, work, "")
	mustOK(t, pgark(t, env, "wal-push", bk))
	hist := filepath.Join(work, "00000002.history")
	os.WriteFile(hist, []byte("1\t0/5000000\tno recovery target specified\n"), 0o644)
	mustOK(t, pgark(t, env, "wal-push", hist))
	for _, f := range []string{bk, hist} {
		d := filepath.Join(work, "out")
		mustOK(t, pgark(t, env, "wal-fetch", filepath.Base(f), d))
		if !bytes.Equal(readFile(t, d), readFile(t, f)) {
			t.Fatalf("%s differs after the round trip", f)
		}
	}
	// A .history file is never replaced.
	os.WriteFile(hist, []byte("1\t0/6000000\tno recovery target specified\n"), 0o644)
	wantCode(t, pgark(t, env, "wal-push", hist), 4, "different content")
	// A .partial file is accepted (same header rules as a segment).
	part := copyTo(t, fx.segments[0], work, filepath.Base(fx.segments[0])+".partial")
	mustOK(t, pgark(t, env, "wal-push", part))
	if _, err := os.Stat(objectPath(repoDir, filepath.Base(part))); err != nil {
		t.Fatalf("partial not stored under a findable name: %v", err)
	}
}

func TestPushRefusesForeignAndNonWAL(t *testing.T) {
	fx := realWAL(t)
	repoDir, env := localRepo(t)
	mustOK(t, pgark(t, env, "wal-push", fx.segments[0]))
	// Another cluster's segment: refused, with causes and fix named.
	foreign := foreignSegment(t, fx.segments[1], t.TempDir())
	r := pgark(t, env, "wal-push", foreign)
	wantCode(t, r, 3, "another cluster")
	for _, s := range []string{"wrong repository", "pg_upgrade", "pgark init"} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("the wrong-cluster message does not mention %q: %s", s, r.stderr)
		}
	}
	if exists(objectPath(repoDir, filepath.Base(foreign))) {
		t.Fatal("a foreign segment was stored")
	}
	// Not WAL: random bytes, zeros, a truncated segment, a segment under another name.
	dir := t.TempDir()
	rnd := make([]byte, 16<<20)
	for i := range rnd {
		rnd[i] = byte(rand.Uint32())
	}
	name := filepath.Base(fx.segments[2])
	cases := map[string][]byte{
		"random":    rnd,
		"zeros":     make([]byte, 16<<20),
		"truncated": readFile(t, fx.segments[2])[:8<<20],
		"renamed":   readFile(t, fx.segments[3]),
	}
	for what, b := range cases {
		p := filepath.Join(dir, what, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, b, 0o644)
		wantCode(t, pgark(t, env, "wal-push", p), 3, "not a PostgreSQL WAL segment")
	}
	if exists(objectPath(repoDir, name)) {
		t.Fatal("a non-WAL file was stored")
	}
	// A .backup file that is not one.
	bad := filepath.Join(dir, filepath.Base(fx.backup))
	os.WriteFile(bad, []byte("hello"), 0o644)
	wantCode(t, pgark(t, env, "wal-push", bad), 3, "not a backup history file")
}

func TestBadInput(t *testing.T) {
	_, env := localRepo(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		env  []string
		code int
		msg  string
	}{
		{[]string{"wal-push"}, env, 2, "takes one argument"},
		{[]string{"wal-push", filepath.Join(dir, "000000010000000000000001")}, env, 3, "no such file"},
		{[]string{"wal-push", dir}, env, 3, "not a WAL file name"},
		{[]string{"wal-push", filepath.Join(dir, "notwal.txt")}, env, 3, "not a WAL file name"},
		{[]string{"wal-push", "--no-such-flag", "x"}, env, 2, "flag provided but not defined"},
		{[]string{"wal-push", "x"}, []string{"PGARK_REPO=ftp://host/x"}, 2, "unknown scheme"},
		{[]string{"wal-push", "x"}, nil, 2, "no repository configured"},
		{[]string{"wal-push", "x"}, append(env, "PGARK_AGE_RECIPIENTS=age1bogus"), 6, "malformed age recipient"},
		{[]string{"wal-push", "x"}, append(env, "PGARK_RETRY_TIMEOUT=soon"), 2, "retry-timeout"},
		{[]string{"wal-push", "x"}, append(env, "PGARK_CONFIG="+filepath.Join(dir, "missing.conf")), 2, "config file"},
		{[]string{"wal-fetch", "x"}, env, 200, "takes two arguments"},
		{[]string{"wal-fetch", "../../etc/passwd", filepath.Join(dir, "d")}, env, 200, "not a WAL file name"},
		{[]string{"wal-fetch", "--bogus"}, env, 200, "flag provided but not defined"},
		{[]string{"frobnicate"}, env, 2, "unknown command"},
	} {
		r := pgark(t, tc.env, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("pgark %v: want exit %d with %q, got %s", tc.args, tc.code, tc.msg, r)
		}
		if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n > 0 {
			t.Errorf("pgark %v: error is not one line: %q", tc.args, r.stderr)
		}
	}
	// A directory named like a segment.
	d := filepath.Join(dir, "000000010000000000000001")
	os.Mkdir(d, 0o755)
	wantCode(t, pgark(t, env, "wal-push", d), 3, "not a regular file")
	// An unreadable file (run as postgres: root reads anything).
	pgShared := testenv.SharedDir(t)
	pgEnv := []string{"PGARK_REPO=" + filepath.Join(pgShared, "repo")}
	if r := asPostgres(t, pgEnv, "init"); r.code != 0 {
		t.Fatalf("init as postgres: %s", r)
	}
	unreadable := copyTo(t, realWAL(t).segments[0], pgShared, "")
	os.Chmod(unreadable, 0o000)
	if r := asPostgres(t, pgEnv, "wal-push", unreadable); r.code != 3 || !strings.Contains(r.stderr, "permission denied") {
		t.Errorf("unreadable file: %s", r)
	}
	// A config file with an unknown key is refused (a typo never drops a setting).
	conf := filepath.Join(dir, "bad.conf")
	os.WriteFile(conf, []byte("repo = /x\nrepo_path = /y\n"), 0o644)
	wantCode(t, pgark(t, nil, "wal-push", "--config", conf, "x"), 2, "unknown key")
}

func TestEncryptionFailClosed(t *testing.T) {
	fx := realWAL(t)
	key, recip := newKey(t)
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st.Mode(), err)
	}
	if !strings.HasPrefix(recip, "age1") {
		t.Fatalf("key generate printed %q", recip)
	}
	wantCode(t, pgark(t, nil, "key", "generate", key), 6, "refusing to overwrite")

	repoDir, env := localRepo(t, "PGARK_AGE_RECIPIENTS="+recip)
	seg := fx.segments[0]
	name := filepath.Base(seg)
	// No recipients: refused, nothing stored.
	wantCode(t, pgark(t, []string{"PGARK_REPO=" + repoDir}, "wal-push", seg), 6, "refusing to write unencrypted")
	// Only an unregistered recipient: refused.
	_, other := newKey(t)
	wantCode(t, pgark(t, []string{"PGARK_REPO=" + repoDir, "PGARK_AGE_RECIPIENTS=" + other}, "wal-push", seg), 6, "not registered")
	if exists(objectPath(repoDir, name)) {
		t.Fatal("a refused push stored an object")
	}
	mustOK(t, pgark(t, env, "wal-push", seg))
	if bytes.Contains(readFile(t, objectPath(repoDir, name)), readFile(t, seg)[40:200]) {
		t.Fatal("plaintext visible in the encrypted object")
	}

	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	// No identity, a wrong identity: exit 200, no DEST.
	wantCode(t, pgark(t, env, "wal-fetch", name, dest), 200, "no age identity file")
	wrongKey, _ := newKey(t)
	wantCode(t, pgark(t, append(env, "PGARK_AGE_IDENTITY_FILE="+wrongKey), "wal-fetch", name, dest), 200, "encrypted to other keys")
	if exists(dest) {
		t.Fatal("DEST written by a failed fetch")
	}
	// An identity file with several identities (after a rotation) works.
	multi := filepath.Join(t.TempDir(), "keys.txt")
	os.WriteFile(multi, append(readFile(t, wrongKey), readFile(t, key)...), 0o600)
	mustOK(t, pgark(t, append(env, "PGARK_AGE_IDENTITY_FILE="+multi), "wal-fetch", name, dest))
	if !bytes.Equal(readFile(t, dest), readFile(t, seg)) {
		t.Fatal("fetched content differs")
	}
	// The secret key never appears in output.
	r := pgark(t, append(env, "PGARK_AGE_IDENTITY_FILE="+multi, "PGARK_LOG_LEVEL=debug"), "wal-fetch", name, dest+"2")
	if strings.Contains(r.stderr+r.stdout, "AGE-SECRET-KEY") {
		t.Fatal("secret key material in pgark's output")
	}
}

func TestFetchCorruptAndMissing(t *testing.T) {
	fx := realWAL(t)
	key, recip := newKey(t)
	repoDir, env := localRepo(t, "PGARK_AGE_RECIPIENTS="+recip, "PGARK_AGE_IDENTITY_FILE="+key, "PGARK_RETRY_TIMEOUT=2s")
	dir := t.TempDir()
	for _, s := range fx.segments[:4] {
		mustOK(t, pgark(t, env, "wal-push", s))
	}
	dest := filepath.Join(dir, "RECOVERYXLOG")
	// Damaged metadata, intact content: the CRC-32C recorded at push (one
	// hex digit changed in the local object's header) no longer matches
	// what the object decodes to. Refused, as a corrupt object is.
	crcObj := objectPath(repoDir, filepath.Base(fx.segments[3]))
	b := readFile(t, crcObj)
	i := bytes.Index(b, []byte(`"pgark-crc32c":"`))
	if i < 0 {
		t.Fatal("the pushed object records no CRC-32C")
	}
	i += len(`"pgark-crc32c":"`)
	if b[i] == '0' {
		b[i] = '1'
	} else {
		b[i] = '0'
	}
	os.WriteFile(crcObj, b, 0o640)
	r := pgark(t, env, "wal-fetch", filepath.Base(fx.segments[3]), dest)
	wantCode(t, r, 200, "CRC-32C")
	if exists(dest) {
		t.Fatal("DEST written from an object whose CRC-32C does not match")
	}
	// Corrupt: one flipped byte in the ciphertext, and a truncated object.
	flipObj := objectPath(repoDir, filepath.Base(fx.segments[0]))
	b = readFile(t, flipObj)
	b[len(b)/2] ^= 1
	os.WriteFile(flipObj, b, 0o640)
	truncObj := objectPath(repoDir, filepath.Base(fx.segments[1]))
	b = readFile(t, truncObj)
	os.WriteFile(truncObj, b[:len(b)-1000], 0o640)
	for _, s := range fx.segments[:2] {
		r := pgark(t, env, "wal-fetch", filepath.Base(s), dest)
		wantCode(t, r, 200, "")
		if exists(dest) {
			t.Fatal("DEST written from a corrupt object")
		}
		left, _ := filepath.Glob(filepath.Join(dir, ".*pgark-tmp*"))
		if len(left) > 0 {
			t.Fatalf("temp files left: %v", left)
		}
	}
	// Missing segment: exit 1 quickly, no DEST. Missing history: exit 1 fast.
	r = pgark(t, env, "wal-fetch", "0000000100000000000000F0", dest)
	wantCode(t, r, 1, "")
	if exists(dest) {
		t.Fatal("DEST written for a missing segment")
	}
	r = pgark(t, env, "wal-fetch", "00000009.history", dest)
	wantCode(t, r, 1, "")
	if r.dur > time.Second {
		t.Errorf("a missing .history took %s to answer", r.dur)
	}
	// A good one still works.
	mustOK(t, pgark(t, env, "wal-fetch", filepath.Base(fx.segments[2]), dest))
}

// TestPushKill9 kills wal-push at random moments: afterwards there is either
// no object or a complete one under the final key, the retried push
// succeeds, and the object fetches back identical.
func TestPushKill9(t *testing.T) {
	fx := realWAL(t)
	key, recip := newKey(t)
	repoDir, env := localRepo(t, "PGARK_AGE_RECIPIENTS="+recip, "PGARK_AGE_IDENTITY_FILE="+key)
	// Measure one push to aim the kills inside it.
	probe := copyTo(t, fx.segments[0], t.TempDir(), "")
	full := mustOK(t, pgark(t, env, "wal-push", probe)).dur
	complete, absent := 0, 0
	for i := 0; i < 20; i++ {
		seg := fx.segments[1+i%(len(fx.segments)-1)]
		name := filepath.Base(seg)
		obj := objectPath(repoDir, name)
		os.Remove(obj) // start from "not archived"
		cmd := exec.Command(pgarkBin, "wal-push", seg)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(full) + 1)))
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if exists(obj) {
			complete++
			d := filepath.Join(t.TempDir(), "d")
			mustOK(t, pgark(t, env, "wal-fetch", name, d))
			if !bytes.Equal(readFile(t, d), readFile(t, seg)) {
				t.Fatalf("kill %d: object under the final key is not complete", i)
			}
		} else {
			absent++
		}
		mustOK(t, pgark(t, env, "wal-push", seg))
		d := filepath.Join(t.TempDir(), "d")
		mustOK(t, pgark(t, env, "wal-fetch", name, d))
		if !bytes.Equal(readFile(t, d), readFile(t, seg)) {
			t.Fatalf("kill %d: retried push did not store the segment", i)
		}
	}
	t.Logf("kill -9 during push: %d left a complete object, %d left none", complete, absent)
}

// TestFetchStorageDown: an unreachable store is never "not found".
func TestFetchStorageDown(t *testing.T) {
	s3 := testenv.S3Start(t)
	s3.CreateBucket(t, "down")
	key, recip := newKey(t)
	env := append(s3.Env(), "PGARK_REPO=s3://down/repo", "PGARK_AGE_RECIPIENTS="+recip,
		"PGARK_AGE_IDENTITY_FILE="+key, "PGARK_RETRY_TIMEOUT=2s")
	mustOK(t, pgark(t, env, "init"))
	fx := realWAL(t)
	mustOK(t, pgark(t, env, "wal-push", fx.segments[0]))
	dir := t.TempDir()
	dest := filepath.Join(dir, "RECOVERYXLOG")

	// Connection refused: a closed port.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l.Addr().String()
	l.Close()
	downEnv := append(append([]string{}, env...), "PGARK_S3_ENDPOINT=http://"+closed)
	r := pgark(t, downEnv, "wal-fetch", filepath.Base(fx.segments[0]), dest)
	wantCode(t, r, 200, "")
	if r.dur < 1500*time.Millisecond {
		t.Errorf("gave up after %s, before the retry timeout", r.dur)
	}
	if exists(dest) {
		t.Fatal("DEST written")
	}
	// wal-push against a down store: a status from 1 to 125.
	r = pgark(t, downEnv, "wal-push", fx.segments[1])
	if r.code < 1 || r.code > 125 {
		t.Fatalf("wal-push to a down store: %s", r)
	}
	// A standby keeps running: below 126.
	os.WriteFile(filepath.Join(dir, "standby.signal"), nil, 0o644)
	wantCode(t, pgarkIn(t, dir, downEnv, "wal-fetch", filepath.Base(fx.segments[0]), dest), 5, "")
	os.Remove(filepath.Join(dir, "standby.signal"))

	// Wrong credentials (403): an error, never "not found".
	badEnv := append(append([]string{}, env...), "AWS_SECRET_ACCESS_KEY=wrong-secret")
	wantCode(t, pgark(t, badEnv, "wal-fetch", "0000000100000000000000F0", dest), 200, "")

	// A stalled server and a SIGTERM: pgark dies by SIGTERM, never exit 1.
	stall, _ := net.Listen("tcp", "127.0.0.1:0")
	defer stall.Close()
	go func() {
		for {
			c, err := stall.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	cmd := exec.Command(pgarkBin, "wal-fetch", filepath.Base(fx.segments[0]), dest)
	cmd.Env = append(append([]string{"PATH=/usr/bin:/bin"}, env...), "PGARK_S3_ENDPOINT=http://"+stall.Addr().String(), "PGARK_RETRY_TIMEOUT=60s")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("after SIGTERM: %v (exit %d), stderr %s", err, ws.ExitStatus(), errb.String())
	}
	if exists(dest) {
		t.Fatal("DEST written")
	}
}
