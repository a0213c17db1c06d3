package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/azure"
	"github.com/pgark/pgark/storage/gcs"
	"github.com/pgark/pgark/storage/local"
	"github.com/pgark/pgark/storage/retry"
	"github.com/pgark/pgark/storage/s3"
	"github.com/pgark/pgark/storage/sftp"
)

// location is a parsed --repo value.
type location struct {
	local  string // absolute directory path, for a local repository
	bucket string // for S3 and GCS
	prefix string
	// azureContainer is the container of an azure:// repository (with
	// prefix).
	azureContainer string
	gcs            bool         // gs://bucket/prefix
	sftp           *sftp.Config // for SFTP: the address part (see store_sftp.go)
	// objectLock is the repository's Object Lock retention, applied to
	// every S3 write (see store_immutable.go).
	objectLock *repo.ObjectLock
}

func parseLocation(s string) (location, error) {
	switch {
	case s == "":
		return location{}, usageErrorf("no repository configured: set --repo, PGARK_REPO or repo in the config file")
	case strings.HasPrefix(s, "s3://"):
		b, p, err := s3.ParseURL(s)
		if err != nil {
			return location{}, usageErrorf("repo: %v", err)
		}
		return location{bucket: b, prefix: p}, nil
	case strings.HasPrefix(s, "azure://"):
		c, p, err := azure.ParseURL(s)
		if err != nil {
			return location{}, usageErrorf("repo: %v", err)
		}
		return location{azureContainer: c, prefix: p}, nil
	case strings.HasPrefix(s, "gs://"):
		b, p, err := gcs.ParseURL(s)
		if err != nil {
			return location{}, usageErrorf("repo: %v", err)
		}
		return location{bucket: b, prefix: p, gcs: true}, nil
	case strings.HasPrefix(s, "sftp://"):
		c, err := sftp.ParseURL(s)
		if err != nil {
			return location{}, usageErrorf("repo: %v", err)
		}
		return location{sftp: &c}, nil
	case strings.Contains(s, "://"):
		scheme, _, _ := strings.Cut(s, "://")
		return location{}, usageErrorf("repo: unknown scheme %q in %q (use an absolute directory path, s3://bucket/prefix, gs://bucket/prefix, azure://container/prefix or sftp://user@host/path)", scheme, s)
	case !filepath.IsAbs(s):
		// archive_command runs in PGDATA: a relative path would put the
		// repository inside the data directory, and into every backup.
		return location{}, usageErrorf("repo: %q is a relative path; give an absolute directory path", s)
	}
	return location{local: filepath.Clean(s)}, nil
}

// openStore builds the store for the configured repository, with retries of
// transient errors around it. writeMode selects S3's conditional-write mode.
func openStore(ctx context.Context, env *cmdEnv, loc location, writeMode string) (storage.Store, error) {
	var st storage.Store
	if loc.local != "" {
		ls, err := local.New(loc.local)
		if err != nil {
			return nil, fmt.Errorf("open local repository: %w", err)
		}
		st = ls
	} else if loc.azureContainer != "" {
		as, err := openAzure(env, loc)
		if err != nil {
			return nil, err
		}
		st = as
	} else if loc.gcs {
		gs, err := openGCS(ctx, env, loc)
		if err != nil {
			return nil, err
		}
		st = gs
	} else if loc.sftp != nil {
		ss, err := openSFTP(env, loc)
		if err != nil {
			return nil, err
		}
		st = ss
	} else {
		cfg, err := s3Config(env, loc)
		if err != nil {
			return nil, err
		}
		if writeMode == repo.WriteHeadThenPut {
			cfg.Conditional = "head-then-put"
		}
		cfg.ObjectLock = s3ObjectLock(loc.objectLock)
		ss, err := s3.New(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("open S3 repository: %w", err)
		}
		st = ss
	}
	// Immutability: Object Lock (S3 only), --repo-target-time.
	st, err := immutableStore(env, loc, st)
	if err != nil {
		return nil, err
	}
	d, err := env.s.duration("retry-timeout")
	if err != nil {
		return nil, err
	}
	return retry.New(st, retry.Config{MaxElapsed: d}, env.log), nil
}

func s3Config(env *cmdEnv, loc location) (s3.Config, error) {
	s := env.s
	cfg := s3.Config{
		Bucket:          loc.bucket,
		Prefix:          loc.prefix,
		Endpoint:        s.str("s3-endpoint"),
		Region:          s.str("s3-region"),
		RequestChecksum: s.str("s3-request-checksum"),
	}
	var err error
	if cfg.ForcePathStyle, err = s.boolean("s3-force-path-style"); err != nil {
		return cfg, err
	}
	cfg.Profile = s.str("s3-profile")
	if cfg.ReadTimeout, err = s.duration("s3-read-timeout"); err != nil {
		return cfg, err
	}
	if cfg.ReadTimeout < time.Second {
		return cfg, usageErrorf("s3-read-timeout: at least 1s")
	}
	if cfg.PartSize, err = s.size("s3-part-size"); err != nil {
		return cfg, err
	}
	if cfg.PartSize < 5<<20 || cfg.PartSize > 5<<30 {
		return cfg, usageErrorf("s3-part-size: %d bytes is outside 5MiB to 5GiB", cfg.PartSize)
	}
	if cfg.RequestChecksum != "when_supported" && cfg.RequestChecksum != "when_required" {
		return cfg, usageErrorf("s3-request-checksum: %q is not when_supported or when_required", cfg.RequestChecksum)
	}
	return cfg, nil
}

// openRepo opens the configured repository (which must exist).
func openRepo(ctx context.Context, env *cmdEnv) (*repo.Repo, error) {
	loc, err := parseLocation(env.s.str("repo"))
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, env, loc, "")
	if err != nil {
		return nil, err
	}
	r, err := repo.Open(ctx, st)
	if err != nil {
		return nil, err
	}
	if r.Trust, err = crypto.ParseTrusted(env.s.str("trusted-signers")); err != nil {
		return nil, fmt.Errorf("%w: trusted-signers: %w", errKey, err)
	}
	if loc.local == "" && (r.Config.WriteMode == repo.WriteHeadThenPut || r.Config.ObjectLock != nil) {
		loc.objectLock = r.Config.ObjectLock
		if st, err = openStore(ctx, env, loc, r.Config.WriteMode); err != nil {
			return nil, err
		}
		r.Store = st
	}
	return r, nil
}

// openRepoToRead opens the repository and loads the identity file (nil
// when none is set), for the commands that read objects.
func openRepoToRead(ctx context.Context, env *cmdEnv) (*repo.Repo, *crypto.Identities, error) {
	r, err := openRepo(ctx, env)
	if err != nil {
		return nil, nil, err
	}
	ids, err := identities(env)
	if err != nil {
		return nil, nil, err
	}
	return r, ids, nil
}

// recipients loads the configured age recipients (possibly none).
func recipients(env *cmdEnv) (*crypto.Recipients, error) {
	rs, err := crypto.ParseRecipients(env.s.str("age-recipients"), env.s.str("age-recipients-file"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errKey, err)
	}
	return rs, nil
}

// identities loads the configured identity file, or nil when none is set.
func identities(env *cmdEnv) (*crypto.Identities, error) {
	f := env.s.str("age-identity-file")
	if f == "" {
		return nil, nil
	}
	ids, err := crypto.LoadIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errKey, err)
	}
	return ids, nil
}

// codec is how new objects are written: the repository's compression unless
// overridden, and the configured recipients (checked against the repository).
func codec(env *cmdEnv, r *repo.Repo) (repo.Codec, error) {
	c := repo.Codec{Compression: r.Config.Compression, Level: r.Config.Level}
	if v := env.s.str("compression"); v != "" {
		c.Compression = v
	}
	lvl, err := env.s.integer("compression-level")
	if err != nil {
		return c, err
	}
	if lvl != 0 {
		c.Level = lvl
	}
	if c.Compression == "zstd" && c.Level == 0 {
		c.Level = 3
	}
	if err := repo.ValidateCompression(c.Compression, c.Level); err != nil {
		return c, usageErrorf("%v", err)
	}
	rs, err := recipients(env)
	if err != nil {
		return c, err
	}
	unreg, err := r.CheckRecipients(rs)
	if err != nil {
		return c, fmt.Errorf("%w: %w", errKey, err)
	}
	if len(unreg) > 0 {
		env.log.Warn("age recipients not registered in the repository are in use", "fingerprints", unreg)
	}
	c.Recipients = rs
	if f := env.s.str("signing-key-file"); f != "" {
		if c.Signer, err = crypto.LoadSigner(f); err != nil {
			return c, fmt.Errorf("%w: %w", errKey, err)
		}
	}
	return c, nil
}
