/*
 * log.c - the log line; see log.h.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

#include "util/util.h"

void log_line(const char *fmt, ...)
{
    char when[RFC3339_LEN + 1];
    char msg[1024];
    clock_format_rfc3339(clock_wall_ms(), when);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* One write per line, so lines of concurrent threads do not interleave. */
    fprintf(stderr, "paysim: %s %s\n", when, msg);
}
