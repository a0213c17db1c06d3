package dump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
)

// Config is what one dump run needs.
type Config struct {
	Repo  *repo.Repo
	Codec repo.Codec
	// DSN is the libpq connection string or URI (empty: the libpq
	// environment); its database is where pgark's own queries and
	// pg_dumpall connect, and it is replaced by each dumped database's name
	// for pg_dump.
	DSN    string
	BinDir string // where pg_dump and pg_dumpall are; empty: PATH

	Databases       []string // to dump; empty: every database that accepts connections but template0
	Exclude         []string // not to dump
	Jobs            int      // databases dumped at once
	LockWaitTimeout time.Duration
	NoRolePasswords bool // pg_dumpall --no-role-passwords (roles without their passwords)

	Version  string    // pgark's
	FromHost string    // for the metadata
	Stderr   io.Writer // the tools' stderr is passed through here, each line prefixed
	Log      *slog.Logger
}

// ErrSelection is wrapped when the databases asked for cannot be dumped.
var ErrSelection = errors.New("database selection")

// ServerInfo is what a dump records about the server.
type ServerInfo struct {
	VersionNum int
	Version    string
	Databases  []Database // name, encoding and locale filled
	Dbname     string     // the database pgark's connection reached
}

// QueryServer reads the server's version and its databases.
func QueryServer(ctx context.Context, c *pgconn.PgConn) (ServerInfo, error) {
	si := ServerInfo{Dbname: c.ParameterStatus("database")}
	res, err := c.Exec(ctx, "SELECT current_setting('server_version_num'), current_setting('server_version'), current_database()").ReadAll()
	if err != nil {
		return si, fmt.Errorf("query server version: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 {
		return si, errors.New("query server version: unexpected result")
	}
	si.VersionNum, _ = strconv.Atoi(string(res[0].Rows[0][0]))
	si.Version, _, _ = strings.Cut(string(res[0].Rows[0][1]), " ")
	si.Dbname = string(res[0].Rows[0][2])
	prov, loc := "'c'", "''"
	switch {
	case si.VersionNum >= 170000:
		prov, loc = "datlocprovider", "coalesce(datlocale, '')"
	case si.VersionNum >= 150000:
		prov, loc = "datlocprovider", "coalesce(daticulocale, '')"
	}
	res, err = c.Exec(ctx, `SELECT datname, pg_encoding_to_char(encoding), datcollate, datctype, `+prov+`::text, `+loc+`
		FROM pg_database WHERE datallowconn AND datname <> 'template0' ORDER BY datname`).ReadAll()
	if err != nil {
		return si, fmt.Errorf("list databases: %w", err)
	}
	for _, r := range res[0].Rows {
		d := Database{Name: string(r[0]), Encoding: string(r[1]), Collate: string(r[2]), Ctype: string(r[3]), Locale: string(r[5])}
		switch string(r[4]) {
		case "i":
			d.LocaleProvider = "icu"
		case "b":
			d.LocaleProvider = "builtin"
		default:
			d.LocaleProvider = "libc"
		}
		si.Databases = append(si.Databases, d)
	}
	return si, nil
}

// SelectDatabases picks the databases to dump: the named ones (each must exist and
// accept connections), or all of them, less the excluded ones.
func SelectDatabases(all []Database, names, exclude []string) ([]Database, error) {
	var out []Database
	if len(names) == 0 {
		out = slices.Clone(all)
	} else {
		for _, n := range names {
			i := slices.IndexFunc(all, func(d Database) bool { return d.Name == n })
			if i < 0 {
				return nil, fmt.Errorf("%w: database %q does not exist on the server or does not accept connections", ErrSelection, n)
			}
			if !slices.ContainsFunc(out, func(d Database) bool { return d.Name == n }) {
				out = append(out, all[i])
			}
		}
	}
	out = slices.DeleteFunc(out, func(d Database) bool { return slices.Contains(exclude, d.Name) })
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no database left to dump", ErrSelection)
	}
	return out, nil
}

// Run takes one dump run into the repository: the globals, then every
// selected database (Jobs at once), each streamed from the tool's stdout
// through zstd and age into the store. The metadata object is written last,
// once every object is stored. On failure the run's objects are deleted
// (best effort), a failed.json marker records the error, and no metadata is
// written: the run is never listed as complete nor used as "latest".
func Run(ctx context.Context, c Config) (*Meta, error) {
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c.Jobs < 1 {
		c.Jobs = 1
	}
	pcfg, err := pgconn.ParseConfig(c.DSN)
	if err != nil {
		return nil, fmt.Errorf("%w: dsn: %v", ErrSelection, err)
	}
	conn, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.FromHost, err)
	}
	si, err := QueryServer(ctx, conn)
	conn.Close(context.Background())
	if err != nil {
		return nil, err
	}
	dbs, err := SelectDatabases(si.Databases, c.Databases, c.Exclude)
	if err != nil {
		return nil, err
	}
	pgDump, err := FindTool(ctx, "pg_dump", c.BinDir)
	if err != nil {
		return nil, err
	}
	pgDumpAll, err := FindTool(ctx, "pg_dumpall", c.BinDir)
	if err != nil {
		return nil, err
	}
	for _, t := range []Tool{pgDump, pgDumpAll} {
		if err := CheckClient(t, si.VersionNum, si.Version); err != nil {
			return nil, err
		}
	}
	start := time.Now().UTC()
	id, err := newRunID(ctx, c.Repo.Store, start)
	if err != nil {
		return nil, err
	}
	r := &runner{c: &c, log: log, id: id, pgDump: pgDump, stderr: &lockedWriter{w: c.Stderr}}
	m := &Meta{Format: MetaFormat, ID: id, Pgark: c.Version, FromHost: c.FromHost, StartTime: start,
		ServerVersion: si.Version, ServerVersionNum: si.VersionNum, PgDumpVersion: pgDump.Version,
		PgDumpMajor: pgDump.Major, NoRolePasswords: c.NoRolePasswords}
	log.Info("dump started", "dump", id, "server", si.Version, "pg_dump", pgDump.Version, "databases", len(dbs), "jobs", c.Jobs)
	if err := r.run(ctx, m, si, pgDumpAll, dbs); err != nil {
		r.fail(err)
		return nil, err
	}
	return m, nil
}

// newRunID picks an unused ID for the start time.
func newRunID(ctx context.Context, s storage.Store, t time.Time) (string, error) {
	errStop := errors.New("stop")
	for i := 0; i < 10; i++ {
		id := NewID(t.Add(time.Duration(i) * time.Second))
		found := false
		err := s.List(ctx, Prefix+id+"/", func(storage.ObjectInfo) error { found = true; return errStop })
		if err != nil && !errors.Is(err, errStop) {
			return "", fmt.Errorf("check dump id %s: %w", id, err)
		}
		if !found {
			return id, nil
		}
	}
	return "", errors.New("no free dump id near the start time")
}

type runner struct {
	c      *Config
	log    *slog.Logger
	id     string
	pgDump Tool
	stderr *lockedWriter

	mu      sync.Mutex
	written []string // keys stored, for cleanup
}

func (r *runner) run(ctx context.Context, m *Meta, si ServerInfo, pgDumpAll Tool, dbs []Database) error {
	c := r.c
	conn, err := ConnString(c.DSN, si.Dbname)
	if err != nil {
		return err
	}
	args := []string{"--globals-only", "--dbname=" + conn, "-l", si.Dbname}
	if c.NoRolePasswords {
		args = append(args, "--no-role-passwords")
	}
	if m.Globals, err = r.stream(ctx, pgDumpAll, args, GlobalsKey(r.id), "globals"); err != nil {
		return err
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan int)
	errs := make(chan error, len(dbs))
	var wg sync.WaitGroup
	for range min(c.Jobs, len(dbs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := r.database(ctx, &dbs[i]); err != nil {
					errs <- err
					cancel(err)
				}
			}
		}()
	}
feed:
	for i := range dbs {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err // the first failure; the others were cancelled by it
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}
	m.Databases = dbs
	m.RawBytes, m.StoredBytes = m.Globals.Bytes, m.Globals.StoredBytes
	for _, d := range dbs {
		m.RawBytes += d.Bytes
		m.StoredBytes += d.StoredBytes
	}
	// Every object must still be there before the run is declared complete.
	for _, k := range append([]string{m.Globals.Key}, keysOf(dbs)...) {
		if _, err := c.Repo.Store.Stat(ctx, k); err != nil {
			return fmt.Errorf("check %s before completing the dump: %w", k, err)
		}
	}
	m.EndTime = time.Now().UTC()
	if err := repo.PutSignedJSON(ctx, c.Repo.Store, MetaKey(r.id), m, c.Codec.Signer); err != nil {
		return fmt.Errorf("write dump metadata: %w", err)
	}
	r.log.Info("dump complete", "dump", r.id, "databases", len(dbs), "raw_bytes", m.RawBytes, "stored_bytes", m.StoredBytes)
	return nil
}

func keysOf(dbs []Database) []string {
	var k []string
	for _, d := range dbs {
		k = append(k, d.Key)
	}
	return k
}

func (r *runner) database(ctx context.Context, d *Database) error {
	c := r.c
	conn, err := ConnString(c.DSN, d.Name)
	if err != nil {
		return err
	}
	args := []string{"--format=custom", "--compress=0", "--dbname=" + conn}
	if c.LockWaitTimeout > 0 {
		args = append(args, fmt.Sprintf("--lock-wait-timeout=%d", c.LockWaitTimeout.Milliseconds()))
	}
	d.StartTime = time.Now().UTC()
	obj, err := r.stream(ctx, r.pgDump, args, DatabaseKey(r.id, d.Name), "database "+strconv.Quote(d.Name))
	if err != nil {
		return err
	}
	d.EndTime = time.Now().UTC()
	d.Object = obj
	return nil
}

// stream runs a tool and stores its stdout under key. The object is
// committed only when the tool exited 0 and all of its output was stored.
func (r *runner) stream(ctx context.Context, t Tool, args []string, key, what string) (Object, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	r.written = append(r.written, key)
	r.mu.Unlock()
	up := repo.StartUpload(ctx, r.c.Repo.Store, key, r.c.Codec)
	cmd := exec.CommandContext(ctx, t.Path, args...)
	errTail := &tail{max: 2048}
	pass := &prefixWriter{w: r.stderr, prefix: "[" + t.Name + ", " + what + "] "}
	cmd.Stderr = io.MultiWriter(pass, errTail)
	out, err := cmd.StdoutPipe()
	if err != nil {
		up.Abort(err)
		return Object{}, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		up.Abort(err)
		return Object{}, fmt.Errorf("%w: start %s: %v", ErrTool, t.Path, err)
	}
	_, copyErr := io.Copy(up, out)
	if copyErr != nil {
		cancel() // the store failed: stop the tool
	}
	waitErr := cmd.Wait()
	pass.flush()
	switch {
	case waitErr != nil && ctx.Err() != nil && copyErr == nil:
		up.Abort(ctx.Err())
		return Object{}, fmt.Errorf("%s of %s stopped: %w", t.Name, what, context.Cause(ctx))
	case waitErr != nil:
		up.Abort(waitErr)
		msg := errTail.String()
		if msg == "" {
			msg = "(no message)"
		}
		return Object{}, fmt.Errorf("%w: %s of %s failed (%v): %s", ErrTool, t.Name, what, waitErr, msg)
	case copyErr != nil:
		up.Abort(copyErr)
		return Object{}, fmt.Errorf("store %s of %s: %w", t.Name, what, copyErr)
	}
	res, err := up.Finish()
	if err != nil {
		return Object{}, err
	}
	r.log.Info("stored", "dump", r.id, "what", what, "bytes", res.Bytes, "stored_bytes", res.StoredBytes, "seconds", time.Since(start).Round(time.Millisecond).Seconds())
	return Object{Key: res.Key, Bytes: res.Bytes, SHA256: res.SHA256, StoredBytes: res.StoredBytes}, nil
}

// fail deletes what the run stored (best effort: a role may lack delete;
// the objects are never used without metadata, and retention removes them)
// and leaves a failed.json marker.
func (r *runner) fail(cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := r.c.Repo.Store
	for _, k := range r.written {
		if err := s.Delete(ctx, k); err != nil {
			r.log.Warn("could not delete a failed dump's object (it is never used; retention removes it)", "key", k, "err", err)
			break
		}
	}
	msg := cause.Error()
	if len(msg) > 2000 {
		msg = msg[:2000] + "..."
	}
	if err := repo.PutJSON(ctx, s, FailedKey(r.id), Failed{ID: r.id, Time: time.Now().UTC(), Error: msg}); err != nil {
		r.log.Warn("could not write the failed dump's marker", "dump", r.id, "err", err)
	}
}

// lockedWriter serialises the tools' stderr lines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	if l.w == nil {
		return len(p), nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
