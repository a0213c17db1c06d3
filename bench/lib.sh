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
#   start_s3                  versitygw ($versitygw) on loopback with a bucket, behind
#                             $w/latencyproxy (built by the caller), which adds $S3_DELAY to
#                             every request; sets proxy_http, proxy_tls_port. s3_key,
#                             s3_secret, s3_region, bucket and s3env (the environment of a
#                             pgark on S3) are set when this file is sourced
#   start_azure               Azurite's blob service ($azurite) on loopback with a container,
#                             behind a second $w/latencyproxy adding $AZURE_DELAY; sets
#                             azproxy_http and azenv (the environment of a pgark on Azure);
#                             needs $w/azcontainer (built by the caller)
#   start_gcs                 fake-gcs-server ($fakegcs) on loopback with the bucket, behind a
#                             second latencyproxy adding $S3_DELAY (uploads' session URLs
#                             too); sets gcsenv (the environment of a pgark on GCS)
#   start_sftp                a private OpenSSH sshd ($sshd, -D -e, its own sshd_config,
#                             ed25519 host and client keys from ssh-keygen, internal-sftp
#                             only) on 127.0.0.1 and a free port, no added latency, run as
#                             postgres when root (it can then log in only that user, who owns
#                             the repository files); sets sftp_user, sftp_port, sftp_identity,
#                             sftp_known_hosts (a "[127.0.0.1]:PORT ssh-ed25519 ..." line)
#   pgark_conf VARIANT        (local|s3|azure|gcs|sftp) writes $w/pgark-VARIANT.conf (spool, push-ahead and
#                             prefetch settings when $ahead is 1) and runs pgark init
#   pgbr_conf KIND            (plain|cipher|async|s3) writes $w/pgbr-KIND.conf for the
#                             cluster in $w/data and runs stanza-create (the cluster must run)
#   pgbr_write KIND           the same from [global] lines on stdin (pgbr_conf uses it)
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

s3_key=pgarkbenchaccess s3_secret=pgarkbenchsecret0123456789 s3_region=us-east-1 bucket=bench
# s3env: the environment for a pgark that uses the S3 store
s3env=(AWS_ACCESS_KEY_ID="$s3_key" AWS_SECRET_ACCESS_KEY="$s3_secret" AWS_REGION="$s3_region" AWS_EC2_METADATA_DISABLED=true)

start_s3() {
	local a b
	s3port=$(free_port)
	mkdir "$w/s3"
	ROOT_ACCESS_KEY=$s3_key ROOT_SECRET_KEY=$s3_secret "$versitygw" --port "127.0.0.1:$s3port" --region "$s3_region" \
		--quiet posix "$w/s3" >"$w/versitygw.log" 2>&1 &
	cleanup_pids+=($!)
	"$w/latencyproxy" -listen 127.0.0.1:0 -tls-listen 127.0.0.1:0 -target "http://127.0.0.1:$s3port" \
		-delay "$S3_DELAY" >"$w/latencyproxy.out" 2>"$w/latencyproxy.log" &
	cleanup_pids+=($!)
	# s3curl URL [curl args]: a SigV4-signed request (empty payload)
	s3curl() {
		local u=$1
		shift
		curl -sS -f -k -o /dev/null --aws-sigv4 "aws:amz:$s3_region:s3" --user "$s3_key:$s3_secret" \
			-H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" "$@" "$u"
	}
	for _ in $(seq 300); do
		curl -s -o /dev/null "http://127.0.0.1:$s3port/" && [[ $(wc -l <"$w/latencyproxy.out") == 2 ]] && break
		sleep 0.1
	done
	curl -s -o /dev/null "http://127.0.0.1:$s3port/" ||
		die "versitygw does not answer on 127.0.0.1:$s3port: $(tail -5 "$w/versitygw.log")"
	[[ $(wc -l <"$w/latencyproxy.out") == 2 ]] || die "latencyproxy did not start: $(tail -5 "$w/latencyproxy.log")"
	proxy_http=$(sed -n 1p "$w/latencyproxy.out")
	proxy_tls_port=$(sed -n 2p "$w/latencyproxy.out")
	proxy_tls_port=${proxy_tls_port##*:}
	s3curl "http://127.0.0.1:$s3port/$bucket" -X PUT || die "creating the bucket on versitygw failed"
	# Signed requests must pass the proxy unchanged (the Host header is signed).
	a=$EPOCHREALTIME
	s3curl "$proxy_http/$bucket?list-type=2" || die "a signed request through latencyproxy (HTTP) failed"
	b=$EPOCHREALTIME
	s3curl "https://127.0.0.1:$proxy_tls_port/$bucket?list-type=2" || die "a signed request through latencyproxy (HTTPS) failed"
	note "S3: versitygw on 127.0.0.1:$s3port, latencyproxy (+$S3_DELAY) at $proxy_http and https://127.0.0.1:$proxy_tls_port; one request through it: $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.1f", (b - a) * 1000}') ms"
}

# ---------------------------------------------------------------- Azure: Azurite behind latencyproxy
az_account=devstoreaccount1
az_key=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==
azenv=() # set by start_azure
start_azure() {
	local azport
	azport=$(free_port)
	"$azurite" --blobHost 127.0.0.1 --blobPort "$azport" --inMemoryPersistence --skipApiVersionCheck \
		--disableTelemetry --silent >"$w/azurite.log" 2>&1 &
	cleanup_pids+=($!)
	"$w/latencyproxy" -listen 127.0.0.1:0 -tls-listen 127.0.0.1:0 -target "http://127.0.0.1:$azport" \
		-delay "$AZURE_DELAY" >"$w/latencyproxy-azure.out" 2>"$w/latencyproxy-azure.log" &
	cleanup_pids+=($!)
	for _ in $(seq 300); do
		curl -s -o /dev/null "http://127.0.0.1:$azport/$az_account?comp=list" && [[ $(wc -l <"$w/latencyproxy-azure.out") == 2 ]] && break
		sleep 0.1
	done
	curl -s -o /dev/null "http://127.0.0.1:$azport/$az_account?comp=list" ||
		die "Azurite does not answer on 127.0.0.1:$azport: $(tail -5 "$w/azurite.log")"
	[[ $(wc -l <"$w/latencyproxy-azure.out") == 2 ]] || die "latencyproxy (Azure) did not start: $(tail -5 "$w/latencyproxy-azure.log")"
	azproxy_http=$(sed -n 1p "$w/latencyproxy-azure.out")
	AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=$az_account;AccountKey=$az_key;BlobEndpoint=http://127.0.0.1:$azport/$az_account;" \
		"$w/azcontainer" "$bucket" || die "creating the container on Azurite failed"
	azenv=(AZURE_STORAGE_ACCOUNT="$az_account" AZURE_STORAGE_KEY="$az_key")
	note "Azure: Azurite on 127.0.0.1:$azport, latencyproxy (+$AZURE_DELAY) at $azproxy_http"
}

pgark_conf() { # VARIANT: writes $w/pgark-VARIANT.conf and runs pgark init
	{
		case $1 in
		local) echo "repo = $w/repo-pgark-local" ;;
		gcs) echo "repo = gs://$bucket/pgark" ;;
		s3)
			echo "repo = s3://$bucket/pgark"
			echo "s3-endpoint = $proxy_http"
			echo "s3-force-path-style = true"
			echo "s3-region = $s3_region"
			;;
		azure)
			echo "repo = azure://$bucket/pgark"
			echo "azure-endpoint = $azproxy_http/$az_account"
			;;
		sftp)
			echo "repo = sftp://$sftp_user@127.0.0.1:$sftp_port$w/repo-pgark-sftp"
			echo "sftp-identity-file = $sftp_identity"
			echo "sftp-known-hosts = $sftp_known_hosts"
			;;
		esac
		echo "age-recipients = $recipient"
		echo "age-identity-file = $w/identity.txt"
		echo "log-level = warn"
		if ((ahead)); then
			echo "spool-dir = $w/spool-pgark-$1"
			echo "push-ahead = $PUSH_AHEAD"
			echo "push-jobs = $PUSH_JOBS"
			echo "fetch-ahead = $FETCH_AHEAD"
			echo "fetch-jobs = $FETCH_JOBS"
		fi
	} | pg tee "$w/pgark-$1.conf" >/dev/null
	pg env -i PATH="$PATH" HOME="$w" "${s3env[@]}" "${azenv[@]}" "${gcsenv[@]}" "$w/pgark" init --config "$w/pgark-$1.conf" --log-level warn >/dev/null ||
		die "pgark init ($1) failed"
}

# ---------------------------------------------------------------- GCS
# gcsenv: the environment for a pgark that uses the GCS store (start_gcs sets it)
gcsenv=()
start_gcs() {
	local gport pport
	gport=$(free_port)
	pport=$(free_port)
	[[ $pport != "$gport" ]] || pport=$((gport + 1))
	# The server names the proxy in the session URLs of resumable uploads, so that their
	# chunks pay the delay too.
	"$fakegcs" -scheme http -host 127.0.0.1 -port "$gport" -backend memory -log-level error \
		-external-url "http://127.0.0.1:$pport" -public-host "127.0.0.1:$pport" >"$w/fake-gcs-server.log" 2>&1 &
	cleanup_pids+=($!)
	"$w/latencyproxy" -listen "127.0.0.1:$pport" -target "http://127.0.0.1:$gport" \
		-delay "$S3_DELAY" >"$w/latencyproxy-gcs.out" 2>"$w/latencyproxy-gcs.log" &
	cleanup_pids+=($!)
	for _ in $(seq 300); do
		curl -s -f -o /dev/null "http://127.0.0.1:$pport/storage/v1/b" && break
		sleep 0.1
	done
	curl -s -f -o /dev/null "http://127.0.0.1:$pport/storage/v1/b" ||
		die "fake-gcs-server does not answer through latencyproxy on 127.0.0.1:$pport: $(tail -5 "$w/fake-gcs-server.log" "$w/latencyproxy-gcs.log")"
	curl -sS -f -o /dev/null -X POST -H 'Content-Type: application/json' -d "{\"name\": \"$bucket\"}" \
		"http://127.0.0.1:$gport/storage/v1/b?project=bench" || die "creating the bucket on fake-gcs-server failed"
	gcsenv=(STORAGE_EMULATOR_HOST="127.0.0.1:$pport")
	note "GCS: fake-gcs-server (in memory) on 127.0.0.1:$gport, latencyproxy (+$S3_DELAY) at 127.0.0.1:$pport"
}

# ---------------------------------------------------------------- SFTP: a private sshd
# Never the system's sshd service or its configuration: sshd runs in the foreground (-D,
# log on stderr: -e) with its own sshd_config, host key and authorized_keys in $w/sshd,
# as the user that runs pgark (postgres when root: a non-root sshd can only log in its
# own user, and so pgark's files on the "server" belong to the user that reads them).
# setpriv, not runuser, so that the pid in cleanup_pids is sshd's own (sshd forks one
# process per connection; they end with their connection).
sftp_user='' sftp_port='' sftp_identity='' sftp_known_hosts=''
start_sftp() {
	local d="$w/sshd" line='' pid
	local -a as_sshd=()
	((${#as_pg[@]} == 0)) || as_sshd=(setpriv --reuid postgres --regid postgres --init-groups --)
	sftp_user=$(pg id -un)
	sftp_identity="$d/id_ed25519"
	sftp_known_hosts="$d/known_hosts"
	pg mkdir -m 700 "$d"
	pg ssh-keygen -q -t ed25519 -N '' -C pgark-bench-host -f "$d/host_ed25519" || die "ssh-keygen (host key) failed"
	pg ssh-keygen -q -t ed25519 -N '' -C pgark-bench-client -f "$sftp_identity" || die "ssh-keygen (client key) failed"
	pg cp "$sftp_identity.pub" "$d/authorized_keys"
	sftp_port=$(free_port)
	pg tee "$d/sshd_config" >/dev/null <<EOF
Port $sftp_port
ListenAddress 127.0.0.1
HostKey $d/host_ed25519
PidFile none
AuthorizedKeysFile $d/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding no
X11Forwarding no
PermitTTY no
MaxStartups 100
MaxSessions 100
Subsystem sftp internal-sftp
ForceCommand internal-sftp
LogLevel INFO
EOF
	# the host key as pgark expects it: [host]:port for a port other than 22
	echo "[127.0.0.1]:$sftp_port $(cut -d' ' -f1-2 "$d/host_ed25519.pub")" | pg tee "$sftp_known_hosts" >/dev/null
	# sshd re-executes itself: it needs its absolute path.
	"${as_sshd[@]}" "$sshd" -D -e -f "$d/sshd_config" >"$w/sshd.log" 2>&1 &
	pid=$!
	cleanup_pids+=("$pid")
	for _ in $(seq 300); do
		kill -0 "$pid" 2>/dev/null || break # exited: its log says why
		line=$( (exec 3<>"/dev/tcp/127.0.0.1/$sftp_port" && read -r -t 2 l <&3 && echo "$l") 2>/dev/null || true)
		[[ $line == SSH-2.0-* ]] && break
		sleep 0.1
	done
	[[ $line == SSH-2.0-* ]] || die "sshd does not answer on 127.0.0.1:$sftp_port: $(tail -5 "$w/sshd.log")"
	note "SFTP: sshd ($("$sshd" -V 2>&1 | cut -d, -f1), internal-sftp) on 127.0.0.1:$sftp_port as $sftp_user, no added latency"
}

pgbr_conf() { # KIND
	{
		echo "[global]"
		case $1 in
		plain | cipher | async) echo "repo1-path=$w/repo-pgbr-$1" ;;
		s3)
			echo "repo1-type=s3"
			echo "repo1-path=/pgbr"
			echo "repo1-s3-bucket=$bucket"
			echo "repo1-s3-endpoint=127.0.0.1"
			echo "repo1-storage-port=$proxy_tls_port"
			echo "repo1-s3-uri-style=path"
			echo "repo1-storage-verify-tls=n"
			echo "repo1-s3-key=$s3_key"
			echo "repo1-s3-key-secret=$s3_secret"
			echo "repo1-s3-region=$s3_region"
			;;
		esac
		[[ $1 != plain ]] && echo "repo1-cipher-type=aes-256-cbc" &&
			echo "repo1-cipher-pass=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
		echo "compress-type=zst"
		echo "compress-level=3"
		case $1 in
		plain | cipher)
			echo "archive-async=n"
			echo "lock-path=$w/pgbr-lock"
			;;
		*)
			echo "archive-async=y"
			echo "process-max=2"
			echo "spool-path=$w/spool-pgbr-$1"
			echo "lock-path=$w/pgbr-lock-$1"
			;;
		esac
	} | pgbr_write "$1"
}

# pgbr_write KIND: $w/pgbr-KIND.conf from the [global] lines on stdin and the settings
# every benchmark shares (logs, the stanza of the cluster in $w/data), then stanza-create.
pgbr_write() {
	{
		cat
		echo "log-path=$w/pgbr-log"
		echo "log-level-console=warn"
		echo "log-level-file=off"
		echo "[demo]"
		echo "pg1-path=$w/data"
		echo "pg1-port=$port"
		echo "pg1-socket-path=$w"
		echo "pg1-user=postgres"
	} | pg tee "$w/pgbr-$1.conf" >/dev/null
	pg chmod 600 "$w/pgbr-$1.conf"
	pg pgbackrest --config="$w/pgbr-$1.conf" --stanza=demo stanza-create ||
		die "pgbackrest stanza-create ($1) failed"
}
