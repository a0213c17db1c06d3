package gcs

import (
	"fmt"
	"net/http"
	"testing"

	"cloud.google.com/go/auth"
	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"

	"github.com/pgark/pgark/storage"
)

// TestMapErrBucket: GCS answers a read in a missing bucket with a 404 too;
// its message tells it from a missing object, and only the latter is
// ErrNotFound. (fake-gcs-server sends no message, so this is checked on the
// errors GCS sends, as the client wraps them.)
func TestMapErrBucket(t *testing.T) {
	s := &Store{name: "bkt"}
	noObject := fmt.Errorf("%w: %w", gcs.ErrObjectNotExist, &googleapi.Error{Code: 404, Message: "No such object: bkt/k"})
	noBucket := fmt.Errorf("%w: %w", gcs.ErrObjectNotExist, &googleapi.Error{Code: 404, Message: "The specified bucket does not exist."})
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
		err := s.mapErr("get", opRead, "k", &googleapi.Error{Code: code})
		if storage.IsPermanent(err) == retry {
			t.Errorf("status %d: %v; retryable %v, want %v", code, err, !storage.IsPermanent(err), retry)
		}
	}
	if err := s.mapErr("put", opWrite, "k", &googleapi.Error{Code: 412}); !storage.IsExists(err) {
		t.Errorf("412 on a create: %v, want ErrExists", err)
	}
}

// TestMapErrToken: a token endpoint that refuses the key is permanent; one
// that fails for a while is retried.
func TestMapErrToken(t *testing.T) {
	s := &Store{name: "bkt"}
	refused := &auth.Error{Response: &http.Response{StatusCode: 400}, Body: []byte(`{"error":"invalid_grant"}`)}
	if err := s.mapErr("get", opRead, "k", fmt.Errorf("wrapped: %w", refused)); !storage.IsPermanent(err) || storage.IsNotFound(err) {
		t.Errorf("refused token: %v, want a permanent error", err)
	}
	unavailable := &auth.Error{Response: &http.Response{StatusCode: 503}}
	if err := s.mapErr("get", opRead, "k", unavailable); storage.IsPermanent(err) {
		t.Errorf("token endpoint unavailable: %v, want a retryable error", err)
	}
}
