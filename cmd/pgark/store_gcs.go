package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage/gcs"
)

// gcsConfig is the GCS store's configuration from the settings.
func gcsConfig(env *cmdEnv, loc location) (gcs.Config, error) {
	cfg := gcs.Config{
		Bucket:          loc.bucket,
		Prefix:          loc.prefix,
		CredentialsFile: env.s.str("gcs-credentials-file"),
		Endpoint:        env.s.str("gcs-endpoint"),
	}
	chunk, err := env.s.size("gcs-chunk-size")
	if err != nil {
		return cfg, err
	}
	if chunk < gcs.ChunkAlign || chunk > gcs.MaxChunkSize || chunk%gcs.ChunkAlign != 0 {
		return cfg, usageErrorf("gcs-chunk-size: %d bytes is not a multiple of 256KiB between 256KiB and 1GiB", chunk)
	}
	cfg.ChunkSize = int(chunk)
	if cfg.ReadTimeout, err = env.s.duration("gcs-read-timeout"); err != nil {
		return cfg, err
	}
	if cfg.ReadTimeout < time.Second {
		return cfg, usageErrorf("gcs-read-timeout: at least 1s")
	}
	return cfg, nil
}

// openGCS opens the GCS store of loc.
func openGCS(ctx context.Context, env *cmdEnv, loc location) (*gcs.Store, error) {
	cfg, err := gcsConfig(env, loc)
	if err != nil {
		return nil, err
	}
	st, err := gcs.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open GCS repository: %w", err)
	}
	return st, nil
}

// probeGCS checks that the bucket keeps generation preconditions: create-only
// uploads (one-request and resumable) and compare-and-swap. There is no
// weaker fallback: a store that fails the probe is refused.
func probeGCS(ctx context.Context, env *cmdEnv, loc location) (string, error) {
	st, err := openGCS(ctx, env, loc)
	if err != nil {
		return "", err
	}
	defer st.Close()
	if err := st.ProbeConditionalWrites(ctx); err != nil {
		return "", fmt.Errorf("the GCS store cannot guarantee create-only writes: %w", err)
	}
	return repo.WriteGeneration, nil
}
