package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/pgark/pgark/packaging"
)

// TestPackagedConfigValid: the example /etc/pgark/pgark.conf that the
// packages install is a valid config file for every command, also with each
// commented-out setting switched on.
func TestPackagedConfigValid(t *testing.T) {
	const path = "../../packaging/pgark.conf.example"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var on strings.Builder
	settings := 0
	for _, line := range strings.Split(string(b), "\n") {
		// "#key = value" lines are settings; "# text" lines are prose.
		if k, _, ok := strings.Cut(strings.TrimPrefix(line, "#"), " = "); ok && !strings.Contains(k, " ") {
			line = strings.TrimPrefix(line, "#")
			settings++
		}
		on.WriteString(line + "\n")
	}
	if settings < 10 {
		t.Fatalf("only %d settings found in %s", settings, path)
	}
	allOn := filepath.Join(t.TempDir(), "all-on.conf")
	if err := os.WriteFile(allOn, []byte(on.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, conf := range []string{path, allOn} {
		for _, c := range commandList() {
			fs := pflag.NewFlagSet(c.name, pflag.ContinueOnError)
			addOptions(fs, c.name)
			env := map[string]string{"PGARK_CONFIG": conf}
			if _, err := resolve(fs, c.name, func(k string) string { return env[k] }); err != nil {
				t.Errorf("%s, %s: %v", conf, c.name, err)
			}
		}
	}
}

// packagedUnit is the command line of the packaged unit name for cluster
// "main", without /usr/bin/pgark.
func packagedUnit(t *testing.T, name string) []string {
	t.Helper()
	u, err := packaging.ReadUnit(filepath.Join("../../packaging/systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	args, err := u.ExecStart("main")
	if err != nil {
		t.Fatal(err)
	}
	if args[0] != "/usr/bin/pgark" {
		t.Fatalf("%s runs %q", name, args)
	}
	return args[1:]
}

// TestPackagedUnitCommands: each packaged unit runs a pgark command with
// options that command takes and no stray arguments.
func TestPackagedUnitCommands(t *testing.T) {
	units, err := filepath.Glob("../../packaging/systemd/pgark-*@.service")
	if err != nil || len(units) < 6 {
		t.Fatalf("packaged services: %q, %v", units, err)
	}
	byName := map[string]*command{}
	for _, c := range commandList() {
		byName[c.name] = c
	}
	for _, path := range units {
		name := filepath.Base(path)
		if name == "pgark-failure@.service" {
			continue
		}
		args := packagedUnit(t, name)
		c, ok := byName[args[0]]
		if !ok || c.hidden {
			t.Errorf("%s runs %q: not a pgark command", name, args[0])
			continue
		}
		fs := pflag.NewFlagSet(c.name, pflag.ContinueOnError)
		addOptions(fs, c.name)
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 0 {
			t.Errorf("%s: pgark %q: %v, arguments %q", name, args, err, fs.Args())
		}
	}
}

// TestCopyUnitWithoutRepo2: the copy unit's command with a config file
// that has no second repository fails at once, with exit 2 and one line
// that names repo2.
func TestCopyUnitWithoutRepo2(t *testing.T) {
	dir := t.TempDir()
	r1 := filepath.Join(dir, "r1")
	if code, _, errs := runCLI(t, nil, "init", r1); code != 0 {
		t.Fatalf("init: %s", errs)
	}
	conf := filepath.Join(dir, "main.conf")
	if err := os.WriteFile(conf, []byte("repo = "+r1+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := packagedUnit(t, "pgark-copy@.service")
	for i, a := range args {
		if a == "/etc/pgark/main.conf" {
			args[i] = conf
		}
	}
	code, out, errs := runCLI(t, nil, args...)
	if code != exitUsage || out != "" || !strings.Contains(errs, "copy needs two repositories: set repo2") {
		t.Fatalf("pgark %q without repo2: exit %d, stdout %q, stderr %q; want exit %d and the reason", args, code, out, errs, exitUsage)
	}
	oneLineErr(t, args, errs)
}
