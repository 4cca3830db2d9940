/*
 * paybench.c - the load generator for payd, and for a ceiling, for any
 * static HTTP server.
 *
 * One thread drives an epoll loop over paybench's own HTTP/1.1 client
 * (httpc.c, which says why it is not libcurl): each session slot owns one
 * keep-alive connection, reused from request to request, with one request in
 * flight on it. The client is kept cheap because it shares the machine's
 * cores with the server it measures, and it reports its own CPU use, so a
 * reader can tell when the client and not the server was the limit.
 *
 * Scenarios (--scenario):
 *   create-and-pay  a session POSTs /v1/orders (a merchant_order_no unique to
 *                   this run), then POSTs /v1/payments for that order
 *                   (channel "sandbox", method "ok", a unique
 *                   Idempotency-Key). After the load it waits, bounded, until
 *                   every accepted payment is final, watching
 *                   payd_payments_total{channel="sandbox",...} in GET
 *                   /metrics, checks a random sample of payments one by one
 *                   with GET /v1/payments/{id}, and reports paid orders per
 *                   second end to end: payments that reached `succeeded`
 *                   divided by the time from the first request to the moment
 *                   the last one was seen succeeded.
 *   static          GET the URL again and again: requests per second and
 *                   latency (the ceiling a plain web server reaches here).
 *
 * Load models:
 *   --concurrency N closed loop: N sessions in flight; a finished session is
 *                   replaced at once. Use it to find the maximum.
 *   --rate R        open loop: session k is due at start + k / R whatever the
 *                   server does. The first request's latency counts from the
 *                   due time, so a stall (of the server or of this client)
 *                   shows in the latency instead of silently lowering the
 *                   offered load. At most --connections sessions are in
 *                   flight; a due session waits for a free slot, and the
 *                   report says how far behind schedule the client fell.
 *
 * A run goes through phases: baseline (read the counters) -> load (the
 * duration) -> drain (sessions in flight finish, bounded) -> settle (wait
 * for payments to be final, bounded) -> verify (the sample) -> report.
 *
 * Latency histograms hold successful answers only (200/201 for orders, 202
 * for payments, 200 for GETs): fast error answers must not make the
 * percentiles look better. Every answer, whatever its status, is counted per
 * request kind.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <limits.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "hist.h"
#include "httpc.h"
#include "jsonscan.h"
#include "promtext.h"

/* Bounds. Everything the client holds is bounded by one of these. */
#define PB_SLOTS_MAX 4096                       /* sessions in flight */
#define PB_URL_CHARS_MAX 1024
#define PB_PATH_CHARS_MAX (HTTPC_PATH_CHARS_MAX + 16) /* the URL's path + "/v1/payments" */
#define PB_KEY_CHARS_MAX 256
#define PB_ID_CHARS_MAX 127                     /* an order or payment id */
#define PB_REQUEST_BODY_CHARS_MAX 511
#define PB_HEADER_CHARS_MAX 511
#define PB_REQUEST_BYTES_MAX 4096               /* a whole request: line, headers, body */
#define PB_RESPONSE_BYTES_MAX (64u * 1024u)     /* kept of an API answer */
#define PB_METRICS_BYTES_MAX (16u * 1024u * 1024u)
#define PB_HTTP_STATUS_LIMIT 600                /* status_count index; 0 = no answer */
#define PB_SAMPLE_SIZE 100                      /* payments checked one by one */
#define PB_VERIFY_IN_FLIGHT_MAX 8               /* ... this many at a time */
#define PB_SERIES_POINTS_MAX 4096               /* /metrics readings kept */
#define PB_EPOLL_EVENTS_MAX 256
#define PB_DURATION_S_MAX 86400
#define PB_RATE_PER_S_MAX 1000000
#define PB_REQUEST_TIMEOUT_US (30 * 1000000)
#define PB_CONNECT_TIMEOUT_US (5 * 1000000)
#define PB_TIMEOUT_SCAN_INTERVAL_US 1000000     /* requests are checked for timeouts */
#define PB_BASELINE_TIMEOUT_US (10 * 1000000)
#define PB_DRAIN_TIMEOUT_US (30 * 1000000)
#define PB_VERIFY_TIMEOUT_US (30 * 1000000)
#define PB_SETTLE_TIMEOUT_S_DEFAULT 60
#define PB_METRICS_LOAD_INTERVAL_US 1000000     /* during the load: 1 a second */
#define PB_METRICS_SETTLE_INTERVAL_US 10000     /* after it: every 10 ms */
#define PB_LATE_START_US 10000                  /* open loop: "late" past 10 ms */
#define PB_MISMATCH_SHOWN_MAX 5

#define PB_DEFAULT_CONCURRENCY 32
#define PB_DEFAULT_CONNECTIONS 256
#define PB_DEFAULT_AMOUNT_MINOR 100
#define PB_METRIC_PAYMENTS "payd_payments_total"

enum scenario {
    SCENARIO_CREATE_AND_PAY,
    SCENARIO_STATIC,
};

/* The kinds of request, each with its own counts and latency histogram. */
enum req_kind {
    REQ_ORDER_CREATE,
    REQ_PAYMENT_ACCEPT,
    REQ_STATIC_GET,
    REQ_PAYMENT_GET,
    REQ_METRICS_GET,
    REQ_KIND_COUNT,
};

static const char *const req_kind_name[REQ_KIND_COUNT] = {
    [REQ_ORDER_CREATE] = "order_create",
    [REQ_PAYMENT_ACCEPT] = "payment_accept",
    [REQ_STATIC_GET] = "static_get",
    [REQ_PAYMENT_GET] = "payment_get",
    [REQ_METRICS_GET] = "metrics_get",
};

/* Percentiles reported, in hundred-thousandths. */
static const struct {
    const char *name;
    uint32_t per_100k;
} percentiles[] = {
    {"p50", 50000}, {"p90", 90000}, {"p99", 99000}, {"p99_9", 99900},
};

struct req_stats {
    uint64_t status_count[PB_HTTP_STATUS_LIMIT]; /* [0]: transport error, no answer */
    uint64_t connects;                           /* new connections the requests opened */
    uint64_t bad_body;                           /* a success answer we could not read */
    struct hist latency;                         /* successful answers only */
};

/* What a slot is doing; a session walks IDLE -> ORDER -> PAYMENT -> IDLE. */
enum slot_state {
    SLOT_IDLE,
    SLOT_ORDER,
    SLOT_PAYMENT,
    SLOT_STATIC,
    SLOT_VERIFY,
    SLOT_METRICS,
};

struct bench;

/*
 * One request in flight at a time, on the slot's own connection (kept for
 * the whole run, so it stays open from request to request).
 */
struct slot {
    struct bench *bench;
    struct httpc_conn *conn;            /* owned */
    enum slot_state state;
    uint64_t session_no;
    int64_t sent_us;                    /* latency counts from here (due time in open loop) */
    size_t verify_index;                /* SLOT_VERIFY: which sample */
    struct slot *next_idle;
    char request[PB_REQUEST_BYTES_MAX]; /* the bytes of a formatted request in flight */
};

struct options {
    const char *url;
    const char *key;
    const char *json_path;
    enum scenario scenario;
    int64_t duration_s;
    int64_t rate_per_s;   /* > 0: open loop */
    int64_t concurrency;  /* closed loop: sessions in flight */
    int64_t connections;  /* open loop: most sessions in flight */
    int64_t amount_minor;
    const char *currency;
    int64_t settle_timeout_s;
    long server_pid;      /* > 0: report that process's CPU too */
    const char *channel;  /* create-and-pay: the channel and method to pay with */
    const char *method;
    bool check;           /* run paycheck at the end */
    const char *data_dir; /* for paycheck: payd's data directory */
    const char *store_url; /* for paycheck: payd's PostgreSQL */
    const char *paysim;   /* for paycheck: CHANNEL=URL of a paysim */
};

/* One reading of the payments counters, as deltas from the baseline. */
struct series_point {
    int64_t at_us; /* when the answer arrived, from the load's start */
    uint64_t succeeded;
    uint64_t failed;
};

/* CPU times read at one instant, in microseconds. */
struct cpu_snapshot {
    int64_t wall_us;
    int64_t self_us;    /* this process, user + system */
    int64_t server_us;  /* --server-pid, user + system; -1 when unknown */
    int64_t machine_busy_us;   /* user, nice, system, irq, softirq: all cores */
    int64_t machine_iowait_us;
    int64_t machine_steal_us;  /* taken by the hypervisor */
    int64_t machine_total_us;
};

struct bench {
    struct options opt;
    struct httpc_target target; /* from --url; the connections borrow it */
    int epoll_fd;
    int64_t timeout_scan_due_us;
    volatile sig_atomic_t *stop_flag;

    struct slot *slots;
    size_t slot_count;
    struct slot *idle;
    size_t sessions_in_flight;
    struct slot metrics_slot;
    bool metrics_in_flight;
    int64_t metrics_due_us;

    char path_orders[PB_PATH_CHARS_MAX];
    char path_payments[PB_PATH_CHARS_MAX];
    char path_metrics[PB_PATH_CHARS_MAX];
    char json_headers[PB_HEADER_CHARS_MAX + 1]; /* header lines of API requests */
    char static_request[PB_REQUEST_BYTES_MAX];  /* the same bytes for every static GET */
    size_t static_request_len;
    char metrics_request[PB_REQUEST_BYTES_MAX];
    size_t metrics_request_len;
    char run_id[17];
    char channel_label[PB_ID_CHARS_MAX + 16]; /* channel="NAME" */
    FILE *acked;        /* --check: the ids of payments answered 202 */
    char acked_path[64];
    uint64_t rng_state;

    struct req_stats stats[REQ_KIND_COUNT];
    bool accepting_sessions;
    uint64_t sessions_started;
    uint64_t sessions_paid;   /* create-and-pay: reached a 202; static: a 200 */
    uint64_t sessions_failed;
    uint64_t sessions_aborted; /* still in flight when the drain timed out */
    uint64_t payments_accepted;
    uint64_t payments_not_processing; /* 202 whose body did not say "processing" */

    /* Open loop. */
    int64_t load_start_us;
    uint64_t arrivals_started;
    uint64_t arrivals_late;
    uint64_t arrivals_missed; /* due during the load, never started */
    struct hist start_lag;

    /* Payments counters, read from /metrics. */
    bool metrics_seen;        /* a 200 answer from /metrics */
    bool metric_present;      /* payd_payments_total appeared in it */
    uint64_t succeeded_base;
    uint64_t failed_base;
    uint64_t succeeded_now;   /* deltas from the base */
    uint64_t failed_now;
    int64_t metrics_sent_us;  /* of the answer last read */
    int64_t metrics_recv_us;
    struct series_point series[PB_SERIES_POINTS_MAX];
    size_t series_len;

    /* The sample checked at the end. */
    char sample_id[PB_SAMPLE_SIZE][PB_ID_CHARS_MAX + 1];
    size_t sample_len;
    size_t verify_done;
    size_t verify_succeeded;
    size_t verify_mismatch_shown;
    size_t transport_errors_shown;

    /* Timeline. */
    int64_t t_first_us;
    int64_t t_load_end_us;
    int64_t t_drained_us;
    int64_t t_final_us;   /* -1: payments never all final */
    struct cpu_snapshot cpu_load_start;
    struct cpu_snapshot cpu_load_end;
    struct cpu_snapshot cpu_run_end;
};

static volatile sig_atomic_t stop_requested;

/* The first SIGINT/SIGTERM ends the load early (the run still drains,
 * settles and reports); a second one also cuts the settling short. */
static void on_stop_signal(int signo)
{
    (void)signo;
    if (stop_requested < 2)
        stop_requested++;
}

static void die(const char *message)
{
    fprintf(stderr, "paybench: %s\n", message);
    exit(1);
}

/* xorshift64*: enough for reservoir sampling, not for anything secret. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(2685821657736338717);
}

/* ---- CPU accounting ---------------------------------------------------- */

static int64_t timeval_us(struct timeval tv)
{
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* User + system time of process `pid` from /proc/PID/stat; -1 if unreadable. */
static int64_t proc_cpu_us(long pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[2048];
    int64_t cpu_us = -1;
    if (fgets(line, sizeof(line), f) == NULL)
        goto out_close;
    /* The command name may hold spaces and parentheses: fields resume after
     * the last ')'. utime and stime are fields 14 and 15, in clock ticks. */
    const char *rest = strrchr(line, ')');
    if (rest == NULL)
        goto out_close;
    unsigned long long utime_ticks = 0;
    unsigned long long stime_ticks = 0;
    if (sscanf(rest + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &utime_ticks, &stime_ticks) != 2)
        goto out_close;
    long ticks_per_s = sysconf(_SC_CLK_TCK);
    if (ticks_per_s <= 0)
        goto out_close;
    cpu_us = (int64_t)((utime_ticks + stime_ticks) * 1000000ull / (unsigned long long)ticks_per_s);
out_close:
    fclose(f);
    return cpu_us;
}

/* CPU time of the whole machine (all cores) from /proc/stat's first line:
 * user nice system idle iowait irq softirq steal, in clock ticks. */
static void machine_cpu_us(struct cpu_snapshot *snap)
{
    snap->machine_busy_us = 0;
    snap->machine_iowait_us = 0;
    snap->machine_steal_us = 0;
    snap->machine_total_us = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return;
    unsigned long long v[8] = {0};
    long ticks_per_s = sysconf(_SC_CLK_TCK);
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7]) == 8 &&
        ticks_per_s > 0) {
        unsigned long long total = 0;
        for (size_t i = 0; i < ARRAY_LEN(v); i++)
            total += v[i];
        unsigned long long us_per_tick = 1000000ull / (unsigned long long)ticks_per_s;
        snap->machine_total_us = (int64_t)(total * us_per_tick);
        snap->machine_busy_us = (int64_t)((v[0] + v[1] + v[2] + v[5] + v[6]) * us_per_tick);
        snap->machine_iowait_us = (int64_t)(v[4] * us_per_tick);
        snap->machine_steal_us = (int64_t)(v[7] * us_per_tick);
    }
    fclose(f);
}

static void cpu_snapshot_take(const struct bench *b, struct cpu_snapshot *snap)
{
    struct rusage usage;
    PB_ASSERT(getrusage(RUSAGE_SELF, &usage) == 0);
    snap->wall_us = clock_mono_us();
    snap->self_us = timeval_us(usage.ru_utime) + timeval_us(usage.ru_stime);
    snap->server_us = b->opt.server_pid > 0 ? proc_cpu_us(b->opt.server_pid) : -1;
    machine_cpu_us(snap);
}

/* ---- requests ---------------------------------------------------------- */

static void on_transfer_done(struct bench *b, struct slot *s, int rc);

static void slot_init(struct bench *b, struct slot *s, size_t response_limit)
{
    memset(s, 0, sizeof(*s));
    s->bench = b;
    s->state = SLOT_IDLE;
    const struct httpc_limits limits = {
        .body_bytes_max = response_limit,
        .connect_timeout_us = PB_CONNECT_TIMEOUT_US,
        .request_timeout_us = PB_REQUEST_TIMEOUT_US,
    };
    s->conn = httpc_conn_new(&b->target, b->epoll_fd, &limits, s);
}

static void slot_free(struct slot *s)
{
    httpc_conn_free(s->conn);
    memset(s, 0, sizeof(*s));
}

/*
 * Starts sending request[0 .. len) on the slot's connection. The bytes must
 * stay unchanged until the request ends (s->request, or one of the bench's
 * fixed requests). A request that fails at once ends here, through
 * on_transfer_done(), like any other.
 */
static void slot_issue(struct bench *b, struct slot *s, const char *request, size_t len)
{
    int rc = httpc_conn_send(s->conn, request, len);
    if (rc != HTTPC_AGAIN)
        on_transfer_done(b, s, rc);
}

/* Formats a request into s->request and issues it; `body` NULL for none. */
static void slot_request(struct bench *b, struct slot *s, const char *method, const char *path,
                         const char *header_lines, const char *body, size_t body_len)
{
    int len = httpc_request_format(s->request, sizeof(s->request), &b->target, method, path,
                                   header_lines, body, body_len);
    PB_ASSERT(len > 0); /* every part is bounded well below PB_REQUEST_BYTES_MAX */
    slot_issue(b, s, s->request, (size_t)len);
}

/* ---- sessions ---------------------------------------------------------- */

/* Ids are opaque, but they go into a URL path and a JSON string unescaped:
 * accept only the characters payd's ids are made of. */
static bool id_is_plain(const char *id)
{
    size_t len = strlen(id);
    if (len == 0 || len > PB_ID_CHARS_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

/*
 * Reads string fields `id` and, when status_out is not NULL, `status` from a
 * JSON object answer. Returns 0 when the id is there and plain, else -1.
 * The strings are copied; id_out holds PB_ID_CHARS_MAX + 1 bytes, status_out
 * 32.
 *
 * Two ways, the same contract: scan_object_answer() for the 201 and 202 of
 * every session (jsonscan: no tree, no allocation), parse_object_answer()
 * with jansson for the sample read back at the end, so that the check does
 * not rest on the scanner.
 */
static int scan_object_answer(const struct httpc_response *r, char *id_out, char *status_out)
{
    const char *value;
    size_t value_len;
    if (r->body_truncated ||
        jsonscan_string_member(r->body, r->body_len, "id", &value, &value_len) != 0 ||
        value_len > PB_ID_CHARS_MAX)
        return -1;
    memcpy(id_out, value, value_len);
    id_out[value_len] = '\0';
    if (!id_is_plain(id_out))
        return -1;
    if (status_out != NULL) {
        if (jsonscan_string_member(r->body, r->body_len, "status", &value, &value_len) != 0)
            value_len = 0;
        snprintf(status_out, 32, "%.*s", (int)value_len, value_len > 0 ? value : "");
    }
    return 0;
}

static int parse_object_answer(const struct httpc_response *r, char *id_out, char *status_out)
{
    int rc = -1;
    if (r->body_truncated)
        return -1;
    json_error_t error;
    json_t *root = json_loadb(r->body, r->body_len, 0, &error);
    if (root == NULL)
        return -1;
    const char *id = json_string_value(json_object_get(root, "id"));
    if (id == NULL || !id_is_plain(id))
        goto out_decref;
    snprintf(id_out, PB_ID_CHARS_MAX + 1, "%s", id);
    if (status_out != NULL) {
        const char *status = json_string_value(json_object_get(root, "status"));
        snprintf(status_out, 32, "%s", status != NULL ? status : "");
    }
    rc = 0;
out_decref:
    json_decref(root);
    return rc;
}

static void session_end(struct bench *b, struct slot *s, bool paid)
{
    if (paid)
        b->sessions_paid++;
    else
        b->sessions_failed++;
    s->state = SLOT_IDLE;
    s->next_idle = b->idle;
    b->idle = s;
    PB_ASSERT(b->sessions_in_flight > 0);
    b->sessions_in_flight--;
}

/* Starts a new session on an idle slot; its first request counts from due_us. */
static void session_start(struct bench *b, int64_t due_us)
{
    struct slot *s = b->idle;
    PB_ASSERT(s != NULL && s->state == SLOT_IDLE);
    b->idle = s->next_idle;
    s->next_idle = NULL;
    s->session_no = b->sessions_started++;
    s->sent_us = due_us;
    b->sessions_in_flight++;
    if (b->t_first_us < 0)
        b->t_first_us = clock_mono_us();

    if (b->opt.scenario == SCENARIO_STATIC) {
        s->state = SLOT_STATIC;
        slot_issue(b, s, b->static_request, b->static_request_len);
        return;
    }
    s->state = SLOT_ORDER;
    char body[PB_REQUEST_BODY_CHARS_MAX + 1];
    int n = snprintf(body, sizeof(body),
                     "{\"merchant_order_no\":\"pb-%s-%" PRIu64 "\",\"amount\":%" PRId64
                     ",\"currency\":\"%s\",\"description\":\"paybench\"}",
                     b->run_id, s->session_no, b->opt.amount_minor, b->opt.currency);
    PB_ASSERT(n > 0 && (size_t)n < sizeof(body));
    slot_request(b, s, "POST", b->path_orders, b->json_headers, body, (size_t)n);
}

/* The order exists: pay it, with an Idempotency-Key unique to the session. */
static void session_pay(struct bench *b, struct slot *s, const char *order_id, int64_t now_us)
{
    s->state = SLOT_PAYMENT;
    s->sent_us = now_us;
    char body[PB_REQUEST_BODY_CHARS_MAX + 1];
    int n = snprintf(body, sizeof(body),
                     "{\"order_id\":\"%s\",\"channel\":\"%s\",\"method\":\"%s\"}", order_id,
                     b->opt.channel, b->opt.method);
    PB_ASSERT(n > 0 && (size_t)n < sizeof(body));
    char headers[2 * PB_HEADER_CHARS_MAX + 1];
    int headers_len = snprintf(headers, sizeof(headers),
                               "%sIdempotency-Key: pb-%s-pay-%" PRIu64 "\r\n", b->json_headers,
                               b->run_id, s->session_no);
    PB_ASSERT(headers_len > 0 && (size_t)headers_len < sizeof(headers));
    slot_request(b, s, "POST", b->path_payments, headers, body, (size_t)n);
}

static void sample_offer(struct bench *b, const char *payment_id)
{
    /* Reservoir sampling: every accepted payment is equally likely to be
     * in the sample. payments_accepted already counts this one. */
    if (b->sample_len < PB_SAMPLE_SIZE) {
        snprintf(b->sample_id[b->sample_len++], PB_ID_CHARS_MAX + 1, "%s", payment_id);
        return;
    }
    uint64_t pick = rng_next(&b->rng_state) % b->payments_accepted;
    if (pick < PB_SAMPLE_SIZE)
        snprintf(b->sample_id[pick], PB_ID_CHARS_MAX + 1, "%s", payment_id);
}

static void on_metrics_answer(struct bench *b, struct slot *s, long status, int64_t now_us)
{
    b->metrics_in_flight = false;
    if (status != 200)
        return;
    const struct httpc_response *r = httpc_conn_response(s->conn);
    const char *const succeeded_labels[] = {b->channel_label, "status=\"succeeded\""};
    const char *const failed_labels[] = {b->channel_label, "status=\"failed\""};
    uint64_t succeeded = 0;
    uint64_t failed = 0;
    int rc_s = promtext_find_counter(r->body, r->body_len, PB_METRIC_PAYMENTS, succeeded_labels,
                                     ARRAY_LEN(succeeded_labels), &succeeded);
    int rc_f = promtext_find_counter(r->body, r->body_len, PB_METRIC_PAYMENTS, failed_labels,
                                     ARRAY_LEN(failed_labels), &failed);
    if (rc_s == -2 || rc_f == -2) {
        b->stats[REQ_METRICS_GET].bad_body++;
        return;
    }
    if (memmem(r->body, r->body_len, PB_METRIC_PAYMENTS, strlen(PB_METRIC_PAYMENTS)))
        b->metric_present = true;
    if (!b->metrics_seen) {
        b->metrics_seen = true;
        b->succeeded_base = succeeded;
        b->failed_base = failed;
    }
    /* A counter going down means payd restarted; clamp rather than wrap. */
    b->succeeded_now = succeeded >= b->succeeded_base ? succeeded - b->succeeded_base : 0;
    b->failed_now = failed >= b->failed_base ? failed - b->failed_base : 0;
    b->metrics_sent_us = s->sent_us;
    b->metrics_recv_us = now_us;
    if (b->load_start_us > 0 && b->series_len < PB_SERIES_POINTS_MAX) {
        struct series_point *p = &b->series[b->series_len++];
        p->at_us = now_us - b->load_start_us;
        p->succeeded = b->succeeded_now;
        p->failed = b->failed_now;
    }
}

static void on_verify_answer(struct bench *b, struct slot *s, long status)
{
    char id[PB_ID_CHARS_MAX + 1];
    char payment_status[32] = "";
    const char *expected_id = b->sample_id[s->verify_index];
    const struct httpc_response *r = httpc_conn_response(s->conn);
    bool ok = status == 200 && parse_object_answer(r, id, payment_status) == 0 &&
              strcmp(id, expected_id) == 0 && strcmp(payment_status, "succeeded") == 0;
    b->verify_done++;
    if (ok) {
        b->verify_succeeded++;
    } else if (b->verify_mismatch_shown < PB_MISMATCH_SHOWN_MAX) {
        b->verify_mismatch_shown++;
        fprintf(stderr, "paybench: sample payment %s: HTTP %ld, status \"%s\"; body: %.*s\n",
                expected_id, status, payment_status, (int)(r->body_len < 300 ? r->body_len : 300),
                r->body);
    }
    s->state = SLOT_IDLE;
    s->next_idle = b->idle;
    b->idle = s;
}

static enum req_kind kind_of(enum slot_state state)
{
    switch (state) {
    case SLOT_ORDER:
        return REQ_ORDER_CREATE;
    case SLOT_PAYMENT:
        return REQ_PAYMENT_ACCEPT;
    case SLOT_STATIC:
        return REQ_STATIC_GET;
    case SLOT_VERIFY:
        return REQ_PAYMENT_GET;
    case SLOT_METRICS:
        return REQ_METRICS_GET;
    case SLOT_IDLE:
    default:
        PB_ASSERT(!"a request completed on an idle slot");
        return REQ_KIND_COUNT;
    }
}

static bool is_success(enum req_kind kind, long status)
{
    switch (kind) {
    case REQ_ORDER_CREATE:
        return status == 201 || status == 200;
    case REQ_PAYMENT_ACCEPT:
        return status == 202;
    case REQ_STATIC_GET:
    case REQ_PAYMENT_GET:
    case REQ_METRICS_GET:
        return status == 200;
    case REQ_KIND_COUNT:
    default:
        PB_ASSERT(!"unknown request kind");
        return false;
    }
}

/*
 * The request on `s` ended: rc is HTTPC_OK with an answer, or the code of
 * the failure (counted as "no answer"). May start the session's next
 * request on the same slot.
 */
static void on_transfer_done(struct bench *b, struct slot *s, int rc)
{
    PB_ASSERT(rc != HTTPC_AGAIN);
    int64_t now_us = clock_mono_us();
    const struct httpc_response *r = httpc_conn_response(s->conn);
    long status = rc == HTTPC_OK ? r->status : 0;
    if (status < 0 || status >= PB_HTTP_STATUS_LIMIT)
        status = 0;

    enum req_kind kind = kind_of(s->state);
    struct req_stats *st = &b->stats[kind];
    if (rc == HTTPC_ERR_CHUNKED) {
        /* Not a server fault to count: this client cannot read such answers. */
        fprintf(stderr, "paybench: %s: %s; paybench cannot measure this server\n",
                req_kind_name[kind], httpc_strerror(rc));
        exit(1);
    }
    if (rc != HTTPC_OK && b->transport_errors_shown < PB_MISMATCH_SHOWN_MAX) {
        b->transport_errors_shown++;
        int sys_errno = httpc_conn_errno(s->conn);
        fprintf(stderr, "paybench: %s: no answer: %s%s%s\n", req_kind_name[kind],
                httpc_strerror(rc), sys_errno != 0 ? ": " : "",
                sys_errno != 0 ? strerror(sys_errno) : "");
    }
    st->status_count[status]++;
    st->connects += r->connects;
    bool success = is_success(kind, status);
    if (success)
        hist_record(&st->latency, now_us > s->sent_us ? (uint64_t)(now_us - s->sent_us) : 0u);

    switch (s->state) {
    case SLOT_ORDER: {
        char order_id[PB_ID_CHARS_MAX + 1];
        if (!success) {
            session_end(b, s, false);
        } else if (scan_object_answer(r, order_id, NULL) != 0) {
            st->bad_body++;
            session_end(b, s, false);
        } else {
            session_pay(b, s, order_id, now_us);
        }
        break;
    }
    case SLOT_PAYMENT: {
        char payment_id[PB_ID_CHARS_MAX + 1];
        char payment_status[32];
        if (success) {
            b->payments_accepted++;
            if (scan_object_answer(r, payment_id, payment_status) != 0) {
                st->bad_body++;
            } else {
                if (strcmp(payment_status, "processing") != 0)
                    b->payments_not_processing++;
                sample_offer(b, payment_id);
                if (b->acked)
                    fprintf(b->acked, "%s\n", payment_id);
            }
        }
        session_end(b, s, success);
        break;
    }
    case SLOT_STATIC:
        session_end(b, s, success);
        break;
    case SLOT_VERIFY:
        on_verify_answer(b, s, status);
        break;
    case SLOT_METRICS:
        on_metrics_answer(b, s, status, now_us);
        s->state = SLOT_IDLE;
        break;
    case SLOT_IDLE:
    default:
        PB_ASSERT(!"a request completed on an idle slot");
    }
}

/* Fails every request that is past its deadline. */
static void bench_expire(struct bench *b, int64_t now_us)
{
    for (size_t i = 0; i <= b->slot_count; i++) {
        struct slot *s = i < b->slot_count ? &b->slots[i] : &b->metrics_slot;
        int rc = httpc_conn_expire(s->conn, now_us);
        if (rc != HTTPC_AGAIN)
            on_transfer_done(b, s, rc);
    }
}

/*
 * Waits for socket activity, at most wait_us, and handles it: every request
 * that ends goes to on_transfer_done(). Checks for timeouts once every
 * PB_TIMEOUT_SCAN_INTERVAL_US (the bounds are seconds long).
 */
static void bench_step(struct bench *b, int64_t wait_us)
{
    int64_t now_us = clock_mono_us();
    if (b->timeout_scan_due_us - now_us < wait_us)
        wait_us = b->timeout_scan_due_us - now_us;
    if (wait_us < 0)
        wait_us = 0;
    struct timespec timeout = {
        .tv_sec = (time_t)(wait_us / 1000000),
        .tv_nsec = (long)(wait_us % 1000000) * 1000,
    };
    struct epoll_event events[PB_EPOLL_EVENTS_MAX];
    int n = epoll_pwait2(b->epoll_fd, events, PB_EPOLL_EVENTS_MAX, &timeout, NULL);
    if (n < 0 && errno == ENOSYS)
        n = epoll_wait(b->epoll_fd, events, PB_EPOLL_EVENTS_MAX, (int)((wait_us + 999) / 1000));
    if (n < 0 && errno != EINTR) {
        perror("paybench: epoll_wait");
        exit(1);
    }
    for (int i = 0; i < n; i++) {
        struct httpc_conn *c = events[i].data.ptr;
        int rc = httpc_conn_on_event(c, events[i].events);
        if (rc != HTTPC_AGAIN)
            on_transfer_done(b, httpc_conn_owner(c), rc);
    }
    now_us = clock_mono_us();
    if (now_us >= b->timeout_scan_due_us) {
        bench_expire(b, now_us);
        b->timeout_scan_due_us = now_us + PB_TIMEOUT_SCAN_INTERVAL_US;
    }
}

static void metrics_poll_if_due(struct bench *b, int64_t now_us, int64_t interval_us)
{
    if (b->opt.scenario != SCENARIO_CREATE_AND_PAY || b->metrics_in_flight ||
        now_us < b->metrics_due_us)
        return;
    b->metrics_in_flight = true;
    b->metrics_slot.state = SLOT_METRICS;
    b->metrics_slot.sent_us = now_us;
    slot_issue(b, &b->metrics_slot, b->metrics_request, b->metrics_request_len);
    b->metrics_due_us = now_us + interval_us;
}

/* Starts every session that is due by now (and by due_limit_us) and has a
 * slot. */
static void load_start_due(struct bench *b, int64_t now_us, int64_t due_limit_us)
{
    if (!b->accepting_sessions)
        return;
    if (b->opt.rate_per_s <= 0) {
        /* Bounded: a session that fails at once (connect refused) frees its
         * slot again before this returns. */
        for (size_t i = 0; i < b->slot_count && b->idle != NULL; i++)
            session_start(b, now_us);
        return;
    }
    while (b->idle != NULL) {
        uint64_t k = b->arrivals_started;
        int64_t due_us = b->load_start_us +
                         (int64_t)(k * 1000000u / (uint64_t)b->opt.rate_per_s);
        if (due_us > now_us || due_us > due_limit_us)
            break;
        int64_t lag_us = now_us - due_us;
        hist_record(&b->start_lag, (uint64_t)lag_us);
        if (lag_us > PB_LATE_START_US)
            b->arrivals_late++;
        b->arrivals_started++;
        session_start(b, due_us);
    }
}

/* The next due time in open loop, or INT64_MAX. */
static int64_t load_next_due_us(const struct bench *b)
{
    if (b->opt.rate_per_s <= 0 || b->idle == NULL)
        return INT64_MAX;
    return b->load_start_us +
           (int64_t)(b->arrivals_started * 1000000u / (uint64_t)b->opt.rate_per_s);
}

static int64_t min_i64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* ---- phases ------------------------------------------------------------ */

/* Reads the counters before any load; returns 0, or -1 when /metrics fails. */
static int phase_baseline(struct bench *b)
{
    b->metrics_due_us = 0;
    int64_t deadline_us = clock_mono_us() + PB_BASELINE_TIMEOUT_US;
    metrics_poll_if_due(b, clock_mono_us(), PB_METRICS_LOAD_INTERVAL_US);
    while (b->metrics_in_flight && clock_mono_us() < deadline_us)
        bench_step(b, deadline_us - clock_mono_us());
    return b->metrics_seen ? 0 : -1;
}

static void phase_load(struct bench *b)
{
    cpu_snapshot_take(b, &b->cpu_load_start);
    b->load_start_us = b->cpu_load_start.wall_us;
    int64_t end_us = b->load_start_us + b->opt.duration_s * 1000000;
    b->metrics_due_us = b->load_start_us + PB_METRICS_LOAD_INTERVAL_US;
    b->accepting_sessions = true;
    for (;;) {
        int64_t now_us = clock_mono_us();
        if (now_us >= end_us || *b->stop_flag) {
            /* Sessions due before the end still start, late or not. */
            if (b->opt.rate_per_s > 0)
                load_start_due(b, now_us, end_us);
            break;
        }
        load_start_due(b, now_us, end_us);
        metrics_poll_if_due(b, now_us, PB_METRICS_LOAD_INTERVAL_US);
        int64_t wake_us = min_i64(end_us, load_next_due_us(b));
        if (b->opt.scenario == SCENARIO_CREATE_AND_PAY)
            wake_us = min_i64(wake_us, b->metrics_due_us);
        bench_step(b, wake_us - now_us);
    }
    b->accepting_sessions = false;
    b->t_load_end_us = clock_mono_us();
    cpu_snapshot_take(b, &b->cpu_load_end);
    if (b->opt.rate_per_s > 0) {
        /* Due before the end yet never started: every slot was busy. */
        int64_t window_us = min_i64(b->t_load_end_us, end_us) - b->load_start_us;
        uint64_t due = (uint64_t)window_us * (uint64_t)b->opt.rate_per_s / 1000000u;
        b->arrivals_missed = due > b->arrivals_started ? due - b->arrivals_started : 0;
    }
}

/* Lets the sessions in flight finish (a session with its order created
 * still sends its payment); aborts what is left after the bound. */
static void phase_drain(struct bench *b)
{
    int64_t deadline_us = clock_mono_us() + PB_DRAIN_TIMEOUT_US;
    b->metrics_due_us = b->opt.scenario == SCENARIO_CREATE_AND_PAY ? clock_mono_us() : INT64_MAX;
    while (b->sessions_in_flight > 0) {
        int64_t now_us = clock_mono_us();
        if (now_us >= deadline_us)
            break;
        metrics_poll_if_due(b, now_us, PB_METRICS_SETTLE_INTERVAL_US);
        bench_step(b, min_i64(deadline_us, b->metrics_due_us) - now_us);
    }
    for (size_t i = 0; i < b->slot_count; i++) {
        struct slot *s = &b->slots[i];
        if (s->state == SLOT_ORDER || s->state == SLOT_PAYMENT || s->state == SLOT_STATIC) {
            httpc_conn_abort(s->conn);
            b->sessions_aborted++;
            s->state = SLOT_IDLE;
            s->next_idle = b->idle;
            b->idle = s;
            b->sessions_in_flight--;
        }
    }
    b->t_drained_us = clock_mono_us();
}

/* Polls /metrics until every accepted payment is final, or the bound. */
static void phase_settle(struct bench *b)
{
    int64_t deadline_us = clock_mono_us() + b->opt.settle_timeout_s * 1000000;
    b->t_final_us = -1;
    for (;;) {
        int64_t now_us = clock_mono_us();
        /* Only a reading asked for after the drain sees every acceptance. */
        if (!b->metrics_in_flight && b->metrics_sent_us >= b->t_drained_us &&
            b->succeeded_now + b->failed_now >= b->payments_accepted) {
            b->t_final_us = b->metrics_recv_us;
            return;
        }
        if (now_us >= deadline_us || *b->stop_flag >= 2)
            return;
        metrics_poll_if_due(b, now_us, PB_METRICS_SETTLE_INTERVAL_US);
        bench_step(b, min_i64(deadline_us, b->metrics_due_us) - now_us);
    }
}

/* Reads every sampled payment; each should be `succeeded`. */
static void phase_verify(struct bench *b)
{
    int64_t deadline_us = clock_mono_us() + PB_VERIFY_TIMEOUT_US;
    size_t next = 0;
    char path[PB_PATH_CHARS_MAX + PB_ID_CHARS_MAX + 1];
    while (b->verify_done < b->sample_len && clock_mono_us() < deadline_us) {
        /* Few at a time, on the connections the load left open. */
        while (next < b->sample_len && b->idle != NULL &&
               next - b->verify_done < PB_VERIFY_IN_FLIGHT_MAX) {
            struct slot *s = b->idle;
            b->idle = s->next_idle;
            s->state = SLOT_VERIFY;
            s->verify_index = next;
            s->sent_us = clock_mono_us();
            snprintf(path, sizeof(path), "%s/%s", b->path_payments, b->sample_id[next]);
            slot_request(b, s, "GET", path, b->json_headers, NULL, 0);
            next++;
        }
        bench_step(b, deadline_us - clock_mono_us());
    }
}

/* ---- report ------------------------------------------------------------ */

static double us_to_ms(uint64_t us)
{
    return (double)us / 1000.0;
}

static double per_s(uint64_t count, int64_t window_us)
{
    return window_us > 0 ? (double)count * 1e6 / (double)window_us : 0.0;
}

static double cpu_share(int64_t cpu_us, int64_t wall_us)
{
    return wall_us > 0 && cpu_us >= 0 ? 100.0 * (double)cpu_us / (double)wall_us : -1.0;
}

static void print_kind(const struct bench *b, enum req_kind kind)
{
    const struct req_stats *st = &b->stats[kind];
    uint64_t total = 0;
    for (size_t i = 0; i < PB_HTTP_STATUS_LIMIT; i++)
        total += st->status_count[i];
    if (total == 0)
        return;
    printf("  %-15s n=%" PRIu64 "  status:", req_kind_name[kind], total);
    for (size_t i = 0; i < PB_HTTP_STATUS_LIMIT; i++) {
        if (st->status_count[i] == 0)
            continue;
        if (i == 0)
            printf(" no-answer=%" PRIu64, st->status_count[i]);
        else
            printf(" %zu=%" PRIu64, i, st->status_count[i]);
    }
    printf("  new-connections=%" PRIu64, st->connects);
    if (st->bad_body > 0)
        printf("  unreadable-bodies=%" PRIu64, st->bad_body);
    printf("\n");
    const struct hist *h = &st->latency;
    if (h->count == 0)
        return;
    printf("  %-15s latency ms (ok answers):", "");
    for (size_t i = 0; i < ARRAY_LEN(percentiles); i++)
        printf(" %s=%.3f", percentiles[i].name,
               us_to_ms(hist_percentile_us(h, percentiles[i].per_100k)));
    printf(" max=%.3f mean=%.3f\n", us_to_ms(h->max_us), us_to_ms(hist_mean_us(h)));
}

static json_t *kind_json(const struct bench *b, enum req_kind kind)
{
    const struct req_stats *st = &b->stats[kind];
    json_t *status = json_object();
    uint64_t total = 0;
    for (size_t i = 0; i < PB_HTTP_STATUS_LIMIT; i++) {
        if (st->status_count[i] == 0)
            continue;
        total += st->status_count[i];
        char name[16];
        snprintf(name, sizeof(name), "%zu", i);
        json_object_set_new(status, i == 0 ? "no_answer" : name,
                            json_integer((json_int_t)st->status_count[i]));
    }
    json_t *latency = json_object();
    const struct hist *h = &st->latency;
    json_object_set_new(latency, "count", json_integer((json_int_t)h->count));
    for (size_t i = 0; i < ARRAY_LEN(percentiles); i++) {
        char name[32];
        snprintf(name, sizeof(name), "%s_us", percentiles[i].name);
        uint64_t value_us = hist_percentile_us(h, percentiles[i].per_100k);
        json_object_set_new(latency, name, json_integer((json_int_t)value_us));
    }
    json_object_set_new(latency, "max_us", json_integer((json_int_t)h->max_us));
    json_object_set_new(latency, "mean_us", json_integer((json_int_t)hist_mean_us(h)));
    return json_pack("{s:I, s:o, s:I, s:I, s:o}", "requests", (json_int_t)total, "status", status,
                     "new_connections", (json_int_t)st->connects, "unreadable_bodies",
                     (json_int_t)st->bad_body, "latency_ok", latency);
}

/* Succeeded payments per second between the first and last /metrics
 * readings that fall inside the load window: the pipeline's steady rate. */
static double steady_succeeded_per_s(const struct bench *b)
{
    int64_t window_end_us = b->t_load_end_us - b->load_start_us;
    const struct series_point *first = NULL;
    const struct series_point *last = NULL;
    for (size_t i = 0; i < b->series_len; i++) {
        const struct series_point *p = &b->series[i];
        if (p->at_us > window_end_us)
            break;
        if (first == NULL)
            first = p;
        last = p;
    }
    if (first == NULL || last == first || last->succeeded < first->succeeded)
        return -1.0; /* too few readings, or payd restarted (its counters began again) */
    return per_s(last->succeeded - first->succeeded, last->at_us - first->at_us);
}

/* The figures of a finished run, derived once for both reports. */
struct summary {
    bool pay;                  /* create-and-pay (else static) */
    int64_t load_us;           /* the load window */
    long cores;
    double client_cpu_pct;     /* % of one core, during the load */
    double client_cpu_us_per_session;
    double server_cpu_pct;     /* -1 without --server-pid */
    double machine_busy_pct;   /* % of all cores */
    double machine_iowait_pct;
    double machine_steal_pct;
    double other_cpu_pct;      /* % of one core used by neither */
    int64_t e2e_us;            /* first request -> last success; -1: never all final */
    double paid_per_s;
    double steady_succeeded_per_s;
    uint64_t not_final;
    bool schedule_kept;
    bool ok;
};

static void summarize(const struct bench *b, struct summary *sum)
{
    const struct options *o = &b->opt;
    const struct cpu_snapshot *c0 = &b->cpu_load_start;
    const struct cpu_snapshot *c1 = &b->cpu_load_end;
    memset(sum, 0, sizeof(*sum));
    sum->pay = o->scenario == SCENARIO_CREATE_AND_PAY;
    sum->load_us = b->t_load_end_us - b->load_start_us;
    sum->cores = sysconf(_SC_NPROCESSORS_ONLN);

    int64_t wall_us = c1->wall_us - c0->wall_us;
    int64_t client_cpu_us = c1->self_us - c0->self_us;
    int64_t server_cpu_us = c0->server_us >= 0 && c1->server_us >= 0 ? c1->server_us - c0->server_us
                                                                      : -1;
    sum->client_cpu_pct = cpu_share(client_cpu_us, wall_us);
    sum->client_cpu_us_per_session =
        b->sessions_started > 0 ? (double)client_cpu_us / (double)b->sessions_started : 0.0;
    sum->server_cpu_pct = cpu_share(server_cpu_us, wall_us);
    int64_t machine_us = c1->machine_total_us - c0->machine_total_us;
    sum->machine_busy_pct = cpu_share(c1->machine_busy_us - c0->machine_busy_us, machine_us);
    sum->machine_iowait_pct = cpu_share(c1->machine_iowait_us - c0->machine_iowait_us, machine_us);
    sum->machine_steal_pct = cpu_share(c1->machine_steal_us - c0->machine_steal_us, machine_us);
    /* Busy core time not spent by this client or the server: noise from
     * other processes, or kernel work on their behalf that is not charged
     * to them (block-layer and journal threads, softirqs). */
    sum->other_cpu_pct = sum->machine_busy_pct * (double)sum->cores - sum->client_cpu_pct -
                         (sum->server_cpu_pct >= 0 ? sum->server_cpu_pct : 0.0);

    sum->e2e_us = b->t_final_us >= 0 ? b->t_final_us - b->t_first_us : -1;
    sum->paid_per_s = sum->e2e_us > 0 ? per_s(b->succeeded_now, sum->e2e_us) : 0.0;
    sum->steady_succeeded_per_s = sum->pay ? steady_succeeded_per_s(b) : -1.0;
    uint64_t final = b->succeeded_now + b->failed_now;
    sum->not_final = b->payments_accepted > final ? b->payments_accepted - final : 0;
    sum->schedule_kept = o->rate_per_s <= 0 || (b->arrivals_missed == 0 &&
                                                b->arrivals_late * 100u <= b->arrivals_started);
    sum->ok = b->sessions_failed == 0 && b->sessions_aborted == 0 && sum->schedule_kept;
    if (sum->pay)
        sum->ok = sum->ok && b->t_final_us >= 0 && b->failed_now == 0 &&
                  b->succeeded_now == b->payments_accepted &&
                  b->verify_succeeded == b->sample_len && b->payments_not_processing == 0;
}

static void report_payments(const struct bench *b, const struct summary *sum)
{
    printf("  payments: accepted (202) %" PRIu64 ", succeeded %" PRIu64 ", failed %" PRIu64
           ", not final %" PRIu64 "%s\n",
           b->payments_accepted, b->succeeded_now, b->failed_now, sum->not_final,
           b->metric_present ? "" : "  (payd_payments_total NOT FOUND in /metrics)");
    if (b->payments_not_processing > 0)
        printf("  payments: %" PRIu64 " 202 answers did not say status \"processing\"\n",
               b->payments_not_processing);
    if (b->t_final_us >= 0)
        printf("  end to end: first request -> last success %.3f s (%.3f s after the load "
               "ended) => %.1f paid orders/s\n",
               (double)sum->e2e_us / 1e6, (double)(b->t_final_us - b->t_load_end_us) / 1e6,
               sum->paid_per_s);
    else
        printf("  end to end: NOT all payments final within %" PRId64 " s of the drain\n",
               b->opt.settle_timeout_s);
    printf("  accepted rate during load %.1f/s; succeeded rate during load (/metrics) ",
           per_s(b->payments_accepted, sum->load_us));
    if (sum->steady_succeeded_per_s >= 0)
        printf("%.1f/s\n", sum->steady_succeeded_per_s);
    else
        printf("n/a (fewer than two readings in the load window, or payd restarted)\n");
    printf("  sample: %zu of %zu payments read back as succeeded\n", b->verify_succeeded,
           b->sample_len);
}

static void report_print(const struct bench *b, const struct summary *sum)
{
    const struct options *o = &b->opt;
    printf("paybench: scenario %s, %s, duration %" PRId64 " s, url %s, run %s\n",
           sum->pay ? "create-and-pay" : "static",
           o->rate_per_s > 0 ? "open loop" : "closed loop", o->duration_s, o->url, b->run_id);
    if (o->rate_per_s > 0)
        printf("  offered rate %" PRId64 "/s, at most %" PRId64 " sessions in flight\n",
               o->rate_per_s, o->connections);
    else
        printf("  concurrency %" PRId64 " sessions in flight\n", o->concurrency);
    printf("  load window %.2f s: sessions started %" PRIu64 " (%.1f/s), completed ok %" PRIu64
           ", failed %" PRIu64 ", aborted at drain %" PRIu64 "\n",
           (double)sum->load_us / 1e6, b->sessions_started,
           per_s(b->sessions_started, sum->load_us), b->sessions_paid, b->sessions_failed,
           b->sessions_aborted);
    if (o->rate_per_s > 0)
        printf("  schedule: started late (>%d ms) %" PRIu64 ", never started %" PRIu64
               ", start lag p99=%.3f ms max=%.3f ms%s\n",
               PB_LATE_START_US / 1000, b->arrivals_late, b->arrivals_missed,
               us_to_ms(hist_percentile_us(&b->start_lag, 99000)), us_to_ms(b->start_lag.max_us),
               sum->schedule_kept ? ""
                                  : "  << COULD NOT KEEP THE SCHEDULE: offered load not delivered");
    for (size_t k = 0; k < REQ_KIND_COUNT; k++)
        print_kind(b, (enum req_kind)k);
    if (sum->pay)
        report_payments(b, sum);
    else
        printf("  throughput %.1f requests/s ok\n", per_s(b->sessions_paid, sum->load_us));
    printf("  client CPU during load: %.1f %% of one core (%.1f %% of the machine's %ld), "
           "%.1f us per session\n",
           sum->client_cpu_pct, sum->cores > 0 ? sum->client_cpu_pct / (double)sum->cores : -1.0,
           sum->cores, sum->client_cpu_us_per_session);
    if (sum->server_cpu_pct >= 0)
        printf("  server CPU during load (pid %ld): %.1f %% of one core\n", o->server_pid,
               sum->server_cpu_pct);
    printf("  machine CPU during load: busy %.1f %%, iowait %.1f %%, steal %.1f %% of %ld cores\n",
           sum->machine_busy_pct, sum->machine_iowait_pct, sum->machine_steal_pct, sum->cores);
    if (sum->server_cpu_pct >= 0)
        printf("  CPU used by neither client nor server (kernel threads, other processes): "
               "%.1f %% of one core\n",
               sum->other_cpu_pct);
    printf("  verdict: %s\n", sum->ok ? "ok" : "PROBLEMS (see above)");
}

static json_t *payments_json(const struct bench *b, const struct summary *sum)
{
    json_t *series = json_array();
    for (size_t i = 0; i < b->series_len; i++)
        json_array_append_new(series, json_pack("[I,I,I]", (json_int_t)b->series[i].at_us,
                                                (json_int_t)b->series[i].succeeded,
                                                (json_int_t)b->series[i].failed));
    return json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:b, s:I, s:f, s:f, s:f, s:I, s:I, s:o}", "accepted",
        (json_int_t)b->payments_accepted, "succeeded", (json_int_t)b->succeeded_now, "failed",
        (json_int_t)b->failed_now, "not_final", (json_int_t)sum->not_final,
        "not_processing_on_accept", (json_int_t)b->payments_not_processing, "all_final",
        b->t_final_us >= 0, "end_to_end_us", (json_int_t)sum->e2e_us, "paid_orders_per_s",
        sum->paid_per_s, "accepted_per_s", per_s(b->payments_accepted, sum->load_us),
        "steady_succeeded_per_s", sum->steady_succeeded_per_s, "sample_size",
        (json_int_t)b->sample_len, "sample_succeeded", (json_int_t)b->verify_succeeded,
        "series_us_succeeded_failed", series);
}

/* Writes the run as JSON to --json's file; failure to write is reported. */
static void report_json(const struct bench *b, const struct summary *sum)
{
    const struct options *o = &b->opt;
    json_t *kinds = json_object();
    for (size_t k = 0; k < REQ_KIND_COUNT; k++)
        json_object_set_new(kinds, req_kind_name[k], kind_json(b, (enum req_kind)k));
    json_t *root = json_pack(
        "{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:I, s:I, s:o}", "scenario",
        sum->pay ? "create-and-pay" : "static", "url", o->url, "run_id", b->run_id,
        "duration_s", (json_int_t)o->duration_s, "rate_per_s", (json_int_t)o->rate_per_s,
        "concurrency", (json_int_t)(o->rate_per_s > 0 ? o->connections : o->concurrency),
        "load_window_us", (json_int_t)sum->load_us, "requests_per_s_ok",
        per_s(b->sessions_paid, sum->load_us), "sessions_started",
        (json_int_t)b->sessions_started, "sessions_ok", (json_int_t)b->sessions_paid,
        "sessions_failed", (json_int_t)b->sessions_failed, "sessions_aborted",
        (json_int_t)b->sessions_aborted, "requests", kinds);
    PB_ASSERT(root != NULL);
    json_object_set_new(root, "client_cpu_pct_of_core", json_real(sum->client_cpu_pct));
    json_object_set_new(root, "client_cpu_us_per_session",
                        json_real(sum->client_cpu_us_per_session));
    json_object_set_new(root, "server_cpu_pct_of_core", json_real(sum->server_cpu_pct));
    json_object_set_new(root, "machine_busy_pct", json_real(sum->machine_busy_pct));
    json_object_set_new(root, "machine_iowait_pct", json_real(sum->machine_iowait_pct));
    json_object_set_new(root, "machine_steal_pct", json_real(sum->machine_steal_pct));
    json_object_set_new(root, "other_cpu_pct_of_core", json_real(sum->other_cpu_pct));
    json_object_set_new(root, "cores", json_integer(sum->cores));
    json_object_set_new(root, "ok", json_boolean(sum->ok));
    if (o->rate_per_s > 0)
        json_object_set_new(
            root, "schedule",
            json_pack("{s:b, s:I, s:I, s:I, s:I}", "kept", sum->schedule_kept, "started",
                      (json_int_t)b->arrivals_started, "late", (json_int_t)b->arrivals_late,
                      "missed", (json_int_t)b->arrivals_missed, "lag_p99_us",
                      (json_int_t)hist_percentile_us(&b->start_lag, 99000)));
    if (sum->pay)
        json_object_set_new(root, "payments", payments_json(b, sum));
    if (json_dump_file(root, o->json_path, JSON_INDENT(2)) != 0)
        fprintf(stderr, "paybench: cannot write %s\n", o->json_path);
    json_decref(root);
}

/* Prints the report and writes the JSON file; returns the exit status. */
static int report(const struct bench *b)
{
    struct summary sum;
    summarize(b, &sum);
    report_print(b, &sum);
    if (b->opt.json_path != NULL)
        report_json(b, &sum);
    return sum.ok ? 0 : 3;
}

/* ---- set-up ------------------------------------------------------------ */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: paybench --url URL --scenario create-and-pay|static\n"
            "                [--key KEY] [--duration S] [--rate PER_S | --concurrency N]\n"
            "                [--connections N] [--amount MINOR] [--currency CODE]\n"
            "                [--settle-timeout S] [--server-pid PID] [--json FILE]\n"
            "                [--channel NAME] [--method NAME]\n"
            "                [--check --data-dir DIR | --store-url URL [--paysim CHANNEL=URL]]\n"
            "\n"
            "  --url URL          create-and-pay: payd's base URL (http://127.0.0.1:8080);\n"
            "                     static: the URL to GET (http:// only)\n"
            "  --key KEY          the merchant's API key (create-and-pay)\n"
            "  --duration S       seconds of load (default 10)\n"
            "  --concurrency N    closed loop, N sessions in flight (default %d)\n"
            "  --rate PER_S       open loop, sessions started per second\n"
            "  --connections N    open loop: most sessions in flight (default %d)\n"
            "  --settle-timeout S how long to wait for payments to be final (default %d)\n"
            "  --server-pid PID   also report that process's CPU use\n"
            "  --json FILE        write the results as JSON\n"
            "  --channel NAME     create-and-pay: the channel to pay with (default sandbox)\n"
            "  --method NAME      create-and-pay: its method (default ok)\n"
            "  --check            after the run, check the money invariants with paycheck\n"
            "                     (beside paybench, or $PAYCHECK) against payd's store\n"
            "                     (--data-dir, --store-url) and the channels' journals (the\n"
            "                     data directory's sandbox, --paysim CHANNEL=URL); its last\n"
            "                     line is paybench's: check: ok | check: FAILED <counts>\n"
            "exit status: 0 ok, 1 could not run, 2 usage, 3 ran but found problems\n",
            PB_DEFAULT_CONCURRENCY, PB_DEFAULT_CONNECTIONS, PB_SETTLE_TIMEOUT_S_DEFAULT);
}

static int64_t parse_int_option(const char *name, const char *text, int64_t min, int64_t max)
{
    char *end = NULL;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max) {
        fprintf(stderr, "paybench: --%s must be an integer in %" PRId64 " ... %" PRId64 "\n",
                name, min, max);
        exit(2);
    }
    return (int64_t)value;
}

static void parse_options(int argc, char **argv, struct options *o)
{
    enum {
        OPT_CONNECTIONS = 256,
        OPT_AMOUNT,
        OPT_CURRENCY,
        OPT_SETTLE,
        OPT_SERVER_PID,
        OPT_CHANNEL,
        OPT_METHOD,
        OPT_CHECK,
        OPT_DATA_DIR,
        OPT_STORE_URL,
        OPT_PAYSIM,
    };
    static const struct option long_options[] = {
        {"url", required_argument, NULL, 'u'},
        {"key", required_argument, NULL, 'k'},
        {"duration", required_argument, NULL, 'd'},
        {"rate", required_argument, NULL, 'r'},
        {"concurrency", required_argument, NULL, 'c'},
        {"scenario", required_argument, NULL, 's'},
        {"json", required_argument, NULL, 'j'},
        {"connections", required_argument, NULL, OPT_CONNECTIONS},
        {"amount", required_argument, NULL, OPT_AMOUNT},
        {"currency", required_argument, NULL, OPT_CURRENCY},
        {"settle-timeout", required_argument, NULL, OPT_SETTLE},
        {"server-pid", required_argument, NULL, OPT_SERVER_PID},
        {"channel", required_argument, NULL, OPT_CHANNEL},
        {"method", required_argument, NULL, OPT_METHOD},
        {"check", no_argument, NULL, OPT_CHECK},
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"store-url", required_argument, NULL, OPT_STORE_URL},
        {"paysim", required_argument, NULL, OPT_PAYSIM},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->duration_s = 10;
    o->connections = PB_DEFAULT_CONNECTIONS;
    o->amount_minor = PB_DEFAULT_AMOUNT_MINOR;
    o->currency = "CNY";
    o->settle_timeout_s = PB_SETTLE_TIMEOUT_S_DEFAULT;
    o->channel = "sandbox";
    o->method = "ok";
    const char *scenario = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "u:k:d:r:c:s:j:h", long_options, NULL)) != -1) {
        switch (c) {
        case 'u':
            o->url = optarg;
            break;
        case 'k':
            o->key = optarg;
            break;
        case 'd':
            o->duration_s = parse_int_option("duration", optarg, 1, PB_DURATION_S_MAX);
            break;
        case 'r':
            o->rate_per_s = parse_int_option("rate", optarg, 1, PB_RATE_PER_S_MAX);
            break;
        case 'c':
            o->concurrency = parse_int_option("concurrency", optarg, 1, PB_SLOTS_MAX);
            break;
        case 's':
            scenario = optarg;
            break;
        case 'j':
            o->json_path = optarg;
            break;
        case OPT_CONNECTIONS:
            o->connections = parse_int_option("connections", optarg, 1, PB_SLOTS_MAX);
            break;
        case OPT_AMOUNT:
            o->amount_minor = parse_int_option("amount", optarg, 1, INT64_C(1000000000000000));
            break;
        case OPT_CURRENCY:
            o->currency = optarg;
            break;
        case OPT_SETTLE:
            o->settle_timeout_s = parse_int_option("settle-timeout", optarg, 1, 3600);
            break;
        case OPT_SERVER_PID:
            o->server_pid = (long)parse_int_option("server-pid", optarg, 1, INT32_MAX);
            break;
        case OPT_CHANNEL:
            o->channel = optarg;
            break;
        case OPT_METHOD:
            o->method = optarg;
            break;
        case OPT_CHECK:
            o->check = true;
            break;
        case OPT_DATA_DIR:
            o->data_dir = optarg;
            break;
        case OPT_STORE_URL:
            o->store_url = optarg;
            break;
        case OPT_PAYSIM:
            o->paysim = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind != argc || o->url == NULL || scenario == NULL) {
        usage(stderr);
        exit(2);
    }
    if (strcmp(scenario, "create-and-pay") == 0) {
        o->scenario = SCENARIO_CREATE_AND_PAY;
    } else if (strcmp(scenario, "static") == 0) {
        o->scenario = SCENARIO_STATIC;
    } else {
        fprintf(stderr, "paybench: unknown scenario \"%s\" (create-and-pay, static)\n", scenario);
        exit(2);
    }
    if (strlen(o->channel) > 32 || strlen(o->method) > 32 ||
        strspn(o->channel, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.") !=
            strlen(o->channel) ||
        strspn(o->method, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.") !=
            strlen(o->method)) {
        fprintf(stderr, "paybench: --channel and --method: 1 to 32 of A-Z a-z 0-9 _ - .\n");
        exit(2);
    }
    if (o->check && (o->scenario != SCENARIO_CREATE_AND_PAY || (!o->data_dir && !o->store_url))) {
        fprintf(stderr, "paybench: --check needs --scenario create-and-pay and --data-dir or"
                        " --store-url\n");
        exit(2);
    }
    if (o->rate_per_s > 0 && o->concurrency > 0) {
        fprintf(stderr, "paybench: --rate and --concurrency exclude each other\n");
        exit(2);
    }
    if (o->rate_per_s == 0 && o->concurrency == 0)
        o->concurrency = PB_DEFAULT_CONCURRENCY;
    if (strlen(o->url) >= PB_URL_CHARS_MAX - 32) {
        fprintf(stderr, "paybench: --url is too long\n");
        exit(2);
    }
    if (o->scenario == SCENARIO_CREATE_AND_PAY) {
        if (o->key == NULL || o->key[0] == '\0' || strlen(o->key) > PB_KEY_CHARS_MAX ||
            strpbrk(o->key, "\r\n") != NULL) {
            fprintf(stderr, "paybench: create-and-pay needs --key (at most %d characters)\n",
                    PB_KEY_CHARS_MAX);
            exit(2);
        }
        size_t currency_len = strlen(o->currency);
        if (currency_len != 3 || strspn(o->currency, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != 3) {
            fprintf(stderr, "paybench: --currency must be three upper-case letters\n");
            exit(2);
        }
    }
}

static void bench_init(struct bench *b, const struct options *o)
{
    memset(b, 0, sizeof(*b));
    b->opt = *o;
    b->stop_flag = &stop_requested;
    b->t_first_us = -1;
    b->t_final_us = -1;
    b->metrics_sent_us = -1;
    for (size_t k = 0; k < REQ_KIND_COUNT; k++)
        hist_init(&b->stats[k].latency);
    hist_init(&b->start_lag);

    uint8_t seed[8];
    if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
        die("getrandom failed");
    memcpy(&b->rng_state, seed, sizeof(seed));
    b->rng_state |= 1u;
    snprintf(b->run_id, sizeof(b->run_id), "%016" PRIx64, rng_next(&b->rng_state));
    snprintf(b->channel_label, sizeof(b->channel_label), "channel=\"%s\"", o->channel);
    if (o->check) {
        snprintf(b->acked_path, sizeof(b->acked_path), "/tmp/paybench-acked-XXXXXX");
        int fd = mkstemp(b->acked_path);
        if (fd < 0 || !(b->acked = fdopen(fd, "w")))
            die("cannot create a file for the acknowledged payments");
    }

    char error[PB_URL_CHARS_MAX + 128];
    if (httpc_target_parse(&b->target, o->url, error, sizeof(error)) != 0) {
        fprintf(stderr, "paybench: --url: %s\n", error);
        exit(2);
    }
    /* The URL's path without a trailing slash is the prefix of payd's paths. */
    char prefix[HTTPC_PATH_CHARS_MAX + 1];
    snprintf(prefix, sizeof(prefix), "%s", b->target.path);
    size_t prefix_len = strlen(prefix);
    while (prefix_len > 0 && prefix[prefix_len - 1] == '/')
        prefix[--prefix_len] = '\0';
    snprintf(b->path_orders, sizeof(b->path_orders), "%s/v1/orders", prefix);
    snprintf(b->path_payments, sizeof(b->path_payments), "%s/v1/payments", prefix);
    snprintf(b->path_metrics, sizeof(b->path_metrics), "%s/metrics", prefix);

    if (o->scenario == SCENARIO_CREATE_AND_PAY) {
        int n = snprintf(b->json_headers, sizeof(b->json_headers),
                         "Authorization: Bearer %s\r\nContent-Type: application/json\r\n", o->key);
        PB_ASSERT(n > 0 && (size_t)n < sizeof(b->json_headers));
    }
    /* The requests that never change, formatted once. */
    int len = httpc_request_format(b->static_request, sizeof(b->static_request), &b->target, "GET",
                                   b->target.path, "", NULL, 0);
    PB_ASSERT(len > 0);
    b->static_request_len = (size_t)len;
    len = httpc_request_format(b->metrics_request, sizeof(b->metrics_request), &b->target, "GET",
                               b->path_metrics, "", NULL, 0);
    PB_ASSERT(len > 0);
    b->metrics_request_len = (size_t)len;

    b->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (b->epoll_fd < 0)
        die("epoll_create1 failed");
    b->timeout_scan_due_us = clock_mono_us() + PB_TIMEOUT_SCAN_INTERVAL_US;
    b->slot_count = (size_t)(o->rate_per_s > 0 ? o->connections : o->concurrency);
    b->slots = xcalloc(b->slot_count, sizeof(*b->slots));
    for (size_t i = 0; i < b->slot_count; i++) {
        slot_init(b, &b->slots[i], PB_RESPONSE_BYTES_MAX);
        b->slots[i].next_idle = b->idle;
        b->idle = &b->slots[i];
    }
    slot_init(b, &b->metrics_slot, PB_METRICS_BYTES_MAX);
}

static void bench_free(struct bench *b)
{
    for (size_t i = 0; i < b->slot_count; i++)
        slot_free(&b->slots[i]);
    slot_free(&b->metrics_slot);
    free(b->slots);
    close(b->epoll_fd);
}

/* paycheck: $PAYCHECK, or beside this program. */
static void paycheck_path(char *out, size_t size)
{
    const char *env = getenv("PAYCHECK");
    if (env && *env) {
        snprintf(out, size, "%s", env);
        return;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    snprintf(out, size, "%s/paycheck", slash ? self : ".");
}

/* Runs paycheck over what this run was acknowledged; its output, whose last
 * line is check: ok | check: FAILED ..., ends paybench's. Returns its exit
 * status (0 ok, 1 violations, other: it could not check). */
static int run_check(struct bench *b)
{
    fflush(b->acked);
    char prog[PATH_MAX + 16];
    paycheck_path(prog, sizeof(prog));
    const char *argv[16];
    int n = 0;
    argv[n++] = prog;
    argv[n++] = "--acked";
    argv[n++] = b->acked_path;
    if (b->opt.data_dir) {
        argv[n++] = "--data-dir";
        argv[n++] = b->opt.data_dir;
    }
    if (b->opt.store_url) {
        argv[n++] = "--store-url";
        argv[n++] = b->opt.store_url;
    }
    if (b->opt.paysim) {
        argv[n++] = "--paysim";
        argv[n++] = b->opt.paysim;
    }
    argv[n] = NULL;
    printf("\n");
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork failed");
    if (pid == 0) {
        execv(prog, (char *const *)argv);
        fprintf(stderr, "paybench: cannot run %s: %s\n", prog, strerror(errno));
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) > 1) {
        printf("check: FAILED (paycheck could not check)\n");
        return 2;
    }
    return WEXITSTATUS(status);
}

int main(int argc, char **argv)
{
    struct options options;
    parse_options(argc, argv, &options);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction stop_action;
    memset(&stop_action, 0, sizeof(stop_action));
    stop_action.sa_handler = on_stop_signal;
    sigaction(SIGINT, &stop_action, NULL);
    sigaction(SIGTERM, &stop_action, NULL);

    struct bench *b = xcalloc(1, sizeof(*b)); /* large: histograms and sample */
    bench_init(b, &options);
    int exit_status = 1;

    if (options.scenario == SCENARIO_CREATE_AND_PAY && phase_baseline(b) != 0) {
        fprintf(stderr, "paybench: GET http://%s%s did not answer 200; is payd running?\n",
                b->target.authority, b->path_metrics);
        goto out_free;
    }
    phase_load(b);
    phase_drain(b);
    if (options.scenario == SCENARIO_CREATE_AND_PAY) {
        phase_settle(b);
        phase_verify(b);
    }
    cpu_snapshot_take(b, &b->cpu_run_end);
    exit_status = report(b);
    if (options.check) {
        int checked = run_check(b);
        if (checked != 0 && exit_status == 0)
            exit_status = checked == 1 ? 3 : 1;
    }
out_free:
    if (b->acked) {
        fclose(b->acked);
        unlink(b->acked_path);
    }
    bench_free(b);
    free(b);
    return exit_status;
}
