package azure

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/storagetest"
)

var containerSeq atomic.Int64

// newContainer creates a fresh container on srv.
func newContainer(t *testing.T, srv *testenv.AzureServer) string {
	t.Helper()
	name := fmt.Sprintf("pgark-test-%d", containerSeq.Add(1))
	srv.CreateContainer(t, name)
	return name
}

// keyConfig returns a Config for a container on srv with the account key.
func keyConfig(srv *testenv.AzureServer, cont, prefix string) Config {
	return Config{Container: cont, Prefix: prefix, Endpoint: srv.Endpoint, Account: srv.Account, AccountKey: srv.Key}
}

func mustNew(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := testenv.AzureStart(t)
	storagetest.Run(t, func(t *testing.T) storage.Store {
		return mustNew(t, keyConfig(srv, newContainer(t, srv), "repo/main"))
	})
}

// TestConformanceSmallPages runs the suite with List pages of 100 blobs
// (the service's default is 5000), so that listings cross page markers.
func TestConformanceSmallPages(t *testing.T) {
	srv := testenv.AzureStart(t)
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s := mustNew(t, keyConfig(srv, newContainer(t, srv), "small/pages"))
		s.listPage = 100
		return s
	})
}

func TestConformanceConnectionString(t *testing.T) {
	srv := testenv.AzureStart(t)
	storagetest.RunCreateOnly(t, func(t *testing.T) storage.Store {
		// No prefix, the smallest blocks: staged uploads for most objects.
		return mustNew(t, Config{Container: newContainer(t, srv), ConnectionString: srv.ConnectionString(), BlockSize: MinBlockSize})
	})
}

func TestProbeConditionalWrites(t *testing.T) {
	srv := testenv.AzureStart(t)
	cont := newContainer(t, srv)
	s := mustNew(t, keyConfig(srv, cont, "probe"))
	if err := s.ProbeConditionalWrites(t.Context()); err != nil {
		t.Fatalf("ProbeConditionalWrites: %v", err)
	}
	// The probe blob is gone.
	p := srv.ContainerClient(t, cont).NewListBlobsFlatPager(nil)
	for p.More() {
		page, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			t.Errorf("probe left blob %q", *b.Name)
		}
	}
}

func TestErrorsArePermanent(t *testing.T) {
	srv := testenv.AzureStart(t)
	cont := newContainer(t, srv)
	good := mustNew(t, keyConfig(srv, cont, "p"))
	if err := good.Put(t.Context(), "obj", strings.NewReader("x"), storage.PutOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	wrongKey := keyConfig(srv, cont, "p")
	wrongKey.AccountKey = "bm90IHRoZSBrZXk=" // base64 of "not the key"
	noContainer := keyConfig(srv, "pgark-no-such-container", "p")
	for name, cfg := range map[string]Config{"wrong key": wrongKey, "missing container": noContainer} {
		s := mustNew(t, cfg)
		check := func(op string, err error) {
			t.Helper()
			if err == nil || storage.IsNotFound(err) || !storage.IsPermanent(err) {
				t.Errorf("%s: %s: got %v, want a permanent error that is not not-found", name, op, err)
			}
		}
		for _, key := range []string{"obj", "missing"} {
			_, err := s.Stat(t.Context(), key)
			check("Stat "+key, err)
			_, _, err = s.Get(t.Context(), key)
			check("Get "+key, err)
			_, _, err = s.ReadSmall(t.Context(), key, 100)
			check("ReadSmall "+key, err)
		}
		check("Put", s.Put(t.Context(), "new", strings.NewReader("x"), storage.PutOptions{Size: 1}))
		_, err := s.Swap(t.Context(), "lock", []byte("x"), "")
		check("Swap", err)
		check("List", s.List(t.Context(), "", func(storage.ObjectInfo) error { return nil }))
		check("Delete", s.Delete(t.Context(), "obj"))
	}
	// Still there.
	if _, err := good.Stat(t.Context(), "obj"); err != nil {
		t.Fatal(err)
	}
}

// TestMetadataNames checks the names stored on the service: C# identifiers.
func TestMetadataNames(t *testing.T) {
	srv := testenv.AzureStart(t)
	cont := newContainer(t, srv)
	s := mustNew(t, keyConfig(srv, cont, ""))
	meta := map[string]string{"pgark-sha256": "ab", "1k": "one", "-k": "dash"}
	if err := s.Put(t.Context(), "obj", strings.NewReader("x"), storage.PutOptions{Size: 1, Meta: meta}); err != nil {
		t.Fatal(err)
	}
	p, err := srv.ContainerClient(t, cont).NewBlobClient("obj").GetProperties(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for k, v := range p.Metadata {
		got[strings.ToLower(k)] = *v
	}
	want := map[string]string{"pgark_sha256": "ab", "_1k": "one", "__k": "dash"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stored metadata %v, want %v", got, want)
	}
}
