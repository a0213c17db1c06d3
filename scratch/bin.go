package scratch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ErrBinaries is returned when no postgres binary of the major needed is found.
var ErrBinaries = errors.New("PostgreSQL server binaries")

// candidateDirs lists where PostgreSQL server binaries of a major usually live: Debian and
// Ubuntu, the PGDG RPMs, source builds, then postgres on PATH.
func candidateDirs(major int) []string {
	m := strconv.Itoa(major)
	dirs := []string{
		"/usr/lib/postgresql/" + m + "/bin",
		"/usr/pgsql-" + m + "/bin",
		"/usr/local/pgsql-" + m + "/bin",
		"/opt/postgresql/" + m + "/bin",
		"/usr/local/pgsql/bin",
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			dirs = append(dirs, filepath.Dir(abs))
		}
	}
	return dirs
}

var versionRe = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

// binaryMajor runs `<dir>/postgres --version` and returns its major.
func binaryMajor(ctx context.Context, dir string) (int, string, error) {
	p := filepath.Join(dir, "postgres")
	st, err := os.Stat(p)
	if err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return 0, "", fmt.Errorf("no postgres in %s", dir)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, p, "--version").Output()
	if err != nil {
		return 0, "", fmt.Errorf("%s --version: %w", p, err)
	}
	m := versionRe.FindStringSubmatch(string(out))
	if m == nil {
		return 0, "", fmt.Errorf("%s --version: unexpected output %q", p, strings.TrimSpace(string(out)))
	}
	major, _ := strconv.Atoi(m[1])
	if major < 10 && m[2] != "" { // 9.6 and older: two-part majors
		return 0, "", fmt.Errorf("%s is PostgreSQL %s.%s, not supported", p, m[1], m[2])
	}
	return major, strings.TrimSpace(string(out)), nil
}

// FindBinDir returns the directory of a postgres binary of the given major: binDir when
// given (it must hold that major), else the first of the usual places that does. The error
// wraps ErrBinaries and names the major needed and what was found.
func FindBinDir(ctx context.Context, major int, binDir string) (string, error) {
	if binDir != "" {
		got, ver, err := binaryMajor(ctx, binDir)
		if err != nil {
			return "", fmt.Errorf("%w: the backup needs PostgreSQL %d: %v", ErrBinaries, major, err)
		}
		if got != major {
			return "", fmt.Errorf("%w: the backup needs PostgreSQL %d, but %s holds %s; give the directory of the PostgreSQL %d server binaries", ErrBinaries, major, binDir, ver, major)
		}
		return binDir, nil
	}
	var seen []string
	for _, d := range candidateDirs(major) {
		got, ver, err := binaryMajor(ctx, d)
		if err != nil {
			continue
		}
		if got == major {
			return d, nil
		}
		seen = append(seen, fmt.Sprintf("%s in %s", ver, d))
	}
	found := ""
	if len(seen) > 0 {
		found = " (found only " + strings.Join(seen, "; ") + ")"
	}
	return "", fmt.Errorf("%w: the backup needs PostgreSQL %d, whose server binaries are in none of %s%s; install them or give their directory (--pg-bin)",
		ErrBinaries, major, strings.Join(candidateDirs(major)[:5], ", "), found)
}

// Tool returns the path of a client tool (pg_verifybackup, pg_amcheck) of the server's
// major: in the server's binary directory, else in the usual places; "" when there is none
// of that major.
func Tool(ctx context.Context, major int, binDir, name string) string {
	dirs := append([]string{binDir}, candidateDirs(major)...)
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
			continue
		}
		if toolMajor(ctx, p) == major {
			return p
		}
	}
	return ""
}

// toolMajor runs `tool --version` ("pg_amcheck (PostgreSQL) 17.5").
func toolMajor(ctx context.Context, p string) int {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, p, "--version").Output()
	if err != nil {
		return 0
	}
	m := versionRe.FindStringSubmatch(string(out))
	if m == nil {
		return 0
	}
	v, _ := strconv.Atoi(m[1])
	return v
}
