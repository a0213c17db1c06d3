#!/usr/bin/env bash
# make demo: a throw-away local PostgreSQL cluster archives its WAL through
# pgark into an encrypted local repository; then one segment is fetched back
# and compared with the original. Everything lives in a temp dir, removed at
# the end (KEEP=1 keeps it).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
pgark_src="$here/bin/pgark"
[ -x "$pgark_src" ] || { echo "demo: build first (make build)"; exit 1; }
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PG_BIN/initdb" ] || { echo "demo: no PostgreSQL server binaries found; run make deps or set PG_BIN"; exit 1; }

work=$(mktemp -d /tmp/pgark-demo-XXXXXX)
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$work"
  as_pg=(runuser -u postgres --)
fi
cleanup() {
  "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
run() { "${as_pg[@]}" env -u PGARK_CONFIG "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cp "$pgark_src" "$work/pgark" && chmod 755 "$work/pgark"
pgark="$work/pgark"
port=$((20000 + RANDOM % 20000))

say "1. an age key pair: the database host gets only the public recipient"
recipient=$(run "$pgark" key generate "$work/identity.txt")
echo "recipient: $recipient   (identity file: $work/identity.txt, mode $(stat -c %a "$work/identity.txt"))"

say "2. pgark init: an encrypted local repository"
cat > "$work/pgark.conf" <<EOF
repo = $work/repo
age-recipients = $recipient
age-identity-file = $work/identity.txt
EOF
chown --reference="$work" "$work/pgark.conf"
run "$pgark" init --config "$work/pgark.conf"

say "3. a throw-away cluster with archive_command = 'pgark wal-push %p'"
run "$PG_BIN/initdb" -D "$work/data" -U postgres -A trust --no-sync >/dev/null
cat >> "$work/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
archive_mode = on
archive_command = '$pgark wal-push --config $work/pgark.conf %p'
restore_command = '$pgark wal-fetch --config $work/pgark.conf %f %p'
wal_keep_size = 1GB
EOF
run "$PG_BIN/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null
psql() { run "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"; }
echo "archive_command: $(psql -Atc 'SHOW archive_command')"

say "4. some writes (pgbench -i -s 5), and five WAL switches"
run "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -i -s 5 -q postgres 2>&1 | tail -1
for _ in 1 2 3 4 5; do
  last=$(psql -Atc "SELECT pg_walfile_name(pg_current_wal_lsn())")
  psql -c "SELECT pg_switch_wal()" >/dev/null
done
for _ in $(seq 1 120); do
  [ "$(psql -Atc "SELECT coalesce(last_archived_wal,'') >= '$last' FROM pg_stat_archiver")" = t ] && break
  sleep 0.5
done
psql -c "SELECT archived_count, failed_count, last_archived_wal, last_archived_time::time(0) FROM pg_stat_archiver"

say "5. the repository: one object per WAL file, found by name"
(cd "$work/repo" && find . -type f | sort | head -12)
echo "segments: $(find "$work/repo/wal" -name '*.pgark' | wc -l) objects, $(du -sh "$work/repo" | cut -f1) on disk for $(psql -Atc "SELECT pg_size_pretty(archived_count * 16 * 1024 * 1024::bigint) FROM pg_stat_archiver") of WAL"

say "6. pgark wal-fetch: one segment back, verified, compared with pg_wal"
seg=$(ls "$work/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | head -2 | tail -1)
run "$pgark" wal-fetch --config "$work/pgark.conf" "$seg" "$work/fetched"
cmp "$work/fetched" "$work/data/pg_wal/$seg" && echo "$seg: fetched copy is byte-identical to pg_wal/$seg"
set +e
run "$pgark" wal-fetch --config "$work/pgark.conf" 00000099.history "$work/nope"
echo "a file that is not archived: exit $? (PostgreSQL reads 1 as 'not found')"
set -e

say "done: the cluster, repository and keys are removed (KEEP=1 keeps them)"
