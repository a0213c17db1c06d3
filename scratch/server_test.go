package scratch

import (
	"context"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
)

const testMajor = 17

// startFromCopy makes a stopped cluster of testMajor, copies its data directory into a new
// scratch server and lets edit prepare it before Start.
func startFromCopy(t *testing.T, edit func(dataDir string)) (*Server, error) {
	t.Helper()
	testenv.NeedPG(t, testMajor)
	src := testenv.StartPG(t, testenv.PGOptions{Major: testMajor, Conf: map[string]string{
		// What a production configuration may carry and the scratch server must not run.
		"archive_mode": "on", "archive_command": "false", "shared_preload_libraries": "pg_not_installed",
	}, NoWait: true})
	src.Stop(t) // it never came up (the library is missing): initdb is what we wanted
	base := testenv.SharedDir(t)
	cfg := Config{Dir: filepath.Join(base, "scr"), MarkerDir: filepath.Join(base, "markers"), Major: testMajor, BinDir: src.BinDir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		cfg.UID, _ = strconv.Atoi(u.Uid)
		cfg.GID, _ = strconv.Atoi(u.Gid)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background(), false); err != nil {
			t.Error(err)
		}
	})
	os.Remove(s.DataDir())
	testenv.CopyDataDir(t, src.DataDir, s.DataDir())
	if edit != nil {
		edit(s.DataDir())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		return s, err
	}
	return s, s.WaitPromoted(ctx)
}

func TestServerStartsPrivately(t *testing.T) {
	s, err := startFromCopy(t, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, readLog(s))
	}
	r, err := s.Recovery(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Version, strconv.Itoa(testMajor)+".") || len(r.Databases) < 2 {
		t.Fatalf("recovery info %+v", r)
	}
	// No TCP listener: postmaster.pid's listen address line is empty.
	b, err := os.ReadFile(filepath.Join(s.DataDir(), "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 6 || strings.TrimSpace(lines[5]) != "" || strings.TrimSpace(lines[4]) != s.Dir() {
		t.Fatalf("postmaster.pid: %q", b)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), ".s.PGSQL.5432")); err != nil {
		t.Fatal(err)
	}
	dir := s.Dir()
	if err := s.Close(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("scratch directory left: %v", err)
	}
}

func TestWaitPromotedGivesTheReason(t *testing.T) {
	s, err := startFromCopy(t, func(d string) {
		conf := "restore_command = 'false'\nrecovery_target_lsn = 'FF/0'\nrecovery_target_action = 'promote'\n"
		f, err := os.OpenFile(filepath.Join(d, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err == nil {
			_, err = f.WriteString(conf)
			f.Close()
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(d, "recovery.signal"), nil, 0o600)
			testenv.ChownToPostgres(t, d)
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	if !errors.Is(err, ErrRecovery) || !strings.Contains(err.Error(), "recovery ended before configured recovery target was reached") {
		t.Fatalf("err = %v\n%s", err, readLog(s))
	}
}

func TestCleanStaleStopsALeftServer(t *testing.T) {
	s, err := startFromCopy(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := s.cmd.Process.Pid
	// Pretend its owner died: rewrite the marker with a dead pid.
	m, err := readMarker(s.marker)
	if err != nil {
		t.Fatal(err)
	}
	m.PID, m.PIDStart = deadPID(t), 0
	if err := writeMarker(s.cfg.MarkerDir, m); err != nil {
		t.Fatal(err)
	}
	st, err := CleanStale(context.Background(), s.cfg.MarkerDir, false, nil)
	if err != nil || len(st) != 1 || st[0].Postmaster != pid {
		t.Fatalf("CleanStale: %+v %v", st, err)
	}
	if _, alive := processStart(pid); alive || exists(s.Dir()) {
		t.Fatalf("after CleanStale: postmaster alive %v, directory %v", alive, exists(s.Dir()))
	}
}

func readLog(s *Server) string {
	if s == nil {
		return ""
	}
	b, _ := os.ReadFile(s.LogFile())
	return string(b)
}
