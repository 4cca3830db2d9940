/*
 * test_redis_pool.c - util/redis_pool with Redis Sentinel.
 *
 * URLs: every malformed redis-sentinel:// URL is refused with its own
 * reason and without the password; good ones are named by where() as
 * "sentinel:master[/db] (host:port,...)".
 *
 * Against a master and a replica of their own, with fake sentinels (a
 * thread answering every command with a reply the test chooses): an answer
 * that names no master, an error, garbage, or a server that is not a
 * master (ROLE) fails the connect with that reason; a stale sentinel that
 * names a replica is passed over for the next one; and when the master is
 * demoted under the pool (REPLICAOF), the READONLY reply fails the call,
 * the pool goes down, and it comes back on the master the sentinel names
 * now, with the data.
 *
 * Against real processes: a master and a replica with a password, and
 * three redis-server --sentinel watching them. A pool, the Redis lock and
 * the Redis rate limiter's subscription use the sentinel URL; the master
 * is killed (SIGKILL); the sentinels promote the replica; and the pool's
 * calls succeed again on the new master (ROLE master, another port, the
 * data replicated before the kill), the lock's tokens stay above every
 * token granted before although the new master's counter was behind, and
 * the subscription is back and delivers.
 */
#include "../testutil_redis.h"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>

#include "guard/redis_limit.h"
#include "lock/lock.h"
#include "util/redis_pool.h"

#define MASTER_NAME "payd-test"
#define PASSWORD "s3cret"
#define FAILOVER_MS 20000 /* the longest wait for the sentinels to promote the replica */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static _Atomic int g_connects; /* on_connect calls, of every pool */

static int count_connect(void *arg, redis_pool *p, redisContext *c, char *err, size_t err_size)
{
    (void)arg;
    (void)p;
    (void)c;
    (void)err;
    (void)err_size;
    atomic_fetch_add(&g_connects, 1);
    return 0;
}

static const char *const scripts[] = {"return redis.call('INCR', KEYS[1])"};

static redis_pool *pool_new(const char *url, char *err, size_t err_size)
{
    struct redis_pool_config cfg = {
        .url = url,
        .name = "test",
        .connections = 2,
        .timeout_ms = 500,
        .scripts = scripts,
        .nscripts = 1,
        .on_connect = count_connect,
    };
    return redis_pool_new(&cfg, err, err_size);
}

/* INCR key through the script: its new value, or -1 when Redis could not
 * be asked. */
static long long pool_incr(redis_pool *p, const char *key)
{
    const char *argv[] = {key};
    redisReply *r = redis_pool_eval(p, 0, 1, 1, argv);
    if (!r)
        return -1;
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

/* The port of the server a reply to CONFIG GET port came from. */
static int port_of(redisReply *r)
{
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 2);
    int port = atoi(r->element[1]->str);
    freeReplyObject(r);
    return port;
}

static int pool_port(redis_pool *p)
{
    const char *argv[] = {"CONFIG", "GET", "port"};
    return port_of(redis_pool_command(p, 3, argv));
}

static int conn_port(redisContext *c)
{
    return port_of(redisCommand(c, "CONFIG GET port"));
}

static void assert_pool_on_master(redis_pool *p)
{
    const char *argv[] = {"ROLE"};
    redisReply *r = redis_pool_command(p, 1, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_string_equal(r->element[0]->str, "master");
    freeReplyObject(r);
}

/* One command to the server on 127.0.0.1:port, after AUTH when auth.
 * The reply, which the caller frees; fails the test when there is none. */
static redisReply *ask(int port, bool auth, const char *fmt, ...)
{
    struct timeval tv = {.tv_sec = 2};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    assert_non_null(c);
    if (c->err)
        fail_msg("127.0.0.1:%d: %s", port, c->errstr);
    redisSetTimeout(c, tv);
    if (auth) {
        redisReply *a = redisCommand(c, "AUTH %s", PASSWORD);
        assert_non_null(a);
        freeReplyObject(a);
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!r)
        fail_msg("127.0.0.1:%d: %s", port, c->errstr);
    redisFree(c);
    return r;
}

/* Asserts a status reply "OK" and frees it. */
static void assert_ok(redisReply *r)
{
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    assert_string_equal(r->str, "OK");
    freeReplyObject(r);
}

/* ---- URLs --------------------------------------------------------------- */

static void test_bad_sentinel_urls(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        const char *why;
    } bad[] = {
        {"redis-sentinel://", "no sentinel"},
        {"redis-sentinel://:" PASSWORD "@/" MASTER_NAME, "no sentinel"},
        {"redis-sentinel:///" MASTER_NAME, "no sentinel"},
        {"redis-sentinel://127.0.0.1:26379", "no master name"},
        {"redis-sentinel://127.0.0.1:26379/", "no master name"},
        {"redis-sentinel://127.0.0.1:26379//2", "no master name"},
        {"redis-sentinel://:" PASSWORD "@127.0.0.1:0/m", "bad port"},
        {"redis-sentinel://127.0.0.1:70000/m", "bad port"},
        {"redis-sentinel://127.0.0.1:x/m", "bad port"},
        {"redis-sentinel://127.0.0.1:/m", "bad port"},
        {"redis-sentinel://127.0.0.1:1x/m", "unexpected text after a sentinel"},
        {"redis-sentinel://a:1,/m", "no host"},
        {"redis-sentinel://a:1,,b:2/m", "no host"},
        {"redis-sentinel://[::1:26379/m", "unclosed ["},
        {"redis-sentinel://a:1/my master", "bad or too long master name"},
        {"redis-sentinel://a:1/0123456789012345678901234567890123456789012345678901234567890123",
         "bad or too long master name"},
        {"redis-sentinel://a:1/m/x", "bad database number"},
        {"redis-sentinel://a:1/m/1/2", "unexpected text at the end"},
        {"redis-sentinel://:s3%ZZcret@a:1/m", "bad user or password"},
        {"redis-sentinel://a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8,i:9/m", "more than 8 sentinels"},
        {"redis-sentinels://a:1/m", "unknown scheme"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        redis_pool *p = pool_new(bad[i].url, err, sizeof(err));
        if (p)
            fail_msg("accepted %s", bad[i].url);
        if (!strstr(err, bad[i].why))
            fail_msg("%s: '%s', not '%s'", bad[i].url, err, bad[i].why);
        assert_null(strstr(err, "s3cret"));
    }
}

/* Nothing listens at the sentinels: the URL is good, the error names the
 * pool as where() does and the last sentinel asked, not the password. */
static void test_good_sentinel_urls(void **state)
{
    (void)state;
    int a = test_redis_free_port(), b = test_redis_free_port();
    char url[512], want[512], err[512];
    snprintf(url, sizeof(url),
             "redis-sentinel://user:" PASSWORD "@127.0.0.1:%d,[::1]:%d,127.0.0.1/m-1.a_B/3", a, b);
    snprintf(want, sizeof(want), "sentinel:m-1.a_B/3 (127.0.0.1:%d,[::1]:%d,127.0.0.1:26379)", a,
             b);
    int64_t t0 = mono_ms();
    assert_null(pool_new(url, err, sizeof(err)));
    assert_true(mono_ms() - t0 < 3 * 600);
    if (!strstr(err, want))
        fail_msg("'%s' does not name '%s'", err, want);
    assert_non_null(strstr(err, "sentinel 127.0.0.1:26379: "));
    assert_null(strstr(err, PASSWORD));
    /* eight sentinels are allowed */
    snprintf(url, sizeof(url),
             "redis-sentinel://127.0.0.1:%d,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,"
             "127.0.0.7,127.0.0.8/" MASTER_NAME,
             a);
    assert_null(pool_new(url, err, sizeof(err)));
    assert_non_null(strstr(err, "sentinel:" MASTER_NAME " (127.0.0.1:"));
    assert_non_null(strstr(err, ",127.0.0.8:26379): "));
}

/* ---- fake sentinels ----------------------------------------------------- */

/* A thread on a port of its own that answers every connection's first
 * command with reply (raw RESP) and closes it. */
struct fake_sentinel {
    int fd;
    int port;
    pthread_t thread;
    pthread_mutex_t mu;
    char reply[128];
    atomic_bool stop;
};

static void *fake_main(void *arg)
{
    struct fake_sentinel *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd pfd = {.fd = f->fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) != 1)
            continue;
        int c = accept(f->fd, NULL, NULL);
        if (c < 0)
            continue;
        char buf[1024];
        struct pollfd cfd = {.fd = c, .events = POLLIN};
        if (poll(&cfd, 1, 2000) == 1 && read(c, buf, sizeof(buf)) > 0) {
            pthread_mutex_lock(&f->mu);
            ssize_t n = write(c, f->reply, strlen(f->reply));
            pthread_mutex_unlock(&f->mu);
            (void)n;
        }
        close(c);
    }
    return NULL;
}

static void fake_set(struct fake_sentinel *f, const char *reply)
{
    pthread_mutex_lock(&f->mu);
    snprintf(f->reply, sizeof(f->reply), "%s", reply);
    pthread_mutex_unlock(&f->mu);
}

/* Answers with the address 127.0.0.1:port. */
static void fake_names(struct fake_sentinel *f, int port)
{
    char reply[128], p[16];
    snprintf(p, sizeof(p), "%d", port);
    snprintf(reply, sizeof(reply), "*2\r\n$9\r\n127.0.0.1\r\n$%zu\r\n%s\r\n", strlen(p), p);
    fake_set(f, reply);
}

static void fake_start(struct fake_sentinel *f, const char *reply)
{
    memset(f, 0, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    fake_set(f, reply);
    f->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(f->fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(f->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(f->fd, 16), 0);
    assert_int_equal(getsockname(f->fd, (struct sockaddr *)&a, &len), 0);
    f->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake_sentinel *f)
{
    atomic_store(&f->stop, true);
    pthread_join(f->thread, NULL);
    close(f->fd);
    pthread_mutex_destroy(&f->mu);
}

/* The master and replica the fake sentinels name, with a password. */
static struct test_redis g_master, g_replica;

/* Waits until the replica has synced with its master. */
static void replica_wait_synced(struct test_redis *replica)
{
    for (int64_t t0 = mono_ms(); mono_ms() - t0 < 10000; test_redis_sleep_ms(20)) {
        redisReply *r = ask(replica->port, true, "ROLE");
        bool synced = r->type == REDIS_REPLY_ARRAY && r->elements >= 4 &&
                      r->element[3]->type == REDIS_REPLY_STRING &&
                      strcmp(r->element[3]->str, "connected") == 0;
        freeReplyObject(r);
        if (synced)
            return;
    }
    fail_msg("the replica on port %d did not sync", replica->port);
}

/* Waits until the replica has every write made so far on the master. */
static void assert_replicated(void)
{
    redisReply *r = ask(g_master.port, true, "WAIT 1 2000");
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
}

static int pair_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    test_redis_start(&g_master, PASSWORD);
    test_redis_start_replica(&g_replica, &g_master);
    replica_wait_synced(&g_replica);
    return 0;
}

static int pair_teardown(void **state)
{
    (void)state;
    test_redis_stop(&g_replica);
    test_redis_stop(&g_master);
    return 0;
}

/* A pool through the fake sentinel f: NULL with err, or the pool. */
static redis_pool *pool_via(const struct fake_sentinel *f, char *err, size_t err_size)
{
    char url[128];
    snprintf(url, sizeof(url), "redis-sentinel://:" PASSWORD "@127.0.0.1:%d/" MASTER_NAME,
             f->port);
    return pool_new(url, err, err_size);
}

static void test_sentinel_answers_refused(void **state)
{
    (void)state;
    char replica[64], closed[64];
    snprintf(replica, sizeof(replica), "master 127.0.0.1:%d: ROLE: slave", g_replica.port);
    int closed_port = test_redis_free_port();
    snprintf(closed, sizeof(closed), "master 127.0.0.1:%d: connect: ", closed_port);
    struct fake_sentinel f;
    fake_start(&f, "*-1\r\n");
    char err[512];
    assert_null(pool_via(&f, err, sizeof(err)));
    assert_non_null(strstr(err, "does not know the master"));
    fake_set(&f, "-ERR no such command\r\n");
    assert_null(pool_via(&f, err, sizeof(err)));
    assert_non_null(strstr(err, "ERR no such command"));
    fake_set(&f, "*2\r\n$9\r\n127.0.0.1\r\n$5\r\n99999\r\n");
    assert_null(pool_via(&f, err, sizeof(err)));
    assert_non_null(strstr(err, "unexpected reply"));
    fake_names(&f, closed_port);
    assert_null(pool_via(&f, err, sizeof(err)));
    if (!strstr(err, closed))
        fail_msg("'%s' does not say '%s'", err, closed);
    /* a sentinel that names a replica: the connect fails on ROLE */
    fake_names(&f, g_replica.port);
    assert_null(pool_via(&f, err, sizeof(err)));
    if (!strstr(err, replica))
        fail_msg("'%s' does not say '%s'", err, replica);
    assert_null(strstr(err, PASSWORD));
    fake_names(&f, g_master.port);
    redis_pool *p = pool_via(&f, err, sizeof(err));
    if (!p)
        fail_msg("%s", err);
    assert_int_equal(pool_port(p), g_master.port);
    char where[64];
    snprintf(where, sizeof(where), "sentinel:" MASTER_NAME " (127.0.0.1:%d)", f.port);
    assert_string_equal(redis_pool_where(p), where);
    redis_pool_free(p);
    fake_stop(&f);
}

/* Two sentinels; the one asked first goes stale and names the replica
 * (as a sentinel restarted with an old view does for a while). */
static void test_stale_sentinel_passed_over(void **state)
{
    (void)state;
    struct fake_sentinel a, b;
    fake_start(&a, "");
    fake_start(&b, "");
    fake_names(&a, g_master.port);
    fake_names(&b, g_master.port);
    char url[128], err[512];
    snprintf(url, sizeof(url),
             "redis-sentinel://:" PASSWORD "@127.0.0.1:%d,127.0.0.1:%d/" MASTER_NAME, a.port,
             b.port);
    redis_pool *p = pool_new(url, err, sizeof(err));
    if (!p)
        fail_msg("%s", err);
    fake_names(&a, g_replica.port);
    /* the same connect passes over a to b, and the next ones stay with b */
    for (int i = 0; i < 2; i++) {
        redisContext *c = redis_pool_open(p, err, sizeof(err));
        if (!c)
            fail_msg("%s", err);
        assert_int_equal(conn_port(c), g_master.port);
        redisFree(c);
    }
    /* both stale: the connect fails, saying why */
    fake_names(&b, g_replica.port);
    assert_null(redis_pool_open(p, err, sizeof(err)));
    assert_non_null(strstr(err, "ROLE: slave"));
    redis_pool_free(p);
    fake_stop(&a);
    fake_stop(&b);
}

/* The master is demoted under the pool's connections (a switch the
 * sentinels made while it was up): the write answers READONLY, the call
 * fails and the pool goes down; the prober asks the sentinel again and the
 * pool comes back on the new master. Runs last: it swaps the pair. */
static void test_demoted_master_followed(void **state)
{
    (void)state;
    struct fake_sentinel f;
    fake_start(&f, "");
    fake_names(&f, g_master.port);
    char err[512];
    redis_pool *p = pool_via(&f, err, sizeof(err));
    if (!p)
        fail_msg("%s", err);
    assert_int_equal(pool_incr(p, "demoted"), 1);
    assert_int_equal(pool_port(p), g_master.port);
    assert_replicated();
    int connects = atomic_load(&g_connects);

    assert_ok(ask(g_replica.port, true, "REPLICAOF NO ONE"));
    assert_ok(ask(g_master.port, true, "REPLICAOF 127.0.0.1 %d", g_replica.port));
    /* the old master keeps the pool's connections and refuses the write */
    assert_int_equal(pool_incr(p, "demoted"), -1);
    assert_false(redis_pool_up(p));
    fake_names(&f, g_replica.port);
    long long v = -1;
    for (int64_t t0 = mono_ms(); v < 0 && mono_ms() - t0 < 5000; test_redis_sleep_ms(50))
        v = pool_incr(p, "demoted");
    assert_int_equal(v, 2);
    assert_int_equal(pool_port(p), g_replica.port);
    assert_pool_on_master(p);
    assert_true(atomic_load(&g_connects) > connects);
    redis_pool_free(p);
    fake_stop(&f);
}

/* ---- real sentinels ----------------------------------------------------- */

#define SENTINELS 3

static struct test_redis g_sentinels[SENTINELS];

/* Starts a sentinel watching the master, in its own directory (it
 * rewrites its configuration file). */
static void sentinel_start(struct test_redis *s, int master_port)
{
    memset(s, 0, sizeof(*s));
    test_tmpdir(s->dir);
    for (int attempt = 0; attempt < 5; attempt++) {
        s->port = test_redis_free_port();
        char conf[2048], path[TEST_PATH_MAX];
        snprintf(conf, sizeof(conf),
                 "port %d\nbind 127.0.0.1\ndir %s\nlogfile %s/sentinel.log\n"
                 "sentinel monitor " MASTER_NAME " 127.0.0.1 %d 2\n"
                 "sentinel auth-pass " MASTER_NAME " " PASSWORD "\n"
                 "sentinel down-after-milliseconds " MASTER_NAME " 1000\n"
                 "sentinel failover-timeout " MASTER_NAME " 5000\n",
                 s->port, s->dir, s->dir, master_port);
        test_write_file(s->dir, "sentinel.conf", conf, path);
        const char *argv[] = {TEST_REDIS_BIN, path, "--sentinel", NULL};
        if (test_redis_exec(s, argv))
            return;
    }
    fail_msg("redis-server --sentinel did not start (see %s/sentinel.log)", s->dir);
}

/* The value of a field of SENTINEL MASTER's flat reply, or "". */
static const char *field(const redisReply *r, const char *name)
{
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2)
        if (strcmp(r->element[i]->str, name) == 0)
            return r->element[i + 1]->str;
    return "";
}

/* Waits until every sentinel knows the replica and the other sentinels,
 * so that a failover can begin as soon as the master is gone. */
static void sentinels_wait_ready(void)
{
    for (int i = 0; i < SENTINELS; i++) {
        bool ready = false;
        for (int64_t t0 = mono_ms(); !ready && mono_ms() - t0 < 15000;) {
            redisReply *r = ask(g_sentinels[i].port, false, "SENTINEL MASTER " MASTER_NAME);
            ready = strcmp(field(r, "flags"), "master") == 0 &&
                    strcmp(field(r, "num-slaves"), "1") == 0 &&
                    strcmp(field(r, "num-other-sentinels"), "2") == 0;
            freeReplyObject(r);
            if (!ready)
                test_redis_sleep_ms(100);
        }
        if (!ready)
            fail_msg("sentinel %d does not see the replica and the other sentinels",
                     g_sentinels[i].port);
    }
}

static int sentinels_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    test_redis_start(&g_master, PASSWORD);
    test_redis_start_replica(&g_replica, &g_master);
    replica_wait_synced(&g_replica);
    for (int i = 0; i < SENTINELS; i++)
        sentinel_start(&g_sentinels[i], g_master.port);
    sentinels_wait_ready();
    return 0;
}

static int sentinels_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < SENTINELS; i++)
        test_redis_stop(&g_sentinels[i]);
    return pair_teardown(state);
}

static void sentinel_url(char *out, size_t size, const char *master_name)
{
    snprintf(out, size, "redis-sentinel://:" PASSWORD "@127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d/%s",
             g_sentinels[0].port, g_sentinels[1].port, g_sentinels[2].port, master_name);
}

static void test_unknown_master(void **state)
{
    (void)state;
    char url[256], err[512];
    sentinel_url(url, sizeof(url), "nobody");
    assert_null(pool_new(url, err, sizeof(err)));
    assert_non_null(strstr(err, "does not know the master"));
}

/* What a subscription has seen. */
struct inbox {
    atomic_int resets; /* fn(arg, NULL): may have missed messages */
    atomic_int after;  /* "after" messages */
};

static void on_message(void *arg, const char *msg)
{
    struct inbox *in = arg;
    if (!msg)
        atomic_fetch_add(&in->resets, 1);
    else if (strcmp(msg, "after") == 0)
        atomic_fetch_add(&in->after, 1);
}

static void test_failover(void **state)
{
    (void)state;
    char url[256], err[512];
    sentinel_url(url, sizeof(url), MASTER_NAME);

    /* A pool, a lock and a subscription, all on the master. */
    redis_pool *p = pool_new(url, err, sizeof(err));
    if (!p)
        fail_msg("%s", err);
    char where[128];
    snprintf(where, sizeof(where),
             "sentinel:" MASTER_NAME " (127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d)",
             g_sentinels[0].port, g_sentinels[1].port, g_sentinels[2].port);
    assert_string_equal(redis_pool_where(p), where);
    assert_int_equal(pool_port(p), g_master.port);
    assert_pool_on_master(p);
    assert_int_equal(pool_incr(p, "failover"), 1);
    redisContext *c = redis_pool_open(p, err, sizeof(err));
    if (!c)
        fail_msg("%s", err);
    assert_int_equal(conn_port(c), g_master.port);
    redisFree(c);

    lock_service *l = lock_redis_new(url, 0, err, sizeof(err));
    if (!l)
        fail_msg("%s", err);
    int64_t token = 0, max_token = 0;
    const char *keys[] = {"ord_a", "ord_b", "ord_c"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(lock_acquire(l, keys[i], 60000, 0, &token), LOCK_OK);
        assert_true(token > max_token);
        max_token = token;
    }
    redis_limit *rl = redis_limit_new(url, NULL, err, sizeof(err));
    if (!rl)
        fail_msg("%s", err);
    struct inbox in = {0};
    assert_int_equal(redis_limit_subscribe(rl, "inval", on_message, &in), 0);

    /* Everything reached the replica; then the replica loses the fencing
     * counter's last writes, as a failover to a replica behind would. */
    assert_replicated();
    assert_ok(ask(g_replica.port, true, "CONFIG SET replica-read-only no"));
    assert_ok(ask(g_replica.port, true, "SET payd:fence 1"));

    int old_port = g_master.port, connects = atomic_load(&g_connects);
    test_redis_kill(&g_master);
    int64_t t0 = mono_ms();
    /* the call on the dead connection fails, and the pool is down */
    assert_int_equal(pool_incr(p, "failover"), -1);
    assert_false(redis_pool_up(p));

    long long v = -1;
    while (v < 0 && mono_ms() - t0 < FAILOVER_MS) {
        test_redis_sleep_ms(100);
        v = pool_incr(p, "failover");
    }
    if (v < 0)
        fail_msg("no call succeeded within %d ms of the kill", FAILOVER_MS);
    print_message("calls succeed again %lld ms after the kill\n", (long long)(mono_ms() - t0));
    assert_int_equal(v, 2); /* on the data replicated before */
    assert_pool_on_master(p);
    int new_port = pool_port(p);
    assert_int_not_equal(new_port, old_port);
    assert_int_equal(new_port, g_replica.port);
    assert_true(atomic_load(&g_connects) > connects);
    c = redis_pool_open(p, err, sizeof(err));
    if (!c)
        fail_msg("%s", err);
    assert_int_equal(conn_port(c), new_port);
    redisFree(c);

    /* The lock reconnected through the sentinels and raised the counter
     * the new master had lost: its tokens still grow. */
    int rc = LOCK_E_IO;
    while (rc != LOCK_OK && mono_ms() - t0 < FAILOVER_MS + 5000) {
        rc = lock_acquire(l, "ord_d", 60000, 0, &token);
        if (rc != LOCK_OK)
            test_redis_sleep_ms(100);
    }
    assert_int_equal(rc, LOCK_OK);
    assert_true(token > max_token);

    /* The subscription is back on the new master and delivers. */
    bool delivered = false;
    while (!delivered && mono_ms() - t0 < FAILOVER_MS + 10000) {
        redis_limit_publish(rl, "inval", "after");
        test_redis_sleep_ms(100);
        delivered = atomic_load(&in.after) > 0;
    }
    assert_true(delivered);
    assert_true(atomic_load(&in.resets) > 0);

    redis_limit_free(rl);
    lock_free(l);
    redis_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest urls[] = {
        cmocka_unit_test(test_bad_sentinel_urls),
        cmocka_unit_test(test_good_sentinel_urls),
    };
    const struct CMUnitTest fakes[] = {
        cmocka_unit_test(test_sentinel_answers_refused),
        cmocka_unit_test(test_stale_sentinel_passed_over),
        cmocka_unit_test(test_demoted_master_followed),
    };
    const struct CMUnitTest sentinels[] = {
        cmocka_unit_test(test_unknown_master),
        cmocka_unit_test(test_failover),
    };
    int failed = cmocka_run_group_tests_name("urls", urls, NULL, NULL);
    failed += cmocka_run_group_tests_name("fake sentinels", fakes, pair_setup, pair_teardown);
    failed += cmocka_run_group_tests_name("sentinels", sentinels, sentinels_setup,
                                          sentinels_teardown);
    return failed;
}
