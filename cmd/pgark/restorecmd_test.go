package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// The restore_command written for a restored node carries every store
// setting given on the command line or in the environment (the config
// file, when there is one, is named instead), with file paths made
// absolute, since the server runs it from the data directory.
func TestRestoreCommandCarriesStoreSettings(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	addOptions(fs, "restore")
	if err := fs.Parse([]string{"--repo", "sftp://pg@backup.example/srv/pgark", "--sftp-known-hosts", "kh", "--sftp-identity-file", "id"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PGARK_AZURE_ENDPOINT": "http://127.0.0.1:10000/acct", "PGARK_S3_REGION": "eu-west-3"}
	s, err := resolve(fs, "restore", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	got, err := restoreCommand(&cmdEnv{s: s})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"wal-fetch",
		"--repo=sftp://pg@backup.example/srv/pgark",
		"--sftp-known-hosts=" + filepath.Join(dir, "kh"),
		"--sftp-identity-file=" + filepath.Join(dir, "id"),
		"--azure-endpoint=http://127.0.0.1:10000/acct",
		"--s3-region=eu-west-3",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("restore_command %q lacks %q", got, want)
		}
	}
	if !strings.HasSuffix(got, " %f %p") {
		t.Errorf("restore_command %q does not end in %%f %%p", got)
	}
	if strings.Contains(got, "log-level") || strings.Contains(got, "jobs") {
		t.Errorf("restore_command %q carries restore's own settings", got)
	}
}
