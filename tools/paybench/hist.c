/*
 * hist.c - the log-linear latency histogram declared in hist.h.
 *
 * Bucket layout: index v for v < 128; above that, for a value whose highest
 * set bit is e (7 <= e < 40), the top seven bits (64 ... 127) pick one of 64
 * sub-buckets in the group of exponent e.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "hist.h"

#include <string.h>

#include "common.h"

_Static_assert(HIST_EXACT_US == 2u * HIST_SUB_BUCKETS, "exact range is one group wide");

static uint32_t bucket_index(uint64_t value_us)
{
    if (value_us >= HIST_VALUE_US_LIMIT)
        value_us = HIST_VALUE_US_LIMIT - 1u;
    if (value_us < HIST_EXACT_US)
        return (uint32_t)value_us;
    uint32_t exponent = 63u - (uint32_t)__builtin_clzll(value_us);
    uint32_t shift = exponent - 6u;
    uint32_t sub = (uint32_t)(value_us >> shift) - HIST_SUB_BUCKETS; /* 0 ... 63 */
    uint32_t index = HIST_EXACT_US + (exponent - 7u) * HIST_SUB_BUCKETS + sub;
    PB_ASSERT(index < HIST_BUCKETS);
    return index;
}

/* The largest value that falls into bucket `index`. */
static uint64_t bucket_upper_us(uint32_t index)
{
    if (index < HIST_EXACT_US)
        return index;
    uint32_t group = (index - HIST_EXACT_US) / HIST_SUB_BUCKETS;
    uint32_t sub = (index - HIST_EXACT_US) % HIST_SUB_BUCKETS;
    uint32_t shift = group + 1u; /* exponent - 6 */
    uint64_t lower = (uint64_t)(HIST_SUB_BUCKETS + sub) << shift;
    return lower + ((UINT64_C(1) << shift) - 1u);
}

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min_us = UINT64_MAX;
}

void hist_record(struct hist *h, uint64_t value_us)
{
    h->count++;
    h->sum_us += value_us;
    if (value_us < h->min_us)
        h->min_us = value_us;
    if (value_us > h->max_us)
        h->max_us = value_us;
    h->bucket_count[bucket_index(value_us)]++;
}

uint64_t hist_percentile_us(const struct hist *h, uint32_t per_100k)
{
    if (h->count == 0)
        return 0;
    PB_ASSERT(per_100k <= 100000u);
    uint64_t rank = (h->count * per_100k + 99999u) / 100000u; /* ceil, 1-based */
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->bucket_count[i];
        if (seen >= rank) {
            uint64_t upper = bucket_upper_us(i);
            return upper < h->max_us ? upper : h->max_us;
        }
    }
    return h->max_us;
}

uint64_t hist_mean_us(const struct hist *h)
{
    return h->count == 0 ? 0 : h->sum_us / h->count;
}
