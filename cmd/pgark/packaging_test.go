package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
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
