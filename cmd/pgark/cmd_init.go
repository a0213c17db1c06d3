package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/s3"
	"github.com/pgark/pgark/wal"
)

func runInit(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) > 1 {
		return usageErrorf("init takes at most one argument, the repository")
	}
	repoArg := env.s.str("repo")
	if len(args) == 1 {
		repoArg = args[0]
	}
	if !hasRepo2(env) {
		return initRepository(ctx, env, repoArg)
	}
	// Two repositories: the same settings (recipients, compression,
	// cluster binding) for both; each opened with its own store settings.
	if err := initRepository(ctx, env, repoArg); err != nil {
		return fmt.Errorf("repository 1 (%s): %w", repoArg, err)
	}
	if err := initRepository(ctx, repoEnv(env, 2), env.s.str("repo2")); err != nil {
		return fmt.Errorf("repository 2 (%s), after repository 1 was created: %w", env.s.str("repo2"), err)
	}
	return nil
}

// initRepository creates one repository at repoArg with env's settings.
func initRepository(ctx context.Context, env *cmdEnv, repoArg string) error {
	loc, err := parseLocation(repoArg)
	if err != nil {
		return err
	}
	rs, err := recipients(env)
	if err != nil {
		return err
	}
	opts := repo.InitOptions{Compression: env.s.str("compression"), Recipients: rs, Version: version}
	if opts.Compression == "" {
		opts.Compression = "zstd"
	}
	if opts.Level, err = env.s.integer("compression-level"); err != nil {
		return err
	}
	if opts.Level == 0 && opts.Compression == "zstd" {
		opts.Level = 3
	}
	if err := repo.ValidateCompression(opts.Compression, opts.Level); err != nil {
		return usageErrorf("%v", err)
	}

	if loc.local != "" {
		if err := prepareLocalDir(loc.local); err != nil {
			return err
		}
		opts.WriteMode = repo.WriteLink
	}
	if opts.ObjectLock, err = initObjectLock(ctx, env, loc); err != nil {
		return err
	}
	loc.objectLock = opts.ObjectLock
	st, err := openStore(ctx, env, loc, "")
	if err != nil {
		return err
	}
	if loc.local == "" {
		if err := checkEmpty(ctx, st); err != nil {
			return err
		}
		switch {
		case loc.gcs:
			opts.WriteMode, err = probeGCS(ctx, env, loc)
		case loc.sftp != nil:
			opts.WriteMode, err = probeSFTP(ctx, env, loc)
		case loc.azureContainer != "":
			opts.WriteMode, err = probeAzure(ctx, env, loc)
		default:
			opts.WriteMode, err = probeS3(ctx, env, loc)
		}
		if err != nil {
			return err
		}
	}
	cfg, err := repo.Init(ctx, st, opts)
	if err != nil {
		return err
	}
	r := &repo.Repo{Store: st, Config: *cfg}
	if pgdata := env.s.str("pgdata"); pgdata != "" {
		sysid, segSize, err := clusterFromPGDATA(pgdata)
		if err != nil {
			return fmt.Errorf("repository created, but binding it to %s failed (the first push will bind it): %w", pgdata, err)
		}
		if err := r.BindCluster(ctx, sysid, segSize, "init --pgdata"); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "bound to cluster %d (WAL segment size %d bytes)\n", sysid, segSize)
	}
	fmt.Fprintf(env.stdout, "initialised repository %s (compression %s", st, cfg.Compression)
	if cfg.Compression == "zstd" {
		fmt.Fprintf(env.stdout, " level %d", cfg.Level)
	}
	fmt.Fprintf(env.stdout, ", encryption %s", cfg.Encryption)
	if len(cfg.Recipients) > 0 {
		fmt.Fprintf(env.stdout, " to %s", strings.Join(cfg.Recipients, ", "))
	}
	fmt.Fprintf(env.stdout, ", writes %s", cfg.WriteMode)
	if l := cfg.ObjectLock; l != nil {
		fmt.Fprintf(env.stdout, ", object lock %s %d days", l.Mode, l.Days)
	}
	fmt.Fprintf(env.stdout, ")\n")
	if cfg.Encryption == "none" {
		env.log.Warn("the repository is not encrypted: anyone who can read it can read the database's WAL")
	}
	return nil
}

// prepareLocalDir accepts an empty directory or creates a missing one, and
// refuses a path that holds a repository or anything else.
func prepareLocalDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("create repository directory: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("repository directory: %w", err)
	}
	if !fi.IsDir() {
		return usageErrorf("%s exists and is not a directory", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("repository directory: %w", err)
	}
	for _, e := range ents {
		if e.Name() == repo.ConfigKey {
			return usageErrorf("%s already holds a pgark repository", dir)
		}
	}
	if len(ents) > 0 {
		return usageErrorf("%s is not empty (%d entries, e.g. %s): give a missing or empty directory", dir, len(ents), ents[0].Name())
	}
	return nil
}

func checkEmpty(ctx context.Context, st storage.Store) error {
	errStop := errors.New("stop")
	var first string
	err := st.List(ctx, "", func(oi storage.ObjectInfo) error { first = oi.Key; return errStop })
	if err != nil && !errors.Is(err, errStop) {
		return fmt.Errorf("list %s: %w", st, err)
	}
	if first == repo.ConfigKey {
		return usageErrorf("%s already holds a pgark repository", st)
	}
	if first != "" {
		return usageErrorf("%s is not empty (it holds %s): give an empty prefix", st, first)
	}
	return nil
}

// probeS3 checks that a second conditional create is refused.
func probeS3(ctx context.Context, env *cmdEnv, loc location) (string, error) {
	cfg, err := s3Config(env, loc)
	if err != nil {
		return "", err
	}
	ss, err := s3.New(ctx, cfg)
	if err != nil {
		return "", err
	}
	perr := ss.ProbeConditionalWrites(ctx)
	if perr == nil {
		return repo.WriteIfNoneMatch, nil
	}
	allow, err := env.s.boolean("allow-head-then-put")
	if err != nil {
		return "", err
	}
	if !allow {
		return "", fmt.Errorf("the store does not refuse a second conditional create (If-None-Match: *): %w. Without it two writers can overwrite each other's objects. Use a store that supports conditional writes, or accept the weaker HEAD-then-PUT mode with --allow-head-then-put", perr)
	}
	env.log.Warn("conditional writes unsupported: using HEAD-then-PUT; a concurrent writer to the same key can race", "probe", perr)
	return repo.WriteHeadThenPut, nil
}

// clusterFromPGDATA reads the system identifier and segment size from the
// newest WAL segment in PGDATA/pg_wal.
func clusterFromPGDATA(pgdata string) (uint64, uint32, error) {
	dir := filepath.Join(pgdata, "pg_wal")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	var names []string
	for _, e := range ents {
		if n, err := wal.ParseName(e.Name()); err == nil && n.Kind == wal.KindSegment && e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for i := len(names) - 1; i >= 0; i-- {
		f, err := os.Open(filepath.Join(dir, names[i]))
		if err != nil {
			continue
		}
		b := make([]byte, wal.LongHeaderSize)
		_, err = io.ReadFull(f, b)
		f.Close()
		if err != nil {
			continue
		}
		if h, err := wal.ParseHeader(b); err == nil {
			return h.SystemID, h.SegSize, nil
		}
	}
	return 0, 0, fmt.Errorf("no readable WAL segment in %s", dir)
}

func runKeyGenerate(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) != 1 {
		return usageErrorf("key generate takes one argument, the identity file to create")
	}
	recip, err := generateIdentity(args[0])
	if err != nil {
		return err
	}
	fmt.Fprintln(env.stdout, recip)
	env.log.Info("wrote a new age identity; keep it off the database hosts, give them the recipient", "file", args[0])
	return nil
}

func runKeyGenerateSigning(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) != 1 {
		return usageErrorf("key generate-signing takes one argument, the key file to create")
	}
	pub, err := crypto.GenerateSigningKey(args[0])
	if err != nil {
		return fmt.Errorf("%w: %w", errKey, err)
	}
	fmt.Fprintln(env.stdout, pub)
	env.log.Info("wrote a new signing key; give it to the writing hosts (signing-key-file) and the public key to the readers (trusted-signers)", "file", args[0])
	return nil
}

func generateIdentity(path string) (string, error) {
	recip, err := crypto.GenerateIdentity(path)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errKey, err)
	}
	return recip, nil
}
