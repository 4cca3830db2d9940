/*
 * token_bucket.c - GCRA; see token_bucket.h.
 *
 * With T = 1/rate and tau = burst * T, a request at time t is admitted when
 * max(tat, t) + T - t <= tau, and then tat becomes max(tat, t) + T. A full
 * bucket is tat <= t; each admitted request moves tat one T later, so b
 * requests at one instant are admitted and the next waits T.
 */
#include "guard/token_bucket.h"

#include <math.h>

/* The longest interval and the deepest bucket (tau), in ns: a quarter of
 * the int64 range (73 years) each, so that neither 1e9 / rate nor burst *
 * interval overflows, nor tat + interval with tat at most tau ahead of the
 * clock. A rate below one per 73 years, or a burst that would take longer
 * to refill, is as good as that. */
#define SPAN_MAX_NS (INT64_MAX / 4)

void rate_limit_set(struct rate_limit *l, double rate, int64_t burst)
{
    int64_t interval = 0;
    if (rate > 0)
        interval = 1e9 / rate >= (double)SPAN_MAX_NS ? SPAN_MAX_NS : (int64_t)llround(1e9 / rate);
    if (rate > 0 && interval < 1)
        interval = 1;
    if (burst <= 0)
        burst = rate > 1 ? (int64_t)ceil(rate) : 1;
    atomic_store(&l->burst, burst);
    atomic_store(&l->interval_ns, interval);
}

double rate_limit_rate(const struct rate_limit *l)
{
    int64_t t = atomic_load_explicit(&l->interval_ns, memory_order_relaxed);
    return t > 0 ? 1e9 / (double)t : 0;
}

void token_bucket_init(struct token_bucket *b)
{
    atomic_init(&b->tat_ns, INT64_MIN / 2);
    atomic_init(&b->admitted, 0);
    atomic_init(&b->rejected, 0);
}

bool token_bucket_take(struct token_bucket *b, const struct rate_limit *l, int64_t now_ns,
                       int64_t *wait_ns)
{
    int64_t t = atomic_load_explicit(&l->interval_ns, memory_order_relaxed);
    if (t == 0) {
        atomic_fetch_add_explicit(&b->admitted, 1, memory_order_relaxed);
        return true;
    }
    int64_t burst = atomic_load_explicit(&l->burst, memory_order_relaxed);
    int64_t tau = burst > SPAN_MAX_NS / t ? SPAN_MAX_NS : t * burst;
    int64_t tat = atomic_load_explicit(&b->tat_ns, memory_order_relaxed);
    for (;;) {
        int64_t next = (tat > now_ns ? tat : now_ns) + t;
        if (next - now_ns > tau) {
            if (wait_ns)
                *wait_ns = next - now_ns - tau;
            atomic_fetch_add_explicit(&b->rejected, 1, memory_order_relaxed);
            return false;
        }
        if (atomic_compare_exchange_weak_explicit(&b->tat_ns, &tat, next, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            atomic_fetch_add_explicit(&b->admitted, 1, memory_order_relaxed);
            return true;
        }
    }
}

double token_bucket_tokens(struct token_bucket *b, const struct rate_limit *l, int64_t now_ns)
{
    int64_t t = atomic_load_explicit(&l->interval_ns, memory_order_relaxed);
    if (t == 0)
        return INFINITY;
    int64_t burst = atomic_load_explicit(&l->burst, memory_order_relaxed);
    int64_t tat = atomic_load_explicit(&b->tat_ns, memory_order_relaxed);
    int64_t ahead = tat > now_ns ? tat - now_ns : 0;
    double tokens = (double)burst - (double)ahead / (double)t;
    return tokens > 0 ? tokens : 0;
}
