package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMajorsEnv(t *testing.T) {
	t.Setenv("PGARK_TEST_MAJORS", " 18, 15,18 ")
	if got := Majors(); !slices.Equal(got, []int{18, 15}) {
		t.Fatalf("Majors() = %v, want [18 15]", got)
	}
	t.Setenv("PGARK_TEST_MAJORS", "")
	if got := Majors(); !slices.Equal(got, AllMajors) {
		t.Fatalf("Majors() = %v, want %v", got, AllMajors)
	}
	t.Setenv("PGARK_TEST_MAJORS", "15,x")
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("Majors() accepted a malformed PGARK_TEST_MAJORS")
			}
		}()
		Majors()
	}()
}

func TestPGBinDirMissing(t *testing.T) {
	t.Setenv("PGARK_PG12_BIN", t.TempDir())
	_, err := PGBinDir(12)
	if err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Fatalf("PGBinDir for a missing major: err = %v, want one that says `make deps`", err)
	}
}

// The client tools of each ClientToolMajors major run as the postgres user and are of that
// major; another major has none, without failing the test.
func TestClientTools(t *testing.T) {
	EndToEnd(t)
	for _, major := range ClientToolMajors {
		for _, name := range []string{"pg_verifybackup", "pg_basebackup", "psql", "pg_waldump"} {
			p, ok := ClientTool(t, major, name)
			if !ok {
				t.Fatalf("ClientTool(%d, %s) not ok", major, name)
			}
			if out := shell(t, p+" --version"); !strings.Contains(out, fmt.Sprintf("(PostgreSQL) %d.", major)) {
				t.Errorf("%s --version: %q, want PostgreSQL %d", p, out, major)
			}
		}
	}
	t.Setenv("PGARK_PG16_CLIENT_BIN", t.TempDir())
	if p, ok := ClientTool(t, 16, "pg_verifybackup"); ok {
		t.Fatalf("ClientTool(16) = %s, want none", p)
	}
}

func TestSharedDirAccess(t *testing.T) {
	EndToEnd(t)
	dir := SharedDir(t)
	sub := filepath.Join(dir, "a", "b")
	MkdirShared(t, sub)
	// The postgres user (or the current user) must be able to create a file there.
	shell(t, "touch "+filepath.Join(sub, "f")+" && test -w "+dir)
	if pgAsRoot() {
		pu, _ := pgPostgresUser()
		for _, p := range []string{dir, filepath.Join(dir, "a"), sub, filepath.Join(sub, "f")} {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if uid := st.Sys().(*syscall.Stat_t).Uid; uid != pu.uid {
				t.Errorf("%s belongs to uid %d, want postgres (%d)", p, uid, pu.uid)
			}
		}
	}
}

// shell runs a command as the postgres user (when root), failing the test on error.
func shell(t *testing.T, script string) string {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = "/"
	RunAsPostgres(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

func TestClusterPerMajor(t *testing.T) {
	for _, major := range Majors() {
		t.Run(fmt.Sprintf("PG%d", major), func(t *testing.T) {
			c := StartPG(t, PGOptions{Major: major})
			checkCluster(t, c, major, "16MB")

			c.Exec(t, `CREATE TABLE items(id int PRIMARY KEY, name text NOT NULL);
				INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g`)
			if got := c.QueryRow(t, "SELECT count(*) FROM items"); got != "1000" {
				t.Fatalf("count(*) = %q, want 1000", got)
			}
			if got := c.QueryRow(t, "SELECT sum(id) FROM items"); got != "500500" {
				t.Fatalf("sum(id) = %q, want 500500", got)
			}
			if got := c.QueryRow(t, "SELECT name FROM items WHERE id = 42"); got != "item 42" {
				t.Fatalf("name = %q, want %q", got, "item 42")
			}
			rows := c.Query(t, "SELECT id, name FROM items WHERE id <= 2 ORDER BY id")
			if want := [][]string{{"1", "item 1"}, {"2", "item 2"}}; !slices.EqualFunc(rows, want, slices.Equal) {
				t.Fatalf("rows = %q, want %q", rows, want)
			}
			if err := c.ExecErr("SELECT * FROM no_such_table"); err == nil {
				t.Fatal("ExecErr on a missing table returned no error")
			}

			// Debian's pgbench 15 works against every major.
			c.Pgbench(t, "-i", "-s", "1", "-q")
			c.Pgbench(t, "-c", "2", "-t", "20")
			if got := c.QueryRow(t, "SELECT count(*) FROM pgbench_accounts"); got != "100000" {
				t.Fatalf("pgbench_accounts has %s rows, want 100000", got)
			}
			if got := c.QueryRow(t, "SELECT count(*) FROM pgbench_history"); got != "40" {
				t.Fatalf("pgbench_history has %s rows, want 40", got)
			}

			// A replication connection is allowed.
			if got := c.QueryRow(t, "SELECT count(*) FROM pg_hba_file_rules WHERE 'replication' = ANY(database) AND auth_method = 'trust'"); got == "0" {
				t.Fatalf("no trusted replication entry in pg_hba.conf")
			}

			// Stop and start again: the data survives, the server runs again.
			c.Stop(t)
			if c.Running() {
				t.Fatal("Running() after Stop")
			}
			if _, err := os.Stat(filepath.Join(c.DataDir, "postmaster.pid")); !os.IsNotExist(err) {
				t.Fatalf("postmaster.pid still there after Stop: %v", err)
			}
			c.Stop(t) // a no-op
			c.Start(t)
			if got := c.QueryRow(t, "SELECT count(*) FROM items"); got != "1000" {
				t.Fatalf("after restart count(*) = %q, want 1000", got)
			}
		})
	}
}

func checkCluster(t *testing.T, c *Cluster, major int, segSize string) {
	t.Helper()
	if c.Major != major {
		t.Fatalf("Cluster.Major = %d, want %d", c.Major, major)
	}
	if !c.Running() {
		t.Fatal("Running() = false after StartPG")
	}
	v := c.QueryRow(t, "SHOW server_version_num")
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("server_version_num = %q: %v", v, err)
	}
	if n/10000 != major {
		t.Fatalf("server_version_num = %d, want major %d", n, major)
	}
	if got := c.QueryRow(t, "SHOW wal_segment_size"); got != segSize {
		t.Fatalf("wal_segment_size = %q, want %q", got, segSize)
	}
	for setting, want := range map[string]string{
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(c.Port),
		"unix_socket_directories": c.SocketDir,
		"wal_level":               "replica",
		"max_wal_senders":         "5",
		"fsync":                   "off",
	} {
		if got := c.QueryRow(t, "SHOW "+setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if c.QueryRow(t, "SELECT current_user") != "postgres" {
		t.Error("not connected as postgres")
	}
	if pgAsRoot() {
		pu, _ := pgPostgresUser()
		st, err := os.Stat("/proc/" + strconv.Itoa(c.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; uid != pu.uid {
			t.Fatalf("postmaster runs as uid %d, want postgres (%d)", uid, pu.uid)
		}
	}
}

func defaultTestMajor() int {
	m := Majors()
	if slices.Contains(m, DefaultMajor) {
		return DefaultMajor
	}
	return m[len(m)-1]
}

// A 1 MB segment size, archiving through archive_command as the postgres user, a settings
// override (fsync), and SwitchWAL/WaitArchived.
func TestWalSegSize1MBAndArchiving(t *testing.T) {
	major := defaultTestMajor()
	dir := SharedDir(t)
	archive := filepath.Join(dir, "archive")
	MkdirShared(t, archive)
	c := StartPG(t, PGOptions{
		Major:        major,
		WalSegSizeMB: 1,
		Conf: map[string]string{
			"archive_mode":    "on",
			"archive_command": "test ! -f " + archive + "/%f && cp %p " + archive + "/%f && echo \"$PGARK_TESTENV_MARK\" > " + archive + "/mark",
			"fsync":           "on",
		},
		Env: []string{"PGARK_TESTENV_MARK=hello"},
	})
	if got := c.QueryRow(t, "SHOW wal_segment_size"); got != "1MB" {
		t.Fatalf("wal_segment_size = %q, want 1MB", got)
	}
	if got := c.QueryRow(t, "SHOW fsync"); got != "on" {
		t.Fatalf("fsync = %q, want on (the caller's setting)", got)
	}
	seg := c.SwitchWAL(t)
	if len(seg) != 24 {
		t.Fatalf("SwitchWAL returned %q", seg)
	}
	c.WaitArchived(t, seg, time.Minute)
	st, err := os.Stat(filepath.Join(archive, seg))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 1<<20 {
		t.Fatalf("archived segment is %d bytes, want 1 MiB", st.Size())
	}
	mark, err := os.ReadFile(filepath.Join(archive, "mark"))
	if err != nil || strings.TrimSpace(string(mark)) != "hello" {
		t.Fatalf("archive_command did not see PGOptions.Env: %q, %v", mark, err)
	}
}

// A copy of a stopped cluster starts with DataDir; a copy in archive recovery whose
// restore_command fails fatally stops, and NoWait/WaitExit observe it.
func TestDataDirCopyAndRecoveryFailure(t *testing.T) {
	major := defaultTestMajor()
	src := StartPG(t, PGOptions{Major: major})
	src.Exec(t, "CREATE TABLE t(i int); INSERT INTO t VALUES (7)")
	src.Stop(t)

	dir := SharedDir(t)
	cp1 := filepath.Join(dir, "copy1")
	CopyDataDir(t, src.DataDir, cp1)
	c1 := StartPG(t, PGOptions{DataDir: cp1})
	if c1.Major != major {
		t.Fatalf("copy: major %d, want %d", c1.Major, major)
	}
	if got := c1.QueryRow(t, "SELECT i FROM t"); got != "7" {
		t.Fatalf("copy holds %q, want 7", got)
	}
	c1.Stop(t)

	cp2 := filepath.Join(dir, "copy2")
	CopyDataDir(t, src.DataDir, cp2)
	if err := os.WriteFile(filepath.Join(cp2, "recovery.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ChownToPostgres(t, cp2)
	c2 := StartPG(t, PGOptions{
		DataDir: cp2,
		NoWait:  true,
		Conf:    map[string]string{"restore_command": "exit 200"},
	})
	if err := c2.WaitExit(t, time.Minute); err == nil {
		t.Fatal("postmaster exited with status 0, want a failure")
	}
	if log := c2.Log(); !strings.Contains(log, "could not restore file") {
		t.Fatalf("server log does not mention the failed restore_command:\n%s", log)
	}

	// A data directory that root owns is refused with a clear message (only as root).
	if pgAsRoot() {
		ft := &fakeTB{TB: t}
		bad := t.TempDir()
		if err := os.WriteFile(filepath.Join(bad, "PG_VERSION"), []byte(strconv.Itoa(major)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() { _ = recover() }()
			StartPG(ft, PGOptions{DataDir: bad})
		}()
		if !strings.Contains(ft.msg, "ChownToPostgres") {
			t.Fatalf("StartPG on a root-owned data dir: %q", ft.msg)
		}
	}
}

// The cleanup stops the server: no postmaster survives its test.
func TestCleanupStopsServer(t *testing.T) {
	NeedPG(t, defaultTestMajor())
	var pid int
	var dir string
	t.Run("start", func(t *testing.T) {
		c := StartPG(t, PGOptions{Major: defaultTestMajor()})
		pid = c.Pid()
		dir = c.Dir
	})
	if pid == 0 {
		t.Fatal("no server started")
	}
	if processAlive(pid) {
		t.Fatalf("postmaster %d still running after its test ended", pid)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("shared dir %s still there: %v", dir, err)
	}
}

// If the test process dies without running its cleanups (a crash, a SIGKILL, go test's
// timeout), its postmasters get SIGQUIT (Pdeathsig) and stop.
func TestServerDiesWithTestProcess(t *testing.T) {
	NeedPG(t, defaultTestMajor())
	if os.Getenv("PGARK_TESTENV_CHILD") != "" {
		c := StartPG(t, PGOptions{Major: defaultTestMajor()})
		info := fmt.Sprintf("%d %s", c.Pid(), c.Dir)
		if err := os.WriteFile(os.Getenv("PGARK_TESTENV_CHILD"), []byte(info), 0o644); err != nil {
			t.Fatal(err)
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	infoFile := filepath.Join(t.TempDir(), "info")
	cmd := exec.Command(exe, "-test.run=^TestServerDiesWithTestProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PGARK_TESTENV_CHILD="+infoFile)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("child test process was not killed:\n%s", out)
	}
	b, rerr := os.ReadFile(infoFile)
	if rerr != nil {
		t.Fatalf("child did not start a server: %v, %v\n%s", err, rerr, out)
	}
	var pid int
	var dir string
	if _, err := fmt.Sscanf(string(b), "%d %s", &pid, &dir); err != nil || pid == 0 {
		t.Fatalf("bad child info %q: %v", b, err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		_ = os.RemoveAll(dir)
	})
	deadline := time.Now().Add(30 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("postmaster %d still running 30s after its test process died", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processAlive reports whether pid exists and is not a zombie (an orphan's zombie may
// linger where PID 1 does not reap).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// fakeTB records the first fatal message and stops the calling function with a panic.
type fakeTB struct {
	testing.TB
	msg string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	panic(f)
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(f)
}

// A missing dependency skips a test, with the line that tells how to install it, unless
// PGARK_TEST_REQUIRE=1 makes it a failure: CI can never pass by skipping.
func TestMissingDependency(t *testing.T) {
	if os.Getenv("PGARK_TESTENV_MISSING_CHILD") != "" {
		S3Start(t)
		t.Fatal("S3Start returned without its binary")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, require := range []string{"", "1"} {
		cmd := exec.Command(exe, "-test.run=^TestMissingDependency$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "PGARK_TESTENV_MISSING_CHILD=1",
			"PGARK_VERSITYGW="+filepath.Join(t.TempDir(), "no-such-versitygw"), RequireEnv+"="+require)
		out, err := cmd.CombinedOutput()
		switch {
		case !strings.Contains(string(out), "make deps"):
			t.Errorf("%s=%q: the output does not say how to install it:\n%s", RequireEnv, require, out)
		case require == "" && (err != nil || !strings.Contains(string(out), "--- SKIP")):
			t.Errorf("without %s: %v, want a skip:\n%s", RequireEnv, err, out)
		case require == "1" && (err == nil || !strings.Contains(string(out), "--- FAIL")):
			t.Errorf("with %s=1: %v, want a failure:\n%s", RequireEnv, err, out)
		}
	}
}
