package s3

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/storage"
)

// TestProfile: a named profile of the shared credentials file wins over
// AWS_ACCESS_KEY_ID in the environment (two repositories, two accounts);
// without it, the environment's (here wrong) keys are used; a profile that
// does not exist is an error when the store is opened.
func TestProfile(t *testing.T) {
	srv := testenv.S3Start(t)
	bucket := newBucket(t, srv)
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials")
	if err := os.WriteFile(creds, []byte("[second]\naws_access_key_id = "+srv.AccessKey+"\naws_secret_access_key = "+srv.SecretKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "the-first-account's-secret")
	cfg := Config{Bucket: bucket, Prefix: "p", Endpoint: srv.Endpoint, Region: srv.Region, ForcePathStyle: true}

	env := mustNew(t, cfg)
	if err := env.Put(t.Context(), "a", strings.NewReader("x"), storage.PutOptions{Size: 1}); err == nil || !storage.IsPermanent(err) {
		t.Fatalf("Put with the environment's wrong secret: %v, want a permanent error", err)
	}
	cfg.Profile = "second"
	prof := mustNew(t, cfg)
	if err := prof.Put(t.Context(), "a", strings.NewReader("x"), storage.PutOptions{Size: 1}); err != nil {
		t.Fatalf("Put with profile second: %v", err)
	}
	cfg.Profile = "nosuchprofile"
	if _, err := New(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "nosuchprofile") {
		t.Errorf("New with a missing profile: %v, want an error naming it", err)
	}
}
