package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestPrecedence(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "pgark.conf")
	os.WriteFile(conf, []byte("# comment\nrepo = /from/file\ns3-region = \"eu-west-1\"\nretry-timeout = 5s\nage-identity-file = /k\n"), 0o644)
	env := map[string]string{"PGARK_CONFIG": conf, "PGARK_S3_REGION": "us-east-2"}
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	addOptions(fs, "wal-push")
	if err := fs.Parse([]string{"--retry-timeout", "7s"}); err != nil {
		t.Fatal(err)
	}
	s, err := resolve(fs, "wal-push", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"repo":          "/from/file", // config file
		"s3-region":     "us-east-2",  // env beats file
		"retry-timeout": "7s",         // flag beats file
		"log-level":     "info",       // default
	} {
		if got := s.str(k); got != want {
			t.Errorf("%s = %q (from %s), want %q", k, got, s.src[k], want)
		}
	}
	// age-identity-file is a known key (shared config files) but not a
	// wal-push option: accepted in the file, not applied.
	if fs.Lookup("age-identity-file") != nil {
		t.Error("wal-push takes age-identity-file")
	}
	if _, ok := s.vals["age-identity-file"]; ok {
		t.Error("age-identity-file from the config file applied to wal-push")
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, bad := range []string{
		"repo", "nosuchkey = 1", "repo = /a\nrepo = /b", "repo = \"unterminated\\\"", "config = /x",
	} {
		if _, err := parseConfig(strings.NewReader(bad)); err == nil {
			t.Errorf("parseConfig(%q) accepted", bad)
		}
	}
	got, err := parseConfig(strings.NewReader("  repo=/x  \n\n# c\ns3-endpoint = \"http://h:1/\"\n"))
	if err != nil || got["repo"] != "/x" || got["s3-endpoint"] != "http://h:1/" {
		t.Fatalf("parseConfig = %v, %v", got, err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"8MiB": 8 << 20, "1GiB": 1 << 30, "5MB": 5e6, "1024": 1024, " 2 KiB": 2048} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "x", "-1MiB", "1.5GiB", "99999999999GiB"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

func TestRunUsage(t *testing.T) {
	var out, errb bytes.Buffer
	env := func(string) string { return "" }
	if code := run(context.Background(), []string{"wal-fetch", "--help"}, &out, &errb, env); code != 0 || !strings.Contains(out.String(), "200") {
		t.Fatalf("wal-fetch --help: %d %q", code, out.String())
	}
	if code := run(context.Background(), []string{"wal-fetch", "a"}, &out, &errb, env); code != exitRecoveryStop {
		t.Fatalf("wal-fetch with one argument exited %d, must stop recovery (%d)", code, exitRecoveryStop)
	}
	if code := run(context.Background(), nil, &out, &errb, env); code != exitUsage {
		t.Fatalf("no arguments: %d", code)
	}
}

// TestWALLevel: wal-push compresses at wal-compression-level, else at
// compression-level when that is set, else at level 1 (not the
// repository's level).
func TestWALLevel(t *testing.T) {
	for _, c := range []struct {
		args    []string
		file    string
		want    int
		wantErr bool
	}{
		{nil, "", defaultWALLevel, false},
		{[]string{"--compression-level", "9"}, "", 9, false},
		{nil, "compression-level = 7\n", 7, false},
		{[]string{"--compression-level", "9", "--wal-compression-level", "2"}, "", 2, false},
		{nil, "wal-compression-level = 4\ncompression-level = 7\n", 4, false},
		{[]string{"--wal-compression-level", "23"}, "", 0, true},
	} {
		conf := filepath.Join(t.TempDir(), "pgark.conf")
		os.WriteFile(conf, []byte(c.file), 0o644)
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		addOptions(fs, "wal-push")
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		s, err := resolve(fs, "wal-push", func(k string) string { return map[string]string{"PGARK_CONFIG": conf}[k] })
		if err != nil {
			t.Fatal(err)
		}
		// The codec's level: the repository's (3) unless compression-level is set.
		repoLevel := 3
		if v, _ := s.integer("compression-level"); v != 0 {
			repoLevel = v
		}
		got, err := walLevel(&cmdEnv{s: s}, repoLevel)
		if (err != nil) != c.wantErr || (!c.wantErr && got != c.want) {
			t.Errorf("%v %q: level %d, %v; want %d (error: %v)", c.args, c.file, got, err, c.want, c.wantErr)
		}
	}
}
