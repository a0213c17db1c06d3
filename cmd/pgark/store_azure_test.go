package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

// TestAzureConfigCredentials checks which credential azureConfig picks:
// the files first, then the environment's connection string, key and SAS
// token; and that a key without an account is a usage error.
func TestAzureConfigCredentials(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	sasFile := filepath.Join(dir, "sas")
	os.WriteFile(keyFile, []byte("a2V5\n"), 0o600)
	os.WriteFile(sasFile, []byte("?sv=1&sig=x\n"), 0o600)
	loc, err := parseLocation("azure://backups/db")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    string // key, sas, conn or chain
		wantErr bool
	}{
		{"key file", []string{"--azure-account", "acct", "--azure-account-key-file", keyFile}, map[string]string{"AZURE_STORAGE_CONNECTION_STRING": "x"}, "key", false},
		{"sas file", []string{"--azure-account", "acct", "--azure-sas-token-file", sasFile}, map[string]string{"AZURE_STORAGE_KEY": "k"}, "sas", false},
		{"connection string", nil, map[string]string{"AZURE_STORAGE_CONNECTION_STRING": "c", "AZURE_STORAGE_KEY": "k"}, "conn", false},
		{"env key", nil, map[string]string{"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": "k"}, "key", false},
		{"env sas", []string{"--azure-account", "acct"}, map[string]string{"AZURE_STORAGE_SAS_TOKEN": "sv=1"}, "sas", false},
		{"credential chain", []string{"--azure-account", "acct"}, nil, "chain", false},
		{"key without account", nil, map[string]string{"AZURE_STORAGE_KEY": "k"}, "", true},
		{"no account at all", nil, nil, "", true},
		{"missing key file", []string{"--azure-account", "acct", "--azure-account-key-file", filepath.Join(dir, "nope")}, nil, "", true},
		{"block size too small", []string{"--azure-account", "acct", "--azure-block-size", "512KiB"}, nil, "", true},
	} {
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		addOptions(fs, "wal-push")
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		getenv := func(k string) string { return c.env[k] }
		s, err := resolve(fs, "wal-push", getenv)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := azureConfig(&cmdEnv{s: s, getenv: getenv}, loc)
		if c.wantErr {
			if err == nil || !isUsage(err) {
				t.Errorf("%s: %v, want a usage error", c.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		got := "chain"
		switch {
		case cfg.AccountKey != "":
			got = "key"
		case cfg.SASToken != "":
			got = "sas"
		case cfg.ConnectionString != "":
			got = "conn"
		}
		if got != c.want || cfg.Container != "backups" || cfg.Prefix != "db" {
			t.Errorf("%s: %s credential, container %q, prefix %q; want %s", c.name, got, cfg.Container, cfg.Prefix, c.want)
		}
		if c.name == "key file" && cfg.AccountKey != "a2V5" {
			t.Errorf("key file: key %q, want the file's line trimmed", cfg.AccountKey)
		}
	}
}
