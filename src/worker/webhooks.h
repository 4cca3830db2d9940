/*
 * webhooks.h - merchant webhooks: payd POSTs an event to the merchant's
 * endpoint when one of its payments or refunds reaches a final status.
 *
 * The event is written in the same transaction as the status (store.h,
 * payment_finish, refund_finish), so none is lost, also across kill -9;
 * the senders here deliver it, signed:
 *
 *   Payd-Signature: t=<Unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
 *   Payd-Event-Id: evt_…
 *
 * A 2xx answer delivers it. Anything else (another status, a timeout, a
 * refused connection) is tried again after a backoff that doubles from
 * retry_base_ms up to retry_max_ms, until give_up_s after the event was
 * made; then it is failed. Delivery is at least once (an answer lost, or a
 * crash between the answer and its record, sends it again): merchants
 * deduplicate by the event id, which is the same on every attempt, as is
 * the body.
 */
#ifndef PAYD_WORKER_WEBHOOKS_H
#define PAYD_WORKER_WEBHOOKS_H

#include "app.h"

typedef struct webhook_sender webhook_sender;

struct webhook_options {
    int threads;
    int64_t timeout_ms;
    int64_t retry_base_ms;
    int64_t retry_max_ms;
    int64_t give_up_s;
    int64_t poll_ms;
    bool allow_private; /* false: refuse to connect to a non-public address */
};

webhook_sender *webhooks_start(struct app *app, const struct webhook_options *opts);
/* Events were committed here: look now. NULL is allowed. */
void webhooks_wake(webhook_sender *w);
void webhooks_stop(webhook_sender *w); /* NULL is allowed */

/* The body of an event: {"id","type","created_at","data":{the object}}
 * (a new string, or NULL when the object cannot be read). */
char *webhook_event_body(store *s, const struct event *e);

#endif
