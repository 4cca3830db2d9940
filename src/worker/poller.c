/*
 * poller.c - see poller.h.
 */
#include "worker/poller.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "util/util.h"

struct poller {
    struct poller_ops ops;
    void *arg;
    int64_t poll_ms;
    pthread_t *threads;
    int count;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    bool woken, stopping;
};

static bool stopping(poller *p)
{
    pthread_mutex_lock(&p->mu);
    bool stop = p->stopping;
    pthread_mutex_unlock(&p->mu);
    return stop;
}

/* Waits until woken, stopping, or the next row is due (at most poll_ms).
 * Returns false when stopping. */
static bool wait_for_work(poller *p)
{
    int64_t due = p->ops.next_due_ms(p->arg);
    int64_t wait_ms = p->poll_ms;
    if (due != INT64_MAX) {
        int64_t until = due - clock_wall_ms();
        if (until < wait_ms)
            wait_ms = until > 0 ? until : 0;
    }
    pthread_mutex_lock(&p->mu);
    if (wait_ms > 0 && !p->woken && !p->stopping) {
        struct timespec ts;
        clock_deadline(wait_ms, &ts);
        pthread_cond_timedwait(&p->wake, &p->mu, &ts);
    }
    p->woken = false;
    bool go_on = !p->stopping;
    pthread_mutex_unlock(&p->mu);
    return go_on;
}

/* Whether a row is due now: a read, so that a wake with nothing to do (a
 * payment's outcome for a merchant without a webhook) costs no write. Such
 * wakes had made 2.6 empty claims per paid order, 40 % of the embedded
 * store's writes (measured at 640 paid orders/s). */
static bool due_now(poller *p)
{
    return p->ops.next_due_ms(p->arg) <= clock_wall_ms();
}

static void *poller_main(void *arg)
{
    poller *p = arg;
    pthread_setname_np(pthread_self(), p->ops.thread_name);
    while (wait_for_work(p))
        while (!stopping(p) && due_now(p) && p->ops.run(p->arg) > 0)
            ;
    return NULL;
}

poller *poller_start(int threads, int64_t poll_ms, const struct poller_ops *ops, void *arg)
{
    poller *p = xcalloc(1, sizeof(*p));
    p->ops = *ops;
    p->arg = arg;
    p->poll_ms = poll_ms;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->threads = xcalloc((size_t)threads, sizeof(pthread_t));
    p->count = threads; /* before the threads, which read it */
    for (int i = 0; i < threads; i++)
        PAYD_ASSERT(pthread_create(&p->threads[i], NULL, poller_main, p) == 0);
    return p;
}

void poller_wake(poller *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->woken = true;
    pthread_cond_signal(&p->wake); /* one new row: one thread */
    pthread_mutex_unlock(&p->mu);
}

void poller_stop(poller *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->count; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    free(p->threads);
    free(p);
}
