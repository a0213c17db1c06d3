package dump

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
)

// ErrTarget is wrapped when the target database is not in the state the
// restore needs (exists, or is not empty, without --clean).
var ErrTarget = errors.New("restore target refused")

// RestoreConfig is what restoring one database of a dump needs.
type RestoreConfig struct {
	Repo       *repo.Repo
	Identities *crypto.Identities
	Meta       *Meta
	Source     string // the database in the dump
	Target     string // the database to restore into (default Source)
	DSN        string // libpq connection string or URI of the target server (empty: the environment)
	BinDir     string // where pg_restore is; empty: PATH

	Create, Clean        bool
	Jobs                 int
	Tables, Schemas      []string // selective restore
	SchemaOnly, DataOnly bool
	NoOwner              bool
	TempDir              string // for --jobs (pg_restore needs a seekable file) and -L lists
	// File, when set, is a plaintext pg_dump -Fc archive on local disk to
	// restore instead of the dump object Meta names (a point-in-time
	// restore dumps the scratch server into it). Meta then describes it:
	// the database it holds and the pg_dump that wrote it.
	File string

	Stdout, Stderr io.Writer
	Log            *slog.Logger
}

type restorer struct {
	c       *RestoreConfig
	db      *Database
	tool    Tool
	file    string // decrypted archive, when Jobs > 1
	stderr  io.Writer
	log     *slog.Logger
	cleanup []string
	// targetRels are the relations of an existing target database, as
	// "schema name" (set by inspectTarget).
	targetRels map[string]bool
	// psql, when set, is the psql that restores pg_restore's script into
	// a server older than pg_restore (see script.go).
	psql string
}

func newRestorer(ctx context.Context, c *RestoreConfig) (*restorer, error) {
	x := &restorer{c: c, log: c.Log, stderr: c.Stderr}
	if x.log == nil {
		x.log = slog.New(slog.DiscardHandler)
	}
	if x.stderr == nil {
		x.stderr = io.Discard
	}
	if x.db = c.Meta.Database(c.Source); x.db == nil {
		var names []string
		for _, d := range c.Meta.Databases {
			names = append(names, d.Name)
		}
		return nil, fmt.Errorf("%w: dump %s holds no database %q (it holds: %s)", ErrSelection, c.Meta.ID, c.Source, strings.Join(names, ", "))
	}
	if c.Target == "" {
		c.Target = c.Source
	}
	x.file = c.File
	var err error
	if x.tool, err = FindTool(ctx, "pg_restore", c.BinDir); err != nil {
		return nil, err
	}
	if x.tool.Major < c.Meta.PgDumpMajor {
		return nil, fmt.Errorf("%w: %s cannot read an archive written by pg_dump %s; use pg_restore %d or newer (PATH or --pg-bin DIR)",
			ErrClientTooOld, x.tool, c.Meta.PgDumpVersion, c.Meta.PgDumpMajor)
	}
	return x, nil
}

func (x *restorer) close() {
	for _, f := range x.cleanup {
		os.Remove(f)
	}
}

// open returns the archive's verified plaintext.
func (x *restorer) open(ctx context.Context) (io.ReadCloser, error) {
	return x.c.Repo.OpenVerified(ctx, x.db.Key, x.db.Bytes, x.db.SHA256, x.c.Identities)
}

// decryptToTemp writes the verified archive to a private temporary file.
func (x *restorer) decryptToTemp(ctx context.Context) error {
	if x.file != "" {
		return nil // already a local file
	}
	f, err := os.CreateTemp(x.c.TempDir, "pgark-dump-*.dump")
	if err != nil {
		return fmt.Errorf("temporary file for pg_restore --jobs: %w", err)
	}
	x.cleanup = append(x.cleanup, f.Name())
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	rc, err := x.open(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.Copy(f, rc); err != nil {
		return fmt.Errorf("decrypt %s to %s: %w", x.db.Key, f.Name(), err)
	}
	x.file = f.Name()
	x.log.Info("archive decrypted to a temporary file for parallel restore", "file", f.Name(), "bytes", x.db.Bytes)
	return f.Close()
}

// pgRestore runs pg_restore on the archive (the temporary file, or the
// stream on its stdin). With whole, the stream is read to its end after
// pg_restore exits, so that its SHA-256 and size are checked.
func (x *restorer) pgRestore(ctx context.Context, args []string, stdout io.Writer, whole bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var rc io.ReadCloser
	if x.file != "" {
		args = append(args, x.file)
	} else {
		var err error
		if rc, err = x.open(ctx); err != nil {
			return err
		}
		defer rc.Close()
	}
	if x.psql != "" && slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--dbname=") }) {
		sargs, dbname, dropped := scriptArgs(args)
		if len(dropped) > 0 {
			x.log.Warn("restoring through psql: one session, --jobs does not apply")
		}
		var in io.Reader
		if rc != nil {
			in = rc
		}
		if err := x.scriptRestore(ctx, sargs, dbname, in); err != nil {
			return err
		}
		if rc != nil && whole {
			if _, err := io.Copy(io.Discard, rc); err != nil { // check the rest: digest and size
				return fmt.Errorf("reading the archive %s failed, the restore is incomplete: %w", x.db.Key, err)
			}
		}
		return nil
	}
	cmd := exec.CommandContext(ctx, x.tool.Path, args...)
	errTail := &tail{max: 2048}
	pass := &prefixWriter{w: x.stderr, prefix: "[pg_restore] "}
	cmd.Stderr = io.MultiWriter(pass, errTail)
	cmd.Stdout = stdout
	var in io.WriteCloser
	if rc != nil {
		var err error
		if in, err = cmd.StdinPipe(); err != nil {
			return err
		}
	}
	x.log.Debug("running pg_restore", "args", redactArgs(args))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%w: start %s: %v", ErrTool, x.tool.Path, err)
	}
	copied := make(chan error, 1)
	if rc != nil {
		go func() {
			_, err := io.Copy(in, rc)
			in.Close()
			if err != nil && isClosedPipe(err) {
				err = nil
				if whole {
					_, err = io.Copy(io.Discard, rc) // check the rest: digest and size
				}
			}
			if err != nil {
				cancel() // a damaged archive: stop pg_restore at once
			}
			copied <- err
		}()
	} else {
		copied <- nil
	}
	waitErr := cmd.Wait()
	pass.flush()
	if err := <-copied; err != nil {
		return fmt.Errorf("reading the archive %s failed, the restore is incomplete: %w", x.db.Key, err)
	}
	if waitErr != nil {
		msg := errTail.String()
		if msg == "" {
			msg = "(no message)"
		}
		return fmt.Errorf("%w: pg_restore failed (%v): %s", ErrTool, waitErr, msg)
	}
	return nil
}

func isClosedPipe(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}

// redactArgs hides connection strings (they may hold a password).
func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.HasPrefix(a, "--dbname=") {
			a = "--dbname=..."
		}
		out[i] = a
	}
	return out
}

// toc reads the archive's table of contents with dependencies (all
// entries: pg_restore --list --verbose ignores selections).
func (x *restorer) toc(ctx context.Context) (string, error) {
	return x.list(ctx, "--verbose")
}

// list runs pg_restore --list with extra options.
func (x *restorer) list(ctx context.Context, extra ...string) (string, error) {
	var out bytes.Buffer
	if err := x.pgRestore(ctx, append([]string{"--list"}, extra...), &out, false); err != nil {
		return "", err
	}
	return out.String(), nil
}

// maintenance returns the connection settings of the database pg_restore
// --create and pgark's own statements connect to: the DSN's, else postgres.
func (x *restorer) maintenance() (*pgconn.Config, string, error) {
	cfg, err := pgconn.ParseConfig(x.c.DSN)
	if err != nil {
		return nil, "", fmt.Errorf("%w: dsn: %v", ErrSelection, err)
	}
	db := cfg.Database
	if db == "" || db == x.c.Target {
		db = "postgres"
	}
	if db == x.c.Target {
		db = "template1"
	}
	cfg.Database = db
	return cfg, db, nil
}

func connect(ctx context.Context, cfg *pgconn.Config, db string) (*pgconn.PgConn, error) {
	c := cfg.Copy()
	c.Database = db
	conn, err := pgconn.ConnectConfig(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("connect to database %q: %w", db, err)
	}
	return conn, nil
}

func queryStrings(ctx context.Context, c *pgconn.PgConn, sql string, args ...string) ([][]string, error) {
	params := make([][]byte, len(args))
	for i, a := range args {
		params[i] = []byte(a)
	}
	res := c.ExecParams(ctx, sql, params, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, res.Err
	}
	var out [][]string
	for _, r := range res.Rows {
		row := make([]string, len(r))
		for i, v := range r {
			row[i] = string(v)
		}
		out = append(out, row)
	}
	return out, nil
}

func execAll(ctx context.Context, c *pgconn.PgConn, steps ...string) error {
	for _, s := range steps {
		if _, err := c.Exec(ctx, s).ReadAll(); err != nil {
			return fmt.Errorf("%s: %w", oneLine(s), err)
		}
	}
	return nil
}

const userObjectsSQL = `SELECT
 (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%')
 + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
 + (SELECT count(*) FROM pg_namespace
   WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp%')
 + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')`

// Restore restores one database of a dump. See the README ("Logical
// dumps") for the rules: --create recreates it with pg_restore --create
// (under a new name: with the original encoding and locale, then its
// properties under the new name); otherwise the target must exist and be
// empty unless --clean or a selective restore. A database that the restore
// creates is dropped again when the restore fails.
func Restore(ctx context.Context, c RestoreConfig) error {
	x, err := newRestorer(ctx, &c)
	if err != nil {
		return err
	}
	defer x.close()
	maint, maintDB, err := x.maintenance()
	if err != nil {
		return err
	}
	mconn, err := connect(ctx, maint, maintDB)
	if err != nil {
		return err
	}
	defer mconn.Close(context.Background())
	targetExists, err := x.checkTarget(ctx, mconn)
	if err != nil {
		return err
	}
	if psql, ok := needsScript(x.tool, mconn); ok {
		x.psql = psql
		x.log.Info("pg_restore is newer than the server: restoring its script through psql, without the settings the server does not know",
			"pg_restore", x.tool.Version, "server", mconn.ParameterStatus("server_version"))
	}
	selective := len(c.Tables) > 0 || len(c.Schemas) > 0
	// The target's schemas, for a selective restore (a new database has public).
	targetSchemas := []string{"public"}
	if !c.Create {
		if targetSchemas, err = x.inspectTarget(ctx, maint, selective); err != nil {
			return err
		}
	}
	if c.Jobs > 1 {
		if err := x.decryptToTemp(ctx); err != nil {
			return err
		}
	}
	rename := c.Create && c.Target != c.Source
	args, sel, err := x.restoreArgs(ctx, selective, targetSchemas, rename)
	if err != nil {
		return err
	}
	if sel != nil && !c.Create && !c.Clean && !c.DataOnly {
		if err := x.refuseExisting(sel); err != nil {
			return err
		}
	}
	switch {
	case rename:
		err = x.restoreRenamed(ctx, mconn, maint, args, targetExists)
	case c.Create:
		err = x.restoreCreated(ctx, mconn, maintDB, args)
	default:
		err = x.restoreInto(ctx, args)
	}
	if err != nil {
		return err
	}
	x.log.Info("database restored", "dump", c.Meta.ID, "database", c.Source, "into", c.Target, "selective", selective)
	return nil
}

// checkTarget looks the target database up on the maintenance connection
// and checks that the mode fits: --create needs it absent (unless
// --clean), the other modes need it present. It reports whether it exists.
func (x *restorer) checkTarget(ctx context.Context, mconn *pgconn.PgConn) (bool, error) {
	c := x.c
	rows, err := queryStrings(ctx, mconn, "SELECT 1 FROM pg_database WHERE datname = $1", c.Target)
	if err != nil {
		return false, fmt.Errorf("look for database %q: %w", c.Target, err)
	}
	exists := len(rows) > 0
	switch {
	case c.Create && exists && !c.Clean:
		return false, fmt.Errorf("%w: database %q exists; --create needs it absent (add --clean to drop and recreate it)", ErrTarget, c.Target)
	case !c.Create && !exists:
		return false, fmt.Errorf("%w: database %q does not exist; create it, or add --create", ErrTarget, c.Target)
	}
	return exists, nil
}

// inspectTarget connects to the existing target database, checks that it
// is empty unless --clean or a selective restore lets objects be there,
// and returns its schemas.
func (x *restorer) inspectTarget(ctx context.Context, maint *pgconn.Config, selective bool) ([]string, error) {
	c := x.c
	tconn, err := connect(ctx, maint, c.Target)
	if err != nil {
		return nil, err
	}
	defer tconn.Close(context.Background())
	if !c.Clean && !selective {
		n, err := queryStrings(ctx, tconn, userObjectsSQL)
		if err != nil {
			return nil, fmt.Errorf("check that database %q is empty: %w", c.Target, err)
		}
		if len(n) == 1 && n[0][0] != "0" {
			return nil, fmt.Errorf("%w: database %q is not empty (%s objects); restore into an empty database, or add --clean (drops the archive's objects first) or --create", ErrTarget, c.Target, n[0][0])
		}
	}
	rels, err := queryStrings(ctx, tconn, "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'i', 'I')")
	if err != nil {
		return nil, fmt.Errorf("list the relations of database %q: %w", c.Target, err)
	}
	x.targetRels = map[string]bool{}
	for _, r := range rels {
		x.targetRels[r[0]+" "+r[1]] = true
	}
	rows, err := queryStrings(ctx, tconn, "SELECT nspname FROM pg_namespace")
	if err != nil {
		return nil, err
	}
	var schemas []string
	for _, r := range rows {
		schemas = append(schemas, r[0])
	}
	return schemas, nil
}

// restoreArgs returns pg_restore's options that every mode shares (the
// connection and --create are the modes'); for a selective restore it
// writes the -L list that they name.
func (x *restorer) restoreArgs(ctx context.Context, selective bool, targetSchemas []string, rename bool) ([]string, *Selection, error) {
	c := x.c
	var listFile string
	var sel *Selection
	if selective {
		var err error
		if sel, err = x.selection(ctx, targetSchemas, c.Create && !rename, c.Create); err != nil {
			return nil, nil, err
		}
		if listFile, err = x.writeTemp("pgark-list-*.txt", sel.List()); err != nil {
			return nil, nil, err
		}
	}
	args := []string{"--exit-on-error"}
	if c.Jobs > 1 {
		args = append(args, fmt.Sprintf("--jobs=%d", c.Jobs))
	} else if selective && !c.Create {
		// Into an existing database: all or nothing.
		args = append(args, "--single-transaction")
	}
	if listFile != "" {
		args = append(args, "--use-list="+listFile)
	}
	if c.SchemaOnly {
		args = append(args, "--schema-only")
	}
	if c.DataOnly {
		args = append(args, "--data-only")
	}
	if c.NoOwner {
		args = append(args, "--no-owner")
	}
	return args, sel, nil
}

// refuseExisting refuses a selective restore into an existing database
// when a table it would create is already there: pg_restore would stop on
// it, and replacing a live table is a decision for --clean.
func (x *restorer) refuseExisting(sel *Selection) error {
	for _, e := range sel.Entries {
		if e.Desc != "TABLE" {
			continue
		}
		if rel, ok := x.inTarget(e); ok {
			return fmt.Errorf("%w: table %s exists in database %q (never overwritten): add --clean to replace it, restore into another database with --create --target-db NAME, or rename the existing table first",
				ErrTarget, rel, x.c.Target)
		}
	}
	return nil
}

// inTarget says whether a relation entry of the archive names a relation
// the existing target database has, and which ("schema.name"). Rest is
// "schema name owner": names are not quoted there, so the longest known
// relation that fits wins.
func (x *restorer) inTarget(e Entry) (string, bool) {
	best := ""
	for rel := range x.targetRels {
		if (strings.HasPrefix(e.Rest, rel+" ") || e.Rest == rel) && len(rel) > len(best) {
			best = rel
		}
	}
	if best == "" {
		return "", false
	}
	schema, name, _ := strings.Cut(best, " ")
	return schema + "." + name, true
}

// restoreRenamed is --create under another name: pgark creates the target
// with the source's encoding and locale, pg_restore fills it, and the
// source database's own properties are applied to it. Once created, the
// target is dropped again when a later step fails.
func (x *restorer) restoreRenamed(ctx context.Context, mconn *pgconn.PgConn, maint *pgconn.Config, args []string, targetExists bool) error {
	c := x.c
	ds, err := x.databaseScript(ctx)
	if err != nil {
		return err
	}
	if c.Clean && targetExists {
		if err := execAll(ctx, mconn, "DROP DATABASE "+QuoteIdent(c.Target)); err != nil {
			return fmt.Errorf("--clean: %w", err)
		}
	}
	if err := execAll(ctx, mconn, append(setupFor(mconn, ds.Setup), ds.Create)...); err != nil {
		return fmt.Errorf("create database %q as %q was: %w", c.Target, c.Source, err)
	}
	x.log.Info("database created with the original encoding and locale", "database", c.Target, "from", c.Source)
	if err := x.fillRenamed(ctx, maint, args, ds); err != nil {
		return x.dropCreated(mconn, err)
	}
	return nil
}

// fillRenamed runs pg_restore into the database restoreRenamed created,
// then applies the source database's properties to it.
func (x *restorer) fillRenamed(ctx context.Context, maint *pgconn.Config, args []string, ds *DatabaseScript) error {
	c := x.c
	conn, err := ConnString(c.DSN, c.Target)
	if err != nil {
		return err
	}
	if err := x.pgRestore(ctx, append(args, "--dbname="+conn), nil, true); err != nil {
		return err
	}
	// In the new database, as pg_restore --create does after \connect:
	// shared catalogs (the comment) take the bytes in its encoding.
	tconn, err := connect(ctx, maint, c.Target)
	if err != nil {
		return err
	}
	err = execAll(ctx, tconn, append(setupFor(tconn, ds.Setup), ds.Props...)...)
	tconn.Close(context.Background())
	if err != nil {
		return fmt.Errorf("database properties of %q applied to %q: %w", c.Source, c.Target, err)
	}
	return nil
}

// restoreCreated is --create under the database's own name: pg_restore
// creates it (after dropping it with --clean), connected to the
// maintenance database; it is dropped again when the restore fails.
func (x *restorer) restoreCreated(ctx context.Context, mconn *pgconn.PgConn, maintDB string, args []string) error {
	conn, err := ConnString(x.c.DSN, maintDB)
	if err != nil {
		return err
	}
	args = append(args, "--create", "--dbname="+conn)
	if x.c.Clean {
		args = append(args, "--clean", "--if-exists")
	}
	if err := x.pgRestore(ctx, args, nil, true); err != nil {
		return x.dropCreated(mconn, err)
	}
	return nil
}

// restoreInto restores into the existing target database.
func (x *restorer) restoreInto(ctx context.Context, args []string) error {
	conn, err := ConnString(x.c.DSN, x.c.Target)
	if err != nil {
		return err
	}
	args = append(args, "--dbname="+conn)
	if x.c.Clean {
		args = append(args, "--clean", "--if-exists")
	}
	return x.pgRestore(ctx, args, nil, true)
}

// dropCreated drops the target database, which this restore created and
// cause made fail, and says in the error whether it is gone.
func (x *restorer) dropCreated(mconn *pgconn.PgConn, cause error) error {
	dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := execAll(dctx, mconn, "DROP DATABASE IF EXISTS "+QuoteIdent(x.c.Target)); err != nil {
		x.log.Warn("could not drop the database the failed restore created", "database", x.c.Target, "err", err)
		return fmt.Errorf("%w (database %q, created by this restore, is left behind: drop it)", cause, x.c.Target)
	}
	return fmt.Errorf("%w (database %q, created by this restore, was dropped again)", cause, x.c.Target)
}

func (x *restorer) writeTemp(pattern, content string) (string, error) {
	f, err := os.CreateTemp(x.c.TempDir, pattern)
	if err != nil {
		return "", err
	}
	x.cleanup = append(x.cleanup, f.Name())
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return "", err
	}
	return f.Name(), f.Close()
}

// databaseScript asks pg_restore for the SQL of the database's own entries
// and renames it for the target.
func (x *restorer) databaseScript(ctx context.Context) (*DatabaseScript, error) {
	text, err := x.toc(ctx)
	if err != nil {
		return nil, err
	}
	toc, err := ParseTOC(text)
	if err != nil {
		return nil, err
	}
	sel := SelectEntries(toc, nil, SelectOptions{Database: true})
	var only []Entry
	for _, e := range sel.Entries {
		if e.Desc == "DATABASE" || e.Desc == "DATABASE PROPERTIES" || e.Desc == "COMMENT" || e.Desc == "ACL" || e.Desc == "SECURITY LABEL" {
			only = append(only, e)
		}
	}
	list, err := x.writeTemp("pgark-list-*.txt", (&Selection{Entries: only}).List())
	if err != nil {
		return nil, err
	}
	args := []string{"--create", "--file=-", "--use-list=" + list}
	if x.c.NoOwner {
		args = append(args, "--no-owner")
	}
	var out bytes.Buffer
	if err := x.pgRestore(ctx, args, &out, false); err != nil {
		return nil, err
	}
	return ParseDatabaseScript(out.String(), x.c.Source, x.c.Target)
}

// selection builds the -L list of a selective restore.
func (x *restorer) selection(ctx context.Context, targetSchemas []string, withDatabase, newDB bool) (*Selection, error) {
	text, err := x.toc(ctx)
	if err != nil {
		return nil, err
	}
	toc, err := ParseTOC(text)
	if err != nil {
		return nil, err
	}
	seeds := map[int]bool{}
	add := func(extra ...string) (int, error) {
		out, err := x.list(ctx, extra...)
		if err != nil {
			return 0, err
		}
		ids, err := IDs(out)
		if err != nil {
			return 0, err
		}
		n := 0
		for id := range ids {
			if !seeds[id] {
				seeds[id] = true
				n++
			}
		}
		return n, nil
	}
	for _, t := range x.c.Tables {
		schema, name := SplitQualified(t)
		args := []string{"--table=" + name}
		if schema != "" {
			args = append(args, "--schema="+schema)
		}
		if n, err := add(args...); err != nil {
			return nil, err
		} else if n == 0 {
			return nil, fmt.Errorf("%w: no table, view or sequence %q in the dump of database %q", ErrSelection, t, x.c.Source)
		}
	}
	for _, s := range x.c.Schemas {
		n, err := add("--schema=" + s)
		if err != nil {
			return nil, err
		}
		for id := range SchemaEntries(toc, []string{s}) {
			if !slices.Contains(targetSchemas, s) {
				seeds[id] = true
			}
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("%w: no schema %q in the dump of database %q", ErrSelection, s, x.c.Source)
		}
	}
	need := func(e Entry) bool {
		_, exists := SchemaName(e, targetSchemas)
		return !exists
	}
	var inTarget func(Entry) bool
	if x.targetRels != nil {
		inTarget = func(e Entry) bool { _, ok := x.inTarget(e); return ok }
	}
	sel := SelectEntries(toc, seeds, SelectOptions{NeedSchema: need, Database: withDatabase, TriggerFunctions: newDB, InTarget: inTarget})
	for _, e := range sel.Skipped {
		x.log.Warn("FK constraint not restored: it references a table that this selective restore does not bring back", "entry", e.Line)
	}
	return sel, nil
}

// SplitQualified splits "schema.table" (either part may be double-quoted;
// a quoted part keeps dots) into its parts; no dot: no schema.
func SplitQualified(s string) (schema, name string) {
	var parts []string
	var cur strings.Builder
	quoted := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' && quoted && i+1 < len(s) && s[i+1] == '"':
			cur.WriteByte('"')
			i++
		case c == '"':
			quoted = !quoted
		case c == '.' && !quoted && len(parts) == 0:
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	parts = append(parts, cur.String())
	if len(parts) == 1 {
		return "", parts[0]
	}
	return parts[0], parts[1]
}

// ListTOC prints the archive's table of contents (pg_restore --list), or,
// for a selective restore, the -L list it would use.
func ListTOC(ctx context.Context, c RestoreConfig, w io.Writer) error {
	x, err := newRestorer(ctx, &c)
	if err != nil {
		return err
	}
	defer x.close()
	if len(c.Tables) == 0 && len(c.Schemas) == 0 {
		return x.pgRestore(ctx, []string{"--list"}, w, false)
	}
	sel, err := x.selection(ctx, []string{"public"}, c.Create && (c.Target == "" || c.Target == c.Source), c.Create)
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, sel.List())
	return err
}

// WriteFile writes an object's verified plaintext to path, which must not
// exist: into a temporary file in the same directory (mode 0600), fsynced,
// then linked to its name (never replacing a file) and the directory
// fsynced. An interrupted or failed write leaves nothing at path.
func WriteFile(ctx context.Context, r *repo.Repo, ids *crypto.Identities, o Object, path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%w: %s exists (never overwritten)", ErrTarget, path)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".pgark-tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	defer f.Close()
	rc, err := r.OpenVerified(ctx, o.Key, o.Bytes, o.SHA256, ids)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.Copy(f, rc); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s exists (never overwritten)", ErrTarget, path)
		}
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
