/*
 * breaker.h - a circuit breaker per channel.
 *
 *   closed ──trip──▶ open ──open_s elapsed──▶ half-open ──all probes ok──▶ closed
 *                     ▲                            │
 *                     └────────any probe fails─────┘
 *
 * Closed: every call goes through and its outcome lands in a sliding window
 * of window_s one-second buckets. The breaker trips when the window holds
 * at least min_calls calls and the share of failures (system errors,
 * timeouts, unknown outcomes) reaches failure_ratio, or the share of calls
 * slower than slow_call_ms reaches slow_ratio. Declines are answers, not
 * failures. Open: no call goes through until open_s has passed. Half-open:
 * exactly half_open_calls calls go through as probes; when all of them
 * succeed the breaker closes (with an empty window), and the first that
 * fails opens it again.
 *
 * Each state change goes through one transition function, which checks it
 * against the table of allowed transitions and reports it (the owner logs
 * it, counts it and drops cached views of the channel).
 *
 * Calls hold a ticket from breaker_allow(): outcomes of calls let through
 * in an earlier state (a generation ago) count for nothing.
 */
#ifndef PAYD_GUARD_BREAKER_H
#define PAYD_GUARD_BREAKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define BREAKER_WINDOW_MAX_S 600

enum breaker_state { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN };

enum breaker_event {
    BREAKER_EV_TRIP,          /* closed: thresholds reached */
    BREAKER_EV_OPEN_ELAPSED,  /* open: open_s has passed */
    BREAKER_EV_PROBES_PASSED, /* half-open: every probe succeeded */
    BREAKER_EV_PROBE_FAILED,  /* half-open: a probe failed */
};

enum breaker_outcome { BREAKER_SUCCESS, BREAKER_FAILURE };

struct breaker_config {
    int64_t window_s;
    int64_t min_calls;
    double failure_ratio;
    int64_t slow_call_ns;
    double slow_ratio;
    int64_t open_ns;
    int64_t half_open_calls;
};

struct breaker_ticket {
    int64_t gen;
    bool probe;
};

struct breaker_bucket {
    _Atomic int64_t sec; /* which second the counts are for */
    _Atomic int64_t calls, failures, slow;
};

typedef void breaker_report_fn(void *arg, const char *name, enum breaker_state from,
                               enum breaker_state to, const char *why);

struct breaker {
    char name[40];
    struct breaker_config cfg;
    _Atomic int state; /* enum breaker_state */
    _Atomic int64_t gen;
    _Atomic int64_t opened_ns;
    int64_t probes_issued, probes_ok; /* under mu */
    struct breaker_bucket *buckets;   /* cfg.window_s of them */
    atomic_uint_fast64_t allowed, denied, transitions;
    pthread_mutex_t mu;
    breaker_report_fn *report;
    void *report_arg;
};

const char *breaker_state_name(enum breaker_state s);

/* The state a transition leads to, or -1 when the event is not allowed in
 * that state. Pure: this is the whole state machine. */
int breaker_next_state(enum breaker_state from, enum breaker_event ev);

void breaker_init(struct breaker *b, const char *name, const struct breaker_config *cfg,
                  breaker_report_fn *report, void *report_arg);
void breaker_destroy(struct breaker *b);

/* May a call go through at now_ns? Fills the ticket when it may. */
bool breaker_allow(struct breaker *b, int64_t now_ns, struct breaker_ticket *t);
/* The outcome of a call let through with ticket t, which took duration_ns. */
void breaker_record(struct breaker *b, const struct breaker_ticket *t, enum breaker_outcome o,
                    int64_t duration_ns, int64_t now_ns);
/* A call let through was not made after all (its probe is handed back). */
void breaker_cancel(struct breaker *b, const struct breaker_ticket *t);

/* The state at now_ns (moves open to half-open once open_s has passed). */
enum breaker_state breaker_state_at(struct breaker *b, int64_t now_ns);

/* Calls and failures in the window at now_ns (for the admin view). */
void breaker_window(struct breaker *b, int64_t now_ns, int64_t *calls, int64_t *failures,
                    int64_t *slow);

#endif
