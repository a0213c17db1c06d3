package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pgark/pgark/internal/testenv"
)

// TestSecretsNeverPrinted: failures that involve secrets (a DSN with a
// password, S3 credentials, an identity or signing key where a public key
// belongs, a damaged identity file) give errors that never repeat them, in
// text or --json. The harness checks every pgark run of the suite for the
// same secrets; this test provokes the likeliest leaks.
func TestSecretsNeverPrinted(t *testing.T) {
	dir, env := localRepo(t)
	_ = dir
	idFile, _ := newKey(t)
	id := strings.TrimSpace(string(readFile(t, idFile)))
	idLine := id[strings.Index(id, "AGE-SECRET-KEY-"):]
	port := testenv.FreePort(t) // nothing listens there
	dsn := "postgres://pgarkuser:pgarktestpassword@127.0.0.1:" + itoa(port) + "/db?connect_timeout=2"
	kv := "host=127.0.0.1 port=" + itoa(port) + " user=pgarkuser password=pgarktestpassword connect_timeout=2"

	s3 := testenv.S3Start(t)
	s3env := append(s3.Env(), "PGARK_REPO=s3://no-such-bucket/x", "PGARK_S3_FORCE_PATH_STYLE=true", "PGARK_RETRY_TIMEOUT=1s")
	badIDs := filepath.Join(t.TempDir(), "bad-ids")
	os.WriteFile(badIDs, []byte(idLine[:40]+"\n"), 0o600) // a truncated key

	runs := []struct {
		env  []string
		args []string
	}{
		{env, []string{"check", "--dsn", dsn}},
		{env, []string{"check", "--dsn", dsn, "--json"}},
		{env, []string{"check", "--dsn", kv, "--prometheus"}},
		{env, []string{"backup", "--dsn", dsn}},
		{env, []string{"backup", "--dsn", kv, "--json"}},
		{append(env, "PGARK_DSN="+dsn), []string{"backup"}},
		{env, []string{"wal-push", "--age-recipients", idLine, "/nonexistent/000000010000000000000001"}},
		{env, []string{"init", filepath.Join(t.TempDir(), "r"), "--age-recipients", idLine}},
		{env, []string{"wal-fetch", "--age-identity-file", badIDs, "000000010000000000000001", filepath.Join(t.TempDir(), "x")}},
		{s3env, []string{"list", "--json"}},
		{s3env, []string{"wal-fetch", "000000010000000000000001", filepath.Join(t.TempDir(), "y")}},
	}
	for _, r := range runs {
		res := pgark(t, r.env, r.args...) // the harness fails on a printed secret
		if res.code == 0 {
			t.Errorf("%v: succeeded, expected a failure: %s", r.args, res)
		}
		if strings.Contains(res.stdout+res.stderr, idLine[15:40]) {
			t.Errorf("%v: printed part of the identity", r.args)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
