/*
 * log.h - structured logs: one JSON object a line on stderr (or plain text
 * for humans with [log] format = text).
 *
 * A line is an event name and string fields given as NULL-terminated
 * name/value pairs: log_info("payment_finished", "payment_id", id, NULL).
 * Never pass a key, signature or secret.
 */
#ifndef PAYD_OBS_LOG_H
#define PAYD_OBS_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "conf.h"

void log_init(enum log_format format, enum log_level level);

void log_event(enum log_level level, const char *event, ...) __attribute__((sentinel));

bool log_enabled(enum log_level level);

/* One answered HTTP request ("" for an id it does not concern). */
struct log_request {
    const char *request_id, *method, *route, *path;
    int status;
    int64_t latency_us;
    const char *merchant_id, *order_id, *payment_id;
};

/* Its line: event "request", level warn for a 5xx, else info. */
void log_request(const struct log_request *r);

#define log_debug(...) log_event(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_event(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_event(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_event(LOG_ERROR, __VA_ARGS__)

#endif
