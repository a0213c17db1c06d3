package azure

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/storage"
)

// containerSAS returns a container SAS token for srv with perms.
func containerSAS(t *testing.T, srv *testenv.AzureServer, cont string, perms sas.ContainerPermissions) string {
	t.Helper()
	cred, err := azblob.NewSharedKeyCredential(srv.Account, srv.Key)
	if err != nil {
		t.Fatal(err)
	}
	qp, err := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPSandHTTP,
		ExpiryTime:    time.Now().Add(time.Hour).UTC(),
		ContainerName: cont,
		Permissions:   perms.String(),
	}.SignWithSharedKey(cred)
	if err != nil {
		t.Fatal(err)
	}
	return qp.Encode()
}

// TestPushHostSAS checks the permissions docs/azure.md gives push hosts
// (read, create, write; no delete, no list): every write and read of a
// push works, and a delete or a list is refused with a permanent error
// that is not not-found.
func TestPushHostSAS(t *testing.T) {
	srv := testenv.AzureStart(t)
	cont := newContainer(t, srv)
	token := containerSAS(t, srv, cont, sas.ContainerPermissions{Read: true, Create: true, Write: true})
	s := mustNew(t, Config{Container: cont, Prefix: "push", Endpoint: srv.Endpoint, SASToken: "?" + token, BlockSize: MinBlockSize})
	ctx := t.Context()

	big := make([]byte, 2*MinBlockSize+100)
	rand.Read(big)
	for key, data := range map[string][]byte{"small": []byte("wal segment"), "big": big} {
		if err := s.Put(ctx, key, bytes.NewReader(data), storage.PutOptions{Size: int64(len(data)), Meta: map[string]string{"pgark-size": "1"}}); err != nil {
			t.Fatalf("Put %s with a push-host SAS: %v", key, err)
		}
		err := s.Put(ctx, key, bytes.NewReader(data), storage.PutOptions{Size: int64(len(data))})
		if !storage.IsExists(err) {
			t.Fatalf("second Put %s: %v, want ErrExists", key, err)
		}
		rc, info, err := s.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, data) || info.Meta["pgark-size"] != "1" {
			t.Fatalf("Get %s: %d bytes, meta %v", key, len(got), info.Meta)
		}
	}
	if _, err := s.Stat(ctx, "missing"); !storage.IsNotFound(err) {
		t.Fatalf("Stat of a missing key: %v, want not found", err)
	}
	v, err := s.Swap(ctx, "cluster.json", []byte("{}"), "")
	if err != nil {
		t.Fatalf("Swap (create): %v", err)
	}
	if _, err := s.Swap(ctx, "cluster.json", []byte(`{"a":1}`), v); err != nil {
		t.Fatalf("Swap (replace): %v", err)
	}
	err = s.List(ctx, "", func(storage.ObjectInfo) error { return nil })
	if err == nil || !storage.IsPermanent(err) || storage.IsNotFound(err) {
		t.Fatalf("List with a SAS without list: %v, want a permanent error", err)
	}
	err = s.Delete(ctx, "small")
	if err == nil || storage.IsNotFound(err) || !storage.IsPermanent(err) || !strings.Contains(err.Error(), "403") {
		t.Fatalf("Delete with a SAS without delete: %v, want a permanent 403", err)
	}
	if _, err := s.Stat(ctx, "small"); err != nil {
		t.Fatalf("the object is gone after a refused delete: %v", err)
	}

	// A read-only SAS cannot write.
	ro := mustNew(t, Config{Container: cont, Prefix: "push", Endpoint: srv.Endpoint, SASToken: containerSAS(t, srv, cont, sas.ContainerPermissions{Read: true, List: true})})
	err = ro.Put(ctx, "new", strings.NewReader("x"), storage.PutOptions{Size: 1})
	if err == nil || storage.IsExists(err) || !storage.IsPermanent(err) {
		t.Fatalf("Put with a read-only SAS: %v, want a permanent error", err)
	}
}

// TestSASNotInErrors checks that a connection error does not show the SAS
// token's signature (Go's transport errors name the whole URL).
func TestSASNotInErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	s := mustNew(t, Config{Container: "backups", Endpoint: "http://" + addr + "/acct", SASToken: "sv=2024-01-01&sp=r&sig=SECRETSIGNATURE", Retries: -1})
	_, err = s.Stat(t.Context(), "obj")
	if err == nil {
		t.Fatal("Stat against a closed port succeeded")
	}
	if strings.Contains(err.Error(), "SECRETSIGNATURE") {
		t.Fatalf("the error shows the SAS signature: %v", err)
	}
	if storage.IsPermanent(err) {
		t.Errorf("a connection error is permanent: %v", err)
	}
	err = s.Put(t.Context(), "obj", strings.NewReader("x"), storage.PutOptions{Size: 1})
	if err == nil || strings.Contains(err.Error(), "SECRETSIGNATURE") {
		t.Fatalf("Put: %v", err)
	}
}
