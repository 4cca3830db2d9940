/*
 * tally.h - counts of labelled outcomes for paybench's reports: the answers
 * a scenario got by status and error code ("409 payment_in_progress"), or
 * the final statuses of payments by failure code ("failed card_declined").
 *
 * A tally is a fixed-size value type (no allocation). It keeps at most
 * TALLY_LABELS_MAX distinct labels, in the order they first came; counts of
 * any further label go to `other`, so a server answering something new on
 * every request cannot grow it.
 */
#ifndef PAYBENCH_TALLY_H
#define PAYBENCH_TALLY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TALLY_LABELS_MAX 16
#define TALLY_LABEL_CHARS_MAX 63 /* longer labels are cut */

struct tally_entry {
    char label[TALLY_LABEL_CHARS_MAX + 1];
    uint64_t count;
};

struct tally {
    size_t len;
    struct tally_entry entry[TALLY_LABELS_MAX];
    uint64_t other; /* labels past the first TALLY_LABELS_MAX distinct ones */
};

/* Counts one more `label`. A zeroed struct tally is an empty tally. */
void tally_add(struct tally *t, const char *label);

/* The count of `label` (0 when it never came; labels in `other` are not
 * found). */
uint64_t tally_count(const struct tally *t, const char *label);

/* Everything counted, `other` included. */
uint64_t tally_total(const struct tally *t);

/* Prints "label=count, label=count" (and "other=count") to `out`; "none"
 * when the tally is empty. */
void tally_print(const struct tally *t, FILE *out);

#endif
