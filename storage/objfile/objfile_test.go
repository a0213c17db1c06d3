package objfile

import (
	"bytes"
	"errors"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, meta := range []map[string]string{nil, {"pgark-size": "3", "k": "v"}} {
		h, err := EncodeHeader(meta)
		if err != nil {
			t.Fatal(err)
		}
		r := bytes.NewReader(append(h, "abc"...))
		got, hlen, err := ReadHeader(r)
		if err != nil {
			t.Fatal(err)
		}
		if hlen != int64(len(h)) || len(got) != len(meta) {
			t.Fatalf("header length %d (want %d), meta %v (want %v)", hlen, len(h), got, meta)
		}
		for k, v := range meta {
			if got[k] != v {
				t.Fatalf("meta[%s] = %q, want %q", k, got[k], v)
			}
		}
		if r.Len() != 3 {
			t.Fatalf("reader left at %d bytes before the end, want 3", r.Len())
		}
	}
}

func TestCorruptHeaders(t *testing.T) {
	for name, b := range map[string]string{
		"short":    "PGARK",
		"badmagic": "NOTPGARK\x00\x00\x00\x00",
		"huge":     Magic + "\x40\x00\x00\x00",
		"badjson":  Magic + "\x00\x00\x00\x02{x",
	} {
		_, _, err := ReadHeader(bytes.NewReader([]byte(b)))
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Errorf("%s: %v, want a CorruptError", name, err)
		}
	}
}

func TestVersionDiffers(t *testing.T) {
	if Version([]byte("a")) == Version([]byte("b")) || len(Version(nil)) != 32 {
		t.Fatal("versions of different files are equal, or not 32 hex digits")
	}
}
