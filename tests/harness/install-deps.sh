#!/usr/bin/env bash
# install-deps.sh - make sure the Debian packages pgshadow builds, tests and
# demonstrates with are present; installs the missing ones (as root) with apt.
# Usage: install-deps.sh [--bench]
#   --bench adds what bench/run needs beyond that: openssl (the throwaway
#   cluster's TLS certificates), procps, time, and pg_repack for the
#   PostgreSQL major version the harness will run (pgcluster.sh's choice:
#   $PGBIN, else the newest /usr/lib/postgresql/N/bin), i.e.
#   postgresql-N-repack, checked afterwards: the pg_repack client in that bin
#   directory and pg_repack.control in that server's extension directory.
set -euo pipefail

bench=0
case "${1:-}" in
  --bench) bench=1 ;;
  "") ;;
  *) echo "usage: install-deps.sh [--bench]" >&2; exit 2 ;;
esac

pkgs=(meson ninja-build pkg-config gcc python3 libpq-dev libevent-dev libssl-dev
      libyaml-dev libcmocka-dev postgresql postgresql-contrib)
[ $bench = 1 ] && pkgs+=(openssl procps time)

updated=0
install_missing() {  # install_missing PKG...: apt-get install the ones not installed
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps.sh: missing Debian packages: ${missing[*]}" >&2
    echo "install-deps.sh: run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if [ $updated = 0 ]; then apt-get update -qq >&2; updated=1; fi
  # postgresql's maintainer scripts try to start a cluster; no init system is fine
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

install_missing "${pkgs[@]}"
[ $bench = 1 ] || exit 0

# pg_repack must match the server major version: the same choice as
# tests/harness/pgcluster.sh makes
pgbin=${PGBIN:-}
if [ -z "$pgbin" ]; then
  for v in 17 16 15 14 13; do
    if [ -x /usr/lib/postgresql/$v/bin/pg_ctl ]; then pgbin=/usr/lib/postgresql/$v/bin; break; fi
  done
fi
[ -n "$pgbin" ] && [ -x "$pgbin/pg_config" ] \
  || { echo "install-deps.sh: no PostgreSQL server binaries (pg_config) found${PGBIN:+ in PGBIN=$PGBIN}" >&2; exit 1; }
major=$("$pgbin/pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
case "$major" in ''|*[!0-9]*) echo "install-deps.sh: cannot read the major version from $pgbin/pg_config" >&2; exit 1 ;; esac
install_missing "postgresql-$major-repack"
sharedir=$("$pgbin/pg_config" --sharedir)
[ -x "$pgbin/pg_repack" ] && [ -f "$sharedir/extension/pg_repack.control" ] || {
  echo "install-deps.sh: postgresql-$major-repack is installed but $pgbin/pg_repack or $sharedir/extension/pg_repack.control is missing" >&2
  exit 1
}
