# shellcheck shell=bash disable=SC2154 # prog, pkg_of, here, pgark_bin... come from the sourcing script
# bench/lib.sh: set-up shared by bench/wal.sh and bench/backup.sh (sourced, never run).
# The sourcing script sets `prog` (its name, for messages) first. What it provides:
#   die, note                 messages prefixed with "$prog: "
#   install_missing           installs the Debian packages of the commands in pkg_of
#                             (an associative array: command => package) that are missing
#   check_pgbackrest          sets pgbr_version, warns unless it is 2.45
#   use_postgres              sets as_pg (runuser -u postgres -- as root, else empty) and pg()
#   make_workdir              creates the work dir $w (BENCH_TMPDIR), removed at exit unless
#                             KEEP=1; at exit the cluster in $w/data is stopped, and the
#                             background processes whose pids are in cleanup_pids killed
#   setup_pgark               pgark binary ($pgark_bin, else built from this tree) at $w/pgark,
#                             an age identity, $w/pgark.conf (conf), an initialised local
#                             repository $w/repo-pgark; sets pgark_rev, recipient, conf
#   free_port                 prints a TCP port nothing listens on (127.0.0.1)
#   init_cluster              picks port, initdb of $w/data (pgbench -i -s $SCALE follows)
#   cluster_conf              appends to postgresql.conf the common settings, then stdin
#   start_cluster             pg_ctl start, then pgbench -i -s $SCALE
#   psql SQL                  runs SQL on the cluster (-Atc), as postgres
# Each expects here (the repository root), PG_BIN, SCALE and pgark_bin as the scripts set them.

die() {
	echo "$prog: ERROR: $*" >&2
	exit 1
}
note() { echo "$prog: $*" >&2; }

# Commands the benchmark needs, installed from Debian when missing (as root).
install_missing() {
	local c
	local -a missing=()
	for c in "${!pkg_of[@]}"; do
		command -v "$c" >/dev/null 2>&1 || missing+=("${pkg_of[$c]}")
	done
	((${#missing[@]})) || return 0
	[[ $(id -u) == 0 ]] || die "missing packages: ${missing[*]} (run as root, or install them)"
	note "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } ||
		die "apt-get install ${missing[*]} failed"
}

check_pgbackrest() {
	pgbr_version=$(pgbackrest version)
	[[ $pgbr_version == "pgBackRest 2.45" ]] || note "warning: expected pgBackRest 2.45, have: $pgbr_version"
}

use_postgres() {
	as_pg=()
	if [[ $(id -u) == 0 ]]; then
		id postgres >/dev/null 2>&1 || die "no postgres user (apt-get install postgresql-15)"
		as_pg=(runuser -u postgres --)
	fi
}
pg() { "${as_pg[@]}" "$@"; }

make_workdir() {
	w=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/pgark-bench-XXXXXX")
	chmod 755 "$w"
	[[ ${#as_pg[@]} == 0 ]] || chown postgres: "$w"
	trap cleanup EXIT
}
# Background servers a script starts (by pid) are stopped at exit: cleanup_pids.
cleanup_pids=()
cleanup() {
	local p
	for p in "${cleanup_pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${cleanup_pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pg "$PG_BIN/pg_ctl" -D "$w/data" -m immediate stop >/dev/null 2>&1 || true
	if [[ ${KEEP:-0} == 1 ]]; then note "kept $w"; else rm -rf "$w"; fi
}

setup_pgark() {
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
	conf="$w/pgark.conf"
	pg tee "$conf" >/dev/null <<EOF
repo = $w/repo-pgark
age-recipients = $recipient
age-identity-file = $w/identity.txt
log-level = warn
EOF
	pg "$w/pgark" init --config "$conf" --log-level warn >/dev/null || die "pgark init failed"
}

free_port() {
	local p=$((20000 + RANDOM % 20000))
	while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
	echo "$p"
}

init_cluster() {
	port=$(free_port)
	note "cluster: initdb, pgbench -i -s $SCALE (port $port)"
	pg "$PG_BIN/initdb" -D "$w/data" -U postgres -A trust --no-sync >/dev/null
}

cluster_conf() {
	{
		cat <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$w'
archive_mode = on
archive_command = '/bin/true'
EOF
		cat
	} | pg tee -a "$w/data/postgresql.conf" >/dev/null
}

start_cluster() {
	pg "$PG_BIN/pg_ctl" -D "$w/data" -l "$w/server.log" -w start >/dev/null || die "pg_ctl start failed (see $w/server.log; KEEP=1 keeps it)"
	pg "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -i -s "$SCALE" -q postgres >"$w/pgbench-init.log" 2>&1 ||
		die "pgbench -i failed: $(tail -3 "$w/pgbench-init.log")"
}
psql() { pg "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc "$1"; }
