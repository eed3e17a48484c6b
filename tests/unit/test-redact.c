/*
 * test-redact.c - secrets never survive redaction; harmless text is untouched.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "pgshadow/redact.h"

typedef struct {
    const char *in;
    const char *want;
} pair;

static void check_conninfo(const pair *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *got = ps_redact_conninfo(cases[i].in);
        assert_non_null(got);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("redact_conninfo(%s)\n  got  %s\n  want %s", cases[i].in, got, cases[i].want);
        free(got);
    }
}

static void check_text(const pair *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char buf[512];
        ps_redact_secrets(cases[i].in, buf, sizeof buf);
        if (strcmp(buf, cases[i].want) != 0)
            fail_msg("redact_secrets(%s)\n  got  %s\n  want %s", cases[i].in, buf, cases[i].want);
    }
}

static void test_conninfo_keyvalue(void **state)
{
    static const pair cases[] = {
        { "host=db user=app", "host=db user=app" },
        { "service=pgshadow", "service=pgshadow" },
        { "", "" },
        { "host=db password=hunter2 user=app", "host=db password=*** user=app" },
        { "password=hunter2", "password=***" },
        { "host=db password = hunter2", "host=db password = ***" },
        { "password='hunter 2' host=db", "password='***' host=db" },
        { "password='it\\'s a secret' host=db", "password='***' host=db" },
        { "password='unterminated secret", "password='***" },
        { "password=back\\ slash host=db", "password=*** host=db" },
        { "application_name='pass word=x' host=db", "application_name='pass word=x' host=db" },
        { "application_name='password=x' host=db", "application_name='password=*** host=db" },
        { "PASSWORD=hunter2", "PASSWORD=***" },
        { "sslpassword=keypass host=db", "sslpassword=*** host=db" },
        { "password= host=db", "password= ***" }, /* libpq reads "host=db" as the password */
        { "password=", "password=" },
        { "password=''", "password='***'" },
        { "  host=db\tpassword=x  ", "  host=db\tpassword=***  " },
        { "dbname='a b' password=\"q r\" user=u", "dbname='a b' password=\"***\" user=u" },
    };
    (void)state;
    check_conninfo(cases, sizeof cases / sizeof cases[0]);
}

static void test_conninfo_uri(void **state)
{
    static const pair cases[] = {
        { "postgres://app@db/prod", "postgres://app@db/prod" },
        { "postgres://app:hunter2@db/prod", "postgres://app:***@db/prod" },
        { "postgresql://app:hunter2@db:5432/prod?sslmode=require",
          "postgresql://app:***@db:5432/prod?sslmode=require" },
        { "postgresql://app:p%40ss@db/prod", "postgresql://app:***@db/prod" },
        { "postgresql://app:p@ss@db/prod", "postgresql://app:***@db/prod" },
        { "postgresql://:secret@db", "postgresql://:***@db" },
        { "postgresql://app:@db", "postgresql://app:@db" },
        { "postgresql://db/prod?user=app&password=hunter2",
          "postgresql://db/prod?user=app&password=***" },
        { "postgresql://db/prod?password=hunter2&sslmode=require",
          "postgresql://db/prod?password=***&sslmode=require" },
        { "POSTGRES://App:Secret@db", "POSTGRES://App:***@db" },
        { "postgresql://password:secret@db", "postgresql://password:***@db" },
        { "postgresql://[::1]:5432/prod", "postgresql://[::1]:5432/prod" },
        { "postgresql://u:s@[::1]:5432/prod", "postgresql://u:***@[::1]:5432/prod" },
    };
    (void)state;
    check_conninfo(cases, sizeof cases / sizeof cases[0]);
}

/* Issue #9, 13: what reads as a password is masked whatever libpq makes of
 * it. libpq ends the userinfo at the first '/', so it parses
 * "app:Zm9v/YmFy@db" as host "app", port "Zm9v"; it takes '?', '#' and
 * spaces into a password. A whole conninfo URI ends at the end of the
 * string, a URI in free text at whitespace. */
static void test_conninfo_uri_password_like(void **state)
{
    static const pair cases[] = {
        { "postgresql://app:Zm9v/YmFy@db.example.com/prod", "postgresql://app:***@db.example.com/prod" },
        { "postgresql://app:a/b/c=@db", "postgresql://app:***@db" },
        { "postgresql://app:pa?ss@db/prod", "postgresql://app:***@db/prod" },
        { "postgresql://app:pa#ss@db/prod", "postgresql://app:***@db/prod" },
        { "postgresql://app:pa ss@db/prod", "postgresql://app:***@db/prod" },
        { "postgresql://us@er:pass@db/prod", "postgresql://us@er:***@db/prod" },
        { "postgresql://app:s@db/prod?password=", "postgresql://app:***@db/prod?password=" },
        /* an '@' later in the URI reads as the end of a password: hidden */
        { "postgresql://db:5432/prod?user=me@srv", "postgresql://db:***@srv" },
        { "postgresql://db/prod?user=me@srv", "postgresql://db/prod?user=me@srv" },
        { "postgresql://app@db:5432/prod", "postgresql://app@db:5432/prod" },
        /* libpq sees a password the text does not show: all of it hidden */
        { "postgresql://db/prod?pass%77ord=hunter2", "***" },
    };
    (void)state;
    check_conninfo(cases, sizeof cases / sizeof cases[0]);
    static const pair text[] = {
        { "cannot connect to \"postgresql://app:Zm9v/YmFy@db.example.com/prod\": no",
          "cannot connect to \"postgresql://app:***@db.example.com/prod\": no" },
        { "postgresql://app:pa?ss@db failed", "postgresql://app:***@db failed" },
        { "postgresql://app:p/q@db and user@example.org", "postgresql://app:***@db and user@example.org" },
    };
    check_text(text, sizeof text / sizeof text[0]);
}

static void test_conninfo_null(void **state)
{
    (void)state;
    char *got = ps_redact_conninfo(NULL);
    assert_non_null(got);
    assert_string_equal(got, "");
    free(got);
}

static void test_secrets_free_text(void **state)
{
    static const pair cases[] = {
        { "connection failed", "connection failed" },
        { "FATAL:  password authentication failed for user \"app\"",
          "FATAL:  password authentication failed for user \"app\"" },
        { "fe_sendauth: no password supplied", "fe_sendauth: no password supplied" },
        { "connecting with host=db password=hunter2 user=app",
          "connecting with host=db password=*** user=app" },
        { "Password=Hunter2", "Password=***" },
        { "passwd=hunter2", "passwd=***" },
        { "PGPASSWORD=hunter2 psql", "PGPASSWORD=*** psql" },
        { "password='a b c' rest", "password='***' rest" },
        { "password=\"a \\\" b\" rest", "password=\"***\" rest" },
        { "{\"user\": \"app\", \"password\": \"hunter2\"}", "{\"user\": \"app\", \"password\": \"***\"}" },
        { "{\"password\":\"a\\\"b\"}", "{\"password\":\"***\"}" },
        { "'password': 'x'", "'password': '***'" },
        { "password: hunter2", "password: ***" },
        { "url postgres://app:hunter2@db/prod failed", "url postgres://app:***@db/prod failed" },
        { "url postgresql://app:hunter2@db failed", "url postgresql://app:***@db failed" },
        { "\"postgresql://app:hunter2@db\"", "\"postgresql://app:***@db\"" },
        { "see http://user:pw@example.org", "see http://user:pw@example.org" },
        { "a postgres://x:1@h and b postgres://y:2@h", "a postgres://x:***@h and b postgres://y:***@h" },
        { "postgresql://db?password=x&user=u", "postgresql://db?password=***&user=u" },
        { "password=x password=y", "password=*** password=***" },
        { "trailing password", "trailing password" },
        { "trailing password=", "trailing password=" },
        { "", "" },
    };
    (void)state;
    check_text(cases, sizeof cases / sizeof cases[0]);
}

static void test_secrets_truncation(void **state)
{
    (void)state;
    char buf[12];
    memset(buf, 'Z', sizeof buf);
    ps_redact_secrets("password=hunter2 and more text", buf, sizeof buf);
    assert_int_equal(strlen(buf), sizeof buf - 1);
    assert_string_equal(buf, "password=**");
    assert_null(strstr(buf, "hunter"));

    char one[1] = { 'x' };
    ps_redact_secrets("password=x", one, 1);
    assert_int_equal(one[0], '\0');

    char tiny[4] = "abc";
    ps_redact_secrets(NULL, tiny, sizeof tiny);
    assert_string_equal(tiny, "");
    ps_redact_secrets("x", NULL, 0); /* must not crash */
}

/* Sibling of issue #9, 16: output cut to the buffer ends between
 * characters, and a character cut off at the end of the input (a message
 * vsnprintf truncated) is dropped: what is logged is valid UTF-8. */
static void test_secrets_truncation_utf8(void **state)
{
    (void)state;
    char buf[6];
    ps_redact_secrets("\xc3\xa9\xc3\xa9\xc3\xa9", buf, sizeof buf); /* three 2-byte characters */
    assert_string_equal(buf, "\xc3\xa9\xc3\xa9");
    char b4[4];
    ps_redact_secrets("ab\xe2\x82\xac", b4, sizeof b4);
    assert_string_equal(b4, "ab");
    /* nothing written after the cut, even what would still fit */
    char b5[5];
    ps_redact_secrets("ab\xe2\x82\xac" "c", b5, sizeof b5);
    assert_string_equal(b5, "ab");
    char big[64];
    ps_redact_secrets("message cut by vsnprintf \xe2\x82", big, sizeof big);
    assert_string_equal(big, "message cut by vsnprintf ");
    ps_redact_secrets("cut \xf0\x9f\x98", big, sizeof big);
    assert_string_equal(big, "cut ");
    ps_redact_secrets("whole \xf0\x9f\x98\x80", big, sizeof big);
    assert_string_equal(big, "whole \xf0\x9f\x98\x80");
}

static void test_secrets_never_leak_long(void **state)
{
    (void)state;
    /* A secret longer than the output keeps nothing of itself. */
    char in[300], buf[64];
    strcpy(in, "password=");
    memset(in + 9, 'S', 280);
    in[289] = '\0';
    ps_redact_secrets(in, buf, sizeof buf);
    assert_string_equal(buf, "password=***");
}

static void test_has_password(void **state)
{
    (void)state;
    assert_false(ps_conninfo_has_password(NULL));
    assert_false(ps_conninfo_has_password(""));
    assert_false(ps_conninfo_has_password("service=pgshadow"));
    assert_false(ps_conninfo_has_password("host=db user=app dbname=prod"));
    assert_false(ps_conninfo_has_password("host=db password=''"));
    assert_false(ps_conninfo_has_password("postgresql://app@db/prod"));
    assert_false(ps_conninfo_has_password("postgresql://app:@db/prod"));
    assert_false(ps_conninfo_has_password("host=db password="));
    assert_false(ps_conninfo_has_password("postgresql://db/prod?user=me@srv"));
    assert_false(ps_conninfo_has_password("postgresql://app@db:5432/prod?sslmode=require"));
    assert_false(ps_conninfo_has_password("host=db user=password dbname=passwd"));
    assert_true(ps_conninfo_has_password("host=db password=x"));
    assert_true(ps_conninfo_has_password("host=db password='a b'"));
    assert_true(ps_conninfo_has_password("host=db sslpassword=k"));
    assert_true(ps_conninfo_has_password("postgresql://app:x@db/prod"));
    assert_true(ps_conninfo_has_password("postgresql://db/prod?password=x"));
    assert_true(ps_conninfo_has_password("postgres://db?user=a&password=x"));
    /* libpq cannot parse these; the textual fallback still finds the secret. */
    assert_true(ps_conninfo_has_password("nosuchkey=1 password=x"));
    assert_true(ps_conninfo_has_password("host=db garbage password=x"));
    assert_false(ps_conninfo_has_password("nosuchkey=1 host=db"));
}

/* Issue #9, 13: refused by the same rule that redacts, whatever libpq
 * makes of the string (its last password= wins, its userinfo ends at '/'). */
static void test_has_password_like(void **state)
{
    (void)state;
    assert_true(ps_conninfo_has_password("postgresql://app:Zm9v/YmFy@db.example.com/prod"));
    assert_true(ps_conninfo_has_password("postgresql://app:Zm9v/YmFy@db/prod?sslmode=require"));
    assert_true(ps_conninfo_has_password("postgresql://app:x@db/prod?password="));
    assert_true(ps_conninfo_has_password("password=x password="));
    assert_true(ps_conninfo_has_password("host=db password=x password=''"));
    assert_true(ps_conninfo_has_password("postgresql://db:5432/prod?user=me@srv"));
    assert_true(ps_conninfo_has_password("application_name='password=x'"));
    assert_true(ps_conninfo_has_password("dbname='postgresql://app:x@db/prod'"));
    assert_true(ps_conninfo_has_password("postgresql://db/prod?pass%77ord=x"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conninfo_keyvalue),
        cmocka_unit_test(test_conninfo_uri),
        cmocka_unit_test(test_conninfo_uri_password_like),
        cmocka_unit_test(test_conninfo_null),
        cmocka_unit_test(test_secrets_free_text),
        cmocka_unit_test(test_secrets_truncation),
        cmocka_unit_test(test_secrets_truncation_utf8),
        cmocka_unit_test(test_secrets_never_leak_long),
        cmocka_unit_test(test_has_password),
        cmocka_unit_test(test_has_password_like),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
