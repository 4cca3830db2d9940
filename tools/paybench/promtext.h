/*
 * promtext.h - reads one sample out of a Prometheus text exposition (format
 * 0.0.4), which is all paybench needs from payd's GET /metrics: the value of
 * payd_payments_total{channel="sandbox",status="succeeded"} before, during
 * and after a run.
 */
#ifndef PAYBENCH_PROMTEXT_H
#define PAYBENCH_PROMTEXT_H

#include <stddef.h>
#include <stdint.h>

/*
 * Looks in text[0 .. len) for the first sample of metric `name` whose labels
 * include every pair in `label_pairs` (each written as `key="value"`,
 * `pair_count` of them; other labels may be present, in any order).
 * Returns 0 and stores the value, rounded to an integer, in *value_out; -1
 * when no such sample is there (a counter that has not been touched yet is
 * often absent, and counts as zero for the caller); -2 when the sample's
 * value is not a non-negative number.
 */
int promtext_find_counter(const char *text, size_t len, const char *name,
                          const char *const *label_pairs, size_t pair_count,
                          uint64_t *value_out);

#endif
