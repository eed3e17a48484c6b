/*
 * utf8-check.h - for unit tests: is a string valid UTF-8? (journald shows a
 * field that is not as a blob). Written here, apart from the code under test,
 * so a test never checks that code with its own rule.
 */
#ifndef PGSHADOW_TEST_UTF8_CHECK_H
#define PGSHADOW_TEST_UTF8_CHECK_H

#include <stdbool.h>
#include <stddef.h>

static inline bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3
                 : (*p & 0xf8) == 0xf0 ? 4 : 0;
        if (n == 0)
            return false;
        for (size_t k = 1; k < n; k++)
            if ((p[k] & 0xc0) != 0x80)
                return false;
        p += n;
    }
    return true;
}

#endif
