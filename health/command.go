package health

import (
	"bufio"
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Verdicts of CommandUses.
const (
	UsesYes     = "yes"
	UsesNo      = "no"
	UsesUnknown = "unknown"
)

// CommandUse says whether an archive_command stores WAL with pgark into a
// given repository: Verdict is UsesYes, UsesNo or UsesUnknown, and Reason
// says why, for the report.
type CommandUse struct {
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
}

// ReadFileFunc reads a file (os.ReadFile; a stub in tests).
type ReadFileFunc func(path string) ([]byte, error)

// CommandUses parses archive_command as /bin/sh would split it and decides
// whether one of its simple commands is a `pgark wal-push` into repo. The
// repository of an invocation is, as pgark resolves it: --repo (or -repo,
// --repo=X), else a PGARK_REPO=X assignment before the command, else the
// `repo = X` line of the config file named by --config or PGARK_CONFIG=FILE
// (read with readFile; relative paths are relative to dataDir, where
// PostgreSQL runs archive_command). What cannot be decided (a variable, an
// unreadable config file, a repository that only PostgreSQL's environment
// can supply) is UsesUnknown, never a guess.
func CommandUses(command, repo, dataDir string, readFile ReadFileFunc) CommandUse {
	if strings.TrimSpace(command) == "" {
		return CommandUse{UsesNo, "archive_command is empty"}
	}
	want := normalizeRepo(repo)
	invs := pgarkInvocations(command, 0)
	if len(invs) == 0 {
		return CommandUse{UsesNo, "archive_command does not call `pgark wal-push`"}
	}
	var unknown, other []string
	for _, inv := range invs {
		got, how, err := inv.repository(dataDir, readFile)
		switch {
		case err != nil:
			unknown = append(unknown, err.Error())
		case normalizeRepo(got) == want:
			return CommandUse{UsesYes, "pgark wal-push with this repository (" + how + ")"}
		default:
			other = append(other, fmt.Sprintf("%s (%s)", got, how))
		}
	}
	if len(unknown) > 0 {
		return CommandUse{UsesUnknown, strings.Join(unknown, "; ")}
	}
	return CommandUse{UsesNo, "pgark wal-push into another repository: " + strings.Join(other, ", ")}
}

// invocation is one `... wal-push ...` simple command.
type invocation struct {
	assign map[string]string // VAR=value words before the program
	args   []string          // the words after "wal-push"
}

// repository resolves the invocation's repository and says where it came
// from.
func (inv invocation) repository(dataDir string, readFile ReadFileFunc) (repo, how string, err error) {
	flags, err := goFlags(inv.args)
	if err != nil {
		return "", "", err
	}
	if v, ok := flags["repo"]; ok {
		if isExpanded(v) {
			return "", "", fmt.Errorf("--repo %s is expanded by the shell", v)
		}
		return v, "--repo " + v, nil
	}
	if v, ok := inv.assign["PGARK_REPO"]; ok {
		if isExpanded(v) {
			return "", "", fmt.Errorf("PGARK_REPO=%s is expanded by the shell", v)
		}
		return v, "PGARK_REPO=" + v, nil
	}
	conf, src := flags["config"], "--config"
	if _, ok := flags["config"]; !ok {
		conf, src = inv.assign["PGARK_CONFIG"], "PGARK_CONFIG="
	}
	if conf == "" {
		return "", "", fmt.Errorf("pgark wal-push without --repo or --config: the repository comes from PostgreSQL's environment (PGARK_REPO or PGARK_CONFIG), which check cannot see")
	}
	if isExpanded(conf) {
		return "", "", fmt.Errorf("config file %s is expanded by the shell", conf)
	}
	path := conf
	if !filepath.IsAbs(path) && dataDir != "" {
		path = filepath.Join(dataDir, path)
	}
	b, err := readFile(path)
	if err != nil {
		return "", "", fmt.Errorf("cannot read config file %s: %w", path, err)
	}
	v, ok, err := configRepo(b)
	if err != nil {
		return "", "", fmt.Errorf("config file %s: %w", path, err)
	}
	if !ok {
		return "", "", fmt.Errorf("config file %s sets no repo: the repository comes from PostgreSQL's environment (PGARK_REPO), which check cannot see", path)
	}
	if src == "--config" {
		src += " "
	}
	return v, src + conf + ": repo = " + v, nil
}

// isExpanded reports whether the shell would change the word (a variable,
// a command substitution, a glob or a home directory).
func isExpanded(s string) bool {
	return strings.ContainsAny(s, "$`*?[") || strings.HasPrefix(s, "~")
}

// pgarkBoolFlags are wal-push's boolean options: they take no separate value.
var pgarkBoolFlags = map[string]bool{"s3-force-path-style": true, "h": true, "help": true}

// goFlags reads options the way Go's flag package does (pgark's parser):
// -name or --name, with =value or the next word as the value (bool options
// take no next word), stopping at the first argument that is not a flag or
// after "--".
func goFlags(args []string) (map[string]string, error) {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			break
		}
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if name == "" || name[0] == '-' || name[0] == '=' {
			break
		}
		if k, v, ok := strings.Cut(name, "="); ok {
			out[k] = v
			continue
		}
		if pgarkBoolFlags[name] {
			out[name] = "true"
			continue
		}
		if i+1 >= len(args) {
			return nil, fmt.Errorf("option -%s has no value", name)
		}
		i++
		out[name] = args[i]
	}
	return out, nil
}

// configRepo finds the repo key of a pgark config file (key = value lines,
// '#' comments, optionally double-quoted values).
func configRepo(b []byte) (string, bool, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) != "repo" {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			uq, err := strconv.Unquote(v)
			if err != nil {
				return "", false, fmt.Errorf("bad quoted repo value: %w", err)
			}
			v = uq
		}
		return v, true, nil
	}
	return "", false, sc.Err()
}

// normalizeRepo makes two spellings of one repository compare equal: a
// cleaned local path, or s3://bucket/prefix without redundant slashes.
func normalizeRepo(s string) string {
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(s, "s3://"); ok {
		var parts []string
		for _, p := range strings.Split(rest, "/") {
			if p != "" {
				parts = append(parts, p)
			}
		}
		return "s3://" + strings.Join(parts, "/")
	}
	if s == "" {
		return ""
	}
	return filepath.Clean(s)
}

// pgarkInvocations splits a shell command into simple commands and returns
// those that run `wal-push`. `sh -c '...'` (and bash, dash) are looked into.
func pgarkInvocations(command string, depth int) []invocation {
	var out []invocation
	for _, words := range splitShell(command) {
		assign := map[string]string{}
		i := 0
		for ; i < len(words); i++ {
			w := words[i]
			if w == "exec" || w == "env" || w == "nice" || w == "command" || w == "{" || w == "!" {
				continue
			}
			if k, v, ok := strings.Cut(w, "="); ok && isShellName(k) {
				assign[k] = v
				continue
			}
			break
		}
		if i >= len(words) {
			continue
		}
		prog, rest := filepath.Base(words[i]), words[i+1:]
		if (prog == "sh" || prog == "bash" || prog == "dash") && depth < 3 {
			for j := 0; j+1 < len(rest); j++ {
				if rest[j] == "-c" {
					out = append(out, pgarkInvocations(rest[j+1], depth+1)...)
					break
				}
			}
			continue
		}
		// pgark takes the command name first; the program may have any name.
		if len(rest) > 0 && rest[0] == "wal-push" {
			out = append(out, invocation{assign: assign, args: rest[1:]})
		}
	}
	return out
}

func isShellName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// splitShell splits a command line into simple commands (at ;, &, &&, ||, |,
// newlines and parentheses) made of words, with /bin/sh's quoting:
// '...' is literal, "..." keeps \" \\ \$ \` escapes, a backslash outside
// quotes escapes the next character. Expansions are left as written.
func splitShell(s string) [][]string {
	var cmds [][]string
	var words []string
	var cur strings.Builder
	inWord := false
	endWord := func() {
		if inWord {
			words = append(words, cur.String())
			cur.Reset()
			inWord = false
		}
	}
	endCmd := func() {
		endWord()
		if len(words) > 0 {
			cmds = append(cmds, words)
			words = nil
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			inWord = true
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				cur.WriteString(s[i+1:])
				i = len(s)
				break
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			inWord = true
			for i++; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
		case c == '\\':
			if i+1 < len(s) {
				i++
				if s[i] != '\n' {
					inWord = true
					cur.WriteByte(s[i])
				}
			}
		case c == ' ' || c == '\t':
			endWord()
		case strings.IndexByte(";&|\n()", c) >= 0:
			endCmd()
		default:
			inWord = true
			cur.WriteByte(c)
		}
	}
	endCmd()
	return cmds
}

var secretAssign = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`(?i)\b([a-z0-9_]*(?:key|secret|password|passwd|token|credential)[a-z0-9_]*)=('[^']*'|"[^"]*"|[^\s;&|]*)`)
})

// RedactCommand masks the values of assignments that look like credentials
// (AWS_SECRET_ACCESS_KEY=..., PGPASSWORD=...), so that a report never shows
// a secret someone put into archive_command.
func RedactCommand(cmd string) string {
	return secretAssign().ReplaceAllString(cmd, "$1=***")
}
