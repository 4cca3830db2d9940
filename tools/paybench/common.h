/*
 * common.h - the few helpers every paybench file needs: an always-on
 * assertion, allocation that aborts on out-of-memory (so callers never test
 * for NULL) and a monotonic clock in microseconds.
 *
 * paybench is a tool, not part of payd, so it carries its own copies instead
 * of linking src/util; they follow the same rules.
 */
#ifndef PAYBENCH_COMMON_H
#define PAYBENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define PB_ASSERT(cond)                                                                    \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "paybench: assertion failed: %s (%s:%d)\n", #cond, __FILE__,   \
                    __LINE__);                                                             \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

static inline void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count, size);
    if (p == NULL) {
        fprintf(stderr, "paybench: out of memory (%zu x %zu bytes)\n", count, size);
        abort();
    }
    return p;
}

static inline void *xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size);
    if (p == NULL) {
        fprintf(stderr, "paybench: out of memory (%zu bytes)\n", size);
        abort();
    }
    return p;
}

/* Monotonic time in microseconds, for every duration and deadline. */
static inline int64_t clock_mono_us(void)
{
    struct timespec ts;
    PB_ASSERT(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#endif
