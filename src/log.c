/*
 * log.c - leveled logging: journald native entries or one readable stderr line.
 *
 * Owns the process-wide logging state (ident, level, sink, rate limiter);
 * these are the only globals besides signal plumbing, because every module
 * logs and threading a logger through each call would buy nothing.
 *
 * Invariants:
 *  - every message and every field value goes through ps_redact_secrets()
 *    before it leaves the process (sink, stderr or journal), whoever called;
 *  - a message is written with one write()/send() so lines never interleave;
 *  - journald gets the native protocol (one datagram to its socket; no
 *    libsystemd), sent with MSG_DONTWAIT: a journal that cannot keep up costs
 *    the structure of a line (it falls back to stderr, which is the journal's
 *    stream), never a blocked loop;
 *  - nothing here allocates on the heap: a log call must work when malloc
 *    does not, and must be cheap enough for debug logging on hot paths.
 */
#include "pgshadow/log.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pgshadow/redact.h"
#include "pgshadow/util.h"

#define PS_LOG_MSG_MAX 4096    /* a longer message is truncated */
#define PS_LOG_LINE_MAX 8192   /* message + fields + prefix */
#define PS_LOG_MAX_FIELDS 32   /* further fields are ignored */
#define PS_LOG_VALUE_MAX 512   /* a longer field value is truncated */
/* Every entry fits: message, fields, their names and framing. */
#define PS_LOG_DGRAM_MAX (PS_LOG_MSG_MAX + PS_LOG_MAX_FIELDS * (PS_LOG_VALUE_MAX + 96) + 256)
#define PS_LOG_JOURNAL_SOCKET "/run/systemd/journal/socket"
#define PS_LOG_RL_SLOTS 32     /* distinct messages tracked by the rate limiter */

typedef struct rl_slot {
    uint64_t hash;      /* of prio + redacted message; 0 = free */
    int prio;
    int64_t start_ms;   /* window start (CLOCK_MONOTONIC) */
    int count;          /* messages seen in this window */
    int suppressed;     /* of which dropped */
    char sample[160];   /* head of the message, for the "repeated" line */
} rl_slot;

static struct {
    char ident[64];
    int level;
    bool setup_done;
    int journal; /* -1 unknown, 0 no, 1 yes */
    ps_log_sink sink;
    void *sink_arg;
    int rl_burst;
    int rl_interval_ms;
    rl_slot rl[PS_LOG_RL_SLOTS];
} g_log = {
    .ident = "pgshadow",
    .level = LOG_INFO,
    .journal = -1,
    .rl_burst = 10,
    .rl_interval_ms = 5000,
};

static const char *level_word(int prio)
{
    switch (prio) {
    case LOG_EMERG: return "emerg";
    case LOG_ALERT: return "alert";
    case LOG_CRIT: return "crit";
    case LOG_ERR: return "error";
    case LOG_WARNING: return "warning";
    case LOG_NOTICE: return "notice";
    case LOG_INFO: return "info";
    default: return "debug";
    }
}

/* JOURNAL_STREAM is "DEV:INODE" of the stream systemd connected us to; it is
 * inherited by children whose stderr may be something else, hence the fstat. */
static bool detect_journal(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    if (!e || !*e)
        return false;
    unsigned long long dev, ino;
    char tail;
    if (sscanf(e, "%llu:%llu%c", &dev, &ino, &tail) != 2)
        return false;
    struct stat st;
    if (fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void ps_log_setup(const char *ident, int level)
{
    snprintf(g_log.ident, sizeof g_log.ident, "%s", ident ? ident : "pgshadow");
    ps_log_set_level(level);
    g_log.journal = detect_journal() ? 1 : 0;
    g_log.setup_done = true;
}

void ps_log_set_level(int level)
{
    if (level < LOG_EMERG)
        level = LOG_EMERG;
    if (level > LOG_DEBUG)
        level = LOG_DEBUG;
    g_log.level = level;
}

int ps_log_get_level(void)
{
    return g_log.level;
}

bool ps_log_to_journal(void)
{
    if (g_log.journal < 0)
        g_log.journal = detect_journal() ? 1 : 0;
    return g_log.journal == 1;
}

void ps_log_set_sink(ps_log_sink sink, void *arg)
{
    g_log.sink = sink;
    g_log.sink_arg = arg;
}

void ps_log_set_ratelimit(int burst, int interval_ms)
{
    g_log.rl_burst = burst;
    g_log.rl_interval_ms = interval_ms;
    memset(g_log.rl, 0, sizeof g_log.rl);
}

/* FNV-1a; collisions only merge two messages' rate-limit counters. */
static uint64_t hash_msg(int prio, const char *msg)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)(prio + 1);
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h ? h : 1;
}

/* ------------------------------------------------------------------------ */
/* Output: readable line */

static size_t append(char *buf, size_t len, size_t pos, const char *s)
{
    size_t n = strlen(s);
    if (pos + 1 >= len)
        return pos;
    if (n > len - 1 - pos)
        n = len - 1 - pos;
    memcpy(buf + pos, s, n);
    pos += n;
    buf[pos] = '\0';
    return pos;
}

/* key=value, quoting a value that would not read back as one token. */
static size_t append_field(char *buf, size_t len, size_t pos, const char *name, const char *value)
{
    char key[64];
    size_t k = 0;
    for (const char *p = name; *p && k < sizeof key - 1; p++)
        key[k++] = (*p >= 'A' && *p <= 'Z') ? (char)(*p - 'A' + 'a') : *p;
    key[k] = '\0';

    pos = append(buf, len, pos, " ");
    pos = append(buf, len, pos, key);
    pos = append(buf, len, pos, "=");
    bool quote = *value == '\0' || strpbrk(value, " \t\n\"=\\") != NULL;
    if (!quote)
        return append(buf, len, pos, value);
    pos = append(buf, len, pos, "\"");
    for (const char *p = value; *p; p++) {
        char esc[3] = {0};
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = *p;
        } else if (*p == '\n') {
            esc[0] = '\\';
            esc[1] = 'n';
        } else {
            esc[0] = *p;
        }
        pos = append(buf, len, pos, esc);
    }
    return append(buf, len, pos, "\"");
}

static void format_line(char *buf, size_t len, bool with_time, int prio, const char *msg,
                        const ps_log_field *fields, char values[][PS_LOG_VALUE_MAX], int nfields)
{
    size_t pos = 0;
    buf[0] = '\0';
    char head[160];
    if (with_time) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        char t[32];
        strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(head, sizeof head, "%s.%03ldZ %s[%ld]: %s: ", t, ts.tv_nsec / 1000000,
                 g_log.ident, (long)getpid(), level_word(prio));
    } else {
        snprintf(head, sizeof head, "%s[%ld]: %s: ", g_log.ident, (long)getpid(),
                 level_word(prio));
    }
    pos = append(buf, len, pos, head);
    pos = append(buf, len, pos, msg);
    for (int i = 0; i < nfields; i++)
        pos = append_field(buf, len, pos, fields[i].name, values[i]);
}

static void write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a failing stderr */
        }
        s += w;
        n -= (size_t)w;
    }
}

/* ------------------------------------------------------------------------ */
/* Output: journal */

/* Journal field names are [A-Z0-9_], not starting with '_' or a digit. */
static void journal_field_name(char *out, size_t len, const char *name)
{
    size_t n = (size_t)snprintf(out, len, "PGSHADOW_");
    for (const char *p = name; *p && n < len - 1; p++) {
        char c = *p;
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        else if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            c = '_';
        out[n++] = c;
    }
    out[n] = '\0';
}

size_t ps_log_journal_encode(char *buf, size_t len, int prio, const char *ident,
                             const char *msg, const ps_log_field *fields)
{
    /* Native protocol: "NAME=value\n" when the value has no newline, else
     * "NAME\n" + little-endian uint64 length + value + "\n". */
    size_t pos = 0;
    char prio_s[4];
    snprintf(prio_s, sizeof prio_s, "%d", prio);
    const char *names[PS_LOG_MAX_FIELDS + 3];
    const char *values[PS_LOG_MAX_FIELDS + 3];
    char fnames[PS_LOG_MAX_FIELDS][80];
    int n = 0;
    names[n] = "MESSAGE";
    values[n++] = msg;
    names[n] = "PRIORITY";
    values[n++] = prio_s;
    names[n] = "SYSLOG_IDENTIFIER";
    values[n++] = ident;
    for (int i = 0; fields && fields[i].name && i < PS_LOG_MAX_FIELDS; i++) {
        journal_field_name(fnames[i], sizeof fnames[i], fields[i].name);
        names[n] = fnames[i];
        values[n++] = fields[i].value ? fields[i].value : "";
    }
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(names[i]), vl = strlen(values[i]);
        bool binary = memchr(values[i], '\n', vl) != NULL;
        size_t need = nl + 1 + (binary ? 8 : 0) + vl + 1;
        if (pos + need > len)
            return 0;
        memcpy(buf + pos, names[i], nl);
        pos += nl;
        if (binary) {
            buf[pos++] = '\n';
            uint64_t l = vl;
            for (int b = 0; b < 8; b++)
                buf[pos++] = (char)((l >> (8 * b)) & 0xff);
        } else {
            buf[pos++] = '=';
        }
        memcpy(buf + pos, values[i], vl);
        pos += vl;
        buf[pos++] = '\n';
    }
    return pos;
}

static int journal_send(int prio, const char *msg, const ps_log_field *fields,
                        char values[][PS_LOG_VALUE_MAX], int nfields)
{
    ps_log_field redacted[PS_LOG_MAX_FIELDS + 1];
    for (int i = 0; i < nfields; i++) {
        redacted[i].name = fields[i].name;
        redacted[i].value = values[i];
    }
    redacted[nfields].name = NULL;
    redacted[nfields].value = NULL;

    static char dgram[PS_LOG_DGRAM_MAX];
    size_t len = ps_log_journal_encode(dgram, sizeof dgram, prio, g_log.ident, msg, redacted);
    if (len == 0)
        return -ENOBUFS;
    /* For tests only: a socket of the test's own instead of journald's. */
    const char *path = getenv("PGSHADOW_JOURNAL_SOCKET");
    if (!path || !*path)
        path = PS_LOG_JOURNAL_SOCKET;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    ssize_t w = sendto(fd, dgram, len, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sa,
                       sizeof sa);
    int err = w < 0 ? -errno : 0;
    close(fd);
    return err;
}

/* ------------------------------------------------------------------------ */

static void emit(int prio, const char *msg, const ps_log_field *fields, char values[][PS_LOG_VALUE_MAX],
                 int nfields)
{
    static char line[PS_LOG_LINE_MAX];
    if (g_log.sink) {
        format_line(line, sizeof line, false, prio, msg, fields, values, nfields);
        g_log.sink(prio, line, g_log.sink_arg);
        return;
    }
    if (ps_log_to_journal() && journal_send(prio, msg, fields, values, nfields) == 0)
        return;
    format_line(line, sizeof line - 1, true, prio, msg, fields, values, nfields);
    size_t n = strlen(line);
    line[n++] = '\n';
    write_all(STDERR_FILENO, line, n);
}

static void emit_repeated(rl_slot *s)
{
    char msg[256];
    snprintf(msg, sizeof msg, "message repeated %d times: %s", s->suppressed, s->sample);
    emit(s->prio, msg, NULL, NULL, 0);
}

void ps_log_flush_suppressed(void)
{
    int64_t now = ps_clock_ms();
    for (int i = 0; i < PS_LOG_RL_SLOTS; i++) {
        rl_slot *s = &g_log.rl[i];
        if (s->hash && now - s->start_ms >= g_log.rl_interval_ms) {
            if (s->suppressed > 0)
                emit_repeated(s);
            memset(s, 0, sizeof *s);
        }
    }
}

/* true: write it. Ends expired windows first so their counts come out before
 * the new message, in order. */
static bool ratelimit_pass(int prio, const char *msg)
{
    if (g_log.rl_burst <= 0 || g_log.rl_interval_ms <= 0)
        return true;
    ps_log_flush_suppressed();
    uint64_t h = hash_msg(prio, msg);
    int64_t now = ps_clock_ms();
    rl_slot *free_slot = NULL, *oldest = NULL;
    for (int i = 0; i < PS_LOG_RL_SLOTS; i++) {
        rl_slot *s = &g_log.rl[i];
        if (s->hash == h) {
            if (++s->count <= g_log.rl_burst)
                return true;
            s->suppressed++;
            return false;
        }
        if (!s->hash && !free_slot)
            free_slot = s;
        if (s->hash && (!oldest || s->start_ms < oldest->start_ms))
            oldest = s;
    }
    rl_slot *s = free_slot;
    if (!s) {
        /* Table full of distinct messages: recycle the oldest, reporting what
         * it swallowed so no count is silently lost. */
        s = oldest;
        if (s->suppressed > 0)
            emit_repeated(s);
    }
    memset(s, 0, sizeof *s);
    s->hash = h;
    s->prio = prio;
    s->start_ms = now;
    s->count = 1;
    size_t n = strnlen(msg, sizeof s->sample - 1); /* truncation is fine: a sample */
    memcpy(s->sample, msg, n);
    s->sample[n] = '\0';
    return true;
}

void ps_log_vfields(int prio, const ps_log_field *fields, const char *fmt, va_list ap)
{
    if (prio > g_log.level)
        return;
    if (!g_log.setup_done && g_log.journal < 0)
        g_log.journal = detect_journal() ? 1 : 0;

    int saved_errno = errno; /* callers log then test errno */
    char raw[PS_LOG_MSG_MAX], msg[PS_LOG_MSG_MAX];
    vsnprintf(raw, sizeof raw, fmt, ap);
    /* A trailing newline would make an empty line on stderr. */
    size_t rl = strlen(raw);
    while (rl > 0 && raw[rl - 1] == '\n')
        raw[--rl] = '\0';
    ps_redact_secrets(raw, msg, sizeof msg);

    static char values[PS_LOG_MAX_FIELDS][PS_LOG_VALUE_MAX];
    int nfields = 0;
    for (; fields && fields[nfields].name && nfields < PS_LOG_MAX_FIELDS; nfields++)
        ps_redact_secrets(fields[nfields].value ? fields[nfields].value : "", values[nfields],
                          sizeof values[nfields]);

    if (ratelimit_pass(prio, msg))
        emit(prio, msg, fields, values, nfields);
    errno = saved_errno;
}

void ps_log_fields(int prio, const ps_log_field *fields, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ps_log_vfields(prio, fields, fmt, ap);
    va_end(ap);
}
