package scratch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrRecovery is returned by WaitPromoted when the server stopped before it finished
// recovery; the error's message holds the reason from the server log.
var ErrRecovery = errors.New("recovery failed")

const (
	dataDirName = "pgdata"
	logName     = "postgres.log"
)

// Server is one scratch server. Its methods are safe for one goroutine at a time, except
// Stop, which may be called from another (an interrupt).
type Server struct {
	cfg      Config
	dataDir  string
	marker   string
	binDir   string
	uid, gid int

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	waitErr  error
	logStart int64
}

// New validates cfg, writes the marker, and creates cfg.Dir (which must not exist or be an
// empty directory) and the empty data directory in it, owned by the server's user.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, dataDir: filepath.Join(cfg.Dir, dataDirName), uid: -1, gid: -1}
	if os.Geteuid() == 0 {
		if cfg.UID <= 0 {
			return nil, errors.New("scratch: running as root: give the user that runs the server (PostgreSQL refuses to run as root)")
		}
		s.uid, s.gid = cfg.UID, cfg.GID
	}
	if ents, err := os.ReadDir(cfg.Dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("scratch: %s exists and is not empty; give a new directory (it is removed at the end)", cfg.Dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("scratch: %w", err)
	}
	pidStart, _ := processStart(os.Getpid())
	if err := writeMarker(cfg.MarkerDir, marker{PID: os.Getpid(), PIDStart: pidStart, Dir: cfg.Dir, DataDir: s.dataDir, CreatedAt: time.Now().UTC()}); err != nil {
		return nil, err
	}
	s.marker = markerPath(cfg.MarkerDir, cfg.Dir)
	fail := func(err error) (*Server, error) {
		os.RemoveAll(cfg.Dir)
		os.Remove(s.marker)
		return nil, err
	}
	// Parents that do not exist yet are created for (and given to) the server's user, so
	// that a directory made by root in that user's home stays that user's.
	var created []string
	for p := filepath.Dir(cfg.Dir); p != "/"; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		}
		created = append(created, p)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Dir), 0o755); err != nil {
		return fail(fmt.Errorf("scratch: %w", err))
	}
	if s.uid >= 0 {
		for _, p := range created {
			if err := os.Chown(p, s.uid, s.gid); err != nil {
				return fail(fmt.Errorf("scratch: %w", err))
			}
		}
	}
	for _, d := range []string{cfg.Dir, s.dataDir} {
		if err := os.Mkdir(d, 0o700); err != nil && !(d == cfg.Dir && errors.Is(err, fs.ErrExist)) {
			return fail(fmt.Errorf("scratch: %w", err))
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return fail(fmt.Errorf("scratch: %w", err))
		}
		if s.uid >= 0 {
			if err := os.Chown(d, s.uid, s.gid); err != nil {
				return fail(fmt.Errorf("scratch: %w", err))
			}
		}
	}
	if s.uid >= 0 {
		if p := untraversable(cfg.Dir, uint32(s.uid), uint32(s.gid)); p != "" {
			return fail(fmt.Errorf("scratch: the server's user (uid %d) cannot reach %s (no search permission on %s); choose a scratch directory it can reach", s.uid, cfg.Dir, p))
		}
	}
	return s, nil
}

// untraversable returns the first parent of dir that uid/gid cannot search, or "".
func untraversable(dir string, uid, gid uint32) string {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return p
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if ok {
			m := st.Mode().Perm()
			okx := m&0o001 != 0 || (sys.Uid == uid && m&0o100 != 0) || (sys.Gid == gid && m&0o010 != 0)
			if !okx {
				return p
			}
		}
		if p == "/" {
			return ""
		}
	}
}

// Dir is the scratch directory; DataDir the (restored) data directory in it; LogFile the
// server log.
func (s *Server) Dir() string     { return s.cfg.Dir }
func (s *Server) DataDir() string { return s.dataDir }
func (s *Server) LogFile() string { return filepath.Join(s.cfg.Dir, logName) }

// SocketDir and Port say where the server listens (a unix socket only).
func (s *Server) SocketDir() string { return s.cfg.Dir }
func (s *Server) Port() int         { return s.cfg.Port }

// BinDir is the directory of the postgres binary Start used ("" before Start).
func (s *Server) BinDir() string { return s.binDir }

// ConnString is a libpq connection string to the server's database dbname ("" is
// postgres) as Config.User.
func (s *Server) ConnString(dbname string) string {
	if dbname == "" {
		dbname = "postgres"
	}
	q := func(v string) string {
		return "'" + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), "'", `\'`) + "'"
	}
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable connect_timeout=10", q(s.cfg.Dir), s.cfg.Port, q(s.cfg.User), q(dbname))
}

// Start starts the server on the restored data directory: it finds the server binaries of
// Config.Major, checks the data directory's PG_VERSION, writes pg_hba.conf and
// pg_ident.conf into Dir (and an empty postgresql.conf into the data directory if the
// backup has none: Debian keeps it in /etc), and starts postgres with the overrides, in its
// own session, logging to LogFile. It returns once the postmaster runs and has written
// postmaster.pid; WaitPromoted waits for the end of recovery.
func (s *Server) Start(ctx context.Context) error {
	bin, err := FindBinDir(ctx, s.cfg.Major, s.cfg.BinDir)
	if err != nil {
		return err
	}
	s.binDir = bin
	v, err := os.ReadFile(filepath.Join(s.dataDir, "PG_VERSION"))
	if err != nil {
		return fmt.Errorf("scratch: %s is not a restored data directory: %w", s.dataDir, err)
	}
	if got := strings.TrimSpace(string(v)); got != strconv.Itoa(s.cfg.Major) {
		return fmt.Errorf("%w: the data directory is PostgreSQL %s, not %d", ErrBinaries, got, s.cfg.Major)
	}
	files := []struct {
		path    string
		content string
		always  bool
	}{
		{filepath.Join(s.cfg.Dir, "pg_hba.conf"), hbaConf, true},
		{filepath.Join(s.cfg.Dir, "pg_ident.conf"), "", true},
		{filepath.Join(s.dataDir, "postgresql.conf"), "# written by pgark: the backup had no postgresql.conf\n", false},
	}
	for _, f := range files {
		if !f.always {
			if _, err := os.Lstat(f.path); err == nil {
				continue
			}
		}
		if err := s.writeFile(f.path, f.content); err != nil {
			return err
		}
	}
	settings := Overrides(s.cfg.Major, s.cfg.Dir, s.dataDir, s.cfg.Port, s.cfg.RestoreCommand)
	if d, ok := settings["stats_temp_directory"]; ok {
		if err := s.mkdir(d); err != nil {
			return err
		}
	}
	for k, v := range s.cfg.Settings {
		settings[k] = v
	}

	logf, err := os.OpenFile(s.LogFile(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("scratch: %w", err)
	}
	defer logf.Close() // the server keeps its own descriptor
	if s.uid >= 0 {
		if err := logf.Chown(s.uid, s.gid); err != nil {
			return fmt.Errorf("scratch: %w", err)
		}
	}
	if st, err := logf.Stat(); err == nil {
		s.logStart = st.Size()
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), append([]string{"-D", s.dataDir}, args(settings)...)...)
	cmd.Dir = s.dataDir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = os.Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if s.uid >= 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid), Groups: []uint32{uint32(s.gid)}}
		if u, err := user.LookupId(strconv.Itoa(s.uid)); err == nil && u.HomeDir != "" {
			cmd.Env = setEnv(cmd.Env, "HOME="+u.HomeDir, "USER="+u.Username, "LOGNAME="+u.Username)
		}
	}
	s.cfg.Log.Info("starting the scratch server", "bin", bin, "data_dir", s.dataDir, "socket_dir", s.cfg.Dir, "port", s.cfg.Port)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("scratch: starting postgres: %w", err)
	}
	exited := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		s.waitErr = err
		s.mu.Unlock()
		close(exited)
	}()
	pid := strconv.Itoa(cmd.Process.Pid)
	for {
		if b, err := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid")); err == nil {
			if l := strings.SplitN(string(b), "\n", 2); len(l) == 2 && strings.TrimSpace(l[0]) == pid {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("%w: the scratch server exited at start: %s", ErrRecovery, s.reason())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func setEnv(env []string, kv ...string) []string {
	out := make([]string, 0, len(env)+len(kv))
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		keep := true
		for _, n := range kv {
			if nk, _, _ := strings.Cut(n, "="); nk == k {
				keep = false
			}
		}
		if keep {
			out = append(out, e)
		}
	}
	return append(out, kv...)
}

func (s *Server) writeFile(p, content string) error {
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		return fmt.Errorf("scratch: %w", err)
	}
	if s.uid >= 0 {
		if err := os.Chown(p, s.uid, s.gid); err != nil {
			return fmt.Errorf("scratch: %w", err)
		}
	}
	return nil
}

func (s *Server) mkdir(p string) error {
	if err := os.MkdirAll(p, 0o700); err != nil {
		return fmt.Errorf("scratch: %w", err)
	}
	if s.uid >= 0 {
		if err := os.Chown(p, s.uid, s.gid); err != nil {
			return fmt.Errorf("scratch: %w", err)
		}
	}
	return nil
}

// Running reports whether the postmaster Start launched is still alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	exited := s.exited
	s.mu.Unlock()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// WaitPromoted waits until recovery has ended: the server accepts connections and
// pg_is_in_recovery() is false. If the server exits first, the error wraps ErrRecovery and
// carries the FATAL and PANIC lines of its log (for example "recovery ended before
// configured recovery target was reached", or WAL that ends before the end of the backup).
// It waits as long as ctx allows.
func (s *Server) WaitPromoted(ctx context.Context) error {
	s.mu.Lock()
	exited := s.exited
	s.mu.Unlock()
	if exited == nil {
		return errors.New("scratch: the server was not started")
	}
	var lastErr error
	for {
		select {
		case <-exited:
			return fmt.Errorf("%w: the scratch server stopped: %s", ErrRecovery, s.reason())
		default:
		}
		done, err := s.promoted(ctx)
		if done {
			return nil
		}
		if fe := (*fatalError)(nil); errors.As(err, &fe) {
			return fe.err
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-exited:
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("scratch: waiting for the end of recovery: %w (last: %v)", ctx.Err(), lastErr)
			}
			return fmt.Errorf("scratch: waiting for the end of recovery: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Server) promoted(ctx context.Context) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, s.ConnString(""))
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && (pe.Code == "28000" || pe.Code == "3D000") {
			// A role or database that does not exist: waiting longer will not help.
			return false, &fatalError{fmt.Errorf("scratch: connecting as %q: %w", s.cfg.User, err)}
		}
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var inRecovery bool
	if err := conn.QueryRow(cctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return false, err
	}
	return !inRecovery, nil
}

type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

// Recovered describes where recovery ended.
type Recovered struct {
	LSN       string    // pg_last_wal_replay_lsn(): the end of the last record replayed
	Time      time.Time // pg_last_xact_replay_timestamp(): the last transaction replayed (zero if none)
	Timeline  int       // the timeline the promoted server runs on
	Version   string    // server_version
	Databases []string  // the databases that accept connections
}

// Recovery reports where recovery ended and which databases accept connections; call it
// after WaitPromoted.
func (s *Server) Recovery(ctx context.Context) (Recovered, error) {
	var r Recovered
	conn, err := pgx.Connect(ctx, s.ConnString(""))
	if err != nil {
		return r, fmt.Errorf("scratch: connecting: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var lsn *string
	var ts *time.Time
	err = conn.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(),
		('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int, current_setting('server_version')`).Scan(&lsn, &ts, &r.Timeline, &r.Version)
	if err != nil {
		return r, fmt.Errorf("scratch: reading the end of recovery: %w", err)
	}
	if lsn != nil {
		r.LSN = *lsn
	}
	if ts != nil {
		r.Time = ts.UTC()
	}
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname")
	if err != nil {
		return r, fmt.Errorf("scratch: listing databases: %w", err)
	}
	r.Databases, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return r, fmt.Errorf("scratch: listing databases: %w", err)
	}
	return r, nil
}

// reason returns the FATAL and PANIC lines the server logged since Start, or its last lines.
func (s *Server) reason() string {
	f, err := os.Open(s.LogFile())
	if err != nil {
		return "no server log"
	}
	defer f.Close()
	if _, err := f.Seek(s.logStart, io.SeekStart); err != nil {
		return err.Error()
	}
	var fatal, last []string
	sc := bufio.NewScanner(io.LimitReader(f, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" {
			continue
		}
		last = append(last, l)
		if len(last) > 3 {
			last = last[1:]
		}
		if i := strings.Index(l, "FATAL:"); i >= 0 {
			fatal = append(fatal, strings.TrimSpace(l[i:]))
		} else if i := strings.Index(l, "PANIC:"); i >= 0 {
			fatal = append(fatal, strings.TrimSpace(l[i:]))
		}
	}
	if len(fatal) > 0 {
		if len(fatal) > 3 {
			fatal = fatal[:3]
		}
		return strings.Join(fatal, "; ")
	}
	if len(last) == 0 {
		return "the server log is empty (" + s.LogFile() + ")"
	}
	return strings.Join(last, "; ")
}

// Stop stops the server: fast shutdown (SIGINT), after 30 s immediate (SIGQUIT), then
// SIGKILL, and waits for the postmaster to exit. It also stops a postmaster of the data
// directory that this Server did not start. Stopping a stopped server is a no-op.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd != nil {
		steps := []struct {
			sig  syscall.Signal
			wait time.Duration
		}{{syscall.SIGINT, 30 * time.Second}, {syscall.SIGQUIT, 10 * time.Second}, {syscall.SIGKILL, 10 * time.Second}}
		isDone := func() bool {
			select {
			case <-exited:
				return true
			default:
				return false
			}
		}
		for _, st := range steps {
			if isDone() {
				break
			}
			_ = cmd.Process.Signal(st.sig)
			select {
			case <-exited:
			case <-time.After(st.wait):
			}
		}
		select {
		case <-exited:
		default:
			return fmt.Errorf("scratch: postmaster %d did not exit", cmd.Process.Pid)
		}
	}
	_, err := stopPostmaster(s.dataDir)
	return err
}

// Remove deletes the scratch directory, then the marker. Call it after Stop.
func (s *Server) Remove() error {
	if err := os.RemoveAll(s.cfg.Dir); err != nil {
		return fmt.Errorf("scratch: removing %s: %w", s.cfg.Dir, err)
	}
	return s.Keep()
}

// Keep deletes the marker only, leaving the (stopped) scratch directory for inspection:
// CleanStale will not remove it.
func (s *Server) Keep() error {
	if err := os.Remove(s.marker); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("scratch: %w", err)
	}
	return nil
}

// Close stops the server and removes its directory and marker (or, with keep, only the
// marker).
func (s *Server) Close(ctx context.Context, keep bool) error {
	err := s.Stop(ctx)
	if err != nil {
		return err // never remove the directory under a running server
	}
	if keep {
		return s.Keep()
	}
	return s.Remove()
}
