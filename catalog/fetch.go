package catalog

import (
	"context"
	"fmt"
	"io"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/manifest"
	"github.com/pgark/pgark/repo"
)

// FetchManifest reads a backup's manifest object, verified.
func FetchManifest(ctx context.Context, r *repo.Repo, m *Meta, ids *crypto.Identities) ([]byte, error) {
	if m.Manifest.Bytes < 0 || m.Manifest.Bytes > manifest.MaxBytes {
		return nil, fmt.Errorf("backup %s: the metadata records a manifest of %d bytes (at most %d)", m.ID, m.Manifest.Bytes, manifest.MaxBytes)
	}
	rc, err := r.OpenVerified(ctx, m.Manifest.Key, m.Manifest.Bytes, m.Manifest.SHA256, ids)
	if err != nil {
		return nil, fmt.Errorf("open manifest: %w", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	return b, nil
}
