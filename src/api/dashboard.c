/*
 * dashboard.c - GET /dashboard (the page and its files, compiled in) and
 * GET /dashboard/data, the JSON the page polls every second: the series of
 * one-second samples since the page's last point, and the state of the
 * moment (breakers, limiters, queue, alerts). Like /metrics, it shows
 * counts and states, never a merchant's data.
 */
#include <math.h>
#include <string.h>

#include "api/internal.h"
#include "api/web_assets.h"
#include "guard/breaker.h"
#include "util/util.h"

#define POINTS_MAX 900 /* a quarter of an hour of samples */

void api_dashboard_asset(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)c;
    (void)unused;
    const char *path = http_path(r);
    for (int i = 0; i < web_asset_count; i++) {
        const struct web_asset *w = &web_assets[i];
        if (strcmp(w->path, path) != 0)
            continue;
        char *body = xmalloc(w->len + 1);
        memcpy(body, w->data, w->len);
        http_add_header(r, "Cache-Control", "no-cache");
        http_respond_bytes(r, 200, w->content_type, body, w->len);
        return;
    }
    api_not_found(r, NULL);
}

/* A number, or null for NaN and the "none" (-1) of the ratios. */
static json_t *number_or_null(double v)
{
    return isnan(v) || v < 0 ? json_null() : json_real(v);
}

static json_t *series_json(struct sample *x, int n)
{
    const char *names[] = {"t_ms",         "qps",           "p50_ms",        "p99_ms",
                           "error_ratio",  "succeeded_per_s", "failed_per_s", "accepted_per_s",
                           "rejected_per_s", "queue_depth"};
    enum { N_NAMES = (int)ARRAY_LEN(names) };
    json_t *cols[N_NAMES];
    for (int k = 0; k < N_NAMES; k++)
        cols[k] = json_array();
    for (int i = 1; i < n; i++) {
        const struct sample *a = &x[i - 1], *b = &x[i];
        double dt = (double)(b->t_ms - a->t_ms) / 1000.0;
        if (dt <= 0)
            continue;
        double p50 = sample_latency(a, b, 0.5), p99 = sample_latency(a, b, 0.99);
        json_t *v[N_NAMES] = {
            json_integer(b->t_ms),
            json_real((double)(b->api_requests - a->api_requests) / dt),
            p50 < 0 ? json_null() : json_real(p50 * 1000),
            p99 < 0 ? json_null() : json_real(p99 * 1000),
            number_or_null(sample_error_ratio(a, b)),
            json_real((double)(b->succeeded - a->succeeded) / dt),
            json_real((double)(b->failed - a->failed) / dt),
            json_real((double)(b->accepted - a->accepted) / dt),
            json_real((double)(b->rejected - a->rejected) / dt),
            number_or_null(b->queue_depth),
        };
        for (int k = 0; k < N_NAMES; k++)
            json_array_append_new(cols[k], v[k]);
    }
    json_t *o = json_object();
    for (int k = 0; k < N_NAMES; k++)
        json_object_set_new(o, names[k], cols[k]);
    return o;
}

void api_dashboard_data(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    struct app *app = c->app;
    int64_t since_ms = 0;
    const char *since = http_query(r, "since_ms");
    if (since) {
        /* 1 to 18 digits: no sign, no spaces, nothing that overflows */
        size_t n = strspn(since, "0123456789");
        if (n == 0 || n > 18 || since[n] != '\0') {
            api_invalid(r, "parameter_invalid", "since_ms must be unix milliseconds",
                        "since_ms");
            return;
        }
        since_ms = strtoll(since, NULL, 10);
    }
    struct sample *x = xmalloc((POINTS_MAX + 1) * sizeof(*x));
    int n = series_since(app->series, since_ms, x, POINTS_MAX + 1);
    json_t *o = json_pack("{s:I, s:i, s:o}", "now_ms", (json_int_t)clock_wall_ms(),
                          "interval_ms", 1000, "series", series_json(x, n));
    metrics *m = app->metrics;
    json_t *payments = json_pack(
        "{s:I, s:I, s:I}", "accepted",
        (json_int_t)metrics_counter_sum(m, M_PAYMENTS_ACCEPTED, -1, -1), "succeeded",
        (json_int_t)metrics_counter_sum(m, M_PAYMENTS_FINAL, -1, FINAL_SUCCEEDED), "failed",
        (json_int_t)metrics_counter_sum(m, M_PAYMENTS_FINAL, -1, FINAL_FAILED));
    double depth = metrics_gauge(m, M_QUEUE_DEPTH, 0, 0);
    json_object_set_new(payments, "processing", number_or_null(depth));
    json_object_set_new(o, "payments", payments);
    free(x);

    json_t *breakers = json_array();
    int64_t now_ns = clock_mono_ns();
    for (int i = 0; i < channel_set_count(app->channels); i++) {
        enum breaker_state st = breaker_state_at(guards_breaker(app->guards, i), now_ns);
        json_array_append_new(breakers, json_pack("{s:s, s:s}", "channel",
                                                  channel_set_at(app->channels, i)->name,
                                                  "state", breaker_state_name(st)));
    }
    json_object_set_new(o, "breakers", breakers);

    guards_export(app->guards, m, now_ns);
    static const char *const limiters[] = {"global", "merchant", "inflight"};
    json_t *lims = json_array();
    for (int i = 0; i < (int)ARRAY_LEN(limiters); i++)
        json_array_append_new(
            lims, json_pack("{s:s, s:I, s:I}", "limiter", limiters[i], "admitted",
                            (json_int_t)metrics_counter_sum(m, M_LIMITER_ADMITTED, i, 0),
                            "rejected",
                            (json_int_t)metrics_counter_sum(m, M_LIMITER_REJECTED, i, 0)));
    json_object_set_new(o, "limiters", lims);
    json_object_set_new(o, "inflight",
                        json_pack("{s:o, s:o}", "current",
                                  number_or_null(metrics_gauge(m, M_INFLIGHT, 0, 0)), "limit",
                                  number_or_null(metrics_gauge(m, M_INFLIGHT_LIMIT, 0, 0))));
    json_object_set_new(
        o, "queue",
        json_pack("{s:o, s:o, s:o}", "depth", number_or_null(depth), "oldest_age_s",
                  number_or_null(metrics_gauge(m, M_QUEUE_OLDEST_AGE, 0, 0)), "dead_letters",
                  number_or_null(metrics_gauge(m, M_DEAD_LETTERS, 0, 0))));
    json_object_set_new(o, "alerts", alerts_active_json(app->alerts));
    http_add_header(r, "Cache-Control", "no-store");
    http_respond_json(r, 200, o);
}
