/*
 * metrics.c - counters, histograms and their exposition; see metrics.h.
 */
#include "obs/metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "util/util.h"

/* The status codes payd answers, as label values; anything else counts as
 * "other". */
static const int statuses[] = {200, 201, 202, 400, 401, 404, 405, 409, 413, 422, 429, 500, 503};
#define STATUS_COUNT ((int)ARRAY_LEN(statuses))
#define STATUS_SLOTS (STATUS_COUNT + 1)

/* Latency buckets in microseconds: payment latencies from well under a
 * millisecond to ten seconds. */
static const int64_t buckets_us[] = {100,    250,    500,     1000,    2500,    5000,   10000,
                                     25000,  50000,  100000,  250000,  500000,  1000000,
                                     2500000, 5000000, 10000000};
#define BUCKET_COUNT ((int)ARRAY_LEN(buckets_us))

struct histogram {
    _Atomic uint64_t counts[BUCKET_COUNT + 1]; /* the last is +Inf */
    _Atomic uint64_t sum_us;
};

struct metrics {
    int route_count;
    const char *const *route_names;
    const char *const *route_methods;
    int channel_count;
    const char *const *channel_names;
    _Atomic uint64_t *http_requests; /* [(route_count + 1) * STATUS_SLOTS]; last row: no route */
    struct histogram *http_latency;  /* [route_count + 1] */
    _Atomic uint64_t *payments;      /* [channel_count * PAYMENT_STATUS_COUNT] */
    _Atomic uint64_t commits, commit_ops;
    struct histogram commit_latency;
};

metrics *metrics_new(const char *const *route_names, const char *const *route_methods,
                     int route_count, const char *const *channel_names, int channel_count)
{
    metrics *m = xcalloc(1, sizeof(*m));
    m->route_count = route_count;
    m->route_names = route_names;
    m->route_methods = route_methods;
    m->channel_count = channel_count;
    m->channel_names = channel_names;
    m->http_requests = xcalloc((size_t)(route_count + 1) * STATUS_SLOTS, sizeof(uint64_t));
    m->http_latency = xcalloc((size_t)route_count + 1, sizeof(struct histogram));
    m->payments = xcalloc((size_t)channel_count * PAYMENT_STATUS_COUNT, sizeof(uint64_t));
    return m;
}

void metrics_free(metrics *m)
{
    if (!m)
        return;
    free(m->http_requests);
    free(m->http_latency);
    free(m->payments);
    free(m);
}

static void observe(struct histogram *h, int64_t us)
{
    int i = 0;
    while (i < BUCKET_COUNT && us > buckets_us[i])
        i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)(us > 0 ? us : 0), memory_order_relaxed);
}

void metrics_http(metrics *m, int route, int status, int64_t latency_us)
{
    int row = route >= 0 && route < m->route_count ? route : m->route_count;
    int col = STATUS_COUNT;
    for (int i = 0; i < STATUS_COUNT; i++)
        if (statuses[i] == status)
            col = i;
    atomic_fetch_add_explicit(&m->http_requests[row * STATUS_SLOTS + col], 1,
                              memory_order_relaxed);
    observe(&m->http_latency[row], latency_us);
}

void metrics_payment_final(metrics *m, int channel, enum payment_status status)
{
    PAYD_ASSERT(channel >= 0 && channel < m->channel_count);
    atomic_fetch_add_explicit(&m->payments[channel * PAYMENT_STATUS_COUNT + status], 1,
                              memory_order_relaxed);
}

void metrics_store_commit(metrics *m, int ops, int64_t latency_us)
{
    atomic_fetch_add_explicit(&m->commits, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->commit_ops, (uint64_t)ops, memory_order_relaxed);
    observe(&m->commit_latency, latency_us);
}

/* A growing text buffer for the exposition. */
struct out {
    char *buf;
    size_t len, cap;
};

static void out_printf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_printf(struct out *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        PAYD_ASSERT(n >= 0);
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        o->cap = o->cap * 2 + (size_t)n;
        o->buf = xrealloc(o->buf, o->cap);
    }
}

static void render_histogram(struct out *o, const char *name, const char *labels,
                             struct histogram *h)
{
    uint64_t cumulative = 0;
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i <= BUCKET_COUNT; i++) {
        cumulative += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        if (i < BUCKET_COUNT)
            out_printf(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
                       (double)buckets_us[i] / 1e6, (unsigned long long)cumulative);
        else
            out_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                       (unsigned long long)cumulative);
    }
    out_printf(o, "%s_sum{%s} %.6f\n", name, labels,
               (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
    out_printf(o, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cumulative);
}

char *metrics_render(metrics *m, const char *version)
{
    struct out o = {.buf = xmalloc(8192), .cap = 8192};
    o.buf[0] = '\0';

    out_printf(&o, "# HELP payd_build_info Build information.\n"
                   "# TYPE payd_build_info gauge\npayd_build_info{version=\"%s\"} 1\n",
               version);

    out_printf(&o, "# HELP payd_http_requests_total HTTP requests answered, by route, method "
                   "and status.\n# TYPE payd_http_requests_total counter\n");
    for (int r = 0; r <= m->route_count; r++) {
        const char *route = r < m->route_count ? m->route_names[r] : "unmatched";
        const char *method = r < m->route_count ? m->route_methods[r] : "any";
        for (int c = 0; c < STATUS_SLOTS; c++) {
            uint64_t v = atomic_load_explicit(&m->http_requests[r * STATUS_SLOTS + c],
                                              memory_order_relaxed);
            if (v == 0)
                continue;
            char status[8];
            if (c < STATUS_COUNT)
                snprintf(status, sizeof(status), "%d", statuses[c]);
            else
                snprintf(status, sizeof(status), "other");
            out_printf(&o,
                       "payd_http_requests_total{route=\"%s\",method=\"%s\",status=\"%s\"} "
                       "%llu\n",
                       route, method, status, (unsigned long long)v);
        }
    }

    out_printf(&o, "# HELP payd_http_request_duration_seconds Time from a request's arrival "
                   "to its answer, by route.\n"
                   "# TYPE payd_http_request_duration_seconds histogram\n");
    for (int r = 0; r <= m->route_count; r++) {
        char labels[160];
        snprintf(labels, sizeof(labels), "route=\"%s\",method=\"%s\"",
                 r < m->route_count ? m->route_names[r] : "unmatched",
                 r < m->route_count ? m->route_methods[r] : "any");
        render_histogram(&o, "payd_http_request_duration_seconds", labels, &m->http_latency[r]);
    }

    out_printf(&o, "# HELP payd_payments_total Payments that reached a final status, by "
                   "channel and status.\n# TYPE payd_payments_total counter\n");
    for (int ch = 0; ch < m->channel_count; ch++)
        for (int s = PAYMENT_SUCCEEDED; s <= PAYMENT_FAILED; s++)
            out_printf(&o, "payd_payments_total{channel=\"%s\",status=\"%s\"} %llu\n",
                       m->channel_names[ch], payment_status_name((enum payment_status)s),
                       (unsigned long long)atomic_load_explicit(
                           &m->payments[ch * PAYMENT_STATUS_COUNT + s], memory_order_relaxed));

    out_printf(&o, "# HELP payd_store_commits_total Store transactions committed (each one "
                   "batch of operations).\n# TYPE payd_store_commits_total counter\n"
                   "payd_store_commits_total %llu\n",
               (unsigned long long)atomic_load(&m->commits));
    out_printf(&o, "# HELP payd_store_commit_ops_total Operations committed.\n"
                   "# TYPE payd_store_commit_ops_total counter\npayd_store_commit_ops_total "
                   "%llu\n",
               (unsigned long long)atomic_load(&m->commit_ops));
    out_printf(&o, "# HELP payd_store_commit_duration_seconds Time from an operation's "
                   "submission to its batch's commit, per batch (oldest operation).\n"
                   "# TYPE payd_store_commit_duration_seconds histogram\n");
    render_histogram(&o, "payd_store_commit_duration_seconds", "", &m->commit_latency);
    return o.buf;
}
