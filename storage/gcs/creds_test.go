package gcs

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/storage"
)

// keyFile writes a service-account key file whose token endpoint is
// tokenURL.
func keyFile(t *testing.T, tokenURL string) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"client_email":   "pgark@test-project.iam.gserviceaccount.com",
		"private_key_id": "1",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"token_uri":      tokenURL,
	})
	p := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCredentialsFile: with a service-account key, requests carry the
// access token from the key's token endpoint (a stand-in for Google's, on
// loopback); an endpoint that refuses the key makes a permanent error, not
// "not found", without a retry; a broken key is refused by New.
func TestCredentialsFile(t *testing.T) {
	srv := testenv.GCSStart(t)
	bucket := newBucket(t, srv)
	t.Setenv("STORAGE_EMULATOR_HOST", "")

	var refuse atomic.Bool
	var tokens atomic.Int64
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tokens.Add(1)
		if r.ParseForm() != nil || r.Form.Get("assertion") == "" {
			http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if refuse.Load() {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`))
			return
		}
		w.Write([]byte(`{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}`))
	}))
	defer tokenSrv.Close()

	// A proxy in front of the GCS server that records the Authorization
	// headers.
	target, _ := url.Parse("http://" + srv.Host)
	var mu sync.Mutex
	var auths []string
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	defer front.Close()

	key := keyFile(t, tokenSrv.URL+"/token")
	s := mustNew(t, Config{Bucket: bucket, Endpoint: front.URL + "/storage/v1/", CredentialsFile: key})
	ctx := t.Context()
	if err := s.Put(ctx, "k", bytes.NewReader([]byte("x")), storage.PutOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for _, a := range auths {
		if a != "Bearer tok-1" {
			t.Errorf("a request carried Authorization %q, want the token", a)
		}
	}
	n := len(auths)
	mu.Unlock()
	if n < 2 || tokens.Load() != 1 {
		t.Errorf("%d requests and %d token requests, want at least 2 and exactly 1", n, tokens.Load())
	}

	refuse.Store(true)
	tokens.Store(0)
	s2 := mustNew(t, Config{Bucket: bucket, Endpoint: front.URL + "/storage/v1/", CredentialsFile: key})
	_, err := s2.Stat(ctx, "k")
	if err == nil || storage.IsNotFound(err) || !storage.IsPermanent(err) {
		t.Errorf("Stat with a refused key: %v, want a permanent error", err)
	}
	if tokens.Load() != 1 {
		t.Errorf("a refused key was sent %d times, want once", tokens.Load())
	}

	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"type":"service_account","client_email":"a@b","private_key":"nope","token_uri":"http://127.0.0.1:1/"}`), 0o600)
	if _, err := New(ctx, Config{Bucket: bucket, CredentialsFile: bad}); err == nil {
		t.Error("New with a broken private key succeeded")
	}
	if _, err := New(ctx, Config{Bucket: bucket, CredentialsFile: filepath.Join(t.TempDir(), "missing.json")}); err == nil {
		t.Error("New with a missing key file succeeded")
	}
}
