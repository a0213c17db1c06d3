package repo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/storage"
)

// OpenVerified opens a stored object and returns a reader of its plaintext
// that fails, instead of returning io.EOF, unless exactly wantSize bytes with
// SHA-256 wantSHA were read. It never yields more than wantSize bytes.
func (r *Repo) OpenVerified(ctx context.Context, key string, wantSize int64, wantSHA string, ids *crypto.Identities) (io.ReadCloser, error) {
	rc, _, err := r.Store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	pr, err := NewObjectReader(rc, ReadOptions{Identities: ids, RequireEncrypted: r.Config.Encrypted()})
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return &verifiedReader{r: pr, closers: []io.Closer{pr, rc}, h: sha256.New(), left: wantSize, size: wantSize, want: wantSHA, key: key}, nil
}

type verifiedReader struct {
	r       io.Reader
	closers []io.Closer
	h       hash.Hash
	left    int64
	size    int64
	want    string
	key     string
}

func (v *verifiedReader) Read(p []byte) (int, error) {
	if int64(len(p)) > v.left+1 {
		p = p[:v.left+1] // one more byte than allowed reveals an overlong object
	}
	n, err := v.r.Read(p)
	if int64(n) > v.left {
		return 0, fmt.Errorf("%w: %s decodes to more than the recorded %d bytes", ErrCorrupt, v.key, v.size)
	}
	v.h.Write(p[:n])
	v.left -= int64(n)
	if err == io.EOF {
		if got := hex.EncodeToString(v.h.Sum(nil)); v.left != 0 || got != v.want {
			return n, fmt.Errorf("%w: %s decodes to %d bytes with SHA-256 %s; recorded: %d bytes, %s", ErrCorrupt, v.key, v.size-v.left, got, v.size, v.want)
		}
	}
	return n, err
}

func (v *verifiedReader) Close() error {
	for _, c := range v.closers {
		c.Close()
	}
	return nil
}

// ReadVerified reads a whole small object whose plaintext SHA-256 and size
// are in its storage metadata (WAL objects), bounded by limit bytes.
func (r *Repo) ReadVerified(ctx context.Context, key string, limit int64, ids *crypto.Identities) ([]byte, error) {
	var b []byte
	var err error
	// A body cut short by the network is read again; damage is not.
	for attempt := 0; attempt < 3; attempt++ {
		if b, err = r.readVerified(ctx, key, limit, ids); err == nil || !storage.IsReadError(err) {
			break
		}
	}
	return b, err
}

func (r *Repo) readVerified(ctx context.Context, key string, limit int64, ids *crypto.Identities) ([]byte, error) {
	info, err := r.Store.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	var size int64
	if _, err := fmt.Sscan(info.Meta[storage.MetaSize], &size); err != nil || size < 0 || size > limit {
		return nil, fmt.Errorf("%w: %s: bad or too large recorded size %q", ErrCorrupt, key, info.Meta[storage.MetaSize])
	}
	if err := r.Trust.Verify(key, info.Meta[storage.MetaSHA256], size, info.Meta[storage.MetaSigner], info.Meta[storage.MetaSignature]); err != nil {
		return nil, err
	}
	rc, err := r.OpenVerified(ctx, key, size, info.Meta[storage.MetaSHA256], ids)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}
