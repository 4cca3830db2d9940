/*
 * series.h - a ring of one-second samples of the metrics that the dashboard
 * draws and the alert rules judge.
 *
 * A sample holds cumulative counts (requests, errors, a latency histogram,
 * payments) and the gauges of its moment; what happened over a window is the
 * difference of two samples, so a window of any length up to the ring's costs
 * the same. The monitor thread appends; readers (the dashboard's endpoint)
 * copy under the ring's lock.
 */
#ifndef PAYD_OBS_SERIES_H
#define PAYD_OBS_SERIES_H

#include <stdint.h>

#include "conf.h"
#include "obs/metrics.h"

struct sample {
    int64_t t_ms; /* wall clock */
    /* cumulative since start */
    uint64_t api_requests; /* /v1 requests answered */
    uint64_t api_errors;   /* of them 5xx */
    uint64_t api_latency[METRIC_BUCKETS + 1];
    uint64_t accepted, succeeded, failed; /* payments */
    uint64_t rejected;                    /* limiter refusals, all limiters */
    /* gauges at t_ms (NaN: not known) */
    double queue_depth, queue_oldest_age_s, dead_letters, ledger_imbalance;
    double inflight, inflight_limit;
    int breaker[CONF_CHANNELS_MAX]; /* enum breaker_state */
    int channel_count;
};

typedef struct series series;

/* capacity: samples kept (the longest window needed, in seconds, plus one). */
series *series_new(int capacity);
void series_free(series *s);

/* Fills a sample's counts from the registry (t_ms and the gauges it has). */
void series_take(metrics *m, int channel_count, int64_t t_ms, struct sample *out);
void series_append(series *s, const struct sample *x);

/* The newest sample, and the newest taken at least window_ms before it (the
 * oldest there is when the ring is younger). false when there is none. */
bool series_window(series *s, int64_t window_ms, struct sample *newest, struct sample *older);

/* Copies the samples newer than since_ms, oldest first, preceded by the
 * one before them when there is one (the base of the first difference), up
 * to max in all; returns how many. */
int series_since(series *s, int64_t since_ms, struct sample *out, int max);

/* What happened between two samples, for the dashboard and the rules. */
double sample_error_ratio(const struct sample *older, const struct sample *newer); /* -1: none */
/* Latency quantile q of /v1 requests between them, seconds; -1: none. */
double sample_latency(const struct sample *older, const struct sample *newer, double q);

#endif
