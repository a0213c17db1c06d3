package integration

import (
	"context"
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
}
