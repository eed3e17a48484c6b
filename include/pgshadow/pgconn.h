/*
 * pgconn.h - one non-blocking libpq connection driven by a libevent base.
 *
 * A ps_pgconn connects with PQconnectStartParams/PQconnectPoll (re-arming on
 * PQsocket() after every step), runs queued queries one at a time with
 * PQsendQueryParams (or PQsendQuery for parameterless multi-statement text),
 * and calls back once per query. It never blocks the loop.
 *
 * Resilience: when the connection fails or is lost, every queued and in-flight
 * query is completed with res == NULL (so callers can retry), the connection is
 * re-established with exponential backoff and jitter (100 ms .. 30 s), and on
 * each (re)connect the channels in its LISTEN registry are re-LISTENed before
 * the on_up callback runs. on_up is the "resync" hook: notifications may have
 * been lost while down. Keepalives and tcp_user_timeout are added to the
 * conninfo (the user's own values win), and an idle connection runs a cheap
 * liveness query every liveness_interval_ms; one that does not answer within
 * liveness_timeout_ms is treated as lost.
 *
 * Notifications are drained (PQnotifies) after every read and delivered to
 * on_notify.
 *
 * Name resolution never blocks either: libpq would call getaddrinfo() inside
 * PQconnectStartParams, so when the conninfo (or PGHOST) names one host by a
 * DNS name and gives no hostaddr, the connection resolves it first with its
 * own evdns_base (on the same event base; /etc/resolv.conf and /etc/hosts
 * read when first needed) and connects with hostaddr=<every address found>
 * and host=<the name repeated>, so libpq still verifies TLS certificates and
 * looks up the password file by name. The connect timeout covers resolving
 * and connecting together; a name that does not resolve is a failed attempt
 * (retried with backoff). Limitations, where libpq still resolves (blocking):
 * a comma list of hosts (libpq's fail-over logic is kept as it is), and a
 * host that only a service file supplies (service= given, or PGSERVICE set,
 * without host= in the conninfo).
 */
#ifndef PGSHADOW_PGCONN_H
#define PGSHADOW_PGCONN_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <libpq-fe.h>

typedef struct ps_pgconn ps_pgconn;

/* Called once per query. res is the last PGresult of the query (the first
 * failing one if any failed), owned by the connection: valid only during the
 * call (do not PQclear). res == NULL means the query could not run because the
 * connection was lost or closed; the caller decides whether to retry. */
typedef void (*ps_pg_result_cb)(ps_pgconn *c, const PGresult *res, void *arg);

typedef struct ps_pgconn_callbacks {
    /* Connected, LISTENs re-issued; run resync here. May be NULL. */
    void (*on_up)(ps_pgconn *c, void *arg);
    /* Lost (or failed to connect); reason is redacted. May be NULL. */
    void (*on_down)(ps_pgconn *c, const char *reason, void *arg);
    /* A NOTIFY arrived. May be NULL. */
    void (*on_notify)(ps_pgconn *c, const char *channel, const char *payload, void *arg);
} ps_pgconn_callbacks;

typedef struct ps_pgconn_options {
    const char *name;            /* for logs: "main", "listen" */
    const char *conninfo;        /* copied */
    const char *application_name; /* default "pgshadowd" */
    int64_t liveness_interval_ms; /* default 10000; 0 = off */
    int64_t liveness_timeout_ms;  /* default 5000 */
    int64_t backoff_base_ms;      /* default 100 */
    int64_t backoff_cap_ms;       /* default 30000 */
    int64_t connect_timeout_ms;   /* default 10000 */
} ps_pgconn_options;

/* Fill *o with the documented defaults (liveness on at 10 s / 5 s, backoff
 * 100 ms .. 30 s, connect timeout 10 s, application_name "pgshadowd"); the
 * caller then sets name and conninfo. In a zero-initialised struct every other
 * 0 also means "default", but liveness_interval_ms == 0 means "off". */
void ps_pgconn_options_init(ps_pgconn_options *o);

/* Create (does not connect yet). Returns NULL on allocation failure.
 * Queries queued before the connection is up wait for it; if that attempt
 * fails or the connection is lost before they complete, they get res == NULL. */
ps_pgconn *ps_pgconn_new(struct event_base *base, const ps_pgconn_options *opts,
                         const ps_pgconn_callbacks *cbs, void *arg);

/* Start connecting (asynchronously). */
int ps_pgconn_start(ps_pgconn *c);

/* Queue a query. params may be NULL when nparams == 0; with no params the text
 * may hold several statements. Returns 0, or -ENOTCONN when the connection is
 * closed for good (after ps_pgconn_close), -ENOMEM. The callback always runs
 * exactly once, later (never from inside this call). */
int ps_pgconn_query(ps_pgconn *c, const char *sql, int nparams, const char *const *params,
                    ps_pg_result_cb cb, void *arg);

/* Like ps_pgconn_query, but ahead of everything already queued. Called from
 * the result callback of a query, it is the very next query sent: a
 * sequence of statements (one transaction: BEGIN, ..., COMMIT) issued this
 * way, each from the previous one's callback, has nothing of other modules
 * in between. If the connection is lost meanwhile, the server rolls the
 * open transaction back and the callback gets res == NULL. */
int ps_pgconn_query_next(ps_pgconn *c, const char *sql, int nparams, const char *const *params,
                         ps_pg_result_cb cb, void *arg);

/* Add a channel to the LISTEN registry (issued now if connected, and after every
 * reconnect). The name is quoted with PQescapeIdentifier. */
int ps_pgconn_listen(ps_pgconn *c, const char *channel);

bool ps_pgconn_is_up(const ps_pgconn *c);
bool ps_pgconn_is_idle(const ps_pgconn *c); /* up, nothing queued or in flight */
unsigned ps_pgconn_reconnects(const ps_pgconn *c); /* successful connects after the first */
/* The id of the server session up now, 0 when not up. Every successful
 * connect of any connection in the process gets a new, larger id, so an id
 * never repeats: tie state that lives in a session (its SET settings, a
 * session advisory lock) to it. A connection's address and reconnect count
 * do repeat: a new connection may be allocated where a freed one was. */
uint64_t ps_pgconn_session_id(const ps_pgconn *c);
const char *ps_pgconn_name(const ps_pgconn *c);
PGconn *ps_pgconn_raw(ps_pgconn *c); /* for PQescape*; NULL when down */

/* A result's error field (PG_DIAG_SQLSTATE, PG_DIAG_MESSAGE_PRIMARY...), or
 * dflt when the result has none or an empty one: for log lines. */
const char *ps_pgconn_errfield(const PGresult *res, int field, const char *dflt);

/* Drop the connection now and reconnect after backoff (used when a caller sees
 * a fatal protocol state). Pending callbacks (res == NULL) and on_down run
 * before this returns; it may be called from inside any callback. */
void ps_pgconn_reset(ps_pgconn *c, const char *why);

/* Close for good: pending callbacks get res == NULL before this returns (no
 * on_down); no reconnect. */
void ps_pgconn_close(ps_pgconn *c);
/* Closes first; NULL is a no-op. Safe from inside the connection's own
 * callbacks: the memory is released when the outermost handler returns. A
 * DNS lookup still in flight is abandoned; libevent delivers its answer on a
 * later loop pass, which frees it: run the loop once more (EVLOOP_NONBLOCK)
 * before event_base_free() or that small allocation leaks. */
void ps_pgconn_free(ps_pgconn *c);

/* Build the keyword/value arrays for PQconnectStartParams: our defaults
 * (keepalives, tcp_user_timeout, connect_timeout, application_name) first, then
 * "dbname" = conninfo with expand_dbname so the user's settings override ours.
 * Exposed for unit tests. Returns the number of pairs written (<= max-1; the
 * arrays are NULL-terminated). */
int ps_pgconn_build_params(const ps_pgconn_options *opts, const char **keys, const char **vals,
                           int max, char *scratch, int scratch_len);

#endif
