/*
 * test_local.c - lock/local: fencing tokens grow and start above min_token;
 * one holder per key (BUSY for the second); keys are independent; a wrong
 * token neither releases nor renews; after the lease runs out another holder
 * gets a larger token and the old holder's renew and release answer LOST;
 * acquire with wait_ms gets the lock when the holder lets go from another
 * thread, and gives up after wait_ms when it does not.
 */
#include "../testutil.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "lock/lock.h"

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_for_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void test_tokens_increase(void **state)
{
    (void)state;
    lock_service *l = lock_local_new(0);
    int64_t prev = 0;
    char key[32];
    for (int i = 0; i < 100; i++) {
        int64_t token = -1;
        snprintf(key, sizeof(key), "ord_%d", i % 7);
        assert_int_equal(lock_acquire(l, key, 10000, 0, &token), LOCK_OK);
        assert_true(token > prev);
        prev = token;
        assert_int_equal(lock_release(l, key, token), LOCK_OK);
    }
    lock_free(l);
    lock_free(NULL);
}

static void test_tokens_start_above_min(void **state)
{
    (void)state;
    static const int64_t mins[] = {0, 1, 41, INT64_C(1) << 40};
    for (size_t i = 0; i < sizeof(mins) / sizeof(mins[0]); i++) {
        lock_service *l = lock_local_new(mins[i]);
        int64_t token = -1;
        assert_int_equal(lock_acquire(l, "ord_a", 1000, 0, &token), LOCK_OK);
        assert_true(token > mins[i]);
        lock_free(l);
    }
}

static void test_second_acquire_busy(void **state)
{
    (void)state;
    lock_service *l = lock_local_new(0);
    int64_t t1 = -1, t2 = -1;
    assert_int_equal(lock_acquire(l, "ord_a", 10000, 0, &t1), LOCK_OK);
    assert_int_equal(lock_acquire(l, "ord_a", 10000, 0, &t2), LOCK_E_BUSY);
    assert_int_equal(t2, -1);
    /* waiting a little does not help while the lease lasts */
    int64_t t0 = mono_ms();
    assert_int_equal(lock_acquire(l, "ord_a", 10000, 100, &t2), LOCK_E_BUSY);
    int64_t waited = mono_ms() - t0;
    assert_true(waited >= 90 && waited < 5000);
    /* after a release it is free again */
    assert_int_equal(lock_release(l, "ord_a", t1), LOCK_OK);
    assert_int_equal(lock_acquire(l, "ord_a", 10000, 0, &t2), LOCK_OK);
    assert_true(t2 > t1);
    /* a second release of the old token is LOST */
    assert_int_equal(lock_release(l, "ord_a", t1), LOCK_E_LOST);
    assert_int_equal(lock_release(l, "ord_a", t2), LOCK_OK);
    lock_free(l);
}

static void test_keys_independent(void **state)
{
    (void)state;
    lock_service *l = lock_local_new(0);
    int64_t ta = -1, tb = -1, tc = -1;
    assert_int_equal(lock_acquire(l, "ord_a", 10000, 0, &ta), LOCK_OK);
    assert_int_equal(lock_acquire(l, "ord_b", 10000, 0, &tb), LOCK_OK);
    assert_int_equal(lock_acquire(l, "ord_ab", 10000, 0, &tc), LOCK_OK);
    assert_true(ta != tb && tb != tc && ta != tc);
    /* a's token does not work on b */
    assert_int_equal(lock_release(l, "ord_b", ta), LOCK_E_LOST);
    assert_int_equal(lock_release(l, "ord_a", ta), LOCK_OK);
    assert_int_equal(lock_acquire(l, "ord_b", 10000, 0, &ta), LOCK_E_BUSY);
    assert_int_equal(lock_release(l, "ord_b", tb), LOCK_OK);
    assert_int_equal(lock_release(l, "ord_ab", tc), LOCK_OK);
    lock_free(l);
}

/* Many keys at once, more than one shard's worth on average. */
static void test_many_keys(void **state)
{
    (void)state;
    enum { N = 2000 };
    lock_service *l = lock_local_new(0);
    int64_t *tokens = calloc(N, sizeof(*tokens));
    assert_non_null(tokens);
    char key[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "ord_%06d", i);
        assert_int_equal(lock_acquire(l, key, 60000, 0, &tokens[i]), LOCK_OK);
    }
    for (int i = 0; i < N; i++) {
        int64_t t;
        snprintf(key, sizeof(key), "ord_%06d", i);
        assert_int_equal(lock_acquire(l, key, 60000, 0, &t), LOCK_E_BUSY);
        assert_int_equal(lock_release(l, key, tokens[i]), LOCK_OK);
    }
    free(tokens);
    lock_free(l);
}

static void test_wrong_token_keeps_lock(void **state)
{
    (void)state;
    lock_service *l = lock_local_new(0);
    int64_t t = -1, other = -1;
    assert_int_equal(lock_acquire(l, "ord_a", 10000, 0, &t), LOCK_OK);
    assert_int_equal(lock_release(l, "ord_a", t + 1), LOCK_E_LOST);
    assert_int_equal(lock_release(l, "ord_a", t - 1), LOCK_E_LOST);
    assert_int_equal(lock_renew(l, "ord_a", t + 1, 10000), LOCK_E_LOST);
    assert_int_equal(lock_acquire(l, "ord_a", 10000, 0, &other), LOCK_E_BUSY);
    assert_int_equal(lock_renew(l, "ord_a", t, 10000), LOCK_OK);
    assert_int_equal(lock_release(l, "ord_a", t), LOCK_OK);
    /* releasing or renewing a key nobody holds */
    assert_int_equal(lock_release(l, "ord_zzz", t), LOCK_E_LOST);
    assert_int_equal(lock_renew(l, "ord_zzz", t, 1000), LOCK_E_LOST);
    lock_free(l);
}

static void test_expiry_moves_lock(void **state)
{
    (void)state;
    lock_service *l = lock_local_new(0);
    int64_t old = -1, fresh = -1;
    assert_int_equal(lock_acquire(l, "ord_a", 100, 0, &old), LOCK_OK);
    sleep_for_ms(150);
    assert_int_equal(lock_acquire(l, "ord_a", 10000, 0, &fresh), LOCK_OK);
    assert_true(fresh > old);
    assert_int_equal(lock_renew(l, "ord_a", old, 10000), LOCK_E_LOST);
    assert_int_equal(lock_release(l, "ord_a", old), LOCK_E_LOST);
    /* the old holder's attempts leave the new holder's lease alone */
    int64_t third = -1;
    assert_int_equal(lock_acquire(l, "ord_a", 10000, 0, &third), LOCK_E_BUSY);
    assert_int_equal(lock_release(l, "ord_a", fresh), LOCK_OK);
    lock_free(l);
}

/* An expired lease that nobody took over still cannot be renewed. */
static void test_expired_renew_lost(void **state)
{
    (void)state;
    lock_service *l = lock_local_new(0);
    int64_t t = -1;
    assert_int_equal(lock_acquire(l, "ord_a", 50, 0, &t), LOCK_OK);
    sleep_for_ms(100);
    assert_int_equal(lock_renew(l, "ord_a", t, 10000), LOCK_E_LOST);
    assert_int_equal(lock_release(l, "ord_a", t), LOCK_E_LOST);
    lock_free(l);
}

/* Renewing pushes the expiry out: the lock outlives its first ttl. */
static void test_renew_extends(void **state)
{
    (void)state;
    lock_service *l = lock_local_new(0);
    int64_t t = -1, other = -1;
    assert_int_equal(lock_acquire(l, "ord_a", 1000, 0, &t), LOCK_OK);
    sleep_for_ms(100);
    assert_int_equal(lock_renew(l, "ord_a", t, 10000), LOCK_OK);
    sleep_for_ms(1000); /* past the first ttl */
    assert_int_equal(lock_acquire(l, "ord_a", 1000, 0, &other), LOCK_E_BUSY);
    assert_int_equal(lock_release(l, "ord_a", t), LOCK_OK);
    lock_free(l);
}

/* A waiter wakes when the lease runs out, without a release. */
static void test_wait_until_expiry(void **state)
{
    (void)state;
    lock_service *l = lock_local_new(0);
    int64_t old = -1, fresh = -1;
    assert_int_equal(lock_acquire(l, "ord_a", 150, 0, &old), LOCK_OK);
    int64_t t0 = mono_ms();
    assert_int_equal(lock_acquire(l, "ord_a", 1000, 3000, &fresh), LOCK_OK);
    int64_t waited = mono_ms() - t0;
    assert_true(fresh > old);
    assert_true(waited >= 100 && waited < 2500);
    lock_free(l);
}

struct releaser {
    lock_service *l;
    int64_t token;
    int64_t delay_ms;
    int rc;
};

static void *release_later(void *arg)
{
    struct releaser *r = arg;
    sleep_for_ms(r->delay_ms);
    r->rc = lock_release(r->l, "ord_a", r->token);
    return NULL;
}

static void test_wait_for_release(void **state)
{
    (void)state;
    lock_service *l = lock_local_new(0);
    struct releaser r = {.l = l, .delay_ms = 150, .rc = 99};
    assert_int_equal(lock_acquire(l, "ord_a", 60000, 0, &r.token), LOCK_OK);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, release_later, &r), 0);
    int64_t t0 = mono_ms();
    int64_t fresh = -1;
    int rc = lock_acquire(l, "ord_a", 60000, 5000, &fresh);
    int64_t waited = mono_ms() - t0;
    pthread_join(th, NULL);
    assert_int_equal(r.rc, LOCK_OK);
    assert_int_equal(rc, LOCK_OK);
    assert_true(fresh > r.token);
    /* woken by the release, well before the 60 s lease or 5 s wait ran out */
    assert_true(waited >= 100 && waited < 3000);
    lock_free(l);
}

/* Threads contending for one key: at any moment at most one holds it, and
 * every token handed out is distinct. */
#define CONTENDERS 8
#define ROUNDS_EACH 200

struct contention {
    lock_service *l;
    pthread_mutex_t mu;
    int holders;
    int max_holders;
    int64_t tokens[CONTENDERS * ROUNDS_EACH];
    int ntokens;
};

static void *contend(void *arg)
{
    struct contention *c = arg;
    for (int i = 0; i < ROUNDS_EACH; i++) {
        int64_t t;
        while (lock_acquire(c->l, "ord_hot", 10000, 1000, &t) != LOCK_OK) {
        }
        pthread_mutex_lock(&c->mu);
        c->holders++;
        if (c->holders > c->max_holders)
            c->max_holders = c->holders;
        c->tokens[c->ntokens++] = t;
        pthread_mutex_unlock(&c->mu);
        sched_yield(); /* give another thread the chance to get in wrongly */
        pthread_mutex_lock(&c->mu);
        c->holders--;
        pthread_mutex_unlock(&c->mu);
        if (lock_release(c->l, "ord_hot", t) != LOCK_OK)
            return (void *)1;
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void test_contention(void **state)
{
    (void)state;
    struct contention *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->l = lock_local_new(0);
    pthread_mutex_init(&c->mu, NULL);
    pthread_t th[CONTENDERS];
    for (int i = 0; i < CONTENDERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, contend, c), 0);
    int failures = 0;
    for (int i = 0; i < CONTENDERS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        failures += ret != NULL;
    }
    assert_int_equal(failures, 0);
    assert_int_equal(c->max_holders, 1);
    assert_int_equal(c->ntokens, CONTENDERS * ROUNDS_EACH);
    qsort(c->tokens, (size_t)c->ntokens, sizeof(int64_t), cmp_i64);
    for (int i = 1; i < c->ntokens; i++)
        assert_true(c->tokens[i] > c->tokens[i - 1]);
    pthread_mutex_destroy(&c->mu);
    lock_free(c->l);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens_increase),
        cmocka_unit_test(test_tokens_start_above_min),
        cmocka_unit_test(test_second_acquire_busy),
        cmocka_unit_test(test_keys_independent),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_wrong_token_keeps_lock),
        cmocka_unit_test(test_expiry_moves_lock),
        cmocka_unit_test(test_expired_renew_lost),
        cmocka_unit_test(test_renew_extends),
        cmocka_unit_test(test_wait_until_expiry),
        cmocka_unit_test(test_wait_for_release),
        cmocka_unit_test(test_contention),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
