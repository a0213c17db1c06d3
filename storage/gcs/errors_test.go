package gcs

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"golang.org/x/oauth2"

	"github.com/pgark/pgark/storage"
)

// TestMapErrBucket: GCS answers a read in a missing bucket with a 404 too;
// its message tells it from a missing object, and only the latter is
// ErrNotFound. (fake-gcs-server sends no message, so this is checked on the
// errors GCS sends.)
func TestMapErrBucket(t *testing.T) {
	s := &Store{name: "bkt"}
	noObject := &apiError{Code: 404, Message: "No such object: bkt/k", Reason: "notFound"}
	noBucket := &apiError{Code: 404, Message: "The specified bucket does not exist.", Reason: "notFound"}
	if err := s.mapErr("stat", opRead, "k", noObject); !storage.IsNotFound(err) {
		t.Errorf("missing object: %v, want ErrNotFound", err)
	}
	for _, kind := range []opKind{opRead, opWrite, opOther} {
		err := s.mapErr("op", kind, "k", noBucket)
		if storage.IsNotFound(err) || !storage.IsPermanent(err) {
			t.Errorf("missing bucket (kind %d): %v, want a permanent error that is not ErrNotFound", kind, err)
		}
	}
	if err := s.mapErr("list", opOther, "", noObject); storage.IsNotFound(err) || !storage.IsPermanent(err) {
		t.Errorf("404 on a listing: %v, want a permanent error about the bucket", err)
	}
	for code, retry := range map[int]bool{429: true, 500: true, 502: true, 503: true, 408: true, 400: false, 401: false, 403: false} {
		err := s.mapErr("get", opRead, "k", &apiError{Code: code})
		if storage.IsPermanent(err) == retry {
			t.Errorf("status %d: %v; retryable %v, want %v", code, err, !storage.IsPermanent(err), retry)
		}
		if retryable(&apiError{Code: code}) != retry {
			t.Errorf("status %d: the client's own retry is %v, want %v", code, !retry, retry)
		}
	}
	if err := s.mapErr("put", opWrite, "k", &apiError{Code: 412}); !storage.IsExists(err) {
		t.Errorf("412 on a create: %v, want ErrExists", err)
	}
}

// TestMapErrToken: a token endpoint that refuses the key is permanent; one
// that fails for a while is retried. (The HTTP client wraps the token
// source's error in a *url.Error.)
func TestMapErrToken(t *testing.T) {
	s := &Store{name: "bkt"}
	wrap := func(err error) error { return &url.Error{Op: "Get", URL: "https://storage.googleapis.com/", Err: err} }
	refused := &oauth2.RetrieveError{Response: &http.Response{StatusCode: 400}, Body: []byte(`{"error":"invalid_grant"}`)}
	if err := s.mapErr("get", opRead, "k", wrap(fmt.Errorf("oauth2: %w", refused))); !storage.IsPermanent(err) || storage.IsNotFound(err) {
		t.Errorf("refused token: %v, want a permanent error", err)
	}
	if retryable(wrap(refused)) {
		t.Error("refused token: the client would try again")
	}
	unavailable := &oauth2.RetrieveError{Response: &http.Response{StatusCode: 503}}
	if err := s.mapErr("get", opRead, "k", wrap(unavailable)); storage.IsPermanent(err) {
		t.Errorf("token endpoint unavailable: %v, want a retryable error", err)
	}
}

// TestEndpoints: the JSON API and upload URLs from the endpoint option and
// STORAGE_EMULATOR_HOST.
func TestEndpoints(t *testing.T) {
	t.Setenv("STORAGE_EMULATOR_HOST", "")
	for _, c := range []struct {
		endpoint, emulator, api, upload string
		anonymous                       bool
	}{
		{"", "", "https://storage.googleapis.com/storage/v1/", "https://storage.googleapis.com/upload/storage/v1/", false},
		{"https://storage-x.p.googleapis.com/storage/v1/", "", "https://storage-x.p.googleapis.com/storage/v1/", "https://storage-x.p.googleapis.com/upload/storage/v1/", false},
		{"http://127.0.0.1:4443", "", "http://127.0.0.1:4443/storage/v1/", "http://127.0.0.1:4443/upload/storage/v1/", false},
		{"", "127.0.0.1:9023", "http://127.0.0.1:9023/storage/v1/", "http://127.0.0.1:9023/upload/storage/v1/", true},
		{"", "https://gcs.test:443/", "https://gcs.test:443/storage/v1/", "https://gcs.test:443/upload/storage/v1/", true},
		{"http://127.0.0.1:1/storage/v1/", "127.0.0.1:9023", "http://127.0.0.1:1/storage/v1/", "http://127.0.0.1:1/upload/storage/v1/", true},
	} {
		t.Setenv("STORAGE_EMULATOR_HOST", c.emulator)
		api, upload, anon, err := endpoints(Config{Endpoint: c.endpoint})
		if err != nil || api != c.api || upload != c.upload || anon != c.anonymous {
			t.Errorf("endpoints(%q, emulator %q) = %q, %q, %v, %v; want %q, %q, %v", c.endpoint, c.emulator, api, upload, anon, err, c.api, c.upload, c.anonymous)
		}
	}
	t.Setenv("STORAGE_EMULATOR_HOST", "")
	for _, bad := range []string{"ftp://x/", "storage.googleapis.com", "https:///storage/v1/", "https://x/storage/v1/?a=b"} {
		if _, _, _, err := endpoints(Config{Endpoint: bad}); err == nil {
			t.Errorf("endpoint %q accepted", bad)
		}
	}
}
