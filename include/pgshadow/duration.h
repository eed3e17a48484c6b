/*
 * duration.h - "250ms", "30s", "5m", "2h", "1d" <-> milliseconds.
 */
#ifndef PGSHADOW_DURATION_H
#define PGSHADOW_DURATION_H

#include <stddef.h>
#include <stdint.h>

/* Parse a duration with a mandatory unit (ms, s, m, h, d). A non-negative
 * integer followed by one unit; no spaces, no sign, no fractions.
 * Returns 0 and sets *out_ms, or -1 with *why set to a static explanation. */
int ps_duration_parse(const char *text, int64_t *out_ms, const char **why);

/* Format milliseconds as the shortest exact unit ("1500ms", "30s", "2h"). */
void ps_duration_format(int64_t ms, char *buf, size_t len);

#endif
