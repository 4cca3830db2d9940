/*
 * leaky_bucket.h - pacing: a leaky bucket used as a queue, so calls leave
 * evenly spaced at a contracted rate, as a PSP's QPS quota demands.
 *
 * A caller reserves the next departure slot and waits until it. Slots are
 * handed out by one compare-and-swap on the next free slot's time, so
 * reservations are lock-free and strictly spaced 1/rate apart. A caller
 * whose slot would be further away than the wait bound takes no slot: it
 * is told how long until one would be within the bound and puts its work
 * back in the durable queue for that long.
 */
#ifndef PAYD_GUARD_LEAKY_BUCKET_H
#define PAYD_GUARD_LEAKY_BUCKET_H

#include <stdatomic.h>
#include <stdint.h>

struct leaky_bucket {
    _Atomic int64_t interval_ns; /* 0: unpaced */
    _Atomic int64_t next_ns;     /* the next free departure slot */
    atomic_uint_fast64_t paced, deferred;
    _Atomic int64_t waited_ns; /* total time callers waited for their slot */
};

void leaky_bucket_init(struct leaky_bucket *b, double rate);
void leaky_bucket_set(struct leaky_bucket *b, double rate);
double leaky_bucket_rate(const struct leaky_bucket *b);

/* Reserves a slot at most max_wait_ns after now_ns: returns the wait (>= 0)
 * until it. Returns -1 when the next slot is further away; then *retry_ns is
 * how long until it would be within the bound. */
int64_t leaky_bucket_reserve(struct leaky_bucket *b, int64_t now_ns, int64_t max_wait_ns,
                             int64_t *retry_ns);

#endif
