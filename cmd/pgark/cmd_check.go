package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgark/pgark/health"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/walinventory"
)

// checkStatusError carries a WARNING or CRITICAL result to the exit code.
type checkStatusError struct {
	status  health.Status
	summary string
}

func (e *checkStatusError) Error() string { return e.summary }

// checkExitCodes is check's exit code mapping (checkExitCode).
func checkExitCodes(*cmdEnv) func(error) int { return checkExitCode }

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
	out := outText
	err := runCheckTo(ctx, env, args, &out)
	var se *checkStatusError
	if err != nil && !errors.As(err, &se) {
		printUnknown(env.stdout, out, err)
		writeUnknownPromFile(env.s, env.log)
	}
	return err
}

// checkSetupFailed reports a setting of the wrong kind where monitoring
// looks, in the output format asked for (when that setting is valid).
func checkSetupFailed(stdout io.Writer, s *settings, err error) {
	out := outText
	asJSON, jerr := s.boolean("json")
	prom, perr := s.boolean("prometheus")
	switch {
	case jerr != nil || perr != nil || asJSON && prom:
	case asJSON:
		out = outJSON
	case prom:
		out = outPrometheus
	}
	printUnknown(stdout, out, err)
	writeUnknownPromFile(s, nil)
}

// printUnknown says that the check could not run, and why.
func printUnknown(stdout io.Writer, out checkOutput, err error) {
	switch out {
	case outPrometheus:
		_ = health.WriteUnknownPrometheus(stdout)
	case outJSON:
		enc := json.NewEncoder(stdout)
		_ = enc.Encode(map[string]any{"format": 1, "status": health.Unknown, "error": storage.OneLine(err.Error())})
	default:
		fmt.Fprintf(stdout, "PGARK CHECK UNKNOWN - %s\n", storage.OneLine(err.Error()))
	}
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
	in.Command = health.CommandUses(srv.ArchiveCommand, archiveRepo(env), srv.DataDirectory, os.ReadFile)

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
	if bound {
		addLocalDropped(env, in.Report, cl.SystemID) // archive-queue-max
	}
	in.Now = time.Now()
	// The restore drills (pgark drill).
	if lim.MaxDrillAge, err = s.duration("drill-max-age"); err != nil {
		return err
	}
	if in.LastDrill, in.LastSuccessfulDrill, err = lastDrills(ctx, r, env); err != nil {
		return err
	}
	res := health.Evaluate(in, lim)
	if c, ok := repositoryArchiveCheck(env, srv, in.Report, lim.MaxArchiveLag); ok {
		res.Checks = append(res.Checks, c)
		res.Status = max(res.Status, c.Status)
	}

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
	if file := s.str("prometheus-file"); file != "" {
		if err := writePromFile(file, func(w io.Writer) error { return health.WritePrometheus(w, res) }); err != nil {
			return err
		}
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
