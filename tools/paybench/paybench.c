/*
 * paybench.c - the load generator for payd, and for a ceiling, for any
 * static HTTP server.
 *
 * One thread drives an epoll loop over paybench's own HTTP/1.1 client
 * (httpc.c, which says why it is not libcurl): each session slot owns one
 * keep-alive connection (a "lane"), reused from request to request, with one
 * request in flight on it; a scenario that sends requests at the same moment
 * gives each slot more lanes (retry 2, race --racers, refunds 2). The client
 * is kept cheap because it shares the machine's cores with the server it
 * measures, and it reports its own CPU use, so a reader can tell when the
 * client and not the server was the limit.
 *
 * Scenarios (--scenario). Every one but `static` begins a session with POST
 * /v1/orders (a merchant_order_no unique to this run) and pays the order
 * with POST /v1/payments (channel --channel, default "sandbox"; method
 * --method, default "ok"; an Idempotency-Key unique to the session):
 *   create-and-pay  only that. After the load it waits, bounded, until
 *                   every accepted payment is final, watching
 *                   payd_payments_total{channel="sandbox",...} in GET
 *                   /metrics, checks a random sample of payments one by one
 *                   with GET /v1/payments/{id}, and reports paid orders per
 *                   second end to end: payments that reached `succeeded`
 *                   divided by the time from the first request to the moment
 *                   the last one was seen succeeded.
 *   many-merchants  create-and-pay over several merchants (--key more than
 *                   once, or --keys FILE): session k is merchant k mod M's.
 *                   Reports sessions and acceptances per merchant; the
 *                   sample check also reads every sampled payment with the
 *                   next merchant's key, which must answer 404.
 *   retry           a client that retries: the payment POST is sent again,
 *                   the same bytes with the same Idempotency-Key, --retries
 *                   times: the first at once on the slot's second
 *                   connection, while the first request is in flight; the
 *                   rest one after another once the first has answered.
 *                   Every 202 must carry the same payment id and the same
 *                   body, and exactly one of them must lack
 *                   `Idempotent-Replayed: true`; a retry sent while the
 *                   first is in flight may get 409 idempotency_key_in_use;
 *                   any other answer is counted by status. Then GET
 *                   /v1/payments?order_id= must list exactly that payment.
 *   race            --racers payment POSTs for one order, each with its own
 *                   Idempotency-Key, written one after another in the same
 *                   turn of the loop on as many connections. At most one may
 *                   be accepted; the others must be refused 409
 *                   payment_in_progress (or order_already_paid, when the
 *                   winner was already final). Orders with exactly one, more
 *                   than one and no acceptance are counted, and the losers'
 *                   answers by status.
 * In retry, race and refunds a 429 or 503 (payd shedding load) is counted
 * apart from the unexpected answers: it is a refusal the contract allows.
 *   mix             the method of each session comes from --mix (default
 *                   ok=80,declined=15,error=5) in its proportions, spread
 *                   evenly (mix.h). After the settle every accepted payment
 *                   (at most PB_READBACK_MAX; above that a uniform sample) is
 *                   read back, its final status counted per method and
 *                   compared with what the method must give (ok, slow,
 *                   unknown: succeeded; declined: failed card_declined;
 *                   error: failed channel_error).
 *   refunds         create-and-pay, and a share (--refund-share, default
 *                   30 %) of the accepted payments is refunded while the load
 *                   goes on: the session asks GET /v1/payments/{id}, with a
 *                   growing pause, until the payment is final; if it
 *                   succeeded it sends, in turn from one refunded payment to
 *                   the next: one refund of a quarter of the amount; two at
 *                   once of 30 % and 40 %; one of half; two at once of half
 *                   plus one each (together more than was captured: exactly
 *                   one must be refused 400 amount_exceeds_refundable). Each
 *                   refund has its own Idempotency-Key and is a request kind
 *                   of its own (refund_create). Counted: refunds accepted
 *                   beyond the captured amount, and refunds refused although
 *                   they fitted beside the accepted ones (both must be 0).
 *                   The settle also waits for payd_refunds_total to count
 *                   every accepted refund final.
 *   static          GET the URL again and again: requests per second and
 *                   latency (the ceiling a plain web server reaches here).
 * The scenarios after many-merchants also take several keys, and spread
 * their sessions over them in the same way.
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
 * The requests after a session's first count from the moment they are sent.
 *
 * A run goes through phases: baseline (read the counters) -> load (the
 * duration) -> drain (sessions in flight finish, bounded) -> settle (wait
 * for payments, and refunds, to be final, bounded) -> verify (the sample) ->
 * report -> with --check, paycheck over the payments acknowledged.
 *
 * Latency histograms hold successful answers only (200/201 for orders, 202
 * for payments, their retries and refunds, 200 for GETs): fast error answers
 * must not make the percentiles look better. Every answer, whatever its
 * status, is counted per request kind.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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
#include "mix.h"
#include "promtext.h"
#include "tally.h"

/* Bounds. Everything the client holds is bounded by one of these. */
#define PB_SLOTS_MAX 4096                       /* sessions in flight */
#define PB_LANES_MAX 8                          /* connections of one slot (--racers) */
#define PB_LANES_TOTAL_MAX 8192                 /* connections of all slots */
#define PB_MERCHANTS_MAX 1024                   /* --key / --keys */
#define PB_URL_CHARS_MAX 1024
#define PB_PATH_CHARS_MAX (HTTPC_PATH_CHARS_MAX + 16) /* the URL's path + "/v1/payments" */
#define PB_KEY_CHARS_MAX 256
#define PB_KEYS_LINE_CHARS_MAX 1024             /* a line of --keys */
#define PB_ID_CHARS_MAX 127                     /* an order or payment id */
#define PB_REQUEST_BODY_CHARS_MAX 511
#define PB_HEADER_CHARS_MAX 511
#define PB_REQUEST_BYTES_MAX 4096               /* a whole request: line, headers, body */
#define PB_RESPONSE_BYTES_MAX (64u * 1024u)     /* kept of an API answer */
#define PB_METRICS_BYTES_MAX (16u * 1024u * 1024u)
#define PB_METRICS_SOURCES_MAX 16 /* --metrics-url given at most this often */
/* The counters read from each source. */
enum { PB_SUCCEEDED, PB_FAILED, PB_REFUNDS_SUCCEEDED, PB_REFUNDS_FAILED, PB_COUNTERS };
#define PB_HTTP_STATUS_LIMIT 600                /* status_count index; 0 = no answer */
#define PB_SAMPLE_SIZE 100                      /* payments checked one by one */
#define PB_READBACK_MAX 10000                   /* mix: payments read back */
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
#define PB_RETRIES_DEFAULT 2
#define PB_RETRIES_MAX 16
#define PB_RACERS_DEFAULT 3
#define PB_REPLAY_BODY_BYTES_MAX 1024           /* retry: the first 202's body, kept to compare */
#define PB_REFUND_SHARE_PCT_DEFAULT 30
#define PB_REFUNDS_PER_PAYMENT_MAX 2            /* lanes of a refunds slot */
#define PB_REFUND_AMOUNT_MIN 4                  /* minor units: room for partial refunds */
#define PB_POLL_FIRST_US 10000                  /* refunds: first pause before asking */
#define PB_POLL_MAX_US 500000                   /* ... doubling up to this */
#define PB_POLL_TIMEOUT_US (30 * 1000000)       /* ... giving up after this */
#define PB_LABEL_CHARS_MAX 63                   /* "409 payment_in_progress" */

#define PB_DEFAULT_CONCURRENCY 32
#define PB_DEFAULT_CONNECTIONS 256
#define PB_DEFAULT_AMOUNT_MINOR 100
#define PB_DEFAULT_MIX "ok=80,declined=15,error=5"
#define PB_METRIC_PAYMENTS "payd_payments_total"
#define PB_METRIC_REFUNDS "payd_refunds_total"

_Static_assert(PB_REFUNDS_PER_PAYMENT_MAX <= PB_LANES_MAX, "a refunds slot has a lane a refund");
_Static_assert(PB_LABEL_CHARS_MAX == TALLY_LABEL_CHARS_MAX, "labels fit a tally");

enum scenario {
    SCENARIO_CREATE_AND_PAY,
    SCENARIO_STATIC,
    SCENARIO_MANY_MERCHANTS,
    SCENARIO_RETRY,
    SCENARIO_RACE,
    SCENARIO_MIX,
    SCENARIO_REFUNDS,
    SCENARIO_COUNT,
};

static const char *const scenario_name[SCENARIO_COUNT] = {
    [SCENARIO_CREATE_AND_PAY] = "create-and-pay",
    [SCENARIO_STATIC] = "static",
    [SCENARIO_MANY_MERCHANTS] = "many-merchants",
    [SCENARIO_RETRY] = "retry",
    [SCENARIO_RACE] = "race",
    [SCENARIO_MIX] = "mix",
    [SCENARIO_REFUNDS] = "refunds",
};

/* The kinds of request, each with its own counts and latency histogram.
 * The first five are in every --json file, as they were before the other
 * scenarios (scripts read them); the rest appear when they were used. */
enum req_kind {
    REQ_ORDER_CREATE,
    REQ_PAYMENT_ACCEPT,
    REQ_STATIC_GET,
    REQ_PAYMENT_GET,
    REQ_METRICS_GET,
    REQ_PAYMENT_RETRY,
    REQ_PAYMENT_LIST,
    REQ_PAYMENT_POLL,
    REQ_REFUND_CREATE,
    REQ_KIND_COUNT,
};

#define REQ_KINDS_ALWAYS_REPORTED (REQ_METRICS_GET + 1)

static const char *const req_kind_name[REQ_KIND_COUNT] = {
    [REQ_ORDER_CREATE] = "order_create",
    [REQ_PAYMENT_ACCEPT] = "payment_accept",
    [REQ_STATIC_GET] = "static_get",
    [REQ_PAYMENT_GET] = "payment_get",
    [REQ_METRICS_GET] = "metrics_get",
    [REQ_PAYMENT_RETRY] = "payment_retry",
    [REQ_PAYMENT_LIST] = "payment_list",
    [REQ_PAYMENT_POLL] = "payment_poll",
    [REQ_REFUND_CREATE] = "refund_create",
};

/* Percentiles reported, in hundred-thousandths. */
static const struct {
    const char *name;
    uint32_t per_100k;
} percentiles[] = {
    {"p50", 50000}, {"p90", 90000}, {"p99", 99000}, {"p99_9", 99900},
};

/* What a payment of each sandbox (and paysim) method must end as, in the
 * words of the mix report: "succeeded" or "failed FAILURE_CODE". */
static const struct {
    const char *method;
    const char *outcome;
} expected_outcomes[] = {
    {"ok", "succeeded"},
    {"slow", "succeeded"},
    {"unknown", "succeeded"},
    {"declined", "failed card_declined"},
    {"error", "failed channel_error"},
};

struct req_stats {
    uint64_t status_count[PB_HTTP_STATUS_LIMIT]; /* [0]: transport error, no answer */
    uint64_t connects;                           /* new connections the requests opened */
    uint64_t bad_body;                           /* a success answer we could not read */
    struct hist latency;                         /* successful answers only */
};

/*
 * What a slot is doing. A session walks IDLE -> ORDER, then by scenario
 *   PAYMENT -> IDLE                                (create-and-pay, many-merchants, mix)
 *   PAYMENT -> [POLL_WAIT <-> POLL -> REFUND] -> IDLE            (refunds)
 *   RETRY -> LIST -> IDLE                                         (retry)
 *   RACE -> IDLE                                                  (race)
 * or IDLE -> STATIC -> IDLE; any of them may end in IDLE early (a failed
 * answer, the drain's bound). Between runs of the load an idle slot serves
 * the sample check (VERIFY); the metrics slot alone goes to METRICS.
 * slot_move() is the one place the state changes, and refuses any move
 * that is not in slot_moves[].
 */
enum slot_state {
    SLOT_IDLE,
    SLOT_ORDER,     /* POST /v1/orders in flight */
    SLOT_PAYMENT,   /* POST /v1/payments in flight */
    SLOT_RETRY,     /* the payment and its retries */
    SLOT_LIST,      /* GET /v1/payments?order_id= */
    SLOT_RACE,      /* the racers' payments */
    SLOT_POLL_WAIT, /* waiting to ask again whether the payment is final */
    SLOT_POLL,      /* GET /v1/payments/{id} */
    SLOT_REFUND,    /* one or two POST /v1/refunds */
    SLOT_STATIC,
    SLOT_VERIFY,
    SLOT_METRICS,
    SLOT_STATE_COUNT,
};

#define SLOT_BIT(state) (1u << (state))

static const uint32_t slot_moves[SLOT_STATE_COUNT] = {
    [SLOT_IDLE] = SLOT_BIT(SLOT_ORDER) | SLOT_BIT(SLOT_STATIC) | SLOT_BIT(SLOT_VERIFY) |
                  SLOT_BIT(SLOT_METRICS),
    [SLOT_ORDER] = SLOT_BIT(SLOT_IDLE) | SLOT_BIT(SLOT_PAYMENT) | SLOT_BIT(SLOT_RETRY) |
                   SLOT_BIT(SLOT_RACE),
    [SLOT_PAYMENT] = SLOT_BIT(SLOT_IDLE) | SLOT_BIT(SLOT_POLL_WAIT),
    [SLOT_RETRY] = SLOT_BIT(SLOT_IDLE) | SLOT_BIT(SLOT_LIST),
    [SLOT_LIST] = SLOT_BIT(SLOT_IDLE),
    [SLOT_RACE] = SLOT_BIT(SLOT_IDLE),
    [SLOT_POLL_WAIT] = SLOT_BIT(SLOT_IDLE) | SLOT_BIT(SLOT_POLL),
    [SLOT_POLL] = SLOT_BIT(SLOT_IDLE) | SLOT_BIT(SLOT_POLL_WAIT) | SLOT_BIT(SLOT_REFUND),
    [SLOT_REFUND] = SLOT_BIT(SLOT_IDLE),
    [SLOT_STATIC] = SLOT_BIT(SLOT_IDLE),
    [SLOT_VERIFY] = SLOT_BIT(SLOT_IDLE),
    [SLOT_METRICS] = SLOT_BIT(SLOT_IDLE),
};

_Static_assert(SLOT_STATE_COUNT <= 32, "slot_moves holds a bit per state");

struct bench;
struct slot;

/*
 * One connection of a slot, kept for the whole run (so it stays open from
 * request to request), with at most one request in flight. The connection's
 * owner pointer is the lane.
 */
struct lane {
    struct slot *slot;
    struct httpc_conn *conn;            /* owned */
    bool busy;                          /* a request is in flight */
    enum req_kind kind;                 /* of the request in flight (or the last one) */
    bool beside_other;                  /* retry: sent while another lane's request was in flight */
    int64_t sent_us;                    /* latency counts from here (due time in open loop) */
    size_t request_len;
    char request[PB_REQUEST_BYTES_MAX]; /* the bytes of a formatted request in flight */
};

/* What one session knows; zeroed when it starts. */
struct session {
    uint64_t no;
    uint32_t merchant;     /* index into the keys */
    uint32_t method;       /* index into the mix */
    uint32_t pending;      /* retry, race, refunds: answers still to come */
    uint32_t accepted;     /* payments (retry, race) or refunds accepted: 202s */
    uint32_t retries_sent; /* retry: the retries sent so far, of --retries */
    uint32_t unmarked_202; /* retry: 202s without Idempotent-Replayed: true */
    bool no_answer;        /* retry: a request of the session got no answer */
    uint32_t refund_count; /* refunds: 1 or 2 */
    int64_t refund_amount_minor[PB_REFUNDS_PER_PAYMENT_MAX];
    bool refund_refused[PB_REFUNDS_PER_PAYMENT_MAX]; /* 400 amount_exceeds_refundable */
    int64_t refund_accepted_minor;
    int64_t poll_delay_us;
    int64_t poll_deadline_us;
    char order_id[PB_ID_CHARS_MAX + 1];
    char payment_id[PB_ID_CHARS_MAX + 1]; /* the first one accepted */
    size_t first_body_len;                /* retry: of the first 202, kept in first_body */
    char first_body[PB_REPLAY_BODY_BYTES_MAX];
};

/* A session slot: one session at a time on its lanes. */
struct slot {
    struct bench *bench;
    enum slot_state state;
    struct lane *lanes;    /* owned, lane_count of them */
    size_t lane_count;
    struct slot *next_idle;
    size_t verify_index;   /* SLOT_VERIFY: which read of the sample */
    int64_t wake_us;       /* SLOT_POLL_WAIT: when to ask again */
    struct session ses;
};

struct options {
    const char *url;
    char *keys[PB_MERCHANTS_MAX]; /* owned copies, key_count of them */
    size_t key_count;
    const char *json_path;
    const char *events_path; /* --events */
    enum scenario scenario;
    int64_t duration_s;
    int64_t rate_per_s;   /* > 0: open loop */
    int64_t concurrency;  /* closed loop: sessions in flight */
    int64_t connections;  /* open loop: most sessions in flight */
    int64_t amount_minor;
    const char *currency;
    int64_t settle_timeout_s;
    long server_pid;      /* > 0: report that process's CPU too */
    const char *channel;  /* the channel and method to pay with */
    const char *method;
    struct mix mix;       /* mix: from --mix; otherwise --method alone */
    int64_t retries;      /* retry */
    int64_t racers;       /* race */
    int64_t refund_share_pct; /* refunds */
    bool check;           /* run paycheck at the end */
    const char *data_dir; /* for paycheck: payd's data directory */
    const char *store_url; /* for paycheck: payd's PostgreSQL */
    const char *paysim;   /* for paycheck: CHANNEL=URL of a paysim */
    const char *metrics_urls[PB_METRICS_SOURCES_MAX]; /* --metrics-url; none: --url's */
    size_t metrics_url_count;
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

/* A payment kept for the check at the end, with whose it is. */
struct sample_entry {
    char id[PB_ID_CHARS_MAX + 1];
    uint32_t merchant;
    uint32_t method;
};

struct merchant_counts {
    uint64_t sessions;
    uint64_t accepted;
};

struct method_counts {
    uint64_t sessions;
    uint64_t accepted;
    struct tally rejected; /* answers to the payment POST other than 202 */
    uint64_t read_back;    /* mix: read back after the settle */
    struct tally outcomes; /* ... their final statuses */
    uint64_t unexpected;   /* ... not what the method must give */
};

/* many-merchants: sampled payments read with another merchant's key. */
struct cross_counts {
    uint64_t reads;
    uint64_t hidden;  /* 404, as it must */
    uint64_t visible; /* 200: another merchant's payment shown */
    uint64_t other;
};

struct retry_counts {
    uint64_t sent;              /* retries sent */
    uint64_t answered;
    uint64_t replayed;          /* answered 202 with the session's payment */
    uint64_t id_mismatch;       /* answered 202 with another payment */
    uint64_t body_differs;      /* a 202 whose body is not the first 202's */
    uint64_t marks_wrong;       /* sessions whose 202s did not have exactly one unmarked */
    uint64_t in_use;            /* 409 idempotency_key_in_use while the other was in flight */
    uint64_t shed;              /* 429 or 503 to a retry */
    uint64_t unexpected;        /* any other answer to a retry */
    struct tally not_replayed;  /* retries not answered 202, by status and code */
    uint64_t lists;
    uint64_t list_not_one;      /* the order's payments are not exactly the one */
    uint64_t list_errors;       /* the list could not be read */
};

struct race_counts {
    uint64_t orders;
    uint64_t one;                /* exactly one racer accepted */
    uint64_t several;            /* more than one accepted */
    uint64_t none;
    uint64_t losers;
    uint64_t shed_losers;        /* refused 429 or 503 */
    uint64_t unexpected_losers;  /* refused otherwise than 409 payment_in_progress or
                                    order_already_paid */
    struct tally loser_answers;
};

struct refund_counts {
    uint64_t payments_seen;      /* accepted payments, of which a share is chosen */
    uint64_t chosen;
    uint64_t polls_succeeded;    /* chosen payments that reached succeeded */
    uint64_t skipped_failed;     /* ... that failed */
    uint64_t skipped_not_final;  /* ... not final within PB_POLL_TIMEOUT_US */
    uint64_t poll_errors;
    uint64_t plans[4];           /* refunded payments by plan (see refund_start) */
    uint64_t requests;
    uint64_t accepted;           /* 202 */
    int64_t accepted_minor;
    uint64_t refused_exceeds;    /* 400 amount_exceeds_refundable */
    uint64_t shed;               /* 429 or 503 */
    uint64_t unexpected;         /* any other answer */
    uint64_t over_accepted;      /* payments whose accepted refunds exceed the amount */
    uint64_t wrongly_refused;    /* refused although it fitted beside the accepted ones */
    struct tally answers;
    /* payd_refunds_total, as deltas from the baseline */
    uint64_t succeeded_base;
    uint64_t failed_base;
    uint64_t succeeded_now;
    uint64_t failed_now;
    int64_t t_final_us;          /* -1: refunds never all final */
};

struct bench {
    struct options opt;
    struct httpc_target target; /* from --url; the connections borrow it */
    int epoll_fd;
    int64_t timeout_scan_due_us;
    volatile sig_atomic_t *stop_flag;

    struct slot *slots;
    size_t slot_count;
    size_t lanes_per_slot;
    struct slot *idle;
    size_t sessions_in_flight;
    /* The payments counters are the sum over the metrics sources: --url's
     * /metrics, or each --metrics-url's (the worker instances of a
     * cluster, whose api instances make no outcomes). A reading counts
     * when every source answered it. */
    struct httpc_target metrics_targets[PB_METRICS_SOURCES_MAX];
    struct slot metrics_slots[PB_METRICS_SOURCES_MAX];
    struct metrics_reading {
        uint64_t count[PB_COUNTERS]; /* as read, plus what the source had before it restarted */
        uint64_t last[PB_COUNTERS];  /* as last read */
        uint64_t restarted[PB_COUNTERS];
        bool ok;
    } metrics_readings[PB_METRICS_SOURCES_MAX];
    size_t metrics_sources;
    size_t metrics_pending;     /* sources yet to answer the reading in flight */
    int64_t metrics_round_us;   /* when the reading in flight was sent */
    bool metrics_in_flight;
    int64_t metrics_due_us;
    struct slot **wait_heap;    /* SLOT_POLL_WAIT slots, a min-heap by wake_us */
    size_t wait_len;

    char path_orders[PB_PATH_CHARS_MAX];
    char path_payments[PB_PATH_CHARS_MAX];
    char path_refunds[PB_PATH_CHARS_MAX];
    char path_metrics[PB_PATH_CHARS_MAX];
    char (*merchant_headers)[PB_HEADER_CHARS_MAX + 1]; /* header lines of API requests, per key */
    char static_request[PB_REQUEST_BYTES_MAX];  /* the same bytes for every static GET */
    size_t static_request_len;
    char metrics_requests[PB_METRICS_SOURCES_MAX][PB_REQUEST_BYTES_MAX];
    size_t metrics_request_lens[PB_METRICS_SOURCES_MAX];
    char run_id[17];
    char channel_label[PB_ID_CHARS_MAX + 16]; /* channel="NAME" */
    FILE *events;       /* --events: one line per order and payment answer */
    FILE *acked;        /* --check: the ids of payments answered 202 */
    char acked_path[64];
    uint64_t rng_state;
    struct mix mix;     /* the methods handed to sessions (its round robin moves) */

    struct req_stats stats[REQ_KIND_COUNT];
    bool accepting_sessions;
    uint64_t sessions_started;
    uint64_t sessions_paid;   /* payment scenarios: reached a 202; static: a 200 */
    uint64_t sessions_failed;
    uint64_t sessions_aborted; /* still in flight when the drain timed out */
    uint64_t payments_accepted;
    uint64_t payments_not_processing; /* 202 whose body did not say "processing" */
    struct merchant_counts *merchants; /* key_count of them */
    struct method_counts methods[MIX_METHODS_MAX];
    struct retry_counts retry;
    struct race_counts race;
    struct refund_counts refund;
    struct cross_counts cross;

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

    /* The sample checked at the end: PB_SAMPLE_SIZE payments, or for mix up
     * to PB_READBACK_MAX; each read once, and for many-merchants once more
     * with another merchant's key (verify_reads). */
    struct sample_entry *sample; /* owned, sample_cap of them */
    size_t sample_cap;
    size_t sample_len;
    size_t verify_reads;
    size_t verify_done;
    size_t verify_succeeded;
    size_t verify_final;     /* read back as succeeded or failed */
    size_t verify_mismatch_shown;
    size_t transport_errors_shown;
    size_t findings_shown;

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

static bool scenario_pays(enum scenario scenario)
{
    return scenario != SCENARIO_STATIC;
}

/* Connections each slot needs. */
static size_t scenario_lanes(const struct options *o)
{
    switch (o->scenario) {
    case SCENARIO_RETRY:
        return 2;
    case SCENARIO_RACE:
        return (size_t)o->racers;
    case SCENARIO_REFUNDS:
        return PB_REFUNDS_PER_PAYMENT_MAX;
    case SCENARIO_CREATE_AND_PAY:
    case SCENARIO_STATIC:
    case SCENARIO_MANY_MERCHANTS:
    case SCENARIO_MIX:
        return 1;
    case SCENARIO_COUNT:
    default:
        PB_ASSERT(!"unknown scenario");
        return 1;
    }
}

static int64_t min_i64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int64_t max_i64(int64_t a, int64_t b)
{
    return a > b ? a : b;
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

static void on_transfer_done(struct bench *b, struct lane *l, int rc);

static void slot_init(struct bench *b, struct slot *s, const struct httpc_target *target,
                      size_t lane_count, size_t response_limit)
{
    PB_ASSERT(lane_count >= 1 && lane_count <= PB_LANES_MAX);
    memset(s, 0, sizeof(*s));
    s->bench = b;
    s->state = SLOT_IDLE;
    s->lanes = xcalloc(lane_count, sizeof(*s->lanes));
    s->lane_count = lane_count;
    const struct httpc_limits limits = {
        .body_bytes_max = response_limit,
        .connect_timeout_us = PB_CONNECT_TIMEOUT_US,
        .request_timeout_us = PB_REQUEST_TIMEOUT_US,
    };
    for (size_t i = 0; i < lane_count; i++) {
        struct lane *l = &s->lanes[i];
        l->slot = s;
        l->conn = httpc_conn_new(target, b->epoll_fd, &limits, l);
    }
}

static void slot_free(struct slot *s)
{
    for (size_t i = 0; i < s->lane_count; i++)
        httpc_conn_free(s->lanes[i].conn);
    free(s->lanes);
    memset(s, 0, sizeof(*s));
}

/* The one place a slot's state changes; a move not in slot_moves[] is a bug. */
static void slot_move(struct slot *s, enum slot_state to)
{
    PB_ASSERT((unsigned)s->state < SLOT_STATE_COUNT && (unsigned)to < SLOT_STATE_COUNT);
    PB_ASSERT((slot_moves[s->state] & SLOT_BIT(to)) != 0);
    s->state = to;
}

/* Whether the slot's state belongs to a session (and not to the sample
 * check or the metrics). */
static bool slot_in_session(enum slot_state state)
{
    switch (state) {
    case SLOT_ORDER:
    case SLOT_PAYMENT:
    case SLOT_RETRY:
    case SLOT_LIST:
    case SLOT_RACE:
    case SLOT_POLL_WAIT:
    case SLOT_POLL:
    case SLOT_REFUND:
    case SLOT_STATIC:
        return true;
    case SLOT_IDLE:
    case SLOT_VERIFY:
    case SLOT_METRICS:
        return false;
    case SLOT_STATE_COUNT:
    default:
        PB_ASSERT(!"unknown slot state");
        return false;
    }
}

static bool slot_lanes_idle(const struct slot *s)
{
    for (size_t i = 0; i < s->lane_count; i++)
        if (s->lanes[i].busy)
            return false;
    return true;
}

/*
 * Starts sending request[0 .. len) on the lane's connection; the answer
 * counts under `kind`, its latency from sent_us. The bytes must stay
 * unchanged until the request ends (l->request, or one of the bench's fixed
 * requests). A request that fails at once ends here, through
 * on_transfer_done(), like any other: a caller that sends several requests
 * must expect the session to move on before the last is sent.
 */
static void lane_issue(struct bench *b, struct lane *l, enum req_kind kind, const char *request,
                       size_t len, int64_t sent_us)
{
    PB_ASSERT(!l->busy);
    l->busy = true;
    l->kind = kind;
    l->sent_us = sent_us;
    int rc = httpc_conn_send(l->conn, request, len);
    if (rc != HTTPC_AGAIN)
        on_transfer_done(b, l, rc);
}

/* Formats a request into l->request without sending it; `body` NULL for none. */
static void lane_format(struct bench *b, struct lane *l, const char *method, const char *path,
                        const char *header_lines, const char *body, size_t body_len)
{
    int len = httpc_request_format(l->request, sizeof(l->request), &b->target, method, path,
                                   header_lines, body, body_len);
    PB_ASSERT(len > 0); /* every part is bounded well below PB_REQUEST_BYTES_MAX */
    l->request_len = (size_t)len;
}

/* Formats a request into l->request and issues it. */
static void lane_request(struct bench *b, struct lane *l, enum req_kind kind, const char *method,
                         const char *path, const char *header_lines, const char *body,
                         size_t body_len, int64_t sent_us)
{
    lane_format(b, l, method, path, header_lines, body, body_len);
    lane_issue(b, l, kind, l->request, l->request_len, sent_us);
}

/* The header lines of API requests with the key of merchant m. */
static const char *merchant_headers(const struct bench *b, uint32_t m)
{
    PB_ASSERT(m < b->opt.key_count);
    return b->merchant_headers[m];
}

/* ---- waiting sessions -------------------------------------------------- */

/*
 * Sessions that wait (refunds: before asking again whether their payment is
 * final) sit in a binary min-heap by wake time, at most one entry per slot;
 * the loop wakes the due ones before it waits for sockets.
 */
static void wait_push(struct bench *b, struct slot *s, int64_t wake_us)
{
    PB_ASSERT(b->wait_len < b->slot_count && s->state == SLOT_POLL_WAIT);
    s->wake_us = wake_us;
    size_t i = b->wait_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (b->wait_heap[parent]->wake_us <= wake_us)
            break;
        b->wait_heap[i] = b->wait_heap[parent];
        i = parent;
    }
    b->wait_heap[i] = s;
}

static struct slot *wait_pop(struct bench *b)
{
    PB_ASSERT(b->wait_len > 0);
    struct slot *top = b->wait_heap[0];
    struct slot *last = b->wait_heap[--b->wait_len];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= b->wait_len)
            break;
        if (child + 1 < b->wait_len &&
            b->wait_heap[child + 1]->wake_us < b->wait_heap[child]->wake_us)
            child++;
        if (last->wake_us <= b->wait_heap[child]->wake_us)
            break;
        b->wait_heap[i] = b->wait_heap[child];
        i = child;
    }
    if (b->wait_len > 0)
        b->wait_heap[i] = last;
    return top;
}

static int64_t wait_next_us(const struct bench *b)
{
    return b->wait_len > 0 ? b->wait_heap[0]->wake_us : INT64_MAX;
}

/* ---- answers ----------------------------------------------------------- */

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
 * Two ways, the same contract: scan_object_answer() for the answers of the
 * sessions (jsonscan: no tree, no allocation), parse_object_answer() with
 * jansson for the sample read back at the end, so that the check does not
 * rest on the scanner; it also copies `failure.code`, when failure_out (32
 * bytes) is not NULL ("" when there is none).
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

static int parse_object_answer(const struct httpc_response *r, char *id_out, char *status_out,
                               char *failure_out)
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
    if (failure_out != NULL) {
        const char *code =
            json_string_value(json_object_get(json_object_get(root, "failure"), "code"));
        snprintf(failure_out, 32, "%s", code != NULL ? code : "");
    }
    rc = 0;
out_decref:
    json_decref(root);
    return rc;
}

/* Copies error.code of an error answer into out[0 .. cap); "" when there
 * is none (or it is not a plain string). */
static void answer_error_code(const struct httpc_response *r, char *out, size_t cap)
{
    const char *error;
    size_t error_len;
    const char *code;
    size_t code_len;
    out[0] = '\0';
    if (r->body_truncated ||
        jsonscan_member(r->body, r->body_len, "error", &error, &error_len) != 0 ||
        jsonscan_string_member(error, error_len, "code", &code, &code_len) != 0)
        return;
    snprintf(out, cap, "%.*s", (int)code_len, code);
}

/* The words an answer is counted under: "no answer", "202", "409
 * payment_in_progress" (status and error code); out holds
 * PB_LABEL_CHARS_MAX + 1 bytes. */
static void answer_label(long status, const struct httpc_response *r, char *out)
{
    if (status == 0) {
        snprintf(out, PB_LABEL_CHARS_MAX + 1, "no answer");
        return;
    }
    char code[PB_LABEL_CHARS_MAX + 1] = "";
    if (status >= 300)
        answer_error_code(r, code, sizeof(code));
    snprintf(out, PB_LABEL_CHARS_MAX + 1, "%ld%s%.48s", status, code[0] != '\0' ? " " : "", code);
}

/* Whether the answer is payd shedding load (429 over a rate limit, 503
 * overloaded or a channel down): a refusal that says nothing about the
 * scenario's correctness, counted apart from the unexpected ones. */
static bool answer_is_shed(long status)
{
    return status == 429 || status == 503;
}

/* Whether the answer has the error code `code`. */
static bool answer_code_is(const struct httpc_response *r, const char *code)
{
    char have[PB_LABEL_CHARS_MAX + 1];
    answer_error_code(r, have, sizeof(have));
    return strcmp(have, code) == 0;
}

/* Whether the answer's head has header `name` with value `value` (both
 * compared ignoring case). */
static bool answer_header_is(const struct httpc_response *r, const char *name, const char *value)
{
    const char *end = r->head + r->head_len;
    const char *line = r->head_len > 0 ? memchr(r->head, '\n', r->head_len) : NULL;
    size_t name_len = strlen(name);
    size_t value_len = strlen(value);
    while (line != NULL && ++line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            break;
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon != NULL && (size_t)(colon - line) == name_len &&
            strncasecmp(line, name, name_len) == 0) {
            const char *v = colon + 1;
            const char *v_end = eol;
            while (v < v_end && (*v == ' ' || *v == '\t'))
                v++;
            while (v_end > v && (v_end[-1] == '\r' || v_end[-1] == ' ' || v_end[-1] == '\t'))
                v_end--;
            return (size_t)(v_end - v) == value_len && strncasecmp(v, value, value_len) == 0;
        }
        line = eol;
    }
    return false;
}

/* Prints one finding (a violation a scenario counts) to stderr, at most
 * PB_MISMATCH_SHOWN_MAX of them in a run. */
static void finding(struct bench *b, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void finding(struct bench *b, const char *format, ...)
{
    if (b->findings_shown >= PB_MISMATCH_SHOWN_MAX)
        return;
    b->findings_shown++;
    va_list ap;
    va_start(ap, format);
    fputs("paybench: ", stderr);
    vfprintf(stderr, format, ap);
    fputc('\n', stderr);
    va_end(ap);
}
/* ---- sessions ---------------------------------------------------------- */

static void session_end(struct bench *b, struct slot *s, bool paid)
{
    PB_ASSERT(slot_lanes_idle(s));
    if (paid)
        b->sessions_paid++;
    else
        b->sessions_failed++;
    slot_move(s, SLOT_IDLE);
    s->next_idle = b->idle;
    b->idle = s;
    PB_ASSERT(b->sessions_in_flight > 0);
    b->sessions_in_flight--;
}

/* Whether the n-th of a series is chosen when pct in 100 are: exactly that
 * share of every hundred, spread evenly (no randomness, so a short run has
 * its share too). */
static bool share_pick(uint64_t n, int64_t pct)
{
    return ((n + 1) * (uint64_t)pct) / 100u > (n * (uint64_t)pct) / 100u;
}

/* Starts a new session on an idle slot; its first request counts from due_us. */
static void session_start(struct bench *b, int64_t due_us)
{
    struct slot *s = b->idle;
    PB_ASSERT(s != NULL && s->state == SLOT_IDLE);
    b->idle = s->next_idle;
    s->next_idle = NULL;
    memset(&s->ses, 0, offsetof(struct session, first_body));
    s->ses.no = b->sessions_started++;
    b->sessions_in_flight++;
    if (b->t_first_us < 0)
        b->t_first_us = clock_mono_us();

    if (b->opt.scenario == SCENARIO_STATIC) {
        slot_move(s, SLOT_STATIC);
        lane_issue(b, &s->lanes[0], REQ_STATIC_GET, b->static_request, b->static_request_len,
                   due_us);
        return;
    }
    s->ses.merchant = (uint32_t)(s->ses.no % b->opt.key_count);
    s->ses.method = (uint32_t)mix_next(&b->mix);
    b->merchants[s->ses.merchant].sessions++;
    b->methods[s->ses.method].sessions++;
    slot_move(s, SLOT_ORDER);
    char body[PB_REQUEST_BODY_CHARS_MAX + 1];
    int n = snprintf(body, sizeof(body),
                     "{\"merchant_order_no\":\"pb-%s-%" PRIu64 "\",\"amount\":%" PRId64
                     ",\"currency\":\"%s\",\"description\":\"paybench\"}",
                     b->run_id, s->ses.no, b->opt.amount_minor, b->opt.currency);
    PB_ASSERT(n > 0 && (size_t)n < sizeof(body));
    lane_request(b, &s->lanes[0], REQ_ORDER_CREATE, "POST", b->path_orders,
                 merchant_headers(b, s->ses.merchant), body, (size_t)n, due_us);
}

/*
 * Formats the session's payment POST into lane l: its order, --channel, the
 * session's method, and an Idempotency-Key unique to the session
 * (pb-RUN-pay-N), or for a racer to the racer (pb-RUN-race-N-I).
 */
static void payment_format(struct bench *b, struct slot *s, struct lane *l, int racer)
{
    char body[PB_REQUEST_BODY_CHARS_MAX + 1];
    int n = snprintf(body, sizeof(body),
                     "{\"order_id\":\"%s\",\"channel\":\"%s\",\"method\":\"%s\"}", s->ses.order_id,
                     b->opt.channel, b->mix.method[s->ses.method].name);
    PB_ASSERT(n > 0 && (size_t)n < sizeof(body));
    char headers[2 * PB_HEADER_CHARS_MAX + 1];
    int headers_len;
    if (racer < 0)
        headers_len = snprintf(headers, sizeof(headers),
                               "%sIdempotency-Key: pb-%s-pay-%" PRIu64 "\r\n",
                               merchant_headers(b, s->ses.merchant), b->run_id, s->ses.no);
    else
        headers_len = snprintf(headers, sizeof(headers),
                               "%sIdempotency-Key: pb-%s-race-%" PRIu64 "-%d\r\n",
                               merchant_headers(b, s->ses.merchant), b->run_id, s->ses.no, racer);
    PB_ASSERT(headers_len > 0 && (size_t)headers_len < sizeof(headers));
    lane_format(b, l, "POST", b->path_payments, headers, body, (size_t)n);
}

static void sample_offer(struct bench *b, const struct slot *s, const char *payment_id)
{
    /* Reservoir sampling: every accepted payment is equally likely to be
     * in the sample. payments_accepted already counts this one. */
    struct sample_entry *e = NULL;
    if (b->sample_len < b->sample_cap) {
        e = &b->sample[b->sample_len++];
    } else {
        uint64_t pick = rng_next(&b->rng_state) % b->payments_accepted;
        if (pick < b->sample_cap)
            e = &b->sample[pick];
    }
    if (e == NULL)
        return;
    snprintf(e->id, sizeof(e->id), "%s", payment_id);
    e->merchant = s->ses.merchant;
    e->method = s->ses.method;
}

/*
 * A 202 for a payment: counts it, offers it to the sample and, with
 * --check, writes it to the list of acknowledged payments. Returns 0 with
 * the id in id_out (PB_ID_CHARS_MAX + 1 bytes), or -1 when the answer
 * cannot be read (counted as an unreadable body of `kind`).
 */
static int payment_accepted(struct bench *b, struct slot *s, const struct httpc_response *r,
                            enum req_kind kind, char *id_out)
{
    char payment_status[32];
    b->payments_accepted++;
    b->merchants[s->ses.merchant].accepted++;
    b->methods[s->ses.method].accepted++;
    if (scan_object_answer(r, id_out, payment_status) != 0) {
        b->stats[kind].bad_body++;
        return -1;
    }
    if (strcmp(payment_status, "processing") != 0)
        b->payments_not_processing++;
    sample_offer(b, s, id_out);
    if (b->acked)
        fprintf(b->acked, "%s\n", id_out);
    return 0;
}

/* The order exists: pay it (create-and-pay, many-merchants, mix, refunds). */
static void session_pay(struct bench *b, struct slot *s, int64_t now_us)
{
    slot_move(s, SLOT_PAYMENT);
    struct lane *l = &s->lanes[0];
    payment_format(b, s, l, -1);
    lane_issue(b, l, REQ_PAYMENT_ACCEPT, l->request, l->request_len, now_us);
}

/* retry: the payment on lane 0 and, at once, the same bytes on lane 1. */
static void retry_start(struct bench *b, struct slot *s, int64_t now_us)
{
    slot_move(s, SLOT_RETRY);
    struct lane *first = &s->lanes[0];
    struct lane *twin = &s->lanes[1];
    payment_format(b, s, first, -1);
    memcpy(twin->request, first->request, first->request_len);
    twin->request_len = first->request_len;
    s->ses.pending = 2; /* both are counted before either can end */
    s->ses.retries_sent = 1;
    b->retry.sent++;
    first->beside_other = true;
    twin->beside_other = true;
    lane_issue(b, first, REQ_PAYMENT_ACCEPT, first->request, first->request_len, now_us);
    lane_issue(b, twin, REQ_PAYMENT_RETRY, twin->request, twin->request_len, now_us);
}

/* race: every racer's request formatted first, then all written in one go. */
static void race_start(struct bench *b, struct slot *s, int64_t now_us)
{
    slot_move(s, SLOT_RACE);
    for (size_t i = 0; i < s->lane_count; i++)
        payment_format(b, s, &s->lanes[i], (int)i);
    s->ses.pending = (uint32_t)s->lane_count;
    for (size_t i = 0; i < s->lane_count; i++)
        lane_issue(b, &s->lanes[i], REQ_PAYMENT_ACCEPT, s->lanes[i].request,
                   s->lanes[i].request_len, now_us);
}

/* refunds: waits delay_us before asking whether the payment is final. */
static void poll_wait(struct bench *b, struct slot *s, int64_t now_us, int64_t delay_us)
{
    slot_move(s, SLOT_POLL_WAIT);
    s->ses.poll_delay_us = delay_us;
    wait_push(b, s, now_us + delay_us);
}

static void poll_send(struct bench *b, struct slot *s, int64_t now_us)
{
    slot_move(s, SLOT_POLL);
    char path[PB_PATH_CHARS_MAX + PB_ID_CHARS_MAX + 2];
    snprintf(path, sizeof(path), "%s/%s", b->path_payments, s->ses.payment_id);
    lane_request(b, &s->lanes[0], REQ_PAYMENT_POLL, "GET", path,
                 merchant_headers(b, s->ses.merchant), NULL, 0, now_us);
}

/* Starts the sessions whose wait is over. */
static void waits_run_due(struct bench *b, int64_t now_us)
{
    while (b->wait_len > 0 && b->wait_heap[0]->wake_us <= now_us)
        poll_send(b, wait_pop(b), now_us);
}

/*
 * refunds: the payment succeeded; refund it by the next of four plans, in
 * turn over the refunded payments (amount A, integer division, each at least
 * 1):
 *   0  one refund of A/4
 *   1  two at once, 3A/10 and 4A/10: both fit, both must be accepted
 *   2  one refund of A/2
 *   3  two at once, A/2 + 1 each: together more than A, so exactly one must
 *      be accepted and the other refused 400 amount_exceeds_refundable
 * Each is on a lane of its own, with its own Idempotency-Key.
 */
static void refund_start(struct bench *b, struct slot *s, int64_t now_us)
{
    int64_t amount = b->opt.amount_minor;
    uint64_t plan = b->refund.polls_succeeded++ % 4;
    b->refund.plans[plan]++;
    int64_t *part = s->ses.refund_amount_minor;
    switch (plan) {
    case 0:
        s->ses.refund_count = 1;
        part[0] = amount / 4;
        break;
    case 1:
        s->ses.refund_count = 2;
        part[0] = amount * 3 / 10;
        part[1] = amount * 4 / 10;
        break;
    case 2:
        s->ses.refund_count = 1;
        part[0] = amount / 2;
        break;
    case 3:
    default:
        s->ses.refund_count = 2;
        part[0] = amount / 2 + 1;
        part[1] = amount / 2 + 1;
        break;
    }
    PB_ASSERT(s->ses.refund_count <= s->lane_count);
    slot_move(s, SLOT_REFUND);
    for (uint32_t i = 0; i < s->ses.refund_count; i++) {
        part[i] = max_i64(part[i], 1);
        char body[PB_REQUEST_BODY_CHARS_MAX + 1];
        int n = snprintf(body, sizeof(body),
                         "{\"payment_id\":\"%s\",\"amount\":%" PRId64 ",\"reason\":\"paybench\"}",
                         s->ses.payment_id, part[i]);
        PB_ASSERT(n > 0 && (size_t)n < sizeof(body));
        char headers[2 * PB_HEADER_CHARS_MAX + 1];
        int headers_len = snprintf(headers, sizeof(headers),
                                   "%sIdempotency-Key: pb-%s-refund-%" PRIu64 "-%u\r\n",
                                   merchant_headers(b, s->ses.merchant), b->run_id, s->ses.no, i);
        PB_ASSERT(headers_len > 0 && (size_t)headers_len < sizeof(headers));
        lane_format(b, &s->lanes[i], "POST", b->path_refunds, headers, body, (size_t)n);
    }
    s->ses.pending = s->ses.refund_count;
    for (uint32_t i = 0; i < s->ses.refund_count; i++) {
        b->refund.requests++;
        lane_issue(b, &s->lanes[i], REQ_REFUND_CREATE, s->lanes[i].request,
                   s->lanes[i].request_len, now_us);
    }
}
/* ---- answers of the sessions ------------------------------------------- */

/* Reads one /metrics answer's payments (and refunds) counters into rd;
 * returns 0, or -1 when the text cannot be read. A counter lower than last
 * time means that source restarted from zero: what it had counted before is
 * kept, so that one instance of several starting again does not take the
 * outcomes it made out of the sum. */
static int read_counters(struct bench *b, const struct httpc_response *r,
                         struct metrics_reading *rd)
{
    const char *const succeeded_labels[] = {b->channel_label, "status=\"succeeded\""};
    const char *const failed_labels[] = {b->channel_label, "status=\"failed\""};
    uint64_t raw[PB_COUNTERS] = {0};
    int rc_s = promtext_find_counter(r->body, r->body_len, PB_METRIC_PAYMENTS, succeeded_labels,
                                     ARRAY_LEN(succeeded_labels), &raw[PB_SUCCEEDED]);
    int rc_f = promtext_find_counter(r->body, r->body_len, PB_METRIC_PAYMENTS, failed_labels,
                                     ARRAY_LEN(failed_labels), &raw[PB_FAILED]);
    int rc_rs = 0;
    int rc_rf = 0;
    if (b->opt.scenario == SCENARIO_REFUNDS) {
        rc_rs = promtext_find_counter(r->body, r->body_len, PB_METRIC_REFUNDS, succeeded_labels,
                                      ARRAY_LEN(succeeded_labels), &raw[PB_REFUNDS_SUCCEEDED]);
        rc_rf = promtext_find_counter(r->body, r->body_len, PB_METRIC_REFUNDS, failed_labels,
                                      ARRAY_LEN(failed_labels), &raw[PB_REFUNDS_FAILED]);
    }
    if (rc_s == -2 || rc_f == -2 || rc_rs == -2 || rc_rf == -2) {
        b->stats[REQ_METRICS_GET].bad_body++;
        return -1;
    }
    if (memmem(r->body, r->body_len, PB_METRIC_PAYMENTS, strlen(PB_METRIC_PAYMENTS)))
        b->metric_present = true;
    for (int i = 0; i < PB_COUNTERS; i++) {
        if (raw[i] < rd->last[i])
            rd->restarted[i] += rd->last[i];
        rd->last[i] = raw[i];
        rd->count[i] = rd->restarted[i] + raw[i];
    }
    return 0;
}

/* One source's answer to the reading in flight; when the last one is in
 * and all were read, the reading is the sum of theirs. */
static void on_metrics_answer(struct bench *b, struct lane *l, long status, int64_t now_us)
{
    size_t src = (size_t)(l->slot - b->metrics_slots);
    PB_ASSERT(src < b->metrics_sources && b->metrics_pending > 0);
    struct metrics_reading *rd = &b->metrics_readings[src];
    if (status == 200 && read_counters(b, httpc_conn_response(l->conn), rd) == 0)
        rd->ok = true;
    if (--b->metrics_pending > 0)
        return;
    b->metrics_in_flight = false;
    uint64_t succeeded = 0;
    uint64_t failed = 0;
    uint64_t refunds_succeeded = 0;
    uint64_t refunds_failed = 0;
    for (size_t i = 0; i < b->metrics_sources; i++) {
        const struct metrics_reading *m = &b->metrics_readings[i];
        if (!m->ok)
            return;
        succeeded += m->count[PB_SUCCEEDED];
        failed += m->count[PB_FAILED];
        refunds_succeeded += m->count[PB_REFUNDS_SUCCEEDED];
        refunds_failed += m->count[PB_REFUNDS_FAILED];
    }
    if (!b->metrics_seen) {
        b->metrics_seen = true;
        b->succeeded_base = succeeded;
        b->failed_base = failed;
        b->refund.succeeded_base = refunds_succeeded;
        b->refund.failed_base = refunds_failed;
    }
    /* Clamped rather than wrapped, should a sum still go down. */
    b->succeeded_now = succeeded >= b->succeeded_base ? succeeded - b->succeeded_base : 0;
    b->failed_now = failed >= b->failed_base ? failed - b->failed_base : 0;
    struct refund_counts *rf = &b->refund;
    rf->succeeded_now =
        refunds_succeeded >= rf->succeeded_base ? refunds_succeeded - rf->succeeded_base : 0;
    rf->failed_now = refunds_failed >= rf->failed_base ? refunds_failed - rf->failed_base : 0;
    b->metrics_sent_us = b->metrics_round_us;
    b->metrics_recv_us = now_us;
    if (b->load_start_us > 0 && b->series_len < PB_SERIES_POINTS_MAX) {
        struct series_point *p = &b->series[b->series_len++];
        p->at_us = now_us - b->load_start_us;
        p->succeeded = b->succeeded_now;
        p->failed = b->failed_now;
    }
}

/* The outcome a method must give ("succeeded", "failed card_declined"), or
 * NULL when paybench does not know the method. */
static const char *expected_outcome(const char *method)
{
    for (size_t i = 0; i < ARRAY_LEN(expected_outcomes); i++)
        if (strcmp(expected_outcomes[i].method, method) == 0)
            return expected_outcomes[i].outcome;
    return NULL;
}

/* A read of the sample: the owner's (the payment must be succeeded, or for
 * mix what its method gives), or many-merchants' read with another
 * merchant's key (it must be 404). */
static void on_verify_answer(struct bench *b, struct slot *s, const struct httpc_response *r,
                             long status)
{
    size_t job = s->verify_index;
    const struct sample_entry *e = &b->sample[job / b->verify_reads];
    bool cross = job % b->verify_reads == 1;
    b->verify_done++;
    if (cross) {
        b->cross.reads++;
        if (status == 404) {
            b->cross.hidden++;
        } else if (status == 200) {
            b->cross.visible++;
            finding(b, "payment %s of merchant %u was shown to merchant %u: %.*s", e->id,
                    e->merchant, (unsigned)((e->merchant + 1) % b->opt.key_count),
                    (int)(r->body_len < 300 ? r->body_len : 300), r->body);
        } else {
            b->cross.other++;
        }
    } else {
        char id[PB_ID_CHARS_MAX + 1];
        char payment_status[32] = "";
        char failure[32] = "";
        bool read = status == 200 && parse_object_answer(r, id, payment_status, failure) == 0 &&
                    strcmp(id, e->id) == 0;
        bool succeeded = read && strcmp(payment_status, "succeeded") == 0;
        if (succeeded)
            b->verify_succeeded++;
        if (succeeded || (read && strcmp(payment_status, "failed") == 0))
            b->verify_final++;
        if (b->opt.scenario == SCENARIO_MIX) {
            struct method_counts *mc = &b->methods[e->method];
            const char *method = b->mix.method[e->method].name;
            char outcome[PB_LABEL_CHARS_MAX + 1];
            if (!read)
                snprintf(outcome, sizeof(outcome), "unreadable (HTTP %ld)", status);
            else if (strcmp(payment_status, "failed") == 0)
                snprintf(outcome, sizeof(outcome), "failed %s", failure[0] ? failure : "?");
            else
                snprintf(outcome, sizeof(outcome), "%s", payment_status);
            mc->read_back++;
            tally_add(&mc->outcomes, outcome);
            const char *want = expected_outcome(method);
            if (want != NULL && strcmp(outcome, want) != 0) {
                mc->unexpected++;
                finding(b, "payment %s, method %s, is \"%s\" (must be \"%s\")", e->id, method,
                        outcome, want);
            }
        } else if (!succeeded && b->verify_mismatch_shown < PB_MISMATCH_SHOWN_MAX) {
            b->verify_mismatch_shown++;
            fprintf(stderr, "paybench: sample payment %s: HTTP %ld, status \"%s\"; body: %.*s\n",
                    e->id, status, payment_status, (int)(r->body_len < 300 ? r->body_len : 300),
                    r->body);
        }
    }
    slot_move(s, SLOT_IDLE);
    s->next_idle = b->idle;
    b->idle = s;
}

/* The order exists: go on with the scenario's payment. */
static void on_order_answer(struct bench *b, struct slot *s, const struct httpc_response *r,
                            bool success, int64_t now_us)
{
    if (!success) {
        session_end(b, s, false);
        return;
    }
    if (scan_object_answer(r, s->ses.order_id, NULL) != 0) {
        b->stats[REQ_ORDER_CREATE].bad_body++;
        session_end(b, s, false);
        return;
    }
    switch (b->opt.scenario) {
    case SCENARIO_RETRY:
        retry_start(b, s, now_us);
        break;
    case SCENARIO_RACE:
        race_start(b, s, now_us);
        break;
    case SCENARIO_CREATE_AND_PAY:
    case SCENARIO_MANY_MERCHANTS:
    case SCENARIO_MIX:
    case SCENARIO_REFUNDS:
        session_pay(b, s, now_us);
        break;
    case SCENARIO_STATIC:
    case SCENARIO_COUNT:
    default:
        PB_ASSERT(!"an order in a scenario without orders");
    }
}

static void on_payment_answer(struct bench *b, struct slot *s, const struct httpc_response *r,
                              long status, bool success, int64_t now_us)
{
    if (!success) {
        char label[PB_LABEL_CHARS_MAX + 1];
        answer_label(status, r, label);
        tally_add(&b->methods[s->ses.method].rejected, label);
        session_end(b, s, false);
        return;
    }
    int read = payment_accepted(b, s, r, REQ_PAYMENT_ACCEPT, s->ses.payment_id);
    if (b->opt.scenario == SCENARIO_REFUNDS && read == 0 &&
        share_pick(b->refund.payments_seen++, b->opt.refund_share_pct)) {
        b->refund.chosen++;
        s->ses.poll_deadline_us = now_us + PB_POLL_TIMEOUT_US;
        poll_wait(b, s, now_us, PB_POLL_FIRST_US);
        return;
    }
    session_end(b, s, true);
}

/* retry: after the payment and every retry, the order must have exactly
 * that one payment. */
static void retry_finish(struct bench *b, struct slot *s, int64_t now_us)
{
    if (s->ses.accepted > 0 && !s->ses.no_answer && s->ses.unmarked_202 != 1) {
        b->retry.marks_wrong++;
        finding(b, "retry: order %s: %u of its 202 answers lack Idempotent-Replayed: true (must "
                   "be exactly 1)",
                s->ses.order_id, s->ses.unmarked_202);
    }
    if (s->ses.payment_id[0] == '\0') {
        session_end(b, s, s->ses.accepted > 0);
        return;
    }
    slot_move(s, SLOT_LIST);
    char path[PB_PATH_CHARS_MAX + PB_ID_CHARS_MAX + 16];
    snprintf(path, sizeof(path), "%s?order_id=%s", b->path_payments, s->ses.order_id);
    lane_request(b, &s->lanes[0], REQ_PAYMENT_LIST, "GET", path,
                 merchant_headers(b, s->ses.merchant), NULL, 0, now_us);
}

/*
 * retry: an answer to the payment (lane 0's first request) or to one of its
 * retries. The first 202 gives the session's payment; every later 202 must
 * be the same payment with the same body. A request sent while another of
 * the session was in flight (the first payment and the retry beside it; a
 * later retry while that one still runs) may be refused 409
 * idempotency_key_in_use, as the contract says; any other refusal of a
 * retry is unexpected.
 */
static void on_retry_answer(struct bench *b, struct slot *s, struct lane *l,
                            const struct httpc_response *r, long status, int64_t now_us)
{
    struct retry_counts *rc = &b->retry;
    bool original = l->kind == REQ_PAYMENT_ACCEPT;
    if (!original)
        rc->answered++;
    if (status == 0)
        s->ses.no_answer = true;
    if (status == 202) {
        char id[PB_ID_CHARS_MAX + 1];
        if (!answer_header_is(r, "Idempotent-Replayed", "true"))
            s->ses.unmarked_202++;
        if (s->ses.accepted++ == 0) {
            if (payment_accepted(b, s, r, l->kind, s->ses.payment_id) == 0) {
                size_t keep = r->body_len < sizeof(s->ses.first_body) ? r->body_len
                                                                      : sizeof(s->ses.first_body);
                memcpy(s->ses.first_body, r->body, keep);
                s->ses.first_body_len = r->body_len;
            }
            if (!original)
                rc->replayed++;
        } else if (scan_object_answer(r, id, NULL) != 0) {
            b->stats[l->kind].bad_body++;
        } else if (s->ses.payment_id[0] == '\0') {
            /* The first 202 could not be read: this one tells the payment. */
            snprintf(s->ses.payment_id, sizeof(s->ses.payment_id), "%s", id);
            if (!original)
                rc->replayed++;
        } else if (strcmp(id, s->ses.payment_id) != 0) {
            /* A second payment under one key: acknowledged too, so that the
             * checker looks for it. */
            rc->id_mismatch++;
            finding(b, "retry: order %s: one Idempotency-Key, two payments: %s and %s",
                    s->ses.order_id, s->ses.payment_id, id);
            char other[PB_ID_CHARS_MAX + 1];
            (void)payment_accepted(b, s, r, l->kind, other);
        } else {
            if (!original)
                rc->replayed++;
            size_t kept = s->ses.first_body_len < sizeof(s->ses.first_body)
                              ? s->ses.first_body_len
                              : sizeof(s->ses.first_body);
            if (r->body_len != s->ses.first_body_len || memcmp(r->body, s->ses.first_body, kept)) {
                rc->body_differs++;
                finding(b, "retry: payment %s: a replay's body differs from the first: %.*s",
                        id, (int)(r->body_len < 300 ? r->body_len : 300), r->body);
            }
        }
    } else {
        char label[PB_LABEL_CHARS_MAX + 1];
        answer_label(status, r, label);
        bool in_use = status == 409 && answer_code_is(r, "idempotency_key_in_use");
        if (!original)
            tally_add(&rc->not_replayed, label);
        else
            tally_add(&b->methods[s->ses.method].rejected, label);
        if (in_use && l->beside_other)
            rc->in_use++;
        else if (!original && answer_is_shed(status))
            rc->shed++;
        else if (!original)
            rc->unexpected++;
    }
    PB_ASSERT(s->ses.pending > 0);
    s->ses.pending--;
    if (l == &s->lanes[0] && s->ses.retries_sent < (uint32_t)b->opt.retries) {
        /* The first has answered: the next retry right after, on its lane. */
        s->ses.retries_sent++;
        s->ses.pending++;
        rc->sent++;
        l->beside_other = !slot_lanes_idle(s);
        lane_issue(b, l, REQ_PAYMENT_RETRY, l->request, l->request_len, now_us);
        return;
    }
    if (s->ses.pending == 0)
        retry_finish(b, s, now_us);
}

/* retry: GET /v1/payments?order_id= must list exactly the session's payment. */
static void on_list_answer(struct bench *b, struct slot *s, const struct httpc_response *r,
                           long status)
{
    struct retry_counts *rc = &b->retry;
    rc->lists++;
    json_t *root = NULL;
    json_t *data = NULL;
    if (status == 200 && !r->body_truncated) {
        json_error_t error;
        root = json_loadb(r->body, r->body_len, 0, &error);
        data = json_object_get(root, "data");
    }
    if (!json_is_array(data)) {
        rc->list_errors++;
    } else {
        size_t n = json_array_size(data);
        const char *id = n > 0 ? json_string_value(json_object_get(json_array_get(data, 0), "id"))
                               : NULL;
        if (n != 1 || id == NULL || strcmp(id, s->ses.payment_id) != 0) {
            rc->list_not_one++;
            finding(b, "retry: order %s has %zu payments (must be exactly %s)", s->ses.order_id,
                    n, s->ses.payment_id);
        }
    }
    json_decref(root);
    session_end(b, s, true);
}

/* race: one racer's answer; when all have answered, the order is judged. */
static void on_race_answer(struct bench *b, struct slot *s, const struct httpc_response *r,
                           long status)
{
    struct race_counts *rc = &b->race;
    if (status == 202) {
        char id[PB_ID_CHARS_MAX + 1];
        if (s->ses.accepted++ == 0)
            (void)payment_accepted(b, s, r, REQ_PAYMENT_ACCEPT, s->ses.payment_id);
        else
            (void)payment_accepted(b, s, r, REQ_PAYMENT_ACCEPT, id);
    } else {
        char label[PB_LABEL_CHARS_MAX + 1];
        answer_label(status, r, label);
        rc->losers++;
        tally_add(&rc->loser_answers, label);
        if (answer_is_shed(status))
            rc->shed_losers++;
        else if (!(status == 409 && (answer_code_is(r, "payment_in_progress") ||
                                     answer_code_is(r, "order_already_paid"))))
            rc->unexpected_losers++;
    }
    PB_ASSERT(s->ses.pending > 0);
    if (--s->ses.pending > 0)
        return;
    rc->orders++;
    if (s->ses.accepted == 1) {
        rc->one++;
    } else if (s->ses.accepted > 1) {
        rc->several++;
        finding(b, "race: order %s: %u of %zu racers accepted (at most 1 may be)",
                s->ses.order_id, s->ses.accepted, s->lane_count);
    } else {
        rc->none++;
    }
    session_end(b, s, s->ses.accepted > 0);
}

/* refunds: is the payment final yet? */
static void on_poll_answer(struct bench *b, struct slot *s, const struct httpc_response *r,
                           long status, int64_t now_us)
{
    char id[PB_ID_CHARS_MAX + 1];
    char payment_status[32];
    if (status != 200 || scan_object_answer(r, id, payment_status) != 0) {
        b->refund.poll_errors++;
        session_end(b, s, true);
    } else if (strcmp(payment_status, "succeeded") == 0) {
        refund_start(b, s, now_us);
    } else if (strcmp(payment_status, "failed") == 0) {
        b->refund.skipped_failed++;
        session_end(b, s, true);
    } else if (now_us >= s->ses.poll_deadline_us) {
        b->refund.skipped_not_final++;
        session_end(b, s, true);
    } else {
        poll_wait(b, s, now_us, min_i64(2 * s->ses.poll_delay_us, PB_POLL_MAX_US));
    }
}

/*
 * refunds: one refund's answer; when all of the payment's have answered,
 * what was accepted is judged: never more than the amount, and a refund
 * refused for exceeding what is left must not have fitted beside the
 * accepted ones.
 */
static void on_refund_answer(struct bench *b, struct slot *s, struct lane *l,
                             const struct httpc_response *r, long status)
{
    struct refund_counts *rc = &b->refund;
    size_t i = (size_t)(l - s->lanes);
    PB_ASSERT(i < s->ses.refund_count);
    char label[PB_LABEL_CHARS_MAX + 1];
    answer_label(status, r, label);
    tally_add(&rc->answers, label);
    if (status == 202) {
        rc->accepted++;
        rc->accepted_minor += s->ses.refund_amount_minor[i];
        s->ses.accepted++;
        s->ses.refund_accepted_minor += s->ses.refund_amount_minor[i];
    } else if (status == 400 && answer_code_is(r, "amount_exceeds_refundable")) {
        rc->refused_exceeds++;
        s->ses.refund_refused[i] = true;
    } else if (answer_is_shed(status)) {
        rc->shed++;
    } else {
        rc->unexpected++;
    }
    PB_ASSERT(s->ses.pending > 0);
    if (--s->ses.pending > 0)
        return;
    int64_t captured = b->opt.amount_minor;
    if (s->ses.refund_accepted_minor > captured) {
        rc->over_accepted++;
        finding(b, "refunds: payment %s: refunds of %" PRId64 " accepted, it captured %" PRId64,
                s->ses.payment_id, s->ses.refund_accepted_minor, captured);
    }
    for (uint32_t k = 0; k < s->ses.refund_count; k++) {
        if (s->ses.refund_refused[k] &&
            s->ses.refund_accepted_minor + s->ses.refund_amount_minor[k] <= captured) {
            rc->wrongly_refused++;
            finding(b, "refunds: payment %s: a refund of %" PRId64 " was refused, though %" PRId64
                       " of %" PRId64 " was accepted",
                    s->ses.payment_id, s->ses.refund_amount_minor[k],
                    s->ses.refund_accepted_minor, captured);
        }
    }
    session_end(b, s, true);
}

static bool is_success(enum req_kind kind, long status)
{
    switch (kind) {
    case REQ_ORDER_CREATE:
        return status == 201 || status == 200;
    case REQ_PAYMENT_ACCEPT:
    case REQ_PAYMENT_RETRY:
    case REQ_REFUND_CREATE:
        return status == 202;
    case REQ_STATIC_GET:
    case REQ_PAYMENT_GET:
    case REQ_METRICS_GET:
    case REQ_PAYMENT_LIST:
    case REQ_PAYMENT_POLL:
        return status == 200;
    case REQ_KIND_COUNT:
    default:
        PB_ASSERT(!"unknown request kind");
        return false;
    }
}

/*
 * The request on lane `l` ended: rc is HTTPC_OK with an answer, or the code
 * of the failure (counted as "no answer"). May start the session's next
 * request, on this lane or another of its slot.
 */
static void on_transfer_done(struct bench *b, struct lane *l, int rc)
{
    PB_ASSERT(rc != HTTPC_AGAIN && l->busy);
    l->busy = false;
    struct slot *s = l->slot;
    int64_t now_us = clock_mono_us();
    const struct httpc_response *r = httpc_conn_response(l->conn);
    long status = rc == HTTPC_OK ? r->status : 0;
    if (status < 0 || status >= PB_HTTP_STATUS_LIMIT)
        status = 0;

    enum req_kind kind = l->kind;
    PB_ASSERT((unsigned)kind < REQ_KIND_COUNT);
    struct req_stats *st = &b->stats[kind];
    if (b->events && (kind == REQ_ORDER_CREATE || kind == REQ_PAYMENT_ACCEPT)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        fprintf(b->events, "%lld %s %ld\n",
                (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, req_kind_name[kind], status);
    }
    if (rc == HTTPC_ERR_CHUNKED) {
        /* Not a server fault to count: this client cannot read such answers. */
        fprintf(stderr, "paybench: %s: %s; paybench cannot measure this server\n",
                req_kind_name[kind], httpc_strerror(rc));
        exit(1);
    }
    if (rc != HTTPC_OK && b->transport_errors_shown < PB_MISMATCH_SHOWN_MAX) {
        b->transport_errors_shown++;
        int sys_errno = httpc_conn_errno(l->conn);
        fprintf(stderr, "paybench: %s: no answer: %s%s%s\n", req_kind_name[kind],
                httpc_strerror(rc), sys_errno != 0 ? ": " : "",
                sys_errno != 0 ? strerror(sys_errno) : "");
    }
    st->status_count[status]++;
    st->connects += r->connects;
    bool success = is_success(kind, status);
    if (success)
        hist_record(&st->latency, now_us > l->sent_us ? (uint64_t)(now_us - l->sent_us) : 0u);

    switch (s->state) {
    case SLOT_ORDER:
        on_order_answer(b, s, r, success, now_us);
        break;
    case SLOT_PAYMENT:
        on_payment_answer(b, s, r, status, success, now_us);
        break;
    case SLOT_RETRY:
        on_retry_answer(b, s, l, r, status, now_us);
        break;
    case SLOT_LIST:
        on_list_answer(b, s, r, status);
        break;
    case SLOT_RACE:
        on_race_answer(b, s, r, status);
        break;
    case SLOT_POLL:
        on_poll_answer(b, s, r, status, now_us);
        break;
    case SLOT_REFUND:
        on_refund_answer(b, s, l, r, status);
        break;
    case SLOT_STATIC:
        session_end(b, s, success);
        break;
    case SLOT_VERIFY:
        on_verify_answer(b, s, r, status);
        break;
    case SLOT_METRICS:
        on_metrics_answer(b, l, status, now_us);
        slot_move(s, SLOT_IDLE);
        break;
    case SLOT_IDLE:
    case SLOT_POLL_WAIT:
    case SLOT_STATE_COUNT:
    default:
        PB_ASSERT(!"a request completed on a slot that has none in flight");
    }
}

/* Fails every request that is past its deadline. */
static void bench_expire(struct bench *b, int64_t now_us)
{
    for (size_t i = 0; i < b->slot_count + b->metrics_sources; i++) {
        struct slot *s = i < b->slot_count ? &b->slots[i] : &b->metrics_slots[i - b->slot_count];
        for (size_t k = 0; k < s->lane_count; k++) {
            struct lane *l = &s->lanes[k];
            int rc = httpc_conn_expire(l->conn, now_us);
            if (rc != HTTPC_AGAIN)
                on_transfer_done(b, l, rc);
        }
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
    if (!scenario_pays(b->opt.scenario) || b->metrics_in_flight || now_us < b->metrics_due_us)
        return;
    b->metrics_in_flight = true;
    b->metrics_pending = b->metrics_sources;
    b->metrics_round_us = now_us;
    b->metrics_due_us = now_us + interval_us;
    for (size_t i = 0; i < b->metrics_sources; i++) {
        b->metrics_readings[i].ok = false;
        slot_move(&b->metrics_slots[i], SLOT_METRICS);
        lane_issue(b, &b->metrics_slots[i].lanes[0], REQ_METRICS_GET, b->metrics_requests[i],
                   b->metrics_request_lens[i], now_us);
    }
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
        waits_run_due(b, now_us);
        metrics_poll_if_due(b, now_us, PB_METRICS_LOAD_INTERVAL_US);
        int64_t wake_us = min_i64(end_us, load_next_due_us(b));
        wake_us = min_i64(wake_us, wait_next_us(b));
        if (scenario_pays(b->opt.scenario))
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
 * still sends its payment, its retries, its refunds); aborts what is left
 * after the bound. */
static void phase_drain(struct bench *b)
{
    int64_t deadline_us = clock_mono_us() + PB_DRAIN_TIMEOUT_US;
    b->metrics_due_us = scenario_pays(b->opt.scenario) ? clock_mono_us() : INT64_MAX;
    while (b->sessions_in_flight > 0) {
        int64_t now_us = clock_mono_us();
        if (now_us >= deadline_us)
            break;
        waits_run_due(b, now_us);
        metrics_poll_if_due(b, now_us, PB_METRICS_SETTLE_INTERVAL_US);
        int64_t wake_us = min_i64(min_i64(deadline_us, b->metrics_due_us), wait_next_us(b));
        bench_step(b, wake_us - now_us);
    }
    for (size_t i = 0; i < b->slot_count; i++) {
        struct slot *s = &b->slots[i];
        if (!slot_in_session(s->state))
            continue;
        for (size_t k = 0; k < s->lane_count; k++) {
            if (s->lanes[k].busy) {
                httpc_conn_abort(s->lanes[k].conn);
                s->lanes[k].busy = false;
            }
        }
        b->sessions_aborted++;
        slot_move(s, SLOT_IDLE);
        s->next_idle = b->idle;
        b->idle = s;
        b->sessions_in_flight--;
    }
    b->wait_len = 0; /* the sessions that waited were aborted above */
    b->t_drained_us = clock_mono_us();
}

static bool refunds_all_final(const struct bench *b)
{
    return b->refund.succeeded_now + b->refund.failed_now >= b->refund.accepted;
}

/* Polls /metrics until every accepted payment (and refund) is final, or the
 * bound. */
static void phase_settle(struct bench *b)
{
    int64_t deadline_us = clock_mono_us() + b->opt.settle_timeout_s * 1000000;
    bool refunds = b->opt.scenario == SCENARIO_REFUNDS;
    b->t_final_us = -1;
    b->refund.t_final_us = -1;
    for (;;) {
        int64_t now_us = clock_mono_us();
        /* Only a reading asked for after the drain sees every acceptance. */
        if (!b->metrics_in_flight && b->metrics_sent_us >= b->t_drained_us) {
            if (b->t_final_us < 0 && b->succeeded_now + b->failed_now >= b->payments_accepted)
                b->t_final_us = b->metrics_recv_us;
            if (refunds && b->refund.t_final_us < 0 && refunds_all_final(b))
                b->refund.t_final_us = b->metrics_recv_us;
            if (b->t_final_us >= 0 && (!refunds || b->refund.t_final_us >= 0))
                return;
        }
        if (now_us >= deadline_us || *b->stop_flag >= 2)
            return;
        metrics_poll_if_due(b, now_us, PB_METRICS_SETTLE_INTERVAL_US);
        bench_step(b, min_i64(deadline_us, b->metrics_due_us) - now_us);
    }
}

/* Reads every sampled payment (many-merchants: also with the next
 * merchant's key). */
static void phase_verify(struct bench *b)
{
    int64_t deadline_us = clock_mono_us() + PB_VERIFY_TIMEOUT_US;
    size_t total = b->sample_len * b->verify_reads;
    size_t next = 0;
    char path[PB_PATH_CHARS_MAX + PB_ID_CHARS_MAX + 1];
    while (b->verify_done < total && clock_mono_us() < deadline_us) {
        /* Few at a time, on the connections the load left open. */
        while (next < total && b->idle != NULL &&
               next - b->verify_done < PB_VERIFY_IN_FLIGHT_MAX) {
            struct slot *s = b->idle;
            b->idle = s->next_idle;
            slot_move(s, SLOT_VERIFY);
            s->verify_index = next;
            const struct sample_entry *e = &b->sample[next / b->verify_reads];
            uint32_t merchant = e->merchant;
            if (next % b->verify_reads == 1)
                merchant = (uint32_t)((merchant + 1) % b->opt.key_count);
            snprintf(path, sizeof(path), "%s/%s", b->path_payments, e->id);
            next++;
            lane_request(b, &s->lanes[0], REQ_PAYMENT_GET, "GET", path,
                         merchant_headers(b, merchant), NULL, 0, clock_mono_us());
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

static uint64_t kind_total(const struct bench *b, enum req_kind kind)
{
    uint64_t total = 0;
    for (size_t i = 0; i < PB_HTTP_STATUS_LIMIT; i++)
        total += b->stats[kind].status_count[i];
    return total;
}

/* The figures of a finished run, derived once for both reports. */
struct summary {
    bool pays;                 /* a payment scenario (else static) */
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
    uint64_t refunds_not_final;
    uint64_t mix_unexpected;   /* over every method */
    bool schedule_kept;
    bool scenario_ok;          /* the scenario's own counts are clean */
    bool ok;
};

/* Whether the counts of the scenario itself show no violation. */
static bool scenario_counts_ok(const struct bench *b, const struct summary *sum)
{
    const struct retry_counts *rt = &b->retry;
    const struct race_counts *rc = &b->race;
    const struct refund_counts *rf = &b->refund;
    switch (b->opt.scenario) {
    case SCENARIO_MANY_MERCHANTS:
        return b->cross.visible == 0 && b->cross.other == 0;
    case SCENARIO_RETRY:
        return rt->id_mismatch == 0 && rt->body_differs == 0 && rt->marks_wrong == 0 &&
               rt->unexpected == 0 && rt->list_not_one == 0 && rt->list_errors == 0 &&
               rt->answered == rt->sent;
    case SCENARIO_RACE:
        return rc->several == 0 && rc->unexpected_losers == 0;
    case SCENARIO_MIX:
        return sum->mix_unexpected == 0 && b->verify_final == b->sample_len;
    case SCENARIO_REFUNDS:
        return rf->over_accepted == 0 && rf->wrongly_refused == 0 && rf->unexpected == 0 &&
               rf->poll_errors == 0 && rf->skipped_not_final == 0 && rf->t_final_us >= 0 &&
               rf->failed_now == 0 && sum->refunds_not_final == 0;
    case SCENARIO_CREATE_AND_PAY:
    case SCENARIO_STATIC:
        return true;
    case SCENARIO_COUNT:
    default:
        PB_ASSERT(!"unknown scenario");
        return false;
    }
}

static void summarize(const struct bench *b, struct summary *sum)
{
    const struct options *o = &b->opt;
    const struct cpu_snapshot *c0 = &b->cpu_load_start;
    const struct cpu_snapshot *c1 = &b->cpu_load_end;
    memset(sum, 0, sizeof(*sum));
    sum->pays = scenario_pays(o->scenario);
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
    sum->steady_succeeded_per_s = sum->pays ? steady_succeeded_per_s(b) : -1.0;
    uint64_t final = b->succeeded_now + b->failed_now;
    sum->not_final = b->payments_accepted > final ? b->payments_accepted - final : 0;
    uint64_t refunds_final = b->refund.succeeded_now + b->refund.failed_now;
    sum->refunds_not_final =
        b->refund.accepted > refunds_final ? b->refund.accepted - refunds_final : 0;
    for (size_t i = 0; i < b->mix.len; i++)
        sum->mix_unexpected += b->methods[i].unexpected;
    sum->schedule_kept = o->rate_per_s <= 0 || (b->arrivals_missed == 0 &&
                                                b->arrivals_late * 100u <= b->arrivals_started);
    sum->scenario_ok = scenario_counts_ok(b, sum);
    sum->ok = b->sessions_failed == 0 && b->sessions_aborted == 0 && sum->schedule_kept &&
              sum->scenario_ok;
    if (!sum->pays)
        return;
    sum->ok = sum->ok && b->t_final_us >= 0 && b->payments_not_processing == 0;
    if (o->scenario == SCENARIO_MIX)
        /* Failures are expected here; the read-back judges them. */
        sum->ok = sum->ok && final == b->payments_accepted;
    else
        sum->ok = sum->ok && b->failed_now == 0 && b->succeeded_now == b->payments_accepted &&
                  b->verify_succeeded == b->sample_len;
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
    if (b->opt.scenario != SCENARIO_MIX)
        printf("  sample: %zu of %zu payments read back as succeeded\n", b->verify_succeeded,
               b->sample_len);
}

static void report_merchants(const struct bench *b)
{
    const struct merchant_counts *m = b->merchants;
    uint64_t sessions_min = UINT64_MAX, sessions_max = 0, accepted_min = UINT64_MAX,
             accepted_max = 0;
    for (size_t i = 0; i < b->opt.key_count; i++) {
        sessions_min = m[i].sessions < sessions_min ? m[i].sessions : sessions_min;
        sessions_max = m[i].sessions > sessions_max ? m[i].sessions : sessions_max;
        accepted_min = m[i].accepted < accepted_min ? m[i].accepted : accepted_min;
        accepted_max = m[i].accepted > accepted_max ? m[i].accepted : accepted_max;
    }
    printf("  merchants: %zu; sessions per merchant %" PRIu64 " ... %" PRIu64
           ", payments accepted per merchant %" PRIu64 " ... %" PRIu64 "\n",
           b->opt.key_count, sessions_min, sessions_max, accepted_min, accepted_max);
    for (size_t i = 0; i < b->opt.key_count && i < 16; i++)
        printf("    merchant %zu (key %zu): sessions %" PRIu64 ", accepted %" PRIu64 "\n", i, i + 1,
               m[i].sessions, m[i].accepted);
    if (b->opt.scenario == SCENARIO_MANY_MERCHANTS)
        printf("  isolation: %" PRIu64 " sampled payments read with another merchant's key: "
               "%" PRIu64 " answered 404, %" PRIu64 " SHOWN (200), %" PRIu64 " other\n",
               b->cross.reads, b->cross.hidden, b->cross.visible, b->cross.other);
}

static void report_retry(const struct bench *b)
{
    const struct retry_counts *rt = &b->retry;
    printf("  retry: %" PRId64 " retries per payment, the first beside it; sent %" PRIu64
           ", answered %" PRIu64 ": replayed (202, same payment) %" PRIu64
           ", met the other in flight (409 idempotency_key_in_use) %" PRIu64 "\n",
           b->opt.retries, rt->sent, rt->answered, rt->replayed, rt->in_use);
    printf("  retry: OTHER PAYMENT IDS %" PRIu64 ", replay bodies differing %" PRIu64
           ", sessions with replay marks wrong %" PRIu64 ", shed (429/503) %" PRIu64
           ", unexpected answers %" PRIu64 "\n",
           rt->id_mismatch, rt->body_differs, rt->marks_wrong, rt->shed, rt->unexpected);
    printf("  retry: retries not answered 202, by status: ");
    tally_print(&rt->not_replayed, stdout);
    printf("\n  retry: orders listed %" PRIu64 ", with other than exactly their payment %" PRIu64
           ", lists unreadable %" PRIu64 "\n",
           rt->lists, rt->list_not_one, rt->list_errors);
}

static void report_race(const struct bench *b)
{
    const struct race_counts *rc = &b->race;
    printf("  race: %" PRId64 " racers per order; orders %" PRIu64 ": exactly one accepted %" PRIu64
           ", SEVERAL accepted %" PRIu64 ", none accepted %" PRIu64 "\n",
           b->opt.racers, rc->orders, rc->one, rc->several, rc->none);
    printf("  race: losers %" PRIu64 " (shed 429/503 %" PRIu64 ", unexpected %" PRIu64 "): ",
           rc->losers, rc->shed_losers, rc->unexpected_losers);
    tally_print(&rc->loser_answers, stdout);
    printf("\n");
}

static void report_mix(const struct bench *b, const struct summary *sum)
{
    char spec[MIX_SPEC_CHARS_MAX + 1];
    mix_format(&b->opt.mix, spec, sizeof(spec));
    printf("  mix %s: read back %zu of %" PRIu64 " accepted payments, %zu final; unexpected "
           "outcomes %" PRIu64 "\n",
           spec, b->sample_len, b->payments_accepted, b->verify_final, sum->mix_unexpected);
    for (size_t i = 0; i < b->mix.len; i++) {
        const struct method_counts *mc = &b->methods[i];
        const char *want = expected_outcome(b->mix.method[i].name);
        printf("    %-10s weight %u: sessions %" PRIu64 ", accepted %" PRIu64
               ", read back %" PRIu64 ": ",
               b->mix.method[i].name, b->mix.method[i].weight, mc->sessions, mc->accepted,
               mc->read_back);
        tally_print(&mc->outcomes, stdout);
        printf(" (must be: %s)", want != NULL ? want : "unknown to paybench");
        if (mc->unexpected > 0)
            printf(" UNEXPECTED %" PRIu64, mc->unexpected);
        if (tally_total(&mc->rejected) > 0) {
            printf("; payment refused: ");
            tally_print(&mc->rejected, stdout);
        }
        printf("\n");
    }
}

static void report_refunds(const struct bench *b, const struct summary *sum)
{
    const struct refund_counts *rf = &b->refund;
    printf("  refunds: %" PRId64 " %% of accepted payments chosen: %" PRIu64 "; refunded %" PRIu64
           " (plans 1/4, 3/10+4/10, 1/2, 1/2+1 twice: %" PRIu64 "/%" PRIu64 "/%" PRIu64
           "/%" PRIu64 "); skipped: payment failed %" PRIu64 ", not final in time %" PRIu64
           ", poll errors %" PRIu64 "\n",
           b->opt.refund_share_pct, rf->chosen, rf->polls_succeeded, rf->plans[0], rf->plans[1],
           rf->plans[2], rf->plans[3], rf->skipped_failed, rf->skipped_not_final,
           rf->poll_errors);
    printf("  refunds: requests %" PRIu64 ", accepted (202) %" PRIu64 " (%" PRId64
           " minor units), refused amount_exceeds_refundable %" PRIu64 ", shed (429/503) %" PRIu64
           ", unexpected %" PRIu64 "; answers: ",
           rf->requests, rf->accepted, rf->accepted_minor, rf->refused_exceeds, rf->shed,
           rf->unexpected);
    tally_print(&rf->answers, stdout);
    printf("\n  refunds: ACCEPTED BEYOND THE CAPTURED AMOUNT %" PRIu64
           ", refused though they fitted %" PRIu64 "\n",
           rf->over_accepted, rf->wrongly_refused);
    printf("  refunds: final (/metrics): succeeded %" PRIu64 ", failed %" PRIu64
           ", not final %" PRIu64,
           rf->succeeded_now, rf->failed_now, sum->refunds_not_final);
    if (rf->t_final_us >= 0)
        printf(", all final %.3f s after the load ended\n",
               (double)(rf->t_final_us - b->t_load_end_us) / 1e6);
    else
        printf(", NOT all final within %" PRId64 " s of the drain\n", b->opt.settle_timeout_s);
}

static void report_print(const struct bench *b, const struct summary *sum)
{
    const struct options *o = &b->opt;
    printf("paybench: scenario %s, %s, duration %" PRId64 " s, url %s, run %s\n",
           scenario_name[o->scenario], o->rate_per_s > 0 ? "open loop" : "closed loop",
           o->duration_s, o->url, b->run_id);
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
    if (sum->pays)
        report_payments(b, sum);
    else
        printf("  throughput %.1f requests/s ok\n", per_s(b->sessions_paid, sum->load_us));
    if (sum->pays && (o->key_count > 1 || o->scenario == SCENARIO_MANY_MERCHANTS))
        report_merchants(b);
    if (o->scenario == SCENARIO_RETRY)
        report_retry(b);
    else if (o->scenario == SCENARIO_RACE)
        report_race(b);
    else if (o->scenario == SCENARIO_MIX)
        report_mix(b, sum);
    else if (o->scenario == SCENARIO_REFUNDS)
        report_refunds(b, sum);
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

/* {"LABEL": count, ...} (and "other" past the tally's bound). */
static json_t *tally_json(const struct tally *t)
{
    json_t *o = json_object();
    for (size_t i = 0; i < t->len; i++)
        json_object_set_new(o, t->entry[i].label, json_integer((json_int_t)t->entry[i].count));
    if (t->other > 0)
        json_object_set_new(o, "other", json_integer((json_int_t)t->other));
    return o;
}

static json_t *merchants_json(const struct bench *b)
{
    json_t *per = json_array();
    for (size_t i = 0; i < b->opt.key_count; i++)
        json_array_append_new(per, json_pack("{s:I, s:I, s:I}", "merchant", (json_int_t)i,
                                             "sessions", (json_int_t)b->merchants[i].sessions,
                                             "accepted", (json_int_t)b->merchants[i].accepted));
    json_t *o = json_pack("{s:I, s:o}", "count", (json_int_t)b->opt.key_count, "per_merchant",
                          per);
    if (b->opt.scenario == SCENARIO_MANY_MERCHANTS)
        json_object_set_new(o, "cross_reads",
                            json_pack("{s:I, s:I, s:I, s:I}", "reads", (json_int_t)b->cross.reads,
                                      "hidden_404", (json_int_t)b->cross.hidden, "visible",
                                      (json_int_t)b->cross.visible, "other",
                                      (json_int_t)b->cross.other));
    return o;
}

static json_t *retry_json(const struct bench *b)
{
    const struct retry_counts *rt = &b->retry;
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "retries_per_payment",
                          (json_int_t)b->opt.retries, "sent", (json_int_t)rt->sent, "answered",
                          (json_int_t)rt->answered, "replayed", (json_int_t)rt->replayed,
                          "in_use_beside_first", (json_int_t)rt->in_use, "id_mismatch",
                          (json_int_t)rt->id_mismatch, "body_differs",
                          (json_int_t)rt->body_differs, "replay_marks_wrong",
                          (json_int_t)rt->marks_wrong);
    json_object_set_new(o, "shed", json_integer((json_int_t)rt->shed));
    json_object_set_new(o, "unexpected", json_integer((json_int_t)rt->unexpected));
    json_object_set_new(o, "not_replayed", tally_json(&rt->not_replayed));
    json_object_set_new(o, "orders_listed", json_integer((json_int_t)rt->lists));
    json_object_set_new(o, "orders_not_one_payment", json_integer((json_int_t)rt->list_not_one));
    json_object_set_new(o, "list_errors", json_integer((json_int_t)rt->list_errors));
    return o;
}

static json_t *race_json(const struct bench *b)
{
    const struct race_counts *rc = &b->race;
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "racers",
                     (json_int_t)b->opt.racers, "orders", (json_int_t)rc->orders,
                     "exactly_one_accepted", (json_int_t)rc->one, "several_accepted",
                     (json_int_t)rc->several, "none_accepted", (json_int_t)rc->none, "losers",
                     (json_int_t)rc->losers, "shed_losers", (json_int_t)rc->shed_losers,
                     "unexpected_losers", (json_int_t)rc->unexpected_losers, "loser_answers",
                     tally_json(&rc->loser_answers));
}

static json_t *mix_json(const struct bench *b, const struct summary *sum)
{
    char spec[MIX_SPEC_CHARS_MAX + 1];
    mix_format(&b->opt.mix, spec, sizeof(spec));
    json_t *methods = json_object();
    for (size_t i = 0; i < b->mix.len; i++) {
        const struct method_counts *mc = &b->methods[i];
        const char *want = expected_outcome(b->mix.method[i].name);
        json_t *m = json_pack("{s:I, s:I, s:I, s:o, s:I, s:o, s:I}", "weight",
                              (json_int_t)b->mix.method[i].weight, "sessions",
                              (json_int_t)mc->sessions, "accepted", (json_int_t)mc->accepted,
                              "refused", tally_json(&mc->rejected), "read_back",
                              (json_int_t)mc->read_back, "outcomes", tally_json(&mc->outcomes),
                              "unexpected", (json_int_t)mc->unexpected);
        json_object_set_new(m, "expected", want != NULL ? json_string(want) : json_null());
        json_object_set_new(methods, b->mix.method[i].name, m);
    }
    return json_pack("{s:s, s:I, s:I, s:I, s:o}", "spec", spec, "read_back",
                     (json_int_t)b->sample_len, "read_back_final", (json_int_t)b->verify_final,
                     "unexpected", (json_int_t)sum->mix_unexpected, "methods", methods);
}

static json_t *refunds_json(const struct bench *b, const struct summary *sum)
{
    const struct refund_counts *rf = &b->refund;
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:[I,I,I,I]}", "share_pct",
                          (json_int_t)b->opt.refund_share_pct, "payments_chosen",
                          (json_int_t)rf->chosen, "payments_refunded",
                          (json_int_t)rf->polls_succeeded, "skipped_payment_failed",
                          (json_int_t)rf->skipped_failed, "skipped_not_final",
                          (json_int_t)rf->skipped_not_final, "poll_errors",
                          (json_int_t)rf->poll_errors, "plans", (json_int_t)rf->plans[0],
                          (json_int_t)rf->plans[1], (json_int_t)rf->plans[2],
                          (json_int_t)rf->plans[3]);
    json_object_set_new(o, "requests", json_integer((json_int_t)rf->requests));
    json_object_set_new(o, "accepted", json_integer((json_int_t)rf->accepted));
    json_object_set_new(o, "accepted_minor", json_integer((json_int_t)rf->accepted_minor));
    json_object_set_new(o, "refused_exceeds_refundable",
                        json_integer((json_int_t)rf->refused_exceeds));
    json_object_set_new(o, "shed", json_integer((json_int_t)rf->shed));
    json_object_set_new(o, "unexpected", json_integer((json_int_t)rf->unexpected));
    json_object_set_new(o, "answers", tally_json(&rf->answers));
    json_object_set_new(o, "over_accepted", json_integer((json_int_t)rf->over_accepted));
    json_object_set_new(o, "wrongly_refused", json_integer((json_int_t)rf->wrongly_refused));
    json_object_set_new(o, "succeeded", json_integer((json_int_t)rf->succeeded_now));
    json_object_set_new(o, "failed", json_integer((json_int_t)rf->failed_now));
    json_object_set_new(o, "not_final", json_integer((json_int_t)sum->refunds_not_final));
    json_object_set_new(o, "all_final", json_boolean(rf->t_final_us >= 0));
    return o;
}

/* Writes the run as JSON to --json's file; failure to write is reported. */
static void report_json(const struct bench *b, const struct summary *sum)
{
    const struct options *o = &b->opt;
    json_t *kinds = json_object();
    for (size_t k = 0; k < REQ_KIND_COUNT; k++)
        if (k < REQ_KINDS_ALWAYS_REPORTED || kind_total(b, (enum req_kind)k) > 0)
            json_object_set_new(kinds, req_kind_name[k], kind_json(b, (enum req_kind)k));
    json_t *root = json_pack(
        "{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:I, s:I, s:o}", "scenario",
        scenario_name[o->scenario], "url", o->url, "run_id", b->run_id,
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
    if (sum->pays)
        json_object_set_new(root, "payments", payments_json(b, sum));
    if (sum->pays && o->scenario != SCENARIO_CREATE_AND_PAY) {
        json_object_set_new(root, "scenario_ok", json_boolean(sum->scenario_ok));
        json_object_set_new(root, "merchants", merchants_json(b));
    }
    if (o->scenario == SCENARIO_RETRY)
        json_object_set_new(root, "retry", retry_json(b));
    else if (o->scenario == SCENARIO_RACE)
        json_object_set_new(root, "race", race_json(b));
    else if (o->scenario == SCENARIO_MIX)
        json_object_set_new(root, "mix", mix_json(b, sum));
    else if (o->scenario == SCENARIO_REFUNDS)
        json_object_set_new(root, "refunds", refunds_json(b, sum));
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
            "usage: paybench --url URL --scenario SCENARIO\n"
            "                [--key KEY ... | --keys FILE] [--duration S]\n"
            "                [--rate PER_S | --concurrency N] [--connections N]\n"
            "                [--amount MINOR] [--currency CODE] [--settle-timeout S]\n"
            "                [--server-pid PID] [--json FILE] [--events FILE]\n"
            "                [--channel NAME] [--method NAME]\n"
            "                [--retries N] [--racers N] [--mix NAME=W,...] [--refund-share PCT]\n"
            "                [--metrics-url URL ...]\n"
            "                [--check --data-dir DIR | --store-url URL [--paysim CHANNEL=URL]]\n"
            "\n"
            "scenarios (each pays orders it creates, but static):\n"
            "  create-and-pay     order, then payment; one merchant\n"
            "  many-merchants     the same over every --key / --keys (round robin); isolation\n"
            "  retry              each payment sent again --retries times, same Idempotency-Key\n"
            "  race               --racers payments of one order at once, different keys\n"
            "  mix                methods drawn by the weights of --mix; outcomes checked\n"
            "  refunds            --refund-share %% of payments refunded in part while loading\n"
            "  static             GET the URL again and again (a server's ceiling)\n"
            "\n"
            "  --url URL          payment scenarios: payd's base URL (http://127.0.0.1:8080);\n"
            "                     static: the URL to GET (http:// only)\n"
            "  --key KEY          a merchant's API key; more than once (not for create-and-pay):\n"
            "                     sessions are spread over the merchants, round robin\n"
            "  --keys FILE        more keys, one a line (blank lines and # comments skipped)\n"
            "  --duration S       seconds of load (default 10)\n"
            "  --concurrency N    closed loop, N sessions in flight (default %d)\n"
            "  --rate PER_S       open loop, sessions started per second\n"
            "  --connections N    open loop: most sessions in flight (default %d)\n"
            "  --settle-timeout S how long to wait for payments to be final (default %d);\n"
            "                     with --check, paycheck then waits as long again for the\n"
            "                     store to hold nothing processing\n"
            "  --metrics-url URL  read the payments counters from URL/metrics (more than once:\n"
            "                     their sum), not from --url's: a cluster's workers make the\n"
            "                     outcomes its api instances do not\n"
            "  --server-pid PID   also report that process's CPU use\n"
            "  --json FILE        write the results as JSON\n"
            "  --events FILE      write a line per order and payment answer: wall-clock ms,\n"
            "                     order_create or payment_accept, HTTP status (0: none)\n"
            "  --channel NAME     the channel to pay with (default sandbox)\n"
            "  --method NAME      its method (default ok; not with mix)\n"
            "  --retries N        retry: retries of each payment, 1 ... %d (default %d)\n"
            "  --racers N         race: payments sent at once for each order, 2 ... %d\n"
            "                     (default %d)\n"
            "  --mix SPEC         mix: methods and weights (default %s)\n"
            "  --refund-share PCT refunds: share of accepted payments refunded (default %d)\n"
            "  --check            after the run, check the money invariants with paycheck\n"
            "                     (beside paybench, or $PAYCHECK) against payd's store\n"
            "                     (--data-dir, --store-url) and the channels' journals (the\n"
            "                     data directory's sandbox, --paysim CHANNEL=URL); its last\n"
            "                     line is paybench's: check: ok | check: FAILED <counts>\n"
            "exit status: 0 ok, 1 could not run, 2 usage, 3 ran but found problems\n",
            PB_DEFAULT_CONCURRENCY, PB_DEFAULT_CONNECTIONS, PB_SETTLE_TIMEOUT_S_DEFAULT,
            PB_RETRIES_MAX, PB_RETRIES_DEFAULT, PB_LANES_MAX, PB_RACERS_DEFAULT, PB_DEFAULT_MIX,
            PB_REFUND_SHARE_PCT_DEFAULT);
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

/* Whether `key` can go into an Authorization header as it is. */
static bool key_ok(const char *key)
{
    size_t len = strlen(key);
    if (len == 0 || len > PB_KEY_CHARS_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)key[i] <= 0x20 || (unsigned char)key[i] >= 0x7f)
            return false;
    return true;
}

static void options_add_key(struct options *o, const char *key, const char *where)
{
    if (!key_ok(key)) {
        fprintf(stderr, "paybench: %s: a key is 1 to %d printable characters without spaces\n",
                where, PB_KEY_CHARS_MAX);
        exit(2);
    }
    if (o->key_count == PB_MERCHANTS_MAX) {
        fprintf(stderr, "paybench: at most %d keys\n", PB_MERCHANTS_MAX);
        exit(2);
    }
    size_t len = strlen(key);
    char *copy = xcalloc(1, len + 1);
    memcpy(copy, key, len);
    o->keys[o->key_count++] = copy;
}

/* --keys FILE: one key a line; blank lines and lines starting with '#'
 * are skipped, white space around a key is dropped. */
static void options_read_keys(struct options *o, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "paybench: --keys %s: %s\n", path, strerror(errno));
        exit(2);
    }
    char line[PB_KEYS_LINE_CHARS_MAX + 2];
    unsigned line_no = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        line_no++;
        size_t len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            fprintf(stderr, "paybench: --keys %s:%u: line too long\n", path, line_no);
            exit(2);
        }
        while (len > 0 && strchr(" \t\r\n", line[len - 1]) != NULL)
            line[--len] = '\0';
        const char *key = line + strspn(line, " \t");
        if (*key == '\0' || *key == '#')
            continue;
        char where[PATH_MAX + 32];
        snprintf(where, sizeof(where), "--keys %s:%u", path, line_no);
        options_add_key(o, key, where);
    }
    bool failed = ferror(f) != 0;
    fclose(f);
    if (failed) {
        fprintf(stderr, "paybench: --keys %s: read error\n", path);
        exit(2);
    }
}

static void options_free(struct options *o)
{
    for (size_t i = 0; i < o->key_count; i++)
        free(o->keys[i]);
    o->key_count = 0;
}

/* An option that only one scenario takes, given to another. */
static void refuse_option(bool given, const struct options *o, enum scenario owner,
                          const char *name)
{
    if (given && o->scenario != owner) {
        fprintf(stderr, "paybench: --%s is for --scenario %s\n", name, scenario_name[owner]);
        exit(2);
    }
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
        OPT_KEYS,
        OPT_RETRIES,
        OPT_RACERS,
        OPT_MIX,
        OPT_REFUND_SHARE,
        OPT_METRICS_URL,
        OPT_EVENTS,
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
        {"keys", required_argument, NULL, OPT_KEYS},
        {"retries", required_argument, NULL, OPT_RETRIES},
        {"racers", required_argument, NULL, OPT_RACERS},
        {"mix", required_argument, NULL, OPT_MIX},
        {"refund-share", required_argument, NULL, OPT_REFUND_SHARE},
        {"metrics-url", required_argument, NULL, OPT_METRICS_URL},
        {"events", required_argument, NULL, OPT_EVENTS},
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
    o->retries = PB_RETRIES_DEFAULT;
    o->racers = PB_RACERS_DEFAULT;
    o->refund_share_pct = PB_REFUND_SHARE_PCT_DEFAULT;
    const char *scenario = NULL;
    const char *mix_spec = NULL;
    bool method_given = false;
    bool retries_given = false;
    bool racers_given = false;
    bool refund_share_given = false;
    int c;
    while ((c = getopt_long(argc, argv, "u:k:d:r:c:s:j:h", long_options, NULL)) != -1) {
        switch (c) {
        case 'u':
            o->url = optarg;
            break;
        case 'k':
            options_add_key(o, optarg, "--key");
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
        case OPT_EVENTS:
            o->events_path = optarg;
            break;
        case OPT_METRICS_URL:
            if (o->metrics_url_count == PB_METRICS_SOURCES_MAX) {
                fprintf(stderr, "paybench: --metrics-url given more than %d times\n",
                        PB_METRICS_SOURCES_MAX);
                exit(2);
            }
            o->metrics_urls[o->metrics_url_count++] = optarg;
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
            method_given = true;
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
        case OPT_KEYS:
            options_read_keys(o, optarg);
            break;
        case OPT_RETRIES:
            o->retries = parse_int_option("retries", optarg, 1, PB_RETRIES_MAX);
            retries_given = true;
            break;
        case OPT_RACERS:
            o->racers = parse_int_option("racers", optarg, 2, PB_LANES_MAX);
            racers_given = true;
            break;
        case OPT_MIX:
            mix_spec = optarg;
            break;
        case OPT_REFUND_SHARE:
            o->refund_share_pct = parse_int_option("refund-share", optarg, 0, 100);
            refund_share_given = true;
            break;
        case 'h':
            usage(stdout);
            options_free(o);
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
    o->scenario = SCENARIO_COUNT;
    for (size_t i = 0; i < SCENARIO_COUNT; i++)
        if (strcmp(scenario, scenario_name[i]) == 0)
            o->scenario = (enum scenario)i;
    if (o->scenario == SCENARIO_COUNT) {
        fprintf(stderr,
                "paybench: unknown scenario \"%s\" (create-and-pay, many-merchants, retry, race, "
                "mix, refunds, static)\n",
                scenario);
        exit(2);
    }
    if (!mix_name_ok(o->channel) || !mix_name_ok(o->method)) {
        fprintf(stderr, "paybench: --channel and --method: 1 to 32 of A-Z a-z 0-9 _ - .\n");
        exit(2);
    }
    refuse_option(retries_given, o, SCENARIO_RETRY, "retries");
    refuse_option(racers_given, o, SCENARIO_RACE, "racers");
    refuse_option(mix_spec != NULL, o, SCENARIO_MIX, "mix");
    refuse_option(refund_share_given, o, SCENARIO_REFUNDS, "refund-share");
    if (o->scenario == SCENARIO_MIX) {
        char error[256];
        if (method_given) {
            fprintf(stderr, "paybench: mix takes its methods from --mix, not --method\n");
            exit(2);
        }
        if (mix_parse(&o->mix, mix_spec != NULL ? mix_spec : PB_DEFAULT_MIX, error,
                      sizeof(error)) != 0) {
            fprintf(stderr, "paybench: --mix: %s\n", error);
            exit(2);
        }
    } else {
        mix_single(&o->mix, o->method);
    }
    if (o->check && (!scenario_pays(o->scenario) || (!o->data_dir && !o->store_url))) {
        fprintf(stderr, "paybench: --check needs a payment scenario (not static) and --data-dir"
                        " or --store-url\n");
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
    int64_t slots = o->rate_per_s > 0 ? o->connections : o->concurrency;
    if (slots * (int64_t)scenario_lanes(o) > PB_LANES_TOTAL_MAX) {
        fprintf(stderr,
                "paybench: %s needs %zu connections a session: at most %" PRId64
                " sessions in flight (--concurrency or --connections)\n",
                scenario_name[o->scenario], scenario_lanes(o),
                (int64_t)PB_LANES_TOTAL_MAX / (int64_t)scenario_lanes(o));
        exit(2);
    }
    if (!scenario_pays(o->scenario))
        return;
    if (o->scenario == SCENARIO_CREATE_AND_PAY && o->key_count != 1) {
        fprintf(stderr, "paybench: create-and-pay needs one --key (at most %d characters; several"
                        " merchants: --scenario many-merchants)\n",
                PB_KEY_CHARS_MAX);
        exit(2);
    }
    if (o->key_count == 0 || (o->scenario == SCENARIO_MANY_MERCHANTS && o->key_count < 2)) {
        fprintf(stderr, "paybench: %s needs %s (--key, --keys FILE)\n",
                scenario_name[o->scenario],
                o->scenario == SCENARIO_MANY_MERCHANTS ? "two keys or more" : "a key");
        exit(2);
    }
    size_t currency_len = strlen(o->currency);
    if (currency_len != 3 || strspn(o->currency, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != 3) {
        fprintf(stderr, "paybench: --currency must be three upper-case letters\n");
        exit(2);
    }
    if (o->scenario == SCENARIO_REFUNDS && o->amount_minor < PB_REFUND_AMOUNT_MIN) {
        fprintf(stderr, "paybench: refunds needs --amount %d or more (room for partial refunds)\n",
                PB_REFUND_AMOUNT_MIN);
        exit(2);
    }
}

/* Raises the soft limit of open files when the run needs more connections
 * than it allows (up to the hard limit; a warning when that is short). */
static void ensure_fd_limit(size_t connections)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)connections + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rlim_t hard = rl.rlim_max;
    rl.rlim_cur = hard != RLIM_INFINITY && hard < want ? hard : want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
        fprintf(stderr, "paybench: warning: %zu connections, but only %llu open files allowed\n",
                connections, (unsigned long long)rl.rlim_cur);
}

static void bench_init(struct bench *b, const struct options *o)
{
    memset(b, 0, sizeof(*b));
    b->opt = *o;
    b->stop_flag = &stop_requested;
    b->t_first_us = -1;
    b->t_final_us = -1;
    b->refund.t_final_us = -1;
    b->metrics_sent_us = -1;
    for (size_t k = 0; k < REQ_KIND_COUNT; k++)
        hist_init(&b->stats[k].latency);
    hist_init(&b->start_lag);
    b->mix = o->mix;

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
    if (o->events_path && !(b->events = fopen(o->events_path, "w")))
        die("cannot create the --events file");

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
    snprintf(b->path_refunds, sizeof(b->path_refunds), "%s/v1/refunds", prefix);
    snprintf(b->path_metrics, sizeof(b->path_metrics), "%s/metrics", prefix);

    size_t merchants = o->key_count > 0 ? o->key_count : 1;
    b->merchant_headers = xcalloc(merchants, sizeof(*b->merchant_headers));
    b->merchants = xcalloc(merchants, sizeof(*b->merchants));
    for (size_t i = 0; i < o->key_count; i++) {
        int n = snprintf(b->merchant_headers[i], sizeof(b->merchant_headers[i]),
                         "Authorization: Bearer %s\r\nContent-Type: application/json\r\n",
                         o->keys[i]);
        PB_ASSERT(n > 0 && (size_t)n < sizeof(b->merchant_headers[i]));
    }
    b->sample_cap = o->scenario == SCENARIO_MIX ? PB_READBACK_MAX : PB_SAMPLE_SIZE;
    b->sample = xcalloc(b->sample_cap, sizeof(*b->sample));
    b->verify_reads = o->scenario == SCENARIO_MANY_MERCHANTS ? 2 : 1;

    /* The requests that never change, formatted once. */
    int len = httpc_request_format(b->static_request, sizeof(b->static_request), &b->target, "GET",
                                   b->target.path, "", NULL, 0);
    PB_ASSERT(len > 0);
    b->static_request_len = (size_t)len;
    b->metrics_sources = o->metrics_url_count > 0 ? o->metrics_url_count : 1;
    for (size_t i = 0; i < b->metrics_sources; i++) {
        const char *path = b->path_metrics;
        char own_path[PB_PATH_CHARS_MAX];
        if (o->metrics_url_count == 0) {
            b->metrics_targets[i] = b->target;
        } else {
            if (httpc_target_parse(&b->metrics_targets[i], o->metrics_urls[i], error,
                                   sizeof(error)) != 0) {
                fprintf(stderr, "paybench: --metrics-url: %s\n", error);
                exit(2);
            }
            size_t n = strlen(b->metrics_targets[i].path);
            while (n > 0 && b->metrics_targets[i].path[n - 1] == '/')
                n--;
            snprintf(own_path, sizeof(own_path), "%.*s/metrics", (int)n,
                     b->metrics_targets[i].path);
            path = own_path;
        }
        len = httpc_request_format(b->metrics_requests[i], sizeof(b->metrics_requests[i]),
                                   &b->metrics_targets[i], "GET", path, "", NULL, 0);
        PB_ASSERT(len > 0);
        b->metrics_request_lens[i] = (size_t)len;
    }

    b->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (b->epoll_fd < 0)
        die("epoll_create1 failed");
    b->timeout_scan_due_us = clock_mono_us() + PB_TIMEOUT_SCAN_INTERVAL_US;
    b->slot_count = (size_t)(o->rate_per_s > 0 ? o->connections : o->concurrency);
    b->lanes_per_slot = scenario_lanes(o);
    ensure_fd_limit(b->slot_count * b->lanes_per_slot + 1);
    b->slots = xcalloc(b->slot_count, sizeof(*b->slots));
    b->wait_heap = xcalloc(b->slot_count, sizeof(*b->wait_heap));
    for (size_t i = 0; i < b->slot_count; i++) {
        slot_init(b, &b->slots[i], &b->target, b->lanes_per_slot, PB_RESPONSE_BYTES_MAX);
        b->slots[i].next_idle = b->idle;
        b->idle = &b->slots[i];
    }
    for (size_t i = 0; i < b->metrics_sources; i++)
        slot_init(b, &b->metrics_slots[i], &b->metrics_targets[i], 1, PB_METRICS_BYTES_MAX);
}

static void bench_free(struct bench *b)
{
    for (size_t i = 0; i < b->slot_count; i++)
        slot_free(&b->slots[i]);
    for (size_t i = 0; i < b->metrics_sources; i++)
        slot_free(&b->metrics_slots[i]);
    free(b->slots);
    free(b->wait_heap);
    free(b->sample);
    free(b->merchants);
    free(b->merchant_headers);
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
    /* The store has the last word on what is final (counters miss the
     * outcomes an instance made just before it died): paycheck waits until
     * it holds nothing processing, as long again as the settle phase. */
    char settle[24];
    snprintf(settle, sizeof(settle), "%" PRId64, b->opt.settle_timeout_s);
    argv[n++] = "--settle";
    argv[n++] = settle;
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
    bool pays = scenario_pays(options.scenario);

    if (pays && phase_baseline(b) != 0) {
        fprintf(stderr, "paybench: GET http://%s%s did not answer 200; is payd running?\n",
                b->target.authority, b->path_metrics);
        goto out_free;
    }
    phase_load(b);
    phase_drain(b);
    if (pays) {
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
    if (b->events && fclose(b->events) != 0 && exit_status == 0) {
        fprintf(stderr, "paybench: cannot write the --events file\n");
        exit_status = 1;
    }
    if (b->acked) {
        fclose(b->acked);
        unlink(b->acked_path);
    }
    bench_free(b);
    free(b);
    options_free(&options);
    return exit_status;
}
