// Command pgark archives PostgreSQL WAL and backups into a repository (a
// local directory or S3), compressed with zstd and encrypted with age.
package main

import (
	"context"
	"errors"
	"flag"
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

// Exit codes. They are part of the interface: archive_command and
// restore_command act on them. Documented in the README and in each
// command's --help.
const (
	exitOK         = 0
	exitNotFound   = 1 // wal-fetch only: the repository answered "does not exist" in this call
	exitUsage      = 2 // bad arguments or configuration
	exitRepository = 3 // no repository at the location, or it refuses the input (not WAL, another cluster)
	exitConflict   = 4 // different content is already archived under this name
	exitStorage    = 5 // storage or local I/O failed (after retries)
	exitKey        = 6 // encryption keys: missing recipients or identity, no identity matches
	exitLocked     = 7 // another backup or retain holds the repository lock (or took it over)
	exitTool       = 8 // dump, dump-restore: pg_dump, pg_dumpall, pg_restore or an SQL statement failed
	// exitRecoveryStop is wal-fetch's status for every failure other than
	// "not found" during archive recovery. PostgreSQL treats an exit status
	// above 125 as fatal and stops recovery, instead of taking the failure
	// for the end of the archive and finishing recovery early.
	exitRecoveryStop = 200
)

type command struct {
	name    string
	args    string
	summary string
	help    string
	run     func(ctx context.Context, env *cmdEnv, args []string) error
	// interspersed accepts options after the arguments too.
	interspersed bool
}

var commands []*command

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

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printUsage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintf(stdout, "pgark %s\n", version)
		return exitOK
	}
	name := args[0]
	rest := args[1:]
	if name == "key" && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		name, rest = "key "+rest[0], rest[1:]
	}
	var cmd *command
	for _, c := range commands {
		if c.name == name {
			cmd = c
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "pgark: unknown command %q (run `pgark help`)\n", name)
		return exitUsage
	}
	fs := flag.NewFlagSet("pgark "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	flags := addOptions(fs, cmd.name)
	fs.Usage = func() {}
	if err := parseArgs(fs, rest, cmd.interspersed); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(stdout, cmd, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "pgark %s: %v (run `pgark %s --help`)\n", cmd.name, err, cmd.name)
		return setupFailure(cmd)
	}
	env := &cmdEnv{stdout: stdout, stderr: stderr, getenv: getenv, exitCodeFor: exitCode}
	s, err := resolve(fs, flags, getenv)
	if err == nil {
		env.s = s
		env.log, err = newLogger(stderr, s)
	}
	if err != nil {
		fmt.Fprintf(stderr, "pgark %s: %v\n", cmd.name, err)
		return setupFailure(cmd)
	}
	start := time.Now()
	err = cmd.run(ctx, env, fs.Args())
	if f := getenv("PGARK_RUSAGE_LOG"); f != "" {
		logRusage(f, cmd.name, start, err)
	}
	if err == nil {
		return exitOK
	}
	code := env.exitCodeFor(err)
	if code != exitNotFound {
		env.log.Error(oneLine(err.Error()), "command", cmd.name, "exit", code)
	}
	return code
}

// parseArgs parses options; with interspersed, options may also follow
// the arguments (until "--").
func parseArgs(fs *flag.FlagSet, args []string, interspersed bool) error {
	if err := fs.Parse(args); err != nil || !interspersed {
		return err
	}
	var pos []string
	for rest := fs.Args(); len(rest) > 0; rest = fs.Args() {
		if rest[0] == "--" {
			pos = append(pos, rest[1:]...)
			break
		}
		pos = append(pos, rest[0])
		if err := fs.Parse(rest[1:]); err != nil {
			return err
		}
	}
	return fs.Parse(append([]string{"--"}, pos...))
}

// setupFailure is the status for a command line or configuration that cannot
// be used. For wal-fetch it must not read as "not found" (which would end
// archive recovery early), so it stops recovery instead.
func setupFailure(cmd *command) int {
	if cmd.name == "wal-fetch" {
		return exitRecoveryStop
	}
	if cmd.name == "check" {
		return 3 // UNKNOWN (Nagios): 2 would read as CRITICAL
	}
	return exitUsage
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

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func newLogger(w io.Writer, s *settings) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(s.str("log-level"))); err != nil {
		return nil, usageErrorf("log-level: %q is not debug, info, warn or error", s.str("log-level"))
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

func printUsage(w io.Writer) {
	fmt.Fprintf(w, "pgark %s: PostgreSQL WAL archiving and backups (zstd, age, local or S3)\n\nUsage: pgark COMMAND [options] [args]\n\nCommands:\n", version)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun `pgark COMMAND --help` for a command's options and exit codes.\n")
}

func printCommandHelp(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: pgark %s [options] %s\n\n%s\n\n%s\n\nOptions (each also an environment variable and a config file key):\n", c.name, c.args, c.summary, strings.TrimSpace(c.help))
	fs.SetOutput(w)
	fs.PrintDefaults()
}

const exitCodesHelp = `Exit codes:
  0    success
  2    bad arguments or configuration
  3    no repository at the location, or the repository refuses the input
       (not a WAL file, WAL of another cluster, incompatible repository), a
       damaged metadata object, or a backup whose content restore refuses
  4    different content is already archived under this name (never overwritten)
  5    storage or local I/O error (after retrying transient errors)
  6    encryption keys: recipients or identity missing, or no identity matches
  7    backup, retain: another backup or retain holds the repository lock (or took it over)`
