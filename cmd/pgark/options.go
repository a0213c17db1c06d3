package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// option is one setting. Every setting has a flag (--name), an environment
// variable (PGARK_NAME with '-' as '_') and a key in the config file (name).
// Precedence: flag, then environment, then config file, then default.
type option struct {
	name string
	def  string
	help string
	kind string   // "string", "bool", "int", "duration", "size"
	cmds []string // the commands that take it; none = every command
}

// forCommand reports whether the option applies to the command.
func (o option) forCommand(cmd string) bool {
	if cmd == "wal-push-ahead" {
		cmd = "wal-push" // its background batch takes the same settings
	}
	if len(o.cmds) == 0 {
		return true
	}
	for _, c := range o.cmds {
		if c == cmd {
			return true
		}
	}
	return false
}

// Command groups for option scopes.
var (
	repoCmds  = []string{"init", "wal-push", "wal-fetch", "wal-prefetch", "backup", "list", "restore", "verify", "retain", "check", "key add", "key remove", "key list", "dump", "dump-restore"}
	writeCmds = []string{"init", "wal-push", "backup", "dump"}
	readCmds  = []string{"wal-fetch", "wal-prefetch", "restore", "verify", "check", "key list", "dump-restore"}
	spoolCmds = []string{"wal-push", "wal-fetch", "wal-prefetch"}
	fetchCmds = []string{"wal-fetch", "wal-prefetch"}
)

var options = []option{
	{"config", "", "config file (key = value lines, keys are these option names)", "string", nil},
	{"repo", "", "repository: an absolute local directory path, or s3://bucket/prefix", "string", repoCmds},
	{"s3-endpoint", "", "S3 endpoint URL for S3-compatible stores (e.g. http://127.0.0.1:9000)", "string", repoCmds},
	{"s3-region", "", "S3 region (default: the AWS chain's, e.g. AWS_REGION, else us-east-1)", "string", repoCmds},
	{"s3-force-path-style", "false", "path-style S3 addressing (MinIO and most S3-compatible stores)", "bool", repoCmds},
	{"s3-request-checksum", "when_supported", "SDK request checksums: when_supported (AWS default) or when_required (for stores that reject trailing checksums)", "string", repoCmds},
	{"s3-part-size", "8MiB", "multipart upload part size (5MiB to 5GiB)", "size", repoCmds},
	{"s3-read-timeout", "2m", "fail (and retry) an S3 request whose connection stays silent this long", "duration", repoCmds},
	{"compression", "", "compression for new objects: zstd or none (default: the repository's)", "string", writeCmds},
	{"compression-level", "0", "zstd level 1-22 (default: the repository's; 3 at init); wal-push uses wal-compression-level unless only this one is set", "int", writeCmds},
	{"wal-compression-level", "0", "wal-push: zstd level 1-22 for WAL (default: compression-level when that is set, else 1, which keeps up with heavy write loads: on pgbench WAL it stores 1-2% more than level 3 for 30% less CPU)", "int", []string{"wal-push"}},
	{"age-recipients", "", "age public recipients (age1...), comma-separated, for writing", "string", writeCmds},
	{"age-recipients-file", "", "file with age public recipients, one per line, for writing", "string", writeCmds},
	{"age-identity-file", "", "age identity file (private keys) for reading encrypted objects", "string", readCmds},
	{"signing-key-file", "", "ed25519 signing key (pgark key generate-signing): sign what is written, so that readers with trusted-signers can prove its origin", "string", []string{"wal-push", "backup", "dump"}},
	{"trusted-signers", "", "signing public keys (pgark-ed25519:...), comma-separated: when set, reads refuse any object not signed by one of them", "string", readCmds},
	{"retry-timeout", "60s", "total time to retry transient storage errors before failing", "duration", repoCmds},
	{"pgdata", "", "PostgreSQL data directory (init: bind the repository to its cluster; wal-push, wal-fetch: the data directory of the server that runs them, default the working directory, which PostgreSQL sets to it)", "string", []string{"init", "wal-push", "wal-fetch", "wal-prefetch"}},
	{"spool-dir", "", "local directory for push-ahead records and prefetched WAL, outside the data directory (default $XDG_CACHE_HOME/pgark or ~/.cache/pgark)", "string", spoolCmds},
	{"push-ahead", "8", "wal-push: also push up to this many of the next .ready segments in parallel, so that PostgreSQL's next calls answer at once (0: off)", "int", []string{"wal-push"}},
	{"push-jobs", "2", "wal-push: pushes at once when pushing ahead", "int", []string{"wal-push"}},
	{"fetch-ahead", "8", "wal-fetch: keep this many of the next segments downloaded, verified and decoded in the spool by a background helper (0: off)", "int", fetchCmds},
	{"fetch-jobs", "2", "wal-fetch: downloads at once when fetching ahead", "int", fetchCmds},
	{"spool-max-size", "512MiB", "wal-fetch: at most this many bytes of prefetched WAL in the spool", "size", fetchCmds},
	{"log-level", "info", "log level: debug, info, warn, error", "string", nil},
	{"log-format", "text", "log format: text or json", "string", nil},
}

func envName(opt string) string {
	return "PGARK_" + strings.ToUpper(strings.ReplaceAll(opt, "-", "_"))
}

// settings are the resolved option values.
type settings struct {
	vals map[string]string
	src  map[string]string // where each value came from, for messages
}

func (s *settings) str(name string) string { return s.vals[name] }

func (s *settings) boolean(name string) (bool, error) {
	v, err := strconv.ParseBool(s.vals[name])
	if err != nil {
		return false, usageErrorf("%s (%s): %q is not true or false", name, s.src[name], s.vals[name])
	}
	return v, nil
}

func (s *settings) integer(name string) (int, error) {
	v, err := strconv.Atoi(s.vals[name])
	if err != nil {
		return 0, usageErrorf("%s (%s): %q is not a whole number", name, s.src[name], s.vals[name])
	}
	return v, nil
}

func (s *settings) duration(name string) (time.Duration, error) {
	v, err := time.ParseDuration(s.vals[name])
	if err != nil || v < 0 {
		return 0, usageErrorf("%s (%s): %q is not a duration such as 30s or 5m", name, s.src[name], s.vals[name])
	}
	return v, nil
}

func (s *settings) size(name string) (int64, error) {
	v, err := parseSize(s.vals[name])
	if err != nil {
		return 0, usageErrorf("%s (%s): %v", name, s.src[name], err)
	}
	return v, nil
}

// parseSize parses sizes like 8MiB, 16MB, 1048576.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suf  string
		mult int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suf) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suf)), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size such as 8MiB", s)
	}
	return v * mult, nil
}

// addOptions registers every option as a flag on fs and returns the flag
// values, to be resolved after parsing.
func addOptions(fs *flag.FlagSet, cmd string) map[string]*string {
	m := map[string]*string{}
	for _, o := range options {
		if !o.forCommand(cmd) {
			continue
		}
		help := o.help + " [" + envName(o.name) + "]"
		if o.def != "" && o.def != "0" && o.def != "false" {
			help += " (default " + o.def + ")"
		}
		if o.kind == "bool" {
			v := &boolFlag{}
			fs.Var(v, o.name, help)
			m[o.name] = &v.val
			continue
		}
		if o.kind == "list" {
			v := &listFlag{}
			fs.Var(v, o.name, help)
			m[o.name] = &v.joined
			continue
		}
		m[o.name] = fs.String(o.name, "", help)
	}
	return m
}

// boolFlag is a flag that may stand alone (--json) or take a value
// (--json=false); the value is checked when it is used.
type boolFlag struct{ val string }

func (b *boolFlag) String() string     { return b.val }
func (b *boolFlag) Set(v string) error { b.val = v; return nil }
func (b *boolFlag) IsBoolFlag() bool   { return true }

// listFlag is a repeatable flag; its values are joined with commas.
type listFlag struct{ joined string }

func (l *listFlag) String() string { return l.joined }
func (l *listFlag) Set(v string) error {
	if l.joined != "" {
		l.joined += ","
	}
	l.joined += v
	return nil
}

// resolve applies the precedence flag > environment > config file > default.
func resolve(fs *flag.FlagSet, flags map[string]*string, getenv func(string) string) (*settings, error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	s := &settings{vals: map[string]string{}, src: map[string]string{}}
	pick := func(name string) (string, string, bool) {
		if set[name] {
			return *flags[name], "--" + name, true
		}
		if v := getenv(envName(name)); v != "" {
			return v, envName(name), true
		}
		return "", "", false
	}
	var file map[string]string
	if path, src, ok := pick("config"); ok {
		var err error
		if file, err = readConfigFile(path); err != nil {
			return nil, usageErrorf("config file %s (from %s): %v", path, src, err)
		}
		s.vals["config"], s.src["config"] = path, src
	}
	for _, o := range options {
		if o.name == "config" || flags[o.name] == nil {
			continue
		}
		if v, src, ok := pick(o.name); ok {
			s.vals[o.name], s.src[o.name] = v, src
		} else if v, ok := file[o.name]; ok {
			s.vals[o.name], s.src[o.name] = v, "config file"
		} else {
			s.vals[o.name], s.src[o.name] = o.def, "default"
		}
	}
	return s, nil
}

// readConfigFile reads `key = value` lines. Blank lines and lines starting
// with '#' are ignored; values may be quoted with double quotes. Unknown keys
// are errors, so a typo never silently drops a setting.
func readConfigFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseConfig(f)
}

func parseConfig(r io.Reader) (map[string]string, error) {
	known := map[string]bool{}
	for _, o := range options {
		known[o.name] = o.name != "config"
	}
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: expected key = value", ln)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !known[k] {
			return nil, fmt.Errorf("line %d: unknown key %q (keys: %s)", ln, k, strings.Join(optionNames(), ", "))
		}
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			uq, err := strconv.Unquote(v)
			if err != nil {
				return nil, fmt.Errorf("line %d: bad quoted value: %v", ln, err)
			}
			v = uq
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("line %d: %s is set twice", ln, k)
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func optionNames() []string {
	var n []string
	for _, o := range options {
		if o.name != "config" {
			n = append(n, o.name)
		}
	}
	sort.Strings(n)
	return n
}

// usageError is a bad command line or configuration (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, a ...any) error {
	return &usageError{fmt.Sprintf(format, a...)}
}

func isUsage(err error) bool {
	var u *usageError
	return errors.As(err, &u)
}
