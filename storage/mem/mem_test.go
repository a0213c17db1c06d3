package mem

import (
	"bytes"
	"testing"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store { return New(t.Name()) })
}

// TestNoAliasing: the store keeps neither the caller's buffers nor hands out
// its own: changing them afterwards changes no stored object.
func TestNoAliasing(t *testing.T) {
	ctx := t.Context()
	s := New("")
	data := []byte("original")
	meta := map[string]string{"k": "v"}
	if err := s.Put(ctx, "a", bytes.NewReader(data), storage.PutOptions{Size: -1, Meta: meta}); err != nil {
		t.Fatal(err)
	}
	copy(data, "XXXXXXXX")
	meta["k"] = "changed"
	st, err := s.Stat(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	st.Meta["k"] = "changed too"
	small := []byte("small")
	if _, err := s.Swap(ctx, "b", small, ""); err != nil {
		t.Fatal(err)
	}
	copy(small, "XXXXX")
	got, _, err := s.ReadSmall(ctx, "a", 100)
	if err != nil {
		t.Fatal(err)
	}
	copy(got, "YYYYYYYY")
	for key, want := range map[string]string{"a": "original", "b": "small"} {
		b, _, err := s.ReadSmall(ctx, key, 100)
		if err != nil || string(b) != want {
			t.Errorf("ReadSmall(%q) = %q, %v; want %q", key, b, err, want)
		}
	}
	if st, _ := s.Stat(ctx, "a"); st.Meta["k"] != "v" {
		t.Errorf("metadata changed through the caller's map: %v", st.Meta)
	}
}
