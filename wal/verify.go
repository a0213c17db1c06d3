package wal

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
)

// VerifyObject reads the archived WAL file name through the whole fetch
// path without writing it anywhere: authenticated decryption, zstd
// checksums, the size, SHA-256 and CRC-32C recorded at push and, for a
// segment, its header (the cluster's system identifier and segment size,
// and a page address that matches the name). A problem with the object is an error
// wrapping ErrVerify (or storage.ErrNotFound); other errors are failures to
// check.
func VerifyObject(ctx context.Context, r *repo.Repo, name string, sysid uint64, segSize uint32, ids *crypto.Identities) error {
	n, err := ParseName(name)
	if err != nil {
		return err
	}
	key := ObjectKey(n)
	rc, info, err := r.Store.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	rec, body, err := openRecorded(r, key, rc, info, ids)
	if err != nil {
		return err
	}
	// Both hashes: what any fetch may check.
	h, c := sha256.New(), crc32.New(castagnoli)
	head := &headWriter{}
	got, err := body.DecodeTo(head, io.MultiWriter(h, c), rec.size, decodeWorkers())
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, crypto.ErrNoMatchingIdentity) || errors.Is(err, crypto.ErrMissingIdentity) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrVerify, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); got != rec.size || sum != rec.sha256 {
		return fmt.Errorf("%w: decodes to %d bytes with SHA-256 %s, but %d bytes with SHA-256 %s were archived", ErrVerify, got, short(sum), rec.size, short(rec.sha256))
	}
	if crc := hex.EncodeToString(c.Sum(nil)); rec.crc32c != "" && crc != rec.crc32c {
		return fmt.Errorf("%w: decodes to CRC-32C %s, but CRC-32C %s was archived", ErrVerify, crc, rec.crc32c)
	}
	if n.Kind != KindSegment {
		return nil
	}
	hd, err := ParseHeader(head.b[:])
	if err == nil {
		err = CheckSegment(n, got, hd)
	}
	if err == nil && (hd.SystemID != sysid || hd.SegSize != segSize) {
		err = fmt.Errorf("system identifier %d and segment size %d, the repository's cluster has %d and %d", hd.SystemID, hd.SegSize, sysid, segSize)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrVerify, err)
	}
	return nil
}

// headWriter keeps the first LongHeaderSize bytes written at any offset and
// drops the rest.
type headWriter struct {
	mu sync.Mutex
	b  [LongHeaderSize]byte
}

func (w *headWriter) WriteAt(p []byte, off int64) (int, error) {
	if off < LongHeaderSize {
		w.mu.Lock()
		copy(w.b[off:], p)
		w.mu.Unlock()
	}
	return len(p), nil
}
