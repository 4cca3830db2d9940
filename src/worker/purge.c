/*
 * purge.c - see purge.h.
 */
#include "worker/purge.h"

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "obs/log.h"
#include "util/util.h"

struct purger {
    store *store;
    int64_t ttl_ms, interval_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stopping;
};

static void purge_once(purger *p)
{
    for (;;) {
        struct store_op op = {.kind = STORE_OP_IDEM_PURGE};
        op.in.idem_purge.older_than_ms = clock_wall_ms() - p->ttl_ms;
        if (store_exec(p->store, &op, 1000) != STORE_OK) {
            log_warn("idempotency_purge_failed", NULL);
            return;
        }
        if (op.out.purged == 0)
            return;
        char n[24];
        snprintf(n, sizeof(n), "%lld", (long long)op.out.purged);
        log_debug("idempotency_purged", "count", n, NULL);
        pthread_mutex_lock(&p->mu);
        bool stop = p->stopping;
        pthread_mutex_unlock(&p->mu);
        if (stop)
            return;
    }
}

static void *purger_main(void *arg)
{
    purger *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        struct timespec ts;
        clock_deadline(p->interval_ms, &ts);
        pthread_cond_timedwait(&p->cond, &p->mu, &ts);
        if (p->stopping)
            break;
        pthread_mutex_unlock(&p->mu);
        purge_once(p);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

purger *purger_start(store *s, int64_t ttl_s, int64_t interval_s)
{
    purger *p = xcalloc(1, sizeof(*p));
    p->store = s;
    p->ttl_ms = ttl_s * 1000;
    p->interval_ms = interval_s * 1000;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cond, NULL);
    PAYD_ASSERT(pthread_create(&p->thread, NULL, purger_main, p) == 0);
    return p;
}

void purger_stop(purger *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cond);
    free(p);
}
