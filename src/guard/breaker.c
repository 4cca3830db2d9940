/*
 * breaker.c - see breaker.h.
 *
 * The closed state, where nearly all calls happen, costs an atomic load in
 * breaker_allow() and a few relaxed atomic adds in breaker_record(); the
 * window is only summed when a failure or a slow call might have tripped
 * it. The mutex is taken for transitions, for the half-open state (rare,
 * and where exactly half_open_calls probes must pass) and once a second per
 * bucket to reset it.
 */
#include "guard/breaker.h"

#include <stddef.h>

#include "util/util.h"

#define NS_PER_S 1000000000LL

const char *breaker_state_name(enum breaker_state s)
{
    switch (s) {
    case BREAKER_CLOSED:
        return "closed";
    case BREAKER_OPEN:
        return "open";
    case BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "?";
}

int breaker_next_state(enum breaker_state from, enum breaker_event ev)
{
    static const int table[3][4] = {
        /*               TRIP          OPEN_ELAPSED        PROBES_PASSED    PROBE_FAILED */
        [BREAKER_CLOSED] = {BREAKER_OPEN, -1, -1, -1},
        [BREAKER_OPEN] = {-1, BREAKER_HALF_OPEN, -1, -1},
        [BREAKER_HALF_OPEN] = {-1, -1, BREAKER_CLOSED, BREAKER_OPEN},
    };
    if ((unsigned)from > BREAKER_HALF_OPEN || (unsigned)ev > BREAKER_EV_PROBE_FAILED)
        return -1;
    return table[from][ev];
}

void breaker_init(struct breaker *b, const char *name, const struct breaker_config *cfg,
                  breaker_report_fn *report, void *report_arg)
{
    PAYD_ASSERT(cfg->window_s >= 1 && cfg->window_s <= BREAKER_WINDOW_MAX_S);
    PAYD_ASSERT(cfg->half_open_calls >= 1);
    snprintf(b->name, sizeof(b->name), "%s", name);
    b->cfg = *cfg;
    atomic_init(&b->state, BREAKER_CLOSED);
    atomic_init(&b->gen, 1);
    atomic_init(&b->opened_ns, 0);
    b->probes_issued = b->probes_ok = 0;
    b->buckets = xcalloc((size_t)cfg->window_s, sizeof(*b->buckets));
    for (int64_t i = 0; i < cfg->window_s; i++)
        atomic_init(&b->buckets[i].sec, -1);
    atomic_init(&b->allowed, 0);
    atomic_init(&b->denied, 0);
    atomic_init(&b->transitions, 0);
    pthread_mutex_init(&b->mu, NULL);
    b->report = report;
    b->report_arg = report_arg;
}

void breaker_destroy(struct breaker *b)
{
    free(b->buckets);
    pthread_mutex_destroy(&b->mu);
}

/* The one transition function; under mu. False when ev does not apply to
 * the current state (another thread got there first). */
static bool transition(struct breaker *b, enum breaker_event ev, int64_t now_ns,
                       const char *why)
{
    enum breaker_state from = atomic_load(&b->state);
    int to = breaker_next_state(from, ev);
    if (to < 0)
        return false;
    switch (to) {
    case BREAKER_OPEN:
        atomic_store(&b->opened_ns, now_ns);
        break;
    case BREAKER_HALF_OPEN:
        b->probes_issued = b->probes_ok = 0;
        break;
    case BREAKER_CLOSED:
        for (int64_t i = 0; i < b->cfg.window_s; i++)
            atomic_store(&b->buckets[i].sec, -1);
        break;
    }
    atomic_fetch_add(&b->gen, 1);
    atomic_store(&b->state, to);
    atomic_fetch_add(&b->transitions, 1);
    if (b->report)
        b->report(b->report_arg, b->name, from, (enum breaker_state)to, why);
    return true;
}

enum breaker_state breaker_state_at(struct breaker *b, int64_t now_ns)
{
    enum breaker_state s = atomic_load(&b->state);
    if (s == BREAKER_OPEN && now_ns - atomic_load(&b->opened_ns) >= b->cfg.open_ns) {
        pthread_mutex_lock(&b->mu);
        if (atomic_load(&b->state) == BREAKER_OPEN &&
            now_ns - atomic_load(&b->opened_ns) >= b->cfg.open_ns)
            transition(b, BREAKER_EV_OPEN_ELAPSED, now_ns, "open_s elapsed");
        s = atomic_load(&b->state);
        pthread_mutex_unlock(&b->mu);
    }
    return s;
}

bool breaker_allow(struct breaker *b, int64_t now_ns, struct breaker_ticket *t)
{
    if (atomic_load_explicit(&b->state, memory_order_acquire) == BREAKER_CLOSED) {
        t->gen = atomic_load_explicit(&b->gen, memory_order_relaxed);
        t->probe = false;
        /* A transition between the two loads only makes the ticket stale. */
        atomic_fetch_add_explicit(&b->allowed, 1, memory_order_relaxed);
        return true;
    }
    if (breaker_state_at(b, now_ns) == BREAKER_OPEN) {
        atomic_fetch_add_explicit(&b->denied, 1, memory_order_relaxed);
        return false;
    }
    bool ok = false;
    pthread_mutex_lock(&b->mu);
    switch (atomic_load(&b->state)) {
    case BREAKER_CLOSED:
        t->gen = atomic_load(&b->gen);
        t->probe = false;
        ok = true;
        break;
    case BREAKER_HALF_OPEN:
        if (b->probes_issued < b->cfg.half_open_calls) {
            b->probes_issued++;
            t->gen = atomic_load(&b->gen);
            t->probe = true;
            ok = true;
        }
        break;
    case BREAKER_OPEN:
        break;
    }
    pthread_mutex_unlock(&b->mu);
    atomic_fetch_add_explicit(ok ? &b->allowed : &b->denied, 1, memory_order_relaxed);
    return ok;
}

void breaker_cancel(struct breaker *b, const struct breaker_ticket *t)
{
    if (!t->probe)
        return;
    pthread_mutex_lock(&b->mu);
    if (atomic_load(&b->gen) == t->gen && atomic_load(&b->state) == BREAKER_HALF_OPEN &&
        b->probes_issued > 0)
        b->probes_issued--;
    pthread_mutex_unlock(&b->mu);
}

/* The bucket of second sec, reset if it still holds an older second. */
static struct breaker_bucket *bucket_for(struct breaker *b, int64_t sec)
{
    struct breaker_bucket *k = &b->buckets[sec % b->cfg.window_s];
    if (atomic_load_explicit(&k->sec, memory_order_acquire) != sec) {
        pthread_mutex_lock(&b->mu);
        if (atomic_load(&k->sec) != sec) {
            atomic_store(&k->calls, 0);
            atomic_store(&k->failures, 0);
            atomic_store(&k->slow, 0);
            atomic_store_explicit(&k->sec, sec, memory_order_release);
        }
        pthread_mutex_unlock(&b->mu);
    }
    return k;
}

void breaker_window(struct breaker *b, int64_t now_ns, int64_t *calls, int64_t *failures,
                    int64_t *slow)
{
    int64_t now_s = now_ns / NS_PER_S;
    *calls = *failures = *slow = 0;
    for (int64_t i = 0; i < b->cfg.window_s; i++) {
        struct breaker_bucket *k = &b->buckets[i];
        int64_t sec = atomic_load_explicit(&k->sec, memory_order_acquire);
        if (sec < 0 || sec <= now_s - b->cfg.window_s || sec > now_s)
            continue;
        *calls += atomic_load_explicit(&k->calls, memory_order_relaxed);
        *failures += atomic_load_explicit(&k->failures, memory_order_relaxed);
        *slow += atomic_load_explicit(&k->slow, memory_order_relaxed);
    }
}

void breaker_record(struct breaker *b, const struct breaker_ticket *t, enum breaker_outcome o,
                    int64_t duration_ns, int64_t now_ns)
{
    bool slow = duration_ns >= b->cfg.slow_call_ns;
    if (atomic_load_explicit(&b->gen, memory_order_acquire) != t->gen)
        return; /* let through in an earlier state */
    if (t->probe) {
        pthread_mutex_lock(&b->mu);
        if (atomic_load(&b->gen) == t->gen && atomic_load(&b->state) == BREAKER_HALF_OPEN) {
            if (o == BREAKER_FAILURE || slow)
                transition(b, BREAKER_EV_PROBE_FAILED, now_ns,
                           o == BREAKER_FAILURE ? "a probe failed" : "a probe was slow");
            else if (++b->probes_ok >= b->cfg.half_open_calls)
                transition(b, BREAKER_EV_PROBES_PASSED, now_ns, "every probe succeeded");
        }
        pthread_mutex_unlock(&b->mu);
        return;
    }
    struct breaker_bucket *k = bucket_for(b, now_ns / NS_PER_S);
    atomic_fetch_add_explicit(&k->calls, 1, memory_order_relaxed);
    if (o == BREAKER_FAILURE)
        atomic_fetch_add_explicit(&k->failures, 1, memory_order_relaxed);
    if (slow)
        atomic_fetch_add_explicit(&k->slow, 1, memory_order_relaxed);
    if (o != BREAKER_FAILURE && !slow)
        return; /* a success cannot raise either ratio */
    int64_t calls, failures, slows;
    breaker_window(b, now_ns, &calls, &failures, &slows);
    if (calls < b->cfg.min_calls)
        return;
    /* Compare shares, not ratio * calls: 0.07 * 100 is 7.000000000000001,
     * so 7 failures of 100 would not reach a failure_ratio of 0.07. */
    bool failing = (double)failures / (double)calls >= b->cfg.failure_ratio;
    bool slowing = (double)slows / (double)calls >= b->cfg.slow_ratio;
    if (!failing && !slowing)
        return;
    char why[96];
    snprintf(why, sizeof(why), "%s: %lld of %lld calls in %llds",
             failing ? "failure ratio" : "slow-call ratio",
             (long long)(failing ? failures : slows), (long long)calls,
             (long long)b->cfg.window_s);
    pthread_mutex_lock(&b->mu);
    if (atomic_load(&b->gen) == t->gen)
        transition(b, BREAKER_EV_TRIP, now_ns, why);
    pthread_mutex_unlock(&b->mu);
}
