#!/usr/bin/env bash
# bench/repo2.sh: archiving into two repositories (repo2), and with one of them down.
# The same SEGMENTS real WAL segments (pgbench) are drained through
# archive_command = 'pgark wal-push --config ... %p' (bench/walsim plays PostgreSQL's
# archiver over a fake data directory), in three setups, REPEAT times in turn:
#   one     one repository, local (on disk)
#   two     two repositories: the same local one + S3 (versitygw on loopback behind
#           bench/latencyproxy adding S3_DELAY to every request)
#   down    the same two, with the proxy in front of S3 stopped (connections refused):
#           every call must exit 0 and the objects for S3 wait in the spool's queue.
#           Then the proxy starts again on the same port; once the 30 s during which
#           pgark skips a failed repository have passed, CATCHUP more segments are
#           drained and the time until the queue is empty is measured (from that
#           drain's start; the queue is polled every 50 ms).
# Each run starts with new, empty repositories and spool. Checks: every call exits 0,
# every segment is marked .done, and each repository that should hold a segment holds it
# (a listing compare of the WAL objects on disk: the local repository, and the directory
# versitygw's posix backend keeps the bucket in). Times are figures, never failures.
#
# Usage: bash bench/repo2.sh        (as root: it runs PostgreSQL and pgark as `postgres`)
# Environment:
#   SEGMENTS=200      segments of each drain (16 MiB each)
#   CATCHUP=20        segments of the drain after S3 is back (setup down)
#   REPEAT=1          rounds of the three setups (order one, two, down in every round)
#   S3_DELAY=20ms     latency latencyproxy adds to every S3 request (as bench/wal.sh)
#   MIRROR_TIMEOUT=15s  pgark's mirror-timeout
#   SCALE=20          pgbench -i scale; pgbench -i runs again until the segments are there
#   PGARK_BIN=path    use this pgark binary instead of building one from this tree
#   PG_BIN=dir        PostgreSQL server binaries (default /usr/lib/postgresql/15/bin)
#   BENCH_TMPDIR=/tmp where the work dir is made
#   KEEP=1            keep the work dir
set -euo pipefail
export LC_ALL=C
prog=repo2.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'die "line $LINENO: a command failed"' ERR

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SEGMENTS=${SEGMENTS:-200}
CATCHUP=${CATCHUP:-20}
REPEAT=${REPEAT:-1}
S3_DELAY=${S3_DELAY:-20ms}
MIRROR_TIMEOUT=${MIRROR_TIMEOUT:-15s}
SCALE=${SCALE:-20}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
pgark_bin=${PGARK_BIN:-}
versitygw=${PGARK_VERSITYGW:-${PGARK_CACHE:-/opt/pgark-cache}/bin/versitygw}
unset "${!PGARK_@}"
[[ $SEGMENTS =~ ^[1-9][0-9]*$ && $SEGMENTS -le 1000 ]] || die "SEGMENTS must be a number from 1 to 1000"
[[ $CATCHUP =~ ^[1-9][0-9]*$ && $CATCHUP -le 1000 ]] || die "CATCHUP must be a number from 1 to 1000"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive number"
[[ $S3_DELAY =~ ^[0-9]+(ms|s)$ ]] || die "S3_DELAY must be a duration such as 20ms"
[[ $MIRROR_TIMEOUT =~ ^[0-9]+(ms|s)$ ]] || die "MIRROR_TIMEOUT must be a duration such as 15s"
# how long pgark skips a failed repository, in whole seconds (plus one)
backoff_s=$(awk -v t="$MIRROR_TIMEOUT" 'BEGIN {s = (t ~ /ms$/) ? t / 1000 : t + 0; b = (2 * s > 30) ? 2 * s : 30; printf "%d", b + 1}')
[[ -x $PG_BIN/initdb && -x $PG_BIN/pgbench ]] || die "no PostgreSQL server binaries in $PG_BIN (apt-get install postgresql-15)"
[[ -x $versitygw ]] || die "S3 test server $versitygw not found: run make deps (bash .ci/deps.sh)"
command -v go >/dev/null 2>&1 || [[ ! -x /usr/local/go/bin/go ]] || PATH=$PATH:/usr/local/go/bin
declare -A pkg_of=([curl]=curl)
install_missing
use_postgres
make_workdir

# ---------------------------------------------------------------- tools, S3, segments
setup_pgark
note "building bench/walsim and bench/latencyproxy"
(cd "$here" && CGO_ENABLED=0 go build -trimpath -o "$w/walsim" ./bench/walsim &&
	CGO_ENABLED=0 go build -trimpath -o "$w/latencyproxy" ./bench/latencyproxy) ||
	die "go build ./bench/walsim ./bench/latencyproxy failed"
start_s3
proxy_pid=${cleanup_pids[-1]}

total=$((SEGMENTS + CATCHUP))
keep_mb=$(((total + 32) * 16))
init_cluster
cluster_conf <<EOF
wal_keep_size = ${keep_mb}MB
max_wal_size = $((keep_mb * 2))MB
synchronous_commit = off
EOF
start_cluster
curseg() { psql "SELECT pg_walfile_name(pg_current_wal_lsn())"; }
completed() { pg ls "$w/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | awk -v c="$(curseg)" '$0 < c'; }
while (($(completed | wc -l) < total)); do
	note "WAL: $(completed | wc -l) of $total segments, pgbench -i -s $SCALE again"
	pg "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -i -s "$SCALE" -q postgres >"$w/pgbench-init.log" 2>&1 ||
		die "pgbench -i failed: $(tail -3 "$w/pgbench-init.log")"
done
mapfile -t all < <(completed | tail -n "$total")
pg mkdir "$w/segs"
for s in "${all[@]}"; do pg cp "$w/data/pg_wal/$s" "$w/segs/$s"; done
main=("${all[@]:0:SEGMENTS}")
extra=("${all[@]:SEGMENTS}")
pg "$PG_BIN/pg_ctl" -D "$w/data" -m fast stop >/dev/null
note "segments: ${#main[@]} + ${#extra[@]} (catch-up), $(($(du -sb "$w/segs" | cut -f1) / 1048576)) MiB"

# ---------------------------------------------------------------- helpers
# conf NAME TWO: $w/conf-NAME with a new local repository (and S3 prefix NAME when TWO=1),
# then pgark init
conf() {
	{
		echo "repo = $w/repo-$1"
		if (($2)); then
			echo "repo2 = s3://$bucket/$1"
			echo "repo2-s3-endpoint = $proxy_http"
			echo "repo2-s3-force-path-style = true"
			echo "repo2-s3-region = $s3_region"
			echo "mirror-timeout = $MIRROR_TIMEOUT"
		fi
		echo "age-recipients = $recipient"
		echo "age-identity-file = $w/identity.txt"
		echo "spool-dir = $w/spool-$1"
		echo "log-level = warn"
	} | pg tee "$w/conf-$1" >/dev/null
	pg env -i PATH="$PATH" HOME="$w" "${s3env[@]}" "$w/pgark" init --config "$w/conf-$1" --log-level warn >/dev/null ||
		die "pgark init ($1) failed"
}
# fakedata DIR SEG...: a data directory with global/pg_control and the segments .ready
fakedata() {
	local d=$1
	shift
	pg mkdir -m 700 "$d" "$d/global" "$d/pg_wal" "$d/pg_wal/archive_status"
	pg cp "$w/data/global/pg_control" "$d/global/pg_control"
	(cd "$w/segs" && pg ln "$@" "$d/pg_wal/")
	(cd "$d/pg_wal/archive_status" && pg touch "${@/%/.ready}")
}
r="$w/results"
pg mkdir "$r"
# drain RUN CONF SEG...: walsim drain of the segments; every call must exit 0
drain() {
	local run=$1 c=$2 d="$w/data-$1" n
	shift 2
	fakedata "$d" "$@"
	sync
	pg env -i PATH="$PATH" HOME="$w" LC_ALL=C TMPDIR="$w" "${s3env[@]}" "$w/walsim" drain -pgdata "$d" \
		-out "$r/$run" -log "$r/$run.log" -times "$r/$run.times" -- "$w/pgark wal-push --config $w/conf-$c %p" 2>"$r/$run.err" ||
		{
			cat "$r/$run.err" >&2
			tail -20 "$r/$run.log" >&2
			die "$run: a wal-push failed (KEEP=1 keeps $w)"
		}
	n=$(find "$d/pg_wal/archive_status" -name '*.done' | wc -l)
	(($# == n)) || die "$run: $n of $# segments marked .done"
	note "$run: $(cat "$r/$run")"
	rm -rf "$d"
}
get() { tr ' ' '\n' <"$r/$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }
# walnames DIR: the WAL segment names stored under DIR/wal (object names, sorted)
walnames() { { find "$1/wal" -type f 2>/dev/null || true; } | sed 's|.*/||' | { grep -oE '^[0-9A-F]{24}' || true; } | sort -u; }
# check NAME WHERE SEG...: the repository at WHERE (a local path) holds exactly the segments
check() {
	local name=$1 where=$2
	shift 2
	diff <(printf '%s\n' "$@" | sort) <(walnames "$where") >"$r/check.diff" ||
		die "$name: the repository $where does not hold exactly the drained segments: $(head -5 "$r/check.diff")"
}
queued() { find "$w/spool-$1/mirror" -name '*.queued' 2>/dev/null | wc -l; }
queued_bytes() { find "$w/spool-$1/mirror" -name '*.queued' -printf '%s\n' 2>/dev/null | awk '{s += $1} END {printf "%.0f", s / 1048576}'; }
proxy_start() {
	"$w/latencyproxy" -listen "${proxy_http#http://}" -target "http://127.0.0.1:$s3port" -delay "$S3_DELAY" \
		>"$w/latencyproxy2.out" 2>>"$w/latencyproxy.log" &
	proxy_pid=$!
	cleanup_pids+=("$proxy_pid")
	for _ in $(seq 300); do
		[[ -s $w/latencyproxy2.out ]] && break
		sleep 0.1
	done
	[[ -s $w/latencyproxy2.out ]] || die "latencyproxy did not start again on ${proxy_http#http://}"
}
proxy_stop() {
	kill "$proxy_pid"
	wait "$proxy_pid" 2>/dev/null || true
	: >"$w/latencyproxy2.out"
}

# ---------------------------------------------------------------- runs
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for i in $(seq "$REPEAT"); do
	note "round $i of $REPEAT"
	conf "one-$i" 0
	drain "one-$i" "one-$i" "${main[@]}"
	check "one-$i" "$w/repo-one-$i" "${main[@]}"

	conf "two-$i" 1
	drain "two-$i" "two-$i" "${main[@]}"
	check "two-$i (local)" "$w/repo-two-$i" "${main[@]}"
	check "two-$i (S3)" "$w/s3/$bucket/two-$i" "${main[@]}"
	q=$(queued "two-$i")
	((q == 0)) || die "two-$i: $q objects queued with both repositories up"

	conf "down-$i" 1
	proxy_stop
	drain "down-$i" "down-$i" "${main[@]}"
	check "down-$i (local)" "$w/repo-down-$i" "${main[@]}"
	queued "down-$i" >"$r/queued-$i"
	queued_bytes "down-$i" >"$r/queuedmib-$i"
	s3has=$(walnames "$w/s3/$bucket/down-$i" | wc -l)
	(($(cat "$r/queued-$i") + s3has >= SEGMENTS)) ||
		die "down-$i: $(cat "$r/queued-$i") queued and $s3has on S3, fewer than $SEGMENTS"
	note "down-$i: $(cat "$r/queued-$i") objects ($(cat "$r/queuedmib-$i") MiB) queued, $s3has WAL objects on S3"
	proxy_start
	# pgark skips a failed repository for 30 s (or twice mirror-timeout) after its last
	# failure, marked by the mtime of its queue's "down" file: wait for that to pass
	downfile=$(find "$w/spool-down-$i/mirror" -name down -path '*/2/*' | head -1)
	if [[ -n $downfile ]]; then
		while (($(date +%s) - $(stat -c %Y "$downfile") <= backoff_s)); do sleep 0.5; done
	fi
	# catch-up: the next CATCHUP segments, the queue polled until empty
	(
		t0=$EPOCHREALTIME
		while (($(queued "down-$i") > 0)); do sleep 0.05; done
		awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.2f\n", b - a}' >"$r/emptied-$i"
	) &
	poller=$!
	drain "catchup-$i" "down-$i" "${extra[@]}"
	left=$(queued "down-$i")
	if ((left > 0)); then
		kill "$poller" 2>/dev/null || true
		wait "$poller" 2>/dev/null || true
		echo "not empty ($left left)" >"$r/emptied-$i"
	else
		wait "$poller"
		check "down-$i (S3, after catch-up)" "$w/s3/$bucket/down-$i" "${main[@]}" "${extra[@]}"
	fi
	check "down-$i (local, after catch-up)" "$w/repo-down-$i" "${main[@]}" "${extra[@]}"
	rm -rf "$w/repo-one-$i" "$w/repo-two-$i" "$w/repo-down-$i" "$w/s3/$bucket/two-$i" "$w/s3/$bucket/down-$i"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
ms() { awk -v s="$1" -v n="$2" 'BEGIN {printf "%.1f", s * 1000 / n}'; }
med() { sort -g | awk '{v[NR] = $1} END {printf "%.1f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}'; }
row() { printf "%-34s %12s %12s %10s %10s %14s\n" "$@"; }
# calls RUN: "median/max" ms of the calls of every round's RUN
calls() { for i in $(seq "$REPEAT"); do awk '{print $2}' "$r/$1-$i.times"; done | sort -g | awk '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.0f/%.0f", m, v[NR]}'; }
echo
echo "== Archiving into two repositories: $SEGMENTS segments of 16 MiB, REPEAT=$REPEAT, $(date -u +%F)"
echo "pgark:  $pgark_rev; wal-push defaults (push-ahead 8 / 2 jobs, zstd-1 + age), mirror-timeout $MIRROR_TIMEOUT"
echo "S3:     versitygw (posix) on 127.0.0.1 behind bench/latencyproxy adding $S3_DELAY to every request"
echo "load:   $load_before before, $load_after after; order per round: one, two, down (+ catch-up)"
echo
row "" "wall ms/seg" "CPU ms/seg" "x one wall" "x one CPU" "call med/max"
declare -A mw mc
for s in one two down catchup; do
	n=$SEGMENTS
	[[ $s == catchup ]] && n=$CATCHUP
	mw[$s]=$(for i in $(seq "$REPEAT"); do ms "$(get "$s-$i" wall_s)" "$n"; done | med)
	mc[$s]=$(for i in $(seq "$REPEAT"); do ms "$(get "$s-$i" cpu_s)" "$n"; done | med)
done
row "1 one repository (local)" "${mw[one]}" "${mc[one]}" "1.00" "1.00" "$(calls one)"
row "2 local + S3" "${mw[two]}" "${mc[two]}" "$(ratio "${mw[two]}" "${mw[one]}")" "$(ratio "${mc[two]}" "${mc[one]}")" "$(calls two)"
row "3 local + S3 down" "${mw[down]}" "${mc[down]}" "$(ratio "${mw[down]}" "${mw[one]}")" "$(ratio "${mc[down]}" "${mc[one]}")" "$(calls down)"
row "3 catch-up drain ($CATCHUP seg)" "${mw[catchup]}" "${mc[catchup]}" "$(ratio "${mw[catchup]}" "${mw[one]}")" "$(ratio "${mc[catchup]}" "${mc[one]}")" "$(calls catchup)"
echo
echo "medians over the rounds; per round (wall s / CPU s):"
for i in $(seq "$REPEAT"); do
	printf "  round %s:" "$i"
	for s in one two down catchup; do printf " %s %s/%s;" "$s" "$(get "$s-$i" wall_s)" "$(get "$s-$i" cpu_s)"; done
	printf " queued %s objects (%s MiB); queue empty %s s after the catch-up drain started\n" \
		"$(cat "$r/queued-$i")" "$(cat "$r/queuedmib-$i")" "$(cat "$r/emptied-$i")"
done
echo "call med/max: wall ms of one archive_command call (pgark wal-push), median and max over all rounds"
echo "checks: every call exited 0, every segment .done, each repository holds the segments it should (listing compare)"
for f in "$r"/*.log; do
	[[ -s $f ]] || continue
	echo "note: $(basename "$f" .log): the commands printed $(wc -l <"$f") line(s), the first ones:"
	head -3 "$f" | sed 's/^/  /'
done
