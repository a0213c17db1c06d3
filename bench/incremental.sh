#!/usr/bin/env bash
# bench/incremental.sh: block-level incremental backup benchmark (PostgreSQL 17+). On one
# pgbench database (pgbench -i -s $SCALE, then VACUUM FREEZE and CHECKPOINT, so that hint
# bits do not make every page "changed") it takes, on PostgreSQL 17 with summarize_wal = on:
#   full     pgark backup --backup-type full (zstd level 3 + age, local repository)
#            pg_basebackup -Ft -X none -c fast, with --compress=client-zstd:level=3 and
#              without compression (to a directory, each with its backup_manifest)
#   change   UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 6000 = 0
#              (about 1% of the pages of the largest table), CHECKPOINT
#   incr     pgark backup --backup-type incr (its --json must say "type":"incr")
#            pg_basebackup --incremental=<the full's backup_manifest>, with client zstd
#              level 3 and without compression
#   restore  pgark restore --jobs 2 of the full alone, and of the incremental (its full +
#              the incremental, rebuilt in place), each into a fresh empty directory, the
#              server not started; each checked with pg_verifybackup -n (17)
#            as a reference, pg_combinebackup of the uncompressed pg_basebackup full and
#              incremental (their tars extracted first, not timed), checked the same way
# and, on PostgreSQL 15 (PG15=1), with pgBackRest (file-level incremental):
#            pgbackrest backup --type=full, the same change, pgbackrest backup --type=incr
#            pgark backup --backup-type full, the same change, then --backup-type incr,
#              which on 15 is file level (checked: "method": "file" in --json)
# It prints, per command: wall time, CPU (user+sys of the command and its children,
# /usr/bin/time), peak RSS (/usr/bin/time %M: the largest process, not a sum), stored
# size (pgark: the backup's stored_bytes from --json; pg_basebackup: its output directory;
# pgBackRest: the growth of its backup/ directory; restores: the restored tree) and the CPU
# the PostgreSQL server spent meanwhile; then the ratios the goals use, "met" or "NOT met"
# for each. Times never fail the run; a failed command or check is an error (exit 1).
#
# Every server archives with pgark wal-push into the local pgark repository of its run.
# Before each timed backup the page cache holds the data directory, the WAL of the change
# is archived and the WAL summarizer has passed the change's checkpoint.
#
# REPEAT > 1 repeats the change (a fresh 1% of the rows: aid % 6000 = round - 1), the
# incremental backups and the restores, and prints medians. Each round's incremental is
# taken on the previous round's backup (pgark: the newest; pg_basebackup: the previous
# round's manifest; pgBackRest: its own incr), so round N's "full + incr" restore reads a
# chain of N incremental backups, and pg_combinebackup combines the same chain.
#
# Usage: bash bench/incremental.sh     (as root: it runs PostgreSQL and the tools as `postgres`)
# Environment:
#   SCALE=100         pgbench -i scale (100 is about 1.5 GB), on both majors
#   PG15=1            also the PostgreSQL 15 part (pgBackRest and pgark, file level); 0 skips it
#   REPEAT=1          rounds of change + incremental backups + restores (medians)
#   PGBR_PROCESS_MAX=2  pgBackRest process-max (2: its fastest on two cores)
#   PGARK_BIN=path    use this pgark binary instead of building one from this tree
#   PG17_BIN=dir      PostgreSQL 17 server (initdb, pg_ctl, postgres; default /opt/pgark-cache/pg/17/bin)
#   PG17_CLIENT_BIN=dir  its client tools: pg_basebackup, pg_combinebackup, pg_verifybackup,
#                     pgbench, psql (default /opt/pgark-cache/pgclient/17/bin)
#   PG15_BIN=dir      PostgreSQL 15 (default /usr/lib/postgresql/15/bin)
#   BENCH_TMPDIR=/tmp where the work dir is made (everything reads and writes there)
#   KEEP=1            keep the work dir
set -euo pipefail
export LC_ALL=C

prog=incremental.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCALE=${SCALE:-100}
PG15=${PG15:-1}
REPEAT=${REPEAT:-1}
PGBR_PROCESS_MAX=${PGBR_PROCESS_MAX:-2}
PG17_BIN=${PG17_BIN:-/opt/pgark-cache/pg/17/bin}
PG17_CLIENT_BIN=${PG17_CLIENT_BIN:-/opt/pgark-cache/pgclient/17/bin}
PG15_BIN=${PG15_BIN:-/usr/lib/postgresql/15/bin}
pgark_bin=${PGARK_BIN:-}
# Settings from the caller's environment must not reach pgark or pgBackRest.
unset "${!PGARK_@}" "${!PGBACKREST_@}"
[[ $SCALE =~ ^[1-9][0-9]*$ ]] || die "SCALE must be a positive number"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive number"
[[ $PG15 == 0 || $PG15 == 1 ]] || die "PG15 must be 0 or 1"
[[ $PGBR_PROCESS_MAX =~ ^[1-9][0-9]*$ ]] || die "PGBR_PROCESS_MAX must be a positive number"
for b in initdb pg_ctl postgres; do
	[[ -x $PG17_BIN/$b ]] || die "no $PG17_BIN/$b (make deps installs PostgreSQL 17; or set PG17_BIN)"
done
for b in pg_basebackup pg_combinebackup pg_verifybackup pgbench psql; do
	[[ -x $PG17_CLIENT_BIN/$b ]] || die "no $PG17_CLIENT_BIN/$b (make deps installs the PostgreSQL 17 client tools; or set PG17_CLIENT_BIN)"
done
if ((PG15)); then
	for b in initdb pg_ctl postgres pgbench psql; do
		[[ -x $PG15_BIN/$b ]] || die "no $PG15_BIN/$b (apt-get install postgresql-15; or PG15=0)"
	done
fi

declare -A pkg_of=([age]=age [zstd]=zstd [jq]=jq [/usr/bin/time]=time)
((PG15)) && pkg_of[pgbackrest]=pgbackrest
install_missing
pgbr_version="-"
((PG15)) && check_pgbackrest

[[ $(id -u) == 0 ]] || die "run as root (pgark restore --owner postgres, runuser)"
use_postgres
make_workdir
res="$w/results"
pg mkdir "$res"
chmod 777 "$res" # /usr/bin/time writes there as postgres or root

# lib.sh runs $PG_BIN/{initdb,pg_ctl,pgbench,psql}: for 17 one directory with the server
# binaries and the client tools (symbolic links; each binary finds its own libraries and
# share/ from its real path).
pg17="$w/pg17-bin"
mkdir "$pg17"
for b in initdb pg_ctl postgres; do ln -s "$PG17_BIN/$b" "$pg17/$b"; done
for b in pg_basebackup pg_combinebackup pg_verifybackup pgbench psql pg_isready; do
	[[ -x $PG17_CLIENT_BIN/$b ]] && ln -s "$PG17_CLIENT_BIN/$b" "$pg17/$b"
done
PG_BIN=$pg17

# ---------------------------------------------------------------- pgark
setup_pgark
# Its own spool (the copies of the backup manifests, push-ahead records), in the work dir.
echo "spool-dir = $w/spool-pgark" | pg tee -a "$conf" >/dev/null

# ---------------------------------------------------------------- helpers
# server_cpu: CPU ticks of the postmaster and its children, including the children they
# have reaped (walsenders that ended, wal-push under the archiver).
server_cpu() {
	local p s t=0
	[[ -n $postmaster ]] || {
		echo 0
		return
	}
	for p in "$postmaster" $(pgrep -P "$postmaster"); do
		s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
		s=${s##*) }
		read -r -a f <<<"$s"
		# after "comm)": f[0]=state ... utime=f[11] stime=f[12] cutime=f[13] cstime=f[14]
		t=$((t + f[11] + f[12] + f[13] + f[14]))
	done
	echo "$t"
}
hz=$(getconf CLK_TCK)
postmaster="" # the running server's, set by new_cluster
# run NAME AS CMD...: runs CMD (as postgres if AS=pg, else as root) under /usr/bin/time,
# stdout to $res/NAME.out, stderr to $res/NAME.err; records wall, user, sys, maxrss and the
# server's CPU meanwhile; then a sync (not timed) so that no write-back falls on the next.
run() {
	local name=$1 as=$2 s0 s1
	shift 2
	local -a pre=()
	[[ $as == pg ]] && pre=(runuser -u postgres --)
	s0=$(server_cpu)
	if ! "${pre[@]}" /usr/bin/time -f '%e %U %S %M' -o "$res/$name.time" "$@" >"$res/$name.out" 2>"$res/$name.err"; then
		cat "$res/$name.out" "$res/$name.err" >&2
		die "$name failed: $*"
	fi
	s1=$(server_cpu)
	sync
	awk -v d=$((s1 - s0)) -v hz="$hz" 'BEGIN {printf "%.2f\n", d / hz}' >"$res/$name.server"
	note "$name: $(cat "$res/$name.time") (wall s, user s, sys s, maxrss KiB)"
}
warm() { find "$@" -type f -exec cat {} + >/dev/null 2>&1 || true; }
dir_bytes() { du -sb "$1" | cut -f1; }
stored() { echo "$2" >"$res/$1.stored"; } # NAME BYTES
# json NAME FILTER: a field of the --json a run printed
json() { jq -r "$2" "$res/$1.out" || die "$1: its output is not JSON: $(head -c 300 "$res/$1.out")"; }

# wait_archived: switches WAL and waits until the archiver has pushed the segment that
# the switch completed (pg_stat_archiver; a failure is reported by the timeout).
wait_archived() {
	local seg t
	seg=$(psql "SELECT pg_walfile_name(pg_switch_wal())")
	for ((t = 0; t < 3000; t++)); do
		[[ $(psql "SELECT coalesce(last_archived_wal, '') >= '$seg' FROM pg_stat_archiver") == t ]] && return 0
		sleep 0.1
	done
	die "segment $seg not archived after 300 s: $(psql "SELECT last_failed_wal, last_failed_time FROM pg_stat_archiver") (see $w/server.log; KEEP=1 keeps it)"
}
# wait_summarized: waits until the WAL summarizer has summarized WAL up to the redo point
# of the last checkpoint (17+), so that no incremental backup waits for it.
wait_summarized() {
	local redo t
	redo=$(psql "SELECT redo_lsn FROM pg_control_checkpoint()")
	for ((t = 0; t < 3000; t++)); do
		[[ $(psql "SELECT summarized_lsn >= '$redo' FROM pg_get_wal_summarizer_state()") == t ]] && return 0
		sleep 0.1
	done
	die "the WAL summarizer did not reach $redo in 300 s: $(psql "SELECT * FROM pg_get_wal_summarizer_state()")"
}
# new_cluster CONF...: initdb, the settings (stdin), start, pgbench -i, VACUUM FREEZE and
# CHECKPOINT while archive_command is still /bin/true (that WAL is not archived), then
# archive_command = pgark wal-push into the repository of CONF.
new_cluster() {
	init_cluster </dev/null
	grep -Eq '^host[[:space:]]+replication[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$w/data/pg_hba.conf" ||
		echo "host replication all 127.0.0.1/32 trust" | pg tee -a "$w/data/pg_hba.conf" >/dev/null
	cluster_conf
	start_cluster
	pg "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 60 || die "the server does not accept connections"
	psql "VACUUM FREEZE" >/dev/null
	psql "CHECKPOINT" >/dev/null
	psql "ALTER SYSTEM SET archive_command = '$w/pgark wal-push --config $1 %p'" >/dev/null
	psql "SELECT pg_reload_conf()" >/dev/null
	wait_archived
	postmaster=$(head -1 "$w/data/postmaster.pid")
	db_bytes=$(psql "SELECT pg_database_size('postgres')")
	pgdata_bytes=$(dir_bytes "$w/data")
	accounts_pages=$(psql "SELECT pg_relation_size('pgbench_accounts') / current_setting('block_size')::int")
}
# change ROUND: the change the incremental backups carry, then a checkpoint; its WAL
# archived before the backups start.
change() {
	local n
	n=$(psql "WITH u AS (UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 6000 = $(($1 - 1)) RETURNING 1) SELECT count(*) FROM u")
	((n > 0)) || die "the change updated no row"
	note "round $1: updated $n rows of pgbench_accounts ($accounts_pages pages)"
	psql "CHECKPOINT" >/dev/null
	wait_archived
}
# On a VM whose memory the host backs lazily, the first use of a never-touched page is
# much slower; have the kernel touch about what the run keeps in page cache at once.
prefault() {
	local mib=$((pgdata_bytes * 3 / 1048576 + 512))
	note "pre-faulting $mib MiB of page cache"
	dd if=/dev/zero of="$w/prefault" bs=1M count="$mib" status=none
	rm -f "$w/prefault"
	sync
}
fresh() { # DIR: a fresh empty directory for a restore
	rm -rf "$1"
	pg mkdir -m 700 "$1"
	sync
}
verify() { # NAME DIR: pg_verifybackup -n (17) with the backup_manifest in DIR
	pg "$pg17/pg_verifybackup" -n "$2" >"$res/$1.verify" 2>&1 ||
		die "$1: pg_verifybackup -n failed: $(tail -5 "$res/$1.verify")"
	note "$1: $(tail -1 "$res/$1.verify")"
}

# ================================================================ PostgreSQL 17
new_cluster "$conf" <<EOF
max_wal_size = 4GB
max_wal_senders = 10
summarize_wal = on
EOF
dsn="host=127.0.0.1 port=$port user=postgres"
pg17_version=$("$pg17/postgres" --version | awk '{print $3}')
pg17_client_version=$("$pg17/pg_basebackup" --version | awk '{print $3}')
db17_bytes=$db_bytes pgdata17_bytes=$pgdata_bytes pages17=$accounts_pages
prefault

# pgark_backup NAME TYPE: a pgark backup of the cluster (--json), sets bid
pgark_backup() {
	warm "$w/data"
	run "$1" pg "$w/pgark" backup --config "${3:-$conf}" --dsn "$dsn" --log-level warn --json --backup-type "$2"
	bid=$(json "$1" .id)
	stored "$1" "$(json "$1" .stored_bytes)"
}
# basebackup NAME DIR [ARGS]: pg_basebackup -Ft -X none -c fast into DIR
basebackup() {
	local name=$1 dir=$2
	shift 2
	warm "$w/data"
	pg mkdir "$dir"
	run "$name" pg "$pg17/pg_basebackup" -h 127.0.0.1 -p "$port" -U postgres -D "$dir" -Ft -X none -c fast "$@"
	[[ -f $dir/backup_manifest ]] || die "$name: no backup_manifest in $dir"
	stored "$name" "$(dir_bytes "$dir")"
}

note "PostgreSQL $pg17_version: full backups"
pgark_backup f-pgark.0 full
[[ $(json f-pgark.0 .type) == full ]] || die "pgark's full backup is of type $(json f-pgark.0 .type)"
pgark_ids=("$bid")
basebackup f-bbz.0 "$w/bbz.0" --compress=client-zstd:level=3
[[ -f $w/bbz.0/base.tar.zst ]] || die "pg_basebackup wrote no base.tar.zst: $(ls "$w/bbz.0")"
basebackup f-bb.0 "$w/bb.0"
[[ -f $w/bb.0/base.tar ]] || die "pg_basebackup wrote no base.tar: $(ls "$w/bb.0")"

for ((i = 1; i <= REPEAT; i++)); do
	change "$i"
	wait_summarized
	note "round $i/$REPEAT: incremental backups"
	pgark_backup "i-pgark.$i" incr
	[[ $(json "i-pgark.$i" .type) == incr ]] ||
		die "pgark backup --backup-type incr took a $(json "i-pgark.$i" .type) backup: $(json "i-pgark.$i" '.fallback // "no reason given"')"
	[[ $(json "i-pgark.$i" .parent) == "${pgark_ids[-1]}" ]] ||
		die "pgark's incremental backup $bid is on $(json "i-pgark.$i" .parent), not on ${pgark_ids[-1]}"
	pgark_ids+=("$bid")
	basebackup "i-bbz.$i" "$w/bbz.$i" --compress=client-zstd:level=3 --incremental="$w/bbz.$((i - 1))/backup_manifest"
	basebackup "i-bb.$i" "$w/bb.$i" --incremental="$w/bb.$((i - 1))/backup_manifest"
done
pg "$PG_BIN/pg_ctl" -D "$w/data" -m fast stop >/dev/null
postmaster="" # no server from here on

# pg_combinebackup's inputs: the uncompressed tars extracted, each with its manifest (not timed)
for ((i = 0; i <= REPEAT; i++)); do
	pg mkdir -m 700 "$w/bbx.$i"
	pg tar -x -f "$w/bb.$i/base.tar" -C "$w/bbx.$i"
	pg cp "$w/bb.$i/backup_manifest" "$w/bbx.$i/"
done

for ((i = 1; i <= REPEAT; i++)); do
	note "round $i/$REPEAT: restores"
	warm "$w/repo-pgark"
	fresh "$w/restore"
	run "r-full.$i" root "$w/pgark" restore --config "$conf" --owner postgres --jobs 2 --log-level warn "${pgark_ids[0]}" "$w/restore"
	stored "r-full.$i" "$(dir_bytes "$w/restore")"
	verify "r-full.$i" "$w/restore"

	warm "$w/repo-pgark"
	fresh "$w/restore"
	run "r-incr.$i" root "$w/pgark" restore --config "$conf" --owner postgres --jobs 2 --log-level warn "${pgark_ids[i]}" "$w/restore"
	stored "r-incr.$i" "$(dir_bytes "$w/restore")"
	grep -q 'INCREMENTAL' "$w/restore/backup_label" && die "r-incr.$i: backup_label still says INCREMENTAL"
	verify "r-incr.$i" "$w/restore"

	chain=()
	for ((k = 0; k <= i; k++)); do chain+=("$w/bbx.$k"); done
	warm "${chain[@]}"
	rm -rf "$w/restore"
	sync
	run "r-combine.$i" pg "$pg17/pg_combinebackup" -o "$w/restore" "${chain[@]}"
	stored "r-combine.$i" "$(dir_bytes "$w/restore")"
	verify "r-combine.$i" "$w/restore"
done
rm -rf "$w/restore" "$w"/bbx.* "$w/data"

# ================================================================ PostgreSQL 15
if ((PG15)); then
	PG_BIN=$PG15_BIN
	# Its own pgark repository (a repository holds one cluster's WAL) and spool.
	conf15="$w/pgark-15.conf"
	sed -e "s|^repo = .*|repo = $w/repo-pgark-15|" -e "s|^spool-dir = .*|spool-dir = $w/spool-pgark-15|" "$conf" |
		pg tee "$conf15" >/dev/null
	pg "$w/pgark" init --config "$conf15" --log-level warn >/dev/null || die "pgark init (15) failed"
	new_cluster "$conf15" <<EOF
max_wal_size = 4GB
max_wal_senders = 10
EOF
	dsn="host=127.0.0.1 port=$port user=postgres"
	pg15_version=$("$PG_BIN/postgres" --version | awk '{print $3}')
	db15_bytes=$db_bytes pages15=$accounts_pages
	# pgBackRest: zst level 3, start-fast=y, archive-check=n (the archive_command is pgark's)
	{
		echo "[global]"
		echo "repo1-path=$w/repo-pgbr"
		echo "compress-type=zst"
		echo "compress-level=3"
		echo "start-fast=y"
		echo "archive-check=n"
		echo "process-max=$PGBR_PROCESS_MAX"
		echo "lock-path=$w/pgbr-lock"
	} | pgbr_write pm
	pg mkdir -p "$w/repo-pgbr/backup"
	# pgbr_backup NAME TYPE
	pgbr_backup() {
		local before
		warm "$w/data"
		before=$(dir_bytes "$w/repo-pgbr/backup")
		run "$1" pg pgbackrest --config="$w/pgbr-pm.conf" --stanza=demo backup --type="$2"
		stored "$1" $(($(dir_bytes "$w/repo-pgbr/backup") - before))
	}

	note "PostgreSQL $pg15_version: full backups"
	pgbr_backup f-pgbr.0 full
	pgark_backup f-pgark15.0 full "$conf15"
	for ((i = 1; i <= REPEAT; i++)); do
		change "$i"
		note "round $i/$REPEAT: incremental backups (PostgreSQL $pg15_version)"
		pgbr_backup "i-pgbr.$i" incr
		pgark_backup "i-pgark15.$i" incr "$conf15"
		t=$(json "i-pgark15.$i" .type)
		[[ $t == incr && $(json "i-pgark15.$i" .method) == file ]] ||
			die "pgark backup --backup-type incr on PostgreSQL 15 took a ${t:-full} backup: $(json "i-pgark15.$i" '.fallback // "no reason given"')"
	done
	pg "$PG_BIN/pg_ctl" -D "$w/data" -m fast stop >/dev/null
	postmaster=""
	rm -rf "$w/data"
	PG_BIN=$pg17 # for the cleanup at exit (nothing left to stop)
fi

# ================================================================ report
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
# f NAME FIELD: the median over the rounds of wall s, CPU s (user+sys), peak RSS MiB,
# server CPU s or stored bytes
f() {
	local n=$1
	case $2 in
	wall) cat "$res/$n".*.time | awk '{print $1}' ;;
	cpu) cat "$res/$n".*.time | awk '{print $2 + $3}' ;;
	rss) cat "$res/$n".*.time | awk '{print $4 / 1024}' ;;
	server) cat "$res/$n".*.server ;;
	stored) cat "$res/$n".*.stored ;;
	esac | sort -g | awk -v p="$(case $2 in rss | stored) echo 0 ;; *) echo 2 ;; esac)" \
		'{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.*f", p, m}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.3f", a / b; else print "-"}'; }
row() { printf "%-48s %7s %7s %8s %9s %8s\n" "$@"; }
line() { row "$1" "$(f "$2" wall)" "$(f "$2" cpu)" "$(f "$2" rss)" "$(mib "$(f "$2" stored)")" "$3"; }
# goal NAME VALUE OP LIMIT: prints the goal and whether VALUE meets it (OP: le or lt)
goal() {
	local ok
	ok=$(awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN {if (v == "-") print "NOT met"; else if ((op == "le" && v + 0 <= l + 0) || (op == "lt" && v + 0 < l + 0)) print "met"; else print "NOT met"}')
	printf "%-58s %8s  goal %s %-5s %s\n" "$1" "$2" "$([[ $3 == le ]] && echo "<=" || echo "<")" "$4" "$ok"
}

cpu_model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo
echo "== Incremental backup benchmark: pgbench -i -s $SCALE, change: 1% of pgbench_accounts' rows, median of $REPEAT round(s)"
echo "machine:    $(nproc) CPUs, ${cpu_model:-unknown CPU}, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM"
echo "disk:       $w on $(df -PT "$w" | awk 'NR == 2 {print $2, "(" $1 ")"}')"
echo "pgark:      $pgark_rev"
echo "versions:   PostgreSQL $pg17_version (client tools $pg17_client_version)$( ((PG15)) && echo ", PostgreSQL $pg15_version, pgBackRest ${pgbr_version#pgBackRest } (process-max=$PGBR_PROCESS_MAX)"), $(zstd --version | grep -o 'v[0-9.]*' | head -1 | sed 's/^/zstd /')"
echo "database:   17: $(mib "$db17_bytes") MiB (pg_database_size), PGDATA $(mib "$pgdata17_bytes") MiB, pgbench_accounts $pages17 pages$( ((PG15)) && echo "; 15: $(mib "$db15_bytes") MiB, $pages15 pages")"
echo "verified:   pg_verifybackup -n (17) passed on every pgark restore and pg_combinebackup output"
echo
row "PostgreSQL $pg17_version" "wall s" "CPU s" "RSS MiB" "MiB" "srv CPU"
line "pgark backup full (zstd-3+age)" f-pgark "$(f f-pgark server)"
line "pg_basebackup -Ft full client-zstd:3" f-bbz "$(f f-bbz server)"
line "pg_basebackup -Ft full" f-bb "$(f f-bb server)"
line "pgark backup --backup-type incr" i-pgark "$(f i-pgark server)"
line "pg_basebackup --incremental client-zstd:3" i-bbz "$(f i-bbz server)"
line "pg_basebackup --incremental" i-bb "$(f i-bb server)"
line "pgark restore --jobs 2: full alone" r-full ""
line "pgark restore --jobs 2: full + incr" r-incr ""
line "pg_combinebackup full + incr (plain dirs)" r-combine ""
if ((PG15)); then
	echo
	row "PostgreSQL $pg15_version" "wall s" "CPU s" "RSS MiB" "MiB" "srv CPU"
	line "pgBackRest backup --type=full (zst-3)" f-pgbr "$(f f-pgbr server)"
	line "pgBackRest backup --type=incr (file-level)" i-pgbr "$(f i-pgbr server)"
	line "pgark backup full (zstd-3+age)" f-pgark15 "$(f f-pgark15 server)"
	line "pgark backup --backup-type incr (file-level)" i-pgark15 "$(f i-pgark15 server)"
fi
echo
if ((PG15)); then
	goal "pgark incr (17) stored / pgBackRest incr (15) stored" "$(ratio "$(f i-pgark stored)" "$(f i-pgbr stored)")" le 0.1
	goal "pgark incr (17) time / pgBackRest incr (15) time" "$(ratio "$(f i-pgark wall)" "$(f i-pgbr wall)")" le 0.3
	goal "pgark file-level incr (15) time / pgBackRest incr time" "$(ratio "$(f i-pgark15 wall)" "$(f i-pgbr wall)")" le 1.0
	goal "pgark file-level incr (15) stored / pgBackRest incr stored" "$(ratio "$(f i-pgark15 stored)" "$(f i-pgbr stored)")" le 1.0
fi
goal "pgark incr time / pg_basebackup --incremental zstd time" "$(ratio "$(f i-pgark wall)" "$(f i-bbz wall)")" le 1.0
goal "pgark restore full+incr time / restore full time" "$(ratio "$(f r-incr wall)" "$(f r-full wall)")" le 1.2
goal "pgark incr backup peak RSS MiB" "$(f i-pgark rss)" lt 64
goal "pgark restore full+incr peak RSS MiB" "$(f r-incr rss)" lt 64
cat <<EOF

wall s: elapsed time of the command. CPU s: its user+sys CPU, children included. RSS: peak
  resident set (/usr/bin/time %M: the largest single process). srv CPU: CPU seconds the
  PostgreSQL server spent meanwhile (walsender, checkpoint, archiver with pgark wal-push;
  pgBackRest reads the files itself).
MiB: pgark: the backup's stored_bytes (its objects, without WAL); pg_basebackup: its output
  directory; pgBackRest: the growth of its backup/ directory; restores: the restored tree.
Restores are not started (no WAL replay). pg_combinebackup reads plain directories (the
  uncompressed -Ft backups extracted beforehand, not timed): a reference, not a peer.
The PostgreSQL 15 rows ran on another cluster of the same scale with the same change;
  pgBackRest's incremental and pgark's on 15 store every file that changed, pgark's on 17
  only the changed blocks.
EOF
