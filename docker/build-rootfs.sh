#!/usr/bin/env bash
# Builds the container's runtime layout without Docker (these machines cannot
# pull images): the same files, user and paths as docker/Dockerfile's final
# stage, in a folder you can chroot into.
#
#   docker/build-rootfs.sh BINARY OUT            a static layout: the binary, the
#                                                shared libraries it links (ldd),
#                                                CA certificates, the rampart user
#   docker/build-rootfs.sh --minbase BINARY OUT  debootstrap --variant=minbase
#                                                bookworm, then the same files
#                                                (needs a Debian mirror; slow)
#
# Then, as root:  chroot --userspec=10001:10001 OUT /usr/local/bin/rampart --version
set -euo pipefail
minbase=0
if [ "${1:-}" = "--minbase" ]; then minbase=1; shift; fi
bin=${1:?usage: build-rootfs.sh [--minbase] BINARY OUT}
out=${2:?usage: build-rootfs.sh [--minbase] BINARY OUT}
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$out"
mkdir -p "$out"

if [ $minbase = 1 ]; then
  command -v debootstrap >/dev/null || { echo "needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
  debootstrap --variant=minbase bookworm "$out" "${MIRROR:-http://deb.debian.org/debian}"
else
  # the dynamic loader and every library the binary links, at their paths
  for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*ld-linux/ { print $1 }'); do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
  done
  mkdir -p "$out/etc/ssl/certs" "$out/tmp"
  chmod 1777 "$out/tmp"
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/usr/sbin/nologin\n' > "$out/etc/passwd"
  printf 'root:x:0:\n' > "$out/etc/group"
  printf 'hosts: files dns\n' > "$out/etc/nsswitch.conf"
  : > "$out/etc/resolv.conf"
fi

# what docker/Dockerfile's final stage does
echo 'rampart:x:10001:10001:rampart:/nonexistent:/usr/sbin/nologin' >> "$out/etc/passwd"
echo 'rampart:x:10001:' >> "$out/etc/group"
mkdir -p "$out/usr/local/bin" "$out/etc/rampart" "$out/var/lib/rampart"
install -m 0755 "$bin" "$out/usr/local/bin/rampart"
cp "$here/../config/rampart.toml" "$out/etc/rampart/rampart.toml"
chown 10001:10001 "$out/var/lib/rampart"
echo "rootfs in $out: $(du -sh "$out" | cut -f1)"
