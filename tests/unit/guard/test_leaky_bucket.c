/*
 * test_leaky_bucket.c - guard/leaky_bucket (pacing): slots are exactly
 * 1/rate apart; an idle bucket gives wait 0 and no burst; a call whose slot
 * would be further away than max_wait takes no slot, returns -1 and is told
 * how long until one is within the bound; rate 0 does not pace; the rate
 * can change at run time; threads reserving at one frozen instant get
 * distinct slots, evenly spaced, and no more than the bound allows.
 *
 * Time is a fake clock: a plain nanosecond count that the tests move.
 */
#include "../testutil.h"

#include <math.h>
#include <pthread.h>

#include "guard/leaky_bucket.h"

#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL
#define T0 (1000 * NS_PER_S + 123)
#define FOREVER (INT64_C(1) << 60)

static void test_slots_spaced(void **state)
{
    (void)state;
    static const double rates[] = {10, 3, 0.5, 1000, 7.5};
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        struct leaky_bucket b;
        leaky_bucket_init(&b, rates[i]);
        int64_t iv = atomic_load(&b.interval_ns);
        assert_int_equal(iv, llround(1e9 / rates[i]));
        assert_true(fabs(leaky_bucket_rate(&b) - 1e9 / (double)iv) < 1e-9);
        /* at one instant: 0, 1, 2, ... intervals */
        for (int64_t k = 0; k < 50; k++) {
            int64_t retry = -7;
            assert_int_equal(leaky_bucket_reserve(&b, T0, FOREVER, &retry), k * iv);
            assert_int_equal(retry, -7); /* untouched when a slot is given */
        }
        /* callers arriving later still get the next slot in line */
        assert_int_equal(leaky_bucket_reserve(&b, T0 + 10 * iv + 5, FOREVER, NULL),
                         50 * iv - 10 * iv - 5);
        assert_int_equal(atomic_load(&b.paced), 51);
        assert_int_equal(atomic_load(&b.deferred), 0);
    }
}

/* Found by tests/fuzz: a rate so small that 1e9 / rate overflows int64
 * once became one call a nanosecond (unpaced); the interval is capped at a
 * quarter of the int64 range (73 years). */
static void test_tiny_rate_capped(void **state)
{
    (void)state;
    struct leaky_bucket b;
    leaky_bucket_init(&b, 1e-11);
    assert_int_equal(leaky_bucket_reserve(&b, T0, FOREVER, NULL), 0);
    /* the next slot is 73 years away: refused within any sane bound */
    assert_int_equal(leaky_bucket_reserve(&b, T0, FOREVER, NULL), -1);
    assert_int_equal(leaky_bucket_reserve(&b, T0, INT64_MAX / 2, NULL), INT64_MAX / 4);
}

static void test_idle_no_burst(void **state)
{
    (void)state;
    struct leaky_bucket b;
    leaky_bucket_init(&b, 10); /* 100 ms */
    const int64_t iv = 100 * NS_PER_MS;
    assert_int_equal(leaky_bucket_reserve(&b, T0, FOREVER, NULL), 0);
    assert_int_equal(leaky_bucket_reserve(&b, T0, FOREVER, NULL), iv);
    /* long idle: the first call goes at once, the second still waits a
     * whole interval (idle time is not saved up) */
    int64_t now = T0 + 3600 * NS_PER_S;
    assert_int_equal(leaky_bucket_reserve(&b, now, FOREVER, NULL), 0);
    assert_int_equal(leaky_bucket_reserve(&b, now, FOREVER, NULL), iv);
    assert_int_equal(leaky_bucket_reserve(&b, now, FOREVER, NULL), 2 * iv);
    /* a caller at exactly each slot time waits 0 */
    now += 3 * iv;
    for (int i = 0; i < 10; i++)
        assert_int_equal(leaky_bucket_reserve(&b, now + i * iv, FOREVER, NULL), 0);
    /* one 1 ns early waits 1 ns */
    assert_int_equal(leaky_bucket_reserve(&b, now + 10 * iv - 1, FOREVER, NULL), 1);
    assert_int_equal(atomic_load(&b.paced), 16);
    /* waited: iv + iv + 2 iv + 1 */
    assert_int_equal(atomic_load(&b.waited_ns), 4 * iv + 1);
}

static void test_max_wait_bound(void **state)
{
    (void)state;
    struct leaky_bucket b;
    leaky_bucket_init(&b, 10); /* 100 ms */
    const int64_t iv = 100 * NS_PER_MS;
    const int64_t max_wait = 250 * NS_PER_MS;
    int64_t retry = -7;
    assert_int_equal(leaky_bucket_reserve(&b, T0, max_wait, &retry), 0);
    assert_int_equal(leaky_bucket_reserve(&b, T0, max_wait, &retry), iv);
    assert_int_equal(leaky_bucket_reserve(&b, T0, max_wait, &retry), 2 * iv);
    assert_int_equal(retry, -7);
    /* the next slot is 300 ms away, over the bound: no slot, retry in 50 ms */
    assert_int_equal(leaky_bucket_reserve(&b, T0, max_wait, &retry), -1);
    assert_int_equal(retry, 3 * iv - max_wait);
    /* it took no slot: asking again gives the same answer */
    retry = -7;
    assert_int_equal(leaky_bucket_reserve(&b, T0, max_wait, &retry), -1);
    assert_int_equal(retry, 50 * NS_PER_MS);
    assert_int_equal(leaky_bucket_reserve(&b, T0, max_wait, NULL), -1);
    assert_int_equal(atomic_load(&b.deferred), 3);
    assert_int_equal(atomic_load(&b.paced), 3);
    /* 1 ns before the retry time: still 1 ns over */
    assert_int_equal(leaky_bucket_reserve(&b, T0 + retry - 1, max_wait, &retry), -1);
    assert_int_equal(retry, 1);
    /* at the retry time the slot is exactly max_wait away, which is allowed */
    assert_int_equal(leaky_bucket_reserve(&b, T0 + 50 * NS_PER_MS, max_wait, &retry),
                     max_wait);
    /* and it was the 300 ms slot: the next is 400 ms */
    assert_int_equal(leaky_bucket_reserve(&b, T0 + 50 * NS_PER_MS, FOREVER, &retry),
                     4 * iv - 50 * NS_PER_MS);
    /* max_wait 0: only a free slot now will do */
    struct leaky_bucket c;
    leaky_bucket_init(&c, 10);
    assert_int_equal(leaky_bucket_reserve(&c, T0, 0, &retry), 0);
    assert_int_equal(leaky_bucket_reserve(&c, T0, 0, &retry), -1);
    assert_int_equal(retry, iv);
    assert_int_equal(leaky_bucket_reserve(&c, T0 + iv, 0, &retry), 0);
}

static void test_rate_zero_unpaced(void **state)
{
    (void)state;
    struct leaky_bucket b;
    leaky_bucket_init(&b, 0);
    assert_int_equal(atomic_load(&b.interval_ns), 0);
    assert_true(leaky_bucket_rate(&b) == 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(leaky_bucket_reserve(&b, T0, 0, NULL), 0);
    assert_int_equal(atomic_load(&b.paced), 1000);
    assert_int_equal(atomic_load(&b.deferred), 0);
    assert_int_equal(atomic_load(&b.waited_ns), 0);
}

static void test_rate_change(void **state)
{
    (void)state;
    struct leaky_bucket b;
    leaky_bucket_init(&b, 10); /* 100 ms */
    assert_int_equal(leaky_bucket_reserve(&b, T0, FOREVER, NULL), 0);
    assert_int_equal(leaky_bucket_reserve(&b, T0, FOREVER, NULL), 100 * NS_PER_MS);
    /* faster: slots already handed out stand, the new ones are 10 ms apart */
    leaky_bucket_set(&b, 100);
    assert_true(fabs(leaky_bucket_rate(&b) - 100) < 1e-9);
    assert_int_equal(leaky_bucket_reserve(&b, T0, FOREVER, NULL), 200 * NS_PER_MS);
    assert_int_equal(leaky_bucket_reserve(&b, T0, FOREVER, NULL), 210 * NS_PER_MS);
    /* unpaced, then paced again from an idle start */
    leaky_bucket_set(&b, 0);
    assert_int_equal(leaky_bucket_reserve(&b, T0, 0, NULL), 0);
    leaky_bucket_set(&b, 1);
    int64_t now = T0 + 10 * NS_PER_S;
    assert_int_equal(leaky_bucket_reserve(&b, now, FOREVER, NULL), 0);
    assert_int_equal(leaky_bucket_reserve(&b, now, FOREVER, NULL), NS_PER_S);
}

/* Threads reserving at one frozen instant, enough of them that the threads
 * contend for most of the run: a lost update (two threads moving next_ns
 * from the same value) would hand out one slot twice. */
#define THREADS 4
#define RESERVES_EACH 200000
#define MT_ROUNDS 3

struct reserver {
    struct leaky_bucket *b;
    pthread_barrier_t *start;
    int64_t now, max_wait;
    int64_t *waits; /* RESERVES_EACH */
    int nwaits;
    int deferred;
    int bad_retry;
};

static void *reserve_many(void *arg)
{
    struct reserver *r = arg;
    pthread_barrier_wait(r->start);
    for (int i = 0; i < RESERVES_EACH; i++) {
        int64_t retry = 0;
        int64_t w = leaky_bucket_reserve(r->b, r->now, r->max_wait, &retry);
        if (w >= 0) {
            r->waits[r->nwaits++] = w;
        } else {
            r->deferred++;
            r->bad_retry += retry <= 0;
        }
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Runs THREADS reservers; returns the sorted waits (malloc'd) and their
 * number in *n, the deferrals in *deferred. */
static int64_t *reserve_in_threads(struct leaky_bucket *b, int64_t now, int64_t max_wait,
                                   int *n, int *deferred)
{
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    struct reserver *r = calloc(THREADS, sizeof(*r));
    assert_non_null(r);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        r[i].waits = calloc(RESERVES_EACH, sizeof(int64_t));
        assert_non_null(r[i].waits);
        r[i].b = b;
        r[i].start = &start;
        r[i].now = now;
        r[i].max_wait = max_wait;
        assert_int_equal(pthread_create(&th[i], NULL, reserve_many, &r[i]), 0);
    }
    int64_t *all = calloc(THREADS * RESERVES_EACH, sizeof(*all));
    assert_non_null(all);
    *n = 0;
    *deferred = 0;
    int bad_retry = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        memcpy(all + *n, r[i].waits, (size_t)r[i].nwaits * sizeof(int64_t));
        *n += r[i].nwaits;
        *deferred += r[i].deferred;
        bad_retry += r[i].bad_retry;
        free(r[i].waits);
    }
    free(r);
    pthread_barrier_destroy(&start);
    assert_int_equal(bad_retry, 0);
    qsort(all, (size_t)*n, sizeof(int64_t), cmp_i64);
    return all;
}

/* The sorted waits are 0, iv, 2 iv, ...: distinct and evenly spaced. */
static void assert_spaced(const int64_t *waits, int n, int64_t iv)
{
    for (int i = 0; i < n; i++) {
        if (waits[i] != i * iv)
            fail_msg("slot %d: wait %lld, want %lld", i, (long long)waits[i],
                     (long long)(i * iv));
    }
}

static void test_threads_distinct_slots(void **state)
{
    (void)state;
    for (int round = 0; round < MT_ROUNDS; round++) {
        struct leaky_bucket b;
        leaky_bucket_init(&b, 1000); /* 1 ms */
        const int64_t iv = NS_PER_MS;
        int n, deferred;
        int64_t *waits = reserve_in_threads(&b, T0, FOREVER, &n, &deferred);
        assert_int_equal(n, THREADS * RESERVES_EACH);
        assert_int_equal(deferred, 0);
        assert_spaced(waits, n, iv);
        assert_int_equal(atomic_load(&b.paced), n);
        assert_int_equal(atomic_load(&b.next_ns), T0 + n * iv);
        free(waits);
    }
}

static void test_threads_bounded(void **state)
{
    (void)state;
    const int64_t iv = NS_PER_MS;
    const int within = THREADS * RESERVES_EACH / 2;
    for (int round = 0; round < MT_ROUNDS; round++) {
        struct leaky_bucket b;
        leaky_bucket_init(&b, 1000); /* 1 ms */
        /* slots at 0 .. within - 1 ms are within the bound, the rest deferred */
        int n, deferred;
        int64_t *waits = reserve_in_threads(&b, T0, (within - 1) * iv, &n, &deferred);
        assert_int_equal(n, within);
        assert_int_equal(deferred, THREADS * RESERVES_EACH - within);
        assert_spaced(waits, n, iv);
        assert_int_equal(atomic_load(&b.paced), within);
        assert_int_equal(atomic_load(&b.deferred), THREADS * RESERVES_EACH - within);
        free(waits);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots_spaced),
        cmocka_unit_test(test_tiny_rate_capped),
        cmocka_unit_test(test_idle_no_burst),
        cmocka_unit_test(test_max_wait_bound),
        cmocka_unit_test(test_rate_zero_unpaced),
        cmocka_unit_test(test_rate_change),
        cmocka_unit_test(test_threads_distinct_slots),
        cmocka_unit_test(test_threads_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
