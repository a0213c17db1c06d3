package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// runCLI runs pgark's command line in the test process.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb, func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

// oneLineErr fails unless stderr is exactly one line.
func oneLineErr(t *testing.T, args []string, stderr string) {
	t.Helper()
	if s := strings.TrimSpace(stderr); s == "" || strings.Contains(s, "\n") {
		t.Errorf("pgark %v: stderr is not one line: %q", args, stderr)
	}
}

const seg = "000000010000000000000001"

// TestOptionsAfterArguments: options may follow the arguments, for every
// command (here wal-fetch, whose log format shows that --log-format was
// taken, and restore).
func TestOptionsAfterArguments(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-repo")
	for _, args := range [][]string{
		{"wal-fetch", seg, filepath.Join(dir, "d"), "--repo", missing, "--fetch-ahead=0", "--log-format", "json"},
		{"wal-fetch", "--repo", missing, seg, "--log-format=json", filepath.Join(dir, "d"), "--fetch-ahead", "0"},
		{"wal-fetch", "-repo", missing, "-log-format=json", "-fetch-ahead", "0", seg, filepath.Join(dir, "d")}, // Go flag's single dash
	} {
		code, _, stderr := runCLI(t, nil, args...)
		if code != exitRecoveryStop || !strings.HasPrefix(stderr, `{"time":`) || !strings.Contains(stderr, "no-repo") {
			t.Errorf("pgark %v: exit %d, %q; want %d and a JSON log line about the repository", args, code, stderr, exitRecoveryStop)
		}
	}
	args := []string{"restore", "latest", filepath.Join(dir, "pgdata"), "--target-time", "not-a-time"}
	code, _, stderr := runCLI(t, map[string]string{"PGARK_REPO": missing}, args...)
	if code != exitUsage || !strings.Contains(stderr, `target time \"not-a-time\"`) {
		t.Errorf("pgark %v: exit %d, %q; want the target time refused (exit 2)", args, code, stderr)
	}
}

// TestDoubleDash: "--" ends the options; an argument after it may start
// with "-".
func TestDoubleDash(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"PGARK_REPO": filepath.Join(dir, "no-repo")}
	code, _, stderr := runCLI(t, env, "restore", "--", "-weird", filepath.Join(dir, "pgdata"))
	if code != exitUsage || !strings.Contains(stderr, `\"-weird\" is not a backup id`) {
		t.Errorf("restore -- -weird: exit %d, %q; want -weird taken as the backup id", code, stderr)
	}
	code, _, stderr = runCLI(t, env, "restore", "-weird", filepath.Join(dir, "pgdata"))
	if code != exitUsage || !strings.Contains(stderr, "flag provided but not defined") {
		t.Errorf("restore -weird: exit %d, %q; want an unknown option", code, stderr)
	}
	code, _, stderr = runCLI(t, env, "wal-fetch", "--", "--fetch-ahead=0", filepath.Join(dir, "d"))
	if code != exitRecoveryStop || !strings.Contains(stderr, "not a WAL file name") {
		t.Errorf("wal-fetch -- --fetch-ahead=0 DEST: exit %d, %q; want the option taken as the WAL name", code, stderr)
	}
}

func TestUnknownCommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"restor"}, `unknown command "restor", did you mean "restore"?`},
		{[]string{"wal-fech", "--repo", "/x", seg}, `did you mean "wal-fetch"?`},
		{[]string{"key", "genrate", "f"}, `unknown command "genrate", did you mean "generate"?`},
		{[]string{"frobnicate"}, `unknown command "frobnicate" (run`},
		{[]string{"key"}, "a subcommand is needed"},
	} {
		code, _, stderr := runCLI(t, nil, c.args...)
		if code != exitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("pgark %v: exit %d, %q; want %d with %q", c.args, code, stderr, exitUsage, c.want)
		}
		oneLineErr(t, c.args, stderr)
	}
	// Hidden commands are never suggested.
	if _, _, stderr := runCLI(t, nil, "wal-prefetc"); strings.Contains(stderr, "did you mean") {
		t.Errorf("a hidden command suggested: %q", stderr)
	}
}

// TestSetupFailureStatus: a command line or configuration that cannot be
// used is 2, except for wal-fetch (200: never "not found" during recovery)
// and check (3, Nagios UNKNOWN).
func TestSetupFailureStatus(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "pgark.conf")
	os.WriteFile(conf, []byte("fetch-jobs = many\nmax-archive-lag = lots\npush-jobs = x\n"), 0o644)
	for _, c := range []struct {
		env  map[string]string
		args []string
		code int
		msg  string
	}{
		{nil, []string{"wal-fetch", "--bogus", seg, "d"}, exitRecoveryStop, "flag provided but not defined: --bogus"},
		{nil, []string{"wal-fetch", seg, "d", "--retry-timeout"}, exitRecoveryStop, "flag needs an argument"},
		{map[string]string{"PGARK_FETCH_AHEAD": "x"}, []string{"wal-fetch", seg, "d"}, exitRecoveryStop, `fetch-ahead (PGARK_FETCH_AHEAD): "x" is not a whole number`},
		{map[string]string{"PGARK_CONFIG": conf}, []string{"wal-fetch", seg, "d"}, exitRecoveryStop, `fetch-jobs (config file): "many"`},
		{nil, []string{"check", "--bogus"}, exitCheckUnknown, "flag provided but not defined"},
		{map[string]string{"PGARK_CONFIG": conf}, []string{"check"}, exitCheckUnknown, `max-archive-lag (config file)`},
		{nil, []string{"check", "--check-timeout", "soon"}, exitCheckUnknown, `check-timeout (--check-timeout): "soon" is not a duration`},
		{map[string]string{"PGARK_PUSH_AHEAD": "x"}, []string{"wal-push", "p"}, exitUsage, `push-ahead (PGARK_PUSH_AHEAD): "x" is not a whole number`},
		{map[string]string{"PGARK_CONFIG": conf}, []string{"wal-push", "p"}, exitUsage, `push-jobs (config file): "x"`},
		{nil, []string{"backup", "--checkpoint", "slow"}, exitUsage, `checkpoint (--checkpoint): "slow" is not fast or spread`},
		{nil, []string{"list", "--json=maybe"}, exitUsage, `json (--json): "maybe" is not true or false`},
		{nil, []string{"backup", "--max-rate", "fast"}, exitUsage, `max-rate (--max-rate): "fast" is not a size`},
		{nil, []string{"list", "--age-identity-file", "/k"}, exitUsage, "flag provided but not defined"},
	} {
		code, _, stderr := runCLI(t, c.env, c.args...)
		// Bad values are logged (slog quotes the message), bad command
		// lines are printed.
		if code != c.code || !strings.Contains(strings.ReplaceAll(stderr, "\\", ""), c.msg) {
			t.Errorf("pgark %v (env %v): exit %d, %q; want %d with %q", c.args, c.env, code, stderr, c.code, c.msg)
		}
		oneLineErr(t, c.args, stderr)
	}
}

// TestFetchBadValueOnStandby: on a standby, a setting of the wrong kind is
// 5 (the standby logs it and retries), as wal-fetch's other failures there;
// a command line that does not parse stops it (200) as before.
func TestFetchBadValueOnStandby(t *testing.T) {
	pgdata := t.TempDir()
	os.WriteFile(filepath.Join(pgdata, "standby.signal"), nil, 0o600)
	env := map[string]string{"PGARK_PGDATA": pgdata, "PGARK_RETRY_TIMEOUT": "soon"}
	if code, _, stderr := runCLI(t, env, "wal-fetch", seg, filepath.Join(pgdata, "d")); code != exitStorage || !strings.Contains(stderr, "retry-timeout (PGARK_RETRY_TIMEOUT)") {
		t.Errorf("standby, bad retry-timeout: exit %d, %q; want %d", code, stderr, exitStorage)
	}
	if code, _, _ := runCLI(t, env, "wal-fetch", "--bogus", seg, filepath.Join(pgdata, "d")); code != exitRecoveryStop {
		t.Errorf("standby, bad flag: exit %d, want %d", code, exitRecoveryStop)
	}
	delete(env, "PGARK_PGDATA")
	if code, _, _ := runCLI(t, env, "wal-fetch", seg, filepath.Join(pgdata, "d")); code != exitRecoveryStop {
		t.Errorf("archive recovery, bad retry-timeout: exit %d, want %d", code, exitRecoveryStop)
	}
}

// TestPrecedenceEndToEnd: flag > environment > config file > default, seen
// in the log format of a failing wal-fetch.
func TestPrecedenceEndToEnd(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "pgark.conf")
	os.WriteFile(conf, []byte("log-format = json\nrepo = "+filepath.Join(dir, "from-file")+"\n"), 0o644)
	base := []string{"wal-fetch", "--fetch-ahead=0", seg, filepath.Join(dir, "d")}
	for _, c := range []struct {
		env     map[string]string
		flags   []string
		json    bool
		repoDir string
	}{
		{map[string]string{"PGARK_REPO": filepath.Join(dir, "from-env")}, nil, false, "from-env"},                                                                          // default text
		{map[string]string{"PGARK_CONFIG": conf}, nil, true, "from-file"},                                                                                                  // config file
		{map[string]string{"PGARK_CONFIG": conf, "PGARK_LOG_FORMAT": "text", "PGARK_REPO": filepath.Join(dir, "from-env")}, nil, false, "from-env"},                        // env beats file
		{map[string]string{"PGARK_CONFIG": conf, "PGARK_LOG_FORMAT": "text"}, []string{"--log-format=json", "--repo", filepath.Join(dir, "from-flag")}, true, "from-flag"}, // flag beats env
		{nil, []string{"--config", conf}, true, "from-file"},                                                                                                               // config file from a flag
	} {
		code, _, stderr := runCLI(t, c.env, append(base, c.flags...)...)
		if code != exitRecoveryStop || strings.HasPrefix(stderr, "{") != c.json || !strings.Contains(stderr, c.repoDir) {
			t.Errorf("env %v flags %v: exit %d, %q; want JSON %v, repository %s", c.env, c.flags, code, stderr, c.json, c.repoDir)
		}
	}
}

// TestPerCommandDefault: jobs is 2 for restore, 1 for dump and dump-restore.
func TestPerCommandDefault(t *testing.T) {
	for cmd, want := range map[string]string{"restore": "2", "dump": "1", "dump-restore": "1"} {
		args := strings.Fields(cmd)
		root := (&cli{}).newRoot(args)
		c, _, err := root.Find(args)
		if err != nil {
			t.Fatal(err)
		}
		s, err := resolve(c.Flags(), cmd, func(string) string { return "" })
		if err != nil || s.str("jobs") != want {
			t.Errorf("%s: jobs %q (%v), want %s", cmd, s.str("jobs"), err, want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, d := range commandList() {
		args := append(strings.Fields(d.name), "--help")
		code, out, _ := runCLI(t, nil, args...)
		if code != exitOK || !strings.HasPrefix(out, "Usage: pgark "+d.name) {
			t.Errorf("pgark %v: exit %d, %.80q", args, code, out)
			continue
		}
		for _, e := range exitCodesFor(d.exits, d.name) {
			if !strings.Contains(out, e.text[:min(len(e.text), 40)]) {
				t.Errorf("pgark %v: exit code %d not documented", args, e.code)
			}
		}
		for _, o := range commandOptions(d.name) {
			if !strings.Contains(out, "--"+o.name) || !strings.Contains(out, envName(o.name)) {
				t.Errorf("pgark %v: option %s not listed", args, o.name)
			}
		}
	}
	for args, want := range map[string]string{
		"wal-fetch -h": "Usage: pgark wal-fetch", "wal-fetch -help": "Usage: pgark wal-fetch",
		"help wal-fetch": "Usage: pgark wal-fetch", "key add --help": "Usage: pgark key add",
		"key --help": "Usage: pgark key SUBCOMMAND",
	} {
		if code, out, _ := runCLI(t, nil, strings.Fields(args)...); code != exitOK || !strings.HasPrefix(out, want) {
			t.Errorf("pgark %s: %d %.60q", args, code, out)
		}
	}
	if code, out, _ := runCLI(t, nil, "--version"); code != exitOK || out != "pgark "+version+"\n" {
		t.Errorf("pgark --version: %d %q", code, out)
	}
	if code, out, _ := runCLI(t, nil, "version"); code != exitOK || !strings.HasPrefix(out, "pgark "+version+"\ncommit: ") ||
		!strings.Contains(out, runtime.GOOS+"/"+runtime.GOARCH) || !strings.Contains(out, runtime.Version()) {
		t.Errorf("pgark version: %d %q", code, out)
	}
	var b buildInfo
	if code, out, _ := runCLI(t, nil, "version", "--json"); code != exitOK || json.Unmarshal([]byte(out), &b) != nil ||
		b.Version != version || b.Commit == "" || b.BuildDate == "" || b.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("pgark version --json: %d %q", code, out)
	}
	if code, _, _ := runCLI(t, nil, "version", "extra"); code != exitUsage {
		t.Errorf("pgark version extra: exit %d, want %d", code, exitUsage)
	}
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		if code, out, _ := runCLI(t, nil, args...); code != exitOK || !strings.Contains(out, "wal-fetch") || strings.Contains(out, "wal-prefetch") {
			t.Errorf("pgark %v: %d %q", args, code, out)
		}
	}
	if code, out, _ := runCLI(t, nil); code != exitUsage || !strings.Contains(out, "Commands:") {
		t.Errorf("pgark alone: %d %q", code, out)
	}
}

func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, out, stderr := runCLI(t, nil, "completion", sh)
		if code != exitOK || len(out) < 1000 || !strings.Contains(out, "pgark") || stderr != "" {
			t.Errorf("completion %s: exit %d, %d bytes, stderr %q", sh, code, len(out), stderr)
		}
	}
	// The scripts ask pgark for the candidates.
	_, out, _ := runCLI(t, nil, "__complete", "")
	var names []string
	for _, l := range strings.Split(out, "\n") {
		name, _, _ := strings.Cut(l, "\t")
		names = append(names, name)
	}
	for _, want := range []string{"wal-push", "wal-fetch", "restore", "dump-restore", "key", "version"} {
		if !slices.Contains(names, want) {
			t.Errorf("completion candidates %q lack %s", names, want)
		}
	}
	if slices.Contains(names, "wal-prefetch") || slices.Contains(names, "gen-docs") {
		t.Errorf("completion offers hidden commands: %q", names)
	}
	_, out, _ = runCLI(t, nil, "__complete", "restore", "--target-t")
	if !strings.Contains(out, "--target-time") || !strings.Contains(out, "--target-timeline") {
		t.Errorf("option completion for restore --target-t: %q", out)
	}
}

// TestOptionTable: the table is consistent: one entry per name, scopes
// name real commands, defaults are values of their kind.
func TestOptionTable(t *testing.T) {
	cmds := map[string]bool{}
	for _, c := range commandList() {
		if cmds[c.name] {
			t.Errorf("command %s defined twice", c.name)
		}
		cmds[c.name] = true
	}
	seen := map[string]bool{}
	for _, o := range options {
		if seen[o.name] {
			t.Errorf("option %s defined twice", o.name)
		}
		seen[o.name] = true
		for _, c := range o.cmds {
			if !cmds[c] {
				t.Errorf("option %s: unknown command %q in its scope", o.name, c)
			}
		}
		for c, d := range o.defs {
			if !o.forCommand(c) {
				t.Errorf("option %s: default for %s, which does not take it", o.name, c)
			}
			if err := o.check(d, "default"); err != nil {
				t.Error(err)
			}
		}
		if err := o.check(o.def, "default"); err != nil {
			t.Error(err)
		}
		if (o.kind == optEnum) != (len(o.enum) > 0) {
			t.Errorf("option %s: enum values and kind disagree", o.name)
		}
	}
}

// TestCheckUnknownOnStdout: a check setting of the wrong kind is UNKNOWN
// (3) on stdout too, in the output format asked for, as when check itself
// refuses a setting.
func TestCheckUnknownOnStdout(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"check", "--max-archive-lag", "many"}, "PGARK CHECK UNKNOWN - max-archive-lag (--max-archive-lag)"},
		{[]string{"check", "--prometheus", "--max-backup-age=old"}, "\npgark_check_status 3\n"},
		{[]string{"check", "--max-backup-age=old", "--json"}, `"status":"unknown"`},
		{[]string{"check", "--json=maybe"}, "PGARK CHECK UNKNOWN - json (--json)"},
	} {
		code, stdout, _ := runCLI(t, nil, c.args...)
		if code != exitCheckUnknown || !strings.Contains(stdout, c.want) {
			t.Errorf("pgark %v: exit %d, stdout %q; want %d and %q", c.args, code, stdout, exitCheckUnknown, c.want)
		}
	}
}
