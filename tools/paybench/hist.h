/*
 * hist.h - a latency histogram in microseconds for paybench.
 *
 * Log-linear buckets in the manner of HdrHistogram: values below 128 us are
 * counted exactly, larger ones in 64 sub-buckets per power of two, so a
 * reported percentile is at most 1/64 (1.6 %) above the true value. The
 * histogram is a fixed-size value type (no allocation); the exact minimum,
 * maximum and sum are kept beside the buckets. Values at or above
 * HIST_VALUE_US_LIMIT (about 12.7 days) are clamped into the last bucket.
 */
#ifndef PAYBENCH_HIST_H
#define PAYBENCH_HIST_H

#include <stdint.h>

#define HIST_EXACT_US 128u
#define HIST_SUB_BUCKETS 64u
#define HIST_TOP_EXPONENT 40u /* values < 2^40 us are bucketed */
#define HIST_VALUE_US_LIMIT (UINT64_C(1) << HIST_TOP_EXPONENT)
#define HIST_BUCKETS (HIST_EXACT_US + (HIST_TOP_EXPONENT - 7u) * HIST_SUB_BUCKETS)

struct hist {
    uint64_t count;
    uint64_t sum_us;
    uint64_t min_us;
    uint64_t max_us;
    uint64_t bucket_count[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t value_us);

/* The value at or below which `per_100k` hundred-thousandths of the recorded
 * values lie (50000 = p50, 99900 = p99.9), as the upper edge of its bucket,
 * capped at the exact maximum. 0 when the histogram is empty. */
uint64_t hist_percentile_us(const struct hist *h, uint32_t per_100k);

/* Mean in microseconds, rounded down; 0 when empty. */
uint64_t hist_mean_us(const struct hist *h);

#endif
