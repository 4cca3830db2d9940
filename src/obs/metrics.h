/*
 * metrics.h - the metrics registry and its Prometheus text exposition.
 *
 * Counters are relaxed atomics in fixed arrays sized at start-up, so
 * counting costs one atomic add and scraping never blocks the hot path.
 * Which metrics exist is one table in metrics.c; HTTP metrics are indexed by
 * route (the router's table) and by status class from a fixed list.
 */
#ifndef PAYD_OBS_METRICS_H
#define PAYD_OBS_METRICS_H

#include <stdint.h>

#include "core/state.h"

typedef struct metrics metrics;

/* route_names/route_methods: the router's table, route_count entries;
 * channel_names: the configured channels. The strings must outlive the
 * registry. */
metrics *metrics_new(const char *const *route_names, const char *const *route_methods,
                     int route_count, const char *const *channel_names, int channel_count);
void metrics_free(metrics *m);

/* One HTTP request answered: its route (-1: no route matched), status and
 * latency from the first byte of the request to the queued answer. */
void metrics_http(metrics *m, int route, int status, int64_t latency_us);

/* A payment reached a final status on a channel (index in channel_names). */
void metrics_payment_final(metrics *m, int channel, enum payment_status status);

/* One group commit: how many operations and how long from the oldest
 * submission to the commit. */
void metrics_store_commit(metrics *m, int ops, int64_t latency_us);

/* The text exposition (format 0.0.4); the caller frees it. */
char *metrics_render(metrics *m, const char *version);

#endif
