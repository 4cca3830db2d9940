/*
 * redis_limit.c - shared buckets, instance count and invalidation over
 * Redis; see redis_limit.h.
 *
 * Buckets and heartbeats go through a small connection pool (util/
 * redis_pool.h: one connection per calling thread in practice, 1 s
 * timeouts, fail-fast while down). Each subscription holds a connection of
 * its own, which pub/sub takes over, on its own thread.
 *
 * The background threads sleep in poll() on an eventfd that free() makes
 * readable, so they all stop at once.
 */
#include "guard/redis_limit.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "obs/log.h"
#include "util/redis_pool.h"
#include "util/util.h"

#define POOL_CONNS 4 /* the HTTP threads, the heartbeat, a publisher */
#define TIMEOUT_MS 1000
#define HEARTBEAT_MS 1000
#define HEARTBEAT_TTL_MS 3000 /* an instance silent this long is not counted */
#define INSTANCES_KEY "payd:instances"
#define BUCKET_PREFIX "payd:rl:"
#define CHANNEL_PREFIX "payd:"
#define KEY_MAX 256
#define INSTANCE_MAX 101
#define SUB_IDLE_MS 5000 /* a subscription PINGs after this long without a word */
#define SUB_PONG_MS 2000 /* and gives the connection up without an answer */

enum script { S_TAKE, S_HEARTBEAT, S_COUNT };

static const char *const scripts[S_COUNT] = {
    /* KEYS: bucket. ARGV: interval_ns, burst. Returns {1, 0} when admitted,
     * {0, wait_ns} when not. GCRA as in token_bucket.c. tat (when the
     * bucket is full again) is stored as "seconds:nanoseconds" of Redis's
     * clock and the arithmetic is done on tat - now: on durations, not
     * timestamps, which Lua's doubles hold exactly up to 2^53 ns (104
     * days), whatever the interval. The key expires
     * when the bucket is full again. replicate_commands lets a script
     * write after TIME on Redis before 5 (later ones always do). */
    [S_TAKE] = "if redis.replicate_commands then redis.replicate_commands() end\n"
               "local t = redis.call('TIME')\n"
               "local now_s, now_ns = tonumber(t[1]), tonumber(t[2]) * 1000\n"
               "local interval = tonumber(ARGV[1])\n"
               "local tau = interval * tonumber(ARGV[2])\n"
               "local ahead = 0\n"
               "local v = redis.call('GET', KEYS[1])\n"
               "if v then\n"
               "  local s, ns = string.match(v, '^(%d+):(%d+)$')\n"
               "  ahead = math.max(0, (tonumber(s) - now_s) * 1e9 + tonumber(ns) - now_ns)\n"
               "end\n"
               "local new_ahead = ahead + interval\n"
               "if new_ahead > tau then return {0, new_ahead - tau} end\n"
               "local ns = now_ns + new_ahead\n"
               "redis.call('SET', KEYS[1], string.format('%d:%d', now_s + math.floor(ns / 1e9),\n"
               "           ns % 1e9), 'PX', math.max(1, math.ceil(new_ahead / 1e6)))\n"
               "return {1, 0}\n",
    /* KEYS: the instances (a sorted set, scored by when each expires).
     * ARGV: instance, ttl_ms. Renews this instance, forgets the silent
     * ones, returns how many are left. */
    [S_HEARTBEAT] = "if redis.replicate_commands then redis.replicate_commands() end\n"
                    "local t = redis.call('TIME')\n"
                    "local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
                    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)\n"
                    "redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])\n"
                    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                    "return redis.call('ZCARD', KEYS[1])\n",
};

struct subscription {
    redis_limit *owner;
    char channel[KEY_MAX];
    redis_limit_message_fn *fn;
    void *arg;
    redisContext *ctx; /* NULL while not subscribed; the thread's once it runs */
    pthread_t thread;
};

struct redis_limit {
    redis_pool *pool;
    char instance[INSTANCE_MAX]; /* "": not counted, no heartbeat thread */
    _Atomic int instances;
    int stop_fd; /* an eventfd, readable once free() has begun */
    pthread_t heartbeat;
    pthread_mutex_t mu; /* guards subs */
    struct subscription *subs[REDIS_LIMIT_SUBS_MAX];
    int nsubs;
};

/* Sleeps up to ms; true when free() has begun. */
static bool wait_stop(redis_limit *r, int ms)
{
    struct pollfd pfd = {.fd = r->stop_fd, .events = POLLIN};
    return poll(&pfd, 1, ms) > 0;
}

/* ---- buckets ------------------------------------------------------------ */

int redis_limit_take(redis_limit *r, const char *key, int64_t interval_ns, int64_t burst,
                     int64_t *wait_ns)
{
    PAYD_ASSERT(interval_ns >= 0 && burst >= 1);
    if (interval_ns == 0)
        return 1;
    char rkey[KEY_MAX], interval[24], burst_s[24];
    int n = snprintf(rkey, sizeof(rkey), BUCKET_PREFIX "%s", key);
    PAYD_ASSERT(n > 0 && (size_t)n < sizeof(rkey));
    snprintf(interval, sizeof(interval), "%lld", (long long)interval_ns);
    snprintf(burst_s, sizeof(burst_s), "%lld", (long long)burst);
    const char *argv[] = {rkey, interval, burst_s};
    redisReply *rep = redis_pool_eval(r->pool, S_TAKE, 1, 3, argv);
    if (!rep)
        return -1;
    int rc = -1;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER &&
        rep->element[1]->type == REDIS_REPLY_INTEGER) {
        rc = rep->element[0]->integer == 1 ? 1 : 0;
        if (rc == 0 && wait_ns)
            *wait_ns = rep->element[1]->integer;
    }
    freeReplyObject(rep);
    return rc;
}

/* ---- instances ---------------------------------------------------------- */

static void beat(redis_limit *r)
{
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%d", HEARTBEAT_TTL_MS);
    const char *argv[] = {INSTANCES_KEY, r->instance, ttl};
    redisReply *rep = redis_pool_eval(r->pool, S_HEARTBEAT, 1, 3, argv);
    if (rep && rep->type == REDIS_REPLY_INTEGER && rep->integer >= 1)
        atomic_store(&r->instances, rep->integer < INT32_MAX ? (int)rep->integer : INT32_MAX);
    if (rep)
        freeReplyObject(rep);
}

static void *heartbeat_main(void *arg)
{
    redis_limit *r = arg;
    while (!wait_stop(r, HEARTBEAT_MS))
        beat(r);
    return NULL;
}

int redis_limit_instances(redis_limit *r)
{
    return atomic_load(&r->instances);
}

/* ---- publish and subscribe ---------------------------------------------- */

int redis_limit_publish(redis_limit *r, const char *channel, const char *message)
{
    char ch[KEY_MAX];
    int n = snprintf(ch, sizeof(ch), CHANNEL_PREFIX "%s", channel);
    PAYD_ASSERT(n > 0 && (size_t)n < sizeof(ch));
    const char *argv[] = {"PUBLISH", ch, message};
    redisReply *rep = redis_pool_command(r->pool, 3, argv);
    int rc = rep && rep->type == REDIS_REPLY_INTEGER ? (int)rep->integer : -1;
    if (rep)
        freeReplyObject(rep);
    return rc;
}

/* A connection subscribed to s's channel, or NULL with the reason in err. */
static redisContext *sub_connect(struct subscription *s, char *err, size_t err_size)
{
    redisContext *c = redis_pool_open(s->owner->pool, err, err_size);
    if (!c)
        return NULL;
    const char *argv[] = {"SUBSCRIBE", s->channel};
    redisReply *rep = redisCommandArgv(c, 2, argv, NULL);
    bool ok = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
              rep->element[0]->type == REDIS_REPLY_STRING &&
              strcmp(rep->element[0]->str, "subscribe") == 0;
    if (!ok) {
        snprintf(err, err_size, "SUBSCRIBE: %s",
                 !rep ? c->errstr : rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        redisFree(c);
        c = NULL;
    }
    if (rep)
        freeReplyObject(rep);
    return c;
}

/* Calls the subscriber with a message; other replies (the PONG to our
 * PING) are no news. */
static void deliver(struct subscription *s, const redisReply *rep)
{
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
        rep->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(rep->element[0]->str, "message") == 0 &&
        rep->element[2]->type == REDIS_REPLY_STRING)
        s->fn(s->arg, rep->element[2]->str);
}

static bool send_ping(redisContext *c)
{
    if (redisAppendCommand(c, "PING") != REDIS_OK)
        return false;
    int done = 0;
    while (!done)
        if (redisBufferWrite(c, &done) != REDIS_OK)
            return false;
    return true;
}

/* Delivers messages until the connection fails (false) or free() begins
 * (true). A connection silent for SUB_IDLE_MS gets a PING, and is given up
 * when that goes unanswered: a server gone without a word (a dead host, a
 * partition) sends no close. */
static bool pump(struct subscription *s)
{
    redisContext *c = s->ctx;
    int64_t heard_ms = clock_mono_ms();
    bool pinged = false;
    for (;;) {
        void *rep;
        while (redisReaderGetReply(c->reader, &rep) == REDIS_OK && rep) {
            deliver(s, rep);
            freeReplyObject(rep);
            heard_ms = clock_mono_ms();
            pinged = false;
        }
        if (c->reader->err)
            return false;
        struct pollfd pfd[2] = {{.fd = c->fd, .events = POLLIN},
                                {.fd = s->owner->stop_fd, .events = POLLIN}};
        int n = poll(pfd, 2, 1000);
        if (n < 0 && errno != EINTR)
            return false;
        if (pfd[1].revents)
            return true;
        if (pfd[0].revents) {
            if (redisBufferRead(c) != REDIS_OK)
                return false;
            continue;
        }
        int64_t quiet_ms = clock_mono_ms() - heard_ms;
        if (pinged && quiet_ms > SUB_IDLE_MS + SUB_PONG_MS)
            return false;
        if (!pinged && quiet_ms > SUB_IDLE_MS) {
            if (!send_ping(c))
                return false;
            pinged = true;
        }
    }
}

static void *subscriber_main(void *arg)
{
    struct subscription *s = arg;
    redis_limit *r = s->owner;
    bool missed = s->ctx == NULL; /* the caller was told: not subscribed yet */
    char err[256];
    for (;;) {
        if (!s->ctx) {
            s->ctx = sub_connect(s, err, sizeof(err));
            if (!s->ctx) {
                if (wait_stop(r, REDIS_POOL_RETRY_MS))
                    break;
                continue;
            }
            log_info("redis_subscribed", "channel", s->channel, "redis",
                     redis_pool_where(r->pool), NULL);
        }
        if (missed)
            s->fn(s->arg, NULL);
        missed = false;
        if (pump(s))
            break;
        log_warn("redis_subscription_lost", "channel", s->channel, "redis",
                 redis_pool_where(r->pool), "error",
                 s->ctx->err ? s->ctx->errstr : "no answer to PING", NULL);
        redisFree(s->ctx);
        s->ctx = NULL;
        missed = true;
        if (wait_stop(r, 0))
            break;
    }
    return NULL;
}

int redis_limit_subscribe(redis_limit *r, const char *channel, redis_limit_message_fn *fn,
                          void *arg)
{
    PAYD_ASSERT(fn != NULL);
    struct subscription *s = xcalloc(1, sizeof(*s));
    int n = snprintf(s->channel, sizeof(s->channel), CHANNEL_PREFIX "%s", channel);
    PAYD_ASSERT(n > 0 && (size_t)n < sizeof(s->channel));
    s->owner = r;
    s->fn = fn;
    s->arg = arg;
    pthread_mutex_lock(&r->mu);
    if (r->nsubs == REDIS_LIMIT_SUBS_MAX) {
        pthread_mutex_unlock(&r->mu);
        free(s);
        return -2;
    }
    r->subs[r->nsubs++] = s;
    pthread_mutex_unlock(&r->mu);
    /* Subscribe here, so that a message published after this returns 0
     * is delivered. */
    char err[256];
    s->ctx = sub_connect(s, err, sizeof(err));
    int rc = s->ctx ? 0 : -1;
    int trc = pthread_create(&s->thread, NULL, subscriber_main, s);
    PAYD_ASSERT(trc == 0);
    return rc;
}

/* ---- life --------------------------------------------------------------- */

redis_limit *redis_limit_new(const char *url, const char *instance_id, char *err,
                             size_t err_size)
{
    PAYD_ASSERT(!instance_id || (instance_id[0] && strlen(instance_id) < INSTANCE_MAX));
    redis_limit *r = xcalloc(1, sizeof(*r));
    snprintf(r->instance, sizeof(r->instance), "%s", instance_id ? instance_id : "");
    atomic_init(&r->instances, 1);
    struct redis_pool_config cfg = {
        .url = url,
        .name = "limit",
        .connections = POOL_CONNS,
        .timeout_ms = TIMEOUT_MS,
        .scripts = scripts,
        .nscripts = S_COUNT,
    };
    r->pool = redis_pool_new(&cfg, err, err_size);
    if (!r->pool) {
        free(r);
        return NULL;
    }
    r->stop_fd = eventfd(0, EFD_CLOEXEC);
    PAYD_ASSERT(r->stop_fd >= 0);
    pthread_mutex_init(&r->mu, NULL);
    if (!r->instance[0])
        return r;
    beat(r); /* the count is known from the start */
    int rc = pthread_create(&r->heartbeat, NULL, heartbeat_main, r);
    PAYD_ASSERT(rc == 0);
    return r;
}

void redis_limit_free(redis_limit *r)
{
    if (!r)
        return;
    uint64_t one = 1;
    ssize_t w = write(r->stop_fd, &one, sizeof(one));
    PAYD_ASSERT(w == (ssize_t)sizeof(one));
    if (r->instance[0])
        pthread_join(r->heartbeat, NULL);
    for (int i = 0; i < r->nsubs; i++) {
        pthread_join(r->subs[i]->thread, NULL);
        if (r->subs[i]->ctx)
            redisFree(r->subs[i]->ctx);
        free(r->subs[i]);
    }
    /* Leave the count now rather than when the heartbeat runs out. */
    if (r->instance[0]) {
        const char *argv[] = {"ZREM", INSTANCES_KEY, r->instance};
        redisReply *rep = redis_pool_command(r->pool, 3, argv);
        if (rep)
            freeReplyObject(rep);
    }
    redis_pool_free(r->pool);
    pthread_mutex_destroy(&r->mu);
    close(r->stop_fd);
    free(r);
}
