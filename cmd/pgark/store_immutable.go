package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/restore/recoveryconf"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/asof"
	"github.com/pgark/pgark/storage/s3"
)

// s3ObjectLock is the S3 store's retention for the repository's Object Lock
// setting (nil: none).
func s3ObjectLock(l *repo.ObjectLock) *s3.ObjectLock {
	if l == nil {
		return nil
	}
	return &s3.ObjectLock{Mode: strings.ToUpper(l.Mode), Period: l.Period(), ExemptPrefixes: repo.LockExempt}
}

// storeKind names a location's store for messages.
func storeKind(loc location) string {
	switch {
	case loc.local != "":
		return "local"
	case loc.azureContainer != "":
		return "Azure"
	case loc.gcs:
		return "GCS"
	case loc.sftp != nil:
		return "SFTP"
	}
	return "S3"
}

// immutableStore applies the immutability settings to a newly opened
// store: the Object Lock retention exists only on S3, and with
// repo-target-time the store is read as of that time (read-only).
func immutableStore(env *cmdEnv, loc location, st storage.Store) (storage.Store, error) {
	if loc.objectLock != nil && storeKind(loc) != "S3" {
		return nil, fmt.Errorf("repository %s records an S3 Object Lock retention, but it is a %s store", st, storeKind(loc))
	}
	v := env.s.str("repo-target-time")
	if v == "" {
		return st, nil
	}
	at, err := recoveryconf.ParseTargetTime(v)
	if err != nil {
		return nil, usageErrorf("repo-target-time: %v", strings.TrimPrefix(err.Error(), "recovery: "))
	}
	vs, ok := st.(asof.Versioned)
	if !ok {
		return nil, usageErrorf("repo-target-time: the %s store %s keeps no object versions; reading a repository as of a past time needs an S3 bucket with versioning", storeKind(loc), st)
	}
	return asof.New(vs, at), nil
}

// initObjectLock reads init's Object Lock options and checks that the
// bucket has Object Lock enabled (nil: no retention asked for).
func initObjectLock(ctx context.Context, env *cmdEnv, loc location) (*repo.ObjectLock, error) {
	days, err := env.s.integer("object-lock-days")
	if err != nil {
		return nil, err
	}
	if days == 0 {
		return nil, nil
	}
	l := &repo.ObjectLock{Mode: env.s.str("object-lock-mode"), Days: days}
	if err := l.Validate(); err != nil {
		return nil, usageErrorf("object-lock-days: %v", err)
	}
	if storeKind(loc) != "S3" {
		return nil, usageErrorf("object-lock-days: S3 Object Lock needs an S3 repository, not a %s one", storeKind(loc))
	}
	cfg, err := s3Config(env, loc)
	if err != nil {
		return nil, err
	}
	ss, err := s3.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	on, err := ss.ObjectLockEnabled(ctx)
	if err != nil {
		return nil, fmt.Errorf("object-lock-days: reading the bucket's Object Lock configuration: %w", err)
	}
	if !on {
		return nil, usageErrorf("object-lock-days: bucket %q does not have S3 Object Lock enabled; create the bucket with Object Lock (which also enables versioning), see docs/copies-and-immutability.md", loc.bucket)
	}
	return l, nil
}
