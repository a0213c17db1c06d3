package scratch

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/pgark/pgark/internal/testenv"
)

func TestOverridesKeepTheScratchServerPrivate(t *testing.T) {
	for _, major := range []int{13, 14, 15, 16, 17, 18} {
		s := Overrides(major, "/scratch/d1", "/scratch/d1/pgdata", 5432, "pgark wal-fetch %f %p")
		want := map[string]string{
			"listen_addresses": "", "unix_socket_directories": "/scratch/d1", "unix_socket_permissions": "0700",
			"archive_mode": "off", "archive_command": "", "primary_conninfo": "", "primary_slot_name": "",
			"max_wal_senders": "0", "max_logical_replication_workers": "0", "shared_preload_libraries": "",
			"data_directory": "/scratch/d1/pgdata", "hba_file": "/scratch/d1/pg_hba.conf", "external_pid_file": "",
			"restore_command": "pgark wal-fetch %f %p", "ssl": "off", "synchronous_standby_names": "",
			"hot_standby": "off", "autovacuum": "off", "port": "5432",
		}
		for k, v := range want {
			if got, ok := s[k]; !ok || got != v {
				t.Errorf("PostgreSQL %d: %s = %q (set: %v), want %q", major, k, got, ok, v)
			}
		}
		// Settings that exist only in some majors: an unknown one stops the server.
		only := map[string]bool{
			"archive_library":        major >= 15,
			"stats_temp_directory":   major <= 14,
			"reserved_connections":   major >= 16,
			"sync_replication_slots": major >= 17,
			"event_triggers":         major >= 17,
		}
		for k, want := range only {
			if _, got := s[k]; got != want {
				t.Errorf("PostgreSQL %d: %s set = %v, want %v", major, k, got, want)
			}
		}
	}
	if _, ok := Overrides(16, "/d", "/d/pgdata", 5432, "")["restore_command"]; ok {
		t.Error("an empty restore command must not be passed (the one in postgresql.auto.conf stays)")
	}
}

func TestArgsAreSortedPairs(t *testing.T) {
	got := strings.Join(args(map[string]string{"port": "5433", "archive_command": "", "a": "x y"}), "|")
	if want := "-c|a=x y|-c|archive_command=|-c|port=5433"; got != want {
		t.Fatalf("args = %q, want %q", got, want)
	}
}

// TestOverridesKnownToServers asks each installed server whether it knows every override:
// postgres refuses to start with an unknown setting on its command line.
func TestOverridesKnownToServers(t *testing.T) {
	testenv.EndToEnd(t)
	tested := 0
	for _, major := range testenv.AllMajors {
		bin, err := testenv.PGBinDir(major)
		if err != nil {
			continue
		}
		tested++
		cmd := exec.Command(filepath.Join(bin, "postgres"), "--describe-config")
		testenv.RunAsPostgres(cmd)
		cmd.Dir = "/"
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("PostgreSQL %d: postgres --describe-config: %v", major, err)
		}
		known := map[string]bool{}
		for _, l := range strings.Split(string(out), "\n") {
			if name, _, ok := strings.Cut(l, "\t"); ok {
				known[name] = true
			}
		}
		for k := range Overrides(major, "/d", "/d/pgdata", 5432, "x %p") {
			if !known[k] {
				t.Errorf("PostgreSQL %d does not know the setting %s", major, k)
			}
		}
	}
	if tested == 0 {
		testenv.Missing(t, errors.New("no PostgreSQL server binaries"))
	}
}

func TestConfigValidate(t *testing.T) {
	long := "/" + strings.Repeat("x", 100)
	for _, c := range []Config{
		{Dir: "relative", MarkerDir: "/m", Major: 16},
		{Dir: "/d", MarkerDir: "", Major: 16},
		{Dir: "/d", MarkerDir: "/m", Major: 9},
		{Dir: long, MarkerDir: "/m", Major: 16},
		{Dir: "/d'x", MarkerDir: "/m", Major: 16},
	} {
		if err := c.validate(); err == nil {
			t.Errorf("validate(%+v) accepted", c)
		}
	}
	c := Config{Dir: "/d/", MarkerDir: "/m", Major: 16}
	if err := c.validate(); err != nil || c.Dir != "/d" || c.Port != 5432 || c.User != "postgres" {
		t.Fatalf("validate: %v, %+v", err, c)
	}
}

func newTestServer(t *testing.T) (*Server, string) {
	t.Helper()
	base := t.TempDir()
	markers := filepath.Join(base, "markers")
	cfg := Config{Dir: filepath.Join(base, "s1"), MarkerDir: markers, Major: 16}
	if os.Geteuid() == 0 {
		cfg.UID, cfg.GID = 65534, 65534
		os.Chmod(base, 0o755)
		os.Chmod(filepath.Dir(base), 0o755)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, markers
}

func TestNewWritesMarkerAndRemoveDeletesIt(t *testing.T) {
	s, markers := newTestServer(t)
	if st, err := os.Stat(s.DataDir()); err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("data directory: %v %v", st, err)
	}
	m, err := readMarker(markerPath(markers, s.Dir()))
	if err != nil {
		t.Fatal(err)
	}
	if m.PID != os.Getpid() || m.Dir != s.Dir() || m.DataDir != s.DataDir() || m.PIDStart == 0 {
		t.Fatalf("marker %+v", m)
	}
	// A second scratch server in the same (now non-empty) directory is refused.
	if _, err := New(s.cfg); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("New on a used directory: %v", err)
	}
	// CleanStale leaves our own scratch server alone.
	if st, err := CleanStale(context.Background(), markers, true, nil); err != nil || len(st) != 0 || !exists(s.Dir()) {
		t.Fatalf("CleanStale of our own marker: %v %+v", err, st)
	}
	if err := s.Close(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if exists(s.Dir()) || exists(markerPath(markers, s.Dir())) {
		t.Fatal("Remove left the directory or the marker")
	}
}

func TestNewGivesCreatedParentsToTheServerUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	base := t.TempDir()
	os.Chmod(base, 0o755)
	os.Chmod(filepath.Dir(base), 0o755)
	cfg := Config{Dir: filepath.Join(base, "a", "b", "s1"), MarkerDir: filepath.Join(base, "markers"), Major: 16, UID: 65534, GID: 65534}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background(), false)
	for _, p := range []string{filepath.Join(base, "a"), filepath.Join(base, "a", "b"), s.Dir(), s.DataDir()} {
		st, err := os.Stat(p)
		if err != nil || st.Sys().(*syscall.Stat_t).Uid != 65534 {
			t.Errorf("%s: %v, owner %v", p, err, st.Sys().(*syscall.Stat_t).Uid)
		}
	}
	if st, _ := os.Stat(base); st.Sys().(*syscall.Stat_t).Uid == 65534 {
		t.Error("an existing parent was given away")
	}
}

func TestKeepLeavesTheDirectory(t *testing.T) {
	s, markers := newTestServer(t)
	if err := s.Close(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if !exists(s.Dir()) || exists(markerPath(markers, s.Dir())) {
		t.Fatal("Keep must keep the directory and drop the marker")
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func plantMarker(t *testing.T, markers string, pid int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "left")
	if err := os.MkdirAll(filepath.Join(dir, dataDirName), 0o700); err != nil {
		t.Fatal(err)
	}
	start, _ := processStart(pid)
	if err := writeMarker(markers, marker{PID: pid, PIDStart: start, Dir: dir, DataDir: filepath.Join(dir, dataDirName)}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCleanStale(t *testing.T) {
	markers := filepath.Join(t.TempDir(), "markers")
	if st, err := CleanStale(context.Background(), markers, false, nil); err != nil || st != nil {
		t.Fatalf("missing marker directory: %v %v", st, err)
	}
	dead := plantMarker(t, markers, deadPID(t))
	// A postmaster.pid naming a live process that is not a postgres of this directory
	// (this test) must not be signalled.
	pidFile := strconv.Itoa(os.Getpid()) + "\n" + filepath.Join(dead, dataDirName) + "\n"
	if err := os.WriteFile(filepath.Join(dead, dataDirName, "postmaster.pid"), []byte(pidFile), 0o600); err != nil {
		t.Fatal(err)
	}
	live := plantMarker(t, markers, os.Getppid())
	st, err := CleanStale(context.Background(), markers, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if exists(dead) || !exists(live) {
		t.Fatalf("dead owner's directory removed: %v, live owner's kept: %v", !exists(dead), exists(live))
	}
	if len(st) != 2 {
		t.Fatalf("stale = %+v", st)
	}
	for _, s := range st {
		if s.Dir == live && !s.OwnerRunning || s.Dir == dead && (s.OwnerRunning || s.Postmaster != 0) {
			t.Errorf("stale entry %+v", s)
		}
	}
	// With force, the live owner's directory goes too.
	if _, err := CleanStale(context.Background(), markers, true, nil); err != nil || exists(live) {
		t.Fatalf("force: %v, live directory still there: %v", err, exists(live))
	}
	if ents, _ := os.ReadDir(markers); len(ents) != 0 {
		t.Fatalf("markers left: %v", ents)
	}
}

func TestCleanStaleRefusesOddMarkers(t *testing.T) {
	markers := t.TempDir()
	victim := t.TempDir()
	os.WriteFile(filepath.Join(victim, "keep"), []byte("x"), 0o600)
	for i, m := range []marker{
		{PID: deadPID(t), Dir: "/", DataDir: "/pgdata"},
		{PID: deadPID(t), Dir: victim, DataDir: "/elsewhere"},
		{PID: deadPID(t), Dir: victim + "/../x", DataDir: victim + "/../x/pgdata"},
	} {
		b, _ := json.Marshal(m)
		os.WriteFile(filepath.Join(markers, strconv.Itoa(i)+markerSuffix), b, 0o600)
	}
	if _, err := CleanStale(context.Background(), markers, true, nil); err == nil {
		t.Fatal("odd markers accepted")
	}
	if !exists(filepath.Join(victim, "keep")) {
		t.Fatal("an odd marker removed a directory")
	}
}

func TestPostmasterOfOtherDirectory(t *testing.T) {
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "postmaster.pid"), []byte(strconv.Itoa(os.Getpid())+"\n/some/other\n"), 0o600)
	if _, err := postmasterOf(d); err == nil {
		t.Fatal("a postmaster.pid naming another directory was accepted")
	}
	os.WriteFile(filepath.Join(d, "postmaster.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"+d+"\n"), 0o600)
	if pid, err := postmasterOf(d); err != nil || pid != 0 {
		t.Fatalf("a live non-postgres process was taken for a postmaster: %d %v", pid, err)
	}
}

func TestFindBinDirNamesTheMajor(t *testing.T) {
	_, err := FindBinDir(context.Background(), 99, t.TempDir())
	if !errors.Is(err, ErrBinaries) || !strings.Contains(err.Error(), "PostgreSQL 99") {
		t.Fatalf("err = %v", err)
	}
	_, err = FindBinDir(context.Background(), 99, "")
	if !errors.Is(err, ErrBinaries) || !strings.Contains(err.Error(), "PostgreSQL 99") || !strings.Contains(err.Error(), "--pg-bin") {
		t.Fatalf("err = %v", err)
	}
}
