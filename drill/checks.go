package drill

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/wal"
)

// The check names, in report order.
const (
	CheckVerifyBackup = "verify_backup"
	CheckRecovery     = "recovery"
	CheckTarget       = "target_reached"
	CheckConnect      = "databases_connect"
	CheckSQL          = "check_sql"
	CheckAmCheck      = "amcheck"
)

// toolOutput runs a tool and returns its combined output, trimmed to a few lines.
func toolOutput(ctx context.Context, path string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return lastLines(out.String(), 5), err
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return storage.OneLine(strings.Join(lines, "; "))
}

// VerifyBackup runs `pg_verifybackup -n` on the restored data directory (before the
// server's first start: it checks every file against the backup_manifest). tool "" skips.
func VerifyBackup(ctx context.Context, tool, dataDir string) Check {
	c := Check{Name: CheckVerifyBackup}
	if tool == "" {
		c.Status, c.Message = Skipped, "no pg_verifybackup of the backup's major found"
		return c
	}
	out, err := toolOutput(ctx, tool, "-n", "-q", dataDir)
	if err != nil {
		c.Status, c.Message = Failed, fmt.Sprintf("pg_verifybackup -n: %v: %s", err, out)
		return c
	}
	c.Status, c.Message = Passed, "pg_verifybackup -n: every file matches the backup manifest"
	return c
}

// ReachedEnd checks that recovery without a target reached the end of the archive:
// reached is the end of the last record replayed, lastSeg the newest archived segment on
// the timeline recovery followed. Recovery that stopped more than one segment before it
// stopped at a missing or unreadable segment, which it names.
func ReachedEnd(reached wal.LSN, tli uint32, lastSeg uint64, segSize uint32) Check {
	c := Check{Name: CheckTarget}
	if reached == 0 {
		c.Status, c.Message = Failed, "the server reports no replayed WAL"
		return c
	}
	seg := uint64(reached-1) / uint64(segSize)
	if seg+1 >= lastSeg {
		c.Status, c.Message = Passed, fmt.Sprintf("recovery reached the end of the archive (LSN %s, archive ends with segment %s)", reached, wal.SegmentFileName(tli, lastSeg, segSize))
		return c
	}
	c.Status = Failed
	c.Message = fmt.Sprintf("recovery stopped at LSN %s in segment %s, but the archive goes on to %s: segment %s is missing or unreadable",
		reached, wal.SegmentFileName(tli, seg, segSize), wal.SegmentFileName(tli, lastSeg, segSize), wal.SegmentFileName(tli, seg+1, segSize))
	return c
}

// ConnectAll connects to each database (through connString(db)) and runs SELECT 1.
func ConnectAll(ctx context.Context, dbs []string, connString func(db string) string) Check {
	c := Check{Name: CheckConnect}
	if len(dbs) == 0 {
		c.Status, c.Message = Failed, "no database accepts connections"
		return c
	}
	var bad []string
	for _, db := range dbs {
		conn, err := pgx.Connect(ctx, connString(db))
		if err == nil {
			var one int
			err = conn.QueryRow(ctx, "SELECT 1").Scan(&one)
			conn.Close(context.WithoutCancel(ctx))
		}
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %s", db, storage.OneLine(err.Error())))
		}
	}
	if len(bad) > 0 {
		c.Status, c.Message = Failed, "cannot connect: "+strings.Join(bad, "; ")
		return c
	}
	c.Status, c.Message = Passed, fmt.Sprintf("%d databases accept connections (%s)", len(dbs), strings.Join(dbs, ", "))
	return c
}

// Query is one query of a --check-sql file.
type Query struct {
	Database string // "" for the default database
	SQL      string
	Line     int // where it starts in the file
}

// ParseCheckSQL reads a check file: SQL queries, each ending with a semicolon at the end
// of a line, each returning one row of one boolean column. A line `-- database: NAME`
// sends the queries after it to that database (default: postgres). Other comment lines
// and blank lines are ignored.
func ParseCheckSQL(r io.Reader) ([]Query, error) {
	var out []Query
	var cur strings.Builder
	db, start := "", 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for ln := 1; sc.Scan(); ln++ {
		line := sc.Text()
		t := strings.TrimSpace(line)
		if cur.Len() == 0 {
			if t == "" {
				continue
			}
			if rest, ok := strings.CutPrefix(t, "--"); ok {
				if name, ok := strings.CutPrefix(strings.TrimSpace(rest), "database:"); ok {
					if db = strings.TrimSpace(name); db == "" {
						return nil, fmt.Errorf("line %d: database: without a name", ln)
					}
				}
				continue
			}
			start = ln
		}
		cur.WriteString(line)
		cur.WriteString("\n")
		if strings.HasSuffix(t, ";") {
			out = append(out, Query{Database: db, SQL: strings.TrimSpace(cur.String()), Line: start})
			cur.Reset()
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("line %d: the last query does not end with a semicolon", start)
	}
	if len(out) == 0 {
		return nil, errors.New("no query in the file")
	}
	return out, nil
}

// RunCheckSQL runs the queries; each must return exactly one row holding true.
func RunCheckSQL(ctx context.Context, queries []Query, connString func(db string) string) Check {
	c := Check{Name: CheckSQL}
	conns := map[string]*pgx.Conn{}
	defer func() {
		for _, conn := range conns {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	var bad []string
	for _, q := range queries {
		conn := conns[q.Database]
		if conn == nil {
			var err error
			if conn, err = pgx.Connect(ctx, connString(q.Database)); err != nil {
				bad = append(bad, fmt.Sprintf("line %d: connecting to %s: %s", q.Line, orDefault(q.Database), storage.OneLine(err.Error())))
				continue
			}
			conns[q.Database] = conn
		}
		if err := oneTrue(ctx, conn, q.SQL); err != nil {
			bad = append(bad, fmt.Sprintf("line %d (%s): %s", q.Line, abbrev(q.SQL), err))
		}
	}
	if len(bad) > 0 {
		c.Status, c.Message = Failed, fmt.Sprintf("%d of %d queries failed: %s", len(bad), len(queries), strings.Join(bad, "; "))
		return c
	}
	c.Status, c.Message = Passed, fmt.Sprintf("%d queries returned true", len(queries))
	return c
}

func orDefault(db string) string {
	if db == "" {
		return "postgres"
	}
	return db
}

func abbrev(sql string) string {
	s := storage.OneLine(sql)
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

func oneTrue(ctx context.Context, conn *pgx.Conn, sql string) error {
	rows, err := conn.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return errors.New(storage.OneLine(err.Error()))
	}
	defer rows.Close()
	n := 0
	var v any
	for rows.Next() {
		n++
		vals, err := rows.Values()
		if err != nil {
			return err
		}
		if len(vals) != 1 {
			return fmt.Errorf("returned %d columns, want one boolean", len(vals))
		}
		v = vals[0]
	}
	if err := rows.Err(); err != nil {
		return errors.New(storage.OneLine(err.Error()))
	}
	if n != 1 {
		return fmt.Errorf("returned %d rows, want one", n)
	}
	b, ok := v.(bool)
	if !ok {
		return fmt.Errorf("returned %v (%T), want a boolean", v, v)
	}
	if !b {
		return errors.New("returned false")
	}
	return nil
}

// AmCheck runs pg_amcheck on every database (installing the amcheck extension in the
// scratch server where it is missing). tool "" skips.
func AmCheck(ctx context.Context, tool, socketDir string, port int, user string) Check {
	c := Check{Name: CheckAmCheck}
	if tool == "" {
		c.Status, c.Message = Skipped, "no pg_amcheck of the backup's major found"
		return c
	}
	out, err := toolOutput(ctx, tool, "--host", socketDir, "--port", fmt.Sprint(port), "--username", user,
		"--no-password", "--all", "--install-missing")
	if err != nil {
		c.Status, c.Message = Failed, fmt.Sprintf("pg_amcheck: %v: %s", err, out)
		return c
	}
	c.Status, c.Message = Passed, "pg_amcheck found no corruption in any database"
	return c
}

// readFile is os.ReadFile bounded to 1 MiB (a check file).
func ReadCheckSQL(path string) ([]Query, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	q, err := ParseCheckSQL(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return q, nil
}
