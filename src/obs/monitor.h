/*
 * monitor.h - the monitor thread: once a second it refreshes the gauges
 * whose state lives elsewhere, appends a sample to the series and judges the
 * alert rules.
 */
#ifndef PAYD_OBS_MONITOR_H
#define PAYD_OBS_MONITOR_H

#include <stdint.h>

#include "obs/alerts.h"
#include "obs/metrics.h"
#include "obs/series.h"

typedef struct monitor monitor;

struct monitor_options {
    metrics *metrics;
    series *series;
    alerts *alerts; /* may be NULL */
    int channel_count;
    int64_t interval_ms;
    /* Sets the gauges read from elsewhere (the store, the guards) before
     * each sample; may be NULL. */
    void (*refresh)(void *arg, int64_t now_ms);
    void *refresh_arg;
};

monitor *monitor_start(const struct monitor_options *opts);
/* Stops and joins the thread; NULL does nothing. */
void monitor_stop(monitor *mon);

/* One round, as the thread does it (for tests, which drive the clock). */
void monitor_tick(const struct monitor_options *opts, int64_t now_ms);

#endif
