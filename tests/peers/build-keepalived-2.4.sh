#!/usr/bin/env bash
# Builds keepalived 2.4.3 (the first release with `auth_hmac`; Debian bookworm ships 2.2.7)
# from ../shared/keepalived-2.4.3.tar.gz for the HMAC interop tests, once: the result is kept
# in target/peers/keepalived-2.4.3/ and a later run that finds it working does nothing.
# It is a test peer only; nothing of it goes into maas-vip.
#
#   tests/peers/build-keepalived-2.4.sh     # prints the path of the built keepalived
#
# KEEPALIVED_TARBALL overrides where the tarball is. Needs root for apt-get only when a build
# dependency is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
version=2.4.3
tarball=${KEEPALIVED_TARBALL:-$root/../shared/keepalived-$version.tar.gz}
dest=$root/target/peers/keepalived-$version
bin=$dest/inst/sbin/keepalived

# The version line is read whole before matching: `grep -q` closing the pipe early would make
# keepalived die of SIGPIPE and, under pipefail, a good build look broken.
reports_version() {
  local out
  out=$("$bin" --version 2>&1) || true
  case $out in *"Keepalived v$version"*) return 0 ;; *) return 1 ;; esac
}

if [ -x "$bin" ] && reports_version; then
  echo "$bin"
  exit 0
fi
[ -f "$tarball" ] || { echo "build-keepalived: $tarball not found" >&2; exit 1; }

need=()
for p in build-essential autoconf automake pkg-config libssl-dev libnl-3-dev libnl-genl-3-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Build beside the destination and move it into place at the end, so that an interrupted
# build never looks finished.
mkdir -p "$root/target"
work=$(mktemp -d "$root/target/peers-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar xzf "$tarball" -C "$work"
src=$work/keepalived-$version
log=$work/build.log
(
  cd "$src"
  ./autogen.sh
  ./configure --prefix="$dest/inst" --disable-snmp --disable-dbus
  make -j"$(nproc)"
) >"$log" 2>&1 || { tail -n 40 "$log" >&2; echo "build-keepalived: build failed" >&2; exit 1; }
rm -rf "$dest"
mkdir -p "$dest"
make -C "$src" install >>"$log" 2>&1 || { tail -n 40 "$log" >&2; exit 1; }
cp "$log" "$dest/build.log"
reports_version || {
  echo "build-keepalived: $bin does not report v$version" >&2
  exit 1
}
echo "$bin"
