/*
 * worker.c - the payment worker loop; see worker.h.
 */
#include "worker/worker.h"

#include <pthread.h>
#include <string.h>

#include "obs/log.h"
#include "util/util.h"

#define IDLE_WAIT_MS 1000
#define LOCK_WAIT_MS 1000
#define LOCK_BUSY_RETRY_MS 200
#define STORE_RETRY_MS 1000
#define STORE_BUSY_WAIT_MS 5000

struct worker_pool {
    struct app *app;
    struct worker_options opts;
    int count;
    pthread_t *threads;
};

static int channel_index(struct app *app, const char *name)
{
    for (int i = 0; i < channel_set_count(app->channels); i++)
        if (strcmp(channel_set_at(app->channels, i)->name, name) == 0)
            return i;
    return -1;
}

static int64_t backoff_ms(const struct worker_options *o, int64_t deliveries)
{
    int64_t d = o->retry_base_ms;
    for (int64_t i = 1; i < deliveries && d < o->retry_max_ms; i++)
        d *= 2;
    return d < o->retry_max_ms ? d : o->retry_max_ms;
}

/* Commits the final status in p->status with the fencing token, then
 * acknowledges the message. */
static void finish(worker_pool *pool, const struct queue_msg *m, struct payment *p,
                   int64_t fence)
{
    struct app *app = pool->app;
    struct store_op op = {.kind = STORE_OP_PAYMENT_FINISH};
    p->updated_ms = clock_wall_ms();
    op.in.payment_finish.payment = *p;
    op.in.payment_finish.fence = fence;
    int rc = store_exec(app->store, &op, STORE_BUSY_WAIT_MS);
    switch (rc) {
    case STORE_OK: {
        int ch = channel_index(app, p->channel);
        if (ch >= 0)
            metrics_payment_final(app->metrics, ch, p->status);
        log_info("payment_finished", "payment_id", p->id, "order_id", p->order_id,
                 "merchant_id", p->merchant_id, "status", payment_status_name(p->status),
                 "failure_code", p->status == PAYMENT_FAILED ? p->failure_code : NULL, NULL);
        queue_ack(app->queue, m);
        break;
    }
    case STORE_E_FINAL:
        queue_ack(app->queue, m); /* another delivery got there first */
        break;
    case STORE_E_STALE_FENCE:
        /* A newer lock holder wrote this order: it owns the outcome now. */
        log_warn("payment_stale_fence", "payment_id", p->id, NULL);
        break;
    default:
        log_error("payment_finish_failed", "payment_id", p->id, "error", store_rc_name(rc),
                  NULL);
        queue_retry(app->queue, m, STORE_RETRY_MS);
    }
}

static void process(worker_pool *pool, const struct queue_msg *m)
{
    struct app *app = pool->app;
    struct payment p;
    int rc = store_payment_get(app->store, NULL, m->payment_id, &p);
    if (rc == STORE_E_NOT_FOUND) {
        log_error("outbox_orphan", "payment_id", m->payment_id, NULL);
        queue_ack(app->queue, m);
        return;
    }
    if (rc != STORE_OK) {
        queue_retry(app->queue, m, STORE_RETRY_MS);
        return;
    }
    if (p.status != PAYMENT_PROCESSING) {
        queue_ack(app->queue, m);
        return;
    }
    channel *ch = channel_set_find(app->channels, p.channel);
    if (!ch) {
        log_error("payment_channel_missing", "payment_id", p.id, "channel", p.channel, NULL);
        queue_retry(app->queue, m, pool->opts.retry_max_ms);
        return;
    }

    int64_t fence;
    if (lock_acquire(app->lock, p.order_id, pool->opts.lease_ms, LOCK_WAIT_MS, &fence) !=
        LOCK_OK) {
        queue_retry(app->queue, m, LOCK_BUSY_RETRY_MS);
        return;
    }

    struct chan_result res;
    struct chan_request req = {.serial_no = p.serial_no, .amount_minor = p.amount_minor,
                               .currency = p.currency, .method = p.method};
    if (m->deliveries > 1) {
        /* A redelivery: an earlier attempt may have charged. Ask first. */
        channel_query(ch, p.serial_no, &res);
        if (res.outcome == CHAN_NOT_FOUND)
            channel_charge(ch, &req, &res);
    } else {
        channel_charge(ch, &req, &res);
    }

    switch (res.outcome) {
    case CHAN_SUCCEEDED:
        p.status = PAYMENT_SUCCEEDED;
        snprintf(p.channel_txn_id, sizeof(p.channel_txn_id), "%s", res.txn_id);
        finish(pool, m, &p, fence);
        break;
    case CHAN_DECLINED:
        p.status = PAYMENT_FAILED;
        snprintf(p.failure_code, sizeof(p.failure_code), "%s", res.code);
        snprintf(p.failure_message, sizeof(p.failure_message), "%s", res.message);
        finish(pool, m, &p, fence);
        break;
    case CHAN_ERROR:
    case CHAN_NOT_FOUND:
        if (m->deliveries >= pool->opts.max_attempts) {
            p.status = PAYMENT_FAILED;
            snprintf(p.failure_code, sizeof(p.failure_code), "channel_error");
            snprintf(p.failure_message, sizeof(p.failure_message),
                     "The payment channel failed; nothing was charged. Please try again.");
            finish(pool, m, &p, fence);
        } else {
            queue_retry(app->queue, m, backoff_ms(&pool->opts, m->deliveries));
        }
        break;
    case CHAN_UNKNOWN:
        log_info("payment_outcome_unknown", "payment_id", p.id, "serial_no", p.serial_no, NULL);
        queue_retry(app->queue, m, backoff_ms(&pool->opts, m->deliveries));
        break;
    default:
        PAYD_ASSERT(!"unknown channel outcome");
    }
    lock_release(app->lock, p.order_id, fence);
}

static void *worker_main(void *arg)
{
    worker_pool *pool = arg;
    pthread_setname_np(pthread_self(), "payd-worker");
    for (;;) {
        struct queue_msg m;
        int rc = queue_next(pool->app->queue, &m, IDLE_WAIT_MS);
        if (rc == QUEUE_E_STOPPED)
            break;
        if (rc == QUEUE_OK)
            process(pool, &m);
    }
    return NULL;
}

worker_pool *worker_pool_start(struct app *app, const struct worker_options *opts)
{
    worker_pool *pool = xcalloc(1, sizeof(*pool));
    pool->app = app;
    pool->opts = *opts;
    pool->threads = xcalloc((size_t)opts->threads, sizeof(pthread_t));
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < opts->threads; i++) {
        PAYD_ASSERT(pthread_create(&pool->threads[i], &attr, worker_main, pool) == 0);
        pool->count++;
    }
    pthread_attr_destroy(&attr);
    return pool;
}

void worker_pool_stop(worker_pool *pool)
{
    if (!pool)
        return;
    for (int i = 0; i < pool->count; i++)
        pthread_join(pool->threads[i], NULL);
    free(pool->threads);
    free(pool);
}
