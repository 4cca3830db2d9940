/*
 * worker.c - the payment worker loop; see worker.h.
 */
#include "worker/worker.h"

#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "core/ids.h"
#include "obs/log.h"
#include "util/util.h"
#include "worker/refunds.h"
#include "worker/webhooks.h"

#define IDLE_WAIT_MS 1000
#define LOCK_WAIT_MS 1000
#define LOCK_BUSY_RETRY_MS 200
#define STORE_RETRY_MS 1000
#define STORE_BUSY_WAIT_MS 5000
#define HALF_OPEN_RETRY_MS 200 /* a half-open breaker had no probe left */

/* A payment outcome on its way to the store. The worker that decided it
 * moves on at once; the store's done() callback hands the job to the
 * reporter thread, which acknowledges the message, releases the order lock,
 * counts and logs, so that no worker waits for a commit and the writer
 * does no more than link the job into a list. */
struct finish_job {
    struct store_op op; /* first: done() gets the op and finds the job */
    struct queue_msg msg;
    int64_t fence;
    struct finish_job *next;
};

struct worker_pool {
    struct app *app;
    struct worker_options opts;
    int count;
    pthread_t *threads;
    /* the reporter */
    pthread_t reporter;
    pthread_mutex_t mu;
    pthread_cond_t committed;
    struct finish_job *done_head; /* committed, not yet reported */
    int64_t in_flight;            /* submitted, not yet reported */
    bool stopping;
};

static int64_t backoff_ms(const struct worker_options *o, int64_t deliveries)
{
    int64_t d = o->retry_base_ms;
    for (int64_t i = 1; i < deliveries && d < o->retry_max_ms; i++)
        d *= 2;
    return d < o->retry_max_ms ? d : o->retry_max_ms;
}

/* Runs on the store's writer thread: link and go. */
static void finish_committed(struct store_op *op)
{
    struct finish_job *job = (struct finish_job *)op;
    worker_pool *pool = op->arg;
    pthread_mutex_lock(&pool->mu);
    job->next = pool->done_head;
    pool->done_head = job;
    if (!job->next)
        pthread_cond_signal(&pool->committed);
    pthread_mutex_unlock(&pool->mu);
}

/* What follows a commit (or its failure), on the reporter thread. */
static void report(worker_pool *pool, struct finish_job *job)
{
    struct app *app = pool->app;
    const struct payment *p = &job->op.in.payment_finish.payment;
    int rc = job->op.rc;
    switch (rc) {
    case STORE_OK: {
        int ch = channel_set_index(app->channels, p->channel);
        if (ch >= 0) {
            metrics_inc(app->metrics, M_PAYMENTS_FINAL, ch,
                        p->status == PAYMENT_SUCCEEDED ? FINAL_SUCCEEDED : FINAL_FAILED);
            metrics_observe(app->metrics, M_PAYMENT_DURATION, ch, 0,
                            (clock_wall_ms() - p->created_ms) * 1000);
        }
        log_info("payment_finished", "payment_id", p->id, "order_id", p->order_id,
                 "merchant_id", p->merchant_id, "status", payment_status_name(p->status),
                 "failure_code", p->status == PAYMENT_FAILED ? p->failure_code : NULL, NULL);
        if (job->op.out.late_refund) {
            log_warn("late_charge_refunded", "payment_id", p->id, "order_id", p->order_id,
                     "refund_id", job->op.in.payment_finish.late_refund_id, NULL);
            refunder_wake(app->refunder);
        }
        queue_ack(app->queue, &job->msg);
        webhooks_wake(app->webhooks);
        break;
    }
    case STORE_E_FINAL:
        queue_ack(app->queue, &job->msg); /* another delivery got there first */
        break;
    case STORE_E_STALE_FENCE:
        /* A newer lock holder wrote this order: it owns the outcome now.
         * The message comes back soon and finds the payment final (or its
         * lock taken); a broker's message must be handed back in any case. */
        log_warn("payment_stale_fence", "payment_id", p->id, NULL);
        queue_retry(app->queue, &job->msg, STORE_RETRY_MS);
        break;
    default:
        log_error("payment_finish_failed", "payment_id", p->id, "error", store_rc_name(rc),
                  NULL);
        queue_retry(app->queue, &job->msg, STORE_RETRY_MS);
    }
    lock_release(app->lock, p->order_id, job->fence);
    free(job);
}

static void *reporter_main(void *arg)
{
    worker_pool *pool = arg;
    pthread_setname_np(pthread_self(), "payd-report");
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (!pool->done_head && !(pool->stopping && pool->in_flight == 0))
            pthread_cond_wait(&pool->committed, &pool->mu);
        struct finish_job *list = pool->done_head;
        pool->done_head = NULL;
        if (!list && pool->stopping && pool->in_flight == 0)
            break;
        pthread_mutex_unlock(&pool->mu);
        int64_t n = 0;
        while (list) {
            struct finish_job *next = list->next;
            report(pool, list);
            list = next;
            n++;
        }
        pthread_mutex_lock(&pool->mu);
        pool->in_flight -= n;
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

/* Submits the final status in p->status with the fencing token. The order
 * lock stays held until the reporter has seen the commit. */
static void finish(worker_pool *pool, const struct queue_msg *m, struct payment *p,
                   int64_t fence)
{
    struct finish_job *job = xcalloc(1, sizeof(*job));
    _Static_assert(offsetof(struct finish_job, op) == 0, "the op heads the job");
    p->updated_ms = clock_wall_ms();
    job->op.kind = STORE_OP_PAYMENT_FINISH;
    job->op.in.payment_finish.payment = *p;
    job->op.in.payment_finish.fence = fence;
    if (p->status == PAYMENT_SUCCEEDED) {
        /* Used only if the order closed meanwhile (the refund of a late charge). */
        id_new("re_", p->updated_ms, job->op.in.payment_finish.late_refund_id);
        serial_no_new(p->updated_ms, job->op.in.payment_finish.late_refund_no);
    }
    job->op.done = finish_committed;
    job->op.arg = pool;
    job->msg = *m;
    job->fence = fence;
    pthread_mutex_lock(&pool->mu);
    pool->in_flight++;
    pthread_mutex_unlock(&pool->mu);
    int64_t deadline_ms = clock_mono_ms() + STORE_BUSY_WAIT_MS;
    int rc;
    while ((rc = store_submit(pool->app->store, &job->op)) == STORE_E_BUSY &&
           clock_mono_ms() < deadline_ms)
        sleep_ms(5);
    if (rc != STORE_OK) {
        job->op.rc = rc;
        finish_committed(&job->op); /* reported as a failure: retried later */
    }
}

static void sleep_ns(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* delay_ms plus up to a fifth more, so deferred payments do not all come
 * back at the same instant. */
static int64_t jitter_ms(int64_t delay_ms)
{
    uint32_t r;
    rand_bytes(&r, sizeof(r));
    return delay_ms + (int64_t)(r % (uint32_t)(delay_ms / 5 + 1));
}

/* Moves a payment that never reached its channel to the fallback, durably,
 * before the fallback is called: a crash after the call then finds the
 * payment on the channel that may have charged it. */
static int reroute(worker_pool *pool, struct payment *p, const channel *to, int64_t fence)
{
    struct store_op op = {.kind = STORE_OP_PAYMENT_REROUTE};
    op.in.payment_reroute.payment_id = p->id;
    op.in.payment_reroute.order_id = p->order_id;
    op.in.payment_reroute.merchant_id = p->merchant_id;
    op.in.payment_reroute.from = p->channel;
    op.in.payment_reroute.to = to->name;
    op.in.payment_reroute.fence = fence;
    op.in.payment_reroute.updated_ms = clock_wall_ms();
    int rc = store_exec(pool->app->store, &op, STORE_BUSY_WAIT_MS);
    if (rc == STORE_OK) {
        log_info("payment_rerouted", "payment_id", p->id, "from", p->channel, "to", to->name,
                 NULL);
        snprintf(p->channel, sizeof(p->channel), "%s", to->name);
    }
    return rc;
}

/*
 * The guards in front of a channel call: the breaker, then the pacer. On
 * true, *ci and *ch name the channel to call (the payment may have moved to
 * the fallback) and *ticket is the breaker's. On false the message is back
 * in the queue, uncounted, and the lock released.
 */
static bool pass_guards(worker_pool *pool, const struct queue_msg *m, struct payment *p,
                        int64_t fence, int *ci, channel **ch, struct breaker_ticket *ticket)
{
    struct app *app = pool->app;
    guards *g = app->guards;
    struct breaker *br = guards_breaker(g, *ci);
    int64_t now = clock_mono_ns();
    if (!breaker_allow(br, now, ticket)) {
        /* Only a payment no delivery ever took to its channel may move:
         * any earlier delivery may have charged it there. */
        int fb = guards_fallback(g, *ci);
        channel *alt = fb >= 0 ? channel_set_at(app->channels, fb) : NULL;
        bool moved = false;
        if (alt && m->deliveries == 1 && channel_method_valid(alt, p->method) &&
            breaker_allow(guards_breaker(g, fb), now, ticket)) {
            if (reroute(pool, p, alt, fence) == STORE_OK) {
                *ci = fb;
                *ch = alt;
                br = guards_breaker(g, fb);
                moved = true;
            } else {
                breaker_cancel(guards_breaker(g, fb), ticket);
            }
        }
        if (!moved) {
            int64_t delay = HALF_OPEN_RETRY_MS;
            if (breaker_state_at(br, now) == BREAKER_OPEN)
                delay = guards_open_remaining_s(g, *ci, now) * 1000;
            queue_defer(app->queue, m, jitter_ms(delay));
            lock_release(app->lock, p->order_id, fence);
            return false;
        }
    }
    int64_t retry_ns;
    int64_t wait = leaky_bucket_reserve(guards_pacer(g, *ci), clock_mono_ns(),
                                        guards_pace_max_wait_ns(g, *ci), &retry_ns);
    if (wait < 0) {
        /* Past the bound: back to the durable queue until a slot is near. */
        breaker_cancel(br, ticket);
        queue_defer(app->queue, m, jitter_ms(retry_ns / 1000000 + 1));
        lock_release(app->lock, p->order_id, fence);
        return false;
    }
    if (wait > 0)
        sleep_ns(wait);
    return true;
}

/* A channel call's outcome and time, for the metrics. */
static void count_call(struct app *app, int ci, const struct chan_result *res, int64_t called_ns)
{
    metrics_inc(app->metrics, M_CHANNEL_CALLS, ci, (int)res->outcome);
    metrics_observe(app->metrics, M_CHANNEL_CALL_DURATION, ci, 0,
                    (clock_mono_ns() - called_ns) / 1000);
}

/* The order closed before the payment was charged: it fails, and nothing
 * was charged. */
static void fail_closed(worker_pool *pool, const struct queue_msg *m, struct payment *p,
                        int64_t fence)
{
    p->status = PAYMENT_FAILED;
    snprintf(p->failure_code, sizeof(p->failure_code), "order_closed");
    snprintf(p->failure_message, sizeof(p->failure_message),
             "The order closed unpaid before this payment was made; nothing was charged.");
    finish(pool, m, p, fence);
}

static void process(worker_pool *pool, const struct queue_msg *m)
{
    struct app *app = pool->app;
    if (!m->found) {
        log_error("outbox_orphan", "payment_id", m->payment_id, NULL);
        queue_ack(app->queue, m);
        return;
    }
    struct payment p = m->payment;
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

    /* An order closed unpaid ([orders] ttl_s) is never charged anew. */
    bool closed = false;
    struct order_facts facts;
    int64_t ttl_ms = app->conf->order_ttl_s * 1000;
    if (ttl_ms > 0 && order_cache_get(app->orders, p.order_id, &facts) &&
        clock_wall_ms() < facts.created_ms + ttl_ms) {
        /* Too young to have closed: no read needed (the common case). */
    } else if (ttl_ms > 0) {
        struct order o;
        int rc = store_order_get(app->store, p.merchant_id, p.order_id, &o);
        if (rc != STORE_OK) {
            queue_retry(app->queue, m, STORE_RETRY_MS);
            lock_release(app->lock, p.order_id, fence);
            return;
        }
        closed = o.status == ORDER_CLOSED;
    }
    if (closed && m->deliveries == 1) {
        fail_closed(pool, m, &p, fence); /* no delivery ever reached the channel */
        return;
    }

    int ci = channel_set_index(app->channels, p.channel);
    struct breaker_ticket ticket;
    if (!pass_guards(pool, m, &p, fence, &ci, &ch, &ticket))
        return;

    struct chan_result res;
    struct chan_request req = {.serial_no = p.serial_no, .amount_minor = p.amount_minor,
                               .currency = p.currency, .method = p.method};
    int64_t called_ns = clock_mono_ns();
    if (closed) {
        /* An earlier delivery may have charged, or may still land: closing
         * the trade settles it either way (closed, or the charge). */
        channel_close(ch, p.serial_no, &res);
        count_call(app, ci, &res, called_ns);
    } else if (m->deliveries > 1) {
        /* A redelivery: an earlier attempt may have charged. Ask first. */
        channel_query(ch, p.serial_no, &res);
        count_call(app, ci, &res, called_ns);
        if (res.outcome == CHAN_NOT_FOUND) {
            int64_t charged_ns = clock_mono_ns();
            channel_charge(ch, &req, &res);
            count_call(app, ci, &res, charged_ns);
        }
    } else {
        channel_charge(ch, &req, &res);
        count_call(app, ci, &res, called_ns);
    }
    int64_t answered_ns = clock_mono_ns();
    /* Declines are answers; only errors and silence count against it. */
    bool failed = res.outcome == CHAN_ERROR || res.outcome == CHAN_UNKNOWN;
    breaker_record(guards_breaker(app->guards, ci), &ticket,
                   failed ? BREAKER_FAILURE : BREAKER_SUCCESS, answered_ns - called_ns,
                   answered_ns);

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
        if (res.outcome == CHAN_NOT_FOUND && closed) {
            fail_closed(pool, m, &p, fence); /* the trade is closed: never charged */
            break;
        }
        if (m->deliveries >= pool->opts.max_attempts) {
            p.status = PAYMENT_FAILED;
            snprintf(p.failure_code, sizeof(p.failure_code), "channel_error");
            snprintf(p.failure_message, sizeof(p.failure_message),
                     "The payment channel failed; nothing was charged. Please try again.");
            finish(pool, m, &p, fence);
        } else {
            queue_retry(app->queue, m, backoff_ms(&pool->opts, m->deliveries));
            lock_release(app->lock, p.order_id, fence);
        }
        break;
    case CHAN_UNKNOWN:
        log_info("payment_outcome_unknown", "payment_id", p.id, "serial_no", p.serial_no, NULL);
        queue_retry(app->queue, m, backoff_ms(&pool->opts, m->deliveries));
        lock_release(app->lock, p.order_id, fence);
        break;
    default:
        PAYD_ASSERT(!"unknown channel outcome");
    }
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
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->committed, NULL);
    PAYD_ASSERT(pthread_create(&pool->reporter, NULL, reporter_main, pool) == 0);
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
    /* The reporter ends once every submitted outcome is reported. */
    pthread_mutex_lock(&pool->mu);
    pool->stopping = true;
    pthread_cond_signal(&pool->committed);
    pthread_mutex_unlock(&pool->mu);
    pthread_join(pool->reporter, NULL);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->committed);
    free(pool->threads);
    free(pool);
}
