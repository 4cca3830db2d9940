/*
 * test_metrics.c - obs/metrics: counters, gauges and histograms land in the
 * cell of their labels and render as Prometheus text (HELP/TYPE once, label
 * pairs, cumulative buckets with +Inf, _sum in seconds); counters by status
 * show only the codes that happened; a gauge never set is not shown; the
 * render hook runs before rendering; the quantile interpolates within a
 * bucket as histogram_quantile does; series windows and differences.
 */
#include "../testutil.h"

#include <math.h>

#include "obs/metrics.h"
#include "obs/series.h"

static const char *const routes[] = {"/v1/orders", "/metrics"};
static const char *const methods[] = {"POST", "GET"};
static const char *const channels[] = {"sandbox", "alipay"};

static metrics *registry(void)
{
    return metrics_new(routes, methods, 2, channels, 2);
}

static void assert_has(const char *text, const char *line)
{
    if (!strstr(text, line))
        fail_msg("missing: %s\n--- in:\n%s", line, text);
}

static void test_counters_and_labels(void **state)
{
    (void)state;
    metrics *m = registry();
    metrics_http(m, 0, 201, 300);
    metrics_http(m, 0, 201, 700);
    metrics_http(m, 0, 503, 40);
    metrics_http(m, -1, 404, 10);
    metrics_inc(m, M_PAYMENTS_FINAL, 1, FINAL_FAILED);
    metrics_add(m, M_PAYMENTS_FINAL, 0, FINAL_SUCCEEDED, 5);
    char *t = metrics_render(m, "9.9");
    assert_has(t, "payd_build_info{version=\"9.9\"} 1\n");
    assert_has(t, "# TYPE payd_http_requests_total counter\n");
    assert_has(t, "payd_http_requests_total{route=\"/v1/orders\",method=\"POST\",status=\"201\"} "
                  "2\n");
    assert_has(t, "payd_http_requests_total{route=\"/v1/orders\",method=\"POST\",status=\"503\"} "
                  "1\n");
    assert_has(t, "payd_http_requests_total{route=\"unmatched\",method=\"any\",status=\"404\"} "
                  "1\n");
    /* codes that did not happen are not shown */
    assert_null(strstr(t, "status=\"200\"}"));
    assert_has(t, "payd_payments_total{channel=\"alipay\",status=\"failed\"} 1\n");
    assert_has(t, "payd_payments_total{channel=\"sandbox\",status=\"succeeded\"} 5\n");
    assert_has(t, "payd_payments_total{channel=\"sandbox\",status=\"failed\"} 0\n");
    /* HELP and TYPE once per metric */
    const char *first = strstr(t, "# TYPE payd_http_requests_total");
    assert_null(strstr(first + 1, "# TYPE payd_http_requests_total"));
    free(t);
    assert_int_equal(metrics_counter_sum(m, M_HTTP_REQUESTS, 0, -1), 3);
    assert_int_equal(metrics_counter_sum(m, M_HTTP_REQUESTS, -1, -1), 4);
    assert_int_equal(metrics_counter_sum(m, M_PAYMENTS_FINAL, -1, FINAL_SUCCEEDED), 5);
    metrics_free(m);
}

static void test_histogram(void **state)
{
    (void)state;
    metrics *m = registry();
    metrics_observe(m, M_CHANNEL_CALL_DURATION, 1, 0, 80);       /* <= 0.0001 s */
    metrics_observe(m, M_CHANNEL_CALL_DURATION, 1, 0, 100);      /* the bound itself */
    metrics_observe(m, M_CHANNEL_CALL_DURATION, 1, 0, 3000);     /* <= 0.005 */
    metrics_observe(m, M_CHANNEL_CALL_DURATION, 1, 0, 60000000); /* +Inf */
    metrics_observe(m, M_STORE_BATCH_SIZE, 0, 0, 3);
    char *t = metrics_render(m, "x");
    assert_has(t, "# TYPE payd_channel_call_duration_seconds histogram\n");
    assert_has(t, "payd_channel_call_duration_seconds_bucket{channel=\"alipay\",le=\"0.0001\"} 2\n");
    assert_has(t, "payd_channel_call_duration_seconds_bucket{channel=\"alipay\",le=\"0.0025\"} 2\n");
    assert_has(t, "payd_channel_call_duration_seconds_bucket{channel=\"alipay\",le=\"0.005\"} 3\n");
    assert_has(t, "payd_channel_call_duration_seconds_bucket{channel=\"alipay\",le=\"10\"} 3\n");
    assert_has(t, "payd_channel_call_duration_seconds_bucket{channel=\"alipay\",le=\"+Inf\"} 4\n");
    assert_has(t, "payd_channel_call_duration_seconds_sum{channel=\"alipay\"} 60.003180\n");
    assert_has(t, "payd_channel_call_duration_seconds_count{channel=\"alipay\"} 4\n");
    assert_has(t, "payd_channel_call_duration_seconds_count{channel=\"sandbox\"} 0\n");
    /* a size histogram: buckets are counts, no unit */
    assert_has(t, "payd_store_commit_batch_size_bucket{le=\"2\"} 0\n");
    assert_has(t, "payd_store_commit_batch_size_bucket{le=\"4\"} 1\n");
    assert_has(t, "payd_store_commit_batch_size_sum 3\n");
    free(t);
    metrics_free(m);
}

static int hook_calls;

static void hook(void *arg, metrics *m)
{
    (void)arg;
    hook_calls++;
    metrics_set(m, M_QUEUE_DEPTH, 0, 0, 7);
}

static void test_gauges_and_hook(void **state)
{
    (void)state;
    metrics *m = registry();
    char *t = metrics_render(m, "x");
    assert_null(strstr(t, "payd_queue_depth")); /* never set: not shown */
    assert_null(strstr(t, "payd_limiter_shared"));
    free(t);
    assert_true(isnan(metrics_gauge(m, M_QUEUE_DEPTH, 0, 0)));
    hook_calls = 0;
    metrics_on_render(m, hook, NULL);
    metrics_set(m, M_BREAKER_STATE, 1, 0, 1);
    metrics_set(m, M_QUEUE_OLDEST_AGE, 0, 0, 2.5);
    t = metrics_render(m, "x");
    assert_int_equal(hook_calls, 1);
    assert_has(t, "# TYPE payd_queue_depth gauge\npayd_queue_depth 7\n");
    assert_has(t, "payd_breaker_state{channel=\"alipay\"} 1\n");
    assert_null(strstr(t, "payd_breaker_state{channel=\"sandbox\"}"));
    assert_has(t, "payd_queue_oldest_age_seconds 2.5\n");
    free(t);
    metrics_free(m);
    /* a NULL registry counts nothing, and does not crash */
    metrics_inc(NULL, M_STORE_COMMITS, 0, 0);
    metrics_observe(NULL, M_LOCK_WAIT, 0, 0, 5);
}

static void test_quantile(void **state)
{
    (void)state;
    uint64_t counts[METRIC_BUCKETS + 1] = {0};
    assert_true(metrics_quantile(M_HTTP_DURATION, counts, 0.5) < 0);
    /* 100 observations in (1000, 2500] us: the median is half-way */
    counts[4] = 100;
    assert_true(fabs(metrics_quantile(M_HTTP_DURATION, counts, 0.5) - 1750) < 1e-6);
    /* 99 fast (<= 100 us), 1 slow in (250, 500]: p99 in the first bucket,
     * p100 in the slow one */
    memset(counts, 0, sizeof(counts));
    counts[0] = 99;
    counts[2] = 1;
    assert_true(metrics_quantile(M_HTTP_DURATION, counts, 0.99) <= 100);
    assert_true(metrics_quantile(M_HTTP_DURATION, counts, 1.0) > 250);
    /* only +Inf: the highest finite bound */
    memset(counts, 0, sizeof(counts));
    counts[METRIC_BUCKETS] = 3;
    assert_int_equal((int64_t)metrics_quantile(M_HTTP_DURATION, counts, 0.5), 10000000);
}

static void test_series(void **state)
{
    (void)state;
    metrics *m = registry();
    series *s = series_new(5);
    struct sample a, b, x[8];
    assert_false(series_window(s, 1000, &a, &b));
    for (int i = 0; i < 7; i++) {
        /* second i: 10 requests on /v1/orders, i of them 503; one /metrics */
        for (int k = 0; k < 10; k++)
            metrics_http(m, 0, k < i ? 503 : 201, 1500);
        metrics_http(m, 1, 200, 100);
        struct sample one;
        series_take(m, 2, 1000 * (i + 1), &one);
        series_append(s, &one);
    }
    /* the ring keeps 5: seconds 3..7 */
    assert_true(series_window(s, 2000, &a, &b));
    assert_int_equal(a.t_ms, 7000);
    assert_int_equal(b.t_ms, 5000);
    assert_int_equal(a.api_requests - b.api_requests, 20); /* /metrics is not /v1 */
    assert_true(fabs(sample_error_ratio(&b, &a) - (5 + 6) / 20.0) < 1e-9);
    assert_true(sample_latency(&b, &a, 0.5) > 0.001 && sample_latency(&b, &a, 0.5) <= 0.0025);
    /* a window longer than the ring: the oldest there is */
    assert_true(series_window(s, 60000, &a, &b));
    assert_int_equal(b.t_ms, 3000);
    /* since: the newer samples and the base before them */
    assert_int_equal(series_since(s, 5000, x, 8), 3);
    assert_int_equal(x[0].t_ms, 5000);
    assert_int_equal(x[2].t_ms, 7000);
    assert_int_equal(series_since(s, 7000, x, 8), 1);
    assert_int_equal(series_since(s, 0, x, 8), 5);
    assert_int_equal(series_since(s, 0, x, 2), 2);
    assert_int_equal(x[1].t_ms, 7000);
    /* no requests between two samples: no ratio, no latency */
    assert_true(sample_error_ratio(&a, &a) < 0);
    assert_true(sample_latency(&a, &a, 0.99) < 0);
    series_free(s);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_and_labels),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_gauges_and_hook),
        cmocka_unit_test(test_quantile),
        cmocka_unit_test(test_series),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
