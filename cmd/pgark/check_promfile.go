package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/pgark/pgark/health"
)

// writePromFile writes what write produces to path atomically, as
// node_exporter's textfile collector needs: a temporary file in the same
// directory (named so that the collector, which reads *.prom, skips it),
// synced, made world-readable (0644) and renamed over path.
func writePromFile(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("prometheus-file: %w", err)
	}
	tmp := f.Name()
	err = write(f)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("prometheus-file %s: %w", path, err)
	}
	return nil
}

// writeUnknownPromFile records in the prometheus-file, if one is set, that
// the check could not run (pgark_check_status 3), so that the metrics never
// keep saying OK after a failure. A failure to write is logged (log may be
// nil when no logger exists yet).
func writeUnknownPromFile(s *settings, log *slog.Logger) {
	if s == nil || s.str("prometheus-file") == "" {
		return
	}
	if err := writePromFile(s.str("prometheus-file"), health.WriteUnknownPrometheus); err != nil && log != nil {
		log.Error("writing the unknown status failed", "err", err)
	}
}
