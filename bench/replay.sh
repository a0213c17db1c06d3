#!/usr/bin/env bash
# bench/replay.sh: real PostgreSQL recoveries, timed. Where bench/wal.sh plays
# restore_command back to back (no replay between the calls, so it measures the fetch path
# alone), this one lets PostgreSQL's startup process replay every segment, as a restore
# does: it shows whether recovery waits on the archive or on replay.
#
# One cluster: pgbench -i -s SCALE, a base backup (pg_basebackup -X none), then pgbench until
# SEGMENTS segments of WAL follow the backup's start, archived by cp (fsync off, which leaves
# the WAL as it is; checkpoint_timeout 1min, so the WAL carries full-page images as a busy
# server's does). Those segments are then
# pushed (not timed) into a pgark repository (zstd-1 + age) and a pgBackRest stanza (zst-3 +
# aes-256-cbc), local and, with S3=1, on S3 (versitygw on loopback behind
# bench/latencyproxy, which adds S3_DELAY to every request). Then, for each variant, a copy of
# the base backup recovers to the end of the archive (recovery.signal, hot_standby = off):
#   cp                 restore_command = 'cp ARCHIVE/%f %p'
#   pgark              wal-fetch, prefetch FETCH_AHEAD / FETCH_JOBS (the defaults: 8 / 2)
#   pgark no-prefetch  wal-fetch with fetch-ahead = 0: one synchronous fetch per call
#   pgBackRest async   archive-get, archive-async=y, process-max=2
# and prints, per variant: the wall time from `pg_ctl start` to the promoted server's "ready
# to accept connections" (redo of every segment, end of recovery, promotion), the startup
# process's own "redo done ... elapsed" time, and the ratios to cp. cp's redo must end in
# the last archived segment, and every variant's at the same LSN with the same
# pgbench_history count and balance sum as cp; a difference, or a failed recovery, is an
# error (exit 1). Times never are.
#
# Usage: bash bench/replay.sh     (as root: it runs PostgreSQL and the tools as `postgres`)
# Environment:
#   SEGMENTS=64          WAL segments after the backup's start (all replayed)
#   S3=1                 also the S3 variants (needs versitygw: make deps)
#   S3_DELAY=20ms        latency latencyproxy adds to every S3 request
#   FETCH_AHEAD=8 FETCH_JOBS=2   pgark's prefetch settings
#   SCALE=20             pgbench -i scale
#   PGBENCH_MAX_SECONDS=900  give up generating WAL after this long
#   PGARK_BIN=path       use this pgark binary instead of building one from this tree
#   PG_BIN=dir           PostgreSQL server binaries (default /usr/lib/postgresql/15/bin)
#   BENCH_TMPDIR=/tmp    where the work dir is made
#   KEEP=1               keep the work dir
set -euo pipefail
export LC_ALL=C
prog=replay.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SEGMENTS=${SEGMENTS:-64}
S3=${S3:-1}
S3_DELAY=${S3_DELAY:-20ms}
SCALE=${SCALE:-20}
PGBENCH_MAX_SECONDS=${PGBENCH_MAX_SECONDS:-900}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
FETCH_AHEAD=${FETCH_AHEAD:-8} FETCH_JOBS=${FETCH_JOBS:-2} PUSH_AHEAD=0 PUSH_JOBS=1
pgark_bin=${PGARK_BIN:-}
versitygw=${PGARK_VERSITYGW:-${PGARK_CACHE:-/opt/pgark-cache}/bin/versitygw}
unset "${!PGARK_@}" "${!PGBACKREST_@}"
[[ $SEGMENTS =~ ^[1-9][0-9]*$ ]] || die "SEGMENTS must be a number from 1 to 1000"
((SEGMENTS <= 1000)) || die "SEGMENTS must be a number from 1 to 1000"
[[ $S3 == 0 || $S3 == 1 ]] || die "S3 must be 0 or 1"
[[ $S3_DELAY =~ ^[0-9]+(ms|s)$ ]] || die "S3_DELAY must be a duration such as 20ms"
for v in FETCH_AHEAD FETCH_JOBS SCALE PGBENCH_MAX_SECONDS; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number"
done
[[ -x $PG_BIN/initdb && -x $PG_BIN/pgbench && -x $PG_BIN/pg_basebackup ]] ||
	die "no PostgreSQL server binaries in $PG_BIN (apt-get install postgresql-15)"
((S3 == 0)) || [[ -x $versitygw ]] ||
	die "S3 test server $versitygw not found: run make deps (bash .ci/deps.sh), or S3=0 to skip the S3 runs"
command -v go >/dev/null 2>&1 || [[ ! -x /usr/local/go/bin/go ]] || PATH=$PATH:/usr/local/go/bin

declare -A pkg_of=([pgbackrest]=pgbackrest [curl]=curl)
install_missing
check_pgbackrest
use_postgres
make_workdir
ahead=1

# ---------------------------------------------------------------- pgark, S3
setup_pgark
if ((S3)); then
	(cd "$here" && CGO_ENABLED=0 go build -trimpath -o "$w/latencyproxy" ./bench/latencyproxy) ||
		die "go build ./bench/latencyproxy failed"
	start_s3
fi
variants=(local)
((S3 == 0)) || variants+=(s3)
pgbr_kind() { [[ $1 == local ]] && echo async || echo s3; } # VARIANT: its pgBackRest config
for v in "${variants[@]}"; do
	pgark_conf "$v"
	# the same repository, one synchronous fetch per call
	sed 's/^fetch-ahead = .*/fetch-ahead = 0/' "$w/pgark-$v.conf" | pg tee "$w/pgark-$v-noprefetch.conf" >/dev/null
done

# ---------------------------------------------------------------- the cluster, a base backup, its WAL
init_cluster
pg mkdir "$w/archive"
cluster_conf <<EOF
archive_command = 'test ! -f $w/archive/%f && cp %p $w/archive/%f'
fsync = off
synchronous_commit = off
checkpoint_timeout = 1min
EOF
start_cluster
for v in "${variants[@]}"; do pgbr_conf "$(pgbr_kind "$v")"; done
note "base backup (pg_basebackup -X none)"
pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$port" -U postgres -D "$w/base" -X none -c fast >/dev/null 2>"$w/basebackup.log" ||
	die "pg_basebackup failed: $(tail -3 "$w/basebackup.log")"
start_wal=$(pg sed -n 's/^START WAL LOCATION: .* (file \([0-9A-F]*\))$/\1/p' "$w/base/backup_label")
[[ $start_wal =~ ^[0-9A-F]{24}$ ]] || die "no START WAL LOCATION in the backup's backup_label"
archived_after() { pg ls "$w/archive" | grep -E '^[0-9A-F]{24}$' | awk -v s="$start_wal" '$0 >= s' | wc -l; }
ran=0
while (($(archived_after) < SEGMENTS)); do
	((ran < PGBENCH_MAX_SECONDS)) || die "only $(archived_after) segments after $start_wal in $ran s of pgbench, need $SEGMENTS: lower SEGMENTS or raise PGBENCH_MAX_SECONDS"
	pg "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -c 4 -j 2 -T 10 postgres >>"$w/pgbench-run.log" 2>&1 ||
		die "pgbench failed: $(tail -3 "$w/pgbench-run.log")"
	ran=$((ran + 10))
	note "pgbench: $ran s, $(archived_after) of $SEGMENTS segments archived"
done
pg "$PG_BIN/pg_ctl" -D "$w/data" -m fast stop >/dev/null
mapfile -t segs < <(pg ls "$w/archive" | grep -E '^[0-9A-F]{24}$' | awk -v s="$start_wal" '$0 >= s')
note "${#segs[@]} segments from $start_wal; pushing them into the pgark and pgBackRest repositories (not timed)"
for s in "${segs[@]}"; do
	for v in "${variants[@]}"; do
		env=(PATH="$PATH" HOME="$w")
		[[ $v == s3 ]] && env+=("${s3env[@]}")
		pg env -i "${env[@]}" "$w/pgark" wal-push --config "$w/pgark-$v.conf" "$w/archive/$s" ||
			die "pgark wal-push $s ($v) failed"
		pg pgbackrest --config="$w/pgbr-$(pgbr_kind "$v").conf" --stanza=demo --no-archive-async archive-push "$w/archive/$s" ||
			die "pgbackrest archive-push $s ($v) failed"
	done
done

# ---------------------------------------------------------------- recoveries
restore_cmd() { # VARIANT DIR
	case $1 in
	cp) echo "cp $w/archive/%f %p" ;;
	pgark-*) echo "$w/pgark wal-fetch --config $w/pgark-${1#pgark-}.conf %f %p" ;;
	pgbr-*) echo "pgbackrest --config=$w/pgbr-$(pgbr_kind "${1#pgbr-}").conf --stanza=demo --pg1-path=$2 archive-get %f \"%p\"" ;;
	esac
}
declare -A wall redo redo_lsn check
recover() { # NAME
	local name=$1 d="$w/r-$1" t0 t1
	pg cp -a "$w/base" "$d"
	pg tee -a "$d/postgresql.auto.conf" >/dev/null <<EOF
archive_mode = off
hot_standby = off
restore_command = '$(restore_cmd "$name" "$d")'
EOF
	pg touch "$d/recovery.signal"
	# pgBackRest's async spool and pgark's prefetch spools start empty
	rm -rf "$w"/spool-*
	pg dd if=/dev/zero of="$w/prefault" bs=1M count=$((SEGMENTS * 16 * 2 + 512)) status=none
	rm -f "$w/prefault"
	sync
	local env=(PATH="$PATH" HOME="$w" LC_ALL=C TMPDIR="$w")
	[[ $name == *-s3* ]] && env+=("${s3env[@]}")
	# pg_ctl -w would return at once: without hot standby, the postmaster reports itself
	# ready to pg_ctl when recovery starts. The end is the log line of the promoted server.
	t0=$EPOCHREALTIME
	pg env -i "${env[@]}" "$PG_BIN/pg_ctl" -D "$d" -l "$w/r-$name.log" -W start >/dev/null ||
		die "pg_ctl start ($name) failed: $(tail -3 "$w/r-$name.log")"
	local n=0
	until grep -q 'database system is ready to accept connections' "$w/r-$name.log" 2>/dev/null; do
		n=$((n + 1))
		((n % 100)) || pg "$PG_BIN/pg_ctl" -D "$d" status >/dev/null ||
			die "recovery $name failed (KEEP=1 keeps $w): $(tail -5 "$w/r-$name.log")"
		((n < 360000)) || die "recovery $name did not end within an hour"
		sleep 0.01
	done
	t1=$EPOCHREALTIME
	wall[$name]=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
	redo[$name]=$(sed -n 's/.*redo done at .* elapsed: \([0-9.]*\) s.*/\1/p' "$w/r-$name.log" | tail -1)
	redo_lsn[$name]=$(sed -n 's/.*redo done at \([0-9A-F/]*\).*/\1/p' "$w/r-$name.log" | tail -1)
	check[$name]=$(pg "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc \
		"SELECT (SELECT count(*) FROM pgbench_history) || ' ' || (SELECT sum(abalance) FROM pgbench_accounts)")
	pg "$PG_BIN/pg_ctl" -D "$d" -m fast stop >/dev/null
	# a prefetch helper exits when recovery has ended; wait for it before the next run
	for _ in $(seq 100); do pgrep -f "$w/pgark wal-prefetch" >/dev/null || break; sleep 0.1; done
	note "$name: ${wall[$name]} s (redo ${redo[$name]:-?} s, done at ${redo_lsn[$name]:-?}; history, balance: ${check[$name]})"
	rm -rf "$d"
}
order=(cp pgark-local pgark-local-noprefetch pgbr-local)
((S3 == 0)) || order+=(pgark-s3 pgark-s3-noprefetch pgbr-s3)
for name in "${order[@]}"; do recover "$name"; done
# cp's redo must end in the last archived segment (or the one before it, when the last
# record there continues into the segment that was never archived), and every other
# variant's where cp's did.
lsn_seg() { # LSN: its segment's file name on timeline 1 (16 MiB segments)
	local hi=${1%/*} lo=${1#*/}
	printf '00000001%08X%08X' "$((16#$hi))" "$((16#$lo >> 24))"
}
[[ -n ${redo_lsn[cp]} ]] || die "cp's recovery logged no 'redo done at'"
cp_seg=$(lsn_seg "${redo_lsn[cp]}")
[[ $cp_seg == "${segs[-1]}" || $cp_seg == "${segs[*]: -2:1}" ]] ||
	die "cp ended redo at ${redo_lsn[cp]}, not in the last archived segment ${segs[-1]}"
for name in "${order[@]}"; do
	[[ -n ${redo_lsn[$name]} && ${redo_lsn[$name]} == "${redo_lsn[cp]}" ]] ||
		die "$name ended redo at ${redo_lsn[$name]:-?}, cp at ${redo_lsn[cp]:-?}"
	[[ ${check[$name]} == "${check[cp]}" ]] || die "$name recovered '${check[$name]}', cp '${check[cp]}' (pgbench_history rows, abalance sum)"
done

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
label() {
	case $1 in
	cp) echo "cp, local" ;;
	pgark-local) echo "pgark (prefetch $FETCH_AHEAD/$FETCH_JOBS), local" ;;
	pgark-local-noprefetch) echo "pgark fetch-ahead=0, local" ;;
	pgbr-local) echo "pgBackRest async, local" ;;
	pgark-s3) echo "pgark (prefetch $FETCH_AHEAD/$FETCH_JOBS), S3 +$S3_DELAY" ;;
	pgark-s3-noprefetch) echo "pgark fetch-ahead=0, S3 +$S3_DELAY" ;;
	pgbr-s3) echo "pgBackRest async, S3 +$S3_DELAY" ;;
	esac
}
echo
echo "== Recovery with replay: ${#segs[@]} segments of pgbench WAL (scale $SCALE) after a base backup, PostgreSQL $("$PG_BIN/postgres" -V | awk '{print $3}')"
echo "pgark $pgark_rev; $pgbr_version; $(nproc) CPUs; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
row() { printf '| %-36s | %10s | %8s | %6s |\n' "$@"; }
row "" "recovery s" "redo s" "x cp"
row "$(printf -- '-%.0s' {1..36})" "----------" "--------" "------"
for name in "${order[@]}"; do
	row "$(label "$name")" "${wall[$name]}" "${redo[$name]:-?}" "$(ratio "${wall[$name]}" "${wall[cp]}")"
done
echo
echo "recovery s: from pg_ctl start of the restored base backup to the promoted server's 'ready to accept"
echo "            connections' (redo of every segment, end of recovery, promotion); redo s: the startup"
echo "            process's own 'redo done ... elapsed'. Every variant ended redo at ${redo_lsn[cp]} with"
echo "            the same data (pgbench_history rows, abalance sum)."
