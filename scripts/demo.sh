#!/usr/bin/env bash
# make demo: the whole job on the embedded default, in about two minutes. A throw-away
# PostgreSQL cluster archives its WAL through pgark into an encrypted local repository and
# is backed up; rows are written with timestamps; a table is dropped by mistake; pgark
# restores the backup into a new data directory and recovers to just before the drop; the
# restored server shows the lost rows back. `pgark check` and `pgark list` along the way.
# Everything lives in a temp dir, removed at the end (KEEP=1 keeps it).
# PG_BIN selects the PostgreSQL server binaries (default: the newest /usr/lib/postgresql/*/bin),
# PGARK_BIN the pgark binary (default: bin/pgark, from make build).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
pgark_src="${PGARK_BIN:-$here/bin/pgark}"
[ -x "$pgark_src" ] || { echo "demo: build first (make build)" >&2; exit 1; }
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PG_BIN/initdb" ] || { echo "demo: no PostgreSQL server binaries found; run make deps or set PG_BIN" >&2; exit 1; }

work=$(mktemp -d /tmp/pgark-demo-XXXXXX)
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" = 0 ]; then
	chown postgres: "$work"
	as_pg=(runuser -u postgres --)
fi
cleanup() {
	for d in "$work/data" "$work/restored"; do
		[ -f "$d/postmaster.pid" ] && "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
	done
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
# Every command runs as the user PostgreSQL runs as, in the demo's own environment.
run() { "${as_pg[@]}" env -u PGARK_CONFIG -u PGHOST -u PGPORT -u PGDATABASE -u PGUSER "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }

cp "$pgark_src" "$work/pgark" && chmod 755 "$work/pgark"
pgark="$work/pgark"
conf="$work/pgark.conf"
port=$(free_port)
psql_at() { local p=$1; shift; run "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$p" -U postgres -d postgres "$@"; }
psql() { psql_at "$port" "$@"; }
pgark() { show "pgark $*"; run "$pgark" "$@"; }

say "1. keys: the database host gets only the public recipient; the identity stays with whoever restores"
show "pgark key generate $work/identity.txt"
recipient=$(run "$pgark" key generate "$work/identity.txt")
echo "recipient: $recipient"

say "2. pgark init: an encrypted local repository"
cat >"$conf" <<EOF
repo = $work/repo
age-recipients = $recipient
age-identity-file = $work/identity.txt
dsn = host=127.0.0.1 port=$port user=postgres dbname=postgres
EOF
[ ${#as_pg[@]} -eq 0 ] || chown postgres: "$conf"
cat "$conf"
pgark init --config "$conf"

say "3. a throw-away cluster: archive_command = 'pgark wal-push %p'"
run "$PG_BIN/initdb" -D "$work/data" -U postgres -A trust --no-sync >/dev/null
cat >>"$work/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
archive_mode = on
archive_command = '$pgark wal-push --config $conf %p'
EOF
run "$PG_BIN/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null
echo "archive_command = $(psql -Atc 'SHOW archive_command')"

say "4. pgark backup: a base backup over the replication protocol"
psql -c "CREATE TABLE orders(id int PRIMARY KEY, item text, at timestamptz NOT NULL DEFAULT clock_timestamp())"
pgark backup --config "$conf"

say "5. pgark check: archiving, backups and the recoverable window"
pgark check --config "$conf" --check-timeout 2m

say "6. the day goes on: orders arrive"
for batch in 1 2 3; do
	psql -c "INSERT INTO orders(id, item) SELECT g, 'order ' || g FROM generate_series($(((batch - 1) * 100 + 1)), $((batch * 100))) g"
	sleep 1
done
psql -c "SELECT count(*) AS orders, max(at)::time(3) AS last_order FROM orders"
good=$(psql -Atc "SELECT clock_timestamp()")
echo "all is well at: $good"
sleep 1

say "7. the disaster: someone drops the table"
show "psql -c 'DROP TABLE orders'"
psql -c "DROP TABLE orders"
psql -c "SELECT count(*) FROM orders" 2>&1 | sed 's/$/   <- the orders are gone/' | head -1 || true
# The WAL with the drop is archived when its segment is complete.
last=$(psql -Atc "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 600); do
	[ "$(psql -Atc "SELECT coalesce(last_archived_wal, '') >= '$last' FROM pg_stat_archiver")" = t ] && break
	sleep 0.2
done
[ "$(psql -Atc "SELECT coalesce(last_archived_wal, '') >= '$last' FROM pg_stat_archiver")" = t ] ||
	{ echo "demo: $last was not archived; server log:" >&2; tail -20 "$work/server.log" >&2; exit 1; }
psql -c "SELECT archived_count, failed_count, last_archived_wal FROM pg_stat_archiver"

say "8. pgark list: the backups and the WAL they can replay"
pgark list --config "$conf"

say "9. pgark restore: the newest backup before the target, recovered to just before the drop"
pgark restore latest "$work/restored" --config "$conf" --target-time "$good" --target-action promote
port2=$(free_port)
cat >>"$work/restored/postgresql.conf" <<EOF
port = $port2
EOF
grep -h '^restore_command' "$work/restored/postgresql.auto.conf" "$work/restored/postgresql.conf" 2>/dev/null | tail -1
run "$PG_BIN/pg_ctl" -D "$work/restored" -l "$work/restored.log" -w -t 300 start >/dev/null
for _ in $(seq 1 1500); do
	[ "$(psql_at "$port2" -Atc 'SELECT NOT pg_is_in_recovery()' 2>/dev/null)" = t ] && break
	sleep 0.2
done
grep -E 'recovery stopping|last completed transaction|selected new timeline' "$work/restored.log" | sed 's/^[^]]*] //' | head -3 || true

say "10. the restored server: the orders are back"
psql_at "$port2" -c "SELECT count(*) AS orders, max(at)::time(3) AS last_order FROM orders"
n=$(psql_at "$port2" -Atc "SELECT count(*) FROM orders")
[ "$n" = 300 ] || { echo "demo: the restored server has $n orders, want 300" >&2; exit 1; }

say "done: the database is back as of $good"
cat <<EOF
Read next:
  docs/archiving.md  archive_command, push-ahead, restore_command on a real server
  docs/backups.md    base backups and their schedule
  docs/restore.md    restore and point-in-time recovery (time, LSN, xid, named point)
  docs/keys.md       age keys, rotation and origin signatures
  docs/s3.md         S3 and S3-compatible repositories
(The cluster, the repository and the keys are removed now; KEEP=1 keeps them.)
EOF
