/*
 * lock.h - the per-order lease lock with fencing tokens.
 *
 * acquire() grants the lock on a key for ttl_ms and returns a fencing token
 * that is larger than every token granted before for any key. A holder that
 * stalls past its lease loses the lock without knowing; that is why every
 * write it makes carries the token and the store refuses a token older than
 * the newest it has seen for the order. The lock saves wasted work; the
 * fencing check is what keeps a stale holder from writing.
 *
 * Backends: local (an in-process table, embedded mode) and Redis (cluster
 * mode, several payd processes), behind the same table of functions.
 */
#ifndef PAYD_LOCK_LOCK_H
#define PAYD_LOCK_LOCK_H

#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

enum lock_rc {
    LOCK_OK = 0,
    LOCK_E_BUSY = -1,    /* held by another holder; try again later */
    LOCK_E_LOST = -2,    /* renew/release: the lease had expired or moved on */
    LOCK_E_IO = -3,      /* the backend failed */
    LOCK_E_FULL = -4,    /* no room for another lease now (bounded table) */
};

typedef struct lock_service lock_service;

struct lock_backend {
    const char *name;
    /* Tries once, or waits up to wait_ms for the holder to let go. */
    int (*acquire)(lock_service *l, const char *key, int64_t ttl_ms, int64_t wait_ms,
                   int64_t *token);
    int (*renew)(lock_service *l, const char *key, int64_t token, int64_t ttl_ms);
    int (*release)(lock_service *l, const char *key, int64_t token);
    void (*free)(lock_service *l);
};

struct lock_service {
    const struct lock_backend *be;
    /* Told of every acquire: its result and how long it took (metrics);
     * NULL: no one listens. Set once, before the service is shared. */
    void (*observe)(void *arg, int rc, int64_t wait_us);
    void *observe_arg;
};

/* The in-process backend. Tokens start above min_token (pass the largest
 * fence the store holds, so tokens keep growing across restarts). */
lock_service *lock_local_new(int64_t min_token);

/* The Redis backend. url: redis://[[user]:password@]host[:port][/db],
 * unix:/path, or redis-sentinel://... for the master that Redis Sentinel
 * names (util/redis_pool.h). Tokens are larger than min_token and than
 * every token Redis granted before, also after a failover. NULL with a
 * message in err when Redis cannot be reached or the URL is bad.
 *
 * A lease is renewed by the backend itself every ttl/3 until it is
 * released, so a holder stuck in a slow call keeps it while its process
 * lives. Every call gives up within about a second when Redis is slow or
 * down (LOCK_E_IO). */
lock_service *lock_redis_new(const char *url, int64_t min_token, char *err, size_t err_size);

static inline int lock_acquire(lock_service *l, const char *key, int64_t ttl_ms,
                               int64_t wait_ms, int64_t *token)
{
    if (!l->observe)
        return l->be->acquire(l, key, ttl_ms, wait_ms, token);
    int64_t start_us = clock_mono_us();
    int rc = l->be->acquire(l, key, ttl_ms, wait_ms, token);
    l->observe(l->observe_arg, rc, clock_mono_us() - start_us);
    return rc;
}
static inline int lock_renew(lock_service *l, const char *key, int64_t token, int64_t ttl_ms)
{
    return l->be->renew(l, key, token, ttl_ms);
}
static inline int lock_release(lock_service *l, const char *key, int64_t token)
{
    return l->be->release(l, key, token);
}
static inline void lock_free(lock_service *l)
{
    if (l)
        l->be->free(l);
}

#endif
