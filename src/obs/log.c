/*
 * log.c - JSON or text lines on stderr; see log.h. Lines are built whole and
 * written with one write(2), so lines from threads never interleave.
 *
 * A line is built by hand into a buffer, not through jansson: the request
 * line built with jansson's objects and json_dumps took 57 000 instructions
 * (10.4 us, 18 us with two threads) a line; this writer takes 10 000 (2.4
 * us, of which 0.34 us is the write(2) itself; bench/RESULTS.md,
 * "Observability cost"). Strings are escaped as JSON requires, and bytes
 * that are not UTF-8 become U+FFFD, so every line is valid JSON whatever a
 * client sent.
 */
#include "obs/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util/util.h"

#define LINE_INLINE 1024 /* most lines fit here; longer ones go to the heap */

static enum log_format g_format = LOG_FORMAT_JSON;
static enum log_level g_level = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(enum log_format format, enum log_level level)
{
    g_format = format;
    g_level = level;
}

bool log_enabled(enum log_level level)
{
    return level >= g_level;
}

/* ---- the line buffer ---- */

struct line {
    char *buf;
    size_t len, cap;
    char inline_buf[LINE_INLINE];
};

static void reserve(struct line *l, size_t more)
{
    if (l->len + more <= l->cap)
        return;
    size_t cap = (l->len + more) * 2;
    if (l->buf == l->inline_buf) {
        char *heap = xmalloc(cap);
        memcpy(heap, l->buf, l->len);
        l->buf = heap;
    } else {
        l->buf = xrealloc(l->buf, cap);
    }
    l->cap = cap;
}

static void put(struct line *l, const char *s, size_t n)
{
    reserve(l, n);
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_cstr(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* The length of the UTF-8 sequence at s (at most n bytes), or 0 when it is
 * not one (overlong forms, surrogates and values past U+10FFFF included). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                                          : c >= 0xF0 && c <= 0xF4   ? 4
                                                                     : 0;
    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F) ||
        (c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F))
        return 0;
    return len;
}

/* s as the inside of a JSON string. */
static void put_escaped(struct line *l, const char *str)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str);
    reserve(l, n + 2);
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            size_t run = i;
            while (run < n && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' &&
                   s[run] != '\\')
                run++;
            put(l, str + i, run - i);
            i = run;
        } else if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            put(l, esc, 2);
            i++;
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(l, esc, 6);
            i++;
        } else {
            size_t len = utf8_len(s + i, n - i);
            if (len) {
                put(l, str + i, len);
                i += len;
            } else {
                put_cstr(l, "\\ufffd");
                i++;
            }
        }
    }
}

static void line_begin(struct line *l, enum log_level level, const char *event)
{
    l->buf = l->inline_buf;
    l->len = 0;
    l->cap = sizeof(l->inline_buf);
    char ts[25];
    clock_format_rfc3339(clock_wall_ms(), ts);
    if (g_format == LOG_FORMAT_JSON) {
        put_cstr(l, "{\"time\":\"");
        put_cstr(l, ts);
        put_cstr(l, "\",\"level\":\"");
        put_cstr(l, level_names[level]);
        put_cstr(l, "\",\"event\":\"");
        put_escaped(l, event);
        put_cstr(l, "\"");
    } else {
        char head[64];
        int n = snprintf(head, sizeof(head), "%s %-5s ", ts, level_names[level]);
        put(l, head, (size_t)n);
        put_escaped(l, event);
    }
}

/* name's value: a JSON string (NULL: null), or in text bare. */
static void line_str(struct line *l, const char *name, const char *value)
{
    if (g_format == LOG_FORMAT_JSON) {
        put_cstr(l, ",\"");
        put_escaped(l, name);
        if (!value) {
            put_cstr(l, "\":null");
            return;
        }
        put_cstr(l, "\":\"");
        put_escaped(l, value);
        put_cstr(l, "\"");
    } else {
        put_cstr(l, " ");
        put_escaped(l, name);
        put_cstr(l, "=");
        /* A value with a space, '=' or '"' is quoted, so that it cannot
         * pass for more fields. */
        const char *v = value ? value : "null";
        bool quote = v[0] == '\0' || strpbrk(v, " =\"") != NULL;
        if (quote)
            put_cstr(l, "\"");
        put_escaped(l, v);
        if (quote)
            put_cstr(l, "\"");
    }
}

/* name's value, already formatted as a JSON number. */
static void line_number(struct line *l, const char *name, const char *number)
{
    put_cstr(l, g_format == LOG_FORMAT_JSON ? ",\"" : " ");
    put_escaped(l, name);
    put_cstr(l, g_format == LOG_FORMAT_JSON ? "\":" : "=");
    put_cstr(l, number);
}

static void line_end(struct line *l)
{
    if (g_format == LOG_FORMAT_JSON)
        put_cstr(l, "}");
    put_cstr(l, "\n");
    /* One write(2) keeps lines whole on a file, and on a pipe up to
     * PIPE_BUF bytes; a short write is finished rather than lost. */
    for (size_t done = 0; done < l->len;) {
        ssize_t n = write(STDERR_FILENO, l->buf + done, l->len - done);
        if (n <= 0 && errno != EINTR)
            break;
        if (n > 0)
            done += (size_t)n;
    }
    if (l->buf != l->inline_buf)
        free(l->buf);
}

/* ---- the events ---- */

void log_event(enum log_level level, const char *event, ...)
{
    if (level < g_level)
        return;
    struct line l;
    line_begin(&l, level, event);
    va_list ap;
    va_start(ap, event);
    const char *name;
    while ((name = va_arg(ap, const char *)) != NULL)
        line_str(&l, name, va_arg(ap, const char *));
    va_end(ap);
    line_end(&l);
}

void log_request(const struct log_request *r)
{
    enum log_level level = r->status >= 500 ? LOG_WARN : LOG_INFO;
    if (level < g_level)
        return;
    struct line l;
    line_begin(&l, level, "request");
    line_str(&l, "request_id", r->request_id);
    line_str(&l, "method", r->method);
    line_str(&l, "route", r->route);
    line_str(&l, "path", r->path);
    char num[32];
    snprintf(num, sizeof(num), "%d", r->status);
    line_number(&l, "status", num);
    int64_t us = r->latency_us > 0 ? r->latency_us : 0;
    snprintf(num, sizeof(num), "%lld.%03lld", (long long)(us / 1000), (long long)(us % 1000));
    line_number(&l, "latency_ms", num);
    if (r->merchant_id[0])
        line_str(&l, "merchant_id", r->merchant_id);
    if (r->order_id[0])
        line_str(&l, "order_id", r->order_id);
    if (r->payment_id[0])
        line_str(&l, "payment_id", r->payment_id);
    line_end(&l);
}
