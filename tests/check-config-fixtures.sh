#!/bin/sh
# check-config-fixtures.sh PGSHADOWD DATA_DIR
#
# Runs `PGSHADOWD --check-config -c FILE` from DATA_DIR on every fixture:
#   bad-*.yaml   exit 2, stderr byte for byte equal to bad-*.expected
#   good-*.yaml  exit 0, stdout exactly "configuration OK"
# plus the repository's conf/pgshadow.yaml (must be OK), and refusals made
# here rather than committed: a 10 MB file, a directory, files writable by
# group or others and a directory others can write (git keeps no such mode).
# The fixtures are checked from a copy made under umask 022: a checkout made
# under umask 002 has group-writable files, which the loader refuses.
# No bad-*.yaml or no good-*.yaml in DATA_DIR (a wrong path, a lost glob) is a
# failure, as is a bad-*.expected without its bad-*.yaml.
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

umask 022
mkdir "$tmp/data" "$tmp/conf" || exit 1
cp "$data"/*.yaml "$data"/*.expected "$tmp/data/" || { echo "FAIL: no fixtures to copy from $data"; exit 1; }
cp "$srcdir/conf/pgshadow.yaml" "$tmp/conf/" || exit 1
data=$tmp/data
cd "$data" || exit 1

n_bad=0
for f in bad-*.yaml; do
    [ -e "$f" ] || continue
    n_bad=$((n_bad + 1))
    if [ ! -f "${f%.yaml}.expected" ]; then
        ko "$f: no ${f%.yaml}.expected"
        continue
    fi
    check_bad "$data" "$f" "$data/${f%.yaml}.expected"
done
[ "$n_bad" -gt 0 ] || ko "no bad-*.yaml fixtures in $data"

for f in bad-*.expected; do
    [ -e "$f" ] || continue
    [ -f "${f%.expected}.yaml" ] || ko "$f: no ${f%.expected}.yaml"
done

n_good=0
for f in good-*.yaml; do
    [ -e "$f" ] || continue
    n_good=$((n_good + 1))
    check_good "$data" "$f"
done
[ "$n_good" -gt 0 ] || ko "no good-*.yaml fixtures in $data"

check_good "$tmp/conf" pgshadow.yaml

# Too big: refused on its size before it is read.
head -c 10485760 /dev/zero | tr '\0' '#' >"$tmp/bad-too-big.yaml"
printf 'bad-too-big.yaml: the file is larger than 1048576 bytes; refusing to read it\n' \
    >"$tmp/bad-too-big.expected"
check_bad "$tmp" bad-too-big.yaml "$tmp/bad-too-big.expected"

# Not a regular file.
mkdir "$tmp/bad-dir.yaml"
printf 'bad-dir.yaml: not a regular file\n' >"$tmp/bad-dir.expected"
check_bad "$tmp" bad-dir.yaml "$tmp/bad-dir.expected"

# Writable by group or others: whoever can write it can change the conninfo
# and the SQL of columns:. Refused, naming the file and its mode.
for mode in 0664 0646 0620; do
    f=bad-writable-$mode.yaml
    cp "$data/good-minimal.yaml" "$tmp/$f" && chmod "$mode" "$tmp/$f"
    printf '%s: the file is writable by group or others (mode %s); whoever can write it can change database.conninfo and the SQL of columns: (chmod go-w %s)\n' \
        "$f" "$mode" "$f" >"$tmp/${f%.yaml}.expected"
    check_bad "$tmp" "$f" "$tmp/${f%.yaml}.expected"
done

# In a directory others can write, where the file can be replaced: refused;
# the same directory sticky (as /tmp) is fine.
mkdir "$tmp/open"
cp "$data/good-minimal.yaml" "$tmp/open/in-open-dir.yaml"
chmod 0777 "$tmp/open"
printf 'in-open-dir.yaml: its directory . is writable by group or others (mode 0777) and not sticky; whoever can write it can replace the file (chmod go-w .)\n' \
    >"$tmp/in-open-dir.expected"
check_bad "$tmp/open" in-open-dir.yaml "$tmp/in-open-dir.expected"
chmod 1777 "$tmp/open"
check_good "$tmp/open" in-open-dir.yaml
chmod 0700 "$tmp/open"

echo "$n_bad bad and $n_good good fixtures; $passed passed, $failed failed"
[ "$failed" -eq 0 ]
