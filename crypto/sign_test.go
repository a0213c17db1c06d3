package crypto

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestSignVerify(t *testing.T) {
	dir := t.TempDir()
	pub, err := GenerateSigningKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	if s.PublicKey() != pub {
		t.Fatalf("loaded key's public key %s, generated %s", s.PublicKey(), pub)
	}
	other, _ := GenerateSigningKey(filepath.Join(dir, "o"))
	tr, err := ParseTrusted(other + ", " + pub)
	if err != nil {
		t.Fatal(err)
	}
	const sum = "aa"
	signer, sig := s.Sign("wal/x", sum, 10)
	if err := tr.Verify("wal/x", sum, 10, signer, sig); err != nil {
		t.Fatalf("a good signature: %v", err)
	}
	for _, c := range []struct {
		key, sum    string
		size        int64
		signer, sig string
	}{
		{"wal/y", sum, 10, signer, sig},       // another key
		{"wal/x", "ab", 10, signer, sig},      // another hash
		{"wal/x", sum, 11, signer, sig},       // another size
		{"wal/x", sum, 10, "", ""},            // unsigned
		{"wal/x", sum, 10, "ed25519:00", sig}, // unknown signer
		{"wal/x", sum, 10, signer, flipChar(sig, 10)},
	} {
		if err := tr.Verify(c.key, c.sum, c.size, c.signer, c.sig); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%+v: %v, want ErrBadSignature", c, err)
		}
	}
	var none *Trusted
	if err := none.Verify("k", "", 0, "", ""); err != nil {
		t.Fatalf("no trusted signers must accept everything: %v", err)
	}
	if _, err := GenerateSigningKey(filepath.Join(dir, "k")); err == nil {
		t.Fatal("a key file was overwritten")
	}
	for _, bad := range []string{"pgark-ed25519:short", "age1xyz", "PGARK-ED25519-SECRET-KEY-1:abc"} {
		if _, err := ParseTrusted(bad); err == nil {
			t.Errorf("ParseTrusted(%q) accepted", bad)
		}
	}
}

// flipChar changes the character at i (a full 6-bit one, not the padding
// bits of the last).
func flipChar(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}
