/*
 * refunds.h - refund workers: take the refunds that are due from the
 * store, ask their channel to refund, and record the outcome.
 *
 * A refund is a row of the store, not a queue message: refunds are few
 * next to payments, so the workers claim due rows (a lease, as the outbox
 * gives a message) instead of sharing the payments' queue, and the same
 * code serves the embedded and the cluster store. A refund whose call
 * failed or went unanswered is sent again later under the same refund
 * number, which the channel deduplicates: a refund is never made twice and
 * never given up while its outcome is unknown. A refusal from the channel
 * fails it and makes its amount refundable again.
 */
#ifndef PAYD_WORKER_REFUNDS_H
#define PAYD_WORKER_REFUNDS_H

#include "app.h"

typedef struct refunder refunder;

struct refunder_options {
    int threads;
    int64_t lease_ms;      /* a claimed refund comes back after this */
    int max_attempts;      /* calls after which an unfinished refund is escalated */
    int64_t retry_base_ms; /* first backoff; doubles per attempt */
    int64_t retry_max_ms;
    int64_t poll_ms;       /* how often to look for refunds other instances made */
};

refunder *refunder_start(struct app *app, const struct refunder_options *opts);
/* A refund was created here: look now rather than at the next poll. */
void refunder_wake(refunder *r);
/* Finishes the refund in hand and stops; NULL is allowed. */
void refunder_stop(refunder *r);

#endif
