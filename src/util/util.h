/*
 * util.h - the few helpers every module needs: allocation that aborts on
 * out-of-memory (one wrapper, so callers never test for NULL), clocks with
 * their unit in the name, random bytes, and always-on assertions. paysim
 * (tools/paysim) links it too.
 *
 * Assertions here are for programmer errors only and stay on in release
 * builds: a crash and restart beats a corrupted payment. Bad input is
 * validated and answered, never asserted.
 */
#ifndef PAYD_UTIL_H
#define PAYD_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define PAYD_ASSERT(cond)                                                              \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "payd: assertion failed: %s (%s:%d)\n", #cond, __FILE__,   \
                    __LINE__);                                                         \
            abort();                                                                   \
        }                                                                              \
    } while (0)

/* Allocation: never returns NULL; aborts the process when memory is gone. */
void *xmalloc(size_t size);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t len);

/* Clocks. Wall time is for timestamps that are shown or stored; monotonic
 * time is for every duration and deadline. */
int64_t clock_wall_ms(void);
int64_t clock_mono_ms(void);
int64_t clock_mono_us(void);
int64_t clock_mono_ns(void);

/* Formats wall milliseconds as RFC 3339 UTC with milliseconds
 * ("2026-11-25T09:03:46.123Z"); out must hold RFC3339_LEN + 1 (25) bytes. */
#define RFC3339_LEN 24
void clock_format_rfc3339(int64_t wall_ms, char out[RFC3339_LEN + 1]);

/* A calendar date "YYYY-MM-DD" (a real one: 2026-02-30 is refused): 0 and
 * the wall ms of its start (00:00 UTC) in *day_ms, or -1. */
#define DATE_LEN 10
int date_parse(const char *s, int64_t *day_ms);
/* The UTC date of wall ms, "YYYY-MM-DD", into out (DATE_LEN + 1 bytes). */
void date_format(int64_t wall_ms, char out[DATE_LEN + 1]);
#define DAY_MS (86400LL * 1000)

/* Fills buf with len bytes from a CSPRNG (OpenSSL's, seeded by the kernel);
 * aborts if none can be had. */
void rand_bytes(void *buf, size_t len);

/* The wall-clock moment ms milliseconds from now, as pthread_cond_timedwait
 * wants it. */
struct timespec;
void clock_deadline(int64_t ms, struct timespec *out);

/* FNV-1a hash of a string, for spreading keys over slots and shards. */
uint64_t hash_str(const char *s);

/* True when s is 1 to max characters, each an ASCII letter or digit or
 * one of extra ("._:-"): a plain token, safe in a path, a header and a log
 * line. */
bool token_valid(const char *s, size_t max, const char *extra);

/* Lower-case hex of len bytes into out (2 * len + 1 bytes). */
void hex_encode(const uint8_t *in, size_t len, char *out);

/* Sleeps for ms milliseconds (restarting after signals). */
void sleep_ms(int64_t ms);

#endif
