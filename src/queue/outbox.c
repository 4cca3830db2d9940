/*
 * outbox.c - the embedded queue: the store's outbox table, claimed with
 * leases; see queue.h.
 *
 * One dispatcher thread claims due messages in batches (one store write per
 * batch sets their lease and counts the delivery) into a bounded ring that
 * the workers take from. When nothing is due it sleeps until the earliest
 * message falls due, at most a second, or until a producer notifies it.
 * Acknowledging deletes the row; acknowledgements are gathered and written
 * as one store operation per dispatcher round (or when ACK_BATCH_MAX are
 * waiting). Retrying moves the row's due time. Neither waits for its commit:
 * a lost acknowledgement only means one more delivery, which the worker
 * handles idempotently.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "obs/log.h"
#include "queue/queue.h"
#include "util/util.h"

#define IDLE_POLL_MS 1000
#define ACK_BATCH_MAX 1024 /* acknowledgements kept before they must be written */
#define RESET_RETRY_MS 200

struct outbox_queue {
    queue base;
    store *store;
    int64_t lease_ms;
    pthread_t dispatcher;
    pthread_mutex_t mu;
    pthread_cond_t has_msgs;  /* workers wait here */
    pthread_cond_t wake;      /* the dispatcher waits here */
    struct queue_msg *ring;
    int ring_cap, ring_head, ring_len;
    bool notified;
    bool stopping;
    int64_t *acks; /* acknowledged ids not yet written: one store op per batch */
    int ack_len;
};

/* A batch of acknowledgements on its way to the store. */
struct ack_batch {
    struct store_op op;
    int64_t ids[ACK_BATCH_MAX];
};

/* Claims up to max due messages; returns how many, or -1 on failure. */
static int claim(struct outbox_queue *q, struct outbox_msg *msgs, int max)
{
    struct store_op op = {.kind = STORE_OP_OUTBOX_CLAIM};
    op.in.outbox_claim.max = max;
    op.in.outbox_claim.lease_ms = q->lease_ms;
    op.in.outbox_claim.msgs = msgs;
    if (store_exec(q->store, &op, 1000) != STORE_OK)
        return -1;
    return op.out.claimed;
}

static void free_op(struct store_op *op)
{
    free(op);
}

/* Submits a store op that frees itself when done, retrying while the write
 * queue is full (up to 5 s). Returns 0 or -1 (then op is freed). */
static int submit_owned(struct outbox_queue *q, struct store_op *op)
{
    op->done = free_op;
    int64_t deadline_ms = clock_mono_ms() + 5000;
    int rc;
    while ((rc = store_submit(q->store, op)) == STORE_E_BUSY && clock_mono_ms() < deadline_ms)
        sleep_ms(2);
    if (rc != STORE_OK) {
        free(op);
        return -1;
    }
    return 0;
}

/* Writes the gathered acknowledgements. Called with the mutex held; drops
 * it while submitting. */
static void flush_acks_locked(struct outbox_queue *q)
{
    if (q->ack_len == 0)
        return;
    struct ack_batch *b = xmalloc(sizeof(*b));
    memset(&b->op, 0, sizeof(b->op));
    b->op.kind = STORE_OP_OUTBOX_ACK;
    memcpy(b->ids, q->acks, (size_t)q->ack_len * sizeof(int64_t));
    b->op.in.outbox_ack.count = q->ack_len;
    b->op.in.outbox_ack.ids = b->ids;
    q->ack_len = 0;
    pthread_mutex_unlock(&q->mu);
    _Static_assert(offsetof(struct ack_batch, op) == 0, "the op heads the batch");
    submit_owned(q, &b->op); /* on failure the rows are delivered again */
    pthread_mutex_lock(&q->mu);
}

/* This process owns the data directory (the caller holds its lock), so
 * every lease still in the table belongs to a process that is gone: they are
 * released before the first claim. When the store cannot write (a full
 * disk), nothing can be claimed either, so this is tried again until it
 * succeeds; claiming first would let a later release take back this
 * process's own leases. */
static void release_old_leases(struct outbox_queue *q)
{
    bool told = false;
    for (;;) {
        struct store_op reset = {.kind = STORE_OP_OUTBOX_RESET};
        int rc = store_exec(q->store, &reset, 5000);
        if (rc == STORE_OK)
            break;
        if (!told) {
            log_warn("outbox_reset_failed", "error", store_rc_name(rc), NULL);
            told = true;
        }
        pthread_mutex_lock(&q->mu);
        bool stopping = q->stopping;
        if (!stopping) {
            struct timespec ts;
            clock_deadline(RESET_RETRY_MS, &ts);
            pthread_cond_timedwait(&q->wake, &q->mu, &ts);
            stopping = q->stopping;
        }
        pthread_mutex_unlock(&q->mu);
        if (stopping)
            return;
    }
    if (told)
        log_info("outbox_reset_done", NULL);
}

static void *dispatcher_main(void *arg)
{
    struct outbox_queue *q = arg;
    pthread_setname_np(pthread_self(), "payd-outbox");
    release_old_leases(q);
    struct outbox_msg *msgs = xcalloc(STORE_CLAIM_MAX, sizeof(*msgs));
    pthread_mutex_lock(&q->mu);
    while (!q->stopping) {
        flush_acks_locked(q);
        int space = q->ring_cap - q->ring_len;
        if (space == 0) {
            pthread_cond_wait(&q->wake, &q->mu);
            continue;
        }
        q->notified = false;
        pthread_mutex_unlock(&q->mu);

        int n = claim(q, msgs, space < STORE_CLAIM_MAX ? space : STORE_CLAIM_MAX);
        int64_t sleep_ms_max = 0;
        if (n <= 0) {
            int64_t due_ms = store_outbox_next_due_ms(q->store);
            int64_t now_ms = clock_wall_ms();
            sleep_ms_max = due_ms == INT64_MAX ? IDLE_POLL_MS : due_ms - now_ms;
            if (sleep_ms_max > IDLE_POLL_MS)
                sleep_ms_max = IDLE_POLL_MS;
            if (sleep_ms_max < 1)
                sleep_ms_max = n < 0 ? 100 : 1;
        }

        pthread_mutex_lock(&q->mu);
        for (int i = 0; i < n; i++) {
            struct queue_msg *m = &q->ring[(q->ring_head + q->ring_len) % q->ring_cap];
            m->id = msgs[i].id;
            memcpy(m->payment_id, msgs[i].payment_id, sizeof(m->payment_id));
            m->deliveries = msgs[i].deliveries;
            m->found = msgs[i].found;
            m->payment = msgs[i].payment;
            q->ring_len++;
        }
        for (int i = 0; i < n; i++)
            pthread_cond_signal(&q->has_msgs); /* one waiter a message, no herd */
        if (sleep_ms_max > 0 && !q->notified && !q->stopping) {
            struct timespec ts;
            clock_deadline(sleep_ms_max, &ts);
            pthread_cond_timedwait(&q->wake, &q->mu, &ts);
        }
    }
    flush_acks_locked(q);
    pthread_mutex_unlock(&q->mu);
    free(msgs);
    return NULL;
}

static int outbox_next(queue *base, struct queue_msg *out, int64_t wait_ms)
{
    struct outbox_queue *q = (struct outbox_queue *)base;
    struct timespec ts;
    clock_deadline(wait_ms, &ts);
    int rc = QUEUE_OK;
    pthread_mutex_lock(&q->mu);
    while (q->ring_len == 0 && !q->stopping) {
        if (pthread_cond_timedwait(&q->has_msgs, &q->mu, &ts) != 0 && q->ring_len == 0) {
            rc = QUEUE_E_EMPTY;
            goto out_unlock;
        }
    }
    if (q->stopping) {
        rc = QUEUE_E_STOPPED;
        goto out_unlock;
    }
    *out = q->ring[q->ring_head];
    q->ring_head = (q->ring_head + 1) % q->ring_cap;
    q->ring_len--;
    pthread_cond_signal(&q->wake); /* there is room to claim more */
out_unlock:
    pthread_mutex_unlock(&q->mu);
    return rc;
}

static int outbox_ack(queue *base, const struct queue_msg *m)
{
    struct outbox_queue *q = (struct outbox_queue *)base;
    pthread_mutex_lock(&q->mu);
    if (q->ack_len == ACK_BATCH_MAX)
        flush_acks_locked(q);
    q->acks[q->ack_len++] = m->id;
    pthread_mutex_unlock(&q->mu);
    return QUEUE_OK;
}

static int release(queue *base, const struct queue_msg *m, int64_t delay_ms, bool uncount)
{
    struct store_op *op = xcalloc(1, sizeof(*op));
    op->kind = STORE_OP_OUTBOX_RETRY;
    op->in.outbox_retry.id = m->id;
    op->in.outbox_retry.delay_ms = delay_ms;
    op->in.outbox_retry.uncount = uncount;
    op->in.outbox_retry.deliveries = m->deliveries;
    return submit_owned((struct outbox_queue *)base, op) == 0 ? QUEUE_OK : QUEUE_E_IO;
}

static int outbox_retry(queue *base, const struct queue_msg *m, int64_t delay_ms)
{
    return release(base, m, delay_ms, false);
}

static int outbox_defer(queue *base, const struct queue_msg *m, int64_t delay_ms)
{
    return release(base, m, delay_ms, true);
}

static void outbox_notify(queue *base)
{
    struct outbox_queue *q = (struct outbox_queue *)base;
    pthread_mutex_lock(&q->mu);
    if (!q->notified) {
        q->notified = true;
        pthread_cond_signal(&q->wake);
    }
    pthread_mutex_unlock(&q->mu);
}

static void outbox_stop(queue *base)
{
    struct outbox_queue *q = (struct outbox_queue *)base;
    pthread_mutex_lock(&q->mu);
    bool was_stopping = q->stopping;
    q->stopping = true;
    pthread_cond_broadcast(&q->has_msgs);
    pthread_cond_signal(&q->wake);
    pthread_mutex_unlock(&q->mu);
    if (!was_stopping)
        pthread_join(q->dispatcher, NULL);
}

static void outbox_free(queue *base)
{
    struct outbox_queue *q = (struct outbox_queue *)base;
    outbox_stop(base);
    pthread_mutex_lock(&q->mu);
    flush_acks_locked(q); /* what consumers acknowledged after the stop */
    pthread_mutex_unlock(&q->mu);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->has_msgs);
    pthread_cond_destroy(&q->wake);
    free(q->ring);
    free(q->acks);
    free(q);
}

static const struct queue_backend outbox_backend = {
    .name = "outbox",
    .next = outbox_next,
    .ack = outbox_ack,
    .retry = outbox_retry,
    .defer = outbox_defer,
    .notify = outbox_notify,
    .stop = outbox_stop,
    .free = outbox_free,
};

queue *queue_outbox_new(store *s, const struct queue_outbox_options *opts)
{
    struct outbox_queue *q = xcalloc(1, sizeof(*q));
    q->base.be = &outbox_backend;
    q->store = s;
    q->lease_ms = opts->lease_ms;
    q->ring_cap = opts->prefetch > 0 ? opts->prefetch : 1;
    q->ring = xcalloc((size_t)q->ring_cap, sizeof(*q->ring));
    q->acks = xcalloc(ACK_BATCH_MAX, sizeof(*q->acks));
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->has_msgs, NULL);
    pthread_cond_init(&q->wake, NULL);

    PAYD_ASSERT(pthread_create(&q->dispatcher, NULL, dispatcher_main, q) == 0);
    return &q->base;
}
