/*
 * daemon/leader_policy.c - leadership's decisions as pure functions
 * (leader.h): the next step of a daemon that wants the leader lock, and the
 * STATUS= words of its role.
 *
 * Owns nothing: a function of the state it is given (the clock is an input,
 * now_ms), unit-tested without a database (tests/unit/test-leader-policy.c).
 *
 * Invariants: the lock is never tried in a session whose settings have not
 * run (a lock held by a session without keepalives can outlive its client by
 * hours); a standby asks for nothing but its settings and the lock; a WAIT
 * always carries a delay > 0.
 */
#include "pgshadow/leader.h"

#include "pgshadow/util.h"

ps_leader_action ps_leader_next(const ps_leader_state *s, int64_t *wait_ms)
{
    *wait_ms = -1;
    if (s->stopping)
        return PS_LEADER_IDLE;
    if (s->main_up && !s->main_ready)
        return PS_LEADER_SETTINGS_MAIN;
    if (s->main_up && !s->leader) {
        if (s->terminate_wanted)
            return PS_LEADER_TERMINATE;
        if (s->now_ms >= s->lock_retry_at_ms)
            return PS_LEADER_LOCK;
    }
    if (s->work_up && !s->work_ready)
        return PS_LEADER_SETTINGS_WORK;
    if (s->main_up && !s->leader) {
        *wait_ms = s->lock_retry_at_ms - s->now_ms;
        return PS_LEADER_WAIT;
    }
    /* Leading, or main is down: only a connection event changes that. */
    return PS_LEADER_IDLE;
}

size_t ps_leader_format_status(ps_leader_role role, char *buf, size_t len)
{
    size_t pos = 0;
    if (len == 0)
        return 0;
    buf[0] = '\0';
    switch (role) {
    case PS_LEADER_ROLE_UNKNOWN:
        /* The words STATUS= always had here (the sync engine took the lock). */
        ps_appendf(buf, len, &pos, "sync: acquiring leader lock");
        break;
    case PS_LEADER_ROLE_STANDBY:
        ps_appendf(buf, len, &pos, "standby: another pgshadowd holds the lock");
        break;
    case PS_LEADER_ROLE_LEADER:
        ps_appendf(buf, len, &pos, "leader");
        break;
    }
    return pos;
}
