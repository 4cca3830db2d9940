/*
 * series.c - the ring of samples; see series.h.
 */
#include "obs/series.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#include "util/util.h"

struct series {
    pthread_mutex_t mu;
    struct sample *ring;
    int capacity, count, next; /* next: where the next sample goes */
};

series *series_new(int capacity)
{
    PAYD_ASSERT(capacity >= 2);
    series *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->ring = xcalloc((size_t)capacity, sizeof(*s->ring));
    s->capacity = capacity;
    return s;
}

void series_free(series *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->mu);
    free(s->ring);
    free(s);
}

static int is_api_route(void *arg, int route)
{
    return strncmp(metrics_route_name(arg, route), "/v1/", 4) == 0;
}

void series_take(metrics *m, int channel_count, int64_t t_ms, struct sample *out)
{
    memset(out, 0, sizeof(*out));
    out->t_ms = t_ms;
    int routes = metrics_dim_size(m, DIM_ROUTE), statuses = metrics_dim_size(m, DIM_STATUS);
    for (int r = 0; r < routes; r++) {
        if (!is_api_route(m, r))
            continue;
        for (int st = 0; st < statuses; st++) {
            uint64_t n = metrics_counter_sum(m, M_HTTP_REQUESTS, r, st);
            out->api_requests += n;
            /* "other" (code 0) is a code payd does not answer: not 5xx */
            if (metrics_status_code(st) >= 500)
                out->api_errors += n;
        }
    }
    metrics_histogram_sum(m, M_HTTP_DURATION, is_api_route, m, out->api_latency);
    out->accepted = metrics_counter_sum(m, M_PAYMENTS_ACCEPTED, -1, -1);
    out->succeeded = metrics_counter_sum(m, M_PAYMENTS_FINAL, -1, FINAL_SUCCEEDED);
    out->failed = metrics_counter_sum(m, M_PAYMENTS_FINAL, -1, FINAL_FAILED);
    out->rejected = metrics_counter_sum(m, M_LIMITER_REJECTED, -1, -1);
    out->queue_depth = metrics_gauge(m, M_QUEUE_DEPTH, 0, 0);
    out->queue_oldest_age_s = metrics_gauge(m, M_QUEUE_OLDEST_AGE, 0, 0);
    out->dead_letters = metrics_gauge(m, M_DEAD_LETTERS, 0, 0);
    out->ledger_imbalance = metrics_gauge(m, M_LEDGER_IMBALANCE, 0, 0);
    out->inflight = metrics_gauge(m, M_INFLIGHT, 0, 0);
    out->inflight_limit = metrics_gauge(m, M_INFLIGHT_LIMIT, 0, 0);
    out->channel_count = channel_count < CONF_CHANNELS_MAX ? channel_count : CONF_CHANNELS_MAX;
    for (int c = 0; c < out->channel_count; c++) {
        double st = metrics_gauge(m, M_BREAKER_STATE, c, 0);
        out->breaker[c] = isnan(st) ? 0 : (int)st;
    }
}

void series_append(series *s, const struct sample *x)
{
    pthread_mutex_lock(&s->mu);
    s->ring[s->next] = *x;
    s->next = (s->next + 1) % s->capacity;
    if (s->count < s->capacity)
        s->count++;
    pthread_mutex_unlock(&s->mu);
}

/* The i-th sample from the oldest; under mu. */
static const struct sample *at(const series *s, int i)
{
    return &s->ring[(s->next - s->count + i + s->capacity) % s->capacity];
}

bool series_window(series *s, int64_t window_ms, struct sample *newest, struct sample *older)
{
    pthread_mutex_lock(&s->mu);
    bool found = s->count > 0;
    if (found) {
        const struct sample *last = at(s, s->count - 1);
        *newest = *last;
        /* The newest sample at or before last - window: a binary search,
         * the ring being in time order. */
        int lo = 0, hi = s->count - 1, pick = 0;
        while (lo <= hi) {
            int mid = (lo + hi) / 2;
            if (at(s, mid)->t_ms <= last->t_ms - window_ms) {
                pick = mid;
                lo = mid + 1;
            } else {
                hi = mid - 1;
            }
        }
        *older = *at(s, pick);
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

int series_since(series *s, int64_t since_ms, struct sample *out, int max)
{
    pthread_mutex_lock(&s->mu);
    int first = s->count;
    while (first > 0 && at(s, first - 1)->t_ms > since_ms)
        first--;
    if (first > 0)
        first--; /* the base */
    if (s->count - first > max)
        first = s->count - max;
    int n = 0;
    for (int i = first; i < s->count; i++)
        out[n++] = *at(s, i);
    pthread_mutex_unlock(&s->mu);
    return n;
}

double sample_error_ratio(const struct sample *older, const struct sample *newer)
{
    uint64_t requests = newer->api_requests - older->api_requests;
    if (requests == 0)
        return -1;
    return (double)(newer->api_errors - older->api_errors) / (double)requests;
}

double sample_latency(const struct sample *older, const struct sample *newer, double q)
{
    uint64_t counts[METRIC_BUCKETS + 1];
    for (int i = 0; i <= METRIC_BUCKETS; i++)
        counts[i] = newer->api_latency[i] - older->api_latency[i];
    double us = metrics_quantile(M_HTTP_DURATION, counts, q);
    return us < 0 ? -1 : us / 1e6;
}
