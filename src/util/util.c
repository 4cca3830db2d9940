/*
 * util.c - allocation wrappers, clocks, randomness; see util.h.
 */
#include "util/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>
#include <time.h>

static void out_of_memory(size_t size)
{
    fprintf(stderr, "payd: out of memory allocating %zu bytes\n", size);
    abort();
}

void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        out_of_memory(size);
    return p;
}

void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        out_of_memory(count * size);
    return p;
}

void *xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        out_of_memory(size);
    return p;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t len)
{
    char *p = xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static int64_t clock_read_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t clock_wall_ms(void)
{
    return clock_read_ns(CLOCK_REALTIME) / 1000000;
}

int64_t clock_mono_ms(void)
{
    return clock_read_ns(CLOCK_MONOTONIC) / 1000000;
}

int64_t clock_mono_us(void)
{
    return clock_read_ns(CLOCK_MONOTONIC) / 1000;
}

int64_t clock_mono_ns(void)
{
    return clock_read_ns(CLOCK_MONOTONIC);
}

void clock_format_rfc3339(int64_t wall_ms, char out[RFC3339_LEN + 1])
{
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char tmp[96]; /* room for any int values, as the compiler cannot bound them */
    snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(wall_ms % 1000));
    memcpy(out, tmp, RFC3339_LEN);
    out[RFC3339_LEN] = '\0';
}

int date_parse(const char *s, int64_t *day_ms)
{
    if (strlen(s) != DATE_LEN || s[4] != '-' || s[7] != '-')
        return -1;
    for (int i = 0; i < DATE_LEN; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return -1;
    struct tm tm = {0};
    tm.tm_year = atoi(s) - 1900;
    tm.tm_mon = atoi(s + 5) - 1;
    tm.tm_mday = atoi(s + 8);
    time_t t = timegm(&tm);
    char back[DATE_LEN + 1];
    date_format((int64_t)t * 1000, back);
    if (strcmp(back, s) != 0) /* timegm() normalises 02-30 to 03-02 */
        return -1;
    *day_ms = (int64_t)t * 1000;
    return 0;
}

void date_format(int64_t wall_ms, char out[DATE_LEN + 1])
{
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char tmp[64];
    snprintf(tmp, sizeof(tmp), "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    memcpy(out, tmp, DATE_LEN);
    out[DATE_LEN] = '\0';
}

void clock_deadline(int64_t ms, struct timespec *out)
{
    clock_gettime(CLOCK_REALTIME, out);
    int64_t ns = out->tv_nsec + (ms % 1000) * 1000000;
    out->tv_sec += ms / 1000 + ns / 1000000000;
    out->tv_nsec = ns % 1000000000;
}

uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = s; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

void rand_bytes(void *buf, size_t len)
{
    /* OpenSSL's DRBG, seeded from the kernel: no system call per id. */
    if (RAND_bytes(buf, (int)len) != 1) {
        fprintf(stderr, "payd: RAND_bytes failed\n");
        abort();
    }
}

bool token_valid(const char *s, size_t max, const char *extra)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (const char *p = s; *p; p++)
        if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') && !(*p >= '0' && *p <= '9') &&
            !strchr(extra, *p))
            return false;
    return true;
}

void hex_encode(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}
