/*
 * metrics.c - the registry, its cells and its exposition; see metrics.h.
 *
 * Each metric owns a block of cells, one per pair of label indexes: a
 * counter's is an atomic count, a gauge's an atomic double (its bits; NaN
 * until set), a histogram's a row of bucket counts and a sum. The blocks are
 * laid out once by metrics_new() from the METRICS table.
 */
#include "obs/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "util/util.h"

/* The status codes payd answers, as label values; anything else counts as
 * "other". */
static const int statuses[] = {200, 201, 202, 400, 401, 403, 404, 405, 409,
                               413, 422, 429, 500, 503};
#define STATUS_COUNT ((int)ARRAY_LEN(statuses))

static const int64_t time_bounds_us[METRIC_BUCKETS] = {
    100,    250,    500,    1000,    2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
static const int64_t size_bounds[METRIC_BUCKETS] = {1,   2,   4,    8,    16,   32,   64,    128,
                                                    256, 512, 1024, 2048, 4096, 8192, 16384, 32768};

static const char *const final_names[] = {"succeeded", "failed"};
/* enum chan_outcome's order */
static const char *const outcome_names[] = {"succeeded", "declined", "error", "unknown",
                                            "not_found"};
static const char *const limiter_names[] = {"global", "merchant", "inflight"};
static const char *const defer_names[] = {"pacer", "breaker"};
static const char *const lock_names[] = {"acquired", "busy", "error"};

struct metric_def {
    const char *name;
    enum metric_kind kind;
    enum metric_dim dims[2];
    const char *help;
};

#define AS_DEF(id, nm, kd, d1, d2, hp) [id] = {nm, kd, {d1, d2}, hp},
static const struct metric_def defs[METRIC_COUNT] = {METRICS(AS_DEF)};
#undef AS_DEF

struct histogram {
    _Atomic uint64_t counts[METRIC_BUCKETS + 1]; /* the last is +Inf */
    _Atomic uint64_t sum;                       /* microseconds or counts */
};

struct metrics {
    int route_count;
    const char *const *route_names;
    const char *const *route_methods;
    int channel_count;
    const char *const *channel_names;
    int dim_size[DIM_COUNT];
    int base[METRIC_COUNT]; /* the first cell in the kind's array */
    _Atomic uint64_t *counters;
    _Atomic uint64_t *gauges; /* double bits */
    struct histogram *histograms;
    _Atomic bool kept_elsewhere[METRIC_COUNT]; /* set by metrics_set_counter */
    pthread_mutex_t render_mu; /* one render (and its hook) at a time */
    void (*on_render)(void *arg, metrics *m);
    void *on_render_arg;
};

static int cells(const metrics *m, enum metric_id id)
{
    return m->dim_size[defs[id].dims[0]] * m->dim_size[defs[id].dims[1]];
}

static bool is_histogram(enum metric_id id)
{
    return defs[id].kind == METRIC_TIME_HISTOGRAM || defs[id].kind == METRIC_SIZE_HISTOGRAM;
}

metrics *metrics_new(const char *const *route_names, const char *const *route_methods,
                     int route_count, const char *const *channel_names, int channel_count)
{
    metrics *m = xcalloc(1, sizeof(*m));
    m->route_count = route_count;
    m->route_names = route_names;
    m->route_methods = route_methods;
    m->channel_count = channel_count;
    m->channel_names = channel_names;
    m->dim_size[DIM_NONE] = 1;
    m->dim_size[DIM_ROUTE] = route_count + 1;
    m->dim_size[DIM_STATUS] = STATUS_COUNT + 1;
    m->dim_size[DIM_CHANNEL] = channel_count;
    m->dim_size[DIM_FINAL] = (int)ARRAY_LEN(final_names);
    m->dim_size[DIM_OUTCOME] = (int)ARRAY_LEN(outcome_names);
    m->dim_size[DIM_LIMITER] = (int)ARRAY_LEN(limiter_names);
    m->dim_size[DIM_DEFER] = (int)ARRAY_LEN(defer_names);
    m->dim_size[DIM_LOCK] = (int)ARRAY_LEN(lock_names);
    m->dim_size[DIM_SHARED] = 2; /* the first two limiters */
    int counters = 0, gauges = 0, histograms = 0;
    for (int id = 0; id < METRIC_COUNT; id++) {
        int *next = is_histogram(id) ? &histograms
                    : defs[id].kind == METRIC_GAUGE ? &gauges
                                                    : &counters;
        m->base[id] = *next;
        *next += cells(m, id);
    }
    m->counters = xcalloc((size_t)counters + 1, sizeof(*m->counters));
    m->gauges = xcalloc((size_t)gauges + 1, sizeof(*m->gauges));
    m->histograms = xcalloc((size_t)histograms + 1, sizeof(*m->histograms));
    double nan = NAN;
    uint64_t nan_bits;
    memcpy(&nan_bits, &nan, sizeof(nan_bits));
    for (int i = 0; i < gauges; i++)
        atomic_init(&m->gauges[i], nan_bits);
    pthread_mutex_init(&m->render_mu, NULL);
    return m;
}

void metrics_free(metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->render_mu);
    free(m->counters);
    free(m->gauges);
    free(m->histograms);
    free(m);
}

/* The cell of (a, b) in the metric's block; a bad index is a programmer
 * error. */
static int cell(const metrics *m, enum metric_id id, int a, int b)
{
    int na = m->dim_size[defs[id].dims[0]], nb = m->dim_size[defs[id].dims[1]];
    PAYD_ASSERT(a >= 0 && a < na && b >= 0 && b < nb);
    return m->base[id] + a * nb + b;
}

void metrics_add(metrics *m, enum metric_id id, int a, int b, uint64_t n)
{
    if (!m)
        return;
    PAYD_ASSERT(defs[id].kind == METRIC_COUNTER);
    atomic_fetch_add_explicit(&m->counters[cell(m, id, a, b)], n, memory_order_relaxed);
}

void metrics_set_counter(metrics *m, enum metric_id id, int a, int b, uint64_t value)
{
    if (!m)
        return;
    PAYD_ASSERT(defs[id].kind == METRIC_COUNTER);
    /* Only ever raised: two threads copying the owner's count at once
     * must not store an older value over a newer one. */
    _Atomic uint64_t *c = &m->counters[cell(m, id, a, b)];
    uint64_t old = atomic_load_explicit(c, memory_order_relaxed);
    while (old < value &&
           !atomic_compare_exchange_weak_explicit(c, &old, value, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    atomic_store_explicit(&m->kept_elsewhere[id], true, memory_order_relaxed);
}

void metrics_set(metrics *m, enum metric_id id, int a, int b, double value)
{
    if (!m)
        return;
    PAYD_ASSERT(defs[id].kind == METRIC_GAUGE);
    uint64_t bits;
    memcpy(&bits, &value, sizeof(bits));
    atomic_store_explicit(&m->gauges[cell(m, id, a, b)], bits, memory_order_relaxed);
}

static const int64_t *bounds_of(enum metric_id id)
{
    return defs[id].kind == METRIC_TIME_HISTOGRAM ? time_bounds_us : size_bounds;
}

void metrics_observe(metrics *m, enum metric_id id, int a, int b, int64_t value)
{
    if (!m)
        return;
    PAYD_ASSERT(is_histogram(id));
    struct histogram *h = &m->histograms[cell(m, id, a, b)];
    const int64_t *bounds = bounds_of(id);
    int i = 0;
    while (i < METRIC_BUCKETS && value > bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, (uint64_t)(value > 0 ? value : 0), memory_order_relaxed);
}

int metrics_status_index(int status)
{
    for (int i = 0; i < STATUS_COUNT; i++)
        if (statuses[i] == status)
            return i;
    return STATUS_COUNT;
}

int metrics_status_code(int index)
{
    return index >= 0 && index < STATUS_COUNT ? statuses[index] : 0;
}

int metrics_dim_size(metrics *m, enum metric_dim dim)
{
    return m->dim_size[dim];
}

const char *metrics_route_name(metrics *m, int route)
{
    return route >= 0 && route < m->route_count ? m->route_names[route] : "unmatched";
}

void metrics_http(metrics *m, int route, int status, int64_t latency_us)
{
    if (!m)
        return;
    int row = route >= 0 && route < m->route_count ? route : m->route_count;
    metrics_inc(m, M_HTTP_REQUESTS, row, metrics_status_index(status));
    metrics_observe(m, M_HTTP_DURATION, row, 0, latency_us);
}

/* ---- reading ---- */

uint64_t metrics_counter_sum(metrics *m, enum metric_id id, int a, int b)
{
    PAYD_ASSERT(defs[id].kind == METRIC_COUNTER);
    int na = m->dim_size[defs[id].dims[0]], nb = m->dim_size[defs[id].dims[1]];
    uint64_t sum = 0;
    for (int i = a < 0 ? 0 : a; i < (a < 0 ? na : a + 1); i++)
        for (int j = b < 0 ? 0 : b; j < (b < 0 ? nb : b + 1); j++)
            sum += atomic_load_explicit(&m->counters[cell(m, id, i, j)], memory_order_relaxed);
    return sum;
}

double metrics_gauge(metrics *m, enum metric_id id, int a, int b)
{
    PAYD_ASSERT(defs[id].kind == METRIC_GAUGE);
    uint64_t bits = atomic_load_explicit(&m->gauges[cell(m, id, a, b)], memory_order_relaxed);
    double v;
    memcpy(&v, &bits, sizeof(v));
    return v;
}

void metrics_histogram_sum(metrics *m, enum metric_id id, int (*pick)(void *arg, int a),
                           void *arg, uint64_t counts[METRIC_BUCKETS + 1])
{
    PAYD_ASSERT(is_histogram(id));
    int na = m->dim_size[defs[id].dims[0]], nb = m->dim_size[defs[id].dims[1]];
    for (int a = 0; a < na; a++) {
        if (pick && !pick(arg, a))
            continue;
        for (int b = 0; b < nb; b++) {
            struct histogram *h = &m->histograms[cell(m, id, a, b)];
            for (int i = 0; i <= METRIC_BUCKETS; i++)
                counts[i] += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        }
    }
}

int64_t metrics_bucket_bound(enum metric_id id, int bucket)
{
    PAYD_ASSERT(is_histogram(id) && bucket >= 0 && bucket < METRIC_BUCKETS);
    return bounds_of(id)[bucket];
}

double metrics_quantile(enum metric_id id, const uint64_t counts[METRIC_BUCKETS + 1], double q)
{
    uint64_t total = 0;
    for (int i = 0; i <= METRIC_BUCKETS; i++)
        total += counts[i];
    if (total == 0)
        return -1;
    const int64_t *bounds = bounds_of(id);
    double rank = q * (double)total, below = 0;
    for (int i = 0; i < METRIC_BUCKETS; i++) {
        if (below + (double)counts[i] >= rank && counts[i] > 0) {
            double lo = i == 0 ? 0 : (double)bounds[i - 1];
            return lo + ((double)bounds[i] - lo) * (rank - below) / (double)counts[i];
        }
        below += (double)counts[i];
    }
    /* In the +Inf bucket: the highest finite bound is all that is known. */
    return (double)bounds[METRIC_BUCKETS - 1];
}

void metrics_on_render(metrics *m, void (*fn)(void *arg, metrics *m), void *arg)
{
    m->on_render = fn;
    m->on_render_arg = arg;
}

/* ---- exposition ---- */

/* A growing text buffer. */
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

/* Writes the labels of index i of dim (with a leading comma when sep). */
static void put_label(struct out *o, const metrics *m, enum metric_dim dim, int i, bool sep)
{
    const char *c = sep ? "," : "";
    switch (dim) {
    case DIM_NONE:
        return;
    case DIM_ROUTE:
        out_printf(o, "%sroute=\"%s\",method=\"%s\"", c,
                   i < m->route_count ? m->route_names[i] : "unmatched",
                   i < m->route_count ? m->route_methods[i] : "any");
        return;
    case DIM_STATUS:
        if (i < STATUS_COUNT)
            out_printf(o, "%sstatus=\"%d\"", c, statuses[i]);
        else
            out_printf(o, "%sstatus=\"other\"", c);
        return;
    case DIM_CHANNEL:
        out_printf(o, "%schannel=\"%s\"", c, m->channel_names[i]);
        return;
    case DIM_FINAL:
        out_printf(o, "%sstatus=\"%s\"", c, final_names[i]);
        return;
    case DIM_OUTCOME:
        out_printf(o, "%soutcome=\"%s\"", c, outcome_names[i]);
        return;
    case DIM_LIMITER:
    case DIM_SHARED:
        out_printf(o, "%slimiter=\"%s\"", c, limiter_names[i]);
        return;
    case DIM_DEFER:
        out_printf(o, "%sreason=\"%s\"", c, defer_names[i]);
        return;
    case DIM_LOCK:
        out_printf(o, "%sresult=\"%s\"", c, lock_names[i]);
        return;
    default:
        PAYD_ASSERT(!"unknown dimension");
    }
}

/* name{labels of (a, b)[,extra]} with the braces left out when empty. */
static void put_series(struct out *o, const metrics *m, const char *name, const char *suffix,
                       enum metric_id id, int a, int b, const char *extra)
{
    const struct metric_def *d = &defs[id];
    out_printf(o, "%s%s", name, suffix);
    bool any = d->dims[0] != DIM_NONE || d->dims[1] != DIM_NONE || extra;
    if (!any)
        return;
    out_printf(o, "{");
    put_label(o, m, d->dims[0], a, false);
    put_label(o, m, d->dims[1], b, d->dims[0] != DIM_NONE);
    if (extra)
        out_printf(o, "%s%s", d->dims[0] != DIM_NONE ? "," : "", extra);
    out_printf(o, "}");
}

static void render_histogram(struct out *o, const metrics *m, enum metric_id id, int a, int b)
{
    struct histogram *h = &m->histograms[cell(m, id, a, b)];
    bool seconds = defs[id].kind == METRIC_TIME_HISTOGRAM;
    const int64_t *bounds = bounds_of(id);
    uint64_t cumulative = 0;
    char le[48];
    for (int i = 0; i <= METRIC_BUCKETS; i++) {
        cumulative += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        if (i == METRIC_BUCKETS)
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        else if (seconds)
            snprintf(le, sizeof(le), "le=\"%g\"", (double)bounds[i] / 1e6);
        else
            snprintf(le, sizeof(le), "le=\"%lld\"", (long long)bounds[i]);
        put_series(o, m, defs[id].name, "_bucket", id, a, b, le);
        out_printf(o, " %llu\n", (unsigned long long)cumulative);
    }
    uint64_t sum = atomic_load_explicit(&h->sum, memory_order_relaxed);
    put_series(o, m, defs[id].name, "_sum", id, a, b, NULL);
    if (seconds)
        out_printf(o, " %.6f\n", (double)sum / 1e6);
    else
        out_printf(o, " %llu\n", (unsigned long long)sum);
    put_series(o, m, defs[id].name, "_count", id, a, b, NULL);
    out_printf(o, " %llu\n", (unsigned long long)cumulative);
}

static void render_metric(struct out *o, metrics *m, enum metric_id id)
{
    const struct metric_def *d = &defs[id];
    int na = m->dim_size[d->dims[0]], nb = m->dim_size[d->dims[1]];
    /* A counter by status has a cell for every code on every route: only
     * those that happened are shown. The Redis-sharing counters exist only
     * in cluster mode, where the guards export them (zeros included). */
    bool sparse = d->dims[1] == DIM_STATUS;
    if (d->dims[0] == DIM_SHARED && d->kind == METRIC_COUNTER &&
        !atomic_load_explicit(&m->kept_elsewhere[id], memory_order_relaxed))
        return;
    static const char *const types[] = {"counter", "gauge", "histogram", "histogram"};
    bool header = false;
    for (int a = 0; a < na; a++)
        for (int b = 0; b < nb; b++) {
            double g = 0;
            if (d->kind == METRIC_GAUGE && isnan(g = metrics_gauge(m, id, a, b)))
                continue;
            uint64_t c = 0;
            if (d->kind == METRIC_COUNTER &&
                (c = atomic_load_explicit(&m->counters[cell(m, id, a, b)],
                                          memory_order_relaxed)) == 0 &&
                sparse)
                continue;
            if (!header) {
                out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name,
                           types[d->kind]);
                header = true;
            }
            if (is_histogram(id)) {
                render_histogram(o, m, id, a, b);
                continue;
            }
            put_series(o, m, d->name, "", id, a, b, NULL);
            if (d->kind == METRIC_GAUGE)
                out_printf(o, " %.17g\n", g);
            else
                out_printf(o, " %llu\n", (unsigned long long)c);
        }
}

char *metrics_render(metrics *m, const char *version)
{
    struct out o = {.buf = xmalloc(16384), .cap = 16384};
    o.buf[0] = '\0';
    pthread_mutex_lock(&m->render_mu);
    if (m->on_render)
        m->on_render(m->on_render_arg, m);
    out_printf(&o, "# HELP payd_build_info Build information.\n"
                   "# TYPE payd_build_info gauge\npayd_build_info{version=\"%s\"} 1\n",
               version);
    for (int id = 0; id < METRIC_COUNT; id++)
        render_metric(&o, m, id);
    pthread_mutex_unlock(&m->render_mu);
    return o.buf;
}
