package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/local"
)

// TestStoresSFTP is TestStores's scenario on an SFTP repository served by
// OpenSSH's sshd on loopback (run it with -run 'TestStores/sftp'). The key
// and known_hosts files belong to the postgres user, who runs
// archive_command and logs in.
func TestStoresSFTP(t *testing.T) {
	t.Run("sftp", func(t *testing.T) {
		srv := testenv.SFTPStart(t)
		dir := srv.NewDir(t) + "/cluster-a"
		storeScenario(t, 0, storeRepo{name: "sftp", conf: map[string]string{
			"repo":               srv.URL(dir),
			"sftp-identity-file": srv.IdentityFile,
			"sftp-known-hosts":   srv.KnownHosts,
		}})
		// The repository is on the server, and its files are those of a
		// local repository.
		ls, err := local.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		if err := ls.List(context.Background(), "", func(oi storage.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil {
			t.Fatalf("the server's directory is not a valid local repository: %v", err)
		}
		wal := 0
		for _, k := range keys {
			if strings.HasPrefix(k, "wal/") {
				wal++
			}
		}
		if len(keys) == 0 || keys[0] == "" || wal == 0 {
			t.Fatalf("the server's directory holds %d objects (%d WAL): %q", len(keys), wal, keys)
		}
		if _, err := ls.Stat(context.Background(), repo.ConfigKey); err != nil {
			t.Fatalf("no repository config on the server: %v", err)
		}
	})
	t.Run("sftp-refusals", testSFTPRefusals)
}

// testSFTPRefusals: through the binary, a host key that does not match is
// a one-line error naming the host (and never "not found" for wal-fetch),
// and init refuses a server that does not offer hard links.
func testSFTPRefusals(t *testing.T) {
	srv := testenv.SFTPStart(t)
	shared := testenv.SharedDir(t)
	wrongHosts := filepath.Join(shared, "known_hosts")
	// The server's address with another host's key: the test's own
	// server key listed under a different port is not enough, so take a
	// second server's.
	other := testenv.SFTPStart(t)
	line, err := os.ReadFile(other.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	fixed := strings.Replace(string(line), other.Addr(), srv.Addr(), 1)
	fixed = strings.Replace(fixed, "["+other.Host+"]:", "["+srv.Host+"]:", 1)
	fixed = strings.Replace(fixed, ":"+itoa(other.Port)+" ", ":"+itoa(srv.Port)+" ", 1)
	if err := os.WriteFile(wrongHosts, []byte(fixed), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.ChownToPostgres(t, wrongHosts)
	conf := writeConfig(t, shared, map[string]string{
		"repo":               srv.URL(srv.NewDir(t) + "/r"),
		"sftp-identity-file": srv.IdentityFile,
		"sftp-known-hosts":   wrongHosts,
	})
	r := asPostgres(t, nil, "init", "--config", conf)
	if r.code == 0 || !strings.Contains(r.stderr, "does not match") || !strings.Contains(r.stderr, srv.Host) {
		t.Fatalf("init with a mismatching host key: %s", r)
	}
	t.Logf("init with a mismatching host key: exit %d: %s", r.code, r.stderr)
	if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n != 0 {
		t.Errorf("init's error is %d lines, want one: %s", n+1, r.stderr)
	}
	dest := filepath.Join(shared, "seg")
	r = asPostgres(t, nil, "wal-fetch", "--config", conf, "000000010000000000000001", dest)
	if r.code == 1 || r.code == 0 {
		t.Fatalf("wal-fetch with a mismatching host key must not say \"not found\": %s", r)
	}
	t.Logf("wal-fetch with a mismatching host key: exit %d", r.code)

	// A server that refuses hardlink@openssh.com requests.
	nolink := testenv.SFTPStartWith(t, testenv.SFTPOptions{InternalSFTPArgs: "-P hardlink"})
	conf = writeConfig(t, shared, map[string]string{
		"repo":               nolink.URL(nolink.NewDir(t) + "/r"),
		"sftp-identity-file": nolink.IdentityFile,
		"sftp-known-hosts":   nolink.KnownHosts,
	})
	r = asPostgres(t, nil, "init", "--config", conf)
	t.Logf("init on a server without hard links: exit %d: %s", r.code, r.stderr)
	if r.code == 0 || !strings.Contains(r.stderr, "hardlink") {
		t.Fatalf("init on a server without hard links: %s", r)
	}
}
