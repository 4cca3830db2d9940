/*
 * purge.h - the idempotency-key purger: a background thread that deletes
 * idempotency records older than their time to live, a bounded batch per
 * store operation so that the writer is never held for long.
 */
#ifndef PAYD_WORKER_PURGE_H
#define PAYD_WORKER_PURGE_H

#include <stdint.h>

#include "store/store.h"

typedef struct purger purger;

purger *purger_start(store *s, int64_t ttl_s, int64_t interval_s);
void purger_stop(purger *p);

#endif
