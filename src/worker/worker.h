/*
 * worker.h - payment workers: the "worker" role of payd.
 *
 * Each worker thread takes a message from the queue, takes the order's lock
 * (a fencing token), asks the channel (charge on a first delivery, query on
 * any later one), and commits the outcome with the token. A timeout or lost
 * answer is never charged again: the message comes back after a backoff and
 * the channel is queried by serial number until it knows.
 */
#ifndef PAYD_WORKER_WORKER_H
#define PAYD_WORKER_WORKER_H

#include "app.h"

typedef struct worker_pool worker_pool;

struct worker_options {
    int threads;
    int64_t lease_ms;      /* order lock TTL; also the queue lease */
    int max_attempts;      /* system errors before a payment fails */
    int64_t retry_base_ms; /* first backoff; doubles per delivery */
    int64_t retry_max_ms;
};

worker_pool *worker_pool_start(struct app *app, const struct worker_options *opts);
/* Joins the workers; call after queue_stop() so that none waits for work.
 * A worker finishes the payment in hand first. */
void worker_pool_stop(worker_pool *pool);

#endif
