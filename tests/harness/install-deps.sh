#!/usr/bin/env bash
# install-deps.sh - make sure the Debian packages pgshadow builds, tests and
# demonstrates with are present; installs the missing ones (as root) with apt.
# Usage: install-deps.sh [--bench]   (--bench adds pg_repack for bench/run)
set -euo pipefail

pkgs=(meson ninja-build pkg-config gcc python3 libpq-dev libevent-dev libssl-dev
      libyaml-dev libcmocka-dev postgresql postgresql-contrib)
if [ "${1:-}" = "--bench" ]; then
  pkgs+=(postgresql-15-repack procps time)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "install-deps.sh: missing Debian packages: ${missing[*]}" >&2
  echo "install-deps.sh: run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "install-deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# postgresql's maintainer scripts try to start a cluster; no init system is fine
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
