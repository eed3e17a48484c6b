/*
 * route.c - read routing: murmur3_x86_32 bucketing (contract "Read routing").
 *
 * Owns the C implementation of the routing algorithm. Invariants: the hash is
 * the reference MurmurHash3_x86_32 over little-endian 4-byte blocks whatever
 * the host byte order (so C, SQL and every client agree), the bucket is always
 * 1..100, and the cohort for p% is a subset of the cohort for q% when p < q
 * (a key's bucket does not depend on the percent).
 */
#include "pgshadow/route.h"

#include <stdlib.h>
#include <string.h>

#include "pgshadow/xalloc.h"

static inline uint32_t rotl32(uint32_t x, int r)
{
    return (x << r) | (x >> (32 - r));
}

static inline uint32_t fmix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bU;
    h ^= h >> 13;
    h *= 0xc2b2ae35U;
    h ^= h >> 16;
    return h;
}

uint32_t ps_murmur3_x86_32(const void *data, size_t len, uint32_t seed)
{
    const uint8_t *p = data;
    const uint32_t c1 = 0xcc9e2d51U, c2 = 0x1b873593U;
    uint32_t h = seed;
    size_t nblocks = len / 4;

    for (size_t i = 0; i < nblocks; i++) {
        /* assembled byte by byte: little-endian on every host, no unaligned reads */
        uint32_t k = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                     (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
        k *= c1;
        k = rotl32(k, 15);
        k *= c2;
        h ^= k;
        h = rotl32(h, 13);
        h = h * 5 + 0xe6546b64U;
    }

    const uint8_t *tail = p + nblocks * 4;
    uint32_t k = 0;
    switch (len & 3) {
    case 3:
        k ^= (uint32_t)tail[2] << 16;
        /* fall through */
    case 2:
        k ^= (uint32_t)tail[1] << 8;
        /* fall through */
    case 1:
        k ^= tail[0];
        k *= c1;
        k = rotl32(k, 15);
        k *= c2;
        h ^= k;
    }

    h ^= (uint32_t)len;
    return fmix32(h);
}

int ps_route_bucket(const char *table, const char *key)
{
    size_t tl = strlen(table), kl = strlen(key);
    /* Small inputs hashed from the stack; larger ones are rare (keys are ids). */
    char stackbuf[256];
    char *buf = stackbuf;
    if (tl + kl + 1 > sizeof(stackbuf)) {
        buf = xmalloc(tl + kl + 1); /* a routing answer must never be silently wrong */
    }
    memcpy(buf, table, tl);
    buf[tl] = ':';
    memcpy(buf + tl + 1, key, kl);
    uint32_t h = ps_murmur3_x86_32(buf, tl + kl + 1, 0);
    if (buf != stackbuf)
        free(buf);
    return (int)(h % 100U) + 1;
}

bool ps_route_to_shadow(const char *table, const char *key, int percent)
{
    if (percent <= 0)
        return false;
    return ps_route_bucket(table, key) <= percent;
}
