package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/mem"
)

// TestUpdateConfigNoLostUpdate: concurrent updates of the config object all
// land (compare-and-swap, retried), and Removed reports removals.
func TestUpdateConfigNoLostUpdate(t *testing.T) {
	ctx := context.Background()
	s := mem.New(t.Name())
	rs, _ := keys(t)
	if _, err := Init(ctx, s, InitOptions{Compression: "zstd", Level: 3, Recipients: rs, WriteMode: WriteIfNoneMatch}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				fp := fmt.Sprintf("age-x25519:w%di%d", w, i)
				if _, err := UpdateConfig(ctx, s, func(c *Config) error {
					c.Recipients = append(c.Recipients, fp)
					return nil
				}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	r, err := Open(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(r.Config.Recipients); n != 21 {
		t.Fatalf("%d recipients after 20 concurrent additions to 1, want 21: %v", n, r.Config.Recipients)
	}
	first := r.Config.Recipients[0]
	if _, err := UpdateConfig(ctx, s, func(c *Config) error {
		c.Recipients = slices.DeleteFunc(c.Recipients, func(fp string) bool { return fp == first })
		c.RecipientChanges = append(c.RecipientChanges, RecipientChange{Action: "remove", Fingerprint: first})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r, _ = Open(ctx, s)
	if _, ok := r.Config.Removed(first); !ok {
		t.Fatal("Removed does not report a removed recipient")
	}
	if _, err := r.CheckRecipients(rs); err == nil {
		t.Fatal("a removed recipient may still be written to")
	}
}

// TestSignedJSON: with trusted signers, a metadata object must carry a
// trusted signature over its own bytes and key; unsigned, foreign-signed,
// altered and moved objects are refused.
func TestSignedJSON(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := mem.New(t.Name())
	pub, _ := crypto.GenerateSigningKey(filepath.Join(dir, "k"))
	signer, _ := crypto.LoadSigner(filepath.Join(dir, "k"))
	crypto.GenerateSigningKey(filepath.Join(dir, "r"))
	rogueSigner, _ := crypto.LoadSigner(filepath.Join(dir, "r"))
	trust, err := crypto.ParseTrusted(pub)
	if err != nil {
		t.Fatal(err)
	}
	r := &Repo{Store: s, Trust: trust}
	v := map[string]int{"n": 1}
	if err := PutSignedJSON(ctx, s, "a/meta.json", v, signer); err != nil {
		t.Fatal(err)
	}
	if err := r.VerifyJSONSignature(ctx, "a/meta.json"); err != nil {
		t.Fatalf("a signed object: %v", err)
	}
	PutSignedJSON(ctx, s, "b/meta.json", v, nil)
	PutSignedJSON(ctx, s, "c/meta.json", v, rogueSigner)
	// The signed bytes under another key: a replay.
	b, _, _ := s.ReadSmall(ctx, "a/meta.json", 1<<20)
	info, _ := s.Stat(ctx, "a/meta.json")
	s.Put(ctx, "d/meta.json", bytes.NewReader(b), storage.PutOptions{Size: int64(len(b)), Meta: info.Meta})
	// Other bytes under the signed metadata.
	s.Put(ctx, "e/meta.json", strings.NewReader(`{"n": 2}`+"\n"), storage.PutOptions{Size: 9, Meta: info.Meta})
	for _, key := range []string{"b/meta.json", "c/meta.json", "d/meta.json", "e/meta.json"} {
		if err := r.VerifyJSONSignature(ctx, key); !errors.Is(err, crypto.ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", key, err)
		}
	}
	if err := (&Repo{Store: s}).VerifyJSONSignature(ctx, "b/meta.json"); err != nil {
		t.Fatalf("without trusted signers an unsigned object is accepted: %v", err)
	}
}
