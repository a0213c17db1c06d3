// Command pgark archives PostgreSQL WAL and backups into a repository (a
// local directory or S3), compressed with zstd and encrypted with age.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

var version = "dev"

// cmdEnv is what a command gets: its settings, its streams and a logger.
type cmdEnv struct {
	s      *settings
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
	getenv func(string) string
	// exitCodeFor lets a command map errors to its own exit codes.
	exitCodeFor func(error) int
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	select {
	case sig := <-sigs:
		// Cleanup is done (temp files removed). Die by the same signal, so
		// that PostgreSQL sees a signal and not an exit status: a SIGTERM
		// must never turn into "not found" (exit 1).
		signal.Reset(sig)
		if s, ok := sig.(syscall.Signal); ok {
			_ = syscall.Kill(os.Getpid(), s)
		}
		select {} // wait for the signal to take effect
	default:
	}
	os.Exit(code)
}

// logRusage appends this run's resource use to file (PGARK_RUSAGE_LOG), one
// line per run: end time (RFC 3339), command, wall seconds, user and system
// CPU seconds, peak RSS in KiB (VmHWM), ok. For soak tests and capacity planning;
// failures to write are ignored.
func logRusage(file, name string, start time.Time, err error) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return
	}
	// Linux carries ru_maxrss over execve from the parent: a pgark started
	// by a big process would report that one's peak. VmHWM is this
	// process's own.
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &ru.Maxrss)
			}
		}
	}
	f, ferr := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if ferr != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s %s %.3f %.3f %.3f %d %t\n", time.Now().UTC().Format(time.RFC3339Nano),
		strings.ReplaceAll(name, " ", "-"), time.Since(start).Seconds(),
		time.Duration(ru.Utime.Nano()).Seconds(), time.Duration(ru.Stime.Nano()).Seconds(), ru.Maxrss, err == nil)
}

func newLogger(w io.Writer, s *settings) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(s.str("log-level"))); err != nil {
		return nil, usageErrorf("log-level (%s): %q is not debug, info, warn or error", s.src["log-level"], s.str("log-level"))
	}
	o := &slog.HandlerOptions{Level: lvl}
	switch s.str("log-format") {
	case "text":
		return slog.New(slog.NewTextHandler(w, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return nil, usageErrorf("log-format: %q is not text or json", s.str("log-format"))
}
