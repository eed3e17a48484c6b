#!/usr/bin/env bash
# pgcluster.sh - a throwaway PostgreSQL cluster for tests, demo and benchmarks.
#
#   pgcluster.sh start DIR [--tuned]   initdb + start; prints `export ...` lines
#   pgcluster.sh stop DIR              stop (fast) and remove DIR
#   pgcluster.sh restart DIR [MODE]    pg_ctl restart -m MODE (default immediate)
#   pgcluster.sh kill DIR              stop -m immediate, leave DIR (crash)
#   pgcluster.sh startonly DIR         start an existing, stopped cluster
#   pgcluster.sh env DIR               print the `export ...` lines again
#
# The cluster listens on a unix socket in DIR/sock (trust authentication) and
# on 127.0.0.1 with TLS only (a throwaway CA and server certificate made with
# openssl in DIR/tls; scram-sha-256 over TLS, no plain TCP), on a free port.
# Role pgshadow_pw (LOGIN, password in DIR/pgpass, mode 0600) must always
# authenticate with scram-sha-256, also on the unix socket: tests use it to
# prove that passwords never reach a log. As root it runs as the `postgres` OS user (initdb refuses
# root), so DIR is made accessible to that user. The exported variables:
#   PGSHADOW_TEST_CLUSTER   DIR
#   PGSHADOW_TEST_PGHOST    DIR/sock
#   PGSHADOW_TEST_PGPORT    the port
#   PGSHADOW_TEST_CONNINFO  "host=DIR/sock port=PORT dbname=pgshadow_test user=postgres"
#   PGSHADOW_TEST_PGBIN     PostgreSQL's bin directory
#   PGSHADOW_TEST_TLS_CONNINFO  "host=127.0.0.1 port=PORT dbname=pgshadow_test
#                           user=pgshadow_pw sslmode=verify-full sslrootcert=DIR/tls/ca.crt"
#                           (host name in the certificate: localhost and 127.0.0.1)
#   PGSHADOW_TEST_PGPASSFILE  DIR/pgpass, holding pgshadow_pw's password
set -euo pipefail

cmd=${1:?usage: pgcluster.sh start|stop|restart|kill|startonly|env DIR}
dir=${2:?usage: pgcluster.sh $cmd DIR}

pgbin=${PGBIN:-}
if [ -z "$pgbin" ]; then
  for v in 17 16 15 14 13; do
    if [ -x /usr/lib/postgresql/$v/bin/pg_ctl ]; then pgbin=/usr/lib/postgresql/$v/bin; break; fi
  done
fi
[ -n "$pgbin" ] && [ -x "$pgbin/pg_ctl" ] || { echo "pgcluster.sh: no PostgreSQL server binaries found (install postgresql)" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

print_env() {
  local port; port=$(cat "$dir/port")
  echo "export PGSHADOW_TEST_CLUSTER='$dir'"
  echo "export PGSHADOW_TEST_PGHOST='$dir/sock'"
  echo "export PGSHADOW_TEST_PGPORT='$port'"
  echo "export PGSHADOW_TEST_CONNINFO='host=$dir/sock port=$port dbname=pgshadow_test user=postgres'"
  echo "export PGSHADOW_TEST_PGBIN='$pgbin'"
  echo "export PGSHADOW_TEST_TLS_CONNINFO='host=127.0.0.1 port=$port dbname=pgshadow_test user=pgshadow_pw sslmode=verify-full sslrootcert=$dir/tls/ca.crt'"
  echo "export PGSHADOW_TEST_PGPASSFILE='$dir/pgpass'"
}

make_tls() { # a throwaway CA and a server certificate for localhost/127.0.0.1
  local t=$dir/tls
  mkdir -p "$t"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pgshadow test CA" \
    -keyout "$t/ca.key" -out "$t/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$t/server.key" -out "$t/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$t/san.ext"
  openssl x509 -req -in "$t/server.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial \
    -days 2 -extfile "$t/san.ext" -out "$t/server.crt" 2>/dev/null
  chmod 600 "$t/server.key"
  [ "$(id -u)" = 0 ] && chown -R postgres: "$t"
  return 0
}

port_busy() { (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; }

pgctl() { as_pg "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" "$@"; }

case "$cmd" in
start)
  mkdir -p "$dir/sock"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$dir"
    # every parent must be traversable by postgres
    p=$dir; while [ "$p" != / ]; do chmod o+x "$p" 2>/dev/null || true; p=$(dirname "$p"); done
  fi
  as_pg "$pgbin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  make_tls
  # first match wins: the password role always needs its password; TCP is TLS only;
  # replication ("all" never matches it) for postgres on the socket only, so a
  # test can make a streaming standby with pg_basebackup (test-standby.c)
  {
    echo "local all pgshadow_pw scram-sha-256"
    echo "local all all trust"
    echo "local replication postgres trust"
    echo "hostssl all all 127.0.0.1/32 scram-sha-256"
  } > "$dir/data/pg_hba.conf"
  # a free port number (TCP on 127.0.0.1 and the socket file name)
  port=$(( 20000 + RANDOM % 20000 ))
  while [ -e "$dir/sock/.s.PGSQL.$port" ] || port_busy $port; do port=$((port + 1)); done
  echo "$port" > "$dir/port"
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "ssl = on"
    echo "ssl_cert_file = '$dir/tls/server.crt'"
    echo "ssl_key_file = '$dir/tls/server.key'"
    echo "password_encryption = 'scram-sha-256'"
    echo "port = $port"
    echo "unix_socket_directories = '$dir/sock'"
    echo "fsync = on"
    echo "max_connections = 100"
    echo "shared_buffers = 128MB"
    echo "max_wal_size = 2GB"
    echo "log_min_messages = warning"
    echo "log_line_prefix = '%m [%p] '"
    if [ "${3:-}" = "--tuned" ]; then
      echo "shared_buffers = 1GB"
      echo "synchronous_commit = on"
      echo "checkpoint_timeout = 30min"
      echo "max_wal_size = 8GB"
    fi
  } >> "$dir/data/postgresql.conf"
  pgctl -w -t 60 start >/dev/null || { cat "$dir/postgres.log" >&2; exit 1; }
  as_pg "$pgbin/psql" -h "$dir/sock" -p "$port" -U postgres -d postgres -qAt \
    -c "CREATE DATABASE pgshadow_test" >/dev/null
  # a random password, only ever in the 0600 passfile and the server's verifier
  pw=$(openssl rand -hex 16)
  printf '*:*:*:pgshadow_pw:%s\n' "$pw" > "$dir/pgpass"
  chmod 600 "$dir/pgpass"
  # (on stdin, not in argv, where ps would show it)
  echo "CREATE ROLE pgshadow_pw LOGIN PASSWORD '$pw'" |
    as_pg "$pgbin/psql" -h "$dir/sock" -p "$port" -U postgres -d postgres -qAt >/dev/null
  print_env
  ;;
env)
  print_env
  ;;
restart)
  mode=${3:-immediate}
  pgctl -w -t 60 -m "$mode" restart >/dev/null
  ;;
kill)
  pgctl -m immediate stop >/dev/null
  ;;
startonly)
  pgctl -w -t 60 start >/dev/null
  ;;
stop)
  # standbys a test made of this cluster (test-standby.c lists each one in
  # DIR/standbys): a test killed before its teardown leaves them running
  if [ -f "$dir/standbys" ]; then
    while read -r s; do
      case "$s" in /tmp/itest-standby-*) ;; *) continue ;; esac
      if [ -f "$s/data/postmaster.pid" ]; then
        as_pg "$pgbin/pg_ctl" -D "$s/data" -m immediate stop >/dev/null 2>&1 || true
      fi
      rm -rf "$s"
    done < "$dir/standbys"
  fi
  if [ -d "$dir/data" ]; then pgctl -m fast stop >/dev/null 2>&1 || true; fi
  rm -rf "$dir"
  ;;
*)
  echo "pgcluster.sh: unknown command $cmd" >&2; exit 2 ;;
esac
