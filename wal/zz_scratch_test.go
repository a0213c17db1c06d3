package wal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
	"time"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
)

func TestZZEncodeFile(t *testing.T) {
	_, c, _ := newRepo(t, true)
	enc, _ := repo.NewFrameEncoder(c, workers())
	defer enc.Close()
	data := make([]byte, 7<<20+3)
	for i := range data {
		data[i] = byte(i * 7 / 1000)
	}
	want := sha256.Sum256(data)
	for _, sz := range []int{0, 1, 100, repo.FrameSize, repo.FrameSize + 1, len(data)} {
		var frames int
		sum, n, head, err := encodeFile(bytes.NewReader(data[:sz]), int64(sz), enc, func(p []byte) error { frames++; return nil })
		w := sha256.Sum256(data[:sz])
		if err != nil || n != int64(sz) || sum != hex.EncodeToString(w[:]) || !bytes.Equal(head, data[:min(sz, LongHeaderSize)]) {
			t.Fatalf("%d: %v %d", sz, err, n)
		}
		// hash only
		sum, n, _, err = encodeFile(bytes.NewReader(data[:sz]), -1, nil, nil)
		if err != nil || n != int64(sz) || sum != hex.EncodeToString(w[:]) {
			t.Fatalf("hash only %d: %v %d", sz, err, n)
		}
	}
	_ = want
	// longer than the limit
	if _, _, _, err := encodeFile(bytes.NewReader(data), int64(len(data)-1), enc, func([]byte) error { return nil }); !errors.Is(err, errLonger) {
		t.Fatalf("longer: %v", err)
	}
	// emit fails on the 2nd frame
	k := 0
	myErr := errors.New("emit failed")
	if _, _, _, err := encodeFile(bytes.NewReader(data), -1, enc, func([]byte) error {
		if k++; k == 2 {
			return myErr
		}
		return nil
	}); err != myErr {
		t.Fatalf("emit: %v", err)
	}
	// read error
	r := io.MultiReader(bytes.NewReader(data[:5<<20]), iotest.ErrReader(errors.New("EIO")))
	if _, _, _, err := encodeFile(r, -1, enc, func([]byte) error { return nil }); err == nil || err.Error() != "EIO" {
		t.Fatalf("read error: %v", err)
	}
	r = io.MultiReader(bytes.NewReader(data[:5<<20]), iotest.ErrReader(errors.New("EIO")))
	if _, _, _, err := encodeFile(r, -1, nil, nil); err == nil || err.Error() != "EIO" {
		t.Fatalf("read error hash only: %v", err)
	}
}

func TestZZPutStreamedChanged(t *testing.T) {
	ctx := context.Background()
	r, c, _ := newRepo(t, true)
	enc, _ := repo.NewFrameEncoder(c, workers())
	defer enc.Close()
	data := bytes.Repeat([]byte("abc"), 3<<20)
	w := sha256.Sum256(data)
	sum := hex.EncodeToString(w[:])
	meta := map[string]string{storage.MetaSHA256: sum, storage.MetaSize: "9437184"}
	// content differs from what pass 1 hashed
	other := bytes.Clone(data)
	other[5<<20] ^= 1
	err := putStreamed(ctx, r.Store, "wal/x", bytes.NewReader(other), enc, c, sum, int64(len(data)), meta)
	if !errors.Is(err, ErrBadInput) || !storage.IsPermanent(err) {
		t.Fatalf("changed: %v", err)
	}
	// grew
	err = putStreamed(ctx, r.Store, "wal/x", bytes.NewReader(append(bytes.Clone(data), 1)), enc, c, sum, int64(len(data)), meta)
	if !errors.Is(err, ErrBadInput) || !storage.IsPermanent(err) {
		t.Fatalf("grew: %v", err)
	}
	if _, err := r.Store.Stat(ctx, "wal/x"); !storage.IsNotFound(err) {
		t.Fatalf("stored: %v", err)
	}
	if err := putStreamed(ctx, r.Store, "wal/x", bytes.NewReader(data), enc, c, sum, int64(len(data)), meta); err != nil {
		t.Fatal(err)
	}
}

func TestZZHistoryAndPartial(t *testing.T) {
	ctx := context.Background()
	r, c, ids := newRepo(t, true)
	dir := t.TempDir()
	seg := synthSegment(t, dir, "000000010000000000000005", 42, 16<<20)
	if _, err := Push(ctx, r, seg, PushOptions{Codec: c}); err != nil {
		t.Fatal(err)
	}
	h := filepath.Join(dir, "00000002.history")
	os.WriteFile(h, []byte("1\t0/5000000\tno recovery target specified\n"), 0o600)
	if _, err := Push(ctx, r, h, PushOptions{Codec: c}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"00000002.history", "000000010000000000000005"} {
		dest := filepath.Join(dir, "got")
		if err := Fetch(ctx, r, n, dest, FetchOptions{Identities: ids, RetryFor: time.Second}); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(filepath.Join(dir, n))
		b, _ := os.ReadFile(dest)
		if !bytes.Equal(a, b) {
			t.Fatal(n)
		}
	}
}
