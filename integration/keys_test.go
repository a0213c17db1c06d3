package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type verifyKeys struct {
	OK   bool `json:"ok"`
	Keys []struct {
		Recipients []string `json:"recipients"`
		Objects    int      `json:"objects"`
		First      string   `json:"first"`
		Last       string   `json:"last"`
		Readable   *bool    `json:"readable"`
	} `json:"keys"`
}

// TestKeyRotation: an S3 repository encrypted to key A; key add B, the
// hosts switch to B; verify lists which objects need A and which need B,
// and fails when the identity file cannot read all of them; key remove A
// refuses writers still configured with A; a full verify and a restore
// read both generations with both identities.
func TestKeyRotation(t *testing.T) {
	a := setupArchiving(t, 17, 1)
	c := a.c
	fingerprint := func(t *testing.T, recip string) string {
		r := mustOK(t, pgark(t, a.s3Env, "key", "list", "--config", a.s3Conf, "--json"))
		var l struct {
			Recipients []struct{ Fingerprint, Recipient string }
		}
		if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
			t.Fatal(err)
		}
		for _, k := range l.Recipients {
			if k.Recipient == recip {
				return k.Fingerprint
			}
		}
		t.Fatalf("recipient %s not listed: %s", recip, r.stdout)
		return ""
	}
	confA := string(readFile(t, a.s3Conf))
	recipA := strings.Split(strings.Split(confA, `age-recipients = "`)[1], `"`)[0]
	fpA := fingerprint(t, recipA)

	mustOK(t, pgark(t, a.s3Env, "backup", "--config", a.s3Conf, "--dsn", c.DSN()))
	a.switchAndWait(t)

	// Key B: registered, then the hosts encrypt to it.
	keyB := filepath.Join(a.shared, "age-identity-b.txt")
	r := asPostgres(t, nil, "key", "generate", keyB)
	if r.code != 0 {
		t.Fatal(r)
	}
	recipB := strings.TrimSpace(r.stdout)
	mustOK(t, pgark(t, a.s3Env, "key", "add", "--config", a.s3Conf, recipB))
	fpB := fingerprint(t, recipB)
	both := filepath.Join(a.shared, "age-identities-ab.txt")
	if err := os.WriteFile(both, append(readFile(t, a.keyFile), readFile(t, keyB)...), 0o600); err != nil {
		t.Fatal(err)
	}
	newConf := strings.Replace(strings.Replace(confA, recipA, recipB, 1), a.keyFile, keyB, 1)
	if err := os.WriteFile(a.s3Conf, []byte(newConf), 0o644); err != nil {
		t.Fatal(err)
	}
	a.switchAndWait(t)
	mustOK(t, pgark(t, a.s3Env, "backup", "--config", a.s3Conf, "--dsn", c.DSN()))
	a.switchAndWait(t)

	verifyWith := func(t *testing.T, ids string, code int, extra ...string) verifyKeys {
		t.Helper()
		args := append([]string{"verify", "--config", a.s3Conf, "--json", "--age-identity-file", ids}, extra...)
		r := pgark(t, a.s3Env, args...)
		if r.code != code {
			t.Fatalf("verify with %s: want exit %d: %s", filepath.Base(ids), code, r)
		}
		var v verifyKeys
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	sets := func(v verifyKeys) string {
		var s []string
		for _, k := range v.Keys {
			s = append(s, fmt.Sprintf("%s:%v", strings.Join(k.Recipients, "+"), k.Readable != nil && *k.Readable))
		}
		return strings.Join(s, " ")
	}
	// Identity B alone cannot read the first generation: verify fails and
	// says which objects need A.
	v := verifyWith(t, keyB, 1)
	if got, want := sets(v), fpA+":false "+fpB+":true"; got != want {
		t.Fatalf("key groups with identity B: %s, want %s\n%+v", got, want, v.Keys)
	}
	if v.Keys[0].First == "" || v.Keys[0].Objects < 2 || !strings.HasPrefix(v.Keys[0].First, "backup ") {
		t.Fatalf("first generation group: %+v", v.Keys[0])
	}
	// Both identities read everything, in full.
	v = verifyWith(t, both, 0, "--full")
	if got, want := sets(v), fpA+":true "+fpB+":true"; !v.OK || got != want {
		t.Fatalf("key groups with both identities: %s, want %s", got, want)
	}

	// key remove A: a writer still configured with A is refused.
	mustOK(t, pgark(t, a.s3Env, "key", "remove", "--config", a.s3Conf, fpA))
	stale := writeConfig(t, a.shared, map[string]string{
		"repo": "s3://pg17/cluster", "age-recipients": recipA, "s3-force-path-style": "true",
	})
	seg := filepath.Join(c.DataDir, "pg_wal", a.switchAndWait(t))
	if _, err := os.Stat(seg); err == nil {
		r = pgark(t, a.s3Env, "wal-push", "--config", stale, seg)
		wantCode(t, r, 6, "was removed")
	} else {
		// The segment was recycled already; a backup is refused alike.
		wantCode(t, pgark(t, a.s3Env, "backup", "--config", stale, "--dsn", c.DSN()), 6, "was removed")
	}
	wantCode(t, pgark(t, a.s3Env, "key", "remove", "--config", a.s3Conf, fpB), 2, "last recipient")
}
