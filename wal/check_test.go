package wal

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
)

// rewriteMeta stores an object again with its metadata changed by edit.
func rewriteMeta(t *testing.T, r *repo.Repo, key string, edit func(map[string]string)) {
	t.Helper()
	ctx := context.Background()
	rc, info, err := r.Store.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	meta := map[string]string{}
	for k, v := range info.Meta {
		meta[k] = v
	}
	edit(meta)
	if err := r.Store.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := r.Store.Put(ctx, key, &b, storage.PutOptions{Meta: meta, Size: int64(b.Len())}); err != nil {
		t.Fatal(err)
	}
}

// TestFetchCheck: push records the plaintext CRC-32C; a fetch checks it
// (or the SHA-256 for objects without one, and whenever signatures are
// required), and VerifyObject checks both.
func TestFetchCheck(t *testing.T) {
	ctx := context.Background()
	const segSize = 1 << 20
	name := SegmentFileName(1, 3, segSize)
	key := ObjectKey(Name{Raw: name, Kind: KindSegment})
	src := synthSegment(t, t.TempDir(), name, 42, segSize)
	plain, _ := os.ReadFile(src)
	wantCRC := formatCRC(crc32.Checksum(plain, castagnoli))
	const wrongCRC, wrongSHA = "0badc0de", "00000000000000000000000000000000000000000000000000000000000000ff"

	for _, tc := range []struct {
		name   string
		signed bool
		edit   func(map[string]string)
		fetch  string // "" (served), or what the fetch error names
		verify string // likewise for VerifyObject
	}{
		{name: "intact", edit: func(map[string]string) {}},
		{name: "wrong CRC", edit: func(m map[string]string) { m[storage.MetaCRC32C] = wrongCRC }, fetch: "CRC-32C", verify: "CRC-32C"},
		// Fetch proves the content with the CRC; verify --full still
		// finds the damaged SHA-256.
		{name: "wrong SHA, CRC intact", edit: func(m map[string]string) { m[storage.MetaSHA256] = wrongSHA }, verify: "SHA-256"},
		{name: "no CRC (older push)", edit: func(m map[string]string) { delete(m, storage.MetaCRC32C) }},
		{name: "no CRC, wrong SHA", edit: func(m map[string]string) { delete(m, storage.MetaCRC32C); m[storage.MetaSHA256] = wrongSHA }, fetch: "SHA-256", verify: "SHA-256"},
		{name: "malformed CRC", edit: func(m map[string]string) { m[storage.MetaCRC32C] = "0BADC0DE" }, fetch: "invalid pgark-crc32c", verify: "invalid pgark-crc32c"},
		// A signature signs the SHA-256: a signed repository checks it,
		// whatever the CRC says.
		{name: "signed, wrong CRC", signed: true, edit: func(m map[string]string) { m[storage.MetaCRC32C] = wrongCRC }, verify: "CRC-32C"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, c, ids := newRepo(t, true)
			if tc.signed {
				kf := filepath.Join(t.TempDir(), "sign")
				pub, err := crypto.GenerateSigningKey(kf)
				if err != nil {
					t.Fatal(err)
				}
				if c.Signer, err = crypto.LoadSigner(kf); err != nil {
					t.Fatal(err)
				}
				if r.Trust, err = crypto.ParseTrusted(pub); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := Push(ctx, r, src, PushOptions{Codec: c}); err != nil {
				t.Fatal(err)
			}
			info, err := r.Store.Stat(ctx, key)
			if err != nil || info.Meta[storage.MetaCRC32C] != wantCRC {
				t.Fatalf("pushed object's CRC-32C %q, want %q (%v)", info.Meta[storage.MetaCRC32C], wantCRC, err)
			}
			rewriteMeta(t, r, key, tc.edit)

			dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
			err = Fetch(ctx, r, name, dest, FetchOptions{Identities: ids, RetryFor: time.Second})
			checkErr(t, "fetch", err, tc.fetch)
			got, rerr := os.ReadFile(dest)
			switch {
			case tc.fetch == "" && !bytes.Equal(got, plain):
				t.Fatalf("served content differs (%v)", rerr)
			case tc.fetch != "" && rerr == nil:
				t.Fatal("a failed fetch left the destination file")
			}
			checkErr(t, "verify", VerifyObject(ctx, r, name, 42, segSize, ids), tc.verify)
		})
	}
}

func checkErr(t *testing.T, what string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("%s: %v", what, err)
	case want != "" && (!errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), want)):
		t.Fatalf("%s: got %v, want a verification error naming %s", what, err, want)
	}
}
