/*
 * daemon/modules.c - the module table (modules.h): every call from the
 * daemon into a feature module goes through here.
 *
 * Owns the table: which modules, in which order, each one's arg (what its
 * create hook built, freed by its free hook), and the leadership the modules
 * were last told.
 *
 * Invariants:
 *  - a module is in the table only when its create hook succeeded, so every
 *    module freed was created, exactly once;
 *  - table order for everything except free and leadership lost (reverse):
 *    a module may rely on those before it, so they are there first and gone
 *    last;
 *  - on_leader is called only on a change, so a module can treat gained and
 *    lost as edges (start work, drop work) without keeping its own copy.
 */
#include "pgshadow/modules.h"

#include <errno.h>
#include <string.h>

#include "pgshadow/log.h"
#include "pgshadow/util.h"

#define STATUS_PART_MAX 128 /* one module's words */

int ps_modules_add(ps_modules *t, ps_daemon *d, const ps_daemon_module *m)
{
    if (t->n >= PS_DAEMON_MAX_MODULES)
        return -ENOSPC;
    void *arg = NULL;
    if (m->create) {
        int r = m->create(d, &arg);
        if (r < 0)
            return r;
    }
    t->v[t->n].m = m;
    t->v[t->n].arg = arg;
    t->n++;
    return 0;
}

void ps_modules_free(ps_modules *t)
{
    while (t->n > 0) {
        t->n--;
        if (t->v[t->n].m->free)
            t->v[t->n].m->free(t->v[t->n].arg);
    }
    memset(t, 0, sizeof *t);
}

void ps_modules_db_up(ps_modules *t, ps_daemon *d)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].m->on_db_up)
            t->v[i].m->on_db_up(d, t->v[i].arg);
}

void ps_modules_notify(ps_modules *t, ps_daemon *d, const char *channel, const char *payload)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].m->on_notify)
            t->v[i].m->on_notify(d, channel, payload, t->v[i].arg);
}

void ps_modules_reload(ps_modules *t, ps_daemon *d, const ps_config *old_cfg,
                       const ps_config *new_cfg)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].m->on_reload)
            t->v[i].m->on_reload(d, old_cfg, new_cfg, t->v[i].arg);
}

void ps_modules_stop(ps_modules *t, ps_daemon *d)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].m->on_stop)
            t->v[i].m->on_stop(d, t->v[i].arg);
}

bool ps_modules_leader(ps_modules *t, ps_daemon *d, bool leader)
{
    if (t->leader == leader)
        return false;
    t->leader = leader;
    for (size_t k = 0; k < t->n; k++) {
        size_t i = leader ? k : t->n - 1 - k;
        if (!t->v[i].m->on_leader)
            continue;
        ps_log_debug("leadership %s: telling module %s", leader ? "gained" : "lost",
                     t->v[i].m->name);
        t->v[i].m->on_leader(d, leader, t->v[i].arg);
    }
    return true;
}

void ps_modules_status(ps_modules *t, ps_daemon *d, char *buf, size_t len, size_t *pos)
{
    for (size_t i = 0; i < t->n && *pos + 3 < len; i++) {
        if (!t->v[i].m->status)
            continue;
        char part[STATUS_PART_MAX];
        part[0] = '\0';
        if (t->v[i].m->status(d, part, sizeof part, t->v[i].arg) == 0)
            continue;
        ps_appendf(buf, len, pos, "; %s", part);
    }
}

void ps_metric_counters(const ps_metric_sink *sink, const void *stats,
                        const ps_metric_counter *counters, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sink->sample(sink->ctx, counters[i].name, PS_METRIC_COUNTER,
                     (double)*(const uint64_t *)((const char *)stats + counters[i].off),
                     counters[i].help);
}

void ps_modules_collect(ps_modules *t, ps_daemon *d, const ps_metric_sink *sink)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].m->collect)
            t->v[i].m->collect(d, sink, t->v[i].arg);
}
