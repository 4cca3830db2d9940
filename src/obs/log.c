/*
 * log.c - JSON or text lines on stderr; see log.h. Lines are built whole and
 * written with one write(2), so lines from threads never interleave.
 */
#include "obs/log.h"

#include <jansson.h>
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

void log_event(enum log_level level, const char *event, ...)
{
    if (level < g_level)
        return;
    char ts[25];
    clock_format_rfc3339(clock_wall_ms(), ts);
    va_list ap;
    va_start(ap, event);
    char *line = NULL;
    if (g_format == LOG_FORMAT_JSON) {
        json_t *o = json_object();
        json_object_set_new(o, "time", json_string(ts));
        json_object_set_new(o, "level", json_string(level_names[level]));
        json_object_set_new(o, "event", json_string(event));
        const char *name;
        while ((name = va_arg(ap, const char *)) != NULL) {
            const char *value = va_arg(ap, const char *);
            json_object_set_new(o, name, value ? json_string(value) : json_null());
        }
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (s) {
            size_t n = strlen(s);
            line = xmalloc(n + 2);
            memcpy(line, s, n);
            line[n] = '\n';
            line[n + 1] = '\0';
            free(s);
        }
    } else {
        size_t cap = 256, len = 0;
        line = xmalloc(cap);
        len = (size_t)snprintf(line, cap, "%s %-5s %s", ts, level_names[level], event);
        const char *name;
        while ((name = va_arg(ap, const char *)) != NULL) {
            const char *value = va_arg(ap, const char *);
            size_t need = len + strlen(name) + (value ? strlen(value) : 4) + 4;
            if (need > cap) {
                cap = need * 2;
                line = xrealloc(line, cap);
            }
            len += (size_t)snprintf(line + len, cap - len, " %s=%s", name, value ? value : "null");
        }
        if (len + 2 > cap)
            line = xrealloc(line, len + 2);
        line[len++] = '\n';
        line[len] = '\0';
    }
    va_end(ap);
    if (line) {
        ssize_t ignored = write(STDERR_FILENO, line, strlen(line));
        (void)ignored;
        free(line);
    }
}
