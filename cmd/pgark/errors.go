package main

import (
	"encoding/json"
	"errors"
	"io"

	"github.com/pgark/pgark/backup"
	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/dump"
	"github.com/pgark/pgark/lock"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/restore"
	"github.com/pgark/pgark/scratch"
	"github.com/pgark/pgark/wal"
)

// errKey marks configuration errors about encryption keys.
var errKey = errors.New("encryption key")

// exitCode maps an error to the documented exit codes (all from 1 to 125, so
// that PostgreSQL counts a failed archive_command in pg_stat_archiver).
func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case isUsage(err), errors.Is(err, restore.ErrTargetInUse):
		return exitUsage
	case errors.As(err, new(*lock.BusyError)), errors.Is(err, lock.ErrLost):
		return exitLocked
	case errors.Is(err, wal.ErrContentConflict):
		return exitConflict
	case errors.Is(err, errKey), errors.Is(err, crypto.ErrNoMatchingIdentity), errors.Is(err, crypto.ErrMissingIdentity),
		errors.Is(err, crypto.ErrBadSignature):
		return exitKey
	case errors.Is(err, repo.ErrNoRepository), errors.Is(err, wal.ErrBadInput), errors.Is(err, repo.ErrWrongCluster),
		errors.Is(err, repo.ErrDamaged), errors.As(err, new(*restore.RefusedError)), errors.Is(err, catalog.ErrBrokenChain), errors.Is(err, backup.ErrNoParent),
		errors.As(err, new(*backup.FileChangedError)):
		return exitRepository
	case errors.Is(err, dump.ErrSelection), errors.Is(err, scratch.ErrBinaries):
		return exitUsage
	case errors.Is(err, scratch.ErrRecovery):
		return exitRepository
	case errors.Is(err, dump.ErrClientTooOld), errors.Is(err, dump.ErrTarget), errors.Is(err, dump.ErrNoDump):
		return exitRepository
	case errors.Is(err, dump.ErrTool):
		return exitTool
	}
	return exitStorage
}

// printJSON writes v as indented JSON (the --json outputs).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
