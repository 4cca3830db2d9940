/*
 * log.c - JSON or text lines on stderr; see log.h. Lines are built whole and
 * written with one write(2), so lines from threads never interleave.
 */
#include "obs/log.h"

#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "util/util.h"

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

static void write_line(char *line, size_t len)
{
    line[len++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, len);
    (void)ignored;
}

/* A text line: "TIME LEVEL EVENT name=value ...", strings bare, other values
 * as JSON. */
static void write_text(const char *ts, enum log_level level, const char *event, json_t *fields)
{
    size_t cap = 256, len = 0;
    char *line = xmalloc(cap);
    len = (size_t)snprintf(line, cap, "%s %-5s %s", ts, level_names[level], event);
    const char *name;
    json_t *value;
    json_object_foreach(fields, name, value)
    {
        char *dumped = NULL;
        const char *v = json_is_string(value) ? json_string_value(value)
                        : (dumped = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT |
                                                       JSON_REAL_PRECISION(9)));
        if (!v)
            v = "?";
        size_t need = len + strlen(name) + strlen(v) + 4;
        if (need > cap) {
            cap = need * 2;
            line = xrealloc(line, cap);
        }
        len += (size_t)snprintf(line + len, cap - len, " %s=%s", name, v);
        free(dumped);
    }
    line = xrealloc(line, len + 2);
    write_line(line, len);
    free(line);
}

void log_fields(enum log_level level, const char *event, json_t *fields)
{
    if (level < g_level) {
        json_decref(fields);
        return;
    }
    char ts[25];
    clock_format_rfc3339(clock_wall_ms(), ts);
    if (g_format == LOG_FORMAT_TEXT) {
        write_text(ts, level, event, fields);
        json_decref(fields);
        return;
    }
    json_t *o = json_pack("{s:s, s:s, s:s}", "time", ts, "level", level_names[level], "event",
                          event);
    json_object_update(o, fields);
    json_decref(fields);
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!s)
        return;
    size_t n = strlen(s);
    s = xrealloc(s, n + 2);
    write_line(s, n);
    free(s);
}

void log_event(enum log_level level, const char *event, ...)
{
    if (level < g_level)
        return;
    json_t *fields = json_object();
    va_list ap;
    va_start(ap, event);
    const char *name;
    while ((name = va_arg(ap, const char *)) != NULL) {
        const char *value = va_arg(ap, const char *);
        json_object_set_new(fields, name, value ? json_string(value) : json_null());
    }
    va_end(ap);
    log_fields(level, event, fields);
}
