/*
 * modules.h - the daemon's module table (src/daemon/modules.c): the ordered
 * list of ps_daemon_module entries and the one place that calls their hooks,
 * so the order rules (create and speak in table order, free in reverse,
 * leadership gained in order and lost in reverse, each change told once)
 * hold for every module and are unit-tested without a loop or a database
 * (tests/unit/test-modules.c). The daemon embeds one ps_modules and passes
 * itself as d; the table never dereferences d.
 */
#ifndef PGSHADOW_MODULES_H
#define PGSHADOW_MODULES_H

#include <stdbool.h>
#include <stddef.h>

#include "pgshadow/daemon.h"

typedef struct ps_modules {
    struct {
        const ps_daemon_module *m;
        void *arg;
    } v[PS_DAEMON_MAX_MODULES];
    size_t n;
    bool leader; /* what on_leader last told them */
} ps_modules;

/* Create m (its create hook, if any) and append it. 0, -ENOSPC when full,
 * or the create hook's -errno (nothing appended). */
int ps_modules_add(ps_modules *t, ps_daemon *d, const ps_daemon_module *m);

/* Free every module in reverse order and empty the table. */
void ps_modules_free(ps_modules *t);

void ps_modules_db_up(ps_modules *t, ps_daemon *d);
void ps_modules_notify(ps_modules *t, ps_daemon *d, const char *channel, const char *payload);
void ps_modules_reload(ps_modules *t, ps_daemon *d, const ps_config *old_cfg,
                       const ps_config *new_cfg);
void ps_modules_stop(ps_modules *t, ps_daemon *d);

/* Tell every module that leadership is now `leader`: gained in table order,
 * lost in reverse (a module may depend on one set up before it, so it stops
 * first). Nothing when it is what they were last told (they start as not
 * leaders). Returns true when the modules were told. */
bool ps_modules_leader(ps_modules *t, ps_daemon *d, bool leader);

/* Append "; <words>" to buf at *pos for each module that has words, in table
 * order (ps_appendf semantics: never past len). */
void ps_modules_status(ps_modules *t, ps_daemon *d, char *buf, size_t len, size_t *pos);

void ps_modules_collect(ps_modules *t, ps_daemon *d, const ps_metric_sink *sink);

#endif
