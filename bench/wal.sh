#!/usr/bin/env bash
# shellcheck disable=SC2317 # push_*/fetch_* are called by name ("push_$tool")
# bench/wal.sh: WAL archive/restore benchmark, one process per WAL segment, the way
# PostgreSQL runs archive_command and restore_command. On the same real pgbench WAL
# segments it compares:
#   pgark          wal-push / wal-fetch (zstd level 1, wal-push's default, + age encryption,
#                  local repository)
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
# Then, on the DRAIN_SEGMENTS newest segments of the same run (the ones above among them),
# a backlog drain and a recovery, as PostgreSQL's archiver and startup process make them
# (bench/walsim plays them on a fake data directory):
#   drain     DRAIN_SEGMENTS .ready segments, archive_command once per segment in name
#             order, .ready -> .done on exit 0
#   recovery  restore_command once per segment, in order, with recovery.signal
# for pgark (push-ahead and prefetch into its spool, when the build has them), pgBackRest
# with archive-async=y and process-max=2 (zst-3 + aes-256-cbc), and cp; first with local
# repositories, then (S3=1) on S3: versitygw on loopback behind bench/latencyproxy, which
# adds S3_DELAY to every request. It prints the total wall and CPU seconds (detached helpers
# included) of each loop, the peak spool size during recovery, and pgark's ratios to
# pgBackRest async and to cp. Every restored segment is compared with the original (cmp).
# With AZURE=1, pgark's drain and recovery also run on Azure Blob Storage: Azurite on
# loopback behind a second latencyproxy adding AZURE_DELAY (pgark only; compared with cp).
# With SFTP=1, the same for pgark on the SFTP store: a private OpenSSH sshd (internal-sftp,
# its own config and keys in the work dir) on loopback, with no added latency (loopback SSH).
#
# Usage: bash bench/wal.sh        (as root: it runs PostgreSQL and the tools as `postgres`)
# Environment:
#   SEGMENTS=24       timed segments per tool (one more is taken for the warm-up)
#   DRAIN_SEGMENTS=100  segments of the drain and recovery runs (0: none)
#   S3=1              also the drain and recovery on S3 (needs versitygw: make deps)
#   S3_DELAY=20ms     latency latencyproxy adds to every S3 request
#   AZURE=0           1: also the drain and recovery on Azurite (needs it: make deps)
#   AZURE_DELAY=S3_DELAY  latency latencyproxy adds to every Azure request
#   S3_DELAY=20ms     latency latencyproxy adds to every S3 (and GCS) request
#   GCS=0             GCS=1: also the drain and recovery of pgark alone on GCS: fake-gcs-server
#                     (in memory) behind latencyproxy (needs fake-gcs-server: make deps).
#                     Informational: an emulator is not the cloud
#   SFTP=0            SFTP=1: also the drain and recovery of pgark alone on SFTP: a private
#                     OpenSSH sshd on 127.0.0.1 (loopback SSH, no added delay; needs
#                     openssh-server: make deps). Informational
#   PUSH_AHEAD=8 PUSH_JOBS=2 FETCH_AHEAD=8 FETCH_JOBS=2   pgark's settings for those runs
#   SCALE=20          pgbench -i scale
#   PGBENCH_SECONDS=20  first pgbench run; more 10 s runs follow (up to PGBENCH_MAX_SECONDS=600
#                     in all) until the run alone has filled SEGMENTS+1 segments and the
#                     cluster DRAIN_SEGMENTS
#   PGARK_BIN=path    use this pgark binary instead of building one from this tree
#   PG_BIN=dir        PostgreSQL server binaries (default /usr/lib/postgresql/15/bin)
#   BENCH_TMPDIR=/tmp where the work dir is made (every tool reads and writes there)
#   CPUS=LIST         run the drain and recovery loops (every process they start, helpers
#                     included) on these CPUs only (taskset -c LIST; e.g. CPUS=0 for one
#                     core), to see how each tool scales with cores
#   KEEP=1            keep the work dir
set -euo pipefail
export LC_ALL=C
prog=wal.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

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
DRAIN_SEGMENTS=${DRAIN_SEGMENTS:-100}
S3=${S3:-1}
S3_DELAY=${S3_DELAY:-20ms}
AZURE=${AZURE:-0}
AZURE_DELAY=${AZURE_DELAY:-$S3_DELAY}
azurite=${PGARK_AZURITE:-${PGARK_CACHE:-/opt/pgark-cache}/azurite/node_modules/.bin/azurite-blob}
GCS=${GCS:-0}
fakegcs=${PGARK_FAKE_GCS_SERVER:-${PGARK_CACHE:-/opt/pgark-cache}/bin/fake-gcs-server}
SFTP=${SFTP:-0}
sshd=${PGARK_SSHD:-/usr/sbin/sshd}
SCALE=${SCALE:-20}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-20}
PGBENCH_MAX_SECONDS=${PGBENCH_MAX_SECONDS:-600}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
pgark_bin=${PGARK_BIN:-}
versitygw=${PGARK_VERSITYGW:-${PGARK_CACHE:-/opt/pgark-cache}/bin/versitygw}
# pgark's push-ahead/prefetch settings for the drain and recovery runs
PUSH_AHEAD=${PUSH_AHEAD:-8} PUSH_JOBS=${PUSH_JOBS:-2} FETCH_AHEAD=${FETCH_AHEAD:-8} FETCH_JOBS=${FETCH_JOBS:-2}
# Settings from the caller's environment must not reach pgark or pgBackRest.
unset "${!PGARK_@}" "${!PGBACKREST_@}"
[[ $SEGMENTS =~ ^[1-9][0-9]*$ ]] || die "SEGMENTS must be a positive number"
[[ $DRAIN_SEGMENTS =~ ^[0-9]+$ ]] || die "DRAIN_SEGMENTS must be a number (0: no drain/recovery runs)"
((SEGMENTS <= 1000 && DRAIN_SEGMENTS <= 1000)) || die "SEGMENTS and DRAIN_SEGMENTS must be at most 1000"
[[ $S3 == 0 || $S3 == 1 ]] || die "S3 must be 0 or 1"
[[ $GCS == 0 || $GCS == 1 ]] || die "GCS must be 0 or 1"
[[ $SFTP == 0 || $SFTP == 1 ]] || die "SFTP must be 0 or 1"
((DRAIN_SEGMENTS)) || S3=0 GCS=0 SFTP=0
[[ $S3_DELAY =~ ^[0-9]+(ms|s)$ ]] || die "S3_DELAY must be a duration such as 20ms"
[[ $AZURE == 0 || $AZURE == 1 ]] || die "AZURE must be 0 or 1"
((DRAIN_SEGMENTS)) || AZURE=0
[[ $AZURE_DELAY =~ ^[0-9]+(ms|s)$ ]] || die "AZURE_DELAY must be a duration such as 20ms"
((AZURE == 0)) || [[ -x $azurite ]] ||
	die "Azure test server $azurite not found: run make deps (bash .ci/deps.sh), or AZURE=0"
pin=()
if [[ -n ${CPUS-} ]]; then
	[[ $CPUS =~ ^[0-9]+([,-][0-9]+)*$ ]] || die "CPUS must be a CPU list such as 0 or 0-1"
	taskset -c "$CPUS" true || die "taskset -c $CPUS failed"
	pin=(taskset -c "$CPUS")
fi
for v in PUSH_AHEAD PUSH_JOBS FETCH_AHEAD FETCH_JOBS; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number"
done
[[ -x $PG_BIN/initdb && -x $PG_BIN/pgbench ]] || die "no PostgreSQL server binaries in $PG_BIN (apt-get install postgresql-15)"
((S3 == 0)) || [[ -x $versitygw ]] ||
	die "S3 test server $versitygw not found: run make deps (bash .ci/deps.sh), or S3=0 to skip the S3 runs"
((GCS == 0)) || [[ -x $fakegcs ]] ||
	die "GCS test server $fakegcs not found: run make deps (bash .ci/deps.sh), or GCS=0"
((SFTP == 0)) || [[ -x $sshd ]] ||
	die "SFTP test server $sshd not found: run make deps (bash .ci/deps.sh), or SFTP=0"
command -v go >/dev/null 2>&1 || [[ ! -x /usr/local/go/bin/go ]] || PATH=$PATH:/usr/local/go/bin

# Commands the benchmark needs, installed from Debian when missing (as root).
declare -A pkg_of=([pgbackrest]=pgbackrest [age]=age [zstd]=zstd [/usr/bin/time]=time [cmp]=diffutils)
((S3 == 0 && AZURE == 0 && GCS == 0)) || pkg_of[curl]=curl
((SFTP == 0)) || pkg_of[ssh-keygen]=openssh-client pkg_of[setpriv]=util-linux
install_missing
check_pgbackrest

use_postgres
make_workdir

# ---------------------------------------------------------------- pgark
setup_pgark
if ((DRAIN_SEGMENTS)); then
	note "building bench/walsim and bench/latencyproxy"
	(cd "$here" && CGO_ENABLED=0 go build -trimpath -o "$w/walsim" ./bench/walsim &&
		CGO_ENABLED=0 go build -trimpath -o "$w/latencyproxy" ./bench/latencyproxy) ||
		die "go build ./bench/walsim ./bench/latencyproxy failed"
	if ((AZURE)); then
		(cd "$here" && CGO_ENABLED=0 go build -trimpath -o "$w/azcontainer" ./bench/azcontainer) ||
			die "go build ./bench/azcontainer failed"
	fi
fi
# Whether this pgark has push-ahead and prefetch (their options are unknown keys before).
ahead=0
push_help=$("$w/pgark" wal-push --help 2>&1 || true)
fetch_help=$("$w/pgark" wal-fetch --help 2>&1 || true)
[[ $push_help == *push-ahead* && $fetch_help == *fetch-ahead* ]] && ahead=1
((ahead)) || note "warning: this pgark has no push-ahead/fetch-ahead options: the drain and recovery runs use plain wal-push/wal-fetch"

# ---------------------------------------------------------------- a cluster and its WAL
# Segments: the SEGMENTS+1 newest for the per-segment table, the DRAIN_SEGMENTS newest for
# the drain and recovery runs (the same files where they overlap), all kept by wal_keep_size.
need=$((SEGMENTS + 1))
total=$((DRAIN_SEGMENTS > need ? DRAIN_SEGMENTS : need))
keep_mb=$(((total + 32) * 16))
((keep_mb >= 2048)) || keep_mb=2048
init_cluster
cluster_conf <<EOF
wal_keep_size = ${keep_mb}MB
max_wal_size = $((keep_mb * 2 > 4096 ? keep_mb * 2 : 4096))MB
synchronous_commit = off
EOF
start_cluster
psql "CHECKPOINT" >/dev/null
curseg() { psql "SELECT pg_walfile_name(pg_current_wal_lsn())"; }
segno() { echo $((16#${1:8:8} * 256 + 16#${1:16:8})); } # 16 MiB segments: 256 per "log"
# completed: the segments before the current one (which is still being written)
completed() { pg ls "$w/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | awk -v c="$cur" '$0 < c'; }
oltp_start=$(curseg)
ran=0 secs=$PGBENCH_SECONDS
while :; do
	note "pgbench -c 4 -j 2 -T $secs"
	pg "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -c 4 -j 2 -T "$secs" postgres >>"$w/pgbench-run.log" 2>&1 ||
		die "pgbench failed: $(tail -3 "$w/pgbench-run.log")"
	ran=$((ran + secs))
	cur=$(curseg)
	(($(segno "$cur") - $(segno "$oltp_start") >= need && $(completed | wc -l) >= total)) && break
	((ran + 10 <= PGBENCH_MAX_SECONDS)) || break
	secs=10
done
tps=$(grep -o 'tps = [0-9.]*' "$w/pgbench-run.log" | tail -1 | awk '{printf "%.0f", $3}')

# ---------------------------------------------------------------- S3: versitygw behind latencyproxy
((S3 == 0)) || start_s3
((AZURE == 0)) || start_azure
((GCS == 0)) || start_gcs
((SFTP == 0)) || start_sftp

# pgark repositories for the drain and recovery runs (new, empty: the per-segment table
# already pushed some of these segments to $w/repo-pgark), local and S3.
variants=()
if ((DRAIN_SEGMENTS)); then
	variants=(local)
	((S3 == 0)) || variants+=(s3)
	((AZURE == 0)) || variants+=(azure)
	((GCS == 0)) || variants+=(gcs)
	((SFTP == 0)) || variants+=(sftp)
	for v in "${variants[@]}"; do pgark_conf "$v"; done
fi

# pgBackRest stanzas (they need the running cluster): for the per-segment table one plain,
# one with a cipher (archive-async=n); for the drain and recovery runs, with a cipher,
# archive-async=y and process-max=2, one local and one on S3 (HTTPS through latencyproxy).
pgbr_conf plain
pgbr_conf cipher
for v in "${variants[@]}"; do
	case $v in local) pgbr_conf async ;; s3) pgbr_conf s3 ;; azure | gcs | sftp) ;; esac # none on Azure, GCS or SFTP
done

mapfile -t completed < <(completed)
((${#completed[@]} >= total)) ||
	die "only ${#completed[@]} completed segments, need $total: lower SEGMENTS or DRAIN_SEGMENTS, or raise PGBENCH_MAX_SECONDS"
picked=("${completed[@]: -$need}")
drained=()
((DRAIN_SEGMENTS == 0)) || drained=("${completed[@]: -$DRAIN_SEGMENTS}")
oltp=0
for s in "${picked[@]}"; do [[ $s > $oltp_start || $s == "$oltp_start" ]] && oltp=$((oltp + 1)); done
drain_oltp=0
for s in "${drained[@]}"; do [[ $s > $oltp_start || $s == "$oltp_start" ]] && drain_oltp=$((drain_oltp + 1)); done
pg "$PG_BIN/pg_ctl" -D "$w/data" -m fast stop >/dev/null
pg mkdir "$w/segs"
for s in "${completed[@]: -$total}"; do pg cp "$w/data/pg_wal/$s" "$w/segs/$s"; done
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
cp "$here/bench/lib.sh" "$w/lib.sh"
chmod 644 "$w/wal.sh" "$w/lib.sh"

# ---------------------------------------------------------------- measure (as postgres)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
note "measuring: $SEGMENTS segments (+1 warm-up) per tool, one process per segment"
pg env -i PATH="$PATH" HOME="$w" LC_ALL=C TMPDIR="$w" bash "$w/wal.sh" --measure "$w" ||
	die "measurement failed"

# ---------------------------------------------------------------- drain and recovery (as postgres)
# Each run is one walsim process (as postgres, clean environment): it plays PostgreSQL's
# archiver (drain) or startup process (recovery) on a fake data directory made of hard
# links to the segments and a copy of the cluster's global/pg_control, and reports the
# loop's wall time, the CPU of every process it started (detached helpers included: it is
# their subreaper and waits for them) and the peak size of the tool's spool.
declare -A spooldir=([pgark-local]="$w/spool-pgark-local" [pgark-s3]="$w/spool-pgark-s3" [pgark-azure]="$w/spool-pgark-azure" [pgark-gcs]="$w/spool-pgark-gcs" [pgark-sftp]="$w/spool-pgark-sftp"
	[pgbr-local]="$w/spool-pgbr-async" [pgbr-s3]="$w/spool-pgbr-s3")
fakedata() { # DIR [drain]: a data directory with global/pg_control; for drain, the segments, .ready
	pg mkdir -m 700 "$1" "$1/global" "$1/pg_wal" "$1/pg_wal/archive_status"
	pg cp "$w/data/global/pg_control" "$1/global/pg_control"
	[[ ${2-} == drain ]] || return 0
	(cd "$w/segs" && pg ln "${drained[@]}" "$1/pg_wal/")
	(cd "$1/pg_wal/archive_status" && pg touch "${drained[@]/%/.ready}")
}
# walsim_run NAME MODE DIR COMMAND [walsim options]
walsim_run() {
	local name=$1 mode=$2 dir=$3 cmd=$4
	shift 4
	local -a env=(PATH="$PATH" HOME="$w" LC_ALL=C TMPDIR="$w")
	[[ $name == *-s3-* ]] && env+=("${s3env[@]}")
	[[ $name == *-azure-* ]] && env+=("${azenv[@]}")
	[[ $name == *-gcs-* ]] && env+=("${gcsenv[@]}")
	# SFTP: none (the key and known_hosts files are in pgark-sftp.conf)
	sync
	runs+=("$name")
	if ! "${pin[@]}" "${as_pg[@]}" env -i "${env[@]}" "$w/walsim" "$mode" -pgdata "$dir" -out "$r/$name" -log "$r/$name.log" \
		-times "$r/$name.times" "$@" -- "$cmd" 2>"$r/$name.err"; then
		cat "$r/$name.err" >&2
		[[ -s $r/$name.log ]] && tail -20 "$r/$name.log" >&2
		die "$name failed (the commands' output is above; KEEP=1 keeps $w)"
	fi
	[[ -s $r/$name.err ]] && cat "$r/$name.err" >&2
	note "$name: $(cat "$r/$name")"
}
drain_cmd() { # TOOL VARIANT DIR
	case $1 in
	pgark) echo "$w/pgark wal-push --config $w/pgark-$2.conf %p" ;;
	pgbr) echo "pgbackrest --config=$w/pgbr-$([[ $2 == local ]] && echo async || echo s3).conf --stanza=demo --pg1-path=$3 archive-push %p" ;;
	cp) echo "cp %p $w/store-drain-cp/%f" ;;
	esac
}
recovery_cmd() { # TOOL VARIANT DIR
	case $1 in
	pgark) echo "$w/pgark wal-fetch --config $w/pgark-$2.conf %f %p" ;;
	pgbr) echo "pgbackrest --config=$w/pgbr-$([[ $2 == local ]] && echo async || echo s3).conf --stanza=demo --pg1-path=$3 archive-get %f %p" ;;
	cp) echo "cp $w/store-drain-cp/%f %p" ;;
	esac
}
r="$w/results"
runs=()
if ((DRAIN_SEGMENTS)); then
	printf '%s\n' "${drained[@]}" | pg tee "$w/drain.list" >/dev/null
	pg mkdir "$w/store-drain-cp"
	# Before every run, as in the measure phase: have the host back about the page cache the
	# run fills (the restored copies kept for cmp, spools, repositories), then free it. VMs
	# that hand freed guest memory back to the host (free page reporting: here, reported at
	# once) fault each page in again at its first touch: writing 16 MiB of such memory took
	# 37 ms against 3 ms once backed. Without this, whichever tool runs after a pause pays for
	# it: recovery times of one binary swung between 2.1 and 3.6 s, and 1.8-2.0 s with it.
	prefault_mib=$((DRAIN_SEGMENTS * segsize * 2 / 1048576 + 512))
	prefault() {
		pg dd if=/dev/zero of="$w/prefault" bs=1M count="$prefault_mib" status=none
		rm -f "$w/prefault"
		sync
	}
	note "pre-faulting ${prefault_mib} MiB of page cache before each drain and recovery run"
	drain_load_before=$(cut -d' ' -f1-3 /proc/loadavg)
	for v in "${variants[@]}"; do
		# cp has no S3 path: the S3 table shows the local cp. The order rotates per variant.
		case $v in local) dtools=(pgark pgbr cp) ;; s3) dtools=(pgbr pgark) ;; azure | gcs | sftp) dtools=(pgark) ;; esac
		note "drain ($v): $DRAIN_SEGMENTS segments x ${#dtools[@]} tools"
		for t in "${dtools[@]}"; do
			d="$w/drain-$v-$t"
			fakedata "$d" drain
			prefault
			walsim_run "drain-$v-$t" drain "$d" "$(drain_cmd "$t" "$v" "$d")"
			n=$(find "$d/pg_wal/archive_status" -name '*.done' | wc -l)
			((n == DRAIN_SEGMENTS)) || die "drain-$v-$t: $n of $DRAIN_SEGMENTS segments marked .done"
			# What the drain stored (local repositories: the WAL objects alone).
			case $v-$t in
			local-pgark) du -sb "$w/repo-pgark-local/wal" | cut -f1 >"$r/stored-$v-$t" ;;
			local-pgbr) du -sb "$w/repo-pgbr-async/archive" | cut -f1 >"$r/stored-$v-$t" ;;
			local-cp) du -sb "$w/store-drain-cp" | cut -f1 >"$r/stored-$v-$t" ;;
			sftp-pgark) du -sb "$w/repo-pgark-sftp/wal" | cut -f1 >"$r/stored-$v-$t" ;; # the "server" is this disk
			esac
			rm -rf "$d"
		done
		note "recovery ($v): $DRAIN_SEGMENTS segments x ${#dtools[@]} tools"
		for t in "${dtools[@]}"; do
			d="$w/recovery-$v-$t"
			fakedata "$d"
			pg mkdir "$d.keep"
			spool_opt=()
			[[ -n ${spooldir[$t-$v]-} ]] && spool_opt=(-spool "${spooldir[$t-$v]}")
			prefault
			walsim_run "recovery-$v-$t" recover "$d" "$(recovery_cmd "$t" "$v" "$d")" \
				-segs "$w/drain.list" -keep "$d.keep" "${spool_opt[@]}"
			for s in "${drained[@]}"; do
				cmp -s "$w/segs/$s" "$d.keep/$s" ||
					die "recovery-$v-$t: fetched $s differs from the original (KEEP=1 keeps $d.keep/$s)"
			done
			rm -rf "$d" "$d.keep"
		done
	done
	drain_load_after=$(cut -d' ' -f1-3 /proc/loadavg)
fi

# ---------------------------------------------------------------- report
r="$w/results"
# stat_ms FILE: "median p90" (nearest rank) of a file of microseconds, in ms
stat_ms() { sort -n "$1" | awk '{v[NR]=$1} END {m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2; p = int(NR * 0.9 + 0.999999); if (p < 1) p = 1; printf "%.1f %.1f\n", m / 1000, v[p] / 1000}'; }
sum_mib() { awk '/^[0-9]+$/ {s += $1} END {printf "%.1f\n", s / 1024}' "$1"; }
per_seg() { awk -v ms="$(cat "$1")" -v n="$SEGMENTS" 'BEGIN {printf "%.1f", ms / n}'; }
tools=(pgark pgbrc pgbr zage zstd dd cp)
declare -A label=(
	[pgark]="pgark (zstd-1+age)" [pgbrc]="pgBackRest zst+aes" [pgbr]="pgBackRest zst"
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

# ---------------------------------------------------------------- report: drain and recovery
((DRAIN_SEGMENTS)) || exit 0
# get RUN KEY: a value from walsim's result line
get() { tr ' ' '\n' <"$r/$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }
secs() { awk -v s="$1" 'BEGIN {printf "%.2f", s}'; }
# callstat FILE: "median/max" ms of walsim's per-call times (NAME MS lines)
callstat() { awk '{print $2}' "$1" | sort -g | awk '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.0f/%.0f", m, v[NR]}'; }
row2() { printf "%-40s %8s %11s %11s %14s %10s %11s\n" "$@"; }
declare -A dlabel=([pgark]="pgark (zstd-1+age)" [pgbr]="pgBackRest async zst+aes, process-max 2" [cp]="cp")
echo
echo "== Backlog drain and recovery: $DRAIN_SEGMENTS segments, one process per segment as PostgreSQL runs them"
[[ -z ${CPUS-} ]] || echo "pinned:     the drain and recovery loops ran on CPUs $CPUS only (taskset -c $CPUS)"
echo "segments:   the $DRAIN_SEGMENTS newest of this run ($drain_oltp from pgbench -c 4, $((DRAIN_SEGMENTS - drain_oltp)) from pgbench -i); the per-segment table's are among them"
echo "drain:      a data directory copy with pg_wal/archive_status/*.ready; archive_command for each in name order"
echo "            (sh -c, working directory = the data directory), .ready renamed .done on exit 0"
echo "recovery:   restore_command '... %f pg_wal/RECOVERYXLOG' for each segment in order, with recovery.signal"
echo "            (removed after the last one, as at the end of recovery)"
if ((ahead)); then
	echo "pgark:      push-ahead $PUSH_AHEAD, push-jobs $PUSH_JOBS, fetch-ahead $FETCH_AHEAD, fetch-jobs $FETCH_JOBS, spool-dir in the work dir"
else
	echo "pgark:      WITHOUT push-ahead/prefetch (this build has no such options): plain wal-push/wal-fetch"
fi
echo "pgBackRest: archive-async=y, process-max=2, compress zst-3, aes-256-cbc, archive-get-queue-max 128MiB (default)"
((S3)) && echo "S3:         versitygw (posix) on 127.0.0.1 behind bench/latencyproxy adding $S3_DELAY to every request (HTTP for pgark, HTTPS for pgBackRest)"
((AZURE)) && echo "Azure:      Azurite (in memory) on 127.0.0.1 behind bench/latencyproxy adding $AZURE_DELAY to every request (HTTP; pgark only)"
((GCS)) && echo "GCS:        fake-gcs-server (in memory) on 127.0.0.1 behind bench/latencyproxy adding $S3_DELAY to every request; pgark alone (informational: an emulator)"
((SFTP)) && echo "SFTP:       a private OpenSSH sshd (internal-sftp) on 127.0.0.1, loopback SSH with no added delay; pgark alone (informational; CPU s is the client side, not sshd's)"
echo "verified:   every segment every tool restored is byte-identical to the original (cmp)"
echo "load:       load average before/after these runs: $drain_load_before / $drain_load_after; run order: local pgark, pgBackRest, cp$( ((S3)) && echo "; S3 pgBackRest, pgark")$( ((AZURE)) && echo "; Azure pgark")$( ((GCS)) && echo "; GCS pgark")$( ((SFTP)) && echo "; SFTP pgark")"
declare -A dw dc rw rc sp
for v in "${variants[@]}"; do
	echo
	case $v in
	local) echo "local repository" ;;
	s3) echo "S3 + $S3_DELAY per request" ;;
	azure) echo "Azure (Azurite) + $AZURE_DELAY per request" ;;
	gcs) echo "GCS (fake-gcs-server) + $S3_DELAY per request: pgark alone" ;;
	sftp) echo "SFTP (private sshd on loopback, no added delay): pgark alone" ;;
	esac
	row2 "" "drain s" "drain CPU s" "recovery s" "recovery CPU s" "spool MiB" "stored MiB"
	declare -A st=()
	vtools=(pgark pgbr cp)
	[[ $v == azure || $v == gcs || $v == sftp ]] && vtools=(pgark cp) # no pgBackRest run on Azure, GCS or SFTP
	for t in "${vtools[@]}"; do
		src=$v
		[[ $t == cp ]] && src=local
		dw[$t]=$(secs "$(get "drain-$src-$t" wall_s)")
		dc[$t]=$(secs "$(get "drain-$src-$t" cpu_s)")
		rw[$t]=$(secs "$(get "recovery-$src-$t" wall_s)")
		rc[$t]=$(secs "$(get "recovery-$src-$t" cpu_s)")
		sp[$t]=$(awk -v b="$(get "recovery-$src-$t" peak_spool_bytes)" 'BEGIN {printf "%.0f", b / 1048576}')
		[[ $t == cp ]] && sp[$t]="-"
		st[$t]="-"
		[[ -s $r/stored-$src-$t ]] && st[$t]=$(awk -v b="$(cat "$r/stored-$src-$t")" 'BEGIN {printf "%.0f", b / 1048576}')
		name=${dlabel[$t]}
		[[ $t == cp && $v != local ]] && name="cp (local disk, as above)"
		row2 "$name" "${dw[$t]}" "${dc[$t]}" "${rw[$t]}" "${rc[$t]}" "${sp[$t]}" "${st[$t]}"
	done
	for b in "${vtools[@]:1}"; do
		row2 "pgark / $([[ $b == pgbr ]] && echo "pgBackRest async" || echo cp)" \
			"$(ratio "${dw[pgark]}" "${dw[$b]}")" "$(ratio "${dc[pgark]}" "${dc[$b]}")" \
			"$(ratio "${rw[pgark]}" "${rw[$b]}")" "$(ratio "${rc[pgark]}" "${rc[$b]}")" "" \
			"$([[ ${st[pgark]} != - && ${st[$b]} != - ]] && ratio "${st[pgark]}" "${st[$b]}")"
	done
	printf "per call, median / max ms:"
	for m in drain recovery; do
		printf " %s" "$m"
		for t in "${vtools[@]}"; do
			src=$v
			[[ $t == cp ]] && src=local
			printf " %s %s%s" "$t" "$(callstat "$r/$m-$src-$t.times")" "$([[ $t == cp ]] && echo ";" || echo ",")"
		done
	done
	echo
	goal=$(awk -v a="${rw[pgark]}" -v b="${rw[cp]}" 'BEGIN {print (b > 0 && a / b < 1.5) ? "met" : "NOT met"}')
	dgoal=$(awk -v a="${dw[pgark]}" -v b="${dw[pgbr]}" 'BEGIN {print (b > 0 && a <= b) ? "met" : "NOT met"}')
	[[ $v == azure || $v == gcs || $v == sftp ]] || echo "goal, pgark drain no slower than pgBackRest async: $dgoal ($(ratio "${dw[pgark]}" "${dw[pgbr]}")x)"
	echo "goal, pgark recovery under 1.5x cp: $goal ($(ratio "${rw[pgark]}" "${rw[cp]}")x)"
done
cat <<EOF

drain s / recovery s: wall time of the loop, first command started to last command returned.
CPU s: user+sys of every process the loop started (sh -c included), with the detached helpers
  (pgBackRest's async process, pgark's prefetch helper) until they exit.
spool MiB: peak total size of the tool's spool directory during recovery (sampled every 100 ms).
stored MiB: what the drain stored (local repositories: the WAL objects, or cp's copies).
Ratios: pgark's figure divided by the other's (below 1 favours pgark).
EOF
# Anything the commands printed (log-level warn: nothing is expected), helpers killed.
for n in "${runs[@]}"; do
	if [[ -s $r/$n.log ]]; then
		echo "note: $n: the commands printed $(wc -l <"$r/$n.log") line(s), the first ones:"
		head -5 "$r/$n.log" | sed 's/^/  /'
	fi
	k=$(get "$n" killed)
	((k == 0)) || echo "note: $n: $k helper process(es) still running 90 s after the loop, killed: $(grep -c killed "$r/$n.err") (see $r/$n.err)"
done
