/*
 * test-errors.c - the located-diagnostics list and its exact output format.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgshadow/errors.h"

static void test_add_and_clear(void **state)
{
    (void)state;
    ps_errors e;
    ps_errors_init(&e);
    assert_int_equal(e.count, 0);
    for (int i = 0; i < 100; i++)
        ps_errors_add(&e, "f.yaml", i + 1, 2, "error %d of %s", i, "many");
    assert_int_equal(e.count, 100);
    assert_string_equal(e.items[0].message, "error 0 of many");
    assert_string_equal(e.items[99].message, "error 99 of many");
    assert_int_equal(e.items[99].line, 100);
    assert_int_equal(e.items[99].column, 2);
    assert_string_equal(e.items[42].file, "f.yaml");
    ps_errors_clear(&e);
    assert_int_equal(e.count, 0);
    /* still usable after clear */
    ps_errors_add(&e, NULL, 0, 0, "x");
    assert_int_equal(e.count, 1);
    assert_null(e.items[0].file);
    ps_errors_clear(&e);
    ps_errors_clear(&e); /* twice is fine */
}

static void expect_format(const char *file, int line, int col, const char *want)
{
    ps_errors e;
    ps_errors_init(&e);
    ps_errors_add(&e, file, line, col, "boom");
    char *s = ps_error_format(&e.items[0]);
    assert_non_null(s);
    assert_string_equal(s, want);
    free(s);
    ps_errors_clear(&e);
}

static void test_format_omits_unknown_parts(void **state)
{
    (void)state;
    expect_format("a.yaml", 3, 7, "a.yaml:3:7: boom");
    expect_format("a.yaml", 3, 0, "a.yaml:3: boom");
    expect_format("a.yaml", 0, 0, "a.yaml: boom");
    expect_format("a.yaml", 0, 5, "a.yaml: boom");
    expect_format(NULL, 0, 0, "boom");
    expect_format(NULL, 4, 2, "boom");
    expect_format("a.yaml", -1, -1, "a.yaml: boom");
}

static void test_print(void **state)
{
    (void)state;
    ps_errors e;
    ps_errors_init(&e);
    ps_errors_add(&e, "dir/c.yaml", 1, 1, "first");
    ps_errors_add(&e, "dir/c.yaml", 10, 30, "second: %s", "with 100%");
    ps_errors_add(&e, NULL, 0, 0, "third");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    ps_errors_print(&e, f);
    fclose(f);
    assert_string_equal(buf, "dir/c.yaml:1:1: first\n"
                             "dir/c.yaml:10:30: second: with 100%\n"
                             "third\n");
    free(buf);
    ps_errors_clear(&e);
}

static void test_print_empty(void **state)
{
    (void)state;
    ps_errors e;
    ps_errors_init(&e);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ps_errors_print(&e, f);
    fclose(f);
    assert_int_equal(len, 0);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_and_clear),
        cmocka_unit_test(test_format_omits_unknown_parts),
        cmocka_unit_test(test_print),
        cmocka_unit_test(test_print_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
