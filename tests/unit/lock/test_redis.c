/*
 * test_redis.c - lock/redis against a redis-server of its own: one holder
 * per key and BUSY for the next, from the same or another instance; tokens
 * grow and start above min_token, and the counter is never lowered; renew
 * and release by another instance or with a stale token answer LOST and
 * leave the lease alone; a lease whose process stops renewing runs out and
 * the next holder gets a larger token; the watchdog keeps a lease alive
 * past its ttl while held; a waiter gets the lock when the holder lets go;
 * two instances racing on one key never both hold it; bad URLs and
 * unreachable servers fail at once, and no password reaches an error or a
 * log line; Unix sockets and database numbers; and when Redis is killed,
 * calls fail fast with LOCK_E_IO, and after a restart (the counter lost)
 * tokens still exceed every earlier one.
 */
#include "../testutil_redis.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "lock/lock.h"


static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static lock_service *new_lock(const char *url, int64_t min_token)
{
    char err[256] = "";
    lock_service *l = lock_redis_new(url, min_token, err, sizeof(err));
    if (!l)
        fail_msg("lock_redis_new: %s", err);
    return l;
}

/* One inline command to the test server; the reply's text. */
static void query(const char *cmd, int lines, char *out, size_t out_size)
{
    char line[512];
    snprintf(line, sizeof(line), "%s\r\n", cmd);
    assert_true(test_redis_send(g_redis.port, line, lines, out, out_size, 2000) > 0);
}

/* The fencing counter as Redis holds it (0 when absent). */
static int64_t fence_counter(void)
{
    char reply[128];
    query("GET payd:fence", 2, reply, sizeof(reply));
    if (strncmp(reply, "$-1", 3) == 0)
        return 0;
    const char *body = strstr(reply, "\r\n");
    assert_non_null(body);
    return strtoll(body + 2, NULL, 10);
}

static void test_acquire_busy_release(void **state)
{
    (void)state;
    lock_service *a = new_lock(g_redis.url, 0);
    lock_service *b = new_lock(g_redis.url, 0);
    int64_t t1 = -1, t2 = -1;
    assert_int_equal(lock_acquire(a, "ord_a", 10000, 0, &t1), LOCK_OK);
    assert_true(t1 > 0);
    assert_int_equal(lock_acquire(a, "ord_a", 10000, 0, &t2), LOCK_E_BUSY);
    assert_int_equal(lock_acquire(b, "ord_a", 10000, 0, &t2), LOCK_E_BUSY);
    assert_int_equal(t2, -1);
    /* waiting a little does not help while the lease lasts */
    int64_t t0 = mono_ms();
    assert_int_equal(lock_acquire(b, "ord_a", 10000, 150, &t2), LOCK_E_BUSY);
    int64_t waited = mono_ms() - t0;
    assert_true(waited >= 140 && waited < 1500);
    /* another key is free */
    int64_t tb = -1;
    assert_int_equal(lock_acquire(b, "ord_b", 10000, 0, &tb), LOCK_OK);
    assert_int_equal(lock_release(a, "ord_a", t1), LOCK_OK);
    assert_int_equal(lock_acquire(b, "ord_a", 10000, 0, &t2), LOCK_OK);
    assert_true(t2 > t1);
    assert_int_equal(lock_release(a, "ord_a", t1), LOCK_E_LOST);
    assert_int_equal(lock_release(b, "ord_a", t2), LOCK_OK);
    assert_int_equal(lock_release(b, "ord_b", tb), LOCK_OK);
    lock_free(a);
    lock_free(b);
    lock_free(NULL);
}

static void test_tokens_increase(void **state)
{
    (void)state;
    lock_service *a = new_lock(g_redis.url, 0);
    lock_service *b = new_lock(g_redis.url, 0);
    int64_t prev = 0;
    char key[32];
    for (int i = 0; i < 200; i++) {
        lock_service *l = i % 3 ? a : b;
        int64_t token = -1;
        snprintf(key, sizeof(key), "ord_%d", i % 7);
        assert_int_equal(lock_acquire(l, key, 10000, 0, &token), LOCK_OK);
        assert_true(token > prev);
        prev = token;
        assert_int_equal(lock_release(l, key, token), LOCK_OK);
    }
    assert_int_equal(fence_counter(), prev);
    lock_free(a);
    lock_free(b);
}

static void test_min_token(void **state)
{
    (void)state;
    const int64_t min = INT64_C(1) << 40;
    lock_service *a = new_lock(g_redis.url, min);
    assert_true(fence_counter() >= min);
    int64_t ta = -1;
    assert_int_equal(lock_acquire(a, "ord_a", 10000, 0, &ta), LOCK_OK);
    assert_true(ta > min);
    /* a smaller floor does not lower the counter */
    lock_service *b = new_lock(g_redis.url, 5);
    int64_t tb = -1;
    assert_int_equal(lock_acquire(b, "ord_b", 10000, 0, &tb), LOCK_OK);
    assert_true(tb > ta);
    /* nor does a bigger one from the past: only the largest counts */
    lock_service *c = new_lock(g_redis.url, min + 1000);
    int64_t tc = -1;
    assert_int_equal(lock_acquire(c, "ord_c", 10000, 0, &tc), LOCK_OK);
    assert_true(tc > min + 1000);
    /* tokens near the top of int64 survive the trip through Lua exactly */
    lock_service *d = new_lock(g_redis.url, INT64_C(9007199254740993)); /* 2^53 + 1 */
    int64_t td = -1;
    assert_int_equal(lock_acquire(d, "ord_d", 10000, 0, &td), LOCK_OK);
    assert_true(td == INT64_C(9007199254740994));
    assert_int_equal(lock_release(d, "ord_d", td), LOCK_OK);
    lock_free(a);
    lock_free(b);
    lock_free(c);
    lock_free(d);
}

static void test_renew_by_other_lost(void **state)
{
    (void)state;
    lock_service *a = new_lock(g_redis.url, 0);
    lock_service *b = new_lock(g_redis.url, 0);
    int64_t t = -1, other = -1;
    assert_int_equal(lock_acquire(a, "ord_a", 10000, 0, &t), LOCK_OK);
    /* the same token from another instance is not the owner */
    assert_int_equal(lock_renew(b, "ord_a", t, 10000), LOCK_E_LOST);
    assert_int_equal(lock_release(b, "ord_a", t), LOCK_E_LOST);
    /* nor is another token from the holder's instance */
    assert_int_equal(lock_renew(a, "ord_a", t + 1, 10000), LOCK_E_LOST);
    assert_int_equal(lock_release(a, "ord_a", t - 1), LOCK_E_LOST);
    /* a key nobody holds */
    assert_int_equal(lock_renew(a, "ord_zzz", t, 10000), LOCK_E_LOST);
    /* the lease is untouched by all of it */
    assert_int_equal(lock_acquire(b, "ord_a", 10000, 0, &other), LOCK_E_BUSY);
    assert_int_equal(lock_renew(a, "ord_a", t, 20000), LOCK_OK);
    char reply[64];
    query("PTTL payd:lock:ord_a", 1, reply, sizeof(reply));
    assert_true(strtoll(reply + 1, NULL, 10) > 10000);
    assert_int_equal(lock_release(a, "ord_a", t), LOCK_OK);
    lock_free(a);
    lock_free(b);
}

/* The holder's lease is lost under it (Redis lost the key); its renew and
 * release must then leave the next holder's lease alone, and its watchdog
 * must drop it rather than renew someone else's. */
static void test_stale_holder_refused(void **state)
{
    (void)state;
    lock_service *a = new_lock(g_redis.url, 0);
    lock_service *b = new_lock(g_redis.url, 0);
    int64_t stale = -1, fresh = -1, other = -1;
    assert_int_equal(lock_acquire(a, "ord_a", 300, 0, &stale), LOCK_OK);
    char reply[64];
    query("DEL payd:lock:ord_a", 1, reply, sizeof(reply));
    assert_string_equal(reply, ":1\r\n");
    assert_int_equal(lock_acquire(b, "ord_a", 300, 0, &fresh), LOCK_OK);
    assert_true(fresh > stale);
    char before[128];
    query("GET payd:lock:ord_a", 2, before, sizeof(before));
    test_redis_sleep_ms(500); /* a's watchdog tries to renew, finds it lost */
    assert_int_equal(lock_renew(a, "ord_a", stale, 10000), LOCK_E_LOST);
    assert_int_equal(lock_release(a, "ord_a", stale), LOCK_E_LOST);
    char after[128];
    query("GET payd:lock:ord_a", 2, after, sizeof(after));
    assert_string_equal(before, after);
    assert_int_equal(lock_acquire(a, "ord_a", 10000, 0, &other), LOCK_E_BUSY);
    assert_int_equal(lock_release(b, "ord_a", fresh), LOCK_OK);
    lock_free(a);
    lock_free(b);
}

/* A process that stops renewing (here: its lock_service is gone without
 * releasing) loses the lease after its ttl; the next holder gets a larger
 * token. */
static void test_expiry_moves_lock(void **state)
{
    (void)state;
    lock_service *a = new_lock(g_redis.url, 0);
    lock_service *b = new_lock(g_redis.url, 0);
    int64_t old = -1, fresh = -1;
    assert_int_equal(lock_acquire(a, "ord_a", 300, 0, &old), LOCK_OK);
    lock_free(a);
    assert_int_equal(lock_acquire(b, "ord_a", 10000, 0, &fresh), LOCK_E_BUSY);
    int64_t t0 = mono_ms();
    assert_int_equal(lock_acquire(b, "ord_a", 10000, 3000, &fresh), LOCK_OK);
    int64_t waited = mono_ms() - t0;
    assert_true(waited >= 150 && waited < 2000);
    assert_true(fresh > old);
    assert_int_equal(lock_release(b, "ord_a", fresh), LOCK_OK);
    lock_free(b);
}

static void test_watchdog_keeps_lease(void **state)
{
    (void)state;
    lock_service *a = new_lock(g_redis.url, 0);
    lock_service *b = new_lock(g_redis.url, 0);
    int64_t t = -1, other = -1;
    assert_int_equal(lock_acquire(a, "ord_a", 300, 0, &t), LOCK_OK);
    test_redis_sleep_ms(1000); /* more than three ttls, and nobody calls renew */
    assert_int_equal(lock_acquire(b, "ord_a", 300, 0, &other), LOCK_E_BUSY);
    assert_int_equal(lock_acquire(a, "ord_a", 300, 0, &other), LOCK_E_BUSY);
    assert_int_equal(lock_release(a, "ord_a", t), LOCK_OK);
    assert_int_equal(lock_acquire(b, "ord_a", 300, 0, &other), LOCK_OK);
    assert_true(other > t);
    /* and after the release the watchdog no longer renews a's lease: b's
     * lease is b's alone (b's own watchdog keeps it) */
    assert_int_equal(lock_release(b, "ord_a", other), LOCK_OK);
    lock_free(a);
    lock_free(b);
}

struct releaser {
    lock_service *l;
    int64_t token;
    int rc;
};

static void *release_later(void *arg)
{
    struct releaser *r = arg;
    test_redis_sleep_ms(150);
    r->rc = lock_release(r->l, "ord_a", r->token);
    return NULL;
}

static void test_wait_for_release(void **state)
{
    (void)state;
    lock_service *a = new_lock(g_redis.url, 0);
    lock_service *b = new_lock(g_redis.url, 0);
    struct releaser r = {.l = a, .rc = 99};
    assert_int_equal(lock_acquire(a, "ord_a", 60000, 0, &r.token), LOCK_OK);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, release_later, &r), 0);
    int64_t t0 = mono_ms();
    int64_t fresh = -1;
    int rc = lock_acquire(b, "ord_a", 60000, 5000, &fresh);
    int64_t waited = mono_ms() - t0;
    pthread_join(th, NULL);
    assert_int_equal(r.rc, LOCK_OK);
    assert_int_equal(rc, LOCK_OK);
    assert_true(fresh > r.token);
    assert_true(waited >= 100 && waited < 3000);
    assert_int_equal(lock_release(b, "ord_a", fresh), LOCK_OK);
    lock_free(a);
    lock_free(b);
}

/* Two instances, one thread each, taking one key as fast as they can. */
#define RACE_ROUNDS 300

struct racer {
    lock_service *l;
    _Atomic int *holders;
    _Atomic int *max_holders;
    int64_t tokens[RACE_ROUNDS];
    int failures;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    int64_t give_up_ms = mono_ms() + 60000;
    for (int i = 0; i < RACE_ROUNDS && mono_ms() < give_up_ms; i++) {
        int64_t t;
        int rc;
        while ((rc = lock_acquire(r->l, "ord_hot", 10000, 0, &t)) == LOCK_E_BUSY &&
               mono_ms() < give_up_ms) {
        }
        if (rc != LOCK_OK) {
            r->failures++;
            continue;
        }
        int now = atomic_fetch_add(r->holders, 1) + 1;
        int seen = atomic_load(r->max_holders);
        while (now > seen && !atomic_compare_exchange_weak(r->max_holders, &seen, now)) {
        }
        r->tokens[i] = t;
        sched_yield(); /* give the other thread the chance to get in wrongly */
        atomic_fetch_sub(r->holders, 1);
        if (lock_release(r->l, "ord_hot", t) != LOCK_OK)
            r->failures++;
    }
    return NULL;
}

static void test_two_instances_race(void **state)
{
    (void)state;
    _Atomic int holders = 0, max_holders = 0;
    struct racer *r = calloc(2, sizeof(*r));
    assert_non_null(r);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        r[i].l = new_lock(g_redis.url, 0);
        r[i].holders = &holders;
        r[i].max_holders = &max_holders;
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(r[0].failures + r[1].failures, 0);
    assert_int_equal(atomic_load(&max_holders), 1);
    /* each instance's tokens grow, and no token was handed out twice */
    for (int i = 0; i < 2; i++)
        for (int j = 1; j < RACE_ROUNDS; j++)
            assert_true(r[i].tokens[j] > r[i].tokens[j - 1]);
    for (int j = 0; j < RACE_ROUNDS; j++)
        for (int k = 0; k < RACE_ROUNDS; k++)
            assert_true(r[0].tokens[j] != r[1].tokens[k]);
    for (int i = 0; i < 2; i++)
        lock_free(r[i].l);
    free(r);
}

static void test_bad_urls(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "http://127.0.0.1:6379",
        "redis://",
        "redis://:s3cret@",
        "redis://:s3cret@127.0.0.1:notaport",
        "redis://:s3cret@127.0.0.1:0",
        "redis://:s3cret@127.0.0.1:70000",
        "redis://:s3cret@127.0.0.1:6379/x",
        "redis://:s3%ZZcret@127.0.0.1:6379",
        "redis://[::1:6379",
        "unix:",
        "unix:relative/path",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        lock_service *l = lock_redis_new(bad[i], 0, err, sizeof(err));
        if (l)
            fail_msg("accepted %s", bad[i]);
        assert_true(err[0] != '\0');
        assert_null(strstr(err, "s3cret"));
    }
}

/* Nothing listens there: NULL at once, the server named, the password not. */
static void test_unreachable(void **state)
{
    (void)state;
    char url[128], err[256] = "";
    snprintf(url, sizeof(url), "redis://:s3cret@127.0.0.1:%d", test_redis_free_port());
    int64_t t0 = mono_ms();
    lock_service *l = lock_redis_new(url, 0, err, sizeof(err));
    assert_null(l);
    assert_true(mono_ms() - t0 < 1500);
    assert_non_null(strstr(err, "127.0.0.1"));
    assert_null(strstr(err, "s3cret"));
    l = lock_redis_new("unix:/nonexistent/redis.sock", 0, err, sizeof(err));
    assert_null(l);
}

static void test_unix_socket_and_db(void **state)
{
    (void)state;
    lock_service *a = new_lock(g_redis.unix_url, 0);
    char db_url[160];
    snprintf(db_url, sizeof(db_url), "%s/3", g_redis.url);
    lock_service *b = new_lock(db_url, 0);
    int64_t ta = -1, tb = -1;
    assert_int_equal(lock_acquire(a, "ord_a", 10000, 0, &ta), LOCK_OK);
    /* database 3 is another namespace: the same key is free there */
    assert_int_equal(lock_acquire(b, "ord_a", 10000, 0, &tb), LOCK_OK);
    char reply[64];
    assert_true(test_redis_send(g_redis.port, "SELECT 3\r\nEXISTS payd:lock:ord_a\r\n", 2, reply,
                                sizeof(reply), 2000) > 0);
    assert_string_equal(reply, "+OK\r\n:1\r\n");
    assert_int_equal(lock_release(a, "ord_a", ta), LOCK_OK);
    assert_int_equal(lock_release(b, "ord_a", tb), LOCK_OK);
    lock_free(a);
    lock_free(b);
}

/* Reads the whole file into a malloc'd string. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 16);
    assert_non_null(buf);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* With requirepass: the right password works, a wrong one fails; neither
 * appears in an error or in the log lines written when the server dies. */
static void test_password_never_shown(void **state)
{
    (void)state;
    static const char secret[] = "s3cret-pw";
    struct test_redis auth;
    test_redis_start(&auth, secret);
    char log_path[TEST_PATH_MAX + 16];
    snprintf(log_path, sizeof(log_path), "%s/stderr.log", auth.dir);

    /* Logs go to stderr: capture them. No assertion until it is restored. */
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, STDERR_FILENO);
    close(fd);

    char wrong_url[128], err_wrong[256] = "", err_right[256] = "";
    snprintf(wrong_url, sizeof(wrong_url), "redis://:wr0ng-pw@127.0.0.1:%d", auth.port);
    lock_service *wrong = lock_redis_new(wrong_url, 0, err_wrong, sizeof(err_wrong));
    lock_service *right = lock_redis_new(auth.url, 0, err_right, sizeof(err_right));
    int64_t t = -1;
    int rc_before = right ? lock_acquire(right, "ord_a", 10000, 0, &t) : -99;
    test_redis_kill(&auth);
    int rc_after = right ? lock_acquire(right, "ord_a", 10000, 0, &t) : -99;
    test_redis_sleep_ms(100);
    lock_free(right);

    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);

    char *logs = slurp(log_path);
    test_redis_stop(&auth);
    assert_null(wrong);
    assert_non_null(strstr(err_wrong, "AUTH"));
    assert_null(strstr(err_wrong, "wr0ng"));
    if (!right)
        fail_msg("lock_redis_new: %s", err_right);
    assert_int_equal(rc_before, LOCK_OK);
    assert_int_equal(rc_after, LOCK_E_IO);
    assert_non_null(strstr(logs, "redis_down"));
    assert_null(strstr(logs, secret));
    assert_null(strstr(logs, "wr0ng"));
    free(logs);
}

/* Kept last: it restarts the server, empty. */
static void test_redis_killed_and_restarted(void **state)
{
    (void)state;
    lock_service *l = new_lock(g_redis.url, 0);
    int64_t highest = 0, t = -1;
    char key[32];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "ord_%d", i);
        assert_int_equal(lock_acquire(l, key, 10000, 0, &t), LOCK_OK);
        highest = t;
    }
    test_redis_kill(&g_redis);

    int64_t t0 = mono_ms();
    assert_int_equal(lock_acquire(l, "ord_new", 10000, 0, &t), LOCK_E_IO);
    assert_true(mono_ms() - t0 < 1500);
    /* now known down: the next calls do not even try */
    t0 = mono_ms();
    for (int i = 0; i < 100; i++)
        assert_int_equal(lock_acquire(l, "ord_new", 10000, 1000, &t), LOCK_E_IO);
    assert_int_equal(lock_release(l, "ord_0", highest), LOCK_E_IO);
    assert_true(mono_ms() - t0 < 1500);

    /* The new server has no counter; the backend raises it again. */
    test_redis_restart(&g_redis);
    int rc = LOCK_E_IO;
    t0 = mono_ms();
    while (rc == LOCK_E_IO && mono_ms() - t0 < 5000) {
        rc = lock_acquire(l, "ord_new", 10000, 0, &t);
        if (rc == LOCK_E_IO)
            test_redis_sleep_ms(50);
    }
    assert_int_equal(rc, LOCK_OK);
    assert_true(t > highest);
    assert_true(fence_counter() >= t);
    /* a second instance started now also continues above */
    lock_service *other = new_lock(g_redis.url, 0);
    int64_t t2 = -1;
    assert_int_equal(lock_acquire(other, "ord_other", 10000, 0, &t2), LOCK_OK);
    assert_true(t2 > t);
    lock_free(other);
    lock_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_acquire_busy_release, test_redis_flush_each),
        cmocka_unit_test_setup(test_tokens_increase, test_redis_flush_each),
        cmocka_unit_test_setup(test_min_token, test_redis_flush_each),
        cmocka_unit_test_setup(test_renew_by_other_lost, test_redis_flush_each),
        cmocka_unit_test_setup(test_stale_holder_refused, test_redis_flush_each),
        cmocka_unit_test_setup(test_expiry_moves_lock, test_redis_flush_each),
        cmocka_unit_test_setup(test_watchdog_keeps_lease, test_redis_flush_each),
        cmocka_unit_test_setup(test_wait_for_release, test_redis_flush_each),
        cmocka_unit_test_setup(test_two_instances_race, test_redis_flush_each),
        cmocka_unit_test_setup(test_bad_urls, test_redis_flush_each),
        cmocka_unit_test_setup(test_unreachable, test_redis_flush_each),
        cmocka_unit_test_setup(test_unix_socket_and_db, test_redis_flush_each),
        cmocka_unit_test_setup(test_password_never_shown, test_redis_flush_each),
        cmocka_unit_test_setup(test_redis_killed_and_restarted, test_redis_flush_each),
    };
    return cmocka_run_group_tests(tests, test_redis_group_setup, test_redis_group_teardown);
}
