package integration

import (
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
// keeps the newest of each, and check reports OK, also in its
// prometheus-file.
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
	if b := listBackups(t, confPath); len(b) != 1 {
		t.Fatalf("after retain (keep-last = 1): %d backups listed", len(b))
	}
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
}
