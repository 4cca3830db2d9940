/*
 * redis_limit.h - what the guards of several payd instances share through
 * Redis (cluster mode): token buckets that hold across instances, a count
 * of the live instances, and invalidation messages.
 *
 * A bucket is GCRA as in token_bucket.h, kept in Redis under
 * "payd:rl:<key>" and moved by one Lua script on Redis's own clock (TIME),
 * so the instances' clocks do not matter. When Redis is down a take answers
 * -1 at the cost of reading a flag, and the caller falls back to a local
 * bucket of its share of the limit: the limit divided by
 * redis_limit_instances(), the number of instances alive when Redis was
 * last reachable. Each instance keeps a heartbeat in Redis from a
 * background thread for that count.
 *
 * Invalidation: publish sends a message on the channel "payd:<channel>";
 * every instance subscribed to it gets the message at once on a background
 * thread. Redis pub/sub keeps nothing for a subscriber that is away, so
 * after a break the callback is told that anything may have been missed.
 */
#ifndef PAYD_GUARD_REDIS_LIMIT_H
#define PAYD_GUARD_REDIS_LIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct redis_limit redis_limit;

/* url as for lock_redis_new: redis://[[user]:password@]host[:port][/db],
 * unix:/path or redis-sentinel://... (util/redis_pool.h). instance_id
 * names this process among the instances (unique per process; at most 100
 * bytes), or is NULL for a process that takes no
 * share of the limits (a worker, a merchant command that only publishes):
 * such a process sends no heartbeat and is not counted. NULL with a
 * message in err when the URL is bad or Redis cannot be reached. */
redis_limit *redis_limit_new(const char *url, const char *instance_id, char *err,
                             size_t err_size);

/* Stops the background threads, leaves the instance count at once, and
 * frees r. No other thread may be using r. redis_limit_free(NULL) does
 * nothing. */
void redis_limit_free(redis_limit *r);

/* Takes a token from the bucket key (e.g. "merchant:<id>", "global") of
 * one token every interval_ns and burst tokens when full (burst >= 1;
 * interval_ns 0: unlimited, admitted without asking Redis). Returns 1
 * admitted; 0 rejected, and then *wait_ns (when not NULL) is the time until
 * a token is due; -1 Redis unavailable. Thread-safe; one round trip. */
int redis_limit_take(redis_limit *r, const char *key, int64_t interval_ns, int64_t burst,
                     int64_t *wait_ns);

/* Instances alive (this one included) at the last heartbeat that reached
 * Redis; 1 before any did, and always for an r made without an
 * instance_id. */
int redis_limit_instances(redis_limit *r);

/* Sends message on channel. The number of subscribers (all instances) that
 * got it, or -1 when Redis is unavailable. */
int redis_limit_publish(redis_limit *r, const char *channel, const char *message);

/* Called on the subscription's own thread with each message. msg NULL
 * means the subscription was (re)made after a break, during which messages
 * may have been lost: drop every cached copy. fn must not block long. */
typedef void redis_limit_message_fn(void *arg, const char *msg);

/* Subscribes to channel on a connection and thread of its own, for the
 * life of r. 0: subscribed when this returns. -1: Redis is unreachable
 * now; the subscription keeps trying once a second and calls fn(arg, NULL)
 * when it gets through. -2: too many subscriptions (REDIS_LIMIT_SUBS_MAX). */
#define REDIS_LIMIT_SUBS_MAX 8
int redis_limit_subscribe(redis_limit *r, const char *channel, redis_limit_message_fn *fn,
                          void *arg);

#endif
