/*
 * test-route.c - the contract's routing vectors and the cohort properties.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgshadow/route.h"

typedef struct vector {
    const char *table;
    const char *key;
    uint32_t hash;
    int bucket;
} vector;

/* Verbatim from the contract ("Read routing"). The input is table ":" key. */
static const vector vectors[] = {
    {"AB12A", "122", 0x3f4e7e32U, 23},
    {"AB12A", "155", 0xc2cd44cfU, 100},
    {"contexts", "1", 0x707ddaf7U, 48},
    {"contexts", "42", 0x69446b08U, 29},
    {"tasks", "7f3c2a9e-0b1d-4c55-9e1a-2f6d8c4b1a00", 0xf49eddf1U, 10},
    {"projects", "aidis", 0xece9002bU, 8},
    {"sessions", "", 0x4c12bc2dU, 38},
    {"analytics_events", "1107", 0x906448bdU, 26},
    {"contexts", "\xc3\xbcn\xc3\xaf\x63\xc3\xb8\x64\xc3\xa9", 0x84162bfbU, 64}, /* ünïcødé */
    {"Weird \"Table\"", "key with spaces", 0x288c1f4dU, 94},
    {"tasks", "248", 0x28607184U, 57},
};
#define N_VECTORS (sizeof(vectors) / sizeof(vectors[0]))

static void test_vectors_hash(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_VECTORS; i++) {
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "%s:%s", vectors[i].table, vectors[i].key);
        uint32_t h = ps_murmur3_x86_32(buf, (size_t)n, 0);
        if (h != vectors[i].hash)
            print_error("vector '%s': got 0x%08x want 0x%08x\n", buf, h, vectors[i].hash);
        assert_int_equal(h, vectors[i].hash);
    }
}

static void test_vectors_bucket(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_VECTORS; i++) {
        int b = ps_route_bucket(vectors[i].table, vectors[i].key);
        assert_int_equal(b, vectors[i].bucket);
        /* the bucket is exactly the boundary of the smallest percent that routes it */
        assert_true(ps_route_to_shadow(vectors[i].table, vectors[i].key, b));
        assert_false(ps_route_to_shadow(vectors[i].table, vectors[i].key, b - 1));
    }
}

static void test_hello_and_empty(void **state)
{
    (void)state;
    assert_int_equal(ps_murmur3_x86_32("hello", 5, 0), 0x248bfa47U);
    /* reference: murmur3_x86_32("", seed 0) = 0, seed 1 = 0x514e28b7 */
    assert_int_equal(ps_murmur3_x86_32("", 0, 0), 0);
    assert_int_equal(ps_murmur3_x86_32("", 0, 1), 0x514e28b7U);
    /* every tail length (1, 2, 3 bytes) against published reference values */
    assert_int_equal(ps_murmur3_x86_32("a", 1, 0), 0x3c2569b2U);
    assert_int_equal(ps_murmur3_x86_32("ab", 2, 0), 0x9bbfd75fU);
    assert_int_equal(ps_murmur3_x86_32("abc", 3, 0), 0xb3dd93faU);
    assert_int_equal(ps_murmur3_x86_32("abcd", 4, 0), 0x43ed676aU);
    /* NUL bytes inside the data are hashed, not a terminator */
    assert_int_not_equal(ps_murmur3_x86_32("a\0b", 3, 0), ps_murmur3_x86_32("a", 1, 0));
    /* an unaligned start gives the same answer */
    char buf[16] = "xhello";
    assert_int_equal(ps_murmur3_x86_32(buf + 1, 5, 0), 0x248bfa47U);
}

static void test_percent_0_and_100(void **state)
{
    (void)state;
    char key[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof(key), "%d", i);
        assert_false(ps_route_to_shadow("contexts", key, 0));
        assert_false(ps_route_to_shadow("contexts", key, -5));
        assert_true(ps_route_to_shadow("contexts", key, 100));
        assert_true(ps_route_to_shadow("contexts", key, 250));
        int b = ps_route_bucket("contexts", key);
        assert_true(b >= 1 && b <= 100);
    }
}

static void test_monotonic_cohorts(void **state)
{
    (void)state;
    char key[32];
    int in_at_1 = 0, in_at_50 = 0;
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        for (int p = 0; p <= 100; p++) {
            if (!ps_route_to_shadow("tasks", key, p))
                continue;
            for (int q = p + 1; q <= 100; q++)
                assert_true(ps_route_to_shadow("tasks", key, q));
            break;
        }
        in_at_1 += ps_route_to_shadow("tasks", key, 1);
        in_at_50 += ps_route_to_shadow("tasks", key, 50);
    }
    /* roughly uniform: a broken modulus or constant hash would fail these */
    assert_true(in_at_1 > 10 && in_at_1 < 110);
    assert_true(in_at_50 > 2200 && in_at_50 < 2800);
}

static void test_long_key(void **state)
{
    (void)state;
    /* longer than the stack buffer: must agree with hashing the joined string */
    size_t n = 1000;
    char *key = malloc(n + 1);
    char *joined = malloc(n + 8);
    assert_non_null(key);
    assert_non_null(joined);
    memset(key, 'z', n);
    key[n] = '\0';
    int len = snprintf(joined, n + 8, "t:%s", key);
    uint32_t h = ps_murmur3_x86_32(joined, (size_t)len, 0);
    assert_int_equal(ps_route_bucket("t", key), (int)(h % 100U) + 1);
    free(key);
    free(joined);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_hash),
        cmocka_unit_test(test_vectors_bucket),
        cmocka_unit_test(test_hello_and_empty),
        cmocka_unit_test(test_percent_0_and_100),
        cmocka_unit_test(test_monotonic_cohorts),
        cmocka_unit_test(test_long_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
