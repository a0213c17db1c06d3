package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgark/pgark/backup"
	"github.com/pgark/pgark/catalog"
)

func runBackup(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) != 0 {
		return usageErrorf("backup takes no arguments (connection settings come from --dsn or the libpq environment)")
	}
	s := env.s
	cfg := backup.Config{Version: version, Log: env.log, Label: s.str("label")}
	switch s.str("checkpoint") {
	case "fast":
		cfg.Fast = true
	case "spread":
	default:
		return usageErrorf("checkpoint: %q is not fast or spread", s.str("checkpoint"))
	}
	var err error
	if s.str("max-rate") != "" {
		rate, err := s.size("max-rate")
		if err != nil {
			return err
		}
		if cfg.MaxRateKB = int((rate + 1023) / 1024); cfg.MaxRateKB < 32 || cfg.MaxRateKB > 1048576 {
			return usageErrorf("max-rate: %s is outside 32kB to 1GB per second", s.str("max-rate"))
		}
	}
	if cfg.ArchiveTimeout, err = s.duration("archive-timeout"); err != nil {
		return err
	}
	if cfg.StallTimeout, err = s.duration("stream-timeout"); err != nil {
		return err
	}
	if cfg.PartLimit, err = s.size("backup-part-size"); err != nil {
		return err
	}
	if cfg.PartLimit < 1<<20 {
		return usageErrorf("backup-part-size: at least 1MiB")
	}
	asJSON, err := s.boolean("json")
	if err != nil {
		return err
	}
	cfg.Type = s.str("backup-type")
	if cfg.RequireParent, err = s.boolean("require-parent"); err != nil {
		return err
	}
	if cfg.MaxChain, err = s.integer("max-chain"); err != nil {
		return err
	}
	if cfg.MaxChain < 0 || cfg.MaxChain > catalog.MaxChain-1 {
		return usageErrorf("max-chain: %d is outside 0 to %d", cfg.MaxChain, catalog.MaxChain-1)
	}
	if cfg.Type != catalog.TypeFull {
		if cfg.Identities, err = identities(env); err != nil {
			return err
		}
	}
	// Every backup keeps a copy of its manifest here, for the incremental
	// backups taken on it from this host.
	base, err := spoolBase(env)
	if err != nil {
		return err
	}
	if base != "" {
		cfg.ManifestCache = filepath.Join(base, "manifests")
	}

	sqlCfg, err := pgconn.ParseConfig(s.str("dsn"))
	if err != nil {
		return usageErrorf("dsn: %v", err)
	}
	replCfg, _ := pgconn.ParseConfig(s.str("dsn"))
	replCfg.RuntimeParams["replication"] = "true"
	cfg.FromHost = fmt.Sprintf("%s:%d", sqlCfg.Host, sqlCfg.Port)

	r, err := openRepo(ctx, env)
	if err != nil {
		return err
	}
	if cfg.Codec, err = codec(env, r); err != nil {
		return err
	}
	cfg.Repo = r
	return withRepoLock(ctx, env, r, "backup", func(ctx context.Context) error {
		return takeBackup(ctx, env, cfg, sqlCfg, replCfg, asJSON)
	})
}

// takeBackup connects and runs the backup, holding the repository lock.
func takeBackup(ctx context.Context, env *cmdEnv, cfg backup.Config, sqlCfg, replCfg *pgconn.Config, asJSON bool) error {
	s := env.s
	var err error
	if cfg.SQL, err = pgconn.ConnectConfig(ctx, sqlCfg); err != nil {
		return fmt.Errorf("connect to %s: %w", cfg.FromHost, err)
	}
	defer cfg.SQL.Close(context.Background())
	if cfg.Replication, err = pgconn.ConnectConfig(ctx, replCfg); err != nil {
		return fmt.Errorf("replication connection to %s (pg_hba.conf needs a \"replication\" entry, the role the REPLICATION attribute, and max_wal_senders a free slot): %w", cfg.FromHost, err)
	}
	defer cfg.Replication.Close(context.Background())
	cfg.Reconnect = func(ctx context.Context) (*pgconn.PgConn, error) { return pgconn.ConnectConfig(ctx, replCfg) }
	if p := s.str("primary-dsn"); p != "" {
		cfg.SwitchPrimary = func(ctx context.Context) error { return switchPrimary(ctx, p) }
	}
	var drew bool
	cfg.Progress = progressReporter(env, &drew)

	start := time.Now()
	m, err := backup.Run(ctx, cfg)
	if drew {
		fmt.Fprintln(env.stderr)
	}
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(env.stdout, m)
	}
	kind := m.Kind()
	if m.Parent != "" {
		kind += " on " + m.Parent
	}
	fmt.Fprintf(env.stdout, "backup %s (%s) complete: %s of PostgreSQL %d in %s, %s stored, LSN %s to %s on timeline %d, %d files checked against the server's manifest\n",
		m.ID, kind, humanBytes(m.RawBytes), m.PGMajor, time.Since(start).Round(time.Second), humanBytes(m.StoredBytes), m.StartLSN, m.EndLSN, m.EndTimeline, m.Files)
	if m.Fallback != "" {
		fmt.Fprintf(env.stdout, "a full backup instead of %s: %s\n", cfg.Type, m.Fallback)
	}
	return nil
}

func switchPrimary(ctx context.Context, dsn string) error {
	c, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "SELECT pg_create_restore_point('pgark backup'); SELECT pg_switch_wal()").ReadAll()
	return err
}

// progressReporter draws a progress line on a terminal (setting *drew), and
// logs a line every 30 seconds otherwise.
func progressReporter(env *cmdEnv, drew *bool) func(done, total int64) {
	tty := false
	if f, ok := env.stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	start := time.Now()
	var last time.Time
	return func(done, total int64) {
		now := time.Now()
		every := 30 * time.Second
		if tty {
			every = 500 * time.Millisecond
		}
		if now.Sub(last) < every {
			return
		}
		last = now
		el := now.Sub(start).Seconds()
		rate := float64(done) / max(el, 0.001)
		eta := "?"
		pct := "?"
		if total > 0 {
			pct = fmt.Sprintf("%.0f%%", 100*float64(min(done, total))/float64(total))
			if rate > 0 && total > done {
				eta = time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second).String()
			} else {
				eta = "0s"
			}
		}
		if tty {
			*drew = true
			fmt.Fprintf(env.stderr, "\r%s / %s (%s)  %s/s  ETA %s    ", humanBytes(done), humanBytes(total), pct, humanBytes(int64(rate)), eta)
			return
		}
		env.log.Info("backup progress", "bytes", done, "estimated_total", total, "percent", pct, "bytes_per_second", int64(rate), "eta", eta)
	}
}
