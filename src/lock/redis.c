/*
 * redis.c - the lock on Redis (cluster mode); see lock.h.
 *
 * A lease is the key payd:lock:<key> holding "<instance>:<token>" with a PX
 * expiry, where instance is random per lock_service. Every operation is one
 * Lua script, so it is atomic on the server: acquire sets the key only when
 * it is absent and takes the token from one global counter (payd:fence) in
 * the same step; renew and release touch the key only while it still holds
 * this holder's owner string.
 *
 * The counter must never go back, because the store refuses a token older
 * than the newest it holds for an order. Redis can lose it (a restart
 * without persistence, a failover to a replica that missed the last
 * writes), so every new connection first raises it to the largest of
 * min_token and every token or counter value this process has seen.
 *
 * The watchdog thread renews each lease of this process every ttl/3 until
 * it is released, so a worker stuck in a slow channel call keeps its lease
 * while its process lives. A lease it finds lost (it expired while Redis
 * was unreachable, or Redis lost it) is dropped and logged; the holder finds
 * out when the store refuses its stale token.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ids.h"
#include "lock/lock.h"
#include "obs/log.h"
#include "util/redis_pool.h"
#include "util/util.h"

#define POOL_CONNS 8       /* a worker holds a connection for one round trip */
#define TIMEOUT_MS 1000    /* connect, and each command */
#define LEASES_MAX 4096    /* leases the watchdog keeps alive at once */
#define RENEW_BATCH 64     /* leases renewed per watchdog pass */
#define RENEW_RETRY_MS 100 /* after a renewal that could not reach Redis */
#define IDLE_MS 1000       /* the watchdog's longest sleep */
#define PAUSE_MIN_MS 2     /* acquire with wait_ms: the first pause between tries */
#define PAUSE_MAX_MS 32
#define KEY_PREFIX "payd:lock:"
#define FENCE_KEY "payd:fence"
#define INSTANCE_LEN 16 /* hex */
#define OWNER_MAX (INSTANCE_LEN + 1 + 20 + 1)

enum script { S_ACQUIRE, S_RENEW, S_RELEASE, S_RAISE, S_COUNT };

static const char *const scripts[S_COUNT] = {
    /* KEYS: lock, counter. ARGV: instance, ttl_ms. Returns the token, or nil
     * when the lock is held. Nothing runs between the EXISTS and the SET, so
     * together they are SET NX PX, with the token (known only after INCR)
     * in the value. The counter is read back as a string so that no token
     * passes through Lua's floating-point numbers. */
    [S_ACQUIRE] = "if redis.call('EXISTS', KEYS[1]) == 1 then return false end\n"
                  "redis.call('INCR', KEYS[2])\n"
                  "local token = redis.call('GET', KEYS[2])\n"
                  "redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])\n"
                  "return token\n",
    /* KEYS: lock. ARGV: owner, ttl_ms. 1 when renewed, 0 when not ours. */
    [S_RENEW] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                "end\n"
                "return 0\n",
    /* KEYS: lock. ARGV: owner. 1 when deleted, 0 when not ours. */
    [S_RELEASE] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                  "  return redis.call('DEL', KEYS[1])\n"
                  "end\n"
                  "return 0\n",
    /* KEYS: counter. ARGV: floor. Raises the counter to the floor and
     * returns it. Both are decimal strings without sign or leading zeros,
     * so comparing lengths, then text, compares the numbers exactly. */
    [S_RAISE] = "local cur = redis.call('GET', KEYS[1])\n"
                "local floor = ARGV[1]\n"
                "if not cur or #cur < #floor or (#cur == #floor and cur < floor) then\n"
                "  redis.call('SET', KEYS[1], floor)\n"
                "  return floor\n"
                "end\n"
                "return cur\n",
};

/* A lease this process holds, kept alive by the watchdog. */
struct lease {
    char key[ID_MAX];
    int64_t token;
    int64_t ttl_ms;
    int64_t due_ms; /* next renewal, monotonic */
};

struct redis_lock {
    lock_service base;
    redis_pool *pool;
    char instance[INSTANCE_LEN + 1];
    _Atomic int64_t max_seen; /* the floor for the counter on every new connection */

    pthread_mutex_t mu; /* guards the rest */
    pthread_cond_t wake;
    bool stop;
    int64_t wake_ms; /* when the watchdog looks next */
    struct lease *leases;
    int nleases, cap;
    pthread_t watchdog;
};

static void note_token(struct redis_lock *l, int64_t token)
{
    int64_t seen = atomic_load(&l->max_seen);
    while (token > seen && !atomic_compare_exchange_weak(&l->max_seen, &seen, token)) {
    }
}

static bool parse_token(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return false;
    *out = v;
    return true;
}

static void key_of(const char *key, char out[sizeof(KEY_PREFIX) + ID_MAX])
{
    snprintf(out, sizeof(KEY_PREFIX) + ID_MAX, KEY_PREFIX "%s", key);
}

static void owner_of(const struct redis_lock *l, int64_t token, char out[OWNER_MAX])
{
    snprintf(out, OWNER_MAX, "%s:%" PRId64, l->instance, token);
}

static int64_t renew_period_ms(int64_t ttl_ms)
{
    return ttl_ms >= 3 ? ttl_ms / 3 : 1;
}

/* ---- the watchdog's table ----------------------------------------------- */

/* Index of the lease, or -1. Called with mu held. */
static int find_lease(const struct redis_lock *l, const char *key, int64_t token)
{
    for (int i = 0; i < l->nleases; i++)
        if (l->leases[i].token == token && strcmp(l->leases[i].key, key) == 0)
            return i;
    return -1;
}

static void drop_lease(struct redis_lock *l, int i)
{
    l->leases[i] = l->leases[--l->nleases];
}

/* False when the table is full. */
static bool watch(struct redis_lock *l, const char *key, int64_t token, int64_t ttl_ms)
{
    pthread_mutex_lock(&l->mu);
    bool room = l->nleases < LEASES_MAX;
    if (room) {
        if (l->nleases == l->cap) {
            l->cap = l->cap ? l->cap * 2 : 64;
            l->leases = xrealloc(l->leases, (size_t)l->cap * sizeof(*l->leases));
        }
        struct lease *le = &l->leases[l->nleases++];
        snprintf(le->key, sizeof(le->key), "%s", key);
        le->token = token;
        le->ttl_ms = ttl_ms;
        le->due_ms = clock_mono_ms() + renew_period_ms(ttl_ms);
        if (le->due_ms < l->wake_ms)
            pthread_cond_signal(&l->wake);
    }
    pthread_mutex_unlock(&l->mu);
    return room;
}

static void unwatch(struct redis_lock *l, const char *key, int64_t token)
{
    pthread_mutex_lock(&l->mu);
    int i = find_lease(l, key, token);
    if (i >= 0)
        drop_lease(l, i);
    pthread_mutex_unlock(&l->mu);
}

/* ---- scripts ------------------------------------------------------------ */

/* One acquire attempt: LOCK_OK with *token, LOCK_E_BUSY or LOCK_E_IO. */
static int try_acquire(struct redis_lock *l, const char *key, int64_t ttl_ms, int64_t *token)
{
    char rkey[sizeof(KEY_PREFIX) + ID_MAX], ttl[24];
    key_of(key, rkey);
    snprintf(ttl, sizeof(ttl), "%" PRId64, ttl_ms);
    const char *argv[] = {rkey, FENCE_KEY, l->instance, ttl};
    redisReply *r = redis_pool_eval(l->pool, S_ACQUIRE, 2, 4, argv);
    if (!r)
        return LOCK_E_IO;
    int rc = LOCK_E_IO;
    if (r->type == REDIS_REPLY_NIL)
        rc = LOCK_E_BUSY;
    else if (r->type == REDIS_REPLY_STRING && parse_token(r->str, token))
        rc = LOCK_OK;
    freeReplyObject(r);
    return rc;
}

/* Renew or release: LOCK_OK, LOCK_E_LOST when the lease is not ours (any
 * more), LOCK_E_IO. */
static int owner_call(struct redis_lock *l, enum script s, const char *key, int64_t token,
                      int64_t ttl_ms)
{
    char rkey[sizeof(KEY_PREFIX) + ID_MAX], owner[OWNER_MAX], ttl[24];
    key_of(key, rkey);
    owner_of(l, token, owner);
    snprintf(ttl, sizeof(ttl), "%" PRId64, ttl_ms);
    const char *argv[] = {rkey, owner, ttl};
    redisReply *r = redis_pool_eval(l->pool, s, 1, s == S_RENEW ? 3 : 2, argv);
    if (!r)
        return LOCK_E_IO;
    int rc = r->type != REDIS_REPLY_INTEGER ? LOCK_E_IO
             : r->integer == 1              ? LOCK_OK
                                            : LOCK_E_LOST;
    freeReplyObject(r);
    return rc;
}

/* on_connect: raises the counter to what this process has seen. */
static int raise_fence(void *arg, redis_pool *p, redisContext *c, char *err, size_t err_size)
{
    struct redis_lock *l = arg;
    char floor[24];
    snprintf(floor, sizeof(floor), "%" PRId64, atomic_load(&l->max_seen));
    const char *argv[] = {FENCE_KEY, floor};
    redisReply *r = redis_pool_eval_on(p, c, S_RAISE, 1, 2, argv);
    int64_t counter;
    bool ok = r && r->type == REDIS_REPLY_STRING && parse_token(r->str, &counter);
    if (ok)
        note_token(l, counter);
    else
        snprintf(err, err_size, "raising " FENCE_KEY ": %s",
                 !r ? c->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

/* ---- the watchdog ------------------------------------------------------- */

/* Copies the leases due now into due[] (at most RENEW_BATCH), moves their
 * next renewal on, and sets wake_ms to the next one due. Called with mu. */
static int collect_due(struct redis_lock *l, struct lease due[RENEW_BATCH])
{
    int64_t now_ms = clock_mono_ms();
    int n = 0;
    l->wake_ms = now_ms + IDLE_MS;
    for (int i = 0; i < l->nleases; i++) {
        struct lease *le = &l->leases[i];
        if (le->due_ms <= now_ms && n < RENEW_BATCH) {
            due[n++] = *le;
            le->due_ms = now_ms + renew_period_ms(le->ttl_ms);
        } else if (le->due_ms < l->wake_ms) {
            l->wake_ms = le->due_ms;
        }
    }
    return n;
}

/* Applies the outcome of renewals to the leases still in the table (a
 * lease released meanwhile is gone, and its LOST is no news). Called
 * with mu. */
static void settle(struct redis_lock *l, const struct lease *due, const int *rcs, int n)
{
    int64_t now_ms = clock_mono_ms();
    for (int j = 0; j < n; j++) {
        int i = find_lease(l, due[j].key, due[j].token);
        if (i < 0 || rcs[j] == LOCK_OK)
            continue;
        if (rcs[j] == LOCK_E_LOST) {
            char token[24];
            snprintf(token, sizeof(token), "%" PRId64, due[j].token);
            log_warn("lock_lease_lost", "key", due[j].key, "token", token, "redis",
                     redis_pool_where(l->pool), NULL);
            drop_lease(l, i);
        } else {
            int64_t retry_ms = renew_period_ms(due[j].ttl_ms);
            l->leases[i].due_ms = now_ms + (retry_ms < RENEW_RETRY_MS ? retry_ms : RENEW_RETRY_MS);
        }
    }
}

static void *watchdog_main(void *arg)
{
    struct redis_lock *l = arg;
    struct lease due[RENEW_BATCH];
    int rcs[RENEW_BATCH];
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        int n = collect_due(l, due);
        if (n == 0) {
            int64_t sleep_for_ms = l->wake_ms - clock_mono_ms();
            struct timespec until;
            clock_deadline(sleep_for_ms > 0 ? sleep_for_ms : 0, &until);
            pthread_cond_timedwait(&l->wake, &l->mu, &until);
            continue;
        }
        /* Round trips without the table's lock, so acquire and release
         * never wait for them. */
        pthread_mutex_unlock(&l->mu);
        for (int j = 0; j < n; j++)
            rcs[j] = owner_call(l, S_RENEW, due[j].key, due[j].token, due[j].ttl_ms);
        pthread_mutex_lock(&l->mu);
        settle(l, due, rcs, n);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- the backend -------------------------------------------------------- */

static int redis_acquire(lock_service *base, const char *key, int64_t ttl_ms, int64_t wait_ms,
                         int64_t *token)
{
    struct redis_lock *l = (struct redis_lock *)base;
    PAYD_ASSERT(strlen(key) < ID_MAX && ttl_ms > 0);
    int64_t deadline_ms = clock_mono_ms() + wait_ms;
    int64_t pause_ms = PAUSE_MIN_MS;
    int rc;
    /* Short pauses, growing: a release is not announced, so a waiter polls. */
    while ((rc = try_acquire(l, key, ttl_ms, token)) == LOCK_E_BUSY) {
        int64_t left_ms = deadline_ms - clock_mono_ms();
        if (left_ms <= 0)
            return LOCK_E_BUSY;
        sleep_ms(pause_ms < left_ms ? pause_ms : left_ms);
        pause_ms = pause_ms * 2 < PAUSE_MAX_MS ? pause_ms * 2 : PAUSE_MAX_MS;
    }
    if (rc != LOCK_OK)
        return rc;
    note_token(l, *token);
    if (!watch(l, key, *token, ttl_ms)) {
        owner_call(l, S_RELEASE, key, *token, 0);
        return LOCK_E_FULL;
    }
    return LOCK_OK;
}

static int redis_renew(lock_service *base, const char *key, int64_t token, int64_t ttl_ms)
{
    struct redis_lock *l = (struct redis_lock *)base;
    PAYD_ASSERT(ttl_ms > 0);
    int rc = owner_call(l, S_RENEW, key, token, ttl_ms);
    if (rc == LOCK_OK) {
        /* The watchdog goes on with the new ttl. */
        pthread_mutex_lock(&l->mu);
        int i = find_lease(l, key, token);
        if (i >= 0) {
            l->leases[i].ttl_ms = ttl_ms;
            l->leases[i].due_ms = clock_mono_ms() + renew_period_ms(ttl_ms);
        }
        pthread_mutex_unlock(&l->mu);
    }
    return rc;
}

static int redis_release(lock_service *base, const char *key, int64_t token)
{
    struct redis_lock *l = (struct redis_lock *)base;
    unwatch(l, key, token);
    return owner_call(l, S_RELEASE, key, token, 0);
}

/* Leases still held are not released: they run out after their ttl. */
static void redis_free(lock_service *base)
{
    struct redis_lock *l = (struct redis_lock *)base;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_signal(&l->wake);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->watchdog, NULL);
    redis_pool_free(l->pool);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->wake);
    free(l->leases);
    free(l);
}

static const struct lock_backend redis_backend = {
    .name = "redis",
    .acquire = redis_acquire,
    .renew = redis_renew,
    .release = redis_release,
    .free = redis_free,
};

lock_service *lock_redis_new(const char *url, int64_t min_token, char *err, size_t err_size)
{
    struct redis_lock *l = xcalloc(1, sizeof(*l));
    l->base.be = &redis_backend;
    uint8_t id[INSTANCE_LEN / 2];
    rand_bytes(id, sizeof(id));
    hex_encode(id, sizeof(id), l->instance);
    atomic_init(&l->max_seen, min_token > 0 ? min_token : 0);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->wake, NULL);
    struct redis_pool_config cfg = {
        .url = url,
        .name = "lock",
        .connections = POOL_CONNS,
        .timeout_ms = TIMEOUT_MS,
        .scripts = scripts,
        .nscripts = S_COUNT,
        .on_connect = raise_fence,
        .arg = l,
    };
    l->pool = redis_pool_new(&cfg, err, err_size);
    if (!l->pool) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->wake);
        free(l);
        return NULL;
    }
    int rc = pthread_create(&l->watchdog, NULL, watchdog_main, l);
    PAYD_ASSERT(rc == 0);
    return &l->base;
}
