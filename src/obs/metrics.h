/*
 * metrics.h - the metrics registry and its Prometheus text exposition.
 *
 * Every metric is one row of METRICS below: its name, kind, up to two label
 * dimensions and its help text; adding a metric is adding a row. Counters
 * and histograms are relaxed atomics in arrays sized at start-up (the label
 * dimensions' sizes are known then: routes, channels, fixed lists), so
 * counting costs one or two atomic adds and scraping never blocks the hot
 * path. Gauges are set by their owners, or at each scrape by the render hook
 * (state that lives elsewhere: breakers, limiters, the queue); a gauge never
 * set is not exposed (the Redis-sharing gauges of an embedded payd).
 */
#ifndef PAYD_OBS_METRICS_H
#define PAYD_OBS_METRICS_H

#include <stdint.h>

typedef struct metrics metrics;

/* Where a metric's label values come from. */
enum metric_dim {
    DIM_NONE,
    DIM_ROUTE,   /* route, method: the router's table, then "unmatched" */
    DIM_STATUS,  /* status: the HTTP codes payd answers, then "other" */
    DIM_CHANNEL, /* channel: the configured channels */
    DIM_FINAL,   /* status: succeeded, failed */
    DIM_OUTCOME, /* outcome: a channel call's (enum chan_outcome order) */
    DIM_LIMITER, /* limiter: global, merchant, inflight */
    DIM_DEFER,   /* reason: pacer, breaker */
    DIM_LOCK,    /* result: acquired, busy, error */
    DIM_SHARED,  /* limiter: global, merchant (the limits Redis shares) */
    DIM_COUNT
};

enum metric_kind {
    METRIC_COUNTER,
    METRIC_GAUGE,
    METRIC_TIME_HISTOGRAM, /* observed in microseconds, exposed in seconds */
    METRIC_SIZE_HISTOGRAM, /* observed as counts */
};

/* X(id, name, kind, dim1, dim2, help) */
#define METRICS(X)                                                                         \
    X(M_HTTP_REQUESTS, "payd_http_requests_total", METRIC_COUNTER, DIM_ROUTE, DIM_STATUS,   \
      "HTTP requests answered, by route, method and status.")                              \
    X(M_HTTP_DURATION, "payd_http_request_duration_seconds", METRIC_TIME_HISTOGRAM,         \
      DIM_ROUTE, DIM_NONE, "Time from a request's arrival to its answer, by route.")        \
    X(M_PAYMENTS_ACCEPTED, "payd_payments_accepted_total", METRIC_COUNTER, DIM_CHANNEL,      \
      DIM_NONE, "Payments accepted (answered 202), by channel.")                            \
    X(M_PAYMENTS_FINAL, "payd_payments_total", METRIC_COUNTER, DIM_CHANNEL, DIM_FINAL,       \
      "Payments that reached a final status, by channel and status.")                       \
    X(M_PAYMENT_DURATION, "payd_payment_duration_seconds", METRIC_TIME_HISTOGRAM,           \
      DIM_CHANNEL, DIM_NONE, "Time from a payment's acceptance to its final status.")       \
    X(M_REFUNDS_FINAL, "payd_refunds_total", METRIC_COUNTER, DIM_CHANNEL, DIM_FINAL,         \
      "Refunds that reached a final status, by channel and status.")                        \
    X(M_CHANNEL_CALLS, "payd_channel_calls_total", METRIC_COUNTER, DIM_CHANNEL, DIM_OUTCOME, \
      "Calls to a channel (charges, queries, refunds), by outcome.")                        \
    X(M_CHANNEL_CALL_DURATION, "payd_channel_call_duration_seconds", METRIC_TIME_HISTOGRAM, \
      DIM_CHANNEL, DIM_NONE, "Time a channel took to answer a call.")                       \
    X(M_BREAKER_STATE, "payd_breaker_state", METRIC_GAUGE, DIM_CHANNEL, DIM_NONE,            \
      "Channel breaker: 0 closed, 1 open, 2 half-open.")                                    \
    X(M_BREAKER_TRANSITIONS, "payd_breaker_transitions_total", METRIC_COUNTER, DIM_CHANNEL,  \
      DIM_NONE, "Breaker state changes.")                                                   \
    X(M_CHANNEL_DEFERRED, "payd_channel_deferred_total", METRIC_COUNTER, DIM_CHANNEL,        \
      DIM_DEFER, "Calls put back in the queue by the pacer or an open breaker.")            \
    X(M_LIMITER_ADMITTED, "payd_limiter_admitted_total", METRIC_COUNTER, DIM_LIMITER,        \
      DIM_NONE, "Requests a limiter let through.")                                          \
    X(M_LIMITER_REJECTED, "payd_limiter_rejected_total", METRIC_COUNTER, DIM_LIMITER,        \
      DIM_NONE, "Requests a limiter refused.")                                              \
    X(M_INFLIGHT, "payd_inflight", METRIC_GAUGE, DIM_NONE, DIM_NONE,                         \
      "Write requests (order and payment creations) in flight.")                            \
    X(M_INFLIGHT_LIMIT, "payd_inflight_limit", METRIC_GAUGE, DIM_NONE, DIM_NONE,             \
      "The adaptive (or fixed) limit on them.")                                             \
    X(M_QUEUE_DEPTH, "payd_queue_depth", METRIC_GAUGE, DIM_NONE, DIM_NONE,                   \
      "Payment messages waiting in the queue (the store's outbox).")                        \
    X(M_QUEUE_OLDEST_AGE, "payd_queue_oldest_age_seconds", METRIC_GAUGE, DIM_NONE, DIM_NONE, \
      "Age of the oldest payment message still queued.")                                    \
    X(M_DEAD_LETTERS, "payd_dead_letters", METRIC_GAUGE, DIM_NONE, DIM_NONE,                 \
      "Payment messages delivered more than [worker] max_attempts times, not final.")        \
    X(M_STORE_COMMITS, "payd_store_commits_total", METRIC_COUNTER, DIM_NONE, DIM_NONE,       \
      "Store transactions committed (each one batch of operations).")                       \
    X(M_STORE_COMMIT_OPS, "payd_store_commit_ops_total", METRIC_COUNTER, DIM_NONE, DIM_NONE, \
      "Operations committed.")                                                              \
    X(M_STORE_BATCH_SIZE, "payd_store_commit_batch_size", METRIC_SIZE_HISTOGRAM, DIM_NONE,   \
      DIM_NONE, "Operations per committed batch.")                                          \
    X(M_STORE_COMMIT_DURATION, "payd_store_commit_duration_seconds", METRIC_TIME_HISTOGRAM,  \
      DIM_NONE, DIM_NONE,                                                                   \
      "Time from an operation's submission to its batch's commit (oldest operation).")      \
    X(M_LOCK_ACQUISITIONS, "payd_lock_acquisitions_total", METRIC_COUNTER, DIM_LOCK,         \
      DIM_NONE, "Order lock attempts: acquired, busy (held by another: contention), error.") \
    X(M_LOCK_WAIT, "payd_lock_wait_seconds", METRIC_TIME_HISTOGRAM, DIM_NONE, DIM_NONE,      \
      "Time spent acquiring an order lock (whatever the result).")                          \
    X(M_IDEM_REPLAYS, "payd_idempotency_replays_total", METRIC_COUNTER, DIM_NONE, DIM_NONE,  \
      "Requests answered with the stored answer of their Idempotency-Key.")                 \
    X(M_IDEM_CONFLICTS, "payd_idempotency_conflicts_total", METRIC_COUNTER, DIM_NONE,        \
      DIM_NONE, "Idempotency-Keys reused with another request, or while in use.")          \
    X(M_LEDGER_IMBALANCE, "payd_ledger_imbalance", METRIC_GAUGE, DIM_NONE, DIM_NONE,         \
      "Sum of every ledger entry, minor units, all currencies: must be 0.")                 \
    X(M_ALERTS_FIRING, "payd_alerts_firing", METRIC_GAUGE, DIM_NONE, DIM_NONE,               \
      "Built-in alerts firing now.")                                                        \
    X(M_LIMITER_SHARED, "payd_limiter_shared", METRIC_GAUGE, DIM_SHARED, DIM_NONE,          \
      "1: the limit is shared by the instances through Redis; 0: Redis is unavailable and "  \
      "this instance enforces its share of it (cluster mode only).")                        \
    X(M_LIMITER_FALLBACK, "payd_limiter_fallback_total", METRIC_COUNTER, DIM_SHARED,         \
      DIM_NONE, "Requests a limiter decided at this instance's share because Redis was "     \
      "unavailable.")                                                                       \
    X(M_LIMITER_INSTANCES, "payd_limiter_instances", METRIC_GAUGE, DIM_NONE, DIM_NONE,       \
      "Instances sharing the limits (cluster mode only).")

/* Label indexes of the fixed dimensions. */
enum { FINAL_SUCCEEDED, FINAL_FAILED };
enum { LIMITER_GLOBAL, LIMITER_MERCHANT, LIMITER_INFLIGHT };
enum { DEFER_PACER, DEFER_BREAKER };
enum { LOCK_RESULT_ACQUIRED, LOCK_RESULT_BUSY, LOCK_RESULT_ERROR };

#define AS_METRIC_ID(id, name, kind, d1, d2, help) id,
enum metric_id { METRICS(AS_METRIC_ID) METRIC_COUNT };
#undef AS_METRIC_ID

/* The latency buckets, microseconds (payment latencies from well under a
 * millisecond to ten seconds), and the batch-size buckets. */
#define METRIC_BUCKETS 16

/* route_names/route_methods: the router's table, route_count entries;
 * channel_names: the configured channels. The strings must outlive the
 * registry. */
metrics *metrics_new(const char *const *route_names, const char *const *route_methods,
                     int route_count, const char *const *channel_names, int channel_count);
void metrics_free(metrics *m);

/* Label indexes a and b address the dimensions of the metric's row (0 for a
 * dimension it does not have). A NULL registry counts nothing. */
void metrics_add(metrics *m, enum metric_id id, int a, int b, uint64_t n);
static inline void metrics_inc(metrics *m, enum metric_id id, int a, int b)
{
    metrics_add(m, id, a, b, 1);
}
void metrics_set(metrics *m, enum metric_id id, int a, int b, double value);
/* Sets a counter kept elsewhere (by its owner, who only ever raises it). */
void metrics_set_counter(metrics *m, enum metric_id id, int a, int b, uint64_t value);
/* A histogram observation: microseconds or a count, by the metric's kind. */
void metrics_observe(metrics *m, enum metric_id id, int a, int b, int64_t value);

/* One HTTP request answered: its route (-1: no route matched), status and
 * latency. */
void metrics_http(metrics *m, int route, int status, int64_t latency_us);

/* ---- reading, for the dashboard and the alerts ---- */

/* The sum of a counter over the cells whose first (second) index is a (b),
 * or any when -1. */
uint64_t metrics_counter_sum(metrics *m, enum metric_id id, int a, int b);
double metrics_gauge(metrics *m, enum metric_id id, int a, int b);
/* Adds a histogram's bucket counts (METRIC_BUCKETS + 1, the last +Inf) of
 * the cells whose first index satisfies pick(arg, a) into counts. */
void metrics_histogram_sum(metrics *m, enum metric_id id, int (*pick)(void *arg, int a),
                           void *arg, uint64_t counts[METRIC_BUCKETS + 1]);
/* The upper bound of a bucket, in the metric's unit (microseconds for
 * time histograms). */
int64_t metrics_bucket_bound(enum metric_id id, int bucket);
/* The value under which a share q of the observations fall, interpolated
 * within its bucket (as Prometheus' histogram_quantile does); -1 when
 * counts holds none. */
double metrics_quantile(enum metric_id id, const uint64_t counts[METRIC_BUCKETS + 1], double q);

/* The HTTP status index of a code (DIM_STATUS), and the status it stands for
 * (0: other). */
int metrics_status_index(int status);
int metrics_status_code(int index);
int metrics_dim_size(metrics *m, enum metric_dim dim);
/* A route's name (its pattern), or "unmatched". */
const char *metrics_route_name(metrics *m, int route);

/* fn(arg, m) runs at the start of every render, to set the gauges whose
 * state lives elsewhere. */
void metrics_on_render(metrics *m, void (*fn)(void *arg, metrics *m), void *arg);

/* The text exposition (format 0.0.4); the caller frees it. */
char *metrics_render(metrics *m, const char *version);

#endif
