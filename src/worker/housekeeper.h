/*
 * housekeeper.h - one background thread for the store's periodic chores:
 * deleting idempotency records older than their time to live (api role),
 * and closing orders left unpaid past [orders] ttl_s (worker role). Each
 * chore is a bounded batch per store operation, repeated while there is
 * more, so that the writer is never held for long.
 */
#ifndef PAYD_WORKER_HOUSEKEEPER_H
#define PAYD_WORKER_HOUSEKEEPER_H

#include <stdint.h>

#include "store/store.h"

typedef struct housekeeper housekeeper;

struct housekeeper_options {
    int64_t idem_ttl_s;         /* 0: no purge */
    int64_t idem_interval_s;
    int64_t order_ttl_s;        /* 0: orders never close by themselves */
    int64_t order_interval_s;
};

housekeeper *housekeeper_start(store *s, const struct housekeeper_options *opts);
void housekeeper_stop(housekeeper *h); /* NULL is allowed */

#endif
