/*
 * lagprobe.c - commit-to-shadow lag of pgshadow, measured from outside.
 *
 *   lagprobe CONNINFO SAMPLES INTERVAL_MS > lags.txt
 *
 * Every INTERVAL_MS: insert one probe row into public.contexts (a captured
 * table) as an autocommit statement, take the time when the commit has
 * returned, then poll public.contexts_shadow for that key on a second
 * connection every 0.5 ms until the row is there, and print the lag in
 * milliseconds (one line per sample). The commit time is taken when the
 * INSERT's result arrives, i.e. after the server's commit: the printed lag
 * leaves out at most half a round trip. A probe not in the shadow after 30 s
 * prints "timeout" and counts as 30000 ms.
 *
 * Probe rows are ordinary rows (context_type 'lagprobe'): pgshadow captures
 * and applies them like any other write. Exit status 0 when every sample was
 * taken, 1 on a database error.
 */
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_us(int64_t us)
{
    if (us <= 0)
        return;
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static PGconn *open_conn(const char *ci)
{
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "lagprobe: connect: %s", PQerrorMessage(c));
        exit(1);
    }
    return c;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: lagprobe CONNINFO SAMPLES INTERVAL_MS\n");
        return 2;
    }
    int samples = atoi(argv[2]);
    int64_t interval_us = (int64_t)atoi(argv[3]) * 1000;
    PGconn *w = open_conn(argv[1]), *r = open_conn(argv[1]);
    PGresult *res = PQprepare(w, "ins",
                              "INSERT INTO public.contexts (id, context_type, content) "
                              "VALUES (gen_random_uuid(), 'lagprobe', 'lag probe') RETURNING id::text",
                              0, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fprintf(stderr, "lagprobe: prepare: %s", PQerrorMessage(w));
        return 1;
    }
    PQclear(res);
    res = PQprepare(r, "look", "SELECT 1 FROM public.contexts_shadow WHERE id = $1::uuid", 1, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fprintf(stderr, "lagprobe: prepare: %s", PQerrorMessage(r));
        return 1;
    }
    PQclear(res);

    int64_t next = now_us();
    for (int i = 0; i < samples; i++) {
        sleep_us(next - now_us());
        next += interval_us;
        res = PQexecPrepared(w, "ins", 0, NULL, NULL, NULL, 0);
        int64_t committed = now_us();
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
            fprintf(stderr, "lagprobe: insert: %s", PQerrorMessage(w));
            return 1;
        }
        char key[64];
        snprintf(key, sizeof key, "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        const char *p[1] = {key};
        for (;;) {
            res = PQexecPrepared(r, "look", 1, p, NULL, NULL, 0);
            if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                fprintf(stderr, "lagprobe: poll: %s", PQerrorMessage(r));
                return 1;
            }
            int found = PQntuples(res) == 1;
            PQclear(res);
            int64_t t = now_us();
            if (found) {
                printf("%.3f\n", (double)(t - committed) / 1000.0);
                break;
            }
            if (t - committed > 30000000) {
                printf("timeout\n");
                break;
            }
            sleep_us(500);
        }
        fflush(stdout);
        /* a slow sample must not be followed by a burst to catch up */
        if (next < now_us())
            next = now_us();
    }
    PQfinish(w);
    PQfinish(r);
    return 0;
}
