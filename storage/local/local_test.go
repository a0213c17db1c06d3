package local

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/storagetest"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store { return newStore(t) })
}

func TestNewNotADirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(f); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("New(file): %v", err)
	}
	if _, err := New(""); err == nil {
		t.Fatal("New(\"\") succeeded")
	}
}

func TestFileLayout(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	if err := s.Put(ctx, "a/b/obj", strings.NewReader("payload"), storage.PutOptions{Size: -1, Meta: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.Root(), "a", "b", "obj")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	js := `{"k":"v"}`
	want := magic + string(binary.BigEndian.AppendUint32(nil, uint32(len(js)))) + js + "payload"
	if string(b) != want {
		t.Fatalf("file content %q, want %q", b, want)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&^0o640 != 0 {
		t.Errorf("file mode %v", fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(p))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm()&^0o750 != 0 {
		t.Errorf("dir mode %v", di.Mode())
	}
	// No temporary files are left behind.
	ents, err := os.ReadDir(filepath.Dir(p))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want 1", len(ents))
	}
}

func TestTempFilesNotListed(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	if err := s.Put(ctx, "w/obj", strings.NewReader("x"), storage.PutOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	// A crashed writer's leftover.
	if err := os.WriteFile(filepath.Join(s.Root(), "w", ".tmp-123"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := s.List(ctx, "", func(oi storage.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != "w/obj" {
		t.Fatalf("List = %q", keys)
	}
	if err := s.Put(ctx, "w/.tmp-123", strings.NewReader("x"), storage.PutOptions{Size: 1}); err == nil || !storage.IsPermanent(err) {
		t.Fatalf("Put of a temp-file name: %v", err)
	}
}

func TestCorruptObjects(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	dir := filepath.Join(s.Root(), "c")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	hdr := func(n uint32) string { return magic + string(binary.BigEndian.AppendUint32(nil, n)) }
	for name, content := range map[string]string{
		"empty":     "",
		"short":     "PGARK",
		"badmagic":  "NOTPGARK\x00\x00\x00\x00payload",
		"huge":      hdr(1 << 30),
		"truncated": hdr(100) + `{"k":`,
		"badjson":   hdr(5) + `{"k":` + "payload",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		key := "c/" + name
		_, err := s.Stat(ctx, key)
		if err == nil || storage.IsNotFound(err) || !storage.IsPermanent(err) || !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("Stat(%s): %v", name, err)
		}
		if _, _, err := s.Get(ctx, key); err == nil || storage.IsNotFound(err) {
			t.Errorf("Get(%s): %v", name, err)
		}
	}
	err := s.List(ctx, "c/", func(storage.ObjectInfo) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("List over corrupt objects: %v", err)
	}
}

func TestPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores file permissions")
	}
	s := newStore(t)
	ctx := t.Context()
	if err := s.Put(ctx, "p/obj", strings.NewReader("x"), storage.PutOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.Root(), "p")
	if err := os.Chmod(dir, 0); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o750)
	_, err := s.Stat(ctx, "p/obj")
	if err == nil || storage.IsNotFound(err) || !storage.IsPermanent(err) {
		t.Fatalf("Stat in an unreadable directory: %v", err)
	}
	err = s.Put(ctx, "p/obj2", strings.NewReader("x"), storage.PutOptions{Size: 1})
	if err == nil || !storage.IsPermanent(err) {
		t.Fatalf("Put in an unwritable directory: %v", err)
	}
}

func TestKeyBelowObject(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	if err := s.Put(ctx, "k/obj", strings.NewReader("x"), storage.PutOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	// "k/obj" is a file, so "k/obj/x" cannot be stored; that is an error,
	// not "exists".
	err := s.Put(ctx, "k/obj/x", strings.NewReader("x"), storage.PutOptions{Size: 1})
	if err == nil || storage.IsExists(err) {
		t.Fatalf("Put below an object: %v", err)
	}
	// And the other way round.
	err = s.Put(ctx, "k", bytes.NewReader(nil), storage.PutOptions{Size: 0})
	if err == nil || storage.IsExists(err) {
		t.Fatalf("Put of a directory name: %v", err)
	}
	if err := s.Delete(ctx, "k"); err != nil {
		t.Fatalf("Delete of a directory name: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "k", "obj")); err != nil {
		t.Fatal(err)
	}
}
