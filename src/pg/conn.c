/*
 * pg/conn.c - one non-blocking libpq connection driven by a libevent base.
 *
 * Owns the PGconn, its socket event, the timers (connect timeout, reconnect,
 * idle liveness, liveness timeout), the FIFO of queries and the LISTEN
 * registry.  Everything that touches libpq or runs a caller's callback happens
 * inside one of our libevent handlers, never inside a public call that merely
 * queues work (ps_pgconn_query, ps_pgconn_listen, ps_pgconn_start); only
 * ps_pgconn_reset, ps_pgconn_close and ps_pgconn_free complete pending
 * queries synchronously, because they drop the connection on the spot.
 *
 * Invariants:
 *  - at most one query is in flight (c->inflight); it left c->queue when sent;
 *  - every query's callback runs exactly once, with a result or with NULL;
 *  - a socket event is always deleted before PQfinish() closes its fd, and it
 *    is re-created after every PQconnectPoll() step because libpq may close
 *    the socket and open a new one (another host, or SSL/GSS fallback) that
 *    can even get the same fd number;
 *  - c->gen changes whenever the PGconn is torn down, so a handler that ran a
 *    callback can tell that the world changed under it and stop;
 *  - every successful connect, of any connection in the process, gets a new
 *    session id from one counter that only grows: callers that tie state to
 *    a server session (its settings, a session lock) compare ids, never the
 *    connection's address and reconnect count, which repeat when a freed
 *    connection's memory is reused;
 *  - the struct is freed only by the outermost entry (c->busy == 0), so a
 *    callback may call ps_pgconn_free() on its own connection;
 *  - a DNS host name is resolved with our own evdns_base before libpq sees it
 *    (libpq's getaddrinfo() would block the loop); the lookup of the current
 *    attempt is c->dns_req, and teardown() orphans it (dns_req->c = NULL), so
 *    an answer that arrives after its attempt ended, or after the struct was
 *    freed (evdns delivers abandoned answers later, from the loop), touches
 *    only the small request it owns.
 *
 * Why one file of ~1,200 lines: connecting, resolving, the query FIFO, the
 * LISTEN registry and liveness are one state machine over one struct, and
 * the invariants above hold across all of them (every teardown path must
 * complete the queue, orphan the lookup and bump gen together).
 *
 * Size: over 800 lines on purpose: one state machine (connect, query FIFO,
 * liveness, LISTEN) whose states share one struct and one teardown; split, the
 * shutdown order below would be spread over several files.
 */
#include "pgshadow/pgconn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/util.h>

#include "pgshadow/backoff.h"
#include "pgshadow/log.h"
#include "pgshadow/redact.h"
#include "pgshadow/util.h"

enum conn_state {
    ST_NEW,        /* created, ps_pgconn_start not called yet */
    ST_WAITING,    /* down; the retry timer will start a connection attempt */
    ST_CONNECTING, /* PQconnectPoll in progress */
    ST_UP,         /* connected, queries run */
    ST_CLOSED,     /* ps_pgconn_close: final */
};

enum query_kind {
    Q_USER,     /* from ps_pgconn_query: has a callback */
    Q_LISTEN,   /* LISTEN for the registry channel in q->sql */
    Q_UPCALL,   /* not sent: marks where on_up runs (after the LISTENs) */
    Q_LIVENESS, /* the idle probe */
};

struct query {
    struct query *next;
    enum query_kind kind;
    char *sql; /* for Q_LISTEN: the unquoted channel name */
    int nparams;
    char **params;
    ps_pg_result_cb cb;
    void *arg;
    PGresult *res; /* first error result, else the latest one */
};

/* One evdns lookup; outlives its attempt when orphaned. */
struct dns_req {
    struct ps_pgconn *c; /* NULL once orphaned by teardown() */
};

struct ps_pgconn {
    struct event_base *base;
    char *name;
    char *conninfo;
    char *appname;
    int64_t liveness_interval_ms;
    int64_t liveness_timeout_ms;
    int64_t connect_timeout_ms;
    ps_pgconn_callbacks cbs;
    void *arg;

    enum conn_state state;
    PGconn *pg;
    unsigned gen;

    struct event *io_ev; /* on PQsocket(); NULL when none */
    int io_fd;
    short io_what;
    struct event *kick_ev;      /* deferred: start the next query */
    struct event *retry_ev;     /* starts a connection attempt */
    struct event *connto_ev;    /* connect timeout */
    struct event *idle_ev;      /* idle long enough: send the liveness probe */
    struct event *liveto_ev;    /* the probe did not answer in time */
    struct event *dns_ev;       /* deferred: a resolver answer is ready */

    struct evdns_base *dns;     /* created on first need */
    struct dns_req *dns_req;    /* the lookup in flight for this attempt */
    char *dns_host;             /* the name being resolved this attempt */
    int dns_err;                /* the answer, for on_dns */
    struct evutil_addrinfo *dns_res;

    ps_backoff backoff;
    uint32_t rnd_state; /* fallback jitter source when getrandom fails */

    struct query *queue_head, *queue_tail;
    struct query *inflight;

    char **channels;
    size_t nchannels;

    unsigned connects;
    uint64_t session_id; /* of the session up now; see ps_pgconn_session_id */
    int busy;
    bool free_pending;
};

/* ---------------------------------------------------------------- helpers */

/* The last session id handed out, process-wide; 0 is never one. */
static uint64_t last_session_id;

static void conn_down(ps_pgconn *c, const char *reason);
static void start_next(ps_pgconn *c);
static void on_io(evutil_socket_t fd, short what, void *arg);

static void enter(ps_pgconn *c)
{
    c->busy++;
}

static void really_free(ps_pgconn *c);

/* Returns true when c was freed: the caller must not touch it again. */
static bool leave(ps_pgconn *c)
{
    if (--c->busy == 0 && c->free_pending) {
        really_free(c);
        return true;
    }
    return false;
}

static void arm_timer(struct event *ev, int64_t ms)
{
    struct timeval tv = ps_clock_tv(ms);
    event_add(ev, &tv);
}

static uint32_t jitter(ps_pgconn *c)
{
    uint32_t v;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) == (ssize_t)sizeof v)
        return v;
    /* xorshift32: good enough to spread reconnects when the kernel has no
     * entropy ready yet (early boot) */
    uint32_t x = c->rnd_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c->rnd_state = x;
    return x;
}

/* libpq messages are multi-line ("...failed: ...\n\tIs the server running")
 * and might, in theory, echo connection parameters: flatten and redact. */
static void clean_reason(const char *in, char *out, size_t len)
{
    char flat[1024];
    size_t j = 0;
    bool space = false;
    if (!in || !*in)
        in = "unknown error";
    for (size_t i = 0; in[i] && j + 1 < sizeof flat; i++) {
        char ch = in[i];
        if (ch == '\n' || ch == '\t' || ch == '\r' || ch == ' ') {
            space = true;
            continue;
        }
        if (space && j > 0 && j + 2 < sizeof flat)
            flat[j++] = ' ';
        space = false;
        flat[j++] = ch;
    }
    flat[j] = '\0';
    ps_redact_secrets(flat, out, len);
}

static void query_free(struct query *q)
{
    if (!q)
        return;
    if (q->res)
        PQclear(q->res);
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->params);
    free(q->sql);
    free(q);
}

static void queue_push(ps_pgconn *c, struct query *q)
{
    q->next = NULL;
    if (c->queue_tail)
        c->queue_tail->next = q;
    else
        c->queue_head = q;
    c->queue_tail = q;
}

static void queue_push_front(ps_pgconn *c, struct query *q)
{
    q->next = c->queue_head;
    c->queue_head = q;
    if (!c->queue_tail)
        c->queue_tail = q;
}

static struct query *queue_pop(ps_pgconn *c)
{
    struct query *q = c->queue_head;
    if (q) {
        c->queue_head = q->next;
        if (!c->queue_head)
            c->queue_tail = NULL;
        q->next = NULL;
    }
    return q;
}

static struct query *internal_query(enum query_kind kind, const char *sql)
{
    struct query *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->kind = kind;
    if (sql && !(q->sql = strdup(sql))) {
        free(q);
        return NULL;
    }
    return q;
}

static void kick(ps_pgconn *c)
{
    if (c->state == ST_UP && c->kick_ev)
        event_active(c->kick_ev, EV_TIMEOUT, 0);
}

/* Complete every queued and in-flight query with res == NULL.  The lists are
 * detached first: a callback that immediately re-queues (the natural retry)
 * lands on the next connection instead of looping here forever. */
static void fail_all(ps_pgconn *c)
{
    struct query *list = c->queue_head;
    if (c->inflight) {
        c->inflight->next = list;
        list = c->inflight;
        c->inflight = NULL;
    }
    c->queue_head = c->queue_tail = NULL;

    while (list) {
        struct query *q = list;
        list = q->next;
        q->next = NULL;
        if (q->kind == Q_USER && q->cb)
            q->cb(c, NULL, q->arg);
        query_free(q);
    }
}

/* ------------------------------------------------------------ socket events */

static void io_clear(ps_pgconn *c)
{
    if (c->io_ev) {
        event_free(c->io_ev); /* deletes it first */
        c->io_ev = NULL;
    }
    c->io_fd = -1;
    c->io_what = 0;
}

/* Watch PQsocket() for `what`.  force re-creates the event even when fd and
 * interest look unchanged: during connection setup the fd number may have been
 * closed and reused by libpq behind our back. */
static int io_set(ps_pgconn *c, short what, bool force)
{
    int fd = PQsocket(c->pg);
    if (fd < 0)
        return -EBADF;
    if (!force && c->io_ev && c->io_fd == fd && c->io_what == what)
        return 0;
    io_clear(c);
    c->io_ev = event_new(c->base, fd, what | EV_PERSIST, on_io, c);
    if (!c->io_ev)
        return -ENOMEM;
    if (event_add(c->io_ev, NULL) < 0) {
        io_clear(c);
        return -EIO;
    }
    c->io_fd = fd;
    c->io_what = what;
    return 0;
}

/* Drop the PGconn: events off first, then PQfinish. */
static void teardown(ps_pgconn *c)
{
    io_clear(c);
    if (c->connto_ev)
        event_del(c->connto_ev);
    if (c->idle_ev)
        event_del(c->idle_ev);
    if (c->liveto_ev)
        event_del(c->liveto_ev);
    if (c->kick_ev)
        event_del(c->kick_ev);
    if (c->dns_ev)
        event_del(c->dns_ev);
    if (c->dns_res) {
        evutil_freeaddrinfo(c->dns_res);
        c->dns_res = NULL;
    }
    free(c->dns_host);
    c->dns_host = NULL;
    if (c->dns_req) {
        c->dns_req->c = NULL;
        c->dns_req = NULL;
    }
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    c->gen++;
}

/* ------------------------------------------------------------- connecting */

static void notice_receiver(void *arg, const PGresult *res)
{
    ps_pgconn *c = arg;
    char msg[1024];
    clean_reason(PQresultErrorMessage(res), msg, sizeof msg);
    /* the default receiver prints to stderr, bypassing the journal and the
     * redaction; FATAL notices (backend terminated) arrive here too */
    ps_log_fields(LOG_NOTICE, (const ps_log_field[]){{"CONN", c->name}, {NULL, NULL}},
                  "pg %s: server notice: %s", c->name, msg);
}

/* Start libpq on the conninfo; host/hostaddr (both or neither) are what our
 * resolver found, appended after the conninfo so they override its host. */
static void pq_start(ps_pgconn *c, const char *host, const char *hostaddr)
{
    const char *keys[16], *vals[16];
    char scratch[128];
    ps_pgconn_options o = {
        .name = c->name,
        .conninfo = c->conninfo,
        .application_name = c->appname,
        .connect_timeout_ms = c->connect_timeout_ms,
    };

    int n = ps_pgconn_build_params(&o, keys, vals, 13, scratch, (int)sizeof scratch);
    if (n < 0) {
        conn_down(c, "cannot build connection parameters");
        return;
    }
    if (host && hostaddr) {
        keys[n] = "host";
        vals[n++] = host;
        keys[n] = "hostaddr";
        vals[n++] = hostaddr;
        keys[n] = NULL;
        vals[n] = NULL;
    }
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (!c->pg) {
        conn_down(c, "out of memory");
        return;
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_down(c, PQerrorMessage(c->pg));
        return;
    }
    PQsetNoticeReceiver(c->pg, notice_receiver, c);
    /* libpq: "behave as if PQconnectPoll had last returned PGRES_POLLING_WRITING" */
    if (io_set(c, EV_WRITE, true) < 0)
        conn_down(c, "connection has no socket");
}

/* The DNS name libpq would resolve (with a blocking getaddrinfo) for this
 * connection, malloc'ed, or NULL when there is none for us to resolve: a
 * socket directory, a numeric address, a hostaddr given, a comma list of hosts
 * (libpq's multi-host fail-over stays in charge, and resolves), or a host that
 * only a service file could supply (libpq applies the service file inside
 * PQconnectStartParams; reading it the same way here would duplicate libpq). */
static char *dns_name_to_resolve(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo ? conninfo : "", &err);
    if (!opts) {
        PQfreemem(err); /* libpq reports the syntax error at connect */
        return NULL;
    }
    const char *host = NULL, *hostaddr = NULL, *service = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "service") == 0)
            service = o->val;
    }
    /* libpq's order for unset options: service file, then environment */
    if (!service)
        service = getenv("PGSERVICE");
    if (!host && !service)
        host = getenv("PGHOST");
    if (!hostaddr && !service)
        hostaddr = getenv("PGHOSTADDR");

    char *name = NULL;
    unsigned char addr[16];
    if (host && *host && !(hostaddr && *hostaddr) && host[0] != '/' && host[0] != '@' &&
        !strchr(host, ',') && inet_pton(AF_INET, host, addr) != 1 &&
        inet_pton(AF_INET6, host, addr) != 1)
        name = strdup(host);
    PQconninfoFree(opts);
    return name;
}

/* evdns answer; may run inside evdns_getaddrinfo() itself (hosts file): only
 * stash it and let on_dns act from a handler of our own. */
static void on_resolved(int err, struct evutil_addrinfo *res, void *arg)
{
    struct dns_req *r = arg;
    ps_pgconn *c = r->c;
    free(r);
    if (!c || c->state != ST_CONNECTING || c->pg || !c->dns_host || c->dns_res) {
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    c->dns_req = NULL;
    c->dns_err = err;
    c->dns_res = res;
    event_active(c->dns_ev, EV_TIMEOUT, 0);
}

#define DNS_MAX_ADDRS 8

static void resolved(ps_pgconn *c)
{
    struct evutil_addrinfo *res = c->dns_res;
    c->dns_res = NULL;
    if (c->dns_err || !res) {
        char msg[512];
        snprintf(msg, sizeof msg, "could not resolve host name \"%s\": %s", c->dns_host,
                 c->dns_err ? evutil_gai_strerror(c->dns_err) : "no address");
        if (res)
            evutil_freeaddrinfo(res);
        conn_down(c, msg);
        return;
    }
    /* Every address, as libpq would try them in turn: "host=n,n hostaddr=a,b". */
    size_t hl = strlen(c->dns_host) + 1;
    char *hosts = malloc(hl * DNS_MAX_ADDRS);
    char addrs[DNS_MAX_ADDRS * (INET6_ADDRSTRLEN + 1)] = "";
    char shown[DNS_MAX_ADDRS * (INET6_ADDRSTRLEN + 2)] = "";
    int n = 0;
    for (struct evutil_addrinfo *ai = res; hosts && ai && n < DNS_MAX_ADDRS; ai = ai->ai_next) {
        char one[INET6_ADDRSTRLEN];
        const void *src = NULL;
        if (ai->ai_family == AF_INET)
            src = &((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        else if (ai->ai_family == AF_INET6)
            src = &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        if (!src || !evutil_inet_ntop(ai->ai_family, src, one, sizeof one))
            continue;
        if (n > 0) {
            strcat(addrs, ",");
            strcat(shown, ", ");
            strcat(hosts, ",");
        } else {
            hosts[0] = '\0';
        }
        strcat(addrs, one);
        strcat(shown, one);
        strcat(hosts, c->dns_host);
        n++;
    }
    evutil_freeaddrinfo(res);
    if (!hosts || n == 0) {
        free(hosts);
        char msg[512];
        snprintf(msg, sizeof msg, "could not resolve host name \"%s\": %s", c->dns_host,
                 hosts ? "no usable address" : "out of memory");
        conn_down(c, msg);
        return;
    }
    ps_log_fields(LOG_DEBUG, (const ps_log_field[]){{"CONN", c->name}, {NULL, NULL}},
                  "pg %s: resolved %s -> %s", c->name, c->dns_host, shown);
    pq_start(c, hosts, addrs);
    free(hosts);
}

static void connect_begin(ps_pgconn *c)
{
    c->state = ST_CONNECTING;
    /* One deadline for the whole attempt: resolving and connecting. */
    arm_timer(c->connto_ev, c->connect_timeout_ms);

    char *name = dns_name_to_resolve(c->conninfo);
    if (name && !c->dns) {
        c->dns = evdns_base_new(c->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                             EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!c->dns)
            ps_log_fields(LOG_WARNING, (const ps_log_field[]){{"CONN", c->name}, {NULL, NULL}},
                          "pg %s: cannot set up the asynchronous resolver (/etc/resolv.conf?); "
                          "libpq resolves %s itself, which blocks the loop",
                          c->name, name);
    }
    if (!name || !c->dns) {
        free(name);
        pq_start(c, NULL, NULL);
        return;
    }
    struct dns_req *r = malloc(sizeof *r);
    if (!r) {
        free(name);
        conn_down(c, "out of memory");
        return;
    }
    r->c = c;
    c->dns_req = r;
    c->dns_host = name;
    c->dns_err = 0;
    ps_log_fields(LOG_DEBUG, (const ps_log_field[]){{"CONN", c->name}, {NULL, NULL}},
                  "pg %s: resolving %s", c->name, name);
    struct evutil_addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_protocol = IPPROTO_TCP,
        .ai_flags = EVUTIL_AI_ADDRCONFIG,
    };
    /* The handle is not kept: cancelling delivers later anyway (deferred), so
     * an abandoned lookup is simply orphaned by teardown(). */
    evdns_getaddrinfo(c->dns, name, NULL, &hints, on_resolved, r);
}

static void connected(ps_pgconn *c)
{
    event_del(c->connto_ev);
    if (PQsetnonblocking(c->pg, 1) != 0) {
        conn_down(c, PQerrorMessage(c->pg));
        return;
    }
    if (io_set(c, EV_READ, true) < 0) {
        conn_down(c, "connection has no socket");
        return;
    }
    c->state = ST_UP;
    c->connects++;
    c->session_id = __atomic_add_fetch(&last_session_id, 1, __ATOMIC_RELAXED);
    ps_backoff_reset(&c->backoff);
    ps_log_fields(LOG_INFO, (const ps_log_field[]){{"CONN", c->name}, {NULL, NULL}},
                  "pg %s: connected (server %d, backend pid %d)%s", c->name,
                  PQserverVersion(c->pg), PQbackendPID(c->pg),
                  c->connects > 1 ? ", reconnected" : "");

    /* Ahead of anything queued while we were down: the LISTENs, then the
     * on_up marker, so the resync runs with notifications already flowing. */
    struct query *up = internal_query(Q_UPCALL, NULL);
    if (!up) {
        conn_down(c, "out of memory");
        return;
    }
    queue_push_front(c, up);
    for (size_t i = c->nchannels; i-- > 0;) {
        struct query *q = internal_query(Q_LISTEN, c->channels[i]);
        if (!q) {
            conn_down(c, "out of memory");
            return;
        }
        queue_push_front(c, q);
    }
    start_next(c);
}

static void connect_step(ps_pgconn *c)
{
    PostgresPollingStatusType st = PQconnectPoll(c->pg);
    switch (st) {
    case PGRES_POLLING_OK:
        connected(c);
        return;
    case PGRES_POLLING_READING:
        if (io_set(c, EV_READ, true) < 0)
            conn_down(c, "connection has no socket");
        return;
    case PGRES_POLLING_WRITING:
        if (io_set(c, EV_WRITE, true) < 0)
            conn_down(c, "connection has no socket");
        return;
    case PGRES_POLLING_FAILED:
    default:
        conn_down(c, PQerrorMessage(c->pg));
        return;
    }
}

/* Lost, or the attempt failed: fail the queries, tell the owner, retry later. */
static void conn_down(ps_pgconn *c, const char *why)
{
    char reason[1024];
    unsigned gen;
    bool was_up = c->state == ST_UP;

    clean_reason(why, reason, sizeof reason);
    teardown(c);
    c->state = ST_WAITING;
    gen = c->gen;

    int64_t delay = ps_backoff_next(&c->backoff, jitter(c));
    ps_log_fields(LOG_WARNING, (const ps_log_field[]){{"CONN", c->name}, {NULL, NULL}},
                  "pg %s: %s: %s; retrying in %" PRId64 " ms", c->name,
                  was_up ? "connection lost" : "connection attempt failed", reason, delay);

    fail_all(c);
    if (c->state != ST_WAITING || c->gen != gen)
        return; /* a callback closed, reset or restarted us */
    if (c->cbs.on_down)
        c->cbs.on_down(c, reason, c->arg);
    if (c->state != ST_WAITING || c->gen != gen)
        return;
    arm_timer(c->retry_ev, delay);
}

/* -------------------------------------------------------------- queries */

static bool is_error(const PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    return s == PGRES_FATAL_ERROR || s == PGRES_BAD_RESPONSE || s == PGRES_NONFATAL_ERROR;
}

static void flush_out(ps_pgconn *c)
{
    int r = PQflush(c->pg);
    if (r < 0) {
        conn_down(c, PQerrorMessage(c->pg));
        return;
    }
    if (io_set(c, r == 1 ? (EV_READ | EV_WRITE) : EV_READ, false) < 0)
        conn_down(c, "connection has no socket");
}

static void arm_idle(ps_pgconn *c)
{
    if (c->state == ST_UP && !c->inflight && !c->queue_head && c->liveness_interval_ms > 0)
        arm_timer(c->idle_ev, c->liveness_interval_ms);
}

/* Send queued queries until one is in flight.  Runs only from handlers. */
static void start_next(ps_pgconn *c)
{
    while (c->state == ST_UP && !c->inflight && c->queue_head) {
        struct query *q = queue_pop(c);
        unsigned gen = c->gen;
        int ok;

        if (q->kind == Q_UPCALL) {
            query_free(q);
            if (c->cbs.on_up)
                c->cbs.on_up(c, c->arg);
            if (c->state != ST_UP || c->gen != gen)
                return;
            continue;
        }

        if (q->kind == Q_LISTEN) {
            char *id = PQescapeIdentifier(c->pg, q->sql, strlen(q->sql));
            char *sql = id ? malloc(strlen(id) + 8) : NULL;
            if (!sql) {
                PQfreemem(id);
                c->inflight = q;
                conn_down(c, "out of memory");
                return;
            }
            sprintf(sql, "LISTEN %s", id);
            PQfreemem(id);
            ok = PQsendQuery(c->pg, sql);
            free(sql);
        } else if (q->nparams == 0) {
            ok = PQsendQuery(c->pg, q->sql);
        } else {
            ok = PQsendQueryParams(c->pg, q->sql, q->nparams, NULL,
                                   (const char *const *)q->params, NULL, NULL, 0);
        }
        c->inflight = q;
        if (!ok) {
            conn_down(c, PQerrorMessage(c->pg));
            return;
        }
        event_del(c->idle_ev);
        flush_out(c);
        return;
    }
    arm_idle(c);
}

static void finish_inflight(ps_pgconn *c)
{
    struct query *q = c->inflight;
    c->inflight = NULL;

    switch (q->kind) {
    case Q_USER:
        if (q->cb)
            q->cb(c, q->res, q->arg);
        break;
    case Q_LISTEN:
        if (!q->res || is_error(q->res)) {
            char msg[512];
            clean_reason(q->res ? PQresultErrorMessage(q->res) : NULL, msg, sizeof msg);
            ps_log_fields(LOG_WARNING, (const ps_log_field[]){{"CONN", c->name}, {NULL, NULL}},
                          "pg %s: LISTEN %s failed: %s", c->name, q->sql, msg);
        }
        break;
    case Q_LIVENESS:
        event_del(c->liveto_ev);
        break;
    case Q_UPCALL:
        break;
    }
    query_free(q);
}

/* Socket readable (or writable while flushing) on an established connection. */
static void up_io(ps_pgconn *c, short what)
{
    unsigned gen = c->gen;

    if (what & EV_WRITE) {
        flush_out(c);
        if (c->gen != gen)
            return;
    }
    if (!(what & EV_READ))
        return;

    if (!PQconsumeInput(c->pg) || PQstatus(c->pg) != CONNECTION_OK) {
        conn_down(c, PQerrorMessage(c->pg));
        return;
    }

    for (;;) {
        PGnotify *n;
        while ((n = PQnotifies(c->pg)) != NULL) {
            if (c->cbs.on_notify)
                c->cbs.on_notify(c, n->relname, n->extra, c->arg);
            PQfreemem(n);
            if (c->state != ST_UP || c->gen != gen)
                return;
        }
        if (!c->inflight || PQisBusy(c->pg))
            break;

        PGresult *r = PQgetResult(c->pg);
        if (r) {
            struct query *q = c->inflight;
            ExecStatusType s = PQresultStatus(r);
            if (s == PGRES_COPY_IN || s == PGRES_COPY_OUT || s == PGRES_COPY_BOTH) {
                PQclear(r);
                conn_down(c, "COPY is not supported on this connection");
                return;
            }
            if (q->res && is_error(q->res)) {
                PQclear(r); /* keep the first error */
            } else {
                if (q->res)
                    PQclear(q->res);
                q->res = r;
            }
            continue;
        }

        finish_inflight(c);
        if (c->state != ST_UP || c->gen != gen)
            return;
        start_next(c);
        if (c->state != ST_UP || c->gen != gen)
            return;
    }

    if (PQstatus(c->pg) != CONNECTION_OK)
        conn_down(c, PQerrorMessage(c->pg));
}

/* ------------------------------------------------------------ handlers */

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    ps_pgconn *c = arg;
    enter(c);
    if (c->state == ST_CONNECTING)
        connect_step(c);
    else if (c->state == ST_UP)
        up_io(c, what);
    leave(c);
}

static void on_dns(evutil_socket_t fd, short what, void *arg)
{
    ps_pgconn *c = arg;
    enter(c);
    if (c->state == ST_CONNECTING && !c->pg && c->dns_host)
        resolved(c);
    leave(c);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    ps_pgconn *c = arg;
    enter(c);
    start_next(c);
    leave(c);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    ps_pgconn *c = arg;
    enter(c);
    if (c->state == ST_WAITING)
        connect_begin(c);
    leave(c);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    ps_pgconn *c = arg;
    char msg[96];
    enter(c);
    if (c->state == ST_CONNECTING) {
        snprintf(msg, sizeof msg, "connection attempt timed out after %" PRId64 " ms",
                 c->connect_timeout_ms);
        conn_down(c, msg);
    }
    leave(c);
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
    ps_pgconn *c = arg;
    enter(c);
    if (c->state == ST_UP && !c->inflight && !c->queue_head) {
        struct query *q = internal_query(Q_LIVENESS, "SELECT 1");
        if (q) {
            queue_push(c, q);
            arm_timer(c->liveto_ev, c->liveness_timeout_ms);
            start_next(c);
        }
    } else {
        arm_idle(c);
    }
    leave(c);
}

static void on_liveness_timeout(evutil_socket_t fd, short what, void *arg)
{
    ps_pgconn *c = arg;
    char msg[96];
    enter(c);
    if (c->state == ST_UP) {
        snprintf(msg, sizeof msg, "liveness check got no answer within %" PRId64 " ms",
                 c->liveness_timeout_ms);
        conn_down(c, msg);
    }
    leave(c);
}

/* ------------------------------------------------------------ public API */

int ps_pgconn_build_params(const ps_pgconn_options *opts, const char **keys, const char **vals,
                           int max, char *scratch, int scratch_len)
{
    int64_t ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 10000;
    /* libpq's connect_timeout is whole seconds and at least 2; our own timer
     * enforces the exact value, this only bounds libpq's internal waits */
    int64_t secs = (ms + 999) / 1000;
    if (secs < 2)
        secs = 2;
    int n = 0;

    if (max < 9 || !scratch || scratch_len < 24)
        return -ENOSPC;
    int w = snprintf(scratch, (size_t)scratch_len, "%" PRId64, secs);
    if (w < 0 || w >= scratch_len)
        return -ENOSPC;

    /* Ours first: with expand_dbname, the conninfo given as "dbname" last
     * overrides every keyword before it, so the user's settings win. */
    keys[n] = "application_name";
    vals[n++] = opts->application_name && *opts->application_name ? opts->application_name
                                                                  : "pgshadowd";
    keys[n] = "connect_timeout";
    vals[n++] = scratch;
    keys[n] = "keepalives";
    vals[n++] = "1";
    keys[n] = "keepalives_idle";
    vals[n++] = "10";
    keys[n] = "keepalives_interval";
    vals[n++] = "5";
    keys[n] = "keepalives_count";
    vals[n++] = "3";
    keys[n] = "tcp_user_timeout";
    vals[n++] = "30000";
    if (opts->conninfo && *opts->conninfo) {
        keys[n] = "dbname";
        vals[n++] = opts->conninfo;
    }
    keys[n] = NULL;
    vals[n] = NULL;
    return n;
}

void ps_pgconn_options_init(ps_pgconn_options *o)
{
    memset(o, 0, sizeof *o);
    o->application_name = "pgshadowd";
    o->liveness_interval_ms = 10000;
    o->liveness_timeout_ms = 5000;
    o->backoff_base_ms = 100;
    o->backoff_cap_ms = 30000;
    o->connect_timeout_ms = 10000;
}

ps_pgconn *ps_pgconn_new(struct event_base *base, const ps_pgconn_options *opts,
                         const ps_pgconn_callbacks *cbs, void *arg)
{
    if (!base || !opts)
        return NULL;
    ps_pgconn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->base = base;
    c->io_fd = -1;
    c->arg = arg;
    if (cbs)
        c->cbs = *cbs;
    c->name = strdup(opts->name && *opts->name ? opts->name : "db");
    c->conninfo = strdup(opts->conninfo ? opts->conninfo : "");
    /* pg_stat_activity tells the daemon's sessions apart: pgshadowd/main,
     * pgshadowd/verify1, ... unless the caller named it */
    if (opts->application_name && *opts->application_name && strcmp(opts->application_name, "pgshadowd") != 0) {
        c->appname = strdup(opts->application_name);
    } else if (asprintf(&c->appname, "pgshadowd/%s", c->name ? c->name : "db") < 0) {
        c->appname = NULL;
    }
    c->liveness_interval_ms = opts->liveness_interval_ms > 0 ? opts->liveness_interval_ms : 0;
    c->liveness_timeout_ms = opts->liveness_timeout_ms > 0 ? opts->liveness_timeout_ms : 5000;
    c->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 10000;
    ps_backoff_init(&c->backoff, opts->backoff_base_ms > 0 ? opts->backoff_base_ms : 100,
                    opts->backoff_cap_ms > 0 ? opts->backoff_cap_ms : 30000);
    c->rnd_state = (uint32_t)time(NULL) ^ ((uint32_t)getpid() << 16) ^
                   (uint32_t)(uintptr_t)c;
    if (!c->rnd_state)
        c->rnd_state = 0x9e3779b9u;

    c->kick_ev = event_new(base, -1, 0, on_kick, c);
    c->retry_ev = evtimer_new(base, on_retry, c);
    c->connto_ev = evtimer_new(base, on_connect_timeout, c);
    c->idle_ev = evtimer_new(base, on_idle, c);
    c->liveto_ev = evtimer_new(base, on_liveness_timeout, c);
    c->dns_ev = event_new(base, -1, 0, on_dns, c);
    if (!c->name || !c->conninfo || !c->appname || !c->kick_ev || !c->retry_ev ||
        !c->connto_ev || !c->idle_ev || !c->liveto_ev || !c->dns_ev) {
        really_free(c);
        return NULL;
    }
    c->state = ST_NEW;
    return c;
}

int ps_pgconn_start(ps_pgconn *c)
{
    if (!c)
        return -EINVAL;
    if (c->state == ST_CLOSED || c->free_pending)
        return -ENOTCONN;
    if (c->state == ST_NEW || c->state == ST_WAITING) {
        /* connect from the loop, never from inside this call */
        c->state = ST_WAITING;
        arm_timer(c->retry_ev, 0);
    }
    return 0;
}

static int enqueue(ps_pgconn *c, const char *sql, int nparams, const char *const *params,
                   ps_pg_result_cb cb, void *arg, bool front)
{
    if (!c || !sql || nparams < 0 || (nparams > 0 && !params))
        return -EINVAL;
    if (c->state == ST_CLOSED || c->free_pending)
        return -ENOTCONN;

    struct query *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    q->kind = Q_USER;
    q->cb = cb;
    q->arg = arg;
    q->sql = strdup(sql);
    if (!q->sql)
        goto nomem;
    if (nparams > 0) {
        q->params = calloc((size_t)nparams, sizeof *q->params);
        if (!q->params)
            goto nomem;
        q->nparams = nparams;
        for (int i = 0; i < nparams; i++) {
            /* a NULL parameter is SQL NULL */
            if (params[i] && !(q->params[i] = strdup(params[i])))
                goto nomem;
        }
    }
    if (front)
        queue_push_front(c, q);
    else
        queue_push(c, q);
    kick(c);
    return 0;
nomem:
    query_free(q);
    return -ENOMEM;
}

int ps_pgconn_query(ps_pgconn *c, const char *sql, int nparams, const char *const *params,
                    ps_pg_result_cb cb, void *arg)
{
    return enqueue(c, sql, nparams, params, cb, arg, false);
}

/* A result callback runs before the next queued query is sent (see
 * up_io: finish_inflight, then start_next), so a query put at the head from
 * there is the very next one on the wire. */
int ps_pgconn_query_next(ps_pgconn *c, const char *sql, int nparams, const char *const *params,
                         ps_pg_result_cb cb, void *arg)
{
    return enqueue(c, sql, nparams, params, cb, arg, true);
}

int ps_pgconn_listen(ps_pgconn *c, const char *channel)
{
    if (!c || !channel || !*channel)
        return -EINVAL;
    if (c->state == ST_CLOSED || c->free_pending)
        return -ENOTCONN;
    for (size_t i = 0; i < c->nchannels; i++)
        if (strcmp(c->channels[i], channel) == 0)
            return 0;

    char **nc = realloc(c->channels, (c->nchannels + 1) * sizeof *nc);
    if (!nc)
        return -ENOMEM;
    c->channels = nc;
    if (!(nc[c->nchannels] = strdup(channel)))
        return -ENOMEM;
    c->nchannels++;

    /* While connecting, connected() issues it with the rest of the registry. */
    if (c->state == ST_UP) {
        struct query *q = internal_query(Q_LISTEN, channel);
        if (!q)
            return -ENOMEM; /* registered: the next reconnect issues it */
        queue_push(c, q);
        kick(c);
    }
    return 0;
}

bool ps_pgconn_is_up(const ps_pgconn *c)
{
    return c && c->state == ST_UP;
}

bool ps_pgconn_is_idle(const ps_pgconn *c)
{
    return c && c->state == ST_UP && !c->inflight && !c->queue_head;
}

unsigned ps_pgconn_reconnects(const ps_pgconn *c)
{
    return c && c->connects > 1 ? c->connects - 1 : 0;
}

uint64_t ps_pgconn_session_id(const ps_pgconn *c)
{
    return c && c->state == ST_UP ? c->session_id : 0;
}

const char *ps_pgconn_name(const ps_pgconn *c)
{
    return c ? c->name : NULL;
}

const char *ps_pgconn_errfield(const PGresult *res, int field, const char *dflt)
{
    const char *v = res ? PQresultErrorField(res, field) : NULL;
    return v && *v ? v : dflt;
}

PGconn *ps_pgconn_raw(ps_pgconn *c)
{
    return c && c->state == ST_UP ? c->pg : NULL;
}

void ps_pgconn_reset(ps_pgconn *c, const char *why)
{
    if (!c)
        return;
    if (c->state != ST_UP && c->state != ST_CONNECTING)
        return;
    enter(c);
    conn_down(c, why ? why : "reset by caller");
    leave(c);
}

void ps_pgconn_close(ps_pgconn *c)
{
    if (!c || c->state == ST_CLOSED)
        return;
    enter(c);
    teardown(c);
    c->state = ST_CLOSED;
    event_del(c->retry_ev);
    fail_all(c);
    leave(c);
}

static void really_free(ps_pgconn *c)
{
    teardown(c);
    /* fail_requests = 1: libevent delivers each pending (orphaned) lookup
     * once more from the loop, which frees it; with 0 it would leak. */
    if (c->dns)
        evdns_base_free(c->dns, 1);
    c->dns = NULL;
    /* queries queued by callbacks during the final fail_all, if any */
    fail_all(c);
    if (c->kick_ev)
        event_free(c->kick_ev);
    if (c->retry_ev)
        event_free(c->retry_ev);
    if (c->connto_ev)
        event_free(c->connto_ev);
    if (c->idle_ev)
        event_free(c->idle_ev);
    if (c->liveto_ev)
        event_free(c->liveto_ev);
    if (c->dns_ev)
        event_free(c->dns_ev);
    for (size_t i = 0; i < c->nchannels; i++)
        free(c->channels[i]);
    free(c->channels);
    free(c->name);
    free(c->conninfo);
    free(c->appname);
    free(c);
}

void ps_pgconn_free(ps_pgconn *c)
{
    if (!c || c->free_pending)
        return;
    c->free_pending = true;
    enter(c);
    ps_pgconn_close(c);
    leave(c); /* frees now, or when the outermost handler returns */
}
