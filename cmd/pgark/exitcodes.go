package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// Exit codes. They are part of the interface: archive_command and
// restore_command act on them. The exitCodes table below documents them
// (command help, docs/reference); errors.go maps errors to them.
const (
	exitOK         = 0
	exitNotFound   = 1 // wal-fetch only: the repository answered "does not exist" in this call
	exitUsage      = 2 // bad arguments or configuration
	exitRepository = 3 // no repository at the location, or it refuses the input (not WAL, another cluster)
	exitConflict   = 4 // different content is already archived under this name
	exitStorage    = 5 // storage or local I/O failed (after retries)
	exitKey        = 6 // encryption or signing keys: missing, unusable or unregistered; no identity matches; bad origin signature
	exitLocked     = 7 // another backup or retain holds the repository lock (or took it over)
	exitTool       = 8 // dump, dump-restore: pg_dump, pg_dumpall, pg_restore or an SQL statement failed
	// drill: the drill ran and a check failed (recovery, target, connections,
	// check-sql, amcheck, pg_verifybackup).
	exitDrillFailed = 9
	// exitRecoveryStop is wal-fetch's status for every failure other than
	// "not found" during archive recovery. PostgreSQL treats an exit status
	// above 125 as fatal and stops recovery, instead of taking the failure
	// for the end of the archive and finishing recovery early.
	exitRecoveryStop = 200
	// exitCheckUnknown is check's status when the check could not run
	// (Nagios UNKNOWN): its usage errors too, since 2 would read as CRITICAL.
	exitCheckUnknown = 3
)

// exitSet names the exit codes a command uses.
type exitSet int

const (
	exitsGeneral exitSet = iota // most commands
	exitsDump                   // dump, dump-restore: the general ones and 8
	exitsFetch                  // wal-fetch: what restore_command needs
	exitsCheck                  // check: the Nagios plugin convention
	exitsVerify                 // verify: 1 is "not restorable"
	exitsDrill                  // drill: the general ones and 9
)

var exitSetNames = [...]string{"general", "dump", "wal-fetch", "check", "verify", "drill"}

func (s exitSet) String() string { return exitSetNames[s] }

// exitDoc documents one exit code of some exit sets.
type exitDoc struct {
	code int
	sets []exitSet
	text string
	only []string // when set, only these commands of the sets return it
}

// exitCodes is every documented exit code: the one table that the command
// help, `pgark help` and docs/reference/exit-codes.md are made from.
var exitCodes = []exitDoc{
	{exitOK, []exitSet{exitsGeneral, exitsDump, exitsDrill}, "success", nil},
	{exitUsage, []exitSet{exitsGeneral, exitsDump, exitsVerify, exitsDrill}, "bad arguments or configuration (including an invalid recovery target; for restore, a data directory or tablespace location that is not empty; for dump, dump-restore, a database, table or schema that the dump or server does not hold; for drill and dump-restore --target-*, no server binaries of the backup's major)", nil},
	{exitRepository, []exitSet{exitsGeneral, exitsDump, exitsVerify, exitsDrill}, "no repository at the location, or the repository refuses the input (not a WAL file, WAL of another cluster, incompatible repository), a damaged metadata object, a backup whose content restore refuses or whose chain is broken (a parent of an incremental backup missing, damaged or inconsistent); backup --require-parent: no usable parent, or a file that changed since the parent without a new modification time; dump, dump-restore: a client tool older than the server, no such dump or target database, a table of a selective restore that already exists in the target (never overwritten without --clean); dump-restore --target-*: recovery stopped before the target (a missing WAL segment, a target beyond the archive)", nil},
	{exitConflict, []exitSet{exitsGeneral, exitsDump}, "different content is already archived under this name (never overwritten)", nil},
	{exitStorage, []exitSet{exitsGeneral, exitsDump, exitsVerify, exitsDrill}, "storage or local I/O error, after retrying transient errors for retry-timeout", nil},
	{exitKey, []exitSet{exitsGeneral, exitsDump, exitsVerify, exitsDrill}, "encryption or signing keys: age recipients missing, malformed or not registered in the repository (key remove: removed ones are refused); identity file missing or unreadable, or no identity matches; a signing key file or trusted-signers that cannot be used; an object whose origin signature is missing, not from a trusted signer or does not match; key generate, key generate-signing: the key file exists already or cannot be written", nil},
	{exitLocked, []exitSet{exitsGeneral}, "another backup, retain or copy holds the repository lock (the error names it), or took it over while this run held it", lockedCmds},
	{exitTool, []exitSet{exitsDump}, "a PostgreSQL client tool or the server failed (pg_dump, pg_dumpall, pg_restore exited non-zero, an SQL statement failed); its stderr is passed through; a failed dump run is marked failed and never used", nil},

	{exitOK, []exitSet{exitsFetch}, "DEST written and verified", nil},
	{exitNotFound, []exitSet{exitsFetch}, `NAME is not in the repository: the store answered "does not exist" to a request made in this call (PostgreSQL then ends archive recovery, or a standby switches to streaming)`, nil},
	{exitStorage, []exitSet{exitsFetch}, "any other failure on a standby (standby.signal in the data directory): the standby logs the error and retries (or streams) instead of shutting down on a passing outage", nil},
	{exitRecoveryStop, []exitSet{exitsFetch}, "any other failure during archive recovery (repository unreachable after retries, damaged object, wrong key, bad command line or configuration). PostgreSQL treats a status above 125 as fatal and stops, instead of ending recovery early at the wrong point; fix the cause and start the server again, recovery resumes where it stopped", nil},

	{0, []exitSet{exitsCheck}, "OK: every check passed", nil},
	{1, []exitSet{exitsCheck}, "WARNING: at least one check warns, none is critical", nil},
	{2, []exitSet{exitsCheck}, "CRITICAL: at least one check is critical (archiving failing, archive_mode off, probe timed out, no backup, nothing restorable, wrong cluster)", nil},
	{exitCheckUnknown, []exitSet{exitsCheck}, "UNKNOWN: the check could not run (bad arguments or configuration, no repository, cannot connect, repository unreadable)", nil},

	// drill.
	{exitDrillFailed, []exitSet{exitsDrill}, "the drill ran and a check failed: recovery stopped before its target (a missing WAL segment, a damaged record), the server did not promote or a database did not accept connections, a --check-sql query did not return true, pg_amcheck or pg_verifybackup found a problem; the drill is recorded as failed", nil},

	{0, []exitSet{exitsVerify}, "everything needed for recovery is there (and, with --full, intact)", nil},
	{1, []exitSet{exitsVerify}, "something needed for recovery is missing or damaged (see the report: gaps, missing history, damaged objects, no recoverable window)", nil},
}

// exitCodesFor is the documented exit codes of a command (of exit set
// set), by code.
func exitCodesFor(set exitSet, cmd string) []exitDoc {
	var out []exitDoc
	for _, e := range exitCodes {
		if slices.Contains(e.sets, set) && (e.only == nil || slices.Contains(e.only, cmd)) {
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b exitDoc) int { return a.code - b.code })
	return out
}

// exitCodesTitle heads a set's exit codes in help and reference.
func exitCodesTitle(set exitSet) string {
	if set == exitsCheck {
		return "Exit codes (Nagios plugin convention; not the other commands' codes):"
	}
	return "Exit codes:"
}

// printExitCodes writes a command's exit codes as its help shows them.
func printExitCodes(w io.Writer, c *command) {
	fmt.Fprintln(w, exitCodesTitle(c.exits))
	for _, e := range exitCodesFor(c.exits, c.name) {
		lines := wrap(e.text, 72)
		fmt.Fprintf(w, "  %-4d %s\n", e.code, lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(w, "       %s\n", l)
		}
	}
}

// wrap breaks text into lines of at most width columns (longer words stay whole).
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}
