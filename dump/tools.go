package dump

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// ErrClientTooOld is wrapped when a PostgreSQL client tool is older than
// what it must work with (pg_dump older than the server, pg_restore older
// than the pg_dump that wrote the archive).
var ErrClientTooOld = errors.New("PostgreSQL client tool too old")

// ErrTool is wrapped when a PostgreSQL client tool fails or is missing.
var ErrTool = errors.New("PostgreSQL client tool failed")

// Tool is a PostgreSQL client program and its version.
type Tool struct {
	Name    string // pg_dump, pg_dumpall, pg_restore
	Path    string
	Version string // e.g. "17.2"
	Major   int
}

func (t Tool) String() string { return fmt.Sprintf("%s %s (%s)", t.Name, t.Version, t.Path) }

// FindTool locates a client program in binDir, or on PATH when binDir is
// empty, and reads its version (`NAME --version`).
func FindTool(ctx context.Context, name, binDir string) (Tool, error) {
	t := Tool{Name: name}
	var err error
	if binDir != "" {
		t.Path = filepath.Join(binDir, name)
	} else if t.Path, err = exec.LookPath(name); err != nil {
		return t, fmt.Errorf("%w: %s is not on PATH (install the PostgreSQL client tools of the server's major version, or give --pg-bin DIR)", ErrTool, name)
	}
	out, err := exec.CommandContext(ctx, t.Path, "--version").Output()
	if err != nil {
		return t, fmt.Errorf("%w: %s --version: %v", ErrTool, t.Path, err)
	}
	t.Version, t.Major, err = ParseToolVersion(string(out))
	if err != nil {
		return t, fmt.Errorf("%w: %s: %v", ErrTool, t.Path, err)
	}
	return t, nil
}

var versionRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\(PostgreSQL\)\s+(\d+)(\.\d+)?`) })

// ParseToolVersion reads "pg_dump (PostgreSQL) 17.2 (Debian 17.2-1)".
func ParseToolVersion(s string) (version string, major int, err error) {
	m := versionRE().FindStringSubmatch(s)
	if m == nil {
		return "", 0, fmt.Errorf("unexpected --version output %q", strings.TrimSpace(s))
	}
	major, _ = strconv.Atoi(m[1])
	return m[1] + m[2], major, nil
}

// CheckClient refuses a client older than the server it must dump.
func CheckClient(t Tool, serverVersionNum int, serverVersion string) error {
	if sm := serverVersionNum / 10000; t.Major < sm {
		return fmt.Errorf("%w: %s is older than the server (PostgreSQL %s): %s cannot dump a newer server; install the PostgreSQL %d client tools and put them on PATH or give --pg-bin DIR",
			ErrClientTooOld, t, serverVersion, t.Name, sm)
	}
	return nil
}

// ConnString returns a libpq connection string for dsn (a connection
// string, a URI or empty, completed by libpq from the environment as usual)
// with its database replaced by db.
func ConnString(dsn, db string) (string, error) {
	dsn = strings.TrimSpace(dsn)
	if strings.HasPrefix(dsn, "postgresql://") || strings.HasPrefix(dsn, "postgres://") {
		scheme, rest, _ := strings.Cut(dsn, "://")
		end := strings.IndexAny(rest, "/?")
		authority, tail := rest, ""
		if end >= 0 {
			authority, tail = rest[:end], rest[end:]
		}
		query := ""
		if _, q, ok := strings.Cut(tail, "?"); ok {
			var kept []string
			for _, p := range strings.Split(q, "&") {
				if k, _, _ := strings.Cut(p, "="); k != "dbname" && p != "" {
					kept = append(kept, p)
				}
			}
			if len(kept) > 0 {
				query = "?" + strings.Join(kept, "&")
			}
		}
		return scheme + "://" + authority + "/" + url.PathEscape(db) + query, nil
	}
	// Keyword/value form: libpq uses the last value of a repeated keyword.
	q := "dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(db) + "'"
	if dsn == "" {
		return q, nil
	}
	return dsn + " " + q, nil
}

// tail keeps the last lines written to it (a tool's stderr, for the error).
type tail struct {
	buf []byte
	max int
}

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	s := strings.TrimSpace(string(bytes.ToValidUTF8(t.buf, []byte("?"))))
	if i := strings.LastIndex(s, "\n"); i >= 0 && len(t.buf) >= t.max {
		// drop a cut first line
		if j := strings.Index(s, "\n"); j < i {
			s = s[j+1:]
		}
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " | ")), " ")
}

// prefixWriter passes a tool's stderr through, line by line, with a prefix.
type prefixWriter struct {
	w      interface{ Write([]byte) (int, error) }
	prefix string
	line   []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	for _, c := range b {
		p.line = append(p.line, c)
		if c == '\n' {
			p.w.Write(append([]byte(p.prefix), p.line...))
			p.line = p.line[:0]
		}
	}
	return len(b), nil
}

func (p *prefixWriter) flush() {
	if len(p.line) > 0 {
		p.w.Write(append(append([]byte(p.prefix), p.line...), '\n'))
		p.line = nil
	}
}
