/*
 * queue.h - the payment queue, consumer side.
 *
 * The order API never publishes: it writes the payment and its message to
 * the store's outbox in one transaction. A queue backend delivers those
 * messages to payment workers, at least once: a message that is not
 * acknowledged before its lease runs out is delivered again, with its
 * delivery count raised, so a worker can tell a first attempt from a retry.
 * Workers make every effect idempotent, so a second delivery is harmless.
 *
 * Backends: outbox (the outbox table is the durable queue: embedded, or
 * PostgreSQL shared by instances); NATS JetStream (cluster mode: a relay
 * publishes outbox rows to a stream that workers consume).
 */
#ifndef PAYD_QUEUE_QUEUE_H
#define PAYD_QUEUE_QUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/ids.h"
#include "store/store.h"

enum queue_rc {
    QUEUE_OK = 0,
    QUEUE_E_EMPTY = -1,   /* nothing arrived within the wait */
    QUEUE_E_STOPPED = -2, /* the queue is shutting down */
    QUEUE_E_IO = -3,
};

/* A message: the payment to process, as it stood when the message was
 * delivered (found is false when the payment no longer exists). */
struct queue_msg {
    int64_t id;
    char payment_id[ID_MAX];
    int64_t deliveries; /* 1 on the first delivery */
    bool found;
    struct payment payment;
    void *handle; /* the backend's own (a broker's message), or NULL */
};

typedef struct queue queue;

struct queue_backend {
    const char *name;
    /* Blocks up to wait_ms for the next message. */
    int (*next)(queue *q, struct queue_msg *out, int64_t wait_ms);
    /* Done with the message: it is not delivered again. */
    int (*ack)(queue *q, const struct queue_msg *m);
    /* Deliver the message again after delay_ms. */
    int (*retry)(queue *q, const struct queue_msg *m, int64_t delay_ms);
    /* Deliver it again after delay_ms as if this delivery had not happened
     * (its count is taken back): the worker did not reach the channel. A
     * crash before the deferral lands leaves the delivery counted, which
     * errs on the safe side (a counted delivery may have charged). */
    int (*defer)(queue *q, const struct queue_msg *m, int64_t delay_ms);
    /* A producer committed new messages: look for them now. */
    void (*notify)(queue *q);
    /* Wakes every waiting consumer with QUEUE_E_STOPPED. */
    void (*stop)(queue *q);
    void (*free)(queue *q);
};

struct queue {
    const struct queue_backend *be;
};

struct queue_outbox_options {
    int64_t lease_ms;  /* how long a delivered message stays invisible */
    int prefetch;      /* messages claimed ahead of the consumers, at most */
};

/* The embedded backend over the store's outbox table. Leases left by a
 * previous process on the same data directory are released at once. */
queue *queue_outbox_new(store *s, const struct queue_outbox_options *opts);

struct queue_nats_options {
    const char *urls;       /* nats://host:port[,nats://host:port...] */
    bool relay;             /* publish the outbox (instances that accept payments) */
    bool consume;           /* deliver messages to next() (worker instances) */
    int64_t ack_wait_ms;    /* a delivered message not acknowledged by then comes again */
    int max_deliver;        /* deliveries of one message at most; then a dead letter */
    int replicas;           /* the stream's replicas (a NATS cluster: 3) */
    int64_t sweep_after_ms; /* a processing payment sent this long ago is sent again */
    int prefetch;           /* messages fetched ahead of the consumers, at most */
};

/* NATS JetStream: a relay publishes outbox rows to the stream PAYD (each
 * with its payment id as Nats-Msg-Id) and marks them sent; workers consume
 * through the durable pull consumer payd-workers with explicit
 * acknowledgement; a message delivered max_deliver times is reported on the
 * stream PAYD_DEAD. NULL with a message in err when NATS cannot be reached. */
queue *queue_nats_new(store *s, const struct queue_nats_options *opts, char *err,
                      size_t err_size);

static inline int queue_next(queue *q, struct queue_msg *out, int64_t wait_ms)
{
    return q->be->next(q, out, wait_ms);
}
static inline int queue_ack(queue *q, const struct queue_msg *m)
{
    return q->be->ack(q, m);
}
static inline int queue_retry(queue *q, const struct queue_msg *m, int64_t delay_ms)
{
    return q->be->retry(q, m, delay_ms);
}
static inline int queue_defer(queue *q, const struct queue_msg *m, int64_t delay_ms)
{
    return q->be->defer(q, m, delay_ms);
}
static inline void queue_notify(queue *q)
{
    q->be->notify(q);
}
static inline void queue_stop(queue *q)
{
    q->be->stop(q);
}
static inline void queue_free(queue *q)
{
    if (q)
        q->be->free(q);
}

#endif
