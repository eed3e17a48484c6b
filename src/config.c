/*
 * config.c - pgshadow.yaml into an immutable, validated ps_config.
 *
 * Two stages, each bounded:
 *   1. read: the file must be a regular file of at most PS_CONFIG_MAX_BYTES
 *      that neither group nor others can write, or replace (its directory),
 *      and valid UTF-8 (a leading byte order mark is dropped); libyaml's
 *      event API turns it into a small tree of scalars, mappings and
 *      sequences. Nesting is counted while parsing and refused past
 *      PS_CONFIG_MAX_DEPTH, so no deep tree is ever built; anchors, aliases,
 *      tags and second documents are refused. Any problem here stops the
 *      load (the tree would be incomplete).
 *   2. validate: one table per section (the `*_keys` arrays below) gives each
 *      key its type, range, default and where it is stored; one walker
 *      applies the tables, collecting every problem with the position of the
 *      offending node. The same tables drive defaults, ps_config_diff() and
 *      the restart-only keys a reload keeps (F_RESTART,
 *      ps_config_keep_restart_only()).
 * Errors are sorted by position before they are returned. Out of memory
 * aborts: the loader runs at start-up and on reload, where a partial config
 * would be worse than no process.
 *
 * Why one file of ~1,900 lines: the reader, the key tables, the walker and
 * the diff share the parse tree, the key_spec type and the error context,
 * all private here; split, they would have to become a public internal
 * header. The seams for a split into src/config/ (reader, tables,
 * validation, diff) are the section comments below.
 *
 * Size: over 800 lines on purpose: most of it is the key tables and their
 * validators, which the reader, the walker and the reload diff share as static
 * data; the parts are in that order below.
 */
#include "pgshadow/config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <yaml.h>

#include "pgshadow/duration.h"
#include "pgshadow/redact.h"
#include "pgshadow/util.h"
#include "pgshadow/xalloc.h"

#define MAX_ERRORS 100
#define PG_NAME_MAX 63 /* NAMEDATALEN - 1: PostgreSQL truncates longer names */

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

/* Length of the valid UTF-8 character at s (1..4), or 0 when the bytes
 * there are not one (overlongs, surrogates and code points past U+10FFFF
 * included). */
static size_t utf8_char_len(const unsigned char *s, size_t len)
{
    unsigned char b = s[0];
    size_t n;
    uint32_t cp, min;
    if (b < 0x80)
        return 1;
    else if ((b & 0xe0) == 0xc0)
        n = 2, cp = b & 0x1f, min = 0x80;
    else if ((b & 0xf0) == 0xe0)
        n = 3, cp = b & 0x0f, min = 0x800;
    else if ((b & 0xf8) == 0xf0)
        n = 4, cp = b & 0x07, min = 0x10000;
    else
        return 0;
    if (n > len)
        return 0;
    for (size_t k = 1; k < n; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

#define QUOTE_MAX 60 /* bytes of a user-supplied string shown in a message */
#define QBUF (2 + 4 * QUOTE_MAX + 3 + 1) /* quotes, every byte escaped, "...", NUL */

/* A user-supplied string, quoted and escaped for a one-line message. At most
 * the characters that start within its first QUOTE_MAX bytes are shown, so a
 * hostile file cannot make messages huge, and the cut falls between
 * characters, marked "...": a message is valid UTF-8 whatever it quotes
 * (journald shows a field that is not as a blob). A byte that is not part of
 * a valid character is escaped like a control character. size >= QBUF. */
static const char *quoted(const char *s, size_t len, char *buf, size_t size)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0, i = 0;
    buf[o++] = '"';
    while (i < len) {
        char piece[8];
        size_t n = utf8_char_len(u + i, len - i), pn;
        if (n == 0 || u[i] < 0x20 || u[i] == 0x7f) {
            n = 1;
            pn = (size_t)snprintf(piece, sizeof piece, "\\x%02x", u[i]);
        } else if (u[i] == '"' || u[i] == '\\') {
            pn = (size_t)snprintf(piece, sizeof piece, "\\%c", u[i]);
        } else {
            memcpy(piece, s + i, n);
            pn = n;
        }
        if (i >= QUOTE_MAX || o + pn + 5 > size) { /* room for ...", NUL */
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(buf + o, piece, pn);
        o += pn;
        i += n;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* ------------------------------------------------------------------ */
/* the parse tree                                                       */

typedef enum { N_SCALAR, N_MAP, N_SEQ } node_kind;

typedef struct node {
    node_kind kind;
    int line, col; /* 1-based */
    char *text;    /* scalar: NUL-terminated copy (may contain NULs; see len) */
    size_t len;
    bool plain;         /* scalar written without quotes: may be a number, bool, null */
    bool dup;           /* a mapping key repeated earlier in its mapping: ignored */
    struct node **kids; /* sequence items; mapping keys and values alternating */
    size_t n, cap;
} node;

static void node_free(node *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->n; i++)
        node_free(n->kids[i]);
    free(n->kids);
    free(n->text);
    free(n);
}

static void node_add(node *parent, node *kid)
{
    if (parent->n == parent->cap) {
        parent->cap = parent->cap ? parent->cap * 2 : 4;
        parent->kids = xrealloc(parent->kids, parent->cap * sizeof parent->kids[0]);
    }
    parent->kids[parent->n++] = kid;
}

static bool scalar_is(const node *n, const char *word)
{
    return n->kind == N_SCALAR && n->len == strlen(word) && memcmp(n->text, word, n->len) == 0;
}

static bool is_null(const node *n)
{
    return n == NULL || (n->kind == N_SCALAR && n->plain &&
                         (n->len == 0 || scalar_is(n, "~") || scalar_is(n, "null") ||
                          scalar_is(n, "Null") || scalar_is(n, "NULL")));
}

static int parse_bool(const node *n)
{
    if (n->kind != N_SCALAR || !n->plain)
        return -1;
    if (scalar_is(n, "true") || scalar_is(n, "True") || scalar_is(n, "TRUE"))
        return 1;
    if (scalar_is(n, "false") || scalar_is(n, "False") || scalar_is(n, "FALSE"))
        return 0;
    return -1;
}

/* Plain scalar of the form -?[0-9]+ : 1 and *out, 0 not an integer, -1 overflow. */
static int parse_integer(const node *n, int64_t *out)
{
    if (n->kind != N_SCALAR || !n->plain || n->len == 0)
        return 0;
    const char *p = n->text;
    bool neg = *p == '-';
    if (neg || *p == '+')
        p++;
    if (*p == '\0' || (size_t)(p - n->text) + strspn(p, "0123456789") != n->len)
        return 0;
    int64_t v = 0;
    for (; *p; p++) {
        int d = *p - '0';
        if (v > (INT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = neg ? -v : v;
    return 1;
}

/* Plain scalar of the form -?[0-9]+(\.[0-9]+)? */
static bool parse_number(const node *n, double *out)
{
    int64_t i;
    int r = parse_integer(n, &i);
    if (r == 1) {
        *out = (double)i;
        return true;
    }
    if (n->kind != N_SCALAR || !n->plain || n->len == 0)
        return false;
    const char *p = n->text + (n->text[0] == '-');
    size_t digits = strspn(p, "0123456789");
    if (digits == 0 || p[digits] != '.')
        return false;
    size_t frac = strspn(p + digits + 1, "0123456789");
    if (frac == 0 || (size_t)(p - n->text) + digits + 1 + frac != n->len)
        return false;
    *out = strtod(n->text, NULL);
    return true;
}

/* How a node looks, for "expected X, got Y". */
static const char *node_looks_like(const node *n)
{
    int64_t i;
    double d;
    if (n->kind == N_MAP)
        return "a mapping";
    if (n->kind == N_SEQ)
        return "a sequence";
    if (is_null(n))
        return "null";
    if (parse_bool(n) >= 0)
        return "a boolean";
    if (parse_integer(n, &i) != 0)
        return "an integer";
    if (parse_number(n, &d))
        return "a number";
    return "a string";
}

/* ------------------------------------------------------------------ */
/* error collection                                                     */

/*
 * Past MAX_ERRORS an error is counted (found) but not kept, so the list
 * stays readable. No validator may judge its part by how the kept list
 * changed: after the cap it stops changing, and a part with errors would
 * pass for valid. Each parser decides from what it parsed itself; `found`
 * (never capped) decides whether the load as a whole failed.
 */
typedef struct ctx {
    const char *file;
    ps_errors *errs;
    size_t first; /* errs->count when this load began */
    size_t found; /* every error found, kept or not */
    ps_config *cfg;   /* being built: where each key was written goes into it */
    size_t where_cap; /* allocated entries of cfg->where */
} ctx;

static size_t ctx_errors(const ctx *c)
{
    return c->errs->count - c->first;
}

static void err_pos(ctx *c, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void err_pos(ctx *c, int line, int col, const char *fmt, ...)
{
    c->found++;
    if (ctx_errors(c) >= MAX_ERRORS)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    ps_errors_add(c->errs, c->file, line, col, "%s", msg);
    free(msg);
}

#define err_at(c, node, ...) err_pos((c), (node)->line, (node)->col, __VA_ARGS__)

static int error_order(const void *a, const void *b)
{
    const ps_error *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->column != y->column)
        return x->column < y->column ? -1 : 1;
    return 0;
}

/* Sort this load's errors by position. Messages never compare equal by
 * position and content in a way that matters, but keep equal positions in
 * the order they were found: merge-insert is stable and the lists are short. */
static void sort_errors(ctx *c)
{
    ps_error *v = c->errs->items + c->first;
    size_t n = ctx_errors(c);
    for (size_t i = 1; i < n; i++) {
        ps_error t = v[i];
        size_t j = i;
        while (j > 0 && error_order(&v[j - 1], &t) > 0) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = t;
    }
    if (c->found > n)
        ps_errors_add(c->errs, c->file, 0, 0, "too many errors; only the first %d are shown",
                      MAX_ERRORS);
}

/* ------------------------------------------------------------------ */
/* stage 1: bytes -> tree                                               */

/* Position (1-based line and character column) of a byte offset, counting
 * lines as libyaml does for its own errors: CR LF, a lone CR or LF, NEL,
 * LS and PS each end a line (a file saved on Windows or an old Mac must not
 * get line numbers that disagree with the parser's). */
static void offset_position(const unsigned char *buf, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        size_t brk = 0;
        if (buf[i] == '\r' && i + 1 < off && buf[i + 1] == '\n')
            brk = 2;
        else if (buf[i] == '\n' || buf[i] == '\r')
            brk = 1;
        else if (buf[i] == 0xc2 && i + 1 < off && buf[i + 1] == 0x85)
            brk = 2;
        else if (buf[i] == 0xe2 && i + 2 < off && buf[i + 1] == 0x80 &&
                 (buf[i + 2] == 0xa8 || buf[i + 2] == 0xa9))
            brk = 3;
        if (brk) {
            (*line)++;
            *col = 1;
            i += brk - 1;
        } else if ((buf[i] & 0xc0) != 0x80) {
            (*col)++;
        }
    }
}

/* Offset of the first byte that is not valid UTF-8, or len when it is all
 * valid. */
static size_t utf8_invalid_at(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_char_len(s + i, len - i);
        if (n == 0)
            return i;
        i += n;
    }
    return len;
}

static void syntax_error(ctx *c, const yaml_parser_t *p, const unsigned char *buf)
{
    int line, col;
    if (p->error == YAML_MEMORY_ERROR)
        abort();
    if (p->error == YAML_READER_ERROR) {
        offset_position(buf, p->problem_offset, &line, &col);
        err_pos(c, line, col, "syntax error: %s", p->problem ? p->problem : "unreadable input");
        return;
    }
    line = (int)p->problem_mark.line + 1;
    col = (int)p->problem_mark.column + 1;
    if (p->context)
        err_pos(c, line, col, "syntax error: %s (%s at line %d, column %d)",
                p->problem ? p->problem : "invalid YAML", p->context,
                (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    else
        err_pos(c, line, col, "syntax error: %s", p->problem ? p->problem : "invalid YAML");
}

/* The explicit tag of a node event ("!!str", "!custom"), or NULL. */
static const char *event_tag(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return (const char *)ev->data.scalar.tag;
    case YAML_SEQUENCE_START_EVENT:
        return (const char *)ev->data.sequence_start.tag;
    case YAML_MAPPING_START_EVENT:
        return (const char *)ev->data.mapping_start.tag;
    default:
        return NULL;
    }
}

static const char *event_anchor(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return (const char *)ev->data.scalar.anchor;
    case YAML_SEQUENCE_START_EVENT:
        return (const char *)ev->data.sequence_start.anchor;
    case YAML_MAPPING_START_EVENT:
        return (const char *)ev->data.mapping_start.anchor;
    default:
        return NULL;
    }
}

typedef struct builder {
    ctx *c;
    node *stack[PS_CONFIG_MAX_DEPTH];
    size_t depth;
    node *root;
    int documents;
    bool failed; /* a problem that makes the tree unusable was reported */
    bool done;
} builder;

static node *new_node(node_kind kind, const yaml_event_t *ev)
{
    node *n = xcalloc(1, sizeof *n);
    n->kind = kind;
    n->line = (int)ev->start_mark.line + 1;
    n->col = (int)ev->start_mark.column + 1;
    return n;
}

static void attach(builder *b, node *n)
{
    if (b->depth == 0) {
        if (b->root == NULL)
            b->root = n;
        else
            node_free(n); /* unreachable: libyaml gives one root per document */
        return;
    }
    node_add(b->stack[b->depth - 1], n);
}

/* One event into the tree. Stops the parse (b->done) on anything refused. */
static void build_event(builder *b, const yaml_event_t *ev)
{
    ctx *c = b->c;
    int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
    if (event_anchor(ev)) {
        err_pos(c, line, col, "anchors and aliases are not allowed");
        b->failed = true;
    }
    /* A tag would change what a value means ("!!str 5000" is a string, not
     * the number it looks like) or ask for an object: refused like anchors,
     * never silently ignored. Shown as written for the standard ones. */
    const char *tag = event_tag(ev);
    if (tag) {
        static const char std[] = "tag:yaml.org,2002:";
        char q[QBUF];
        const char *t = tag;
        char shown[QBUF + 8];
        if (strncmp(tag, std, sizeof std - 1) == 0)
            t = tag + sizeof std - 1;
        quoted(t, strlen(t), q, sizeof q);
        q[strlen(q) - 1] = '\0'; /* the quotes off: the tag is shown as a tag */
        if (t != tag)
            snprintf(shown, sizeof shown, "!!%s", q + 1);
        else if (tag[0] == '!')
            snprintf(shown, sizeof shown, "%s", q + 1);
        else
            snprintf(shown, sizeof shown, "!<%s>", q + 1);
        err_pos(c, line, col, "tags are not allowed (%s): write the value without one", shown);
        b->failed = true;
    }
    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        b->done = true;
        break;
    case YAML_DOCUMENT_START_EVENT:
        if (b->documents > 0) {
            err_pos(c, line, col, "multiple YAML documents are not allowed");
            b->failed = b->done = true;
        }
        break;
    case YAML_DOCUMENT_END_EVENT:
        b->documents++;
        break;
    case YAML_ALIAS_EVENT:
        err_pos(c, line, col, "aliases are not allowed");
        b->failed = true;
        attach(b, new_node(N_SCALAR, ev)); /* keep mappings paired */
        break;
    case YAML_SCALAR_EVENT: {
        node *n = new_node(N_SCALAR, ev);
        n->len = ev->data.scalar.length;
        n->text = xcalloc(n->len + 1, 1);
        memcpy(n->text, ev->data.scalar.value, n->len);
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        attach(b, n);
        break;
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        if (b->depth == PS_CONFIG_MAX_DEPTH) {
            err_pos(c, line, col, "nesting deeper than %d levels is not allowed",
                    PS_CONFIG_MAX_DEPTH);
            b->failed = b->done = true;
            break;
        }
        node *n = new_node(ev->type == YAML_MAPPING_START_EVENT ? N_MAP : N_SEQ, ev);
        attach(b, n);
        b->stack[b->depth++] = n;
        break;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (b->depth > 0)
            b->depth--;
        break;
    default:
        break;
    }
}

/* Returns the tree (an empty document gives NULL) or sets *ok = false. */
static node *build_tree(ctx *c, const unsigned char *buf, size_t len, bool *ok)
{
    /* A UTF-8 byte order mark (Windows editors write one) is no content.
     * libyaml skips it only when it detects the encoding itself, which we
     * do not let it do; dropped here, positions on line 1 do not count it. */
    if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0) {
        buf += 3;
        len -= 3;
    }
    size_t bad = utf8_invalid_at(buf, len);
    if (bad < len) {
        int line, col;
        offset_position(buf, bad, &line, &col);
        err_pos(c, line, col, "the file is not valid UTF-8");
        *ok = false;
        return NULL;
    }
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        abort();
    yaml_parser_set_input_string(&p, buf, len);
    yaml_parser_set_encoding(&p, YAML_UTF8_ENCODING);
    builder b = { .c = c };
    while (!b.done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            syntax_error(c, &p, buf);
            b.failed = true;
            break;
        }
        build_event(&b, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    if (b.failed) {
        node_free(b.root);
        *ok = false;
        return NULL;
    }
    *ok = true;
    return b.root;
}

/* ------------------------------------------------------------------ */
/* stage 2: the schema                                                  */

typedef enum {
    K_SECTION,  /* nested mapping, described by `sub` */
    K_STRING,   /* char *, optional `check` */
    K_INT,      /* int in [min, max] */
    K_INT64,    /* int64_t in [min, max] */
    K_DURATION, /* int64_t milliseconds in [min, max] */
    K_NUMBER,   /* double in [min, max] */
    K_BOOL,     /* bool */
    K_ENUM,     /* int: values[i] (or i) for words[i] */
    K_CUSTOM,   /* parse/init/diff/free functions */
} key_kind;

#define F_SECRET 1u  /* never print the value (diff says "changed") */
#define F_NULL_OK 2u /* a null value means the empty string */
/* A reload cannot change it: the running value stays, and the reload says
 * the key needs a restart (ps_config_keep_restart_only). Leaf keys only. */
#define F_RESTART 4u
/* K_NUMBER: the value must be greater than min, not equal to it (a ratio
 * that must be positive). */
#define F_ABOVE_MIN 8u

typedef struct section section;
/* A string check: NULL when fine, else why not. */
typedef const char *(*string_check)(const char *s, size_t len);
/* Custom handlers get the base struct of the section, not the field. */
typedef void (*custom_parse)(ctx *c, const node *v, const char *path, void *base);
typedef void (*custom_init)(void *base);
typedef size_t (*custom_diff)(const void *old_base, const void *new_base, ps_errors *out);

typedef struct key_spec {
    const char *name;
    key_kind kind;
    size_t off;
    bool required;
    int64_t min, max, def;
    double def_num;           /* K_NUMBER's default (def is for the integer kinds) */
    const char *def_str;
    const char *const *words; /* K_ENUM, NULL-terminated */
    const int *values;        /* K_ENUM: NULL means the index */
    string_check check;
    const section *sub;
    custom_parse parse;
    custom_init init;
    custom_diff diff;
    unsigned flags;
} key_spec;

struct section {
    const key_spec *keys;
    size_t n;
};

#define SECTION(arr) { arr, sizeof arr / sizeof arr[0] }
#define CFG(field) offsetof(ps_config, field)

#define SEC_MS INT64_C(1000)
#define MIN_MS (60 * SEC_MS)
#define HOUR_MS (60 * MIN_MS)
#define DAY_MS (24 * HOUR_MS)

/* string checks ------------------------------------------------------ */

static const char *check_identifier(const char *s, size_t len)
{
    if (len == 0)
        return "must not be empty";
    if (memchr(s, '\0', len))
        return "must not contain a NUL character";
    if (len > PG_NAME_MAX)
        return "is longer than 63 bytes, PostgreSQL's limit for names";
    return NULL;
}

static const char *check_migration_id(const char *s, size_t len)
{
    if (len < 1 || len > 100 ||
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != len)
        return "must be 1 to 100 characters from A-Z a-z 0-9 _ . -";
    return NULL;
}

static const char *check_conninfo(const char *s, size_t len)
{
    if (memchr(s, '\0', len))
        return "must not contain a NUL character";
    if (ps_conninfo_has_password(s))
        return "contains a password; passwords must not be written in the configuration file: "
               "use PGPASSFILE/.pgpass or a service file (PGSERVICEFILE) instead";
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(s, &err);
    /* libpq's message quotes pieces of the string: not repeated here. */
    PQfreemem(err);
    if (opts == NULL)
        return "is not a valid libpq connection string (key=value pairs or a postgresql:// URI)";
    PQconninfoFree(opts);
    return NULL;
}

static const char *check_listen(const char *s, size_t len)
{
    static const char *why = "must be \"host:port\" with a port between 1 and 65535, or empty";
    if (len == 0)
        return NULL;
    if (memchr(s, '\0', len))
        return why;
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s)
        return why;
    const char *port = colon + 1;
    size_t digits = strspn(port, "0123456789");
    if (digits == 0 || digits > 5 || port[digits] != '\0')
        return why;
    long v = strtol(port, NULL, 10);
    if (v < 1 || v > 65535)
        return why;
    return NULL;
}

/* the sections ------------------------------------------------------- */

static void parse_tables(ctx *c, const node *v, const char *path, void *base);
static size_t diff_tables(const void *a, const void *b, ps_errors *out);
static void parse_key_columns(ctx *c, const node *v, const char *path, void *base);
static void parse_columns(ctx *c, const node *v, const char *path, void *base);
static void parse_reverse_columns(ctx *c, const node *v, const char *path, void *base);
static void parse_stages(ctx *c, const node *v, const char *path, void *base);
static void init_stages(void *base);
static size_t diff_stages(const void *a, const void *b, ps_errors *out);

static const char *const on_apply_error_words[] = { "quarantine", "halt", NULL };
static const char *const start_words[] = { "manual", "auto", NULL };
static const char *const on_trip_words[] = { "step_down", "rollback", "pause", NULL };
static const char *const finally_words[] = { "wait", "promote", NULL };
static const char *const level_words[] = { "debug", "info", "notice", "warning", "error", NULL };
static const int level_values[] = { LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING, LOG_ERR };

static const key_spec database_keys[] = {
    { .name = "conninfo", .kind = K_STRING, .off = CFG(database.conninfo), .required = true,
      .check = check_conninfo, .flags = F_SECRET },
};

static const key_spec migration_keys[] = {
    /* restart-only: the leader lock is taken per id, and the daemon's
     * sessions, counters and logs are that migration's */
    { .name = "id", .kind = K_STRING, .off = CFG(migration.id), .required = true,
      .check = check_migration_id, .flags = F_RESTART },
    { .name = "schema", .kind = K_STRING, .off = CFG(migration.schema), .def_str = "public",
      .check = check_identifier },
    { .name = "shadow_suffix", .kind = K_STRING, .off = CFG(migration.shadow_suffix),
      .def_str = "_shadow", .check = check_identifier },
    /* after shadow_suffix: the table check uses it */
    { .name = "tables", .kind = K_CUSTOM, .required = true, .parse = parse_tables,
      .diff = diff_tables },
};

static const key_spec sync_keys[] = {
    { .name = "batch_size", .kind = K_INT, .off = CFG(sync.batch_size), .min = 1, .max = 100000,
      .def = 5000 },
    { .name = "batch_delay", .kind = K_DURATION, .off = CFG(sync.batch_delay_ms), .min = 0,
      .max = 10 * SEC_MS, .def = 0 },
    { .name = "catchup_interval", .kind = K_DURATION, .off = CFG(sync.catchup_interval_ms),
      .min = 10, .max = HOUR_MS, .def = SEC_MS },
    /* the chunk engine (issue #12): its connections, and the time one chunk
     * aims at; backfill_chunk and verify.chunk_rows bound a chunk's rows */
    { .name = "workers", .kind = K_INT, .off = CFG(sync.workers), .min = 1, .max = 32, .def = 2 },
    { .name = "chunk_target", .kind = K_DURATION, .off = CFG(sync.chunk_target_ms), .min = 10,
      .max = 60 * SEC_MS, .def = 500 },
    { .name = "backfill_chunk", .kind = K_INT, .off = CFG(sync.backfill_chunk), .min = 1,
      .max = 1000000, .def = 5000 },
    { .name = "max_replication_lag", .kind = K_DURATION, .off = CFG(sync.max_replication_lag_ms),
      .min = 0, .max = DAY_MS, .def = 10 * SEC_MS },
    { .name = "on_apply_error", .kind = K_ENUM, .off = CFG(sync.on_apply_error),
      .words = on_apply_error_words, .def = PS_ON_APPLY_ERROR_QUARANTINE },
};

static const key_spec verify_keys[] = {
    { .name = "interval", .kind = K_DURATION, .off = CFG(verify.interval_ms), .min = 0,
      .max = 7 * DAY_MS, .def = 10 * MIN_MS },
    { .name = "chunk_rows", .kind = K_INT, .off = CFG(verify.chunk_rows), .min = 1,
      .max = 10000000, .def = 10000 },
    { .name = "repair", .kind = K_BOOL, .off = CFG(verify.repair), .def = true },
    /* shadow-read sampling (src/monitor/sampler.c, sql/86-sampling.sql) */
    { .name = "sample_interval", .kind = K_DURATION, .off = CFG(verify.sample_interval_ms),
      .min = 0, .max = DAY_MS, .def = 10 * SEC_MS },
    { .name = "sample_keys", .kind = K_INT, .off = CFG(verify.sample_keys), .min = 1, .max = 1000,
      .def = 20 },
};

static const key_spec monitor_keys[] = {
    { .name = "poll_interval", .kind = K_DURATION, .off = CFG(monitor.poll_interval_ms),
      .min = 100, .max = HOUR_MS, .def = 10 * SEC_MS },
};

static const key_spec gates_keys[] = {
    { .name = "min_sync_percent", .kind = K_NUMBER, .off = CFG(cutover.gates.min_sync_percent),
      .min = 0, .max = 100, .def_num = 99 },
    { .name = "max_sync_lag", .kind = K_DURATION, .off = CFG(cutover.gates.max_sync_lag_ms),
      .min = 0, .max = DAY_MS, .def = 30 * SEC_MS },
    { .name = "max_diverged", .kind = K_INT64, .off = CFG(cutover.gates.max_diverged), .min = 0,
      .max = 1000000000, .def = 5 },
    { .name = "max_quarantined", .kind = K_INT64, .off = CFG(cutover.gates.max_quarantined),
      .min = 0, .max = 1000000000, .def = 0 },
    /* shadow-read sampling's window (sql/86-sampling.sql: pgshadow.read_sampling) */
    { .name = "max_sample_mismatches", .kind = K_INT64,
      .off = CFG(cutover.gates.max_sample_mismatches), .min = 0, .max = 1000000000, .def = 0 },
    { .name = "max_latency_ratio", .kind = K_NUMBER, .off = CFG(cutover.gates.max_latency_ratio),
      .min = 0, .max = 1000, .def_num = 1.5, .flags = F_ABOVE_MIN },
};

static const key_spec promote_keys[] = {
    { .name = "lock_timeout", .kind = K_DURATION, .off = CFG(cutover.promote.lock_timeout_ms),
      .min = 10, .max = 10 * MIN_MS, .def = 2 * SEC_MS },
    { .name = "attempts", .kind = K_INT, .off = CFG(cutover.promote.attempts), .min = 1,
      .max = 1000, .def = 10 },
    { .name = "keep_legacy", .kind = K_BOOL, .off = CFG(cutover.promote.keep_legacy), .def = true },
};

static const section gates_section = SECTION(gates_keys);
static const section promote_section = SECTION(promote_keys);

static const key_spec cutover_keys[] = {
    { .name = "start", .kind = K_ENUM, .off = CFG(cutover.start), .words = start_words,
      .def = PS_CUTOVER_START_MANUAL },
    { .name = "gates", .kind = K_SECTION, .sub = &gates_section },
    { .name = "failures_to_trip", .kind = K_INT, .off = CFG(cutover.failures_to_trip), .min = 1,
      .max = 1000, .def = 3 },
    { .name = "on_trip", .kind = K_ENUM, .off = CFG(cutover.on_trip), .words = on_trip_words,
      .def = PS_ON_TRIP_STEP_DOWN },
    { .name = "stages", .kind = K_CUSTOM, .parse = parse_stages, .init = init_stages,
      .diff = diff_stages },
    { .name = "finally", .kind = K_ENUM, .off = CFG(cutover.finally), .words = finally_words,
      .def = PS_FINALLY_WAIT },
    { .name = "promote", .kind = K_SECTION, .sub = &promote_section },
};

static const key_spec log_keys[] = {
    { .name = "level", .kind = K_ENUM, .off = CFG(log.level), .words = level_words,
      .values = level_values, .def = 1 },
};

static const key_spec metrics_keys[] = {
    { .name = "listen", .kind = K_STRING, .off = CFG(metrics.listen), .def_str = "127.0.0.1:9187",
      .check = check_listen, .flags = F_NULL_OK },
};

static const section database_section = SECTION(database_keys);
static const section migration_section = SECTION(migration_keys);
static const section sync_section = SECTION(sync_keys);
static const section verify_section = SECTION(verify_keys);
static const section monitor_section = SECTION(monitor_keys);
static const section cutover_section = SECTION(cutover_keys);
static const section log_section = SECTION(log_keys);
static const section metrics_section = SECTION(metrics_keys);

static const key_spec root_keys[] = {
    { .name = "database", .kind = K_SECTION, .sub = &database_section, .required = true },
    { .name = "migration", .kind = K_SECTION, .sub = &migration_section, .required = true },
    { .name = "sync", .kind = K_SECTION, .sub = &sync_section },
    { .name = "verify", .kind = K_SECTION, .sub = &verify_section },
    { .name = "monitor", .kind = K_SECTION, .sub = &monitor_section },
    { .name = "cutover", .kind = K_SECTION, .sub = &cutover_section },
    { .name = "log", .kind = K_SECTION, .sub = &log_section },
    { .name = "metrics", .kind = K_SECTION, .sub = &metrics_section },
};
static const section root_section = SECTION(root_keys);

/* One entry of migration.tables (base: ps_table_config). */
static const key_spec table_keys[] = {
    { .name = "name", .kind = K_STRING, .off = offsetof(ps_table_config, name), .required = true,
      .check = check_identifier },
    { .name = "key", .kind = K_CUSTOM, .parse = parse_key_columns },
    { .name = "columns", .kind = K_CUSTOM, .parse = parse_columns },
    { .name = "reverse_columns", .kind = K_CUSTOM, .parse = parse_reverse_columns },
};
static const section table_section = SECTION(table_keys);

/* One entry of cutover.stages (base: ps_stage). */
static const key_spec stage_keys[] = {
    { .name = "percent", .kind = K_INT, .off = offsetof(ps_stage, percent), .required = true,
      .min = 1, .max = 100 },
    { .name = "hold", .kind = K_DURATION, .off = offsetof(ps_stage, hold_ms), .required = true,
      .min = 1, .max = 365 * DAY_MS },
};
static const section stage_section = SECTION(stage_keys);

/* defaults ------------------------------------------------------------ */

static void apply_defaults(const section *sec, void *base)
{
    for (size_t i = 0; i < sec->n; i++) {
        const key_spec *k = &sec->keys[i];
        void *f = (char *)base + k->off;
        switch (k->kind) {
        case K_SECTION:
            apply_defaults(k->sub, base);
            break;
        case K_STRING:
            if (k->def_str)
                *(char **)f = xstrdup(k->def_str);
            break;
        case K_INT:
            *(int *)f = (int)k->def;
            break;
        case K_INT64:
        case K_DURATION:
            *(int64_t *)f = k->def;
            break;
        case K_NUMBER:
            *(double *)f = k->def_num;
            break;
        case K_BOOL:
            *(bool *)f = k->def != 0;
            break;
        case K_ENUM:
            *(int *)f = k->values ? k->values[k->def] : (int)k->def;
            break;
        case K_CUSTOM:
            if (k->init)
                k->init(base);
            break;
        }
    }
}

static const ps_stage default_stages[] = {
    { 1, 1 * HOUR_MS }, { 5, 2 * HOUR_MS }, { 20, 4 * HOUR_MS }, { 50, 4 * HOUR_MS }, { 100, 8 * HOUR_MS },
};

static void init_stages(void *base)
{
    ps_config *cfg = base;
    size_t n = sizeof default_stages / sizeof default_stages[0];
    cfg->cutover.stages = xcalloc(n, sizeof default_stages[0]);
    memcpy(cfg->cutover.stages, default_stages, sizeof default_stages);
    cfg->cutover.n_stages = n;
}

/* the walker ----------------------------------------------------------- */

static char *child_path(const char *path, const char *name)
{
    return path[0] ? xasprintf("%s.%s", path, name) : xstrdup(name);
}

/* "path: " or "" at the top level, for message prefixes. */
#define PFX(path) (path)[0] ? (path) : "", (path)[0] ? ": " : ""

static void type_error(ctx *c, const node *v, const char *path, const char *expected)
{
    err_at(c, v, "%s%sexpected %s, got %s", PFX(path), expected, node_looks_like(v));
}

static void parse_value(ctx *c, const key_spec *k, const node *v, const char *path, void *base);
static void walk_section(ctx *c, const section *sec, const node *map, const char *path, void *base);

/* Remember where key `path` was written (its key node), for messages about
 * the key rather than its value. path is copied. */
static void note_position(ctx *c, const char *path, const node *key)
{
    ps_config *cfg = c->cfg;
    if (cfg == NULL)
        return;
    if (cfg->n_where == c->where_cap) {
        /* doubling: a hostile file may hold many thousand table entries */
        c->where_cap = c->where_cap ? 2 * c->where_cap : 32;
        cfg->where = xrealloc(cfg->where, c->where_cap * sizeof *cfg->where);
    }
    cfg->where[cfg->n_where++] =
        (ps_config_pos){ .key = xstrdup(path), .line = key->line, .column_no = key->col };
}

static int key_order(const void *a, const void *b)
{
    const node *x = *(node *const *)a, *y = *(node *const *)b;
    size_t n = x->len < y->len ? x->len : y->len;
    int r = memcmp(x->text, y->text, n);
    if (r != 0)
        return r;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    /* equal names: earlier in the file first, so the first occurrence wins */
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->col < y->col ? -1 : (x->col > y->col);
}

/* Report repeated names among `names` (scalar nodes) with `what`; mark the
 * later ones dup. Sorting keeps this O(n log n) for hostile files. Returns
 * how many were repeated. */
static size_t mark_duplicates(ctx *c, node **names, size_t n, const char *path, const char *what)
{
    size_t dups = 0;
    node **v = xcalloc(n, sizeof *v);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (names[i]->kind == N_SCALAR)
            v[m++] = names[i];
    qsort(v, m, sizeof *v, key_order);
    for (size_t i = 1, first = 0; i < m; i++) {
        if (v[i]->len == v[first]->len && memcmp(v[i]->text, v[first]->text, v[i]->len) == 0) {
            char q[QBUF];
            v[i]->dup = true;
            dups++;
            err_at(c, v[i], "%s%sduplicate %s %s (first at line %d, column %d)", PFX(path), what,
                   quoted(v[i]->text, v[i]->len, q, sizeof q), v[first]->line, v[first]->col);
        } else {
            first = i;
        }
    }
    free(v);
    return dups;
}

static size_t mark_duplicate_keys(ctx *c, const node *map, const char *path)
{
    size_t n = map->n / 2;
    node **keys = xcalloc(n, sizeof *keys);
    for (size_t i = 0; i < n; i++)
        keys[i] = map->kids[2 * i];
    size_t dups = mark_duplicates(c, keys, n, path, "key");
    free(keys);
    return dups;
}

static const key_spec *find_key(const section *sec, const node *key)
{
    for (size_t i = 0; i < sec->n; i++)
        if (scalar_is(key, sec->keys[i].name))
            return &sec->keys[i];
    return NULL;
}

/* The value of the first (non-duplicate) `name` key, or NULL; its key in *key. */
static const node *map_get_key(const node *map, const char *name, const node **key)
{
    if (map == NULL || map->kind != N_MAP)
        return NULL;
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        if (!map->kids[i]->dup && scalar_is(map->kids[i], name)) {
            *key = map->kids[i];
            return map->kids[i + 1];
        }
    }
    return NULL;
}

static const node *map_get(const node *map, const char *name)
{
    const node *key;
    return map_get_key(map, name, &key);
}

static void unknown_key(ctx *c, const section *sec, const node *key, const char *path)
{
    char known[512] = "";
    size_t o = 0;
    for (size_t i = 0; i < sec->n && o < sizeof known; i++)
        o += (size_t)snprintf(known + o, sizeof known - o, "%s%s", i ? ", " : "", sec->keys[i].name);
    char q[QBUF];
    quoted(key->text, key->len, q, sizeof q);
    if (path[0])
        err_at(c, key, "%s: unknown key %s (known keys: %s)", path, q, known);
    else
        err_at(c, key, "unknown top-level key %s (known keys: %s)", q, known);
}

/*
 * Apply a section's table to a mapping: first the keys as written (duplicates,
 * non-string and unknown keys), then each known key in table order (so a
 * check may rely on an earlier key, e.g. tables on shadow_suffix). A null
 * value (`verify:` with nothing under it) is an empty mapping.
 */
static void walk_section(ctx *c, const section *sec, const node *map, const char *path, void *base)
{
    if (!is_null(map) && map->kind != N_MAP) {
        type_error(c, map, path, "a mapping");
        return;
    }
    if (map->kind == N_MAP) {
        mark_duplicate_keys(c, map, path);
        for (size_t i = 0; i + 1 < map->n; i += 2) {
            const node *key = map->kids[i];
            if (key->dup)
                continue;
            if (key->kind != N_SCALAR)
                err_at(c, key, "%s%smapping keys must be strings", PFX(path));
            else if (find_key(sec, key) == NULL)
                unknown_key(c, sec, key, path);
        }
    }
    for (size_t i = 0; i < sec->n; i++) {
        const key_spec *k = &sec->keys[i];
        const node *key = NULL;
        const node *v = map_get_key(map, k->name, &key);
        /* An empty section reports what it lacks at its key, not past the colon. */
        node stand_in;
        if (v && k->kind == K_SECTION && is_null(v)) {
            stand_in = (node){ .kind = N_MAP, .line = key->line, .col = key->col };
            v = &stand_in;
        }
        if (v == NULL) {
            if (k->required && path[0])
                err_at(c, map, "%s: missing required key \"%s\"", path, k->name);
            else if (k->required)
                err_at(c, map, "missing required section \"%s\"", k->name);
            continue;
        }
        char *p = child_path(path, k->name);
        if (k->kind != K_SECTION)
            note_position(c, p, key);
        parse_value(c, k, v, p, base);
        free(p);
    }
}

/* A number as written, cut short: "000...0001" may be a megabyte long. */
static const char *number_text(const node *v, char *buf, size_t len)
{
    if (v->len < 40)
        snprintf(buf, len, "%s", v->text);
    else
        snprintf(buf, len, "%.40s...", v->text);
    return buf;
}

static void range_error_int(ctx *c, const node *v, const char *path, const key_spec *k)
{
    char t[64];
    err_at(c, v, "%s: must be between %" PRId64 " and %" PRId64 " (got %s)", path, k->min, k->max,
           number_text(v, t, sizeof t));
}

static void parse_int(ctx *c, const key_spec *k, const node *v, const char *path, void *f)
{
    int64_t x;
    int r = parse_integer(v, &x);
    if (r == 0) {
        type_error(c, v, path, "an integer");
        return;
    }
    if (r < 0 || x < k->min || x > k->max) {
        range_error_int(c, v, path, k);
        return;
    }
    if (k->kind == K_INT)
        *(int *)f = (int)x;
    else
        *(int64_t *)f = x;
}

static void parse_duration(ctx *c, const key_spec *k, const node *v, const char *path, void *f)
{
    if (v->kind != N_SCALAR || is_null(v)) {
        type_error(c, v, path, "a duration such as 30s");
        return;
    }
    int64_t ms;
    const char *why;
    char q[QBUF];
    if (memchr(v->text, '\0', v->len) || ps_duration_parse(v->text, &ms, &why) != 0) {
        if (memchr(v->text, '\0', v->len))
            why = "unknown duration unit (use ms, s, m, h or d)";
        err_at(c, v, "%s: invalid duration %s: %s", path, quoted(v->text, v->len, q, sizeof q), why);
        return;
    }
    if (ms < k->min || ms > k->max) {
        char lo[32], hi[32], got[32];
        ps_duration_format(k->min, lo, sizeof lo);
        ps_duration_format(k->max, hi, sizeof hi);
        ps_duration_format(ms, got, sizeof got);
        err_at(c, v, "%s: must be between %s and %s (got %s)", path, lo, hi, got);
        return;
    }
    *(int64_t *)f = ms;
}

static void parse_number_key(ctx *c, const key_spec *k, const node *v, const char *path, void *f)
{
    double d;
    if (!parse_number(v, &d)) {
        type_error(c, v, path, "a number");
        return;
    }
    if ((k->flags & F_ABOVE_MIN) && (d <= (double)k->min || d > (double)k->max)) {
        char t[64];
        err_at(c, v, "%s: must be greater than %" PRId64 " and at most %" PRId64 " (got %s)", path,
               k->min, k->max, number_text(v, t, sizeof t));
        return;
    }
    if (d < (double)k->min || d > (double)k->max) {
        char t[64];
        err_at(c, v, "%s: must be between %" PRId64 " and %" PRId64 " (got %s)", path, k->min,
               k->max, number_text(v, t, sizeof t));
        return;
    }
    *(double *)f = d;
}

static void parse_enum(ctx *c, const key_spec *k, const node *v, const char *path, void *f)
{
    if (v->kind != N_SCALAR || is_null(v)) {
        type_error(c, v, path, "a string");
        return;
    }
    size_t i;
    for (i = 0; k->words[i]; i++) {
        if (scalar_is(v, k->words[i])) {
            *(int *)f = k->values ? k->values[i] : (int)i;
            return;
        }
    }
    char words[256] = "";
    size_t o = 0;
    for (i = 0; k->words[i] && o < sizeof words; i++)
        o += (size_t)snprintf(words + o, sizeof words - o, "%s%s", i ? ", " : "", k->words[i]);
    char q[QBUF];
    err_at(c, v, "%s: must be one of %s (got %s)", path, words, quoted(v->text, v->len, q, sizeof q));
}

static void parse_string(ctx *c, const key_spec *k, const node *v, const char *path, void *f)
{
    const char *text = v->text;
    size_t len = v->len;
    if (v->kind == N_SCALAR && is_null(v) && (k->flags & F_NULL_OK)) {
        text = "";
        len = 0;
    } else if (v->kind != N_SCALAR || is_null(v)) {
        type_error(c, v, path, "a string");
        return;
    }
    const char *why = k->check ? k->check(text, len) : NULL;
    if (why == NULL && memchr(text, '\0', len))
        why = "must not contain a NUL character";
    if (why) {
        err_at(c, v, "%s: %s", path, why);
        return;
    }
    char **slot = f;
    free(*slot);
    *slot = xstrdup(text);
}

static void parse_value(ctx *c, const key_spec *k, const node *v, const char *path, void *base)
{
    void *f = (char *)base + k->off;
    int b;
    switch (k->kind) {
    case K_SECTION:
        walk_section(c, k->sub, v, path, base);
        break;
    case K_STRING:
        parse_string(c, k, v, path, f);
        break;
    case K_INT:
    case K_INT64:
        parse_int(c, k, v, path, f);
        break;
    case K_DURATION:
        parse_duration(c, k, v, path, f);
        break;
    case K_NUMBER:
        parse_number_key(c, k, v, path, f);
        break;
    case K_BOOL:
        b = parse_bool(v);
        if (b < 0)
            type_error(c, v, path, "a boolean (true or false)");
        else
            *(bool *)f = b;
        break;
    case K_ENUM:
        parse_enum(c, k, v, path, f);
        break;
    case K_CUSTOM:
        k->parse(c, v, path, base);
        break;
    }
}

/* migration.tables --------------------------------------------------- */

static void parse_tables(ctx *c, const node *v, const char *path, void *base)
{
    ps_config *cfg = base;
    if (v->kind != N_SEQ) {
        type_error(c, v, path, "a sequence");
        return;
    }
    if (v->n == 0) {
        err_at(c, v, "%s: must list at least one table", path);
        return;
    }
    cfg->migration.tables = xcalloc(v->n, sizeof *cfg->migration.tables);
    cfg->migration.n_tables = v->n;
    node **names = xcalloc(v->n, sizeof *names);
    size_t n_names = 0;
    size_t suffix = cfg->migration.shadow_suffix ? strlen(cfg->migration.shadow_suffix) : 0;
    for (size_t i = 0; i < v->n; i++) {
        ps_table_config *t = &cfg->migration.tables[i];
        const node *item = v->kids[i];
        t->line = item->line;
        t->column_no = item->col;
        char *p = xasprintf("%s[%zu]", path, i);
        walk_section(c, &table_section, item, p, t);
        const node *name = map_get(item, "name");
        /* t->name is set only when the name itself is valid: it takes part
         * in the checks across tables whatever else is wrong in the entry. */
        if (t->name && name) {
            names[n_names++] = (node *)name;
            if (strlen(t->name) + suffix > PG_NAME_MAX)
                err_at(c, name, "%s.name: with shadow_suffix the shadow table's name is longer "
                       "than 63 bytes and PostgreSQL would truncate it", p);
        }
        free(p);
    }
    mark_duplicates(c, names, n_names, path, "table");
    free(names);
}

static void parse_key_columns(ctx *c, const node *v, const char *path, void *base)
{
    ps_table_config *t = base;
    if (v->kind != N_SEQ) {
        type_error(c, v, path, "a sequence");
        return;
    }
    if (v->n == 0) {
        err_at(c, v, "%s: must list at least one column (leave it out to use the primary key)", path);
        return;
    }
    bool ok = true;
    for (size_t i = 0; i < v->n; i++) {
        const node *col = v->kids[i];
        const char *why;
        if (col->kind != N_SCALAR || is_null(col)) {
            err_at(c, col, "%s[%zu]: expected a string, got %s", path, i, node_looks_like(col));
            ok = false;
        } else if ((why = check_identifier(col->text, col->len)) != NULL) {
            err_at(c, col, "%s[%zu]: column name %s", path, i, why);
            ok = false;
        }
    }
    if (mark_duplicates(c, v->kids, v->n, path, "column") > 0)
        ok = false;
    if (!ok)
        return;
    t->key = xcalloc(v->n, sizeof *t->key);
    t->n_key = v->n;
    for (size_t i = 0; i < v->n; i++)
        t->key[i] = xstrdup(v->kids[i]->text);
}

/* columns: and reverse_columns: column name -> SQL expression. */
static void parse_column_map(ctx *c, const node *v, const char *path, ps_column_map **out, size_t *n_out)
{
    if (v->kind != N_MAP) {
        type_error(c, v, path, "a mapping");
        return;
    }
    bool ok = mark_duplicate_keys(c, v, path) == 0;
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const node *col = v->kids[i], *expr = v->kids[i + 1];
        const char *why;
        char q[QBUF];
        if (col->kind != N_SCALAR || is_null(col)) {
            err_at(c, col, "%s: column names must be strings", path);
            ok = false;
            continue;
        }
        if ((why = check_identifier(col->text, col->len)) != NULL) {
            err_at(c, col, "%s: column name %s %s", path, quoted(col->text, col->len, q, sizeof q), why);
            ok = false;
            continue;
        }
        quoted(col->text, col->len, q, sizeof q);
        if (expr->kind != N_SCALAR || is_null(expr)) {
            err_at(c, expr, "%s: column %s: expected an SQL expression string, got %s", path, q,
                   node_looks_like(expr));
            ok = false;
        } else if (expr->len == 0 || memchr(expr->text, '\0', expr->len)) {
            err_at(c, expr, "%s: column %s: the expression must be non-empty and contain no NUL",
                   path, q);
            ok = false;
        }
    }
    if (!ok)
        return;
    ps_column_map *m = xcalloc(v->n / 2, sizeof *m);
    for (size_t i = 0; i < v->n / 2; i++) {
        const node *col = v->kids[2 * i], *expr = v->kids[2 * i + 1];
        m[i].column = xstrdup(col->text);
        m[i].expr = xstrdup(expr->text);
        m[i].line = col->line;
        m[i].column_no = col->col;
    }
    *out = m;
    *n_out = v->n / 2;
}

static void parse_columns(ctx *c, const node *v, const char *path, void *base)
{
    ps_table_config *t = base;
    parse_column_map(c, v, path, &t->columns, &t->n_columns);
}

static void parse_reverse_columns(ctx *c, const node *v, const char *path, void *base)
{
    ps_table_config *t = base;
    parse_column_map(c, v, path, &t->reverse, &t->n_reverse);
}

/* cutover.stages ------------------------------------------------------ */

static void parse_stages(ctx *c, const node *v, const char *path, void *base)
{
    ps_config *cfg = base;
    if (v->kind != N_SEQ) {
        type_error(c, v, path, "a sequence");
        return;
    }
    if (v->n == 0) {
        err_at(c, v, "%s: must list at least one stage", path);
        return;
    }
    free(cfg->cutover.stages);
    cfg->cutover.stages = xcalloc(v->n, sizeof *cfg->cutover.stages);
    cfg->cutover.n_stages = v->n;
    int prev = 0;
    for (size_t i = 0; i < v->n; i++) {
        ps_stage *s = &cfg->cutover.stages[i];
        char *p = xasprintf("%s[%zu]", path, i);
        walk_section(c, &stage_section, v->kids[i], p, s);
        const node *pct = map_get(v->kids[i], "percent");
        if (s->percent != 0 && s->percent <= prev)
            err_at(c, pct, "%s.percent: stages must be strictly increasing (%d after %d)", p,
                   s->percent, prev);
        if (s->percent != 0)
            prev = s->percent;
        if (i + 1 == v->n && s->percent != 0 && s->percent != 100)
            err_at(c, pct, "%s.percent: the last stage must be 100 (got %d)", p, s->percent);
        free(p);
    }
}

/* ------------------------------------------------------------------ */
/* load                                                                 */

int ps_config_load_buffer(const char *name, const char *buf, size_t len, ps_config **out,
                          ps_errors *errs)
{
    ctx c = { .file = name, .errs = errs, .first = errs->count };
    *out = NULL;
    if (len > PS_CONFIG_MAX_BYTES) {
        err_pos(&c, 0, 0, "the file is larger than %d bytes; refusing to read it",
                PS_CONFIG_MAX_BYTES);
        return -1;
    }
    bool ok;
    node *root = build_tree(&c, (const unsigned char *)buf, len, &ok);
    if (!ok) {
        sort_errors(&c);
        return -1;
    }
    node empty = { .kind = N_MAP, .line = 1, .col = 1 };
    ps_config *cfg = xcalloc(1, sizeof *cfg);
    cfg->path = xstrdup(name ? name : "");
    c.cfg = cfg;
    apply_defaults(&root_section, cfg);
    walk_section(&c, &root_section, root ? root : &empty, "", cfg);
    node_free(root);
    if (c.found > 0) {
        sort_errors(&c);
        ps_config_free(cfg);
        return -1;
    }
    *out = cfg;
    return 0;
}

/* A directory in which others may replace the file: writable by group or
 * others, and not sticky (in a sticky one such as /tmp, only the owner of a
 * file may rename or remove it). */
static bool dir_open_to_others(const struct stat *st)
{
    return S_ISDIR(st->st_mode) && (st->st_mode & (S_IWGRP | S_IWOTH)) &&
           !(st->st_mode & S_ISVTX);
}

/* Refuse a directory of `path` in which others may replace it: the one it is
 * named in, and the one it really is in when it is a symbolic link. */
static int check_directories(const char *path, ps_errors *errs)
{
    char *dirs[2] = { xstrdup(path), realpath(path, NULL) };
    int r = 0;
    for (int i = 0; i < 2 && r == 0; i++) {
        if (dirs[i] == NULL)
            continue;
        char *slash = strrchr(dirs[i], '/');
        if (slash == NULL)
            strcpy(dirs[i], ".");
        else if (slash == dirs[i])
            slash[1] = '\0'; /* "/x" is in "/" */
        else
            *slash = '\0';
        struct stat st;
        if (stat(dirs[i], &st) == 0 && dir_open_to_others(&st)) {
            ps_errors_add(errs, path, 0, 0,
                          "its directory %s is writable by group or others (mode 0%o) and not "
                          "sticky; whoever can write it can replace the file (chmod go-w %s)",
                          dirs[i], (unsigned)(st.st_mode & 07777), dirs[i]);
            r = -1;
        }
    }
    free(dirs[0]);
    free(dirs[1]);
    return r;
}

int ps_config_load(const char *path, ps_config **out, ps_errors *errs)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        ps_errors_add(errs, path, 0, 0, "cannot open: %s", strerror(e));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ps_errors_add(errs, path, 0, 0, "not a regular file");
        close(fd);
        return -1;
    }
    /* Whoever can write the file can point database.conninfo elsewhere and
     * put SQL in columns: (pgshadowctl install runs it with its own role):
     * refused, as sshd refuses such files, rather than warned about. No
     * documented setup has it: the installed file is 0644 root's, and the
     * unit runs with UMask=0077. */
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        ps_errors_add(errs, path, 0, 0,
                      "the file is writable by group or others (mode 0%o); whoever can write it "
                      "can change database.conninfo and the SQL of columns: (chmod go-w %s)",
                      (unsigned)(st.st_mode & 07777), path);
        close(fd);
        return -1;
    }
    if (check_directories(path, errs) != 0) {
        close(fd);
        return -1;
    }
    if (st.st_size > PS_CONFIG_MAX_BYTES) {
        ps_errors_add(errs, path, 0, 0, "the file is larger than %d bytes; refusing to read it",
                      PS_CONFIG_MAX_BYTES);
        close(fd);
        return -1;
    }
    /* One byte more than allowed, in case the file grew since fstat. */
    char *buf = xcalloc(PS_CONFIG_MAX_BYTES + 2, 1);
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, PS_CONFIG_MAX_BYTES + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            ps_errors_add(errs, path, 0, 0, "cannot read: %s", strerror(e));
            free(buf);
            close(fd);
            return -1;
        }
        if (n == 0 || (len += (size_t)n) > PS_CONFIG_MAX_BYTES)
            break;
    }
    close(fd);
    int r = ps_config_load_buffer(path, buf, len, out, errs);
    free(buf);
    return r;
}

void ps_config_free(ps_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->path);
    free(cfg->database.conninfo);
    free(cfg->migration.id);
    free(cfg->migration.schema);
    free(cfg->migration.shadow_suffix);
    for (size_t i = 0; i < cfg->migration.n_tables; i++) {
        ps_table_config *t = &cfg->migration.tables[i];
        free(t->name);
        for (size_t k = 0; k < t->n_key; k++)
            free(t->key[k]);
        free(t->key);
        for (size_t k = 0; k < t->n_columns; k++) {
            free(t->columns[k].column);
            free(t->columns[k].expr);
        }
        free(t->columns);
        for (size_t k = 0; k < t->n_reverse; k++) {
            free(t->reverse[k].column);
            free(t->reverse[k].expr);
        }
        free(t->reverse);
    }
    free(cfg->migration.tables);
    free(cfg->cutover.stages);
    free(cfg->metrics.listen);
    for (size_t i = 0; i < cfg->n_where; i++)
        free(cfg->where[i].key);
    free(cfg->where);
    free(cfg);
}

int ps_log_level_parse(const char *word)
{
    if (word == NULL)
        return -1;
    for (size_t i = 0; level_words[i]; i++)
        if (strcasecmp(word, level_words[i]) == 0)
            return level_values[i];
    return -1;
}

const ps_table_config *ps_config_table(const ps_config *cfg, const char *name)
{
    if (cfg == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->migration.n_tables; i++)
        if (strcmp(cfg->migration.tables[i].name, name) == 0)
            return &cfg->migration.tables[i];
    return NULL;
}

/* ------------------------------------------------------------------ */
/* diff                                                                 */

static void change(ps_errors *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void change(ps_errors *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    ps_errors_add(out, NULL, 0, 0, "%s", msg);
    free(msg);
}

/* The shortest "%.*g" that reads back as exactly d: "%g" alone keeps six
 * digits, and two values that differ further down would look the same. */
static void number_text_exact(double d, char *buf, size_t len)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            return;
    }
}

/* Whether a leaf differs between two configs: compared as values, never as
 * their text (text is for showing, and may round). */
static bool leaf_equal(const key_spec *k, const void *a, const void *b)
{
    const void *x = (const char *)a + k->off, *y = (const char *)b + k->off;
    switch (k->kind) {
    case K_INT:
    case K_ENUM:
        return *(const int *)x == *(const int *)y;
    case K_INT64:
    case K_DURATION:
        return *(const int64_t *)x == *(const int64_t *)y;
    case K_NUMBER:
        return *(const double *)x == *(const double *)y;
    case K_BOOL:
        return *(const bool *)x == *(const bool *)y;
    default:
        return true;
    }
}

/* A leaf value as the reload log shows it. */
static void leaf_text(const key_spec *k, const void *base, char *buf, size_t len)
{
    const void *f = (const char *)base + k->off;
    switch (k->kind) {
    case K_INT:
        snprintf(buf, len, "%d", *(const int *)f);
        break;
    case K_INT64:
        snprintf(buf, len, "%" PRId64, *(const int64_t *)f);
        break;
    case K_DURATION:
        ps_duration_format(*(const int64_t *)f, buf, len);
        break;
    case K_NUMBER:
        number_text_exact(*(const double *)f, buf, len);
        break;
    case K_BOOL:
        snprintf(buf, len, "%s", *(const bool *)f ? "true" : "false");
        break;
    case K_ENUM: {
        int v = *(const int *)f;
        snprintf(buf, len, "%d", v);
        for (size_t i = 0; k->words[i]; i++)
            if ((k->values ? k->values[i] : (int)i) == v)
                snprintf(buf, len, "%s", k->words[i]);
        break;
    }
    default:
        buf[0] = '\0';
    }
}

static size_t diff_section(const section *sec, const char *path, const void *a, const void *b,
                           ps_errors *out)
{
    size_t n = 0;
    for (size_t i = 0; i < sec->n; i++) {
        const key_spec *k = &sec->keys[i];
        char *p = child_path(path, k->name);
        if (k->kind == K_SECTION) {
            n += diff_section(k->sub, p, a, b, out);
        } else if (k->kind == K_CUSTOM) {
            n += k->diff ? k->diff(a, b, out) : 0;
        } else if (k->kind == K_STRING) {
            const char *x = *(char *const *)((const char *)a + k->off);
            const char *y = *(char *const *)((const char *)b + k->off);
            if (strcmp(x ? x : "", y ? y : "") != 0) {
                if (k->flags & F_SECRET)
                    change(out, "%s changed", p);
                else
                    change(out, "%s: \"%s\" -> \"%s\"", p, x ? x : "", y ? y : "");
                n++;
            }
        } else if (!leaf_equal(k, a, b)) {
            char x[128], y[128];
            leaf_text(k, a, x, sizeof x);
            leaf_text(k, b, y, sizeof y);
            if (k->flags & F_SECRET)
                change(out, "%s changed", p);
            else
                change(out, "%s: %s -> %s", p, x, y);
            n++;
        }
        free(p);
    }
    return n;
}

static bool maps_equal(const ps_column_map *x, size_t nx, const ps_column_map *y, size_t ny)
{
    if (nx != ny)
        return false;
    for (size_t i = 0; i < nx; i++)
        if (strcmp(x[i].column, y[i].column) != 0 || strcmp(x[i].expr, y[i].expr) != 0)
            return false;
    return true;
}

static bool table_equal(const ps_table_config *x, const ps_table_config *y)
{
    return ps_strv_equal((const char *const *)x->key, x->n_key, (const char *const *)y->key, y->n_key) &&
           maps_equal(x->columns, x->n_columns, y->columns, y->n_columns) &&
           maps_equal(x->reverse, x->n_reverse, y->reverse, y->n_reverse);
}

static size_t diff_tables(const void *a, const void *b, ps_errors *out)
{
    const ps_config *x = a, *y = b;
    size_t n = 0;
    for (size_t i = 0; i < x->migration.n_tables; i++) {
        const ps_table_config *t = &x->migration.tables[i];
        const ps_table_config *u = ps_config_table(y, t->name);
        if (u == NULL)
            change(out, "migration.tables: removed \"%s\"", t->name), n++;
        else if (!table_equal(t, u))
            change(out, "migration.tables: \"%s\" changed (key, columns or reverse_columns)", t->name), n++;
    }
    for (size_t i = 0; i < y->migration.n_tables; i++) {
        const ps_table_config *u = &y->migration.tables[i];
        if (ps_config_table(x, u->name) == NULL)
            change(out, "migration.tables: added \"%s\"", u->name), n++;
    }
    return n;
}

/* "1%/1h 5%/2h ...", whole: percents strictly increase from 1 to 100, so
 * there are at most 100 stages (about 1 KiB of text). */
static char *stages_text(const ps_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        abort();
    for (size_t i = 0; i < cfg->cutover.n_stages; i++) {
        char d[32];
        ps_duration_format(cfg->cutover.stages[i].hold_ms, d, sizeof d);
        fprintf(f, "%s%d%%/%s", i ? " " : "", cfg->cutover.stages[i].percent, d);
    }
    if (fclose(f) != 0 || buf == NULL)
        abort();
    return buf;
}

/* Compared as values: the text is only for the log line. */
static size_t diff_stages(const void *a, const void *b, ps_errors *out)
{
    const ps_config *x = a, *y = b;
    if (x->cutover.n_stages == y->cutover.n_stages) {
        size_t i = 0;
        while (i < x->cutover.n_stages &&
               x->cutover.stages[i].percent == y->cutover.stages[i].percent &&
               x->cutover.stages[i].hold_ms == y->cutover.stages[i].hold_ms)
            i++;
        if (i == x->cutover.n_stages)
            return 0;
    }
    char *tx = stages_text(x), *ty = stages_text(y);
    change(out, "cutover.stages: %s -> %s", tx, ty);
    free(tx);
    free(ty);
    return 1;
}

size_t ps_config_diff(const ps_config *old_cfg, const ps_config *new_cfg, ps_errors *changes)
{
    if (old_cfg == NULL || new_cfg == NULL)
        return 0;
    return diff_section(&root_section, "", old_cfg, new_cfg, changes);
}

/* ------------------------------------------------------------------ */
/* restart-only keys                                                    */

bool ps_config_position(const ps_config *cfg, const char *key, int *line, int *column)
{
    for (size_t i = 0; cfg && key && i < cfg->n_where; i++) {
        if (strcmp(cfg->where[i].key, key) == 0) {
            *line = cfg->where[i].line;
            *column = cfg->where[i].column_no;
            return true;
        }
    }
    return false;
}

bool ps_config_restart_only(const char *key)
{
    const section *sec = &root_section;
    const char *seg = key;
    while (sec && seg && *seg) {
        size_t n = strcspn(seg, ".");
        const key_spec *k = NULL;
        for (size_t i = 0; i < sec->n && !k; i++)
            if (strlen(sec->keys[i].name) == n && memcmp(sec->keys[i].name, seg, n) == 0)
                k = &sec->keys[i];
        if (k == NULL)
            return false;
        if (seg[n] == '\0')
            return k->kind != K_SECTION && (k->flags & F_RESTART);
        if (k->kind != K_SECTION)
            return false;
        sec = k->sub;
        seg += n + 1;
    }
    return false;
}

static bool value_equal(const key_spec *k, const void *a, const void *b)
{
    if (k->kind != K_STRING)
        return leaf_equal(k, a, b);
    const char *x = *(char *const *)((const char *)a + k->off);
    const char *y = *(char *const *)((const char *)b + k->off);
    return strcmp(x ? x : "", y ? y : "") == 0;
}

/* A leaf value as a reload message shows it: strings quoted, cut short. */
static void value_text(const key_spec *k, const void *base, char *buf, size_t len)
{
    if (k->kind != K_STRING) {
        leaf_text(k, base, buf, len);
        return;
    }
    const char *x = *(char *const *)((const char *)base + k->off);
    char q[QBUF];
    snprintf(buf, len, "%s", quoted(x ? x : "", x ? strlen(x) : 0, q, sizeof q));
}

/* Put running's value of leaf k into fresh. */
static void keep_value(const key_spec *k, const ps_config *running, ps_config *fresh)
{
    const void *src = (const char *)running + k->off;
    void *dst = (char *)fresh + k->off;
    size_t size;
    switch (k->kind) {
    case K_STRING: {
        const char *x = *(char *const *)src;
        char **slot = dst;
        free(*slot);
        *slot = x ? xstrdup(x) : NULL;
        return;
    }
    case K_INT:
    case K_ENUM:
        size = sizeof(int);
        break;
    case K_INT64:
    case K_DURATION:
        size = sizeof(int64_t);
        break;
    case K_NUMBER:
        size = sizeof(double);
        break;
    case K_BOOL:
        size = sizeof(bool);
        break;
    default:
        abort(); /* F_RESTART is for leaf keys only */
    }
    memcpy(dst, src, size);
}

static size_t keep_section(const section *sec, const char *path, const ps_config *running,
                           ps_config *fresh, ps_errors *notes)
{
    size_t n = 0;
    for (size_t i = 0; i < sec->n; i++) {
        const key_spec *k = &sec->keys[i];
        if (k->kind != K_SECTION && !(k->flags & F_RESTART))
            continue;
        char *p = child_path(path, k->name);
        if (k->kind == K_SECTION) {
            n += keep_section(k->sub, p, running, fresh, notes);
        } else if (!value_equal(k, running, fresh)) {
            /* located where the new file writes the key (a key left out
             * took its default: the file alone) */
            int line = 0, col = 0;
            ps_config_position(fresh, p, &line, &col);
            if (k->flags & F_SECRET) {
                ps_errors_add(notes, fresh->path, line, col,
                              "%s changed, but it needs a restart; the running value stays in "
                              "force",
                              p);
            } else {
                char was[QBUF], now[QBUF];
                value_text(k, running, was, sizeof was);
                value_text(k, fresh, now, sizeof now);
                ps_errors_add(notes, fresh->path, line, col,
                              "%s: %s -> %s needs a restart; the running value %s stays in force",
                              p, was, now, was);
            }
            keep_value(k, running, fresh);
            n++;
        }
        free(p);
    }
    return n;
}

size_t ps_config_keep_restart_only(const ps_config *running, ps_config *fresh, ps_errors *notes)
{
    if (running == NULL || fresh == NULL)
        return 0;
    return keep_section(&root_section, "", running, fresh, notes);
}
