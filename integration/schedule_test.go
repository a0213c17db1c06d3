package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/packaging"
)

// unitCommand is the command line of the packaged unit name for instance
// inst, as systemd would run it, with the installed paths mapped into this
// test: /usr/bin/pgark to the binary under test, /etc/pgark/ and node_exporter's
// textfile directory to confDir.
func unitCommand(t *testing.T, name, inst, confDir string) []string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	u, err := packaging.ReadUnit(filepath.Join(filepath.Dir(file), "..", "packaging", "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	args, err := u.ExecStart(inst)
	if err != nil {
		t.Fatal(err)
	}
	if args[0] != "/usr/bin/pgark" || u.Value("Service", "User") != "postgres" {
		t.Fatalf("%s runs %q as %q", name, args, u.Value("Service", "User"))
	}
	for i, a := range args[1:] {
		if p, ok := strings.CutPrefix(a, "/etc/pgark/"); ok {
			args[i+1] = filepath.Join(confDir, p)
		}
		if p, ok := strings.CutPrefix(a, "/var/lib/prometheus/node-exporter/"); ok {
			args[i+1] = filepath.Join(confDir, p)
		}
	}
	return args[1:]
}

// TestScheduledUnits runs each scheduled unit's ExecStart command line, as
// the postgres user with systemd's PATH and a config file written as
// /etc/pgark/CLUSTER.conf would be, against a real archiving cluster and a
// local repository: two backups and two dump runs are listed, retention
// keeps the newest of each, check reports OK, also in its prometheus-file,
// and the drill passes. Then the copy unit: without repo2 it fails with
// exit 2; with a second local repository added to the config file, it
// replicates the retained backup and dump run into it, and repository 2
// alone lists and verifies them.
func TestScheduledUnits(t *testing.T) {
	testenv.EndToEnd(t)
	const inst = "main"
	dir := testenv.SharedDir(t)
	repoDir := filepath.Join(dir, "repo")
	confPath := filepath.Join(dir, inst+".conf")
	promFile := filepath.Join(dir, "pgark-"+inst+".prom")
	// The packaged example with this test's settings in place of its own.
	conf := fmt.Sprintf(`# /etc/pgark/%s.conf
repo = %s
pg-bin = %s
keep-last = 1
keep-dumps = 1
max-backup-age = 192h
prometheus-file = %s
`, inst, repoDir, testenv.ClientBinDir, promFile)
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	mustOK(t, asPostgres(t, nil, "init", "--config", confPath))
	c := testenv.StartPG(t, testenv.PGOptions{Conf: map[string]string{
		"archive_mode":    "on",
		"archive_command": fmt.Sprintf("%s wal-push --config %s %%p", pgarkBin, confPath),
	}})
	// The cluster's connection goes into the config, as dsn would for a
	// cluster that is not on the default socket and port.
	conf += fmt.Sprintf("dsn = %s\n", c.DSN())
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	systemdPath := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"}
	unit := func(name string) result {
		args := unitCommand(t, name, inst, dir)
		return asPostgres(t, systemdPath, args...)
	}

	for i := 0; i < 2; i++ {
		if r := unit("pgark-backup@.service"); r.code != 0 {
			t.Fatalf("pgark-backup@%s: %s", inst, r)
		}
		if r := unit("pgark-dump@.service"); r.code != 0 {
			t.Fatalf("pgark-dump@%s: %s", inst, r)
		}
	}
	env := []string{"PGARK_CONFIG=" + confPath}
	if b := listBackups(t, confPath); len(b) != 2 {
		t.Fatalf("after two backup runs: %d backups listed", len(b))
	}
	d := listDumps(t, env)
	if len(d.Dumps) != 2 {
		t.Fatalf("after two dump runs: %d dump runs listed", len(d.Dumps))
	}
	newestDump := d.Dumps[len(d.Dumps)-1].ID
	for _, run := range d.Dumps {
		if run.ID > newestDump {
			newestDump = run.ID
		}
	}

	if r := unit("pgark-retain@.service"); r.code != 0 {
		t.Fatalf("pgark-retain@%s: %s", inst, r)
	}
	b := listBackups(t, confPath)
	if len(b) != 1 {
		t.Fatalf("after retain (keep-last = 1): %d backups listed", len(b))
	}
	newestBackup := b[0].ID
	if d := listDumps(t, env); len(d.Dumps) != 1 || d.Dumps[0].ID != newestDump {
		t.Fatalf("after retain (keep-dumps = 1): %+v, want only %s", d.Dumps, newestDump)
	}

	r := unit("pgark-check@.service")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "PGARK CHECK OK") {
		t.Fatalf("pgark-check@%s: %s", inst, r)
	}
	if m := string(readFile(t, promFile)); !strings.Contains(m, "pgark_check_status 0\n") || !strings.Contains(m, "pgark_backups 1\n") {
		t.Fatalf("prometheus-file after pgark-check@%s:\n%s", inst, m)
	}

	// The restore drill of the newest backup, then check's last_drill.
	if r := unit("pgark-drill@.service"); r.code != 0 || !strings.HasPrefix(r.stdout, "DRILL PASSED") {
		t.Fatalf("pgark-drill@%s: %s", inst, r)
	}
	if m := string(readFile(t, filepath.Join(dir, "pgark-drill-"+inst+".prom"))); !strings.Contains(m, "pgark_drill_success 1\n") {
		t.Fatalf("prometheus-file after pgark-drill@%s:\n%s", inst, m)
	}
	if r := unit("pgark-check@.service"); r.code != 0 || !strings.Contains(r.stdout, "last_drill") || !strings.Contains(r.stdout, "passed") {
		t.Fatalf("pgark-check@%s after the drill: %s", inst, r)
	}
	if m := string(readFile(t, promFile)); !strings.Contains(m, "pgark_last_drill_success 1\n") {
		t.Fatalf("prometheus-file after pgark-check@%s:\n%s", inst, m)
	}

	// The copy unit without a second repository: exit 2, one line naming repo2.
	if r := unit("pgark-copy@.service"); r.code != 2 || r.stdout != "" || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "set repo2") {
		t.Fatalf("pgark-copy@%s without repo2: %s", inst, r)
	}
	// A second repository added to the running setup, as an administrator
	// would: created with the cluster's config file, then named in it. The
	// copy unit replicates the retained backup and dump run into it; a
	// second run finds nothing left to copy.
	repo2Dir := filepath.Join(dir, "repo2")
	mustOK(t, asPostgres(t, nil, "init", "--config", confPath, "--repo", repo2Dir))
	spool := filepath.Join(dir, "spool")
	testenv.MkdirShared(t, spool)
	conf += fmt.Sprintf("repo2 = %s\nspool-dir = %s\n", repo2Dir, spool)
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := unit("pgark-copy@.service"); r.code != 0 || strings.HasPrefix(r.stdout, "copied 0 objects") || !strings.Contains(r.stdout, "repository 2 holds 1 complete backups and 1 dump runs") {
		t.Fatalf("pgark-copy@%s: %s", inst, r)
	}
	if r := unit("pgark-copy@.service"); r.code != 0 || !strings.HasPrefix(r.stdout, "copied 0 objects") {
		t.Fatalf("pgark-copy@%s again: %s", inst, r)
	}
	repo2Only := []string{"PGARK_REPO=" + repo2Dir}
	var l struct {
		Backups []backupInfo `json:"backups"`
	}
	out := mustOK(t, pgark(t, repo2Only, "list", "--json")).stdout
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Backups) != 1 || l.Backups[0].ID != newestBackup {
		t.Fatalf("repository 2 after pgark-copy@%s: %v\n%s; want backup %s", inst, err, out, newestBackup)
	}
	if d := listDumps(t, repo2Only); len(d.Dumps) != 1 || d.Dumps[0].ID != newestDump {
		t.Fatalf("repository 2 after pgark-copy@%s: dumps %+v, want only %s", inst, d.Dumps, newestDump)
	}
	// And it holds what restoring it needs: verify reads repository 2 alone.
	mustOK(t, pgark(t, repo2Only, "verify"))
}
