/*
 * test-ctl.c - pgshadowctl's command line: option errors name the option
 * given (never argv[0], never a value), and an unknown option is never taken
 * for a command's operand. Only paths that need no database are run.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgshadow/ctl.h"

typedef struct {
    int rc;
    char out[4096], err[4096];
} ctl_run;

static void slurp(FILE *f, char *buf, size_t len)
{
    rewind(f);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* ps_ctl_main(argv...) with stdout and stderr captured. */
static void run(ctl_run *r, ...)
{
    char *argv[16];
    int argc = 0;
    va_list ap;
    va_start(ap, r);
    argv[argc++] = "pgshadowctl";
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 15;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;

    FILE *out = tmpfile(), *err = tmpfile();
    assert_non_null(out);
    assert_non_null(err);
    fflush(stdout);
    fflush(stderr);
    int so = dup(STDOUT_FILENO), se = dup(STDERR_FILENO);
    dup2(fileno(out), STDOUT_FILENO);
    dup2(fileno(err), STDERR_FILENO);
    r->rc = ps_ctl_main(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, STDOUT_FILENO);
    dup2(se, STDERR_FILENO);
    close(so);
    close(se);
    slurp(out, r->out, sizeof r->out);
    slurp(err, r->err, sizeof r->err);
}

#define TRY "Try 'pgshadowctl --help'.\n"

/* Issue #9, 17: in a bundle of short options, getopt has not moved past the
 * element when it finds the unknown one: argv[optind - 1] was argv[0]. */
static void test_unknown_short_option_in_bundle(void **state)
{
    (void)state;
    ctl_run r;
    run(&r, "-xV", NULL);
    assert_int_equal(r.rc, PS_CTL_EXIT_USAGE);
    assert_string_equal(r.err, "pgshadowctl: unknown option '-x'\n" TRY);
    assert_string_equal(r.out, "");
    run(&r, "-Vx", NULL); /* -V acts first, as getopt reads left to right */
    assert_int_equal(r.rc, PS_CTL_EXIT_OK);
    run(&r, "-q", "check", NULL);
    assert_string_equal(r.err, "pgshadowctl: unknown option '-q'\n" TRY);
    run(&r, "-c", NULL);
    assert_string_equal(r.err, "pgshadowctl: option '-c' needs a FILE\n" TRY);
}

/* Issue #9, 17: route took an unknown option for TABLE and exited 0. */
static void test_route_unknown_option(void **state)
{
    (void)state;
    ctl_run r;
    run(&r, "route", "--percent", "50", "--json", "contexts", NULL);
    assert_int_equal(r.rc, PS_CTL_EXIT_USAGE);
    assert_string_equal(r.err, "pgshadowctl: route: unknown option '--json'\n" TRY);
    assert_string_equal(r.out, "");
    run(&r, "route", "-p", "contexts", "42", NULL);
    assert_int_equal(r.rc, PS_CTL_EXIT_USAGE);
    assert_string_equal(r.err, "pgshadowctl: route: unknown option '-p'\n" TRY);
    /* after "--" a leading dash is an operand, as documented */
    run(&r, "route", "--percent", "100", "--", "--json", "-1", NULL);
    assert_int_equal(r.rc, PS_CTL_EXIT_OK);
    assert_string_equal(r.out, "shadow\n");
    run(&r, "route", "--percent=0", "contexts", "42", NULL);
    assert_int_equal(r.rc, PS_CTL_EXIT_OK);
    assert_string_equal(r.out, "primary\n");
    run(&r, "route", "contexts", "--percent", "100", "42", NULL);
    assert_int_equal(r.rc, PS_CTL_EXIT_OK);
    assert_string_equal(r.out, "shadow\n");
    run(&r, "route", "--percent", "101", "a", "b", NULL);
    assert_string_equal(r.err, "pgshadowctl: route: --percent needs an integer 0..100, got '101'\n" TRY);
    run(&r, "route", "--percent", NULL);
    assert_string_equal(r.err, "pgshadowctl: route: --percent needs an integer 0..100, got ''\n" TRY);
    run(&r, "route", "a", NULL);
    assert_string_equal(r.err, "pgshadowctl: route: usage: route [--percent N] TABLE KEY\n" TRY);
    run(&r, "route", "a", "b", "c", NULL);
    assert_string_equal(r.err, "pgshadowctl: route: unexpected argument 'c'\n" TRY);
}

/* Sibling: a long option's error echoed the whole argument, value and all
 * (a mistyped --conninfo=... with a password went to the terminal), named
 * the short form for --config, and called a known option "unknown". */
static void test_long_option_errors(void **state)
{
    (void)state;
    ctl_run r;
    run(&r, "--conninfo=postgresql://app:hunter2@db/prod", "check", NULL);
    assert_int_equal(r.rc, PS_CTL_EXIT_USAGE);
    assert_string_equal(r.err, "pgshadowctl: unknown option '--conninfo'\n" TRY);
    run(&r, "--config", NULL);
    assert_string_equal(r.err, "pgshadowctl: option '--config' needs a FILE\n" TRY);
    run(&r, "--help=x", NULL);
    assert_string_equal(r.err, "pgshadowctl: option '--help' takes no argument\n" TRY);
    run(&r, "--version", NULL);
    assert_int_equal(r.rc, PS_CTL_EXIT_OK);
    assert_string_equal(r.out, "pgshadowctl " PGSHADOW_VERSION "\n");
}

/* Sibling: every command's own arguments go through the same rules. */
static void test_command_options(void **state)
{
    (void)state;
    ctl_run r;
    run(&r, "install", "--dry-run", "--bogus=1", NULL);
    assert_int_equal(r.rc, PS_CTL_EXIT_USAGE);
    assert_string_equal(r.err, "pgshadowctl: install: unknown option '--bogus'\n" TRY);
    run(&r, "install", "--dry-run=yes", NULL);
    assert_string_equal(r.err, "pgshadowctl: install: option '--dry-run' takes no argument\n" TRY);
    run(&r, "install", "extra", NULL);
    assert_string_equal(r.err, "pgshadowctl: install: unexpected argument 'extra'\n" TRY);
    run(&r, "uninstall", "--drop-shadow", "-x", NULL);
    assert_string_equal(r.err, "pgshadowctl: uninstall: unknown option '-x'\n" TRY);
    run(&r, "check", "--verbose", NULL);
    assert_string_equal(r.err, "pgshadowctl: check: unknown option '--verbose'\n" TRY);
    run(&r, "disable-writes", "contexts", "--all", NULL);
    assert_string_equal(r.err, "pgshadowctl: disable-writes: unknown option '--all'\n" TRY);
    run(&r, "enable-writes", "a", "b", NULL);
    assert_string_equal(r.err, "pgshadowctl: enable-writes: unexpected argument 'b'\n" TRY);
    assert_int_equal(r.rc, PS_CTL_EXIT_USAGE);
}


/* The command table is the one list: --help shows every command of it,
 * man/pgshadowctl.1 documents every command of it (a command that a later
 * release brings with the part it arrives with), and documents no other. */
static char *man_commands(void)
{
    const char *src = getenv("PGSHADOW_SRCDIR");
    assert_non_null(src);
    char path[1024];
    snprintf(path, sizeof path, "%s/man/pgshadowctl.1", src);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char sect[65536];
    size_t n = 0;
    char line[1024];
    bool in = false, head = false;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, ".SH ", 4) == 0)
            in = strncmp(line, ".SH COMMANDS", 12) == 0;
        if (!in)
            continue;
        /* the line after .TP is a head (its words), the next the body */
        bool tp = strncmp(line, ".TP", 3) == 0;
        for (const char *p = line; *p && n + 2 < sizeof sect; p++) {
            if (p[0] == '\\' && p[1] == '-') /* \- is a dash */
                continue;
            if (p[0] == '\\' && p[1] == 'f') { /* font change */
                p += 2;
                continue;
            }
            sect[n++] = (*p == '"' || *p == ',') ? ' ' : *p;
        }
        if (head && !tp) {
            head = false;
        }
        if (tp)
            head = true;
    }
    sect[n] = '\0';
    fclose(f);
    return sect;
}

static bool has_word(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = strstr(text, word); p; p = strstr(p + 1, word)) {
        bool start = p == text || p[-1] == ' ' || p[-1] == '\n';
        bool end = p[n] == ' ' || p[n] == '\n' || p[n] == '\0';
        if (start && end)
            return true;
    }
    return false;
}

static void test_command_table_docs(void **state)
{
    (void)state;
    ctl_run help, r;
    run(&help, "--help", NULL);
    assert_int_equal(help.rc, PS_CTL_EXIT_OK);
    const char *man = man_commands();
    size_t count = 0;
    for (const ps_ctl_command *c = ps_ctl_commands; c->name; c++, count++) {
        if (!has_word(help.out, c->name))
            fail_msg("--help lacks %s", c->name);
        if (!has_word(man, c->name))
            fail_msg("man/pgshadowctl.1 COMMANDS lacks %s", c->name);
        if (!c->run) {
            char want[160];
            snprintf(want, sizeof want, "with %s.", c->arrives_with);
            if (!strstr(man, want))
                fail_msg("man/pgshadowctl.1 does not say %s arrives %s", c->name, want);
            run(&r, c->name, NULL);
            assert_int_equal(r.rc, PS_CTL_EXIT_USAGE);
            assert_non_null(strstr(r.err, c->arrives_with));
        }
        assert_true(c->min_args <= c->max_args);
        assert_ptr_equal(ps_ctl_command_find(c->name), c);
    }
    assert_true(count >= 6);
    /* every .TP head of the man page's COMMANDS starts with a command of the table */
    const char *src = getenv("PGSHADOW_SRCDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/man/pgshadowctl.1", src);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024], prev[1024] = "";
    bool in = false;
    int heads = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, ".SH ", 4) == 0)
            in = strncmp(line, ".SH COMMANDS", 12) == 0;
        if (in && strncmp(prev, ".TP", 3) == 0) {
            char word[128] = "";
            const char *p = line;
            if (strncmp(p, ".BR ", 4) == 0)
                p += 4;
            else if (strncmp(p, ".B ", 3) == 0)
                p += 3;
            size_t k = 0;
            for (; *p && *p != ' ' && *p != '\n' && k + 1 < sizeof word; p++) {
                if (p[0] == '\\' && p[1] == '-')
                    continue;
                word[k++] = *p;
            }
            word[k] = '\0';
            if (!ps_ctl_command_find(word))
                fail_msg("man/pgshadowctl.1 documents '%s', which the command table lacks", word);
            heads++;
        }
        snprintf(prev, sizeof prev, "%s", line);
    }
    fclose(f);
    assert_true(heads >= 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_short_option_in_bundle),
        cmocka_unit_test(test_route_unknown_option),
        cmocka_unit_test(test_long_option_errors),
        cmocka_unit_test(test_command_options),
        cmocka_unit_test(test_command_table_docs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
