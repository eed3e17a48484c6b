/*
 * route.h - read routing: which requests read from the shadow table.
 *
 *   h      = murmur3_x86_32(utf8(table || ":" || key), seed 0)
 *   bucket = h % 100 + 1
 *   shadow = percent > 0 AND bucket <= percent
 *
 * The same algorithm is implemented in SQL (pgshadow.read_from_shadow) and must
 * agree with the contract's test vectors.
 */
#ifndef PGSHADOW_ROUTE_H
#define PGSHADOW_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

uint32_t ps_murmur3_x86_32(const void *data, size_t len, uint32_t seed);
int ps_route_bucket(const char *table, const char *key); /* 1..100 */
bool ps_route_to_shadow(const char *table, const char *key, int percent);

#endif
