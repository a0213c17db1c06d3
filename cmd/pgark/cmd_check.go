package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgark/pgark/health"
	"github.com/pgark/pgark/walinventory"
)

func init() {
	commands = append(commands, &command{
		name:    "check",
		args:    "",
		summary: "check archiving, backups and the recoverable window (for monitoring: Nagios exit codes, --json, --prometheus)",
		help: `Connects to the server (--dsn, or PGHOST, PGPORT, PGUSER, PGPASSWORD,
PGPASSFILE, ...) and the repository, and reports in one place, one line per
check with OK, WARNING or CRITICAL:

  cluster          the server is the repository's cluster (system identifier;
                   critical), and on the repository's newest timeline (warning)
  archive_mode     off is critical; on a standby, only "always" archives
  archive_command  it runs pgark wal-push into this repository (--repo, or the
                   repo line of its --config file); not, or cannot tell: warning;
                   empty while archiving: critical
  archiver         pg_stat_archiver: archiving is failing (the last failure is
                   later than the last success) is critical, naming the segment
  archive_lag      complete segments not archived yet (last archived segment to
                   the one being written) above --max-archive-lag: warning; also
                   the .ready files count. Never "seconds since the last archive",
                   which alarms on an idle server
  probe            end to end, as pgbackrest check: pg_create_restore_point(),
                   pg_switch_wal(), then wait up to --check-timeout for that
                   segment in the repository; timeout is critical. Each run
                   archives one (mostly empty) segment. Skipped with --no-probe,
                   on a standby, and when archive_mode is off
  newest_backup    none is critical; older than --max-backup-age is a warning
  wal_continuity   gaps in the archived WAL from the oldest backup on: warning
  recovery_window  from the oldest backup with unbroken WAL after it to the
                   newest archived segment; none is critical

Privileges: a superuser sees everything. Otherwise grant pg_monitor (reads
archive_command, data_directory, pg_ls_archive_statusdir()) and, for the probe,
EXECUTE on pg_create_restore_point(text) and pg_switch_wal(). What a role cannot
read is reported, never guessed. The .ready files are counted in the data
directory when this host can read it (and it is the connected server's),
else with pg_ls_archive_statusdir().

On a standby the probe is skipped (a standby cannot switch WAL) and archiving
is judged from the standby's own pg_stat_archiver when archive_mode = always.

--json prints one object (format 1, documented in the README); --prometheus
prints metrics named pgark_* for node_exporter's textfile collector.

Exit codes (Nagios plugin convention; not the other commands' codes):
  0    OK
  1    WARNING
  2    CRITICAL
  3    UNKNOWN: the check could not run (bad arguments or configuration, no
       repository, cannot connect, repository unreadable)`,
		run: runCheck,
	})
	cc := []string{"check"}
	options = append(options,
		option{"check-timeout", "60s", "check: how long the probe waits for its WAL segment to reach the repository", "duration", cc},
		option{"max-backup-age", "0", "check: warn when the newest backup is older than this, e.g. 26h (0: not checked)", "duration", cc},
		option{"max-archive-lag", "16", "check: warn when more complete WAL segments than this wait to be archived", "int", cc},
		option{"no-probe", "false", "check: skip the probe (restore point, WAL switch, wait for the segment in the repository)", "bool", cc},
		option{"prometheus", "false", "check: print Prometheus metrics (text format, for node_exporter's textfile collector)", "bool", cc},
	)
}

// checkStatusError carries a WARNING or CRITICAL result to the exit code.
type checkStatusError struct {
	status  health.Status
	summary string
}

func (e *checkStatusError) Error() string { return e.summary }

// checkExitCode maps check's outcome to the Nagios convention: 1 warning,
// 2 critical, and 3 (unknown) for anything that kept the check from running,
// usage errors included.
func checkExitCode(err error) int {
	var se *checkStatusError
	if errors.As(err, &se) {
		return int(se.status)
	}
	if err == nil {
		return exitOK
	}
	return int(health.Unknown)
}

type checkOutput int

const (
	outText checkOutput = iota
	outJSON
	outPrometheus
)

func runCheck(ctx context.Context, env *cmdEnv, args []string) error {
	env.exitCodeFor = checkExitCode
	out := outText
	err := runCheckTo(ctx, env, args, &out)
	var se *checkStatusError
	if err != nil && !errors.As(err, &se) {
		// The check could not run: say so where monitoring looks.
		switch out {
		case outPrometheus:
			_ = health.WriteUnknownPrometheus(env.stdout)
		case outJSON:
			enc := json.NewEncoder(env.stdout)
			_ = enc.Encode(map[string]any{"format": 1, "status": health.Unknown, "error": oneLine(err.Error())})
		default:
			fmt.Fprintf(env.stdout, "PGARK CHECK UNKNOWN - %s\n", oneLine(err.Error()))
		}
	}
	return err
}

func runCheckTo(ctx context.Context, env *cmdEnv, args []string, out *checkOutput) error {
	s := env.s
	asJSON, err := s.boolean("json")
	if err != nil {
		return err
	}
	prom, err := s.boolean("prometheus")
	if err != nil {
		return err
	}
	switch {
	case asJSON && prom:
		return usageErrorf("--json and --prometheus exclude each other")
	case asJSON:
		*out = outJSON
	case prom:
		*out = outPrometheus
	}
	if len(args) != 0 {
		return usageErrorf("check takes no arguments (connection settings come from --dsn or the libpq environment)")
	}
	var lim health.Limits
	if lim.MaxBackupAge, err = s.duration("max-backup-age"); err != nil {
		return err
	}
	if lim.MaxArchiveLag, err = s.integer("max-archive-lag"); err != nil {
		return err
	}
	if lim.MaxArchiveLag < 0 {
		return usageErrorf("max-archive-lag: %d is negative", lim.MaxArchiveLag)
	}
	timeout, err := s.duration("check-timeout")
	if err != nil {
		return err
	}
	noProbe, err := s.boolean("no-probe")
	if err != nil {
		return err
	}
	connCfg, err := pgconn.ParseConfig(s.str("dsn"))
	if err != nil {
		return usageErrorf("dsn: %v", err)
	}
	if connCfg.ConnectTimeout == 0 {
		connCfg.ConnectTimeout = 30 * time.Second // a monitoring check must not hang
	}
	server := fmt.Sprintf("%s:%d", connCfg.Host, connCfg.Port)

	r, ids, err := openRepoToRead(ctx, env)
	if err != nil {
		return err
	}
	conn, err := pgconn.ConnectConfig(ctx, connCfg)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", server, err)
	}
	defer conn.Close(context.Background())

	srv, err := health.Gather(ctx, conn)
	if err != nil {
		return fmt.Errorf("%s: %w", server, err)
	}
	cl, bound, err := r.Cluster(ctx)
	if err != nil {
		return err
	}
	in := health.Inputs{Repository: r.Store.String()}
	if bound {
		in.RepoSystemID = strconv.FormatUint(cl.SystemID, 10)
		if srv.WALSegmentSize == 0 {
			srv.WALSegmentSize = cl.WalSegmentBytes
		}
	}
	for _, n := range srv.Notes {
		env.log.Debug("not readable", "what", n)
	}
	in.Server = srv
	in.Command = health.CommandUses(srv.ArchiveCommand, s.str("repo"), srv.DataDirectory, os.ReadFile)

	switch {
	case noProbe:
		in.Probe = &health.ProbeResult{Skipped: "--no-probe"}
	case srv.InRecovery:
		in.Probe = &health.ProbeResult{Skipped: "the server is a standby (it cannot switch WAL); check the primary for the probe"}
	case !srv.Archives():
		in.Probe = &health.ProbeResult{Skipped: "archive_mode is " + orUnknown(srv.ArchiveMode)}
	default:
		env.log.Debug("probe: restore point and WAL switch", "timeout", timeout)
		if in.Probe, err = health.Probe(ctx, conn, r.Store, timeout); err != nil {
			return err
		}
	}
	// After the probe, so that the window ends with its segment.
	if in.Report, err = walinventory.Analyze(ctx, r, ids); err != nil {
		return err
	}
	in.Now = time.Now()
	res := health.Evaluate(in, lim)

	switch *out {
	case outJSON:
		err = printJSON(env.stdout, res)
	case outPrometheus:
		err = health.WritePrometheus(env.stdout, res)
	default:
		err = health.WriteText(env.stdout, res)
	}
	if err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	if res.Status == health.Warning {
		env.log.Warn(res.Summary()) // critical is logged by run, as an error
	}
	if res.Status != health.OK {
		return &checkStatusError{status: res.Status, summary: res.Summary()}
	}
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
