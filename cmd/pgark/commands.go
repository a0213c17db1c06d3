package main

import (
	"context"
	"io"
)

// command is one pgark command. Its options are those of the option table
// that name it (options.go); its exit codes are the rows of exitCodes for its
// exit set.
type command struct {
	name    string // "key add" for a subcommand of key
	args    string
	summary string
	help    string
	exits   exitSet
	hidden  bool // started by pgark itself, not listed
	run     func(ctx context.Context, env *cmdEnv, args []string) error
	// exitFor, when set, maps the command's errors to its exit codes
	// (default exitCode), for env (read when an error is mapped).
	exitFor func(env *cmdEnv) func(error) int
	// setupFailed, when set, reports a setting of the wrong kind on
	// stdout too (s: the settings as resolved, err: the first bad one).
	setupFailed func(stdout io.Writer, s *settings, err error)
}

// commandList is every command, in the order of `pgark help`. A function,
// not a variable: the run functions print usage, which reads the list.
func commandList() []*command {
	return []*command{
		{
			name:    "init",
			args:    "[REPO]",
			summary: "create a repository (local directory, s3://, gs:// or sftp:// URL)",
			help: `Creates a repository explicitly; pushes and backups never create one. A local
repository path must be absolute and either missing (it is created) or an
empty directory. An S3 prefix must hold no objects; init also checks that the
store refuses a second conditional create (If-None-Match), and fails if it
does not, unless --allow-head-then-put records the weaker HEAD-then-PUT mode.
A GCS prefix (gs://bucket/prefix) must hold no objects either; init checks
that the bucket refuses a second create and a replace at a wrong generation,
and fails if it does not (there is no weaker mode).

With age recipients configured, the repository is encrypted: their
fingerprints are recorded, and later writes without a registered recipient
are refused. With --pgdata, the repository is bound now to that cluster's
system identifier and WAL segment size; otherwise the first push binds it.

Run init as the user that runs PostgreSQL (for a local repository, so that
archive_command can write there).`,
			run: runInit,
		},
		{
			name:    "wal-push",
			args:    "PATH",
			summary: "archive one WAL file (archive_command = 'pgark wal-push %p')",
			help: `Compresses, encrypts and stores the WAL file at PATH (a segment, .partial,
.backup or .history file) in the repository, and exits 0 only once it is
durably stored. Identical content already archived is success; different
content under the same name is refused and the archived copy is kept.
Segments are checked before they are stored: long page header, page
address, segment and block size, and the cluster's system identifier.

Push-ahead (--push-ahead, --push-jobs): a segment is pushed together with the
next .ready segments of pg_wal/archive_status, in parallel; those are recorded
in the spool (--spool-dir) once stored, and PostgreSQL's calls for them answer
0 at once if the file is unchanged since (same device, inode, size, mtime and
ctime, else same size and CRC-32C). After a call, when more segments wait,
the next batch runs in the background (pgark wal-push-ahead, detached)
while PostgreSQL's next calls are answered.

WAL is compressed at zstd level 1 unless --wal-compression-level (or
--compression-level) says otherwise: archiving must keep up.

With a second repository (repo2), the file is stored in both, each within
--mirror-timeout; exit 0 then means stored in at least one and, for the
other, a verified copy queued in the spool, which later pushes deliver.

Every failure exits with a status from 1 to 125, so that PostgreSQL counts it
in pg_stat_archiver and retries the segment.`,
			run: runWalPush,
		},
		{
			name:    "wal-fetch",
			args:    "NAME DEST",
			summary: "restore one WAL file (restore_command = 'pgark wal-fetch %f %p')",
			help: `Fetches the WAL file NAME from the repository and writes it to DEST, atomically
(temporary file, rename) and only after verifying it: authenticated
decryption, zstd checksums, and the size and CRC-32C recorded at push (the
SHA-256 with trusted-signers, which signs it, or for WAL pushed before the
CRC-32C was recorded).
Transient storage errors are retried with backoff for --retry-timeout.

Prefetch (--fetch-ahead, --fetch-jobs, --spool-max-size): during recovery, a
detached helper (pgark wal-prefetch) keeps the next segments downloaded,
verified and decoded in the spool (--spool-dir), and later calls rename them
into place. "Not found" is never remembered: it only ever comes from this
call's own request.

With a second repository (repo2), a file the first repository fails to give
or does not hold is read from the second; "not found" (1) only when both
answered "does not exist".

A SIGTERM or SIGINT ends pgark by that signal, never with status 1.`,
			exits:   exitsFetch,
			exitFor: fetchExitCode,
			run:     runWalFetch,
		},
		{
			name:    "backup",
			summary: "take a full base backup over the replication protocol into the repository",
			help: `Takes a base backup through the streaming replication protocol (no file
system access to the database host) and streams it through zstd and age into
the repository; nothing is staged on local disk.

Connection settings follow libpq: --dsn (a connection string or URL), or
PGHOST, PGPORT, PGUSER, PGPASSWORD, PGPASSFILE, ... The stream uses a physical
replication connection (replication=true; pg_hba's "replication" keyword), and
a second, normal connection runs the SQL pgark needs.

Every file streamed is checked against the server's backup_manifest, and the
backup is complete only once every WAL file it needs is confirmed in the
repository (--archive-timeout); its metadata object is written last. A
failed backup leaves nothing that list shows as usable.

From a standby, give --primary-dsn: pgark then makes the primary switch WAL
so that the backup's last segment gets archived.`,
			run: runBackup,
		},
		{
			name:    "restore",
			args:    "BACKUP|latest PGDATA",
			summary: "restore a base backup into PGDATA and set up point-in-time recovery",
			help: `Restores a backup into PGDATA (which must be missing or empty) and writes the
recovery configuration: restore_command = pgark wal-fetch (the absolute path
of this pgark, the repository and config settings it needs, never a secret),
the recovery target, and recovery.signal (standby.signal with --standby).

Targets: --target-time (with an explicit UTC offset, e.g. 2026-11-24T15:45:00+01:00),
--target-lsn, --target-xid, --target-name, --target-immediate; at most one.
Without a target, recovery replays everything archived (the latest state).
With "latest" as BACKUP, pgark picks the newest backup that became consistent
before a time or LSN target, on the target timeline's history.

The restored node gets archive_mode = off unless --keep-archiving, so that a
copy never pushes a diverging history into the production archive.
global/pg_control is written last: an interrupted restore leaves a directory
PostgreSQL refuses to start; run the same restore with --force to clean it and
start again.`,
			run: runRestore,
		},
		// drill: restore drills (cmd_drill.go).
		{
			name:    "drill",
			args:    "[BACKUP|latest]",
			summary: "test a backup: restore it into a scratch server, replay, promote and check",
			help: `Restores the backup (default latest) into a scratch directory (--scratch DIR,
default under the spool directory, as root the server user's; never inside a
data directory or tablespace), starts a private server on it with the server binaries of the
backup's major (--pg-bin DIR, else /usr/lib/postgresql/<major>/bin and the
other usual places), replays WAL to the end of the archive or to the
--target-* given, promotes it, checks it, stops it and removes the directory.

The scratch server opens no TCP port (a unix socket in the scratch
directory), archives nothing, runs no replication, subscriptions or preload
libraries, and uses modest memory: it is safe on a production host. Nothing
is written to the repository but the drill's record, drills/<id>.json
(signed with signing-key-file).

Checks, in order: pg_verifybackup -n of the same major before the first start
(when installed); recovery ends and the server promotes; recovery reached
the end of the archive (a missing segment is named) or the target; every
database accepts connections; --check-sql FILE: queries that must each return
one row holding true (a line "-- database: NAME" switches database);
--amcheck: pg_amcheck on every database (when installed).

The report gives the backup, the LSN and time reached, the seconds spent
restoring, replaying and checking, the recovery time (restore + replay), the
WAL segments replayed and the data size: as text, --json, and
--prometheus-file FILE (node_exporter's textfile format). pgark check
judges the last drill (last_drill), pgark list --drills lists them.

The drill always cleans up, on failure and on SIGINT or SIGTERM; a drill
killed with -9 leaves a marker that the next drill uses to stop the server and
remove the directory (--force also cleans up after a drill that still seems to
run). --keep keeps the stopped scratch directory for inspection. As root the
server runs as --owner (default postgres).`,
			exits:   exitsDrill,
			exitFor: drillExitCodes,
			run:     runDrill,
		},
		{
			name:    "list",
			summary: "list backups and the WAL the archive covers",
			help: `Lists complete backups, oldest first (by their recorded LSNs): id, start and
stop time, duration, LSNs, timeline, PostgreSQL version, raw and stored size.
Then the WAL the archive holds, per timeline. Backups that never completed
(no metadata: in progress, or failed) are listed apart and are never used.

--json prints one object with a stable schema (documented in the README);
consumers should ignore fields they do not know.`,
			run: perRepo(runList, repoHooks{}),
		},
		{
			name:    "verify",
			summary: "check that the archive and the backups can restore: continuity, objects, recoverable window",
			help: `Checks everything a restore needs and exits non-zero when any of it is
missing or damaged:

- WAL continuity along the newest timeline's history: on each timeline from
  the oldest backup's start (or the switch into it) to the switch into the
  next, and on the newest timeline up to its newest archived segment. Missing
  segments are listed as ranges, and timelines without a history file. A
  timeline's last segment (before a switch) is read from the new timeline,
  as PostgreSQL does, so switch points are never reported as gaps.
- Backups (all, or --backup ID): every object exists with its recorded size.
  With --full, each is downloaded, decrypted and decompressed (checked
  against its recorded SHA-256), its tar stream walked and every file
  checked against the stored backup_manifest.
- WAL, with --full: every segment in range is read and checked (size,
  SHA-256 and CRC-32C recorded at push, the header's system identifier, segment size and
  page address).
- The recoverable window: from the consistency point of the oldest backup
  with unbroken WAL after it, to the end of the newest archived segment.

Without an identity, an encrypted repository is checked from metadata
(sizes, switch points) only; --full needs age-identity-file.`,
			exits:   exitsVerify,
			exitFor: verifyExitCode,
			run:     perRepo(runVerify, repoHooks{}),
		},
		{
			name:    "check",
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
prints metrics named pgark_* for node_exporter's textfile collector;
--prometheus-file FILE writes them to FILE atomically, beside any output.`,
			exits:       exitsCheck,
			exitFor:     checkExitCodes,
			run:         runCheckRepos,
			setupFailed: checkSetupFailed,
		},
		{
			name:    "retain",
			summary: "delete the backups and WAL outside the retention policy (never what a kept backup needs)",
			help: `Applies the retention policy: --keep-last N keeps the N newest backups on the
current (newest) timeline; --keep-within PERIOD (14d, 2w, 36h) keeps everything
needed to recover to any point in that period, which includes the newest
backup that became consistent before the period starts. With both, a backup
that either keeps is kept. The newest backup is always kept. The policy can
live in the config file, so that cron runs a bare "pgark retain".

Backups are ordered by their recorded LSNs and stop times, never by their
names. Only backups on the newest timeline's history count as its newest:
after a point-in-time restore, backups on the abandoned timeline are kept
while they are newer than the oldest kept backup (or inside the window), and
deleted after that.

Then WAL that no kept backup needs is deleted: everything before the oldest
kept backup's start segment, on every timeline. History files are kept.

Each backup's completion marker (backup.json) is deleted first, then its
objects, then the WAL: a run interrupted at any point leaves a repository that
"pgark verify" accepts (a half-deleted backup is listed as incomplete and
deleted by the next run). --dry-run prints what would go and what stays, and
why; a real run prints the same list.`,
			run: perRepo(runRetain, repoHooks{}),
		},
		{
			name:    "dump",
			summary: "take logical dumps (pg_dump -Fc per database, pg_dumpall --globals-only) into the repository",
			help: `Dumps every database that accepts connections except template0 (or the
--db NAME ones, less --exclude-db NAME), each with pg_dump -Fc -Z0, plus
pg_dumpall --globals-only for the roles and tablespaces. Each dump streams
from the tool's stdout through zstd and age into the repository: nothing is
staged on local disk.

pg_dump and pg_dumpall are found on PATH or in --pg-bin DIR; a client older
than the server is refused (exit 3). Connection settings follow libpq:
--dsn (a connection string or URL; its database is where pgark connects
first) or PGHOST, PGPORT, PGUSER, PGPASSWORD, PGPASSFILE, ...

One run is a unit: an id, one object per database plus the globals, and its
metadata (dump.json) written last. A failing tool fails the run (its stderr
is passed through): the run's objects are deleted and a failed.json marker
is left; it is never listed as complete nor used as latest.`,
			exits: exitsDump,
			run:   runDump,
		},
		{
			name:    "dump-restore",
			args:    "DUMP|latest",
			summary: "restore a database, tables, schemas or the roles from a logical dump",
			help: `Restores one database of a dump run with pg_restore (--db NAME picks it
when the run holds several; --target-db NAME restores into another one).

  --create       recreate the database (pg_restore --create: also its GRANTs,
                 ALTER DATABASE ... SET, comment, owner, encoding and locale).
                 With --target-db, the new database gets the original encoding
                 and locale, then the original's properties under its name.
  (no --create)  the target must exist and be empty, unless --clean (drop the
                 archive's objects first) or a selective restore.
  --table T, --schema S (repeatable): a selective restore, with each table's
                 indexes, constraints, triggers, policies, defaults, owned
                 sequences, comments and privileges (an FK constraint only when
                 the tables it joins are restored too).
  --schema-only, --data-only, --no-owner, --jobs N (decrypts to a temporary
                 file, mode 0600, removed afterwards: pg_restore needs one to
                 work in parallel; TMPDIR picks where).
  --list         print the archive's table of contents (with --table or
                 --schema: the list a selective restore would use).
  --to-file PATH write the decrypted -Fc archive (with --globals: the SQL),
                 never replacing a file.
  --globals      replay the roles, memberships and tablespaces: only the
                 missing ones are created, existing ones are reported and left
                 alone (--overwrite-roles applies the dumped definitions;
                 --no-role-passwords leaves passwords out; --dry-run prints
                 what would run).

A database that the restore creates is dropped again if the restore fails.`,
			exits: exitsDump,
			run:   runDumpRestore,
		},
		{
			name:    "key generate",
			args:    "FILE",
			summary: "write a new age identity to FILE (0600) and print its public recipient",
			help: `Generates an age X25519 identity, writes it to FILE with mode 0600 (refusing to
overwrite an existing file), and prints its public recipient (age1...) on
standard output. Give the recipient to the database hosts (push, backup);
keep FILE off them: it is needed only to fetch and restore.`,
			run: runKeyGenerate,
		},
		{
			name:    "key generate-signing",
			args:    "FILE",
			summary: "write a new ed25519 signing key to FILE (0600) and print its public key",
			help: `Generates an ed25519 signing key for origin authentication, writes it to FILE
with mode 0600 (refusing to overwrite an existing file), and prints its public
key (pgark-ed25519:...). Give FILE to the hosts that write (signing-key-file)
and the public key to the hosts that read (trusted-signers): fetch and restore
then refuse any object that this key did not sign, such as WAL planted by
someone who can write to the bucket but does not hold the key.`,
			run: runKeyGenerateSigning,
		},
		{
			name:    "key add",
			args:    "RECIPIENT...",
			summary: "register age recipients (age1...) in the repository, for key rotation",
			help: `Registers public age recipients in the repository's config (pgark.json), by a
compare-and-swap of the config object. Hosts may then encrypt new objects to
them (age-recipients). Existing objects are not re-encrypted: they stay
readable with the identities they were written for; ` + "`pgark verify`" + ` lists
which identities the retained objects need.

Rotation: key add NEW; set age-recipients to NEW on every host; after the
objects that only the OLD identity reads have expired by retention (verify
tells), key remove OLD. A removed recipient is refused to writers at once.`,
			run: perRepo(runKeyAdd, repoHooks{}),
		},
		{
			name:    "key remove",
			args:    "RECIPIENT|FINGERPRINT...",
			summary: "unregister age recipients: new objects are no longer encrypted to them",
			help: `Removes recipients (age1... or their fingerprint, as ` + "`pgark key list`" + ` shows)
from the repository's config. From then on, a host that still encrypts to a
removed recipient is refused (exit 6) instead of writing data that key could
read. The last recipient cannot be removed. Objects already written are not
changed: keep the removed identity while ` + "`pgark verify`" + ` says retained objects
need it.`,
			run: perRepo(runKeyRemove, repoHooks{}),
		},
		{
			name:    "key list",
			summary: "list the repository's registered recipients and their history",
			help: `Lists the registered recipients' fingerprints (and the public keys when known),
and the history of additions and removals. With age-identity-file, marks the
recipients that the identities match. --json gives the same.`,
			run: perRepo(runKeyList, repoHooks{}),
		},
		{
			name:    "copy",
			summary: "replicate backups, dumps and WAL into the second repository (repo2), incrementally and verified",
			help: `Copies what repository 1 holds and repository 2 lacks (or the other way with
--copy-from 2): WAL and history files, then each complete backup and dump
run, its objects before its metadata (backup.json, dump.json), so that a
backup copied in part is never listed or used. Objects are copied as they
are stored, still compressed and encrypted, with their metadata and
signatures: no identity is needed. Each copied object is read back from the
destination and its SHA-256 compared with the source's. What the destination
already holds with the same size is skipped; an object it holds with another
size is reported as a conflict (exit 4) and never overwritten. Backups in
progress or failed are not copied. The destination's repository lock is held
while copying, so a retain there waits. Safe to interrupt and run again.
Without repo2 it fails at once with exit 2.`,
			run: runCopy,
		},
		{
			name:    "wal-push-ahead",
			args:    "PATH",
			summary: "the background push-ahead batch that wal-push starts (not run by hand)",
			help: `Pushes up to --push-ahead of the oldest .ready segments of PATH's pg_wal
directory that have no record in the spool, --push-jobs at a time, and
records each once it is durably stored, so that PostgreSQL's calls for them
answer at once. wal-push starts it, detached, after a call that was
answered or pushed, when no batch runs and more segments wait: the next
batch is then pushed while PostgreSQL's calls are answered from the spool.
It exits at once if another batch holds the spool. Its log is
push-helper.log in the spool.`,
			hidden: true,
			run:    runWalPushAhead,
		},
		{
			name:    "wal-prefetch",
			summary: "the background helper that wal-fetch starts (not run by hand)",
			help: `Keeps the segments that follow wal-fetch's newest request downloaded,
verified, decrypted and decompressed in the spool (--spool-dir), within
--spool-max-size, --fetch-jobs downloads at a time. wal-fetch starts it,
detached, when none runs for its spool; it exits, emptying the spool, when
recovery ends (no recovery.signal or standby.signal in --pgdata) or after
60 s without a request. Its log is helper.log in the spool.`,
			hidden: true,
			run:    runWalPrefetch,
		},
	}
}
