package dump

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// pg_restore 17 and later start every script and session with
// "SET transaction_timeout = 0;", which a server older than 17 refuses
// ("unrecognized configuration parameter"), even for an archive that
// pg_dump took from a server of that older major. When the newest client
// tools at hand are newer than the server restored into, pgark runs
// pg_restore in script mode (--file=-) and feeds the script to psql of the
// same directory, without that one line; everything else is unchanged.

// needsScript says whether restoring with tool into the server behind conn
// must go through psql, and returns psql's path (next to pg_restore).
func needsScript(tool Tool, conn *pgconn.PgConn) (string, bool) {
	serverMajor := ServerMajor(conn)
	if serverMajor == 0 || serverMajor >= 17 || tool.Major < 17 {
		return "", false
	}
	psql := filepath.Join(filepath.Dir(tool.Path), "psql")
	if st, err := os.Stat(psql); err != nil || st.Mode()&0o111 == 0 {
		return "", false
	}
	return psql, true
}

// scriptArgs turns pg_restore's arguments for a direct restore into those of
// script mode, and returns the connection string psql must use.
func scriptArgs(args []string) (out []string, dbname string, dropped []string) {
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "--dbname="):
			dbname = strings.TrimPrefix(a, "--dbname=")
		case strings.HasPrefix(a, "--jobs="):
			dropped = append(dropped, a) // a script is one session
		default:
			out = append(out, a)
		}
	}
	return append(out, "--file=-"), dbname, dropped
}

// filterScript copies a pg_restore script from r to w without the lines
// that set transaction_timeout, outside COPY data (a data row is never
// touched, whatever it holds). Lines of any length stream through.
func filterScript(w io.Writer, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	inCopy, atStart := false, true
	for {
		chunk, err := br.ReadSlice('\n')
		whole := err == nil // chunk ends a line
		if len(chunk) > 0 {
			drop := false
			if atStart && whole {
				line := chunk
				switch {
				case inCopy:
					if bytes.Equal(line, []byte("\\.\n")) {
						inCopy = false
					}
				case bytes.HasPrefix(line, []byte("COPY ")) && bytes.HasSuffix(line, []byte(" FROM stdin;\n")):
					inCopy = true
				case bytes.HasPrefix(line, []byte("SET transaction_timeout ")) || bytes.HasPrefix(line, []byte("SET transaction_timeout=")):
					drop = true
				}
			}
			if !drop {
				if _, werr := w.Write(chunk); werr != nil {
					return werr
				}
			}
			atStart = whole
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return nil
		default:
			return err
		}
	}
}

// scriptRestore runs pg_restore in script mode (args already converted)
// with its script filtered into psql connected to dbname. in is the
// archive on stdin (nil when args name a file).
func (x *restorer) scriptRestore(ctx context.Context, args []string, dbname string, in io.Reader) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	restoreCmd := exec.CommandContext(ctx, x.tool.Path, args...)
	restoreCmd.Stdin = in
	rTail := &tail{max: 2048}
	rPass := &prefixWriter{w: x.stderr, prefix: "[pg_restore] "}
	restoreCmd.Stderr = io.MultiWriter(rPass, rTail)
	script, err := restoreCmd.StdoutPipe()
	if err != nil {
		return err
	}
	psqlCmd := exec.CommandContext(ctx, x.psql, "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--dbname="+dbname)
	psqlCmd.Stdout = io.Discard
	pTail := &tail{max: 2048}
	pPass := &prefixWriter{w: x.stderr, prefix: "[psql] "}
	psqlCmd.Stderr = io.MultiWriter(pPass, pTail)
	feed, err := psqlCmd.StdinPipe()
	if err != nil {
		return err
	}
	x.log.Debug("running pg_restore into psql", "args", redactArgs(args), "psql", x.psql)
	if err := psqlCmd.Start(); err != nil {
		return fmt.Errorf("%w: start %s: %v", ErrTool, x.psql, err)
	}
	if err := restoreCmd.Start(); err != nil {
		feed.Close()
		psqlCmd.Wait()
		return fmt.Errorf("%w: start %s: %v", ErrTool, x.tool.Path, err)
	}
	ferr := filterScript(feed, script)
	feed.Close()
	if ferr != nil {
		cancel() // psql stopped (ON_ERROR_STOP): stop pg_restore too
	}
	rErr := restoreCmd.Wait()
	pErr := psqlCmd.Wait()
	rPass.flush()
	pPass.flush()
	msg := func(t *tail) string {
		if s := t.String(); s != "" {
			return s
		}
		return "(no message)"
	}
	switch {
	case pErr != nil:
		return fmt.Errorf("%w: psql failed (%v): %s", ErrTool, pErr, msg(pTail))
	case rErr != nil:
		return fmt.Errorf("%w: pg_restore failed (%v): %s", ErrTool, rErr, msg(rTail))
	}
	return nil
}

// ServerMajor is the major version of the server behind conn (0 when it
// does not say).
func ServerMajor(conn *pgconn.PgConn) int {
	if v, err := strconv.Atoi(conn.ParameterStatus("server_version_num")); err == nil {
		return v / 10000
	}
	if f := strings.Fields(conn.ParameterStatus("server_version")); len(f) > 0 {
		m, _ := strconv.Atoi(strings.Split(f[0], ".")[0])
		return m
	}
	return 0
}

// unknownSetting says whether a setup statement of a newer client's
// script sets what a server of major does not know (transaction_timeout
// before 17): such a statement is left out.
func unknownSetting(sql string, major int) bool {
	sql = strings.TrimSpace(sql)
	return major > 0 && major < 17 && (strings.HasPrefix(sql, "SET transaction_timeout ") || strings.HasPrefix(sql, "SET transaction_timeout="))
}

// setupFor returns the setup statements that the server behind conn knows.
func setupFor(conn *pgconn.PgConn, setup []string) []string {
	major := ServerMajor(conn)
	var out []string
	for _, s := range setup {
		if !unknownSetting(s, major) {
			out = append(out, s)
		}
	}
	return out
}
