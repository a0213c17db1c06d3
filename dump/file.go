package dump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// FileConfig is what dumping one database into a local file needs: a point-
// in-time restore dumps the scratch server it brought up at the target.
type FileConfig struct {
	Tool     Tool   // pg_dump, at least the server's major
	ConnStr  string // libpq connection string of the server, database included
	Database string // for messages and the metadata
	Path     string // the archive to create (pg_dump -Fc); must not exist
	// ServerVersion and ServerVersionNum describe the dumped server.
	ServerVersion    string
	ServerVersionNum int
	Stderr           io.Writer // pg_dump's stderr, each line prefixed
}

// DumpFile runs pg_dump -Fc of one database into a new file at Path (mode
// 0600): into a temporary file next to it, fsynced, then linked to its name,
// never replacing a file, so that an interrupted dump leaves nothing at
// Path. It returns the metadata that RestoreConfig (with File) reads:
// the database it holds and the pg_dump that wrote it. The libpq
// environment (PGHOST, PGSERVICE, PGOPTIONS...) is not passed to pg_dump:
// it names the live server, and the connection string says everything.
func DumpFile(ctx context.Context, c FileConfig) (*Meta, error) {
	if err := CheckClient(c.Tool, c.ServerVersionNum, c.ServerVersion); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(c.Path); err == nil {
		return nil, fmt.Errorf("%w: %s exists (never overwritten)", ErrTarget, c.Path)
	}
	dir := filepath.Dir(c.Path)
	f, err := os.CreateTemp(dir, ".pgark-tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create a temporary file next to %s: %w", c.Path, err)
	}
	tmp := f.Name()
	defer func() {
		f.Close()
		os.Remove(tmp)
	}()
	start := time.Now().UTC()
	cmd := exec.CommandContext(ctx, c.Tool.Path, "--format=custom", "--compress=0", "--dbname="+c.ConnStr)
	cmd.Env = withoutLibpqEnv(os.Environ())
	cmd.Stdout = f
	errTail := &tail{max: 2048}
	stderr := c.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	pass := &prefixWriter{w: stderr, prefix: "[pg_dump, database " + c.Database + "] "}
	cmd.Stderr = io.MultiWriter(pass, errTail)
	err = cmd.Run()
	pass.flush()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("pg_dump of database %q stopped: %w", c.Database, context.Cause(ctx))
		}
		msg := errTail.String()
		if msg == "" {
			msg = "(no message)"
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return nil, fmt.Errorf("%w: start %s: %v", ErrTool, c.Tool.Path, err)
		}
		return nil, fmt.Errorf("%w: pg_dump of database %q failed (%v): %s", ErrTool, c.Database, err, msg)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("write %s: %w", c.Path, err)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", c.Path, err)
	}
	if err := os.Link(tmp, c.Path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("%w: %s exists (never overwritten)", ErrTarget, c.Path)
		}
		return nil, fmt.Errorf("create %s: %w", c.Path, err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return nil, fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	return &Meta{
		Format: MetaFormat, ID: "file:" + filepath.Base(c.Path), StartTime: start, EndTime: time.Now().UTC(),
		ServerVersion: c.ServerVersion, ServerVersionNum: c.ServerVersionNum,
		PgDumpVersion: c.Tool.Version, PgDumpMajor: c.Tool.Major,
		Databases: []Database{{Name: c.Database, Object: Object{Bytes: st.Size()}}},
		RawBytes:  st.Size(),
	}, nil
}

// withoutLibpqEnv drops the libpq environment variables (PG*) from env.
func withoutLibpqEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		out = append(out, kv)
	}
	return out
}
