#!/usr/bin/env bash
# Install everything vigil, its tests and its lab guest need on a Debian/Ubuntu host, then the npm
# dependencies. Safe to run again. Needs root for apt-get (uses sudo when not root).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# qemu-system-x86: boots the reference guest; busybox-static + cpio: its initramfs; kmod: modinfo for
# module dependency checks; gcc/make/libc6-dev: the attack suite's static C programs. The guest's
# qemu-guest-agent is downloaded, not installed (it would start a host service): the lab copies the host's
# copies of the libraries it links against into the initramfs (qemu-system-x86 pulls them in already).
APT_PACKAGES="qemu-system-x86 busybox-static cpio kmod gzip xz-utils gcc make libc6-dev"
APT_PACKAGES="$APT_PACKAGES libglib2.0-0 libnuma1 libudev1 liburing2"

missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# apt-cache needs package lists to resolve the current kernel package (linux-image-amd64).
if [ -z "$(apt-cache depends linux-image-amd64 2>/dev/null | grep Depends)" ]; then
  $SUDO apt-get update -qq
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund
fi
echo "setup: ready" >&2
