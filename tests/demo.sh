#!/usr/bin/env bash
# tests/demo.sh - the README's main job: pgshadow at work on a throwaway
# PostgreSQL, at demo speed.
#
# What it shows today (the sync engine arrives with issue 4):
#   1. a throwaway cluster with the AIDIS example schema and generated data
#   2. `pgshadowctl check` (preflight) and `pgshadowctl install`
#   3. `pgshadowd` starting under a test-owned NOTIFY_SOCKET: READY=1, STATUS=
#   4. application writes captured into pgshadow.change_log, the daemon woken
#      by NOTIFY, and the dashboard's lag being the oldest pending change's age
#   5. read routing from SQL and from `pgshadowctl route`
#   6. SIGHUP reload, SIGTERM clean stop, `pgshadowctl uninstall`
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

tests/harness/install-deps.sh
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "building pgshadow"
[ -f build-demo/build.ninja ] || meson setup build-demo --buildtype=release -Dtests=false >/dev/null
ninja -C build-demo >/dev/null
ctl=$root/build-demo/src/pgshadowctl
daemon=$root/build-demo/src/pgshadowd

work=$(mktemp -d /tmp/pgshadow-demo.XXXXXX)
dpid=
cleanup() {
  [ -n "$dpid" ] && kill -TERM "$dpid" 2>/dev/null || true
  tests/harness/pgcluster.sh stop "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

step "starting a throwaway PostgreSQL"
eval "$(tests/harness/pgcluster.sh start "$work/pg")"
psql() { command psql -X -v ON_ERROR_STOP=1 "$PGSHADOW_TEST_CONNINFO" "$@"; }
psql -q -c "select version()" -At

step "loading the AIDIS example schema (5 primary tables + stricter *_shadow tables) and generated data"
psql -q -f sql/example-aidis.sql
psql -q <<'SQL'
select setseed(0.42);
insert into projects (name, description)
  select 'project-' || g, 'demo project ' || g from generate_series(1, 20) g;
insert into sessions (project_id, agent_type, title)
  select (select id from projects order by name offset (g % 20) limit 1), 'claude', 'session ' || g
  from generate_series(1, 200) g;
insert into contexts (project_id, context_type, content, relevance_score, tags)
  select (select id from projects order by name offset (g % 20) limit 1), 'code',
         repeat(md5(g::text), 20), random(), array['demo', 't' || (g % 7)]
  from generate_series(1, 2000) g;
SQL
psql -At -c "select 'contexts rows: ' || count(*) from contexts"

cat > "$work/pgshadow.yaml" <<YAML
database:
  conninfo: "$PGSHADOW_TEST_CONNINFO"
migration:
  id: p2_3_shadow_migration
  tables:
    - name: projects
    - name: sessions
    - name: contexts
    - name: analytics_events
    - name: tasks
log:
  level: info
metrics:
  listen: ""
YAML

step "pgshadowctl check (preflight)"
"$ctl" -c "$work/pgshadow.yaml" check || true

step "pgshadowctl install"
"$ctl" -c "$work/pgshadow.yaml" install

step "starting pgshadowd (systemd notify messages are read from a demo-owned socket)"
python3 - "$work/notify.sock" > "$work/notify.log" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    msg = s.recv(4096).decode()
    print(msg.replace("\n", " | "), flush=True)
PY
npid=$!
for _ in $(seq 50); do [ -S "$work/notify.sock" ] && break; sleep 0.1; done
NOTIFY_SOCKET=$work/notify.sock "$daemon" -c "$work/pgshadow.yaml" --log-level debug 2> "$work/pgshadowd.log" &
dpid=$!
for _ in $(seq 100); do grep -q READY=1 "$work/notify.log" 2>/dev/null && break; sleep 0.1; done
sleep 1
echo "notify socket received:"; sed 's/^/    /' "$work/notify.log"

step "application writes: they are captured in the change log and wake the daemon"
psql -q <<'SQL'
begin;
update contexts set relevance_score = 0.5 where id in (select id from contexts order by id limit 10);
insert into projects (name) values ('captured-project');
delete from sessions where id in (select id from sessions order by id limit 3);
commit;
SQL
sleep 1
psql -c "select t.table_name, count(*) as pending_keys from pgshadow.change_log c join pgshadow.tables t using (table_id) group by 1 order by 1"
grep -E 'notify|connected|resync' "$work/pgshadowd.log" | sed 's/^/    pgshadowd: /' | tail -5

step "the dashboard (cheap to poll: no count(*) over the tables)"
psql -c "select * from public.shadow_migration_dashboard"
psql -c "select * from public.migration_success_metrics"

step "read routing: 20% of contexts keys read from the shadow"
psql -q -c "update pgshadow.flags set value = 20 where name = 'read_from_shadow_contexts'" 2>/dev/null \
  || psql -q -c "select pgshadow.set_read_percent('contexts', 20)"
psql -At -c "select 'SQL:  contexts:42 -> ' || case when pgshadow.read_from_shadow('contexts', '42') then 'shadow' else 'primary' end"
echo "C:    contexts:42 -> $("$ctl" -c "$work/pgshadow.yaml" route contexts 42)"

step "SIGHUP reload, then SIGTERM"
kill -HUP "$dpid"; sleep 1
kill -TERM "$dpid"; wait "$dpid" && echo "pgshadowd exited with status 0"; dpid=
kill "$npid" 2>/dev/null || true
echo "notify socket received:"; sed 's/^/    /' "$work/notify.log" | tail -4

step "pgshadowctl uninstall (primary tables stay exactly as they were)"
"$ctl" -c "$work/pgshadow.yaml" uninstall
psql -At -c "select 'pgshadow schema present: ' || exists(select 1 from pg_namespace where nspname = 'pgshadow')"
step "done"
