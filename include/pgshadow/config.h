/*
 * config.h - the typed, immutable configuration (contract: pgshadow.yaml).
 *
 * ps_config_load() parses a YAML file into a fresh ps_config. Every section of
 * the contract is parsed and validated here, including sections used only by
 * later features (verify, monitor, cutover, metrics), so the file format is
 * settled once. A loaded config is never modified; reload builds a new one and
 * swaps it in only when it is valid.
 */
#ifndef PGSHADOW_CONFIG_H
#define PGSHADOW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgshadow/errors.h"

#define PS_CONFIG_DEFAULT_PATH "/etc/pgshadow/pgshadow.yaml"
#define PS_CONFIG_MAX_BYTES (1024 * 1024) /* larger files are refused */
#define PS_CONFIG_MAX_DEPTH 16            /* deeper nesting is refused */

typedef enum { PS_ON_APPLY_ERROR_QUARANTINE = 0, PS_ON_APPLY_ERROR_HALT } ps_on_apply_error;
typedef enum { PS_CUTOVER_START_MANUAL = 0, PS_CUTOVER_START_AUTO } ps_cutover_start;
typedef enum { PS_ON_TRIP_STEP_DOWN = 0, PS_ON_TRIP_ROLLBACK, PS_ON_TRIP_PAUSE } ps_on_trip;
typedef enum { PS_FINALLY_WAIT = 0, PS_FINALLY_PROMOTE } ps_finally;

typedef struct ps_column_map {
    char *column; /* shadow column name (reverse_columns: the legacy column's) */
    char *expr;   /* SQL expression over the primary row aliased "p" (reverse: the promoted row) */
    int line, column_no;
} ps_column_map;

typedef struct ps_table_config {
    char *name;   /* primary table name, unquoted (quoting happens at use) */
    char **key;   /* key columns; n_key == 0 means "use the primary key" */
    size_t n_key;
    ps_column_map *columns;
    size_t n_columns;
    ps_column_map *reverse; /* reverse_columns: what revert needs of a mapping that is not a plain copy */
    size_t n_reverse;
    int line, column_no; /* where the entry starts, for later catalog errors */
} ps_table_config;

/* Where a key was written in the file. */
typedef struct ps_config_pos {
    char *key; /* its path as messages name it: "sync.batch_size", "migration.tables[0].name" */
    int line, column_no;
} ps_config_pos;

typedef struct ps_stage {
    int percent;     /* 1..100, strictly increasing, last is 100 */
    int64_t hold_ms; /* > 0 */
} ps_stage;

typedef struct ps_config {
    char *path; /* the file it came from */

    struct {
        char *conninfo; /* never contains a password (refused at load) */
    } database;

    struct {
        char *id;
        char *schema;        /* default "public" */
        char *shadow_suffix; /* default "_shadow" */
        ps_table_config *tables;
        size_t n_tables; /* >= 1 */
    } migration;

    struct {
        int batch_size;               /* default 5000, 1..100000 */
        int64_t batch_delay_ms;       /* default 0s, 0..10s */
        int64_t catchup_interval_ms;  /* default 1s, 10ms..1h */
        int workers;                  /* default 2, 1..32: backfill worker connections */
        int64_t chunk_target_ms;      /* default 500ms, 10ms..60s: one chunk's target time */
        int backfill_chunk;           /* default 5000, 1..1000000: most rows per backfill chunk */
        int64_t max_replication_lag_ms; /* default 10s; 0 = no throttling */
        ps_on_apply_error on_apply_error;
    } sync;

    struct {
        int64_t interval_ms; /* default 10m; 0 = off */
        int chunk_rows;      /* default 10000, 1..10000000: most rows per verify chunk */
        bool repair;         /* default true */
        int64_t sample_interval_ms; /* default 10s, 0 = off: shadow-read sampling rounds */
        int sample_keys;            /* default 20, 1..1000: keys per table per round */
    } verify;

    struct {
        int64_t poll_interval_ms; /* default 10s */
    } monitor;

    struct {
        ps_cutover_start start;
        struct {
            double min_sync_percent; /* default 99, 0..100 */
            int64_t max_sync_lag_ms; /* default 30s */
            int64_t max_diverged;    /* default 5 */
            int64_t max_quarantined; /* default 0 */
            int64_t max_sample_mismatches; /* default 0: sampling mismatches in its window */
            double max_latency_ratio;      /* default 1.5, > 0: sampled shadow p99 / primary p99 */
        } gates;
        int failures_to_trip; /* default 3, 1..1000 */
        ps_on_trip on_trip;
        ps_stage *stages; /* default 1/1h 5/2h 20/4h 50/4h 100/8h */
        size_t n_stages;
        ps_finally finally;
        struct {
            int64_t lock_timeout_ms; /* default 2s */
            int attempts;            /* default 10 */
            bool keep_legacy;        /* default true */
        } promote;
    } cutover;

    struct {
        int level; /* syslog priority: LOG_DEBUG..LOG_ERR; default LOG_INFO */
    } log;

    struct {
        char *listen; /* "host:port", or NULL/"" for no endpoint; default 127.0.0.1:9187 */
    } metrics;

    /* Where each key given in the file was written, in the order the loader
     * met them (a key left at its default is not here): for messages about a
     * key rather than its value. See ps_config_position. */
    ps_config_pos *where;
    size_t n_where;
} ps_config;

/* Load and validate. On success returns 0 and sets *out (caller frees).
 * On failure returns -1, leaves *out NULL and appends every problem found to
 * errs, each with the file, line and column where it is. */
int ps_config_load(const char *path, ps_config **out, ps_errors *errs);

/* Same, from a buffer; `name` is used as FILE in errors. */
int ps_config_load_buffer(const char *name, const char *buf, size_t len, ps_config **out,
                          ps_errors *errs);

void ps_config_free(ps_config *cfg); /* NULL is a no-op */

/* Parse a log level word (debug|info|notice|warning|error) to a syslog priority;
 * -1 when unknown. */
int ps_log_level_parse(const char *word);

/* Append one human-readable line per difference between two configs to errs-like
 * list `changes` (file/line unset), for the reload log. Returns the number. */
size_t ps_config_diff(const ps_config *old_cfg, const ps_config *new_cfg, ps_errors *changes);

/* The line and column where key (a path such as "migration.id") was written
 * in cfg's file; false when the file does not give it (a default). */
bool ps_config_position(const ps_config *cfg, const char *key, int *line, int *column);

/* Restart-only keys: marked in the key table, a reload cannot change them
 * (today: migration.id, the leader lock's key). True for such a key path. */
bool ps_config_restart_only(const char *key);

/* For a reload, in one place for every restart-only key: each one whose
 * value in fresh differs from running gets running's value back in fresh,
 * and one note in notes, located at the key in fresh's file
 * ("FILE:LINE:COLUMN: migration.id: \"a\" -> \"b\" needs a restart; the
 * running value \"a\" stays in force"). Call it before ps_config_diff, which
 * then shows only what the reload really changes. Returns the number kept. */
size_t ps_config_keep_restart_only(const ps_config *running, ps_config *fresh, ps_errors *notes);

/* The table entry with this name, or NULL. */
const ps_table_config *ps_config_table(const ps_config *cfg, const char *name);

#endif
