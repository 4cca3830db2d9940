/*
 * guards.h - the protections of one payd process, built from the
 * configuration: a token bucket over all /v1/ requests and one per merchant,
 * the adaptive limit on write requests in flight, and for each channel a
 * circuit breaker and a pacer (leaky bucket) with its fallback.
 *
 * Limits can be changed at run time (guards_apply, behind PUT
 * /admin/guards); the values in force are then kept in DIR/guards.json,
 * which overrides the configuration at the next start, so a restart keeps
 * what an operator set. Deleting the file goes back to the configuration.
 *
 * Cluster mode ([lock] backend = redis): the global and merchant buckets
 * are shared by the instances through Redis (guard/redis_limit.h), with the
 * rates and bursts set here. While Redis is unavailable each instance
 * enforces its share of them locally: the limit divided by the number of
 * api instances last seen alive, and says so (a log line when it starts
 * and when it ends, a gauge, a counter). Breaker transitions are broadcast
 * so that every instance drops its cached catalogue. Embedded mode asks
 * nothing of Redis and takes the same path as before.
 */
#ifndef PAYD_GUARD_GUARDS_H
#define PAYD_GUARD_GUARDS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf.h"
#include "guard/adaptive.h"
#include "guard/breaker.h"
#include "guard/leaky_bucket.h"
#include "guard/redis_limit.h"
#include "guard/token_bucket.h"
#include "obs/metrics.h"

typedef struct guards guards;

/* Called after a breaker changed state (any thread, with no lock held that
 * the callee could need). In cluster mode also when another instance says
 * one of its breakers did, and with channel -1 when that could not be told
 * (an unknown channel, or messages that may have been lost). */
typedef void guards_change_fn(void *arg, int channel);

/* NULL with a message in err when DIR/guards.json exists and is bad, or
 * (cluster mode) when Redis cannot be reached. */
guards *guards_new(const struct conf *conf, guards_change_fn *on_change, void *arg, char *err,
                   size_t err_size);
void guards_free(guards *g);

/* The connection to the other instances (cluster mode), for other modules'
 * invalidation messages; NULL in embedded mode. Owned by g: it lives, and
 * its subscriptions' callbacks may run, until guards_free returns. */
redis_limit *guards_shared(guards *g);

/* Rate limits: true when admitted; else *retry_after_s is the whole number
 * of seconds (>= 1) until a token is due. */
bool guards_take_global(guards *g, int64_t now_ns, int64_t *retry_after_s);
bool guards_take_merchant(guards *g, const char *merchant_id, int64_t now_ns,
                          int64_t *retry_after_s);

/* The adaptive (or fixed) limit on write requests in flight. */
struct adaptive_limit *guards_inflight(guards *g);

/* Per channel, by index in the configuration's channel list. */
struct breaker *guards_breaker(guards *g, int channel);
struct leaky_bucket *guards_pacer(guards *g, int channel);
int64_t guards_pace_max_wait_ns(const guards *g, int channel);
/* The fallback's index, or -1. */
int guards_fallback(const guards *g, int channel);
/* "up", "degraded" or "down", from the breaker at now_ns. */
const char *guards_channel_status(guards *g, int channel, int64_t now_ns);
/* Seconds (>= 1) until an open breaker lets probes through. */
int64_t guards_open_remaining_s(guards *g, int channel, int64_t now_ns);

/* Every limiter's and breaker's state and counts (a new reference); in
 * cluster mode also whether each limit is shared or enforced at the local
 * share, and the instance count. */
json_t *guards_view(guards *g, int64_t now_ns);

/* Applies a change such as {"limits": {"merchant_rps": 100}, "channels":
 * {"sandbox": {"rate": 50}}}: all of it or (on a bad key or value, named in
 * err) none of it, then writes DIR/guards.json. 0, or -1 (bad request) or
 * -2 (the file could not be written; the change is in force but will not
 * survive a restart). */
int guards_apply(guards *g, const json_t *change, char *err, size_t err_size);

/* Copies the limiters' and breakers' counts and states into the metrics
 * registry (at each scrape). */
void guards_export(guards *g, metrics *m, int64_t now_ns);

#endif
