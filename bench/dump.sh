#!/usr/bin/env bash
# bench/dump.sh: logical dump benchmark. On one pgbench database (pgbench -i -s $SCALE)
# it compares, one after the other on the same running cluster:
#   pg_dump -Fc                    pg_dump's own compression (zlib, default level) to a file
#   pg_dump -Fc -Z0 | zstd -3      no pg_dump compression, zstd level 3 (one thread) to a file
#   pgark dump --db postgres       pg_dump -Fc -Z0 streamed through zstd level 3 and age
#                                  encryption into a local pgark repository (plus the
#                                  globals, a few hundred bytes)
# and prints, for each: wall time, CPU (user+sys of the client processes: pg_dump, zstd,
# pgark; /usr/bin/time over the whole pipeline), output size, and the ratios to
# pg_dump -Fc. The server's CPU is the same for all three (the same pg_dump queries).
# Each figure is the median of REPEAT rounds. Benchmarks never fail on a time; a failed
# command is an error (exit 1).
#
# Usage: bash bench/dump.sh     (as root: it runs PostgreSQL and the tools as `postgres`)
# Environment:
#   SCALE=50          pgbench -i scale (50 is about 750 MB of tables and indexes)
#   PGARK_BIN=path    use this pgark binary instead of building one from this tree
#   PG_BIN=dir        PostgreSQL binaries with pg_dump (default /usr/lib/postgresql/15/bin)
#   BENCH_TMPDIR=/tmp where the work dir is made
#   REPEAT=1          rounds (medians)
#   KEEP=1            keep the work dir
set -euo pipefail
export LC_ALL=C

prog=dump.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCALE=${SCALE:-50}
REPEAT=${REPEAT:-1}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
pgark_bin=${PGARK_BIN:-}
unset "${!PGARK_@}"
[[ $SCALE =~ ^[1-9][0-9]*$ ]] || die "SCALE must be a positive number"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive number"
for b in initdb pg_ctl pgbench psql pg_dump pg_dumpall pg_restore; do
	[[ -x $PG_BIN/$b ]] || die "no $PG_BIN/$b (apt-get install postgresql-15)"
done
declare -A pkg_of=([zstd]=zstd [/usr/bin/time]=time)
install_missing

use_postgres
make_workdir
res="$w/results"
pg mkdir "$res"
chmod 777 "$res"
setup_pgark
init_cluster
cluster_conf </dev/null
start_cluster
psql "VACUUM ANALYZE" >/dev/null
db_bytes=$(psql "SELECT pg_database_size('postgres')")
conn="host=127.0.0.1 port=$port user=postgres dbname=postgres"

# run NAME ROUND CMD: runs the pipeline CMD (bash -c, as postgres) under /usr/bin/time.
run() {
	local name=$1 round=$2 cmd=$3
	sync
	if ! pg /usr/bin/time -f '%e %U %S' -o "$res/$name.$round.time" bash -c "set -o pipefail; $cmd" >"$res/$name.$round.out" 2>&1; then
		cat "$res/$name.$round.out" >&2
		die "$name failed"
	fi
}

names=(pg_dump_Fc pg_dump_Z0_zstd pgark_dump)
for ((i = 1; i <= REPEAT; i++)); do
	note "round $i of $REPEAT"
	rm -f "$w/out.dump" "$w/out.dump.zst"
	run pg_dump_Fc "$i" "'$PG_BIN/pg_dump' -Fc --dbname='$conn' > '$w/out.dump'"
	stat -c %s "$w/out.dump" >"$res/pg_dump_Fc.$i.size"
	run pg_dump_Z0_zstd "$i" "'$PG_BIN/pg_dump' -Fc -Z0 --dbname='$conn' | zstd -3 -q -c > '$w/out.dump.zst'"
	stat -c %s "$w/out.dump.zst" >"$res/pg_dump_Z0_zstd.$i.size"
	# The Z0 archive itself, for the record (not timed).
	[[ $i == 1 ]] && raw=$(zstd -dc "$w/out.dump.zst" | wc -c)
	run pgark_dump "$i" "'$w/pgark' dump --config '$conf' --pg-bin '$PG_BIN' --dsn '$conn' --db postgres --json > '$res/pgark.$i.json'"
	grep -o '"stored_bytes": [0-9]*' "$res/pgark.$i.json" | tail -1 | grep -o '[0-9]*$' >"$res/pgark_dump.$i.size"
	pg "$w/pgark" retain --config "$conf" --keep-dumps 1 >/dev/null
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
declare -A wall cpu size
for n in "${names[@]}"; do
	wall[$n]=$(cat "$res/$n".*.time | awk '{print $1}' | median)
	cpu[$n]=$(cat "$res/$n".*.time | awk '{print $2 + $3}' | median)
	size[$n]=$(cat "$res/$n".*.size | median)
done
b=pg_dump_Fc
echo
echo "pgark $pgark_rev; $("$PG_BIN/pg_dump" --version); zstd $(zstd -V | grep -o 'v[0-9.]*'); $(nproc) cores"
echo "pgbench -i -s $SCALE: database $((db_bytes / 1048576)) MiB, pg_dump -Fc -Z0 archive $((raw / 1048576)) MiB; median of $REPEAT round(s)"
printf '%-28s %9s %9s %12s   %s\n' "" "wall s" "CPU s" "size MiB" "ratios to pg_dump -Fc (wall, CPU, size)"
for n in "${names[@]}"; do
	printf '%-28s %9.1f %9.1f %12.1f   %.2f  %.2f  %.2f\n' "$n" "${wall[$n]}" "${cpu[$n]}" "$(echo "${size[$n]} / 1048576" | bc -l)" \
		"$(echo "${wall[$n]} / ${wall[$b]}" | bc -l)" "$(echo "${cpu[$n]} / ${cpu[$b]}" | bc -l)" "$(echo "${size[$n]} / ${size[$b]}" | bc -l)"
done
