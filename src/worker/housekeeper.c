/*
 * housekeeper.c - see housekeeper.h.
 */
#include "worker/housekeeper.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include "obs/log.h"
#include "util/util.h"

#define STORE_WAIT_MS 1000
#define CLOSE_BATCH 1000

struct housekeeper {
    store *store;
    struct housekeeper_options opts;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stopping;
};

static bool stopping(housekeeper *h)
{
    pthread_mutex_lock(&h->mu);
    bool stop = h->stopping;
    pthread_mutex_unlock(&h->mu);
    return stop;
}

/* Runs op (refilled by fill before each run) until a run does nothing;
 * returns how much was done in all. */
static int64_t repeat(housekeeper *h, void (*fill)(housekeeper *h, struct store_op *op),
                      const char *what)
{
    int64_t total = 0;
    while (!stopping(h)) {
        struct store_op op = {0};
        fill(h, &op);
        if (store_exec(h->store, &op, STORE_WAIT_MS) != STORE_OK) {
            log_warn(what, "result", "failed", NULL);
            break;
        }
        if (op.out.purged == 0)
            break;
        total += op.out.purged;
    }
    return total;
}

static void fill_purge(housekeeper *h, struct store_op *op)
{
    op->kind = STORE_OP_IDEM_PURGE;
    op->in.idem_purge.older_than_ms = clock_wall_ms() - h->opts.idem_ttl_s * 1000;
}

static void fill_close(housekeeper *h, struct store_op *op)
{
    int64_t now = clock_wall_ms();
    op->kind = STORE_OP_ORDER_CLOSE_EXPIRED;
    op->in.order_close.created_before_ms = now - h->opts.order_ttl_s * 1000;
    op->in.order_close.updated_ms = now;
    op->in.order_close.max = CLOSE_BATCH;
}

static void log_count(const char *event, int64_t n)
{
    if (n == 0)
        return;
    char count[24];
    snprintf(count, sizeof(count), "%lld", (long long)n);
    log_info(event, "count", count, NULL);
}

static void *housekeeper_main(void *arg)
{
    housekeeper *h = arg;
    pthread_setname_np(pthread_self(), "payd-housekeep");
    int64_t next_purge = clock_mono_ms(), next_close = clock_mono_ms();
    pthread_mutex_lock(&h->mu);
    while (!h->stopping) {
        int64_t now = clock_mono_ms();
        bool purge = h->opts.idem_ttl_s > 0 && now >= next_purge;
        bool close = h->opts.order_ttl_s > 0 && now >= next_close;
        if (purge || close) {
            pthread_mutex_unlock(&h->mu);
            if (purge) {
                log_count("idempotency_purged", repeat(h, fill_purge, "idempotency_purge"));
                next_purge = now + h->opts.idem_interval_s * 1000;
            }
            if (close) {
                log_count("orders_closed", repeat(h, fill_close, "orders_close"));
                next_close = now + h->opts.order_interval_s * 1000;
            }
            pthread_mutex_lock(&h->mu);
            continue;
        }
        int64_t wake = INT64_MAX;
        if (h->opts.idem_ttl_s > 0)
            wake = next_purge;
        if (h->opts.order_ttl_s > 0 && next_close < wake)
            wake = next_close;
        if (wake == INT64_MAX) {
            pthread_cond_wait(&h->cond, &h->mu);
        } else {
            struct timespec ts;
            clock_deadline(wake - now, &ts);
            pthread_cond_timedwait(&h->cond, &h->mu, &ts);
        }
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

housekeeper *housekeeper_start(store *s, const struct housekeeper_options *opts)
{
    housekeeper *h = xcalloc(1, sizeof(*h));
    h->store = s;
    h->opts = *opts;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cond, NULL);
    PAYD_ASSERT(pthread_create(&h->thread, NULL, housekeeper_main, h) == 0);
    return h;
}

void housekeeper_stop(housekeeper *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    pthread_cond_signal(&h->cond);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cond);
    free(h);
}
