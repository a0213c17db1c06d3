package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/manifest"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/tarstream"
)

// Problem is one thing wrong with a backup: the object concerned (when there
// is one) and what is wrong.
type Problem struct {
	Backup string `json:"backup"`
	Object string `json:"object,omitempty"`
	What   string `json:"problem"`
}

// Verify checks a backup. Without full it confirms that every object exists
// with the size recorded in its metadata. With full it also downloads,
// decrypts and decompresses every object (verifying each against its recorded
// SHA-256), walks the tar streams and checks every file against the stored
// backup_manifest. Problems are returned; err is for failures to check
// (storage unreachable, no identity).
func Verify(ctx context.Context, r *repo.Repo, m *Meta, ids *crypto.Identities, full bool) ([]Problem, error) {
	var probs []Problem
	add := func(key, format string, a ...any) {
		probs = append(probs, Problem{Backup: m.ID, Object: key, What: fmt.Sprintf(format, a...)})
	}
	refs := []ObjectRef{m.Manifest}
	if m.References != nil {
		refs = append(refs, *m.References)
	}
	for _, a := range m.Archives {
		refs = append(refs, a.Parts...)
	}
	for _, ref := range refs {
		info, err := r.Store.Stat(ctx, ref.Key)
		switch {
		case storage.IsNotFound(err):
			add(ref.Key, "missing")
		case err != nil:
			return probs, fmt.Errorf("backup %s: %s: %w", m.ID, ref.Key, err)
		case ref.StoredBytes > 0 && info.Size != ref.StoredBytes:
			add(ref.Key, "stored size %d bytes, %d recorded", info.Size, ref.StoredBytes)
		}
	}
	if !full || len(probs) > 0 {
		return probs, nil
	}
	b, err := FetchManifest(ctx, r, m, ids)
	if err != nil {
		if isKeyErr(err) {
			return probs, err
		}
		add(m.Manifest.Key, "%v", err)
		return probs, nil
	}
	man, err := manifest.Parse(b)
	if err != nil {
		add(m.Manifest.Key, "%v", err)
		return probs, nil
	}
	files, err := manifest.NewFiles(m.ManifestChecksums)
	if err != nil {
		return probs, err
	}
	for _, a := range m.Archives {
		sc, err := tarstream.NewScanner(m.ManifestChecksums, func(mem tarstream.Member) error { return files.Add(a.Name, mem) })
		if err != nil {
			return probs, err
		}
		bad := false
		for _, part := range a.Parts {
			rc, err := r.OpenVerified(ctx, part.Key, part.Bytes, part.SHA256, ids)
			if err == nil {
				_, err = io.Copy(sc, rc)
				if cerr := rc.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				if isKeyErr(err) {
					return probs, err
				}
				if ctx.Err() != nil {
					return probs, ctx.Err()
				}
				add(part.Key, "%v", err)
				bad = true
				break
			}
		}
		if bad {
			continue
		}
		if err := sc.Close(); err != nil {
			add(a.Parts[len(a.Parts)-1].Key, "%s: %v", a.Name, err)
		}
	}
	if len(probs) > 0 {
		return probs, nil
	}
	// A file-level incremental backup takes the files it lists from its
	// parent: they are in its manifest, not in its archives.
	taken := map[string]bool{}
	if m.References != nil {
		rc, err := r.OpenVerified(ctx, m.References.Key, m.References.Bytes, m.References.SHA256, ids)
		if err == nil {
			var paths []string
			paths, err = ParseReferences(rc)
			rc.Close()
			for _, p := range paths {
				taken[p] = true
			}
		}
		if err != nil {
			if isKeyErr(err) {
				return probs, err
			}
			add(m.References.Key, "%v", err)
			return probs, nil
		}
	}
	for _, mm := range man.Check(files) {
		if mm.Kind == manifest.MismatchMissing && taken[mm.Path] {
			continue
		}
		add("", "%s", mm.String())
	}
	return probs, nil
}

func isKeyErr(err error) bool {
	return errors.Is(err, crypto.ErrNoMatchingIdentity) || errors.Is(err, crypto.ErrMissingIdentity)
}
