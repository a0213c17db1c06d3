package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOriginSignatures: with trusted-signers set, wal-fetch refuses WAL that
// someone with write access to the repository planted (encrypted to the
// public recipient, which proves nothing), WAL signed by another key, and a
// signed object copied under another segment's name; nothing is written to
// the destination. Signed WAL is fetched, and readers without
// trusted-signers are unaffected.
func TestOriginSignatures(t *testing.T) {
	fx := realWAL(t)
	idFile, recip := newKey(t)
	dir, env := localRepo(t, "PGARK_AGE_RECIPIENTS="+recip, "PGARK_FETCH_AHEAD=0")
	tmp := t.TempDir()
	signing := filepath.Join(tmp, "signing.key")
	pub := strings.TrimSpace(mustOK(t, pgark(t, nil, "key", "generate-signing", signing)).stdout)
	if !strings.HasPrefix(pub, "pgark-ed25519:") {
		t.Fatalf("public key %q", pub)
	}
	if fi, err := os.Stat(signing); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("signing key file mode: %v %v", fi.Mode(), err)
	}
	wantCode(t, pgark(t, nil, "key", "generate-signing", signing), 6, "already exists")
	rogue := filepath.Join(tmp, "rogue.key")
	mustOK(t, pgark(t, nil, "key", "generate-signing", rogue))

	segs := fx.segments
	mustOK(t, pgark(t, env, "wal-push", "--signing-key-file", signing, segs[0]))
	mustOK(t, pgark(t, env, "wal-push", segs[1]))                              // planted: unsigned
	mustOK(t, pgark(t, env, "wal-push", "--signing-key-file", rogue, segs[2])) // another key
	// A signed object copied under the next segment's name (its own
	// segment is not archived): a replay under another key.
	name0, name3 := filepath.Base(segs[0]), filepath.Base(segs[3])
	os.MkdirAll(filepath.Dir(objectPath(dir, name3)), 0o755)
	if err := os.WriteFile(objectPath(dir, name3), readFile(t, objectPath(dir, name0)), 0o640); err != nil {
		t.Fatal(err)
	}

	reader := append(env, "PGARK_AGE_IDENTITY_FILE="+idFile, "PGARK_TRUSTED_SIGNERS="+pub)
	dest := filepath.Join(tmp, "out")
	mustOK(t, pgark(t, reader, "wal-fetch", name0, dest))
	if !bytes.Equal(readFile(t, dest), readFile(t, segs[0])) {
		t.Fatal("the signed segment came back different")
	}
	for _, c := range []struct{ seg, msg string }{
		{segs[1], "is not signed"},
		{segs[2], "not a trusted signer"},
		{segs[3], "does not match its content"},
	} {
		d := filepath.Join(tmp, "refused-"+filepath.Base(c.seg))
		wantCode(t, pgark(t, reader, "wal-fetch", filepath.Base(c.seg), d), 200, c.msg)
		if exists(d) {
			t.Fatalf("a refused fetch wrote %s", d)
		}
	}
	// verify --full names the planted objects too.
	r := pgark(t, reader, "verify", "--full")
	if r.code != 1 || !strings.Contains(r.stdout, "is not signed") {
		t.Fatalf("verify --full with trusted-signers: %s", r)
	}
	// Without trusted-signers nothing is required.
	plain := append(env, "PGARK_AGE_IDENTITY_FILE="+idFile)
	mustOK(t, pgark(t, plain, "wal-fetch", filepath.Base(segs[1]), filepath.Join(tmp, "plain")))
	// A secret key given as a trusted signer is refused with a clear error.
	sec := string(readFile(t, signing))
	secLine := sec[strings.Index(sec, "PGARK-ED25519-SECRET-KEY-1:"):]
	r = pgark(t, append(env, "PGARK_TRUSTED_SIGNERS="+strings.TrimSpace(secLine)), "wal-fetch", name0, filepath.Join(tmp, "x"))
	wantCode(t, r, 200, "secret signing key")
	if strings.Contains(r.stderr, strings.TrimSpace(secLine)[30:]) {
		t.Fatal("the secret key was echoed in the error")
	}
}
