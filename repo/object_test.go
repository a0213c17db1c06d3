package repo

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/pgark/pgark/crypto"
)

func keys(t *testing.T) (*crypto.Recipients, *crypto.Identities) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "id")
	recip, err := crypto.GenerateIdentity(f)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := crypto.ParseRecipients(recip, "")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := crypto.LoadIdentities(f)
	if err != nil {
		t.Fatal(err)
	}
	return rs, ids
}

func seal(t *testing.T, c Codec, plain []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewObjectWriter(&buf, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, bytes.NewReader(plain)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func open(obj []byte, o ReadOptions) ([]byte, error) {
	r, err := NewObjectReader(bytes.NewReader(obj), o)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out bytes.Buffer
	_, err = io.Copy(&out, r)
	return out.Bytes(), err
}

func TestObjectRoundTrip(t *testing.T) {
	rs, ids := keys(t)
	plain := append(bytes.Repeat([]byte("wal record "), 100000), make([]byte, 1<<20)...)
	rnd := make([]byte, 3<<20)
	rand.Read(rnd)
	for _, tc := range []struct {
		name string
		c    Codec
		enc  bool
	}{
		{"zstd+age", Codec{Compression: "zstd", Level: 3, Recipients: rs}, true},
		{"zstd", Codec{Compression: "zstd", Level: 1}, false},
		{"zstd-19", Codec{Compression: "zstd", Level: 19}, false},
		{"none+age", Codec{Compression: "none", Recipients: rs}, true},
		{"none", Codec{Compression: "none"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range [][]byte{plain, rnd, {}} {
				obj := seal(t, tc.c, p)
				got, err := open(obj, ReadOptions{Identities: ids, RequireEncrypted: tc.enc})
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, p) {
					t.Fatalf("round trip changed %d bytes into %d", len(p), len(got))
				}
				if tc.c.Compression == "zstd" && len(p) == len(plain) && len(obj) > len(p)/10 {
					t.Errorf("zstd did not compress repetitive data: %d -> %d", len(p), len(obj))
				}
				if tc.enc && bytes.Contains(obj, []byte("wal record wal record")) {
					t.Error("plaintext visible in an encrypted object")
				}
			}
		})
	}
}

func TestObjectFailures(t *testing.T) {
	rs, ids := keys(t)
	_, otherIDs := keys(t)
	plain := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	enc := seal(t, Codec{Compression: "zstd", Level: 3, Recipients: rs}, plain)
	clear := seal(t, Codec{Compression: "zstd", Level: 3}, plain)

	if _, err := open(enc, ReadOptions{Identities: otherIDs}); !errors.Is(err, crypto.ErrNoMatchingIdentity) {
		t.Errorf("wrong identity: %v", err)
	}
	if _, err := open(enc, ReadOptions{}); !errors.Is(err, crypto.ErrMissingIdentity) {
		t.Errorf("no identity: %v", err)
	}
	if _, err := open(clear, ReadOptions{RequireEncrypted: true}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("unencrypted object in an encrypted repository: %v", err)
	}
	for name, obj := range map[string][]byte{
		"enc truncated":   enc[:len(enc)-100],
		"enc flipped":     flip(enc, len(enc)/2),
		"clear truncated": clear[:len(clear)-10],
		"clear flipped":   flip(clear, len(clear)-6),
		"bad magic":       flip(clear, 0),
		"header only":     clear[:headerSize],
		"empty":           nil,
		"unknown enc":     setByte(clear, headerSize-1, 9),
		"unknown comp":    setByte(clear, headerSize, 9),
	} {
		got, err := open(obj, ReadOptions{Identities: ids})
		if err == nil {
			t.Errorf("%s: accepted (%d bytes)", name, len(got))
		}
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x40
	return c
}

func setByte(b []byte, i int, v byte) []byte {
	c := bytes.Clone(b)
	c[i] = v
	return c
}

func TestRecipientsParsing(t *testing.T) {
	rs, _ := keys(t)
	_ = rs
	if _, err := crypto.ParseRecipients("age1notarecipient", ""); err == nil {
		t.Error("malformed recipient accepted")
	}
	if _, err := crypto.ParseRecipients("AGE-SECRET-KEY-1QQQ", ""); err == nil {
		t.Error("secret key accepted as a recipient")
	}
	f := filepath.Join(t.TempDir(), "id")
	recip, _ := crypto.GenerateIdentity(f)
	if _, err := crypto.GenerateIdentity(f); err == nil {
		t.Error("GenerateIdentity overwrote an existing file")
	}
	two, err := crypto.ParseRecipients(recip+", "+recip, "")
	if err != nil || two.Len() != 1 {
		t.Errorf("duplicates not folded: %v %d", err, two.Len())
	}
}
