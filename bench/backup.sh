#!/usr/bin/env bash
# bench/backup.sh: full base backup and restore benchmark. On one pgbench database
# (pgbench -i -s $SCALE) it compares, one after the other on the same running cluster:
#   backup   pgark backup (zstd level 3 + age encryption, local repository, over the
#              replication protocol)
#            pg_basebackup -Ft -X none --compress=client-zstd:level=3 -c fast (to a directory)
#            pgBackRest backup --type=full, compress-type=zst level 3, start-fast=y,
#              archive-check=n (the archive_command is pgark's, not pgBackRest's),
#              process-max=1 and process-max=2, and process-max=1 with aes-256-cbc
#   restore  pgark restore --jobs 2, pgBackRest restore (process-max=1 and 2), and as a
#            reference tar -x --zstd of the pg_basebackup tar; each into a fresh empty
#            directory, the server is not started (restore time only)
# and prints, per run: wall time, CPU (user+sys of the client process and its children,
# /usr/bin/time), the CPU the PostgreSQL server spent meanwhile (walsender, checkpoint,
# archiver with its pgark wal-push children: pg_basebackup and pgark have the server read
# the files, pgBackRest reads them itself), peak RSS (/usr/bin/time %M: of the largest
# process of the tree, not a sum), a `sync` right after (write-back left by the tool;
# tar does not fsync), stored or restored size, and pgark's ratios to pg_basebackup and to
# pgBackRest (process-max=1). Each figure is the median of REPEAT rounds; in a round every
# backup runs once in turn (page cache warmed before each), then every restore (in an
# order that rotates from round to round).
#
# Every tool sees the same server: archive_mode = on, archive_command = pgark wal-push.
# The pgark and pg_basebackup restores are checked with pg_verifybackup -n (their
# backup_manifest); a failed command or check is an error (exit 1); times never are.
#
# Usage: bash bench/backup.sh     (as root: it runs PostgreSQL and the tools as `postgres`)
# Environment:
#   SCALE=100         pgbench -i scale (100 is about 1.5 GB)
#   PGARK_BIN=path    use this pgark binary instead of building one from this tree
#   PG_BIN=dir        PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   BENCH_TMPDIR=/tmp where the work dir is made (everything reads and writes there)
#   REPEAT=4          rounds (medians; 4 lets each restore come first once); REPEAT=1: one run
#   CIPHER=1          also the pgBackRest aes-256-cbc backup (CIPHER=0 skips it)
#   KEEP=1            keep the work dir
set -euo pipefail
export LC_ALL=C

prog=backup.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCALE=${SCALE:-100}
CIPHER=${CIPHER:-1}
REPEAT=${REPEAT:-4}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
pgark_bin=${PGARK_BIN:-}
# Settings from the caller's environment must not reach pgark or pgBackRest.
unset "${!PGARK_@}" "${!PGBACKREST_@}"
[[ $SCALE =~ ^[1-9][0-9]*$ ]] || die "SCALE must be a positive number"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive number"
for b in initdb pg_ctl pgbench psql pg_basebackup pg_verifybackup; do
	[[ -x $PG_BIN/$b ]] || die "no $PG_BIN/$b (apt-get install postgresql-15)"
done

declare -A pkg_of=([pgbackrest]=pgbackrest [age]=age [zstd]=zstd [/usr/bin/time]=time)
install_missing
check_pgbackrest

[[ $(id -u) == 0 ]] || die "run as root (pgark restore --owner postgres, runuser)"
use_postgres
make_workdir
res="$w/results"
pg mkdir "$res"

# ---------------------------------------------------------------- pgark
setup_pgark

# ---------------------------------------------------------------- the cluster
init_cluster
grep -Eq '^host[[:space:]]+replication[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$w/data/pg_hba.conf" ||
	echo "host replication all 127.0.0.1/32 trust" | pg tee -a "$w/data/pg_hba.conf" >/dev/null
# pgbench -i's WAL is not archived (archive_command = /bin/true); pgark's comes after.
cluster_conf <<EOF
max_wal_size = 4GB
max_wal_senders = 10
EOF
start_cluster
psql "ALTER SYSTEM SET archive_command = '$w/pgark wal-push --config $conf %p'" >/dev/null
psql "SELECT pg_reload_conf()" >/dev/null
psql "CHECKPOINT" >/dev/null
psql "SELECT pg_switch_wal()" >/dev/null
db_bytes=$(psql "SELECT pg_database_size('postgres')")
pgdata_bytes=$(du -sb "$w/data" | cut -f1)
postmaster=$(head -1 "$w/data/postmaster.pid")

# pgBackRest: one repository (and stanza) per backup variant, so each holds one backup.
pgbr_conf() { # KIND [cipher]
	{
		echo "[global]"
		echo "repo1-path=$w/repo-pgbr-$1"
		[[ ${2-} == cipher ]] && echo "repo1-cipher-type=aes-256-cbc" &&
			echo "repo1-cipher-pass=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
		echo "compress-type=zst"
		echo "compress-level=3"
		echo "start-fast=y"
		echo "archive-check=n"
		echo "lock-path=$w/pgbr-lock"
	} | pgbr_write "$1"
}
pgbr_conf pm1
pgbr_conf pm2
((CIPHER)) && pgbr_conf aes cipher

# On a VM whose memory the host backs lazily, the first use of a never-touched page is
# much slower; have the kernel touch about what the run keeps in page cache at once
# (the database, the backups, one restored tree), then free it for reuse.
prefault_mib=$((pgdata_bytes * 3 / 1048576 + 512))
note "pre-faulting ${prefault_mib} MiB of page cache"
dd if=/dev/zero of="$w/prefault" bs=1M count="$prefault_mib" status=none
rm -f "$w/prefault"
sync

# ---------------------------------------------------------------- measuring helpers
# server_cpu: CPU ticks of the postmaster and its children, including the children they
# have reaped (walsenders that ended, wal-push under the archiver).
server_cpu() {
	local p s t=0
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
# run NAME AS CMD...: runs CMD (as postgres if AS=pg, else as root) under /usr/bin/time,
# then sync (timed apart); records wall, user, sys, maxrss, server CPU and sync time.
run() {
	local name=$1 as=$2 s0 s1 t0 t1
	shift 2
	local -a pre=()
	[[ $as == pg ]] && pre=(runuser -u postgres --)
	s0=$(server_cpu)
	if ! "${pre[@]}" /usr/bin/time -f '%e %U %S %M' -o "$res/$name.time" "$@" >"$res/$name.out" 2>&1; then
		cat "$res/$name.out" >&2
		die "$name failed: $*"
	fi
	t0=$EPOCHREALTIME
	sync
	t1=$EPOCHREALTIME
	s1=$(server_cpu)
	awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f\n", b - a}' >"$res/$name.sync"
	awk -v d=$((s1 - s0)) -v hz="$hz" 'BEGIN {printf "%.2f\n", d / hz}' >"$res/$name.server"
	note "$name: $(cat "$res/$name.time") (wall s, user s, sys s, maxrss KiB)"
}
chmod 777 "$res" # /usr/bin/time writes there as postgres or root
warm_pgdata() { find "$w/data" -type f -exec cat {} + >/dev/null 2>&1 || true; }
dir_bytes() { du -sb "$1" | cut -f1; }

# ---------------------------------------------------------------- backups
# REPEAT rounds; in each, every backup runs once, in turn (so the machine's other load
# falls on all alike), then every restore. Each run is NAME.ROUND in $res.
declare -A stored restored
dsn="host=127.0.0.1 port=$port user=postgres"
pgbr_kinds=(pm1 pm2)
((CIPHER)) && pgbr_kinds+=(aes)
declare -A pm=([pm1]=1 [pm2]=2 [aes]=1)
for ((i = 1; i <= REPEAT; i++)); do
	note "round $i/$REPEAT: backups"
	warm_pgdata
	before=$(dir_bytes "$w/repo-pgark")
	run "b-pgark.$i" pg "$w/pgark" backup --config "$conf" --dsn "$dsn" --log-level warn
	stored[b-pgark]=$(($(dir_bytes "$w/repo-pgark") - before)) # includes the WAL archived meanwhile

	warm_pgdata
	pg mkdir "$w/bb.$i"
	run "b-bb.$i" pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$port" -U postgres -D "$w/bb.$i" -Ft -X none \
		--compress=client-zstd:level=3 -c fast
	stored[b-bb]=$(dir_bytes "$w/bb.$i")
	[[ -f $w/bb.$i/base.tar.zst ]] || die "pg_basebackup wrote no base.tar.zst: $(ls "$w/bb.$i")"

	for k in "${pgbr_kinds[@]}"; do
		warm_pgdata
		pg mkdir -p "$w/repo-pgbr-$k/backup"
		before=$(dir_bytes "$w/repo-pgbr-$k/backup")
		run "b-pgbr-$k.$i" pg pgbackrest --config="$w/pgbr-$k.conf" --stanza=demo --process-max="${pm[$k]}" backup --type=full
		stored[b-pgbr-$k]=$(($(dir_bytes "$w/repo-pgbr-$k/backup") - before))
	done
done

# The archiver must be idle before the server is stopped (not timed).
pg "$PG_BIN/pg_ctl" -D "$w/data" -m fast stop >/dev/null
server_cpu() { echo 0; } # no server from here on

# ---------------------------------------------------------------- restores
# pgark and pgBackRest restore their newest backup, tar the last pg_basebackup.
warm() { find "$@" -type f -exec cat {} + >/dev/null 2>&1 || true; }
fresh() {
	rm -rf "$w/restore"
	pg mkdir -m 700 "$w/restore"
	sync
}
verify() { # NAME MANIFEST
	pg "$PG_BIN/pg_verifybackup" -n -m "$2" "$w/restore" >"$res/$1.verify" 2>&1 ||
		die "$1: pg_verifybackup -n failed: $(tail -5 "$res/$1.verify")"
	note "$1: $(tail -1 "$res/$1.verify")"
}
bb="$w/bb.$REPEAT"
restore_pgark() {
	warm "$w/repo-pgark"
	fresh
	run "r-pgark.$i" root "$w/pgark" restore --config "$conf" --owner postgres --jobs 2 --log-level warn latest "$w/restore"
	restored[r-pgark]=$(dir_bytes "$w/restore")
	[[ -f $w/restore/backup_manifest ]] || die "pgark restore left no backup_manifest in PGDATA"
	verify "r-pgark.$i" "$w/restore/backup_manifest"
}
restore_tar() {
	warm "$bb"
	fresh
	run "r-tar.$i" pg tar -x --zstd -f "$bb/base.tar.zst" -C "$w/restore"
	restored[r-tar]=$(dir_bytes "$w/restore")
	verify "r-tar.$i" "$bb/backup_manifest"
}
restore_pgbr() { # PROCESS-MAX
	warm "$w/repo-pgbr-pm1"
	fresh
	run "r-pgbr-pm$1.$i" pg pgbackrest --config="$w/pgbr-pm1.conf" --stanza=demo --process-max="$1" \
		--pg1-path="$w/restore" restore
	restored[r-pgbr-pm$1]=$(dir_bytes "$w/restore")
	[[ -f $w/restore/global/pg_control ]] || die "pgBackRest restore left no global/pg_control"
}
# The restores' order rotates from round to round: the first restores of a run were seen
# to be slower (sys time: page cache allocation), which must not fall on one tool.
restore_order=("restore_pgark" "restore_tar" "restore_pgbr 1" "restore_pgbr 2")
for ((i = 1; i <= REPEAT; i++)); do
	note "round $i/$REPEAT: restores"
	for ((k = 0; k < ${#restore_order[@]}; k++)); do
		${restore_order[(i - 1 + k) % ${#restore_order[@]}]}
	done
done
rm -rf "$w/restore"

# ---------------------------------------------------------------- report
mib() { awk -v b="$1" 'BEGIN {printf "%.0f", b / 1048576}'; }
# f NAME FIELD: the median over the rounds of wall s, CPU s (user+sys), peak RSS MiB,
# server CPU s, client+server CPU s or sync s
f() {
	local n=$1
	case $2 in
	wall) cat "$res/$n".*.time | awk '{print $1}' ;;
	cpu) cat "$res/$n".*.time | awk '{print $2 + $3}' ;;
	rss) cat "$res/$n".*.time | awk '{print $4 / 1024}' ;;
	server) cat "$res/$n".*.server ;;
	total) for t in "$res/$n".*.time; do awk -v s="$(cat "${t%.time}.server")" '{print $2 + $3 + s}' "$t"; done ;;
	sync) cat "$res/$n".*.sync ;;
	esac | sort -g | awk -v p="$([[ $2 == rss ]] && echo 0 || echo 2)" '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.*f", p, m}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
row() { printf "%-36s %8s %8s %8s %8s %8s %7s %8s\n" "$@"; }

declare -A label=(
	[b-pgark]="pgark backup (zstd-3+age)" [b-bb]="pg_basebackup -Ft client-zstd:3"
	[b-pgbr-pm1]="pgBackRest zst-3 process-max=1" [b-pgbr-pm2]="pgBackRest zst-3 process-max=2"
	[b-pgbr-aes]="pgBackRest zst-3+aes process-max=1"
	[r-pgark]="pgark restore --jobs 2" [r-tar]="tar -x --zstd (pg_basebackup tar)"
	[r-pgbr-pm1]="pgBackRest restore process-max=1" [r-pgbr-pm2]="pgBackRest restore process-max=2"
)
backups=(b-pgark b-bb b-pgbr-pm1 b-pgbr-pm2)
((CIPHER)) && backups+=(b-pgbr-aes)
restores=(r-pgark r-tar r-pgbr-pm1 r-pgbr-pm2)

cpu_model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo
echo "== Base backup / restore benchmark: pgbench -i -s $SCALE, median of $REPEAT run(s) each"
echo "machine:    $(nproc) CPUs, ${cpu_model:-unknown CPU}, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM"
echo "disk:       $w on $(df -PT "$w" | awk 'NR == 2 {print $2, "(" $1 ")"}')"
echo "pgark:      $pgark_rev"
echo "versions:   pgBackRest ${pgbr_version#pgBackRest }, $(zstd --version | grep -o 'v[0-9.]*' | head -1 | sed 's/^/zstd /'), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
echo "database:   $(mib "$db_bytes") MiB (pg_database_size), PGDATA $(mib "$pgdata_bytes") MiB; page cache warm before each run"
echo "verified:   pg_verifybackup -n passed on the pgark and the pg_basebackup (tar -x) restores"
echo
row backup "wall s" "CPU s" "srv CPU" "total" "RSS MiB" "sync s" "MiB"
for n in "${backups[@]}"; do
	row "${label[$n]}" "$(f "$n" wall)" "$(f "$n" cpu)" "$(f "$n" server)" "$(f "$n" total)" "$(f "$n" rss)" "$(f "$n" sync)" "$(mib "${stored[$n]}")"
done
for b in b-bb b-pgbr-pm1; do
	row "pgark / ${label[$b]%% *}$([[ $b == b-pgbr-pm1 ]] && echo "(pm1)")" \
		"$(ratio "$(f b-pgark wall)" "$(f "$b" wall)")" "$(ratio "$(f b-pgark cpu)" "$(f "$b" cpu)")" \
		"$(ratio "$(f b-pgark server)" "$(f "$b" server)")" "$(ratio "$(f b-pgark total)" "$(f "$b" total)")" \
		"$(ratio "$(f b-pgark rss)" "$(f "$b" rss)")" "" "$(ratio "${stored[b-pgark]}" "${stored[$b]}")"
done
echo
row restore "wall s" "CPU s" "" "" "RSS MiB" "sync s" "MiB"
for n in "${restores[@]}"; do
	row "${label[$n]}" "$(f "$n" wall)" "$(f "$n" cpu)" "" "" "$(f "$n" rss)" "$(f "$n" sync)" "$(mib "${restored[$n]}")"
done
for b in r-tar r-pgbr-pm1 r-pgbr-pm2; do
	row "pgark / $([[ $b == r-tar ]] && echo "tar -x" || echo "pgBackRest(${b#r-pgbr-})")" \
		"$(ratio "$(f r-pgark wall)" "$(f "$b" wall)")" "$(ratio "$(f r-pgark cpu)" "$(f "$b" cpu)")" "" "" \
		"$(ratio "$(f r-pgark rss)" "$(f "$b" rss)")" "" ""
done
cat <<EOF

wall s: elapsed time of the client command. CPU s: its user+sys CPU, children included.
srv CPU: CPU seconds the PostgreSQL server spent during the backup (walsender sending the
  files for pgark and pg_basebackup, checkpoint, archiver incl. pgark wal-push); total:
  CPU s + srv CPU (pgBackRest reads PGDATA itself, the others have the server read it).
RSS: peak resident set (/usr/bin/time %M: the largest single process, not a sum over
  pgBackRest's process-max workers). sync s: a sync right after the command (write-back
  the command left; pg_basebackup, pgark and pgBackRest fsync their output, tar does not).
MiB: backup stored (pgark: repository growth, incl. the WAL archived meanwhile; pgBackRest:
  its backup/ directory; pg_basebackup: the output dir) or restored tree (du -sb; pgBackRest
  and tar trees differ slightly: pgark and pgBackRest write recovery settings, pg_wal is empty).
Ratios: pgark's figure divided by the other's (below 1 favours pgark). Restores are not
  started (no WAL replay); pgBackRest backups use archive-check=n, since the server
  archives with pgark wal-push.
EOF
