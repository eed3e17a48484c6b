/*
 * commands.c - the commands the sync engine carries out through the command
 * queue (control.h): quarantine-retry, which `pgshadowctl quarantine retry
 * ID|all` queues.
 *
 * Invariants: a handler only decides (refuse, or the SQL to run in the
 * command's transaction); the command's JSON arguments reach SQL as one
 * parameter, parsed there.
 */
#include <stdio.h>
#include <string.h>

#include "pgshadow/control.h"
#include "pgshadow/sync.h"

static void retry_result(const PGresult *res, char *out, size_t len)
{
    snprintf(out, len, "queued %s key(s) for another try",
             PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) ? PQgetvalue(res, 0, 0) : "0");
}

/* {"id": N} one quarantined key (an error when it is not quarantined),
 * {"all": true} every one; "reason" is the event's why. */
static int quarantine_retry(const ps_control_cmd *cmd, ps_control_action *act, char *why, size_t whylen,
                            void *arg)
{
    (void)arg;
    if (!strstr(cmd->args, "\"all\"") && !strstr(cmd->args, "\"id\"")) {
        snprintf(why, whylen, "quarantine-retry takes {\"id\": N} or {\"all\": true}, not %s", cmd->args);
        return 1;
    }
    act->sql = "SELECT pgshadow.quarantine_retry(CASE WHEN coalesce(($1::jsonb ->> 'all')::boolean, false) "
               "THEN NULL ELSE ($1::jsonb ->> 'id')::bigint END)";
    act->nparams = 1;
    act->params[0] = cmd->args;
    act->format = retry_result;
    return 0;
}

int ps_sync_register_commands(ps_control *c)
{
    return c ? ps_control_register(c, "quarantine-retry", quarantine_retry, NULL) : 0;
}
