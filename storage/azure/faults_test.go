package azure

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/faultproxy"
	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/retry"
)

// TestFaults writes and reads through a proxy that answers 25% of the
// requests with a 500 or a 503, resets the connection before or during the
// answer, or cuts the body short, with the store wrapped in the retry
// decorator as pgark opens it. Every Put ends in success, or in ErrExists
// when a lost answer hid an earlier attempt that did store the object (the
// caller then compares contents, as wal-push does); once the proxy heals,
// every object reads back byte for byte, once, and nothing else is stored.
func TestFaults(t *testing.T) {
	srv := testenv.AzureStart(t)
	cont := newContainer(t, srv)
	proxy := faultproxy.Start(t, srv.BaseURL())
	cfg := keyConfig(srv, cont, "faults")
	cfg.Endpoint = proxy.URL + "/" + srv.Account
	cfg.BlockSize = MinBlockSize
	cfg.ReadTimeout = 3 * time.Second
	inner := mustNew(t, cfg)
	st := retry.New(inner, retry.Config{MaxElapsed: 2 * time.Minute, Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond}, nil)
	direct := mustNew(t, keyConfig(srv, cont, "faults"))

	// Small objects (one Put Blob) and staged ones (3.5 blocks), from
	// seekable readers (retried by the decorator) and plain ones (one
	// attempt of the decorator; the SDK retries each block).
	want := map[string][]byte{}
	for i := range 40 {
		size := 1000 + i
		if i%8 == 0 {
			size = 3*MinBlockSize + MinBlockSize/2
		}
		data := make([]byte, size)
		rand.Read(data)
		want[fmt.Sprintf("obj/%03d", i)] = data
	}
	proxy.Set(faultproxy.Faults{Rate: 0.25, Kinds: faultproxy.Transient})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	sem := make(chan struct{}, 4)
	for key, data := range want {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			var r io.Reader = bytes.NewReader(data)
			if len(data) > MinBlockSize && key[len(key)-1]%2 == 0 {
				r = io.MultiReader(r) // not seekable
			}
			err := st.Put(t.Context(), key, r, storage.PutOptions{Size: int64(len(data)), Meta: map[string]string{"pgark-size": fmt.Sprint(len(data))}})
			if err != nil && !storage.IsExists(err) {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%s: %v", key, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// Reads under faults: the decorator retries the opening; a body cut
	// short is a storage.ReadError, which a reader retries.
	for key, data := range want {
		got, err := readRetry(t, st, key)
		if err != nil {
			// Only a Put that failed may be missing.
			t.Logf("read %s under faults: %v", key, err)
			continue
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s: read back %d bytes under faults, differing from the %d put", key, len(got), len(data))
		}
	}
	t.Logf("under faults: %s", proxy)
	if proxy.TotalInjected() == 0 {
		t.Fatal("the proxy injected no fault")
	}
	proxy.Set(faultproxy.Faults{})

	// Puts of plain readers may fail for good when a block's retries all
	// hit faults; nothing may then be stored under their key.
	failedKeys := map[string]bool{}
	for _, f := range failed {
		failedKeys[f[:7]] = true
		t.Logf("put failed: %s", f)
	}
	if len(failed) > len(want)/4 {
		t.Errorf("%d of %d puts failed", len(failed), len(want))
	}
	listed := map[string]bool{}
	err := direct.List(t.Context(), "", func(oi storage.ObjectInfo) error {
		if listed[oi.Key] {
			t.Errorf("%s listed twice", oi.Key)
		}
		listed[oi.Key] = true
		data, ok := want[oi.Key]
		switch {
		case !ok:
			t.Errorf("unexpected object %s", oi.Key)
		case failedKeys[oi.Key]:
			t.Errorf("%s is stored although its Put failed", oi.Key)
		case oi.Size != int64(len(data)):
			t.Errorf("%s: size %d, want %d", oi.Key, oi.Size, len(data))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for key, data := range want {
		if failedKeys[key] {
			continue
		}
		if !listed[key] {
			t.Errorf("%s is missing", key)
			continue
		}
		rc, info, err := direct.Get(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data) || info.Meta["pgark-size"] != fmt.Sprint(len(data)) {
			t.Errorf("%s: read back %d bytes (%v), meta %v", key, len(got), err, info.Meta)
		}
	}
}

// readRetry reads an object whole, reopening it after a read error.
func readRetry(t *testing.T, st storage.Store, key string) ([]byte, error) {
	var err error
	for range 20 {
		var rc io.ReadCloser
		rc, _, err = st.Get(t.Context(), key)
		if err != nil {
			return nil, err
		}
		var got []byte
		got, err = io.ReadAll(rc)
		rc.Close()
		if err == nil {
			return got, nil
		}
		if !storage.IsReadError(err) {
			return nil, err
		}
	}
	return nil, err
}
