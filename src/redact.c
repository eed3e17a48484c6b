/*
 * redact.c - keep passwords out of every string that leaves the process.
 *
 * Owns the one scanner that finds secrets in conninfo strings and free text,
 * and with it the one rule for what counts as a password: the text that
 * reads as one (a password keyword assigned a value, or the part between
 * "user:" and the last '@' of a postgres URI), whatever libpq would make of
 * it. The config loader refuses a conninfo by this rule
 * (ps_conninfo_has_password) and every message is redacted by it, so what
 * is refused and what is hidden cannot drift apart.
 *
 * Invariants: redaction only ever removes characters (a secret value becomes
 * "***"), it never fails open (an unparseable conninfo is redacted as free
 * text, which errs on the side of hiding too much; a conninfo in which libpq
 * finds a password the text rule did not hide is hidden whole), and it never
 * allocates in ps_redact_secrets(), so logging can call it anywhere.
 */
#include "pgshadow/redact.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#define MASK "***"

/* A bounded writer: keeps what fits, always NUL-terminates, counts secrets.
 * Where the room ends, it cuts between UTF-8 characters and writes nothing
 * more: a cut message stays valid UTF-8 (journald shows a field that is not
 * as a blob) and never skips text in its middle. */
typedef struct out {
    char *buf;
    size_t cap; /* 0: discard everything (detect mode) */
    size_t len;
    bool full;  /* something did not fit: nothing more is written */
    int secrets;
} out;

static bool utf8_continuation(unsigned char b)
{
    return (b & 0xc0) == 0x80;
}

static void out_put(out *o, const char *s, size_t n)
{
    if (o->cap == 0 || o->full)
        return;
    size_t room = o->cap - 1 - o->len;
    if (n > room) {
        n = room;
        while (n > 0 && utf8_continuation((unsigned char)s[n]))
            n--; /* s[n] is the first byte left out: not inside a character */
        o->full = true;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

/* Drop a character cut off at the end of the output (the input ended inside
 * one: a message vsnprintf truncated upstream). */
static void out_trim_partial(out *o)
{
    if (o->cap == 0)
        return;
    size_t i = o->len, back = 0;
    while (i > 0 && back < 3 && utf8_continuation((unsigned char)o->buf[i - 1])) {
        i--;
        back++;
    }
    if (i == 0)
        return;
    unsigned char lead = (unsigned char)o->buf[i - 1];
    size_t need = (lead & 0xe0) == 0xc0 ? 2 : (lead & 0xf0) == 0xe0 ? 3 : (lead & 0xf8) == 0xf0 ? 4 : 0;
    if (need > back + 1) {
        o->len = i - 1;
        o->buf[o->len] = '\0';
    }
}

static void out_mask(out *o)
{
    out_put(o, MASK, strlen(MASK));
    o->secrets++;
}

static bool starts_with_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* Length of a postgres URI scheme at s ("postgres://" or "postgresql://"), or 0. */
static size_t uri_scheme_len(const char *s)
{
    if (starts_with_ci(s, "postgresql://"))
        return strlen("postgresql://");
    if (starts_with_ci(s, "postgres://"))
        return strlen("postgres://");
    return 0;
}

/* Length of a password keyword at s ("password", "passwd", and anything
 * ending in them such as "sslpassword" or "PGPASSWORD", since we scan every
 * position), or 0. */
static size_t keyword_len(const char *s)
{
    if (starts_with_ci(s, "password"))
        return strlen("password");
    if (starts_with_ci(s, "passwd"))
        return strlen("passwd");
    return 0;
}

/*
 * Value that starts at s: quoted ('...' or "...", backslash escapes, to the
 * matching quote or the end) or bare (to whitespace or '&', the separators
 * of conninfo and URI query strings). Writes the masked value and returns
 * the number of input bytes it consumed. An empty bare value is no secret
 * and is left alone; an empty quoted one, or one that is already the mask
 * (the second pass over a key=value conninfo), is shown masked but not
 * counted as a secret found.
 */
static void mask_span(const char *v, size_t n, out *o)
{
    if (n == 0 || (n == strlen(MASK) && memcmp(v, MASK, n) == 0))
        out_put(o, MASK, strlen(MASK));
    else
        out_mask(o);
}

static size_t mask_value(const char *s, out *o)
{
    if (*s == '\'' || *s == '"') {
        char q = *s;
        size_t i = 1;
        while (s[i] && s[i] != q) {
            if (s[i] == '\\' && s[i + 1])
                i++;
            i++;
        }
        out_put(o, &q, 1);
        mask_span(s + 1, i - 1, o);
        if (s[i] == q) {
            out_put(o, &q, 1);
            i++;
        }
        return i;
    }
    size_t i = 0;
    while (s[i] && !isspace((unsigned char)s[i]) && s[i] != '&') {
        if (s[i] == '\\' && s[i + 1])
            i++;
        i++;
    }
    if (i > 0)
        mask_span(s, i, o);
    return i;
}

/*
 * At a URI scheme: copy the scheme and user, mask what reads as a password.
 * That is judged by the text, not by libpq's parse: libpq ends the userinfo
 * at the first '/' ("app:Zm9v/YmFy@db" is host "app", port "Zm9v" to it)
 * but takes '?', '#' and spaces into a password, and a base64 password often
 * holds a '/'. So: a user part up to the first ':' (no '/', '?' or '#' in
 * it), and from there to the LAST '@' of the URI, however many '/', '?' or
 * '@' come between, is the password. The URI ends at whitespace in free
 * text, and at the end of the string when the string is the conninfo
 * (to_end). An '@' later in a URI (a user name in a query parameter) thus
 * hides the text before it too: hiding too much is the safe side.
 * Returns the bytes consumed.
 */
static size_t redact_uri_userinfo(const char *s, size_t scheme, bool to_end, out *o)
{
    size_t i = scheme;
    while (s[i] && s[i] != ':' && !strchr("/?#", s[i]) && (to_end || !isspace((unsigned char)s[i])))
        i++;
    size_t colon = i, at = 0;
    if (s[colon] == ':') {
        for (i = colon + 1; s[i] && (to_end || !isspace((unsigned char)s[i])); i++)
            if (s[i] == '@')
                at = i;
    }
    if (at <= colon + 1) {
        /* No password here; what follows is scanned like any other text. */
        out_put(o, s, scheme);
        return scheme;
    }
    out_put(o, s, colon + 1);
    out_mask(o);
    out_put(o, "@", 1);
    return at + 1;
}

/*
 * At a password keyword: optional closing quote (JSON "password": ...),
 * optional spaces, '=' or ':', optional spaces, a value. Returns the bytes
 * consumed, or 0 when this is not an assignment ("password authentication
 * failed" is not a secret).
 */
static size_t redact_assignment(const char *s, size_t kw, out *o)
{
    size_t i = kw;
    if (s[i] == '"' || s[i] == '\'')
        i++;
    while (s[i] == ' ' || s[i] == '\t')
        i++;
    if (s[i] != '=' && s[i] != ':')
        return 0;
    i++;
    while (s[i] == ' ' || s[i] == '\t')
        i++;
    out_put(o, s, i);
    return i + mask_value(s + i, o);
}

static void redact_text(const char *s, out *o)
{
    size_t i = 0;
    while (s[i]) {
        size_t n = uri_scheme_len(s + i);
        if (n > 0) {
            i += redact_uri_userinfo(s + i, n, false, o);
            continue;
        }
        n = keyword_len(s + i);
        if (n > 0) {
            size_t used = redact_assignment(s + i, n, o);
            if (used > 0) {
                i += used;
                continue;
            }
        }
        out_put(o, s + i, 1);
        i++;
    }
}

static size_t skip_space(const char *s, size_t i)
{
    while (isspace((unsigned char)s[i]))
        i++;
    return i;
}

/* True for keywords whose value is a secret: password, sslpassword. */
static bool secret_keyword(const char *kw, size_t n)
{
    size_t plen = strlen("password");
    return n >= plen && strncasecmp(kw + n - plen, "password", plen) == 0;
}

/*
 * key=value conninfo, tokenised as libpq does: spaces around '=' are allowed,
 * values are bare (backslash escapes) or single-quoted. Where the string
 * stops making sense (a keyword without '='), the rest is redacted as free
 * text instead.
 */
static void redact_keyvalue(const char *s, out *o)
{
    size_t i = 0;
    for (;;) {
        size_t start = i;
        i = skip_space(s, i);
        if (!s[i]) {
            out_put(o, s + start, i - start);
            return;
        }
        size_t kw = i;
        while (s[i] && s[i] != '=' && !isspace((unsigned char)s[i]))
            i++;
        size_t kwlen = i - kw;
        i = skip_space(s, i);
        if (s[i] != '=' || kwlen == 0) {
            redact_text(s + start, o);
            return;
        }
        i = skip_space(s, i + 1);
        out_put(o, s + start, i - start);
        if (secret_keyword(s + kw, kwlen)) {
            i += mask_value(s + i, o);
            continue;
        }
        size_t vstart = i;
        if (s[i] == '\'') {
            i++;
            while (s[i] && s[i] != '\'') {
                if (s[i] == '\\' && s[i + 1])
                    i++;
                i++;
            }
            if (s[i] == '\'')
                i++;
        } else {
            while (s[i] && !isspace((unsigned char)s[i])) {
                if (s[i] == '\\' && s[i + 1])
                    i++;
                i++;
            }
        }
        out_put(o, s + vstart, i - vstart);
    }
}

/* Room for redacting s: each secret is at least one byte and becomes three,
 * plus the quotes kept around it. */
static size_t redact_cap(const char *s)
{
    return strlen(s) * 4 + 4;
}

/*
 * A URI conninfo is one URI to its end (libpq takes everything after the
 * scheme, spaces too); the rest of it is scanned as free text (?password=).
 * A key=value string gets the structured pass, then the free-text pass over
 * its result: a value that libpq would not call a password may still read
 * like one ("application_name='password=x'"), and hiding it is cheap.
 * *secrets counts what was masked.
 */
static char *redact_conninfo_alloc(const char *conninfo, int *secrets)
{
    size_t lead = strspn(conninfo, " \t\n\r");
    size_t scheme = uri_scheme_len(conninfo + lead);
    out kv = { 0 };
    if (scheme == 0) {
        kv.cap = redact_cap(conninfo);
        kv.buf = malloc(kv.cap);
        if (kv.buf == NULL)
            return NULL;
        kv.buf[0] = '\0';
        redact_keyvalue(conninfo, &kv);
        conninfo = kv.buf;
    }
    out o = { .cap = redact_cap(conninfo) };
    o.buf = malloc(o.cap);
    if (o.buf != NULL) {
        o.buf[0] = '\0';
        size_t i = 0;
        if (scheme > 0) {
            out_put(&o, conninfo, lead);
            i = lead + redact_uri_userinfo(conninfo + lead, scheme, true, &o);
        }
        redact_text(conninfo + i, &o);
    }
    free(kv.buf);
    *secrets = kv.secrets + o.secrets;
    return o.buf;
}

/* The non-empty password values libpq finds in conninfo (password,
 * sslpassword), or -1 when libpq cannot parse it. */
static int libpq_secrets(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    if (opts == NULL) {
        PQfreemem(err); /* it may quote the string: never shown */
        return -1;
    }
    int n = 0;
    for (PQconninfoOption *opt = opts; opt->keyword; opt++)
        if (secret_keyword(opt->keyword, strlen(opt->keyword)) && opt->val && opt->val[0])
            n++;
    PQconninfoFree(opts);
    return n;
}

char *ps_redact_conninfo(const char *conninfo)
{
    int secrets;
    if (conninfo == NULL)
        conninfo = "";
    char *shown = redact_conninfo_alloc(conninfo, &secrets);
    if (shown == NULL)
        return NULL;
    /* libpq would use a password where the text rule found none (a
     * percent-encoded ?pass%77ord=, say): hide the whole string. */
    if (secrets == 0 && libpq_secrets(conninfo) > 0) {
        free(shown);
        return strdup(MASK);
    }
    return shown;
}

void ps_redact_secrets(const char *in, char *buf, size_t len)
{
    if (buf == NULL || len == 0)
        return;
    buf[0] = '\0';
    if (in == NULL)
        return;
    out o = { .buf = buf, .cap = len };
    redact_text(in, &o);
    out_trim_partial(&o);
}

bool ps_conninfo_has_password(const char *conninfo)
{
    if (conninfo == NULL)
        return false;
    /* Whatever the redaction would hide, or libpq would use, is one. */
    int secrets = 0;
    char *shown = redact_conninfo_alloc(conninfo, &secrets);
    if (shown == NULL)
        return true; /* out of memory: cannot tell, so refuse */
    free(shown);
    return secrets > 0 || libpq_secrets(conninfo) > 0;
}
