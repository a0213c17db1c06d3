#!/usr/bin/env bash
# bench/drill.sh: does `pgark drill` report the recovery time a restore by hand takes? On one
# pgbench database (pgbench -i -s $SCALE, a base backup, then pgbench -t $TXNS so that
# recovery replays WAL) it times, in the same run and on the same repository (local, zstd
# level 3 + age encryption):
#   drill   pgark drill --json (restore into a scratch directory, start a private server,
#           replay to the end of the archive, promote, checks); its reported
#           recovery_seconds (restore + replay until promoted) and its wall time
#   by hand pgark restore latest DIR, pg_ctl start -W (listen_addresses '', a unix socket),
#           then poll SELECT pg_is_in_recovery() every 50 ms until false: the wall time of
#           the three, which is what drill's recovery_seconds stands for
# and prints the medians of REPEAT rounds (the two alternate which goes first) and the
# ratio drill/by hand. The by-hand copy is stopped and removed after each round.
#
# Usage: bash bench/drill.sh      (as root: it runs PostgreSQL as `postgres`)
# Environment:
#   SCALE=10          pgbench -i scale (10 is about 160 MB)
#   TXNS=20000        pgbench transactions after the backup (-c 2, so twice this), replayed
#   REPEAT=3          rounds (medians)
#   PGARK_BIN=path    use this pgark binary instead of building one from this tree
#   PG_BIN=dir        PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   BENCH_TMPDIR=/tmp where the work dir is made
#   KEEP=1            keep the work dir
set -euo pipefail
export LC_ALL=C

prog=drill.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCALE=${SCALE:-10}
TXNS=${TXNS:-20000}
REPEAT=${REPEAT:-3}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
pgark_bin=${PGARK_BIN:-}
unset "${!PGARK_@}"
[[ $SCALE =~ ^[1-9][0-9]*$ ]] || die "SCALE must be a positive number"
[[ $TXNS =~ ^[1-9][0-9]*$ ]] || die "TXNS must be a positive number"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive number"
for b in initdb pg_ctl pgbench psql postgres; do
	[[ -x $PG_BIN/$b ]] || die "no $PG_BIN/$b (apt-get install postgresql-15)"
done
declare -A pkg_of=([jq]=jq [bc]=bc)
install_missing

[[ $(id -u) == 0 ]] || die "run as root (pgark restore --owner postgres, runuser)"
use_postgres
make_workdir
setup_pgark

init_cluster
printf '%s\n' "max_wal_size = 4GB" "archive_timeout = 0" | cluster_conf
start_cluster
psql "ALTER SYSTEM SET archive_command = '$w/pgark wal-push --config $conf %p'" >/dev/null
psql "SELECT pg_reload_conf()" >/dev/null
note "backup"
"$w/pgark" backup --config "$conf" --dsn "host=127.0.0.1 port=$port user=postgres dbname=postgres" --log-level warn >/dev/null ||
	die "pgark backup failed"
note "pgbench -t $TXNS -c 2 (WAL to replay)"
pg "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -c 2 -t "$TXNS" postgres >"$w/pgbench-run.log" 2>&1 ||
	die "pgbench failed: $(tail -3 "$w/pgbench-run.log")"
last=$(psql "SELECT pg_walfile_name(pg_switch_wal())")
archived() { [[ $(psql "SELECT coalesce(last_archived_wal, '') >= '$last' FROM pg_stat_archiver") == t ]]; }
for _ in $(seq 600); do
	archived && break
	sleep 0.1
done
archived || die "WAL up to $last not archived"
wal_mb=$(du -sm "$w/repo-pgark/wal" | cut -f1)
note "archive: up to $last ($wal_mb MB stored)"

run_drill() {
	local start end out
	start=$(date +%s.%N)
	out=$("$w/pgark" drill --config "$conf" --scratch "$w/drill" --spool-dir "$w/spool" --pg-bin "$PG_BIN" --owner postgres --json --log-level warn) ||
		die "pgark drill failed: $out"
	end=$(date +%s.%N)
	[[ $(jq -r .status <<<"$out") == passed ]] || die "drill did not pass: $out"
	echo "$(jq -r .recovery_seconds <<<"$out") $(echo "$end - $start" | bc) $(jq -r .wal_segments <<<"$out") $(jq -r .restore_seconds <<<"$out")"
}
run_by_hand() {
	local start mid end d="$w/manual"
	start=$(date +%s.%N)
	"$w/pgark" restore --config "$conf" --owner postgres --log-level warn latest "$d" >/dev/null || die "pgark restore failed"
	mid=$(date +%s.%N)
	pg mkdir -p "$w/msock"
	pg "$PG_BIN/pg_ctl" -D "$d" -W -l "$w/manual.log" -o "-c listen_addresses='' -c unix_socket_directories='$w/msock' -c port=5499" start >/dev/null ||
		die "pg_ctl start failed: $(tail -5 "$w/manual.log")"
	until [[ $(pg "$PG_BIN/psql" -X -h "$w/msock" -p 5499 -U postgres -d postgres -Atc "SELECT pg_is_in_recovery()" 2>/dev/null) == f ]]; do
		pg "$PG_BIN/pg_ctl" -D "$d" status >/dev/null 2>&1 || die "the restored server stopped: $(tail -5 "$w/manual.log")"
		sleep 0.05
	done
	end=$(date +%s.%N)
	pg "$PG_BIN/pg_ctl" -D "$d" -m immediate stop >/dev/null
	rm -rf -- "$d" "$w/msock"
	echo "$(echo "$end - $start" | bc) $(echo "$mid - $start" | bc)"
}

declare -a drill_rec=() drill_wall=() drill_restore=() hand=() hand_restore=()
segs=0
for ((i = 1; i <= REPEAT; i++)); do
	if ((i % 2)); then
		read -r rec wall segs drest < <(run_drill)
		read -r h hrest < <(run_by_hand)
	else
		read -r h hrest < <(run_by_hand)
		read -r rec wall segs drest < <(run_drill)
	fi
	note "round $i: drill recovery_seconds $rec (restore $drest; wall $wall, $segs segments), by hand $h (restore $hrest)"
	drill_rec+=("$rec") drill_wall+=("$wall") drill_restore+=("$drest") hand+=("$h") hand_restore+=("$hrest")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
mr=$(median "${drill_rec[@]}")
mw=$(median "${drill_wall[@]}")
mh=$(median "${hand[@]}")
echo
echo "pgark drill vs restore + start + wait for promotion by hand"
echo "pgark $pgark_rev; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); scale $SCALE, $TXNS x 2 transactions after the backup ($segs WAL segments replayed, $wal_mb MB stored); $REPEAT rounds, medians"
printf '%-46s %8s\n' "drill: restore_seconds" "$(median "${drill_restore[@]}")"
printf '%-46s %8s\n' "drill: recovery_seconds (restore + replay)" "$mr"
printf '%-46s %8s\n' "drill: wall time (with checks and clean-up)" "$mw"
printf '%-46s %8s\n' "by hand: pgark restore" "$(median "${hand_restore[@]}")"
printf '%-46s %8s\n' "by hand: restore + pg_ctl start + promoted" "$mh"
printf '%-46s %8s\n' "ratio recovery_seconds / by hand" "$(echo "scale=3; $mr / $mh" | bc)"
