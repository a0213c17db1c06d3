package asof_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/asof"
	"github.com/pgark/pgark/storage/s3"
)

func put(t *testing.T, st storage.Store, key, data string) {
	t.Helper()
	if err := st.Put(t.Context(), key, bytes.NewReader([]byte(data)), storage.PutOptions{Size: int64(len(data)), Meta: map[string]string{"pgark-x": data}}); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, st storage.Store, key string) (string, error) {
	t.Helper()
	rc, info, err := st.Get(t.Context(), key)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if x, ok := info.Meta["pgark-x"]; ok && x != string(b) {
		t.Errorf("%s: metadata %q does not belong to content %q", key, info.Meta["pgark-x"], b)
	}
	return string(b), nil
}

func list(t *testing.T, st storage.Store, prefix string) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	var last string
	err := st.List(t.Context(), prefix, func(oi storage.ObjectInfo) error {
		if oi.Key <= last {
			t.Errorf("List: %q after %q, not in lexical order", oi.Key, last)
		}
		last = oi.Key
		got[oi.Key] = oi.Size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// The store as of a time shows each key's version current then: later
// overwrites, deletions and new keys are invisible; reads by key, by range
// and by listing agree; writes are refused.
func TestAsOf(t *testing.T) {
	srv := testenv.MinIOStart(t)
	srv.CreateVersionedBucket(t, "asof-test")
	live, err := s3.New(t.Context(), s3.Config{Bucket: "asof-test", Prefix: "repo", Endpoint: srv.Endpoint, Region: srv.Region,
		ForcePathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	put(t, live, "a", "a-one")
	put(t, live, "b", "b-one")
	put(t, live, "c", "c-one")
	if _, err := live.Swap(ctx, "conf", []byte("conf-one"), ""); err != nil {
		t.Fatal(err)
	}
	for i := range 1100 { // more than one page of versions (1000)
		put(t, live, "many/"+string(rune('a'+i/100))+string(rune('a'+i%100/10))+string(rune('a'+i%10)), "m")
	}
	t1 := testenv.NextSecond(t, time.Now())

	// The attack: delete, overwrite, plant.
	testenv.NextSecond(t, t1)
	if err := live.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	srv.S3PutObject(t, "asof-test", "repo/b", []byte("b-forged!"))
	_, ver, err := live.ReadSmall(ctx, "conf", 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.Swap(ctx, "conf", []byte("conf-forged"), ver); err != nil {
		t.Fatal(err)
	}
	put(t, live, "d", "d-new")
	if err := live.Delete(ctx, "many/aaa"); err != nil {
		t.Fatal(err)
	}

	past := asof.New(live, t1)
	want := map[string]string{"a": "a-one", "b": "b-one", "c": "c-one"}
	for k, v := range want {
		got, err := read(t, past, k)
		if err != nil || got != v {
			t.Errorf("as of t1, %s = %q, %v; want %q", k, got, err, v)
		}
	}
	if _, err := read(t, past, "d"); !storage.IsNotFound(err) {
		t.Errorf("as of t1, d (written later): %v, want not found", err)
	}
	if got, _, err := past.ReadSmall(ctx, "conf", 100); err != nil || string(got) != "conf-one" {
		t.Errorf("as of t1, ReadSmall(conf) = %q, %v; want conf-one", got, err)
	}
	info, err := past.Stat(ctx, "b")
	if err != nil || info.Size != 5 || info.Meta["pgark-x"] != "b-one" {
		t.Errorf("as of t1, Stat(b) = %+v, %v; want 5 bytes, b-one's metadata", info, err)
	}
	rc, err := past.GetRange(ctx, "b", 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(rc); string(b) != "one" {
		t.Errorf("as of t1, GetRange(b, 2, 3) = %q, want one", b)
	}
	rc.Close()
	all := list(t, past, "")
	if len(all) != 4+1100 || all["a"] != 5 || all["b"] != 5 || all["many/aaa"] != 1 {
		t.Errorf("as of t1, List: %d keys (a %d, b %d, many/aaa %d); want 1104 with the old sizes", len(all), all["a"], all["b"], all["many/aaa"])
	}
	if _, ok := all["d"]; ok {
		t.Error("as of t1, List shows d, written later")
	}

	// Now: the live state.
	now := asof.New(live, time.Now().Add(time.Minute))
	if _, err := read(t, now, "a"); !storage.IsNotFound(err) {
		t.Errorf("now, a (deleted): %v, want not found", err)
	}
	if got, err := read(t, now, "b"); err != nil || got != "b-forged!" {
		t.Errorf("now, b = %q, %v; want the overwrite", got, err)
	}
	if l := list(t, now, "many/"); len(l) != 1099 {
		t.Errorf("now, List(many/) has %d keys, want 1099", len(l))
	}
	// Before anything.
	if _, err := read(t, asof.New(live, t1.Add(-time.Hour)), "c"); !storage.IsNotFound(err) {
		t.Errorf("before the first write, c: %v, want not found", err)
	}

	for name, err := range map[string]error{
		"put":    past.Put(ctx, "x", bytes.NewReader(nil), storage.PutOptions{}),
		"delete": past.Delete(ctx, "c"),
		"swap": func() error {
			_, err := past.Swap(ctx, "conf", []byte("x"), "")
			return err
		}(),
	} {
		if !errors.Is(err, asof.ErrReadOnly) || !storage.IsPermanent(err) {
			t.Errorf("%s through the past view: %v, want a permanent ErrReadOnly", name, err)
		}
	}
	if got, err := read(t, live, "c"); err != nil || got != "c-one" {
		t.Errorf("c after a refused delete: %q, %v", got, err)
	}
}
