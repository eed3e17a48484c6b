#!/bin/sh
# check-config-fixtures.sh PGSHADOWD DATA_DIR
#
# Runs `PGSHADOWD --check-config -c FILE` from DATA_DIR on every fixture:
#   bad-*.yaml   exit 2, stderr byte for byte equal to bad-*.expected
#   good-*.yaml  exit 0, stdout exactly "configuration OK"
# plus the repository's conf/pgshadow.yaml (must be OK), and two refusals made
# here rather than committed: a 10 MB file and a directory.
# Prints "N passed, N failed"; exits 1 on any failure.
set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 PGSHADOWD DATA_DIR" >&2
    exit 2
fi
case $1 in /*) pgshadowd=$1 ;; *) pgshadowd=$(pwd)/$1 ;; esac
data=$2
srcdir=${PGSHADOW_SRCDIR:-$(cd "$data/../.." && pwd)}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pgshadow-fixtures.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

passed=0
failed=0
ok() { passed=$((passed + 1)); }
ko() { failed=$((failed + 1)); echo "FAIL: $*"; }

# check_bad DIR FILE EXPECTED_FILE
check_bad() {
    (cd "$1" && "$pgshadowd" --check-config -c "$2" >"$tmp/out" 2>"$tmp/err")
    rc=$?
    if [ "$rc" -ne 2 ]; then
        ko "$2: exit code $rc, expected 2"
        sed 's/^/    /' "$tmp/err"
    elif ! cmp -s "$3" "$tmp/err"; then
        ko "$2: stderr differs from $(basename "$3") (--- expected, +++ actual)"
        diff -u "$3" "$tmp/err" | sed 's/^/    /'
    else
        ok
    fi
}

# check_good DIR FILE
check_good() {
    (cd "$1" && "$pgshadowd" --check-config -c "$2" >"$tmp/out" 2>"$tmp/err")
    rc=$?
    printf 'configuration OK\n' >"$tmp/want"
    if [ "$rc" -ne 0 ]; then
        ko "$2: exit code $rc, expected 0"
        sed 's/^/    /' "$tmp/err"
    elif ! cmp -s "$tmp/want" "$tmp/out"; then
        ko "$2: stdout is not exactly \"configuration OK\""
        diff -u "$tmp/want" "$tmp/out" | sed 's/^/    /'
    else
        ok
    fi
}

cd "$data" || exit 1
data=$(pwd)

for f in bad-*.yaml; do
    [ -e "$f" ] || continue
    if [ ! -f "${f%.yaml}.expected" ]; then
        ko "$f: no ${f%.yaml}.expected"
        continue
    fi
    check_bad "$data" "$f" "$data/${f%.yaml}.expected"
done

for f in good-*.yaml; do
    [ -e "$f" ] || continue
    check_good "$data" "$f"
done

check_good "$srcdir/conf" pgshadow.yaml

# Too big: refused on its size before it is read.
head -c 10485760 /dev/zero | tr '\0' '#' >"$tmp/bad-too-big.yaml"
printf 'bad-too-big.yaml: the file is larger than 1048576 bytes; refusing to read it\n' \
    >"$tmp/bad-too-big.expected"
check_bad "$tmp" bad-too-big.yaml "$tmp/bad-too-big.expected"

# Not a regular file.
mkdir "$tmp/bad-dir.yaml"
printf 'bad-dir.yaml: not a regular file\n' >"$tmp/bad-dir.expected"
check_bad "$tmp" bad-dir.yaml "$tmp/bad-dir.expected"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
