/*
 * lagprobe.c - commit-to-shadow lag of pgshadow, measured from outside.
 *
 *   lagprobe CONNINFO DURATION_S INTERVAL_MS TIMEOUT_MS > lags.txt
 *
 * A fixed schedule: one probe every INTERVAL_MS from the start until
 * DURATION_S have passed, whatever the earlier probes are doing (a slow one
 * neither delays nor thins out the ones after it). A probe is one row
 * inserted into public.contexts (a captured table) as an autocommit
 * statement, sent on one of WRITERS connections, so up to WRITERS inserts
 * can be waiting for their commit at once; its commit time is taken when the
 * INSERT's result arrives (after the server's commit: the lag leaves out at
 * most half a round trip). Every committed probe not yet in the shadow is
 * looked for in public.contexts_shadow, all of them in one query on another
 * connection, every 0.5 ms; any number can be in flight. A probe seen there
 * prints its lag in milliseconds; one not there TIMEOUT_MS after its commit
 * prints "timeout". After the deadline no probe is sent and the outstanding
 * ones are waited for (each at most TIMEOUT_MS), so the run ends at most
 * TIMEOUT_MS after DURATION_S.
 *
 * Every statement has a statement_timeout: TIMEOUT_MS for an insert (one
 * that times out is counted as "not committed", no lag), 2 s for a poll (one
 * that times out is counted and the poll is sent again). A tick that finds
 * all WRITERS connections still waiting for a commit sends no probe and is
 * counted as "not sent".
 *
 * Output: one line per committed probe, in send order (a lag in ms, or
 * "timeout"). On stderr one summary line:
 *   lagprobe: sent N committed C seen S timeouts T not-committed U not-sent K poll-timeouts P max M ms
 *
 * Probe rows are ordinary rows (context_type 'lagprobe'): pgshadow captures
 * and applies them like any other write. Exit status 0 when the schedule ran
 * to the end, 1 on a database error other than a statement timeout.
 */
#define _GNU_SOURCE /* ppoll */
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WRITERS 16
#define POLL_EVERY_US 500
#define POLL_TIMEOUT "2s"

enum { P_SENT, P_COMMITTED, P_SEEN, P_TIMEOUT, P_FAILED };

typedef struct {
    int state;
    int64_t committed_us, seen_us;
    char key[40];
} probe;

typedef struct {
    PGconn *c;
    int probe; /* index in flight, -1 = idle */
} writer;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static PGconn *open_conn(const char *ci, const char *timeout)
{
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "lagprobe: connect: %s", PQerrorMessage(c));
        exit(1);
    }
    char sql[128];
    snprintf(sql, sizeof sql, "SET statement_timeout = '%s'", timeout);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "lagprobe: %s: %s", sql, PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
    return c;
}

static void prepare(PGconn *c, const char *name, const char *sql, int nparams)
{
    PGresult *r = PQprepare(c, name, sql, nparams, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "lagprobe: prepare %s: %s", name, PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
}

static int is_timeout(const PGresult *r)
{
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return st && strcmp(st, "57014") == 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: lagprobe CONNINFO DURATION_S INTERVAL_MS TIMEOUT_MS\n");
        return 2;
    }
    const char *ci = argv[1];
    int64_t duration_us = (int64_t)(atof(argv[2]) * 1e6);
    int64_t interval_us = (int64_t)atoi(argv[3]) * 1000;
    int64_t timeout_us = (int64_t)atoi(argv[4]) * 1000;
    if (duration_us <= 0 || interval_us <= 0 || timeout_us <= 0) {
        fprintf(stderr, "lagprobe: DURATION_S, INTERVAL_MS and TIMEOUT_MS must be > 0\n");
        return 2;
    }
    size_t cap = (size_t)(duration_us / interval_us) + 2;
    probe *pr = calloc(cap, sizeof *pr);
    int *ids = malloc(cap * sizeof *ids);
    char *keys = malloc(cap * 40 + 8);
    if (!pr || !ids || !keys) {
        fprintf(stderr, "lagprobe: out of memory\n");
        return 1;
    }

    char wto[32];
    snprintf(wto, sizeof wto, "%lldms", (long long)(timeout_us / 1000));
    writer w[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i].c = open_conn(ci, wto);
        w[i].probe = -1;
        prepare(w[i].c, "ins",
                "INSERT INTO public.contexts (id, context_type, content) "
                "VALUES (gen_random_uuid(), 'lagprobe', 'lag probe') RETURNING id::text",
                0);
    }
    PGconn *rd = open_conn(ci, POLL_TIMEOUT);
    prepare(rd, "look", "SELECT id::text FROM public.contexts_shadow WHERE id = ANY ($1::uuid[])", 1);

    size_t sent = 0, first_open = 0;
    long not_sent = 0, poll_timeouts = 0;
    int reading = 0; /* a poll is in flight */
    int64_t start = now_us(), deadline = start + duration_us, next_tick = start, next_poll = start;

    for (;;) {
        int64_t t = now_us();
        /* 1. the schedule: every tick until the deadline, late or not */
        while (next_tick <= t && next_tick < deadline) {
            int i;
            for (i = 0; i < WRITERS && w[i].probe >= 0; i++)
                ;
            if (i == WRITERS) {
                not_sent++;
            } else if (!PQsendQueryPrepared(w[i].c, "ins", 0, NULL, NULL, NULL, 0)) {
                fprintf(stderr, "lagprobe: send insert: %s", PQerrorMessage(w[i].c));
                return 1;
            } else {
                pr[sent].state = P_SENT;
                w[i].probe = (int)sent++;
            }
            next_tick += interval_us;
        }
        /* 2. time-outs of committed probes */
        for (size_t k = first_open; k < sent; k++)
            if (pr[k].state == P_COMMITTED && t - pr[k].committed_us > timeout_us)
                pr[k].state = P_TIMEOUT;
        while (first_open < sent && pr[first_open].state != P_SENT && pr[first_open].state != P_COMMITTED)
            first_open++;
        /* 3. one poll for every committed probe not yet seen */
        if (!reading && t >= next_poll) {
            size_t n = 0, len = 0;
            keys[len++] = '{';
            for (size_t k = first_open; k < sent; k++) {
                if (pr[k].state != P_COMMITTED)
                    continue;
                len += (size_t)sprintf(keys + len, "%s%s", n ? "," : "", pr[k].key);
                ids[n++] = (int)k;
            }
            keys[len++] = '}';
            keys[len] = '\0';
            if (n > 0) {
                const char *p[1] = {keys};
                if (!PQsendQueryPrepared(rd, "look", 1, p, NULL, NULL, 0)) {
                    fprintf(stderr, "lagprobe: send poll: %s", PQerrorMessage(rd));
                    return 1;
                }
                reading = 1;
            }
        }
        /* done: past the deadline, nothing in flight, nothing outstanding */
        int busy = reading;
        for (int i = 0; i < WRITERS; i++)
            busy |= w[i].probe >= 0;
        if (t >= deadline && !busy && first_open == sent)
            break;

        /* 4. wait for a result or the next tick / poll / time-out */
        struct pollfd fds[WRITERS + 1];
        int who[WRITERS + 1], nf = 0;
        for (int i = 0; i < WRITERS; i++)
            if (w[i].probe >= 0) {
                fds[nf] = (struct pollfd){.fd = PQsocket(w[i].c), .events = POLLIN};
                who[nf++] = i;
            }
        if (reading) {
            fds[nf] = (struct pollfd){.fd = PQsocket(rd), .events = POLLIN};
            who[nf++] = -1;
        }
        int64_t wake = t + 100000;
        if (next_tick < deadline && next_tick < wake)
            wake = next_tick;
        if (!reading && first_open < sent && next_poll < wake)
            wake = next_poll;
        int64_t wait_us = wake - now_us();
        if (wait_us < 0)
            wait_us = 0;
        struct timespec ts = {.tv_sec = wait_us / 1000000, .tv_nsec = (wait_us % 1000000) * 1000};
        if (ppoll(fds, (nfds_t)nf, &ts, NULL) < 0 && errno != EINTR) {
            perror("lagprobe: ppoll");
            return 1;
        }
        for (int f = 0; f < nf; f++) {
            if (!(fds[f].revents & (POLLIN | POLLERR | POLLHUP)))
                continue;
            PGconn *c = who[f] >= 0 ? w[who[f]].c : rd;
            if (!PQconsumeInput(c)) {
                fprintf(stderr, "lagprobe: %s", PQerrorMessage(c));
                return 1;
            }
            while (!PQisBusy(c)) {
                PGresult *r = PQgetResult(c);
                if (!r) {
                    if (who[f] >= 0)
                        w[who[f]].probe = -1;
                    else {
                        reading = 0;
                        next_poll = now_us() + POLL_EVERY_US;
                    }
                    break;
                }
                int64_t got = now_us();
                if (who[f] >= 0) {
                    probe *q = &pr[w[who[f]].probe];
                    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
                        q->state = P_COMMITTED;
                        q->committed_us = got;
                        snprintf(q->key, sizeof q->key, "%s", PQgetvalue(r, 0, 0));
                    } else if (is_timeout(r)) {
                        q->state = P_FAILED;
                    } else {
                        fprintf(stderr, "lagprobe: insert: %s", PQresultErrorMessage(r));
                        return 1;
                    }
                } else if (PQresultStatus(r) == PGRES_TUPLES_OK) {
                    for (int j = 0; j < PQntuples(r); j++) {
                        const char *key = PQgetvalue(r, j, 0);
                        for (size_t k = first_open; k < sent; k++)
                            if (pr[k].state == P_COMMITTED && strcmp(pr[k].key, key) == 0) {
                                pr[k].state = P_SEEN;
                                pr[k].seen_us = got;
                                break;
                            }
                    }
                } else if (is_timeout(r)) {
                    poll_timeouts++;
                } else {
                    fprintf(stderr, "lagprobe: poll: %s", PQresultErrorMessage(r));
                    return 1;
                }
                PQclear(r);
            }
        }
    }

    long committed = 0, seen = 0, timeouts = 0, failed = 0;
    double max = 0;
    for (size_t k = 0; k < sent; k++) {
        if (pr[k].state == P_SEEN) {
            double lag = (double)(pr[k].seen_us - pr[k].committed_us) / 1000.0;
            printf("%.3f\n", lag);
            if (lag > max)
                max = lag;
            seen++, committed++;
        } else if (pr[k].state == P_TIMEOUT) {
            printf("timeout\n");
            timeouts++, committed++;
        } else {
            failed++;
        }
    }
    fprintf(stderr,
            "lagprobe: sent %zu committed %ld seen %ld timeouts %ld not-committed %ld not-sent %ld "
            "poll-timeouts %ld max %.3f ms\n",
            sent, committed, seen, timeouts, failed, not_sent, poll_timeouts, max);
    for (int i = 0; i < WRITERS; i++)
        PQfinish(w[i].c);
    PQfinish(rd);
    free(pr);
    free(ids);
    free(keys);
    return 0;
}
