#!/usr/bin/env bash
# shellcheck disable=SC2317 # push_*/fetch_* are called by name ("push_$tool")
# bench/wal.sh: WAL archive/restore benchmark, one process per WAL segment, the way
# PostgreSQL runs archive_command and restore_command. On the same real pgbench WAL
# segments it compares:
#   pgark          wal-push / wal-fetch (zstd level 3 + age encryption, local repository)
#   pgBackRest     archive-push / archive-get (local repo, compress-type=zst level 3,
#                  archive-async=n), once without cipher and once with aes-256-cbc
#   references     cp; zstd -3 (zstd -d to fetch); zstd -3 | age -r (age -d | zstd -d);
#                  dd conv=fsync (a copy that is durable, as pgark's and pgBackRest's are)
# and prints, per tool: push latency (median, p90), sequential push throughput, CPU per
# segment (user+sys of every process), fetch latency (median, p90) and CPU, peak RSS of one
# push and one fetch (/usr/bin/time %M; for a pipeline the sum of its stages), bytes stored,
# whether it fsyncs, and pgark's ratios to pgBackRest(cipher) and to cp. All tools work on
# one copy of the segments in one work dir, read once beforehand; each first pushes and
# fetches an extra segment (warm-up, also the RSS run); then, segment after segment, each
# tool pushes it in turn (rotating order, `sync` after each, not timed), and the same for
# fetch, so that the machine's other load falls on all tools alike. Every fetched segment
# is compared with the original (cmp): a difference, or a command that fails, is an error
# (exit 1); times never are.
#
# Usage: bash bench/wal.sh        (as root: it runs PostgreSQL and the tools as `postgres`)
# Environment:
#   SEGMENTS=24       timed segments per tool (one more is taken for the warm-up)
#   SCALE=20          pgbench -i scale
#   PGBENCH_SECONDS=20  first pgbench run; more 10 s runs follow (up to PGBENCH_MAX_SECONDS=180
#                     in all) until the run alone has filled SEGMENTS+1 segments
#   PGARK_BIN=path    use this pgark binary instead of building one from this tree
#   PG_BIN=dir        PostgreSQL server binaries (default /usr/lib/postgresql/15/bin)
#   BENCH_TMPDIR=/tmp where the work dir is made (every tool reads and writes there)
#   KEEP=1            keep the work dir
set -euo pipefail
export LC_ALL=C

die() {
	echo "wal.sh: ERROR: $*" >&2
	exit 1
}
note() { echo "wal.sh: $*" >&2; }

# ====================================================================== measure phase
# Runs as the postgres user (as PostgreSQL's archiver would), in a clean environment,
# from a copy of this script in the work dir: bash wal.sh --measure WORKDIR
measure() {
	local w=$1
	local pgark="" recipient="" identity="" warm="" segsize=0
	local -a segs=()
	# shellcheck source=/dev/null
	source "$w/bench.env" # sets the variables above
	cd "$w"
	local res="$w/results"
	mkdir -p "$res" "$w/store" "$w/fetch"

	# Each tool: push_TOOL SRC NAME and fetch_TOOL NAME DEST. "${T[@]}" is empty when
	# timing and /usr/bin/time (appending peak RSS to a file) for the one RSS run; a
	# pipeline has it in front of each stage. Each function's status is its last
	# pipeline's (pipefail), so failures are seen.
	T=()
	push_pgark() { "${T[@]}" "$pgark" wal-push --config "$w/pgark.conf" "$1"; }
	fetch_pgark() { "${T[@]}" "$pgark" wal-fetch --config "$w/pgark.conf" "$1" "$2"; }
	push_pgbr() { "${T[@]}" pgbackrest --config="$w/pgbr-plain.conf" --stanza=demo archive-push "$1"; }
	fetch_pgbr() { "${T[@]}" pgbackrest --config="$w/pgbr-plain.conf" --stanza=demo archive-get "$1" "$2"; }
	push_pgbrc() { "${T[@]}" pgbackrest --config="$w/pgbr-cipher.conf" --stanza=demo archive-push "$1"; }
	fetch_pgbrc() { "${T[@]}" pgbackrest --config="$w/pgbr-cipher.conf" --stanza=demo archive-get "$1" "$2"; }
	push_cp() { "${T[@]}" cp "$1" "$w/store/cp/$2"; }
	fetch_cp() { "${T[@]}" cp "$w/store/cp/$1" "$2"; }
	push_dd() { "${T[@]}" dd if="$1" of="$w/store/dd/$2" bs=1M conv=fsync status=none; }
	fetch_dd() { "${T[@]}" dd if="$w/store/dd/$1" of="$2" bs=1M conv=fsync status=none; }
	push_zstd() { "${T[@]}" zstd -3 -q "$1" -o "$w/store/zstd/$2.zst"; }
	fetch_zstd() { "${T[@]}" zstd -d -q "$w/store/zstd/$1.zst" -o "$2"; }
	push_zage() { "${T[@]}" zstd -3 -q -c "$1" | "${T[@]}" age -r "$recipient" -o "$w/store/zage/$2.zst.age"; }
	fetch_zage() { "${T[@]}" age -d -i "$identity" "$w/store/zage/$1.zst.age" | "${T[@]}" zstd -d -q -o "$2"; }

	# where each tool keeps what it stored (for "stored MB")
	declare -A storedir=(
		[pgark]="$w/repo-pgark" [pgbr]="$w/repo-pgbr-plain" [pgbrc]="$w/repo-pgbr-cipher"
		[cp]="$w/store/cp" [dd]="$w/store/dd" [zstd]="$w/store/zstd" [zage]="$w/store/zage"
	)
	local tools=(pgark pgbrc pgbr zage zstd dd cp)

	# Read every segment once, so that all tools start from the page cache alike.
	cat "$w/segs/"* >/dev/null
	# On a VM whose memory the host backs lazily, the first use of a never-touched page
	# is several times slower (here: 3 GiB of page cache took 7 s the first time, 1 s
	# after); that would fall on whichever tool fills the most new page cache (cp, dd).
	# So have the kernel touch about what this run will fill, then free it for reuse.
	local prefault_mib=$(((${#segs[@]} + 1) * segsize * 4 / 1048576 + 512))
	note "pre-faulting ${prefault_mib} MiB of page cache"
	dd if=/dev/zero of="$w/prefault" bs=1M count="$prefault_mib" status=none
	rm -f "$w/prefault"
	sync

	# No forks in or around the timed loops (a fork would count in the children's CPU
	# time): helpers set REPLY.
	# elapsed A B: microseconds from EPOCHREALTIME A to B
	elapsed() {
		local a=${1/[.,]/} b=${2/[.,]/}
		REPLY=$((10#$b - 10#$a))
	}
	# cpu: user+sys CPU of this shell's finished children so far, in ms (bash's times)
	cpu() {
		local u s
		times >"$res/.times"
		{
			read -r _
			read -r u s
		} <"$res/.times"
		ms "$u"
		u=$REPLY
		ms "$s"
		REPLY=$((u + REPLY))
	}
	# ms 1m2.345s: REPLY=62345
	ms() {
		local m=${1%%m*} x=${1#*m}
		x=${x%s}
		REPLY=$(((10#$m * 60 + 10#${x%.*}) * 1000 + 10#${x#*.}))
	}

	local tool seg t0 t1 c0 i k rssf
	local -A cpu_push=() cpu_fetch=() push_total=()
	for tool in "${tools[@]}"; do
		mkdir -p "$w/store/$tool" "$w/fetch/$tool"
		: >"$res/$tool.push"
		: >"$res/$tool.fetch"
		cpu_push[$tool]=0 cpu_fetch[$tool]=0 push_total[$tool]=0
	done

	# Warm-up (not timed): each tool pushes and fetches one extra segment; these are also
	# the peak-RSS runs.
	note "warm-up and peak RSS"
	for tool in "${tools[@]}"; do
		rssf="$res/$tool.rss-push"
		: >"$rssf"
		T=(/usr/bin/time -f %M -a -o "$rssf")
		"push_$tool" "$w/segs/$warm" "$warm" || die "$tool: warm-up push of $warm failed"
		T=()
		sync
	done
	for tool in "${tools[@]}"; do
		rssf="$res/$tool.rss-fetch"
		: >"$rssf"
		T=(/usr/bin/time -f %M -a -o "$rssf")
		"fetch_$tool" "$warm" "$w/fetch/$tool/$warm" || die "$tool: warm-up fetch of $warm failed"
		T=()
		cmp -s "$w/segs/$warm" "$w/fetch/$tool/$warm" || die "$tool: fetched $warm differs from the original"
		rm -f "$w/fetch/$tool/$warm"
		sync
	done

	# Timed: segment after segment, every tool pushes it, one process each, in an order
	# that rotates from one segment to the next, so that the machine's other load and any
	# order effect fall on all tools alike. A sync after each push (not timed) leaves no
	# write-back of cp's or zstd's output to slow the next tool down.
	note "push: ${#segs[@]} segments x ${#tools[@]} tools"
	i=0
	for seg in "${segs[@]}"; do
		for ((k = 0; k < ${#tools[@]}; k++)); do
			tool=${tools[(i + k) % ${#tools[@]}]}
			cpu
			c0=$REPLY
			t0=$EPOCHREALTIME
			"push_$tool" "$w/segs/$seg" "$seg" || die "$tool: push of $seg failed"
			t1=$EPOCHREALTIME
			cpu
			cpu_push[$tool]=$((cpu_push[$tool] + REPLY - c0))
			elapsed "$t0" "$t1"
			push_total[$tool]=$((push_total[$tool] + REPLY))
			echo "$REPLY" >>"$res/$tool.push"
			sync
		done
		i=$((i + 1))
	done
	for tool in "${tools[@]}"; do
		echo "${cpu_push[$tool]}" >"$res/$tool.push-cpu"
		echo "${push_total[$tool]}" >"$res/$tool.push-total"
		du -sb "${storedir[$tool]}" | cut -f1 >"$res/$tool.stored"
	done

	# Same for fetch; each fetched copy is compared with the original (not timed), then
	# removed.
	note "fetch: ${#segs[@]} segments x ${#tools[@]} tools"
	i=0
	for seg in "${segs[@]}"; do
		for ((k = 0; k < ${#tools[@]}; k++)); do
			tool=${tools[(i + k) % ${#tools[@]}]}
			cpu
			c0=$REPLY
			t0=$EPOCHREALTIME
			"fetch_$tool" "$seg" "$w/fetch/$tool/$seg" || die "$tool: fetch of $seg failed"
			t1=$EPOCHREALTIME
			cpu
			cpu_fetch[$tool]=$((cpu_fetch[$tool] + REPLY - c0))
			elapsed "$t0" "$t1"
			echo "$REPLY" >>"$res/$tool.fetch"
			cmp -s "$w/segs/$seg" "$w/fetch/$tool/$seg" ||
				die "$tool: fetched $seg differs from the original (KEEP=1 keeps $w/fetch/$tool/$seg)"
			rm -f "$w/fetch/$tool/$seg"
			sync
		done
		i=$((i + 1))
	done
	for tool in "${tools[@]}"; do
		echo "${cpu_fetch[$tool]}" >"$res/$tool.fetch-cpu"
	done
	# Start-up cost of one process that does nothing (median of 11), to tell process
	# start-up apart from work.
	startup() {
		local a b f="$1"
		shift
		: >"$f"
		for _ in $(seq 11); do
			a=$EPOCHREALTIME
			"$@" >/dev/null 2>&1 || true
			b=$EPOCHREALTIME
			elapsed "$a" "$b"
			echo "$REPLY" >>"$f"
		done
	}
	startup "$res/startup.pgark" "$pgark" --help
	startup "$res/startup.pgbr" pgbackrest version
	startup "$res/startup.cp" cp --version
}

if [[ ${1-} == --measure ]]; then
	measure "$2"
	exit 0
fi

# ====================================================================== setup (root)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SEGMENTS=${SEGMENTS:-24}
SCALE=${SCALE:-20}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-20}
PGBENCH_MAX_SECONDS=${PGBENCH_MAX_SECONDS:-180}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
pgark_bin=${PGARK_BIN:-}
# Settings from the caller's environment must not reach pgark or pgBackRest.
unset "${!PGARK_@}" "${!PGBACKREST_@}"
[[ $SEGMENTS =~ ^[1-9][0-9]*$ ]] || die "SEGMENTS must be a positive number"
((SEGMENTS <= 100)) || die "SEGMENTS must be at most 100 (wal_keep_size=2GB keeps 128 segments)"
[[ -x $PG_BIN/initdb && -x $PG_BIN/pgbench ]] || die "no PostgreSQL server binaries in $PG_BIN (apt-get install postgresql-15)"

# Commands the benchmark needs, installed from Debian when missing (as root).
declare -A pkg_of=([pgbackrest]=pgbackrest [age]=age [zstd]=zstd [/usr/bin/time]=time [cmp]=diffutils)
missing=()
for c in "${!pkg_of[@]}"; do
	command -v "$c" >/dev/null 2>&1 || missing+=("${pkg_of[$c]}")
done
if ((${#missing[@]})); then
	[[ $(id -u) == 0 ]] || die "missing packages: ${missing[*]} (run as root, or install them)"
	note "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } ||
		die "apt-get install ${missing[*]} failed"
fi
pgbr_version=$(pgbackrest version)
[[ $pgbr_version == "pgBackRest 2.45" ]] || note "warning: expected pgBackRest 2.45, have: $pgbr_version"

as_pg=()
if [[ $(id -u) == 0 ]]; then
	id postgres >/dev/null 2>&1 || die "no postgres user (apt-get install postgresql-15)"
	as_pg=(runuser -u postgres --)
fi
pg() { "${as_pg[@]}" "$@"; }

w=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/pgark-bench-XXXXXX")
chmod 755 "$w"
[[ ${#as_pg[@]} == 0 ]] || chown postgres: "$w"
cleanup() {
	pg "$PG_BIN/pg_ctl" -D "$w/data" -m immediate stop >/dev/null 2>&1 || true
	if [[ ${KEEP:-0} == 1 ]]; then note "kept $w"; else rm -rf "$w"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- pgark
if [[ -n $pgark_bin ]]; then
	cp "$pgark_bin" "$w/pgark"
	pgark_rev="(PGARK_BIN=$pgark_bin)"
else
	note "building pgark"
	(cd "$here" && CGO_ENABLED=0 go build -trimpath -o "$w/pgark" ./cmd/pgark) || die "go build ./cmd/pgark failed"
	pgark_rev=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo "no commit")
	pgark_rev="built from $here ($pgark_rev + working tree)"
fi
chmod 755 "$w/pgark"
recipient=$(pg "$w/pgark" key generate --log-level warn "$w/identity.txt") || die "pgark key generate failed"
[[ $recipient == age1* ]] || die "pgark key generate printed no recipient: $recipient"
pg tee "$w/pgark.conf" >/dev/null <<EOF
repo = $w/repo-pgark
age-recipients = $recipient
age-identity-file = $w/identity.txt
log-level = warn
EOF
pg "$w/pgark" init --config "$w/pgark.conf" --log-level warn >/dev/null || die "pgark init failed"

# ---------------------------------------------------------------- a cluster and its WAL
port=$((20000 + RANDOM % 20000))
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
note "cluster: initdb, pgbench -i -s $SCALE (port $port)"
pg "$PG_BIN/initdb" -D "$w/data" -U postgres -A trust --no-sync >/dev/null
pg tee -a "$w/data/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$w'
archive_mode = on
archive_command = '/bin/true'
wal_keep_size = 2GB
max_wal_size = 4GB
synchronous_commit = off
EOF
pg "$PG_BIN/pg_ctl" -D "$w/data" -l "$w/server.log" -w start >/dev/null || die "pg_ctl start failed (see $w/server.log; KEEP=1 keeps it)"
psql() { pg "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc "$1"; }
pg "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -i -s "$SCALE" -q postgres >"$w/pgbench-init.log" 2>&1 ||
	die "pgbench -i failed: $(tail -3 "$w/pgbench-init.log")"
psql "CHECKPOINT" >/dev/null
curseg() { psql "SELECT pg_walfile_name(pg_current_wal_lsn())"; }
segno() { echo $((16#${1:8:8} * 256 + 16#${1:16:8})); } # 16 MiB segments: 256 per "log"
need=$((SEGMENTS + 1))
oltp_start=$(curseg)
ran=0 secs=$PGBENCH_SECONDS
while :; do
	note "pgbench -c 4 -j 2 -T $secs"
	pg "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -c 4 -j 2 -T "$secs" postgres >>"$w/pgbench-run.log" 2>&1 ||
		die "pgbench failed: $(tail -3 "$w/pgbench-run.log")"
	ran=$((ran + secs))
	cur=$(curseg)
	(($(segno "$cur") - $(segno "$oltp_start") >= need)) && break
	((ran + 10 <= PGBENCH_MAX_SECONDS)) || break
	secs=10
done
tps=$(grep -o 'tps = [0-9.]*' "$w/pgbench-run.log" | tail -1 | awk '{printf "%.0f", $3}')

# pgBackRest stanzas (they need the running cluster), one plain, one with a cipher.
for kind in plain cipher; do
	{
		echo "[global]"
		echo "repo1-path=$w/repo-pgbr-$kind"
		[[ $kind == cipher ]] && echo "repo1-cipher-type=aes-256-cbc" &&
			echo "repo1-cipher-pass=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
		echo "compress-type=zst"
		echo "compress-level=3"
		echo "archive-async=n"
		echo "lock-path=$w/pgbr-lock"
		echo "log-path=$w/pgbr-log"
		echo "log-level-console=warn"
		echo "log-level-file=off"
		echo "[demo]"
		echo "pg1-path=$w/data"
		echo "pg1-port=$port"
		echo "pg1-socket-path=$w"
		echo "pg1-user=postgres"
	} | pg tee "$w/pgbr-$kind.conf" >/dev/null
	pg chmod 600 "$w/pgbr-$kind.conf"
	pg pgbackrest --config="$w/pgbr-$kind.conf" --stanza=demo stanza-create ||
		die "pgbackrest stanza-create ($kind) failed"
done

# The newest completed segments (the current one is still being written).
mapfile -t completed < <(pg ls "$w/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | awk -v c="$cur" '$0 < c')
((${#completed[@]} >= need)) || die "only ${#completed[@]} completed segments, need $need: lower SEGMENTS"
picked=("${completed[@]: -$need}")
oltp=0
for s in "${picked[@]}"; do [[ $s > $oltp_start || $s == "$oltp_start" ]] && oltp=$((oltp + 1)); done
pg "$PG_BIN/pg_ctl" -D "$w/data" -m fast stop >/dev/null
pg mkdir "$w/segs"
for s in "${picked[@]}"; do pg cp "$w/data/pg_wal/$s" "$w/segs/$s"; done
segsize=$(stat -c %s "$w/segs/${picked[0]}")
pg tee "$w/bench.env" >/dev/null <<EOF
pgark=$(printf %q "$w/pgark")
recipient=$(printf %q "$recipient")
identity=$(printf %q "$w/identity.txt")
warm=${picked[0]}
segs=(${picked[*]:1})
segsize=$segsize
EOF
cp "${BASH_SOURCE[0]}" "$w/wal.sh"
chmod 644 "$w/wal.sh"

# ---------------------------------------------------------------- measure (as postgres)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
note "measuring: $SEGMENTS segments (+1 warm-up) per tool, one process per segment"
pg env -i PATH="$PATH" HOME="$w" LC_ALL=C TMPDIR="$w" bash "$w/wal.sh" --measure "$w" ||
	die "measurement failed"

# ---------------------------------------------------------------- report
r="$w/results"
# stat_ms FILE: "median p90" (nearest rank) of a file of microseconds, in ms
stat_ms() { sort -n "$1" | awk '{v[NR]=$1} END {m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2; p = int(NR * 0.9 + 0.999999); if (p < 1) p = 1; printf "%.1f %.1f\n", m / 1000, v[p] / 1000}'; }
sum_mib() { awk '/^[0-9]+$/ {s += $1} END {printf "%.1f\n", s / 1024}' "$1"; }
per_seg() { awk -v ms="$(cat "$1")" -v n="$SEGMENTS" 'BEGIN {printf "%.1f", ms / n}'; }
tools=(pgark pgbrc pgbr zage zstd dd cp)
declare -A label=(
	[pgark]="pgark (zstd-3+age)" [pgbrc]="pgBackRest zst+aes" [pgbr]="pgBackRest zst"
	[zage]="zstd -3 | age" [zstd]="zstd -3" [dd]="dd conv=fsync" [cp]="cp"
)
# whether the tool fsyncs what it wrote before exiting: push/fetch (checked with strace
# for pgark and pgBackRest 2.45: archive-get writes the destination without fsync)
declare -A durable=([pgark]=yes/yes [pgbrc]=yes/no [pgbr]=yes/no [zage]=no/no [zstd]=no/no [dd]=yes/yes [cp]=no/no)
declare -A pmed pp90 mbs pcpu fmed fp90 fcpu rssp rssf stored
for t in "${tools[@]}"; do
	read -r "pmed[$t]" "pp90[$t]" < <(stat_ms "$r/$t.push")
	read -r "fmed[$t]" "fp90[$t]" < <(stat_ms "$r/$t.fetch")
	mbs[$t]=$(awk -v n="$SEGMENTS" -v s="$segsize" -v us="$(cat "$r/$t.push-total")" 'BEGIN {printf "%.0f", n * s / 1048576 / (us / 1e6)}')
	pcpu[$t]=$(per_seg "$r/$t.push-cpu")
	fcpu[$t]=$(per_seg "$r/$t.fetch-cpu")
	rssp[$t]=$(sum_mib "$r/$t.rss-push")
	rssf[$t]=$(sum_mib "$r/$t.rss-fetch")
	stored[$t]=$(awk -v b="$(cat "$r/$t.stored")" 'BEGIN {printf "%.1f", b / 1048576}')
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
row() {
	printf "%-26s %8s %8s %7s %8s %9s %9s %9s %8s %9s %7s %9s\n" "$@"
}

cpu_model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo
echo "== WAL archive benchmark: one process per segment, sequential, as PostgreSQL's archiver/startup process would"
echo "machine:    $(nproc) CPUs, ${cpu_model:-unknown CPU}, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM; load average before/after measuring: $load_before / $(cut -d' ' -f1-3 /proc/loadavg)"
echo "disk:       $w on $(df -PT "$w" | awk 'NR == 2 {print $2, "(" $1 ")"}')"
echo "pgark:      $pgark_rev"
echo "versions:   pgBackRest ${pgbr_version#pgBackRest }, $(zstd --version | grep -o 'v[0-9.]*' | head -1 | sed 's/^/zstd /'), age $(age --version), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
echo "segments:   $SEGMENTS timed (+1 warm-up) x $((segsize / 1048576)) MiB: $oltp from pgbench -c 4 (${ran}s, last run ${tps:-?} tps), $((need - oltp)) from pgbench -i -s $SCALE"
echo "verified:   every fetched segment of every tool is byte-identical to the original (cmp)"
echo
row tool "push" "push" "push" "push" "fetch" "fetch" "fetch" "RSS" "RSS" stored fsync
row "" "med ms" "p90 ms" "MB/s" "CPU ms" "med ms" "p90 ms" "CPU ms" "push MiB" "fetch MiB" MiB push/fetch
for t in "${tools[@]}"; do
	row "${label[$t]}" "${pmed[$t]}" "${pp90[$t]}" "${mbs[$t]}" "${pcpu[$t]}" "${fmed[$t]}" "${fp90[$t]}" "${fcpu[$t]}" "${rssp[$t]}" "${rssf[$t]}" "${stored[$t]}" "${durable[$t]}"
done
echo
for b in pgbrc cp; do
	name="pgark / ${label[$b]%% *}"
	[[ $b == pgbrc ]] && name+="(cipher)"
	row "$name" "$(ratio "${pmed[pgark]}" "${pmed[$b]}")" "$(ratio "${pp90[pgark]}" "${pp90[$b]}")" \
		"$(ratio "${mbs[pgark]}" "${mbs[$b]}")" "$(ratio "${pcpu[pgark]}" "${pcpu[$b]}")" \
		"$(ratio "${fmed[pgark]}" "${fmed[$b]}")" "$(ratio "${fp90[pgark]}" "${fp90[$b]}")" \
		"$(ratio "${fcpu[pgark]}" "${fcpu[$b]}")" "$(ratio "${rssp[pgark]}" "${rssp[$b]}")" \
		"$(ratio "${rssf[pgark]}" "${rssf[$b]}")" "$(ratio "${stored[pgark]}" "${stored[$b]}")" ""
done
read -r su_pgark _ < <(stat_ms "$r/startup.pgark")
read -r su_pgbr _ < <(stat_ms "$r/startup.pgbr")
read -r su_cp _ < <(stat_ms "$r/startup.cp")
cat <<EOF

med/p90: wall-clock latency of one process (or pipeline), median and 90th percentile over the $SEGMENTS segments.
MB/s: MiB pushed / sum of the push times (one segment at a time). CPU ms: user+sys CPU per segment, all processes.
RSS: peak resident set of one push / one fetch (/usr/bin/time %M); for a pipeline, the sum of its stages.
Ratios: pgark's figure divided by the other tool's (below 1 favours pgark, except MB/s).
fsync: whether the tool makes what it wrote durable before exiting (cp, zstd and age do not:
  their times exclude write-back; dd conv=fsync is a plain durable copy for reference).
Process start-up alone (median of 11, no work): pgark --help ${su_pgark} ms, pgbackrest version ${su_pgbr} ms, cp --version ${su_cp} ms.
EOF
