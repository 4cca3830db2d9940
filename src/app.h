/*
 * app.h - what one payd process holds, wired once at start-up in payd.c and
 * shared (read-only after start-up, but for the atomics) by the API
 * handlers and the payment workers.
 */
#ifndef PAYD_APP_H
#define PAYD_APP_H

#include <stdatomic.h>
#include <stdbool.h>

#include "cache/catalogue.h"
#include "cache/keys.h"
#include "cache/orders.h"
#include "channel/channel.h"
#include "conf.h"
#include "core/idem.h"
#include "guard/guards.h"
#include "lock/lock.h"
#include "obs/alerts.h"
#include "obs/metrics.h"
#include "obs/series.h"
#include "queue/queue.h"
#include "store/store.h"

#define PAYD_VERSION "0.1.0"

struct app {
    const struct conf *conf;
    store *store;
    lock_service *lock;
    queue *queue;
    channel_set *channels;
    idem_inflight *inflight;
    metrics *metrics;
    series *series;       /* one sample a second: the dashboard, the alerts */
    alerts *alerts;       /* the [alert.*] rules and their state */
    int64_t ledger_checked_ms; /* the monitor thread's */
    key_cache *keys;      /* API key hash -> merchant */
    order_cache *orders;  /* order id -> its immutable facts */
    guards *guards;       /* limits, breakers, pacers */
    catalogue_cache *catalogue; /* GET /v1/channels, dropped on a breaker change */
    struct refunder *refunder; /* NULL without the worker role */
    struct webhook_sender *webhooks; /* NULL without the worker role */
    atomic_bool draining; /* SIGTERM seen: /readyz answers 503 */
};

#endif
