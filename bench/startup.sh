#!/usr/bin/env bash
# bench/startup.sh OLD NEW: the start-up cost of two pgark binaries, as PostgreSQL pays it on
# every archive_command and restore_command call. perf stat -r 200 (RUNS=...) of, in
# interleaved pairs (PAIRS=2):
#   version          pgark version
#   spool hit        wal-fetch answered from the prefetch spool: recovery.signal in PGDATA,
#                    the helper lock held (no helper starts), a 16 MiB segment put into the
#                    spool before each run (perf --pre)
#   no repository    wal-fetch --fetch-ahead 0 against a missing repository (its error path)
# Needs perf (Debian's linux-perf). Prints elapsed and task-clock per binary and case.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bench/startup.sh OLD-BINARY NEW-BINARY" >&2; exit 2; }
command -v perf >/dev/null || { echo "bench/startup.sh: perf not found (apt-get install linux-perf)" >&2; exit 2; }
RUNS=${RUNS:-200}
PAIRS=${PAIRS:-2}
work=$(mktemp -d /tmp/pgark-startup-XXXXXX)
trap 'rm -rf "$work"' EXIT
seg=000000010000000000000042
head -c 16777216 /dev/zero >"$work/seg"

measure() { # BINARY LABEL
	local bin=$1 label=$2 w="$work/$2" dir lockpid
	mkdir -p "$w/pgdata" "$w/spool" "$w/repo"
	touch "$w/pgdata/recovery.signal"
	export PGARK_REPO="$w/repo" PGARK_SPOOL_DIR="$w/spool" PGARK_PGDATA="$w/pgdata" PGARK_LOG_LEVEL=error
	"$bin" wal-fetch "$seg" "$w/out" >/dev/null 2>&1 || true # creates the spool
	dir=$(dirname "$(find "$w/spool" -name want | head -1)")
	flock "$dir/helper.lock" sleep 3600 </dev/null >/dev/null 2>&1 &
	lockpid=$!
	stat_of() { perf stat -r "$RUNS" "$@" 2>&1 >/dev/null | awk '/task-clock/ {cpu=$1} /elapsed/ {printf "%.2f ms wall (+- %.2f), %.2f ms CPU\n", $1*1000, $3*1000, cpu}'; }
	printf '%-4s version        %s\n' "$label" "$(stat_of "$bin" version)"
	printf '%-4s spool hit      %s\n' "$label" "$(stat_of --pre "cp $work/seg $dir/$seg" "$bin" wal-fetch "$seg" "$w/out")"
	[ -f "$w/out" ] || { echo "bench/startup.sh: the spool hit wrote nothing" >&2; exit 1; }
	printf '%-4s no repository %s\n' "$label" "$(stat_of "$bin" wal-fetch --repo /nonexistent/repo --fetch-ahead 0 "$seg" "$w/out2")"
	pkill -P "$lockpid" sleep || true
	kill "$lockpid" 2>/dev/null || true
	rm -rf "$w"
}
for i in $(seq 1 "$PAIRS"); do
	measure "$1" old
	measure "$2" new
done
