package repo

import (
	"context"
	"fmt"

	"github.com/pgark/pgark/storage"
)

// MetaObject is a run's metadata object (backup.json, dump.json): plaintext
// JSON written last by PutSignedJSON, which completes the run. Check checks
// what was read under run id before anyone relies on it.
type MetaObject interface {
	Check(id string) error
}

// ReadMeta reads the metadata object key of the kind ("backup", "dump") run
// id into m and checks it: the one read path for metadata objects. Every
// error begins with "<kind> <id>: ". A missing object wraps notFound; one
// that is too large, not JSON of m's shape, or refused by m.Check wraps
// ErrDamaged and names key. The caller validates id first, and checks an
// origin signature (VerifyJSONSignature) where the repository trusts
// signers.
func ReadMeta(ctx context.Context, s storage.Store, kind, id, key string, m MetaObject, notFound error) error {
	if err := ReadJSON(ctx, s, key, m); err != nil {
		if storage.IsNotFound(err) {
			return fmt.Errorf("%s %s: %w", kind, id, notFound)
		}
		return fmt.Errorf("%s %s: %w", kind, id, err)
	}
	if err := m.Check(id); err != nil {
		return fmt.Errorf("%s %s: %w metadata %s: %w", kind, id, ErrDamaged, key, err)
	}
	return nil
}
