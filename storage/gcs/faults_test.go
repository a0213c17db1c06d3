package gcs

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/faultproxy"
	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/retry"
)

// TestTransientFaults drives the store through the fault proxy (500s,
// 503s, connection resets before and during answers, bodies cut short)
// behind the retry decorator, as openStore builds it: every Put, Stat, Get,
// List and compare-and-swap ends with the right result. A resumable
// upload's chunks (PUT to the session URL, through the proxy too) get only
// the faults that never reach the server: fake-gcs-server appends a chunk
// sent again instead of ignoring the bytes it already holds, as GCS does.
func TestTransientFaults(t *testing.T) {
	srv := testenv.GCSStart(t)
	bucket := newBucket(t, srv)
	proxy := faultproxy.Start(t, "http://"+srv.Host)
	inner := mustNew(t, Config{Bucket: bucket, Prefix: "faults", Endpoint: proxy.URL + "/storage/v1/", Anonymous: true, ChunkSize: ChunkAlign})
	direct := mustNew(t, Config{Bucket: bucket, Prefix: "faults", Endpoint: srv.Endpoint, Anonymous: true})
	s := retry.New(inner, retry.Config{MaxElapsed: time.Minute, Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond}, nil)
	everything := faultproxy.Faults{Rate: 0.3, Kinds: faultproxy.Transient, Methods: []string{"GET", "POST", "DELETE"}}
	unsent := faultproxy.Faults{Rate: 0.3, Kinds: []faultproxy.Kind{faultproxy.Err500, faultproxy.SlowDown, faultproxy.ResetRequest}}
	proxy.Set(everything)
	ctx := t.Context()

	const n = 24
	objects := make(map[string][]byte, n)
	for i := range n {
		data := make([]byte, (i%6)*40<<10+i) // up to 200 KiB: one-request uploads
		proxy.Set(everything)
		if i%8 == 7 {
			data = make([]byte, 2*ChunkAlign+i) // resumable
			proxy.Set(unsent)
		}
		rand.Read(data)
		key := fmt.Sprintf("wal/%04d", i)
		objects[key] = data
		meta := map[string]string{"pgark-size": strconv.Itoa(len(data))}
		err := s.Put(ctx, key, bytes.NewReader(data), storage.PutOptions{Size: int64(len(data)), Meta: meta})
		if storage.IsExists(err) {
			// A retry after a lost answer: the callers compare contents.
			err = sameContent(t, direct, key, data)
		}
		if err != nil {
			t.Fatalf("Put(%s) through faults: %v", key, err)
		}
	}
	for key, data := range objects {
		info, err := s.Stat(ctx, key)
		if err != nil || info.Size != int64(len(data)) || info.Meta["pgark-size"] != strconv.Itoa(len(data)) {
			t.Fatalf("Stat(%s) through faults: %+v, %v", key, info, err)
		}
		got := getRetrying(t, s, key)
		if !bytes.Equal(got, data) {
			t.Fatalf("Get(%s) through faults: %d bytes differ from the %d stored", key, len(got), len(data))
		}
	}
	proxy.Set(everything)
	listed := 0
	for attempt := 0; ; attempt++ {
		listed = 0
		err := s.List(ctx, "wal/", func(storage.ObjectInfo) error { listed++; return nil })
		if err == nil {
			break
		}
		if attempt == 20 {
			t.Fatalf("List through faults: %v", err)
		}
	}
	if listed != n {
		t.Fatalf("List through faults: %d objects, want %d", listed, n)
	}

	// A counter kept by compare-and-swap: every increment lands once.
	const incs = 15
	for i := 1; i <= incs; i++ {
		for {
			payload := []byte(strconv.Itoa(i))
			_, ver, err := s.ReadSmall(ctx, "counter", 64)
			if storage.IsNotFound(err) {
				ver, err = "", nil
			}
			if err != nil {
				t.Fatalf("ReadSmall(counter) through faults: %v", err)
			}
			_, err = s.Swap(ctx, "counter", payload, ver)
			if err == nil {
				break
			}
			if !errors.Is(err, storage.ErrChanged) && !storage.IsExists(err) {
				t.Fatalf("Swap(counter, %d) through faults: %v", i, err)
			}
			// The write may have landed with its answer lost.
			got, _, rerr := direct.ReadSmall(ctx, "counter", 64)
			if rerr == nil && bytes.Equal(got, payload) {
				break
			}
		}
	}
	got, _, err := direct.ReadSmall(ctx, "counter", 64)
	if err != nil || string(got) != strconv.Itoa(incs) {
		t.Fatalf("counter after %d increments through faults: %q, %v", incs, got, err)
	}
	if proxy.TotalInjected() == 0 {
		t.Fatalf("no fault was injected in %d requests", proxy.Requests())
	}
	t.Logf("%d requests, faults injected: %v", proxy.Requests(), proxy.Injected())
}

// sameContent is what callers do on ErrExists: the stored object must be
// the one they meant to write.
func sameContent(t *testing.T, s storage.Store, key string, want []byte) error {
	t.Helper()
	got := getRetrying(t, s, key)
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s exists with other content", key)
	}
	return nil
}

// getRetrying reads an object whole, again after a read error (a body cut
// short), as wal-fetch does.
func getRetrying(t *testing.T, s storage.Store, key string) []byte {
	t.Helper()
	var lastErr error
	for range 20 {
		rc, _, err := s.Get(t.Context(), key)
		if err != nil {
			t.Fatalf("Get(%s): %v", key, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err == nil {
			return b
		}
		if !storage.IsReadError(err) {
			t.Fatalf("Get(%s): reading: %v is not a ReadError", key, err)
		}
		lastErr = err
	}
	t.Fatalf("Get(%s): 20 reads failed, the last: %v", key, lastErr)
	return nil
}

// TestForbidden: a 403 is a permanent error and never "not found", for
// every operation.
func TestForbidden(t *testing.T) {
	srv := testenv.GCSStart(t)
	bucket := newBucket(t, srv)
	proxy := faultproxy.Start(t, "http://"+srv.Host)
	s := mustNew(t, Config{Bucket: bucket, Endpoint: proxy.URL + "/storage/v1/", Anonymous: true})
	ctx := t.Context()
	if err := s.Put(ctx, "k", bytes.NewReader([]byte("x")), storage.PutOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	proxy.Set(faultproxy.Faults{Rate: 1, Kinds: []faultproxy.Kind{faultproxy.Forbidden}})
	check := func(what string, err error) {
		t.Helper()
		var pe *storage.PermanentError
		if err == nil || storage.IsNotFound(err) || !errors.As(err, &pe) {
			t.Errorf("%s answered 403: %v, want a permanent error that is not ErrNotFound", what, err)
		}
	}
	for _, key := range []string{"k", "missing"} {
		_, err := s.Stat(ctx, key)
		check("Stat("+key+")", err)
		_, _, err = s.Get(ctx, key)
		check("Get("+key+")", err)
		_, _, err = s.ReadSmall(ctx, key, 10)
		check("ReadSmall("+key+")", err)
		check("Delete("+key+")", s.Delete(ctx, key))
	}
	check("Put", s.Put(ctx, "new", bytes.NewReader([]byte("x")), storage.PutOptions{Size: 1}))
	_, err := s.Swap(ctx, "lock", []byte("{}"), "")
	check("Swap", err)
	check("List", s.List(ctx, "", func(storage.ObjectInfo) error { return nil }))
}
