/*
 * leaky_bucket.c - see leaky_bucket.h.
 */
#include "guard/leaky_bucket.h"

#include <math.h>

/* The longest interval: a quarter of the int64 range (73 years), so that
 * 1e9 / rate cannot overflow (llround's answer then is not a number of
 * ns: a tiny rate became one call a ns) and slot + interval cannot either. */
#define INTERVAL_MAX_NS (INT64_MAX / 4)

void leaky_bucket_set(struct leaky_bucket *b, double rate)
{
    int64_t interval = 0;
    if (rate > 0)
        interval = 1e9 / rate >= (double)INTERVAL_MAX_NS ? INTERVAL_MAX_NS
                                                         : (int64_t)llround(1e9 / rate);
    atomic_store(&b->interval_ns, rate > 0 && interval < 1 ? 1 : interval);
}

void leaky_bucket_init(struct leaky_bucket *b, double rate)
{
    atomic_init(&b->interval_ns, 0);
    atomic_init(&b->next_ns, INT64_MIN / 2);
    atomic_init(&b->paced, 0);
    atomic_init(&b->deferred, 0);
    atomic_init(&b->waited_ns, 0);
    leaky_bucket_set(b, rate);
}

double leaky_bucket_rate(const struct leaky_bucket *b)
{
    int64_t t = atomic_load_explicit(&b->interval_ns, memory_order_relaxed);
    return t > 0 ? 1e9 / (double)t : 0;
}

int64_t leaky_bucket_reserve(struct leaky_bucket *b, int64_t now_ns, int64_t max_wait_ns,
                             int64_t *retry_ns)
{
    int64_t t = atomic_load_explicit(&b->interval_ns, memory_order_relaxed);
    if (t == 0) {
        atomic_fetch_add_explicit(&b->paced, 1, memory_order_relaxed);
        return 0;
    }
    int64_t next = atomic_load_explicit(&b->next_ns, memory_order_relaxed);
    for (;;) {
        int64_t slot = next > now_ns ? next : now_ns;
        int64_t wait = slot - now_ns;
        if (wait > max_wait_ns) {
            if (retry_ns)
                *retry_ns = wait - max_wait_ns;
            atomic_fetch_add_explicit(&b->deferred, 1, memory_order_relaxed);
            return -1;
        }
        if (atomic_compare_exchange_weak_explicit(&b->next_ns, &next, slot + t,
                                                  memory_order_relaxed, memory_order_relaxed)) {
            atomic_fetch_add_explicit(&b->paced, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&b->waited_ns, wait, memory_order_relaxed);
            return wait;
        }
    }
}
