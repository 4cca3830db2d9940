/*
 * token_bucket.h - a token bucket as GCRA (the generic cell rate
 * algorithm): one atomic "theoretical arrival time" per bucket, moved by a
 * compare-and-swap, so a check is lock-free and costs a few atomic
 * operations, whatever the number of threads.
 *
 * A bucket of rate r and burst b admits b requests at once when full and
 * refills one token every 1/r seconds. The rate is kept apart from the
 * bucket (struct rate_limit) so that many buckets (one per merchant) share
 * one setting, which an operator can change at run time.
 *
 * Time is passed in (nanoseconds on any monotonic clock), so tests drive a
 * fake clock.
 */
#ifndef PAYD_GUARD_TOKEN_BUCKET_H
#define PAYD_GUARD_TOKEN_BUCKET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct rate_limit {
    _Atomic int64_t interval_ns; /* 1e9 / rate; 0: unlimited */
    _Atomic int64_t burst;       /* tokens when full, >= 1 */
};

struct token_bucket {
    _Atomic int64_t tat_ns; /* when the bucket will be full again */
    atomic_uint_fast64_t admitted, rejected;
};

/* Sets the rate (per second; 0 = unlimited) and the burst (0 = the rate,
 * rounded up, and at least 1). */
void rate_limit_set(struct rate_limit *l, double rate, int64_t burst);
double rate_limit_rate(const struct rate_limit *l);

void token_bucket_init(struct token_bucket *b);

/* Takes a token at now_ns. False when there is none; then *wait_ns (when not
 * NULL) is the time until one is due. Counts the outcome. */
bool token_bucket_take(struct token_bucket *b, const struct rate_limit *l, int64_t now_ns,
                       int64_t *wait_ns);

/* Tokens available at now_ns (for the admin view). */
double token_bucket_tokens(struct token_bucket *b, const struct rate_limit *l, int64_t now_ns);

#endif
