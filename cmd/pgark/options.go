package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// option is one setting. Every setting has a flag (--name), an environment
// variable (PGARK_NAME with '-' as '_') and a key in the config file (name).
// Precedence: flag, then environment, then config file, then default. Its
// value is checked against its kind when it is resolved, so that a bad value
// is a usage error naming where it came from, whichever command reads it.
type option struct {
	name string
	kind optKind
	def  string
	// defs are the defaults of the commands whose default differs from def.
	defs map[string]string
	// enum are the accepted values of an optEnum (and "" when def is "").
	enum []string
	help string
	cmds []string // the commands that take it; none = every command
}

// optKind is what an option's value must be.
type optKind int

const (
	optString   optKind = iota
	optBool             // true or false; the flag alone means true
	optInt              // a whole number
	optDuration         // a Go duration such as 30s or 5m, not negative
	optSize             // bytes, with an optional unit: 8MiB, 16MB, 1048576
	optEnum             // one of enum
	optList             // a repeatable flag; the values are joined with commas
)

func (k optKind) String() string {
	return [...]string{"string", "bool", "int", "duration", "size", "enum", "list"}[k]
}

// forCommand reports whether the option applies to the command.
func (o option) forCommand(cmd string) bool {
	if cmd == "wal-push-ahead" {
		cmd = "wal-push" // its background batch takes the same settings
	}
	return len(o.cmds) == 0 || slices.Contains(o.cmds, cmd)
}

// defaultFor is the option's default for the command.
func (o option) defaultFor(cmd string) string {
	if v, ok := o.defs[cmd]; ok {
		return v
	}
	return o.def
}

// check reports whether v is a value of the option's kind; src names where v
// came from. Empty values are checked when they are used (an unset default).
func (o option) check(v, src string) error {
	if v == "" {
		return nil
	}
	var err error
	switch o.kind {
	case optBool:
		if _, err = strconv.ParseBool(v); err != nil {
			return usageErrorf("%s (%s): %q is not true or false", o.name, src, v)
		}
	case optInt:
		if _, err = strconv.Atoi(v); err != nil {
			return usageErrorf("%s (%s): %q is not a whole number", o.name, src, v)
		}
	case optDuration:
		if d, err := time.ParseDuration(v); err != nil || d < 0 {
			return usageErrorf("%s (%s): %q is not a duration such as 30s or 5m", o.name, src, v)
		}
	case optSize:
		if _, err = parseSize(v); err != nil {
			return usageErrorf("%s (%s): %v", o.name, src, err)
		}
	case optEnum:
		if !slices.Contains(o.enum, v) {
			return usageErrorf("%s (%s): %q is not %s", o.name, src, v, orList(o.enum))
		}
	}
	return nil
}

// orList joins values as "a, b or c".
func orList(v []string) string {
	if len(v) < 2 {
		return strings.Join(v, "")
	}
	return strings.Join(v[:len(v)-1], ", ") + " or " + v[len(v)-1]
}

// Command groups for option scopes.
var (
	repoCmds   = []string{"init", "wal-push", "wal-fetch", "wal-prefetch", "backup", "list", "restore", "verify", "retain", "check", "key add", "key remove", "key list", "dump", "dump-restore", "copy", "drill"}
	writeCmds  = []string{"init", "wal-push", "backup", "dump"}
	readCmds   = []string{"wal-fetch", "wal-prefetch", "restore", "verify", "check", "key list", "dump-restore", "drill"}
	spoolCmds  = []string{"wal-push", "wal-fetch", "wal-prefetch"}
	fetchCmds  = []string{"wal-fetch", "wal-prefetch"}
	lockedCmds = []string{"backup", "retain", "copy"} // they take the repository lock: never at the same time
	// asOfCmds read the repository as of a past time (repo-target-time).
	asOfCmds = []string{"list", "verify", "restore", "wal-fetch", "wal-prefetch", "dump-restore", "drill"}
)

// options is every setting of every command: the one definition from which
// flags, environment variables, config keys, help and the reference are made.
var options = []option{
	// Every command.
	{name: "config", help: "config file (key = value lines, keys are these option names)"},
	{name: "log-level", def: "info", help: "log level: debug, info, warn, error"},
	{name: "log-format", kind: optEnum, def: "text", enum: []string{"text", "json"}, help: "log format: text or json"},

	// The repository.
	{name: "repo", cmds: repoCmds, help: "repository: an absolute local directory path, s3://bucket/prefix, gs://bucket/prefix, azure://container/prefix or sftp://user@host[:port]/path"},
	{name: "s3-endpoint", cmds: repoCmds, help: "S3 endpoint URL for S3-compatible stores (e.g. http://127.0.0.1:9000)"},
	{name: "s3-region", cmds: repoCmds, help: "S3 region (default: the AWS chain's, e.g. AWS_REGION, else us-east-1)"},
	{name: "s3-force-path-style", kind: optBool, def: "false", cmds: repoCmds, help: "path-style S3 addressing (MinIO and most S3-compatible stores)"},
	{name: "s3-request-checksum", kind: optEnum, def: "when_supported", enum: []string{"when_supported", "when_required"}, cmds: repoCmds, help: "SDK request checksums: when_supported (AWS default) or when_required (for stores that reject trailing checksums)"},
	{name: "s3-part-size", kind: optSize, def: "8MiB", cmds: repoCmds, help: "multipart upload part size (5MiB to 5GiB)"},
	{name: "s3-read-timeout", kind: optDuration, def: "2m", cmds: repoCmds, help: "fail (and retry) an S3 request whose connection stays silent this long"},
	{name: "s3-profile", cmds: repoCmds, help: "AWS shared config profile (~/.aws/config and credentials) whose credentials and region S3 uses; wins over AWS_ACCESS_KEY_ID, so that two repositories can use two accounts (default: the AWS chain's, e.g. AWS_PROFILE)"},
	// Azure Blob Storage (azure://container/prefix).
	{name: "azure-endpoint", cmds: repoCmds, help: "Azure blob service URL (default https://ACCOUNT.blob.core.windows.net; Azurite: http://127.0.0.1:10000/devstoreaccount1)"},
	{name: "azure-account", cmds: repoCmds, help: "Azure storage account name (default: AZURE_STORAGE_ACCOUNT)"},
	{name: "azure-account-key-file", cmds: repoCmds, help: "file holding the Azure storage account key (default: AZURE_STORAGE_KEY; without a key, SAS token or connection string: the default Azure credential chain)"},
	{name: "azure-sas-token-file", cmds: repoCmds, help: "file holding an Azure SAS token (default: AZURE_STORAGE_SAS_TOKEN)"},
	{name: "azure-block-size", kind: optSize, def: "8MiB", cmds: repoCmds, help: "Azure block size of staged uploads (1MiB to 4000MiB); smaller objects go up in one request"},
	{name: "azure-read-timeout", kind: optDuration, def: "2m", cmds: repoCmds, help: "fail (and retry) an Azure request whose connection stays silent this long"},
	// Google Cloud Storage (gs://bucket/prefix).
	{name: "gcs-credentials-file", cmds: repoCmds, help: "GCS: service-account JSON key file (default: application default credentials; none with STORAGE_EMULATOR_HOST)"},
	{name: "gcs-endpoint", cmds: repoCmds, help: "GCS: JSON API endpoint URL for private endpoints, e.g. https://storage-myendpoint.p.googleapis.com/storage/v1/ (default: Google's, or STORAGE_EMULATOR_HOST)"},
	{name: "gcs-chunk-size", kind: optSize, def: "8MiB", cmds: repoCmds, help: "GCS: resumable upload chunk size, a multiple of 256KiB (memory per upload); smaller objects go up in one request"},
	{name: "gcs-read-timeout", kind: optDuration, def: "2m", cmds: repoCmds, help: "GCS: fail (and retry) a request whose connection makes no progress this long"},
	// SFTP (sftp://user@host[:port]/path; see store_sftp.go).
	{name: "sftp-identity-file", cmds: repoCmds, help: "SFTP: the private key that logs in (default: ~/.ssh/id_ed25519, id_ecdsa or id_rsa, the first that exists; no passphrase)"},
	{name: "sftp-known-hosts", cmds: repoCmds, help: "SFTP: known_hosts file that must list the server's host key (default: ~/.ssh/known_hosts); unknown hosts are refused"},
	// A second repository (repo2): its location and the twins of the
	// per-store settings where they differ from the first (see repo2.go).
	{name: "repo2", cmds: repoCmds, help: "second repository, same forms as repo: init creates both, wal-push stores each file in both, reads fall back to it, copy replicates into it (default: none)"},
	{name: "repo2-s3-endpoint", cmds: repoCmds, help: "repo2: S3 endpoint URL (see s3-endpoint)"},
	{name: "repo2-s3-region", cmds: repoCmds, help: "repo2: S3 region (see s3-region)"},
	{name: "repo2-s3-force-path-style", kind: optBool, def: "false", cmds: repoCmds, help: "repo2: path-style S3 addressing (see s3-force-path-style)"},
	{name: "repo2-s3-request-checksum", kind: optEnum, def: "when_supported", enum: []string{"when_supported", "when_required"}, cmds: repoCmds, help: "repo2: SDK request checksums (see s3-request-checksum)"},
	{name: "repo2-s3-part-size", kind: optSize, def: "8MiB", cmds: repoCmds, help: "repo2: multipart upload part size (see s3-part-size)"},
	{name: "repo2-s3-read-timeout", kind: optDuration, def: "2m", cmds: repoCmds, help: "repo2: S3 silent-connection timeout (see s3-read-timeout)"},
	{name: "repo2-s3-profile", cmds: repoCmds, help: "repo2: AWS shared config profile for its credentials and region (see s3-profile)"},
	{name: "repo2-azure-endpoint", cmds: repoCmds, help: "repo2: Azure blob service URL (see azure-endpoint)"},
	{name: "repo2-azure-account", cmds: repoCmds, help: "repo2: Azure storage account name (see azure-account)"},
	{name: "repo2-azure-account-key-file", cmds: repoCmds, help: "repo2: file holding the Azure account key (see azure-account-key-file)"},
	{name: "repo2-azure-sas-token-file", cmds: repoCmds, help: "repo2: file holding an Azure SAS token (see azure-sas-token-file)"},
	{name: "repo2-azure-block-size", kind: optSize, def: "8MiB", cmds: repoCmds, help: "repo2: Azure block size (see azure-block-size)"},
	{name: "repo2-azure-read-timeout", kind: optDuration, def: "2m", cmds: repoCmds, help: "repo2: Azure silent-connection timeout (see azure-read-timeout)"},
	{name: "repo2-gcs-credentials-file", cmds: repoCmds, help: "repo2: GCS service-account JSON key file (see gcs-credentials-file)"},
	{name: "repo2-gcs-endpoint", cmds: repoCmds, help: "repo2: GCS JSON API endpoint URL (see gcs-endpoint)"},
	{name: "repo2-gcs-chunk-size", kind: optSize, def: "8MiB", cmds: repoCmds, help: "repo2: GCS resumable upload chunk size (see gcs-chunk-size)"},
	{name: "repo2-gcs-read-timeout", kind: optDuration, def: "2m", cmds: repoCmds, help: "repo2: GCS no-progress timeout (see gcs-read-timeout)"},
	{name: "repo2-sftp-identity-file", cmds: repoCmds, help: "repo2: SFTP private key (see sftp-identity-file)"},
	{name: "repo2-sftp-known-hosts", cmds: repoCmds, help: "repo2: SFTP known_hosts file (see sftp-known-hosts)"},
	{name: "mirror-timeout", kind: optDuration, def: "15s", cmds: []string{"wal-push"}, help: "wal-push with repo2: how long each repository gets to store a file; a repository that does not take it in time gets a verified copy queued in the spool, caught up by later pushes"},
	{name: "copy-from", kind: optEnum, def: "1", enum: []string{"1", "2"}, cmds: []string{"copy"}, help: "copy: the repository to copy from (1 or 2); the other one receives what it lacks"},
	{name: "repo-index", kind: optEnum, enum: []string{"", "1", "2"}, cmds: []string{"list", "verify", "check", "retain", "restore", "drill", "dump-restore", "wal-fetch", "wal-prefetch"}, help: "with repo2: work on repository 1 or 2 only (list, verify, check, retain: default each configured repository in turn; restore, drill, dump-restore, wal-fetch: default repository 1, falling back to 2 for what it lacks or when it fails)"},
	{name: "retry-timeout", kind: optDuration, def: "60s", cmds: repoCmds, help: "total time to retry transient storage errors before failing"},
	{name: "lock-wait", kind: optDuration, def: "0s", cmds: lockedCmds, help: "backup, retain, copy: how long to wait for the repository lock when another backup, retain or copy holds it (0: fail at once)"},

	// Compression, encryption and signatures.
	{name: "compression", cmds: writeCmds, help: "compression for new objects: zstd or none (default: the repository's)"},
	{name: "compression-level", kind: optInt, def: "0", cmds: writeCmds, help: "zstd level 1-22 (default: the repository's; 3 at init); wal-push uses wal-compression-level unless only this one is set"},
	{name: "wal-compression-level", kind: optInt, def: "0", cmds: []string{"wal-push"}, help: "wal-push: zstd level 1-22 for WAL (default: compression-level when that is set, else 1, which keeps up with heavy write loads: on pgbench WAL it stores 1-2% more than level 3 for 30% less CPU)"},
	{name: "age-recipients", cmds: writeCmds, help: "age public recipients (age1...), comma-separated, for writing"},
	{name: "age-recipients-file", cmds: writeCmds, help: "file with age public recipients, one per line, for writing"},
	{name: "age-identity-file", cmds: append([]string{"backup"}, readCmds...), help: "age identity file (private keys) for reading encrypted objects"},
	{name: "signing-key-file", cmds: []string{"wal-push", "backup", "dump", "drill"}, help: "ed25519 signing key (pgark key generate-signing): sign what is written, so that readers with trusted-signers can prove its origin"},
	{name: "trusted-signers", cmds: readCmds, help: "signing public keys (pgark-ed25519:...), comma-separated: when set, reads refuse any object not signed by one of them"},

	// init.
	{name: "allow-head-then-put", kind: optBool, def: "false", cmds: []string{"init"}, help: "accept a store without conditional writes and use HEAD-then-PUT (a concurrent writer can race)"},

	// Immutability: S3 Object Lock, and the repository as of a past time
	// (docs/copies-and-immutability.md).
	{name: "object-lock-days", kind: optInt, def: "0", cmds: []string{"init"}, help: "init: every object pgark writes carries an S3 Object Lock retention of this many days (the bucket must have Object Lock enabled; 0: none)"},
	{name: "object-lock-mode", kind: optEnum, def: "governance", enum: []string{"governance", "compliance"}, cmds: []string{"init"}, help: "init: the Object Lock mode of that retention: governance (users with s3:BypassGovernanceRetention may shorten it) or compliance (nobody can)"},
	{name: "repo-target-time", cmds: asOfCmds, help: "read the repository as it was at this time (RFC 3339 or PostgreSQL format, with a UTC offset): the object versions current then, later deletions and overwrites ignored; read-only; needs a versioned S3 bucket"},

	// WAL push and fetch, their spools.
	{name: "pgdata", cmds: []string{"init", "wal-push", "wal-fetch", "wal-prefetch"}, help: "PostgreSQL data directory (init: bind the repository to its cluster; wal-push, wal-fetch: the data directory of the server that runs them, default the working directory, which PostgreSQL sets to it)"},
	{name: "spool-dir", cmds: append([]string{"backup", "check", "drill", "dump-restore"}, spoolCmds...), help: "local directory for push-ahead records, prefetched WAL, records of segments dropped by archive-queue-max (wal-push writes them, check reads them), with repo2 the queues of wal-push (check counts them), (backup) copies of backup manifests for incremental backups, and (drill, dump-restore --target-*) the scratch servers' markers and default directory, outside the data directory (default $XDG_CACHE_HOME/pgark or ~/.cache/pgark)"},
	{name: "push-ahead", kind: optInt, def: "8", cmds: []string{"wal-push"}, help: "wal-push: also push up to this many of the next .ready segments in parallel, so that PostgreSQL's next calls answer at once (0: off)"},
	{name: "push-jobs", kind: optInt, def: "2", cmds: []string{"wal-push"}, help: "wal-push: pushes at once when pushing ahead"},
	{name: "fetch-ahead", kind: optInt, def: "8", cmds: fetchCmds, help: "wal-fetch: keep this many of the next segments downloaded, verified and decoded in the spool by a background helper (0: off)"},
	{name: "fetch-jobs", kind: optInt, def: "2", cmds: fetchCmds, help: "wal-fetch: downloads at once when fetching ahead"},
	{name: "spool-max-size", kind: optSize, def: "512MiB", cmds: fetchCmds, help: "wal-fetch: at most this many bytes of prefetched WAL in the spool"},
	// archive-queue-max (cmd/pgark/queuemax.go).
	{name: "archive-queue-max", kind: optSize, def: "0", cmds: []string{"wal-push"}, help: "wal-push: when a push fails after retry-timeout and the WAL segments waiting in pg_wal (.ready) exceed this size, report the segment archived without storing it, log an error and record the gap, so that a long repository outage cannot fill the disk and stop the server (0: off, never drop)"},

	// Output.
	{name: "json", kind: optBool, def: "false", cmds: []string{"list", "backup", "verify", "retain", "check", "key list", "dump", "copy", "drill"}, help: "print JSON (stable schema) instead of a table"},

	// backup (dsn also check, dump, dump-restore).
	{name: "dsn", cmds: []string{"backup", "check", "dump", "dump-restore"}, help: "connection string or URL of the server (backup: to back up; check: to check; dump, dump-restore: its database is where pgark connects first) (default: libpq environment)"},
	{name: "primary-dsn", cmds: []string{"backup"}, help: "for a backup from a standby: connection to the primary, to switch WAL there"},
	{name: "checkpoint", kind: optEnum, def: "fast", enum: []string{"fast", "spread"}, cmds: []string{"backup"}, help: "fast or spread: the checkpoint that starts the backup"},
	{name: "max-rate", kind: optSize, cmds: []string{"backup"}, help: "limit the server's send rate, e.g. 50MiB (per second; 32kB to 1GB)"},
	{name: "archive-timeout", kind: optDuration, def: "5m", cmds: []string{"backup"}, help: "how long to wait for the backup's WAL to reach the repository"},
	{name: "stream-timeout", kind: optDuration, def: "10m", cmds: []string{"backup"}, help: "fail when the server sends nothing for this long while it streams data (a stalled connection); 0: never"},
	{name: "backup-part-size", kind: optSize, def: "1GiB", cmds: []string{"backup"}, help: "split each tar stream into objects of at most this size, at file boundaries"},
	{name: "label", cmds: []string{"backup"}, help: "backup label (default: pgark <id>)"},
	{name: "backup-type", kind: optEnum, def: "full", enum: []string{"full", "incr", "diff"}, cmds: []string{"backup"}, help: "full; incr: only what changed since the newest backup; diff: since the newest full backup. Incremental backups need PostgreSQL 17+ with summarize_wal = on; without a usable parent a full backup is taken and the output says why (see require-parent)"},
	{name: "max-chain", kind: optInt, def: "10", cmds: []string{"backup"}, help: "incr, diff: at most this many incremental backups follow a full one; the next backup is a full one (restore reads every backup of a chain); 0: always full"},
	{name: "require-parent", kind: optBool, def: "false", cmds: []string{"backup"}, help: "incr, diff: fail (exit 3) instead of taking a full backup when there is no usable parent"},

	// restore.
	{name: "target-time", cmds: []string{"restore", "drill", "dump-restore"}, help: "recover to this time (RFC 3339 or PostgreSQL format, with a UTC offset)"},
	{name: "target-lsn", cmds: []string{"restore", "drill", "dump-restore"}, help: "recover to this LSN (X/X)"},
	{name: "target-xid", cmds: []string{"restore", "drill", "dump-restore"}, help: "recover to this transaction id"},
	{name: "target-name", cmds: []string{"restore", "drill", "dump-restore"}, help: "recover to this restore point (pg_create_restore_point)"},
	{name: "target-immediate", kind: optBool, def: "false", cmds: []string{"restore", "drill", "dump-restore"}, help: "stop as soon as the backup is consistent"},
	{name: "target-timeline", def: "latest", cmds: []string{"restore", "drill", "dump-restore"}, help: "timeline to follow: latest, current or a number"},
	{name: "target-inclusive", cmds: []string{"restore", "drill", "dump-restore"}, help: "stop just after (true) or just before (false) the target; default PostgreSQL's (true)"},
	{name: "target-action", cmds: []string{"restore"}, help: "at the target: promote, pause or shutdown (default PostgreSQL's: pause)"},
	{name: "jobs", kind: optInt, def: "2", defs: map[string]string{"dump": "1", "dump-restore": "1"}, cmds: []string{"restore", "dump", "dump-restore", "drill"}, help: "restore, drill: parts downloaded and extracted in parallel; dump: databases dumped at once; dump-restore: pg_restore jobs"},
	{name: "tablespace-map", kind: optList, cmds: []string{"restore"}, help: "OID=PATH: restore a tablespace elsewhere (comma-separated or repeated)"},
	{name: "owner", cmds: []string{"restore", "drill", "dump-restore"}, help: "when run as root: the user (or uid:gid) that will own PGDATA and run the server (drill, dump-restore --target-*: the scratch server, default postgres)"},
	{name: "force", kind: optBool, def: "false", cmds: []string{"restore", "drill", "dump-restore"}, help: "restore: clean a PGDATA left by an interrupted pgark restore and start again; drill, dump-restore --target-*: also clean up after a scratch server whose process still seems to run"},
	{name: "standby", kind: optBool, def: "false", cmds: []string{"restore"}, help: "write standby.signal instead of recovery.signal"},
	{name: "keep-archiving", kind: optBool, def: "false", cmds: []string{"restore"}, help: "leave archive_mode as in the backup (the restored node will archive)"},

	// drill (cmd_drill.go); it also takes the restore targets, owner, force, jobs, pg-bin.
	{name: "scratch", cmds: []string{"drill", "dump-restore"}, help: "drill, dump-restore --target-*: the scratch directory to restore into and run the server in, missing or empty; removed at the end (default: drill/<id> under the spool directory; as root without spool-dir, under the server user's ~/.cache/pgark)"},
	{name: "check-sql", cmds: []string{"drill"}, help: "drill: a file of SQL queries that must each return true (one row, one boolean); \"-- database: NAME\" lines pick the database"},
	{name: "amcheck", kind: optBool, def: "false", cmds: []string{"drill"}, help: "drill: run pg_amcheck on every database of the scratch server (when pg_amcheck of the backup's major is installed)"},
	{name: "keep", kind: optBool, def: "false", cmds: []string{"drill"}, help: "drill: keep the stopped scratch server's directory for inspection"},

	// list, verify, retain, check.
	{name: "dumps", kind: optBool, def: "false", cmds: []string{"list"}, help: "list: list the logical dump runs"},
	{name: "drills", kind: optBool, def: "false", cmds: []string{"list"}, help: "list: list the restore drills (pgark drill)"},
	{name: "backup", cmds: []string{"verify"}, help: "verify only this backup (an id from `pgark list`)"},
	{name: "full", kind: optBool, def: "false", cmds: []string{"verify"}, help: "read and check every object's content, not only its presence and size"},
	{name: "keep-last", kind: optInt, def: "0", cmds: []string{"retain"}, help: "retain: keep the newest N backups on the current timeline (0: not set)"},
	{name: "keep-within", cmds: []string{"retain"}, help: "retain: keep what recovery to any point in this period needs, e.g. 14d, 2w, 36h"},
	{name: "keep-dumps", kind: optInt, def: "0", cmds: []string{"retain"}, help: "retain: keep the newest N complete dump runs (0: not set)"},
	{name: "keep-dumps-within", cmds: []string{"retain"}, help: "retain: keep the dump runs started within this period, e.g. 14d, 2w, 36h"},
	{name: "dry-run", kind: optBool, def: "false", cmds: []string{"retain", "dump-restore", "copy"}, help: "retain: print what would be deleted and kept, delete nothing; copy: count what would be copied; dump-restore --globals: print what would run"},
	{name: "check-timeout", kind: optDuration, def: "60s", cmds: []string{"check"}, help: "check: how long the probe waits for its WAL segment to reach the repository"},
	{name: "drill-max-age", kind: optDuration, def: "192h", cmds: []string{"check"}, help: "check: warn when the last successful restore drill is older than this (default 8 days; 0: not checked); a failed last drill is critical"},
	{name: "max-backup-age", kind: optDuration, def: "0", cmds: []string{"check"}, help: "check: warn when the newest backup is older than this, e.g. 26h (0: not checked)"},
	{name: "max-archive-lag", kind: optInt, def: "16", cmds: []string{"check"}, help: "check: warn when more complete WAL segments than this wait to be archived"},
	{name: "no-probe", kind: optBool, def: "false", cmds: []string{"check"}, help: "check: skip the probe (restore point, WAL switch, wait for the segment in the repository)"},
	{name: "prometheus", kind: optBool, def: "false", cmds: []string{"check"}, help: "check: print Prometheus metrics (text format, for node_exporter's textfile collector)"},
	{name: "prometheus-file", cmds: []string{"check", "drill"}, help: "check, drill: also write the Prometheus metrics to this file, atomically (for node_exporter's textfile collector; the report still goes to stdout)"},

	// dump, dump-restore.
	{name: "db", kind: optList, cmds: []string{"dump", "dump-restore"}, help: "dump: a database to dump (repeatable; default: all but template0); dump-restore: the database of the dump to restore"},
	{name: "exclude-db", kind: optList, cmds: []string{"dump"}, help: "dump: a database not to dump (repeatable)"},
	{name: "pg-bin", cmds: []string{"dump", "dump-restore", "drill"}, help: "directory of pg_dump, pg_dumpall and pg_restore (default: PATH); drill: of the server binaries of the backup's major (default: the usual places); dump-restore --target-*: also of those server binaries when it holds them (else the usual places)"},
	{name: "lock-wait-timeout", kind: optDuration, def: "0", cmds: []string{"dump"}, help: "dump: fail instead of waiting longer than this for a table lock, e.g. 30s (0: wait)"},
	{name: "no-role-passwords", kind: optBool, def: "false", cmds: []string{"dump", "dump-restore"}, help: "dump: dump roles without passwords (pg_dumpall --no-role-passwords, for non-superusers); dump-restore --globals: leave passwords out"},
	{name: "target-db", cmds: []string{"dump-restore"}, help: "dump-restore: the database to restore into (default: the dumped database's name)"},
	{name: "create", kind: optBool, def: "false", cmds: []string{"dump-restore"}, help: "dump-restore: create the database (with its encoding, locale and properties)"},
	{name: "clean", kind: optBool, def: "false", cmds: []string{"dump-restore"}, help: "dump-restore: drop the archive's objects (with --create: the database) before restoring"},
	{name: "table", kind: optList, cmds: []string{"dump-restore"}, help: "dump-restore: restore this table (NAME or SCHEMA.NAME) and what belongs to it (repeatable)"},
	{name: "schema", kind: optList, cmds: []string{"dump-restore"}, help: "dump-restore: restore this schema (repeatable)"},
	{name: "schema-only", kind: optBool, def: "false", cmds: []string{"dump-restore"}, help: "dump-restore: definitions only, no data"},
	{name: "data-only", kind: optBool, def: "false", cmds: []string{"dump-restore"}, help: "dump-restore: data only, no definitions"},
	{name: "no-owner", kind: optBool, def: "false", cmds: []string{"dump-restore"}, help: "dump-restore: do not set owners (objects belong to the connecting role)"},
	{name: "list", kind: optBool, def: "false", cmds: []string{"dump-restore"}, help: "dump-restore: print the archive's table of contents, restore nothing"},
	{name: "to-file", cmds: []string{"dump-restore"}, help: "dump-restore: write the decrypted archive (or with --globals the SQL) to this new file"},
	{name: "globals", kind: optBool, def: "false", cmds: []string{"dump-restore"}, help: "dump-restore: replay the roles, memberships and tablespaces (missing ones only, unless --overwrite-roles)"},
	{name: "overwrite-roles", kind: optBool, def: "false", cmds: []string{"dump-restore"}, help: "dump-restore --globals: also apply the dumped definitions (attributes, passwords, settings) of existing roles"},
}

func envName(opt string) string {
	return "PGARK_" + strings.ToUpper(strings.ReplaceAll(opt, "-", "_"))
}

// settings are the resolved option values.
type settings struct {
	vals map[string]string
	src  map[string]string // where each value came from, for messages
}

func (s *settings) str(name string) string { return s.vals[name] }

func (s *settings) boolean(name string) (bool, error) {
	v, err := strconv.ParseBool(s.vals[name])
	if err != nil {
		return false, usageErrorf("%s (%s): %q is not true or false", name, s.src[name], s.vals[name])
	}
	return v, nil
}

func (s *settings) integer(name string) (int, error) {
	v, err := strconv.Atoi(s.vals[name])
	if err != nil {
		return 0, usageErrorf("%s (%s): %q is not a whole number", name, s.src[name], s.vals[name])
	}
	return v, nil
}

func (s *settings) duration(name string) (time.Duration, error) {
	v, err := time.ParseDuration(s.vals[name])
	if err != nil || v < 0 {
		return 0, usageErrorf("%s (%s): %q is not a duration such as 30s or 5m", name, s.src[name], s.vals[name])
	}
	return v, nil
}

func (s *settings) size(name string) (int64, error) {
	v, err := parseSize(s.vals[name])
	if err != nil {
		return 0, usageErrorf("%s (%s): %v", name, s.src[name], err)
	}
	return v, nil
}

// parseSize parses sizes like 8MiB, 16MB, 1048576.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suf  string
		mult int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suf) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suf)), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size such as 8MiB", s)
	}
	return v * mult, nil
}

// addOptions registers the command's options as flags on fs. Values are
// kept as given and checked by resolve, so that every source of a value gets
// the same check and message.
func addOptions(fs *pflag.FlagSet, cmd string) {
	for _, o := range options {
		if !o.forCommand(cmd) {
			continue
		}
		switch o.kind {
		case optBool:
			// --json alone, or --json=false.
			fs.Var(&strFlag{kind: "bool"}, o.name, o.help)
			fs.Lookup(o.name).NoOptDefVal = "true"
		case optList:
			fs.Var(&listFlag{}, o.name, o.help)
		default:
			fs.Var(&strFlag{kind: o.kind.String()}, o.name, o.help)
		}
	}
}

// strFlag is a flag's value as given on the command line.
type strFlag struct{ val, kind string }

func (f *strFlag) String() string     { return f.val }
func (f *strFlag) Set(v string) error { f.val = v; return nil }
func (f *strFlag) Type() string       { return f.kind }

// listFlag is a repeatable flag; its values are joined with commas.
type listFlag struct{ joined string }

func (l *listFlag) String() string { return l.joined }
func (l *listFlag) Type() string   { return "list" }
func (l *listFlag) Set(v string) error {
	if l.joined != "" {
		l.joined += ","
	}
	l.joined += v
	return nil
}

// resolve applies the precedence flag > environment > config file > default
// to the options of cmd (those registered on fs by addOptions), and checks
// each value against its option's kind. With a value of the wrong kind, it
// returns the first such error and the settings all the same (check reports
// in the output format they ask for).
func resolve(fs *pflag.FlagSet, cmd string, getenv func(string) string) (*settings, error) {
	s := &settings{vals: map[string]string{}, src: map[string]string{}}
	var firstErr error
	pick := func(name string) (string, string, bool) {
		if f := fs.Lookup(name); f != nil && f.Changed {
			return f.Value.String(), "--" + name, true
		}
		if v := getenv(envName(name)); v != "" {
			return v, envName(name), true
		}
		return "", "", false
	}
	var file map[string]string
	if path, src, ok := pick("config"); ok {
		var err error
		if file, err = readConfigFile(path); err != nil {
			return nil, usageErrorf("config file %s (from %s): %v", path, src, err)
		}
		s.vals["config"], s.src["config"] = path, src
	}
	for _, o := range options {
		if o.name == "config" || !o.forCommand(cmd) {
			continue
		}
		if v, src, ok := pick(o.name); ok {
			s.vals[o.name], s.src[o.name] = v, src
		} else if v, ok := file[o.name]; ok {
			s.vals[o.name], s.src[o.name] = v, "config file"
		} else {
			s.vals[o.name], s.src[o.name] = o.defaultFor(cmd), "default"
		}
		if err := o.check(s.vals[o.name], s.src[o.name]); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return s, firstErr
}

// readConfigFile reads `key = value` lines. Blank lines and lines starting
// with '#' are ignored; values may be quoted with double quotes. Unknown keys
// are errors, so a typo never silently drops a setting.
func readConfigFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseConfig(f)
}

func parseConfig(r io.Reader) (map[string]string, error) {
	known := map[string]bool{}
	for _, o := range options {
		known[o.name] = o.name != "config"
	}
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: expected key = value", ln)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !known[k] {
			return nil, fmt.Errorf("line %d: unknown key %q (keys: %s)", ln, k, strings.Join(optionNames(), ", "))
		}
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			uq, err := strconv.Unquote(v)
			if err != nil {
				return nil, fmt.Errorf("line %d: bad quoted value: %v", ln, err)
			}
			v = uq
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("line %d: %s is set twice", ln, k)
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func optionNames() []string {
	var n []string
	for _, o := range options {
		if o.name != "config" {
			n = append(n, o.name)
		}
	}
	sort.Strings(n)
	return n
}

// usageError is a bad command line or configuration (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, a ...any) error {
	return &usageError{fmt.Sprintf(format, a...)}
}

func isUsage(err error) bool {
	var u *usageError
	return errors.As(err, &u)
}
