/*
 * obs_micro.c - what observing one request costs: counting it in the
 * metrics registry, writing its log line (JSON and text), and a whole
 * /metrics scrape; with 1 and 2 threads, as the HTTP threads do it.
 *
 * Log lines go to /dev/null, so the figure is payd's own work (building
 * the line and one write(2)), not a disk's. The ceiling beside it is that
 * write(2) alone of a line as long. Prints a markdown table.
 *
 *   build/obs_micro [SECONDS_PER_ROW]
 */
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "obs/log.h"
#include "obs/metrics.h"
#include "util/util.h"

static const char *const routes[] = {"/v1/orders",   "/v1/orders/{id}", "/v1/payments",
                                     "/v1/payments", "/v1/payments/{id}", "/metrics"};
static const char *const methods[] = {"POST", "GET", "POST", "GET", "GET", "GET"};
static const char *const channels[] = {"sandbox", "alipay"};

static metrics *g_metrics;
static _Atomic bool g_stop;

static const struct log_request g_line = {
    .request_id = "req_24f16c6c0000000000a1", .method = "POST", .route = "/v1/payments",
    .path = "/v1/payments", .status = 202, .latency_us = 1398,
    .merchant_id = "mch_01m8kejmr09amp1kv26x4dsg9j", .order_id = "ord_01m8kejpjhctz02djd0kf2acec",
    .payment_id = "pay_01m8kejppzyzxde9gsr37naeeb"};

static void op_write(void)
{
    static const char line[] =
        "{\"time\":\"2026-11-29T10:45:57.088Z\",\"level\":\"info\",\"event\":\"request\","
        "\"request_id\":\"req_24f16c6c000000000002\",\"method\":\"POST\",\"route\":\"/v1/"
        "payments\",\"path\":\"/v1/payments\",\"status\":202,\"latency_ms\":1.398,\"merchant_"
        "id\":\"mch_01m8kejmr09amp1kv26x4dsg9j\",\"order_id\":\"ord_01m8kejpjhctz02djd0kf2acec\","
        "\"payment_id\":\"pay_01m8kejppzyzxde9gsr37naeeb\"}\n";
    ssize_t ignored = write(STDERR_FILENO, line, sizeof(line) - 1);
    (void)ignored;
}

static void op_count(void)
{
    metrics_http(g_metrics, 2, 202, 1398);
}

static void op_log(void)
{
    log_request(&g_line);
}

/* The same line built with jansson, as payd first did: the measurement
 * that made log.c write its lines by hand. */
static void op_log_jansson(void)
{
    const struct log_request *r = &g_line;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:f, s:s, s:s, s:s}",
                          "time", "2026-11-29T10:45:57.088Z", "level", "info", "event",
                          "request", "request_id", r->request_id, "method", r->method, "route",
                          r->route, "path", r->path, "status", r->status, "latency_ms",
                          (double)r->latency_us / 1000.0, "merchant_id", r->merchant_id,
                          "order_id", r->order_id, "payment_id", r->payment_id);
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(o);
    size_t n = strlen(s);
    s[n - 1] = '\n'; /* (the closing brace: the length is what matters) */
    ssize_t ignored = write(STDERR_FILENO, s, n);
    (void)ignored;
    free(s);
}

static void op_both(void)
{
    op_count();
    op_log();
}

static void op_scrape(void)
{
    free(metrics_render(g_metrics, "bench"));
}

struct row {
    const char *name;
    void (*op)(void);
    enum log_format format;
    int max_threads;
};

static const struct row rows[] = {
    {"ceiling: write(2) of a 330-byte line to /dev/null", op_write, LOG_FORMAT_JSON, 2},
    {"count a request (metrics_http)", op_count, LOG_FORMAT_JSON, 2},
    {"request log line, JSON + write", op_log, LOG_FORMAT_JSON, 2},
    {"request log line, text + write", op_log, LOG_FORMAT_TEXT, 2},
    {"the same JSON line built with jansson + write", op_log_jansson, LOG_FORMAT_JSON, 2},
    {"count + JSON log line (what payd adds per request)", op_both, LOG_FORMAT_JSON, 2},
    {"a whole /metrics scrape (render)", op_scrape, LOG_FORMAT_JSON, 1},
};

struct worker {
    pthread_t thread;
    void (*op)(void);
    uint64_t ops;
};

static void *run(void *arg)
{
    struct worker *w = arg;
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        for (int i = 0; i < 16; i++)
            w->op();
        w->ops += 16;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    if (seconds <= 0) {
        fprintf(stderr, "usage: obs_micro [SECONDS_PER_ROW]\n");
        return 2;
    }
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull < 0 || dup2(devnull, STDERR_FILENO) < 0) {
        perror("/dev/null");
        return 1;
    }
    g_metrics = metrics_new(routes, methods, (int)ARRAY_LEN(routes), channels, 2);
    /* a registry with something in every route, as after some traffic */
    for (int r = 0; r < (int)ARRAY_LEN(routes); r++)
        metrics_http(g_metrics, r, 200, 500);
    printf("obs_micro: %.1f s per row, %ld cpus\n\n", seconds, sysconf(_SC_NPROCESSORS_ONLN));
    printf("| %-52s | %7s | %10s | %12s |\n", "operation", "threads", "ns/op", "M ops/s all");
    printf("|------------------------------------------------------|---------|------------|"
           "--------------|\n");
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        for (int threads = 1; threads <= rows[i].max_threads; threads++) {
            log_init(rows[i].format, LOG_INFO);
            struct worker w[2] = {{.op = rows[i].op}, {.op = rows[i].op}};
            atomic_store(&g_stop, false);
            int64_t t0 = clock_mono_ns();
            for (int t = 0; t < threads; t++)
                pthread_create(&w[t].thread, NULL, run, &w[t]);
            usleep((useconds_t)(seconds * 1e6));
            atomic_store(&g_stop, true);
            uint64_t total = 0;
            for (int t = 0; t < threads; t++) {
                pthread_join(w[t].thread, NULL);
                total += w[t].ops;
            }
            double per_s = (double)total / ((double)(clock_mono_ns() - t0) / 1e9);
            printf("| %-52s | %7d | %10.1f | %12.3f |\n", rows[i].name, threads,
                   1e9 / (per_s / threads), per_s / 1e6);
            fflush(stdout);
        }
    metrics_free(g_metrics);
    return 0;
}
