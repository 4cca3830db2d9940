/*
 * monitor.c - the monitor thread; see monitor.h.
 */
#include "obs/monitor.h"

#include <pthread.h>

#include "util/util.h"

struct monitor {
    struct monitor_options opts;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
};

void monitor_tick(const struct monitor_options *o, int64_t now_ms)
{
    if (o->refresh)
        o->refresh(o->refresh_arg, now_ms);
    struct sample x;
    series_take(o->metrics, o->channel_count, now_ms, &x);
    series_append(o->series, &x);
    if (o->alerts) {
        alerts_evaluate(o->alerts, o->series, now_ms);
        metrics_set(o->metrics, M_ALERTS_FIRING, 0, 0, alerts_firing(o->alerts));
    }
}

static void *monitor_main(void *arg)
{
    monitor *mon = arg;
    pthread_setname_np(pthread_self(), "payd-monitor");
    pthread_mutex_lock(&mon->mu);
    while (!mon->stopping) {
        pthread_mutex_unlock(&mon->mu);
        monitor_tick(&mon->opts, clock_wall_ms());
        pthread_mutex_lock(&mon->mu);
        /* The next round on the next whole interval of the wall clock, so
         * samples of every instance line up. */
        int64_t now = clock_wall_ms();
        int64_t wait = mon->opts.interval_ms - now % mon->opts.interval_ms;
        struct timespec ts;
        clock_deadline(wait, &ts);
        while (!mon->stopping && pthread_cond_timedwait(&mon->cv, &mon->mu, &ts) == 0)
            ;
    }
    pthread_mutex_unlock(&mon->mu);
    return NULL;
}

monitor *monitor_start(const struct monitor_options *opts)
{
    PAYD_ASSERT(opts->metrics && opts->series && opts->interval_ms > 0);
    monitor *mon = xcalloc(1, sizeof(*mon));
    mon->opts = *opts;
    pthread_mutex_init(&mon->mu, NULL);
    pthread_cond_init(&mon->cv, NULL);
    PAYD_ASSERT(pthread_create(&mon->thread, NULL, monitor_main, mon) == 0);
    return mon;
}

void monitor_stop(monitor *mon)
{
    if (!mon)
        return;
    pthread_mutex_lock(&mon->mu);
    mon->stopping = true;
    pthread_cond_signal(&mon->cv);
    pthread_mutex_unlock(&mon->mu);
    pthread_join(mon->thread, NULL);
    pthread_cond_destroy(&mon->cv);
    pthread_mutex_destroy(&mon->mu);
    free(mon);
}
