/*
 * test_token_bucket.c - guard/token_bucket (GCRA): a full bucket admits
 * exactly burst requests at one instant and tells the next to wait one
 * interval; it refills one token per interval; a request exactly at its due
 * time is admitted and one nanosecond earlier is refused; rate 0 admits
 * everything; burst 0 means the rate rounded up (at least 1); fractional
 * rates; the counters and token_bucket_tokens; a rate changed at run time;
 * and threads hammering one bucket at a frozen instant get exactly burst
 * tokens between them.
 *
 * Time is a fake clock: a plain nanosecond count that the tests move.
 */
#include "../testutil.h"

#include <math.h>
#include <pthread.h>

#include "guard/token_bucket.h"

#define NS_PER_S 1000000000LL
/* Not zero, so that nothing passes only because the clock starts there. */
#define T0 (1000 * NS_PER_S + 123)

static void assert_near(double got, double want)
{
    if (fabs(got - want) > 1e-9) {
        fail_msg("got %.12f, want %.12f", got, want);
    }
}

/* A fresh bucket under a fresh limit of rate per second and burst. */
static void setup_bucket(struct rate_limit *l, struct token_bucket *b, double rate, int64_t burst)
{
    atomic_init(&l->interval_ns, 0);
    atomic_init(&l->burst, 1);
    rate_limit_set(l, rate, burst);
    token_bucket_init(b);
}

/* Takes until refused at now; returns how many were admitted and the wait
 * the refusal gave. */
static int64_t take_all(struct token_bucket *b, const struct rate_limit *l, int64_t now,
                        int64_t *wait)
{
    int64_t n = 0;
    *wait = -1;
    while (token_bucket_take(b, l, now, wait)) {
        n++;
        assert_true(n < 1000000);
    }
    return n;
}

static void test_full_bucket_admits_burst(void **state)
{
    (void)state;
    static const struct {
        double rate;
        int64_t burst;
    } cases[] = {{10, 10}, {10, 1}, {10, 25}, {1000, 7}, {3, 3}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rate_limit l;
        struct token_bucket b;
        setup_bucket(&l, &b, cases[i].rate, cases[i].burst);
        int64_t interval = atomic_load(&l.interval_ns);
        assert_int_equal(interval, llround(1e9 / cases[i].rate));
        int64_t wait = -1;
        assert_int_equal(take_all(&b, &l, T0, &wait), cases[i].burst);
        assert_int_equal(wait, interval);
        /* still refused, with the same wait, at the same instant */
        wait = -1;
        assert_false(token_bucket_take(&b, &l, T0, &wait));
        assert_int_equal(wait, interval);
        /* a NULL wait is allowed */
        assert_false(token_bucket_take(&b, &l, T0, NULL));
    }
}

static void test_refill_one_per_interval(void **state)
{
    (void)state;
    struct rate_limit l;
    struct token_bucket b;
    setup_bucket(&l, &b, 100, 5); /* 10 ms */
    const int64_t iv = 10000000;
    int64_t wait;
    assert_int_equal(take_all(&b, &l, T0, &wait), 5);
    for (int64_t k = 1; k <= 5; k++) {
        /* after k intervals (from empty) exactly k more */
        struct token_bucket c;
        token_bucket_init(&c);
        assert_int_equal(take_all(&c, &l, T0, &wait), 5);
        assert_int_equal(take_all(&c, &l, T0 + k * iv, &wait), k);
        assert_int_equal(wait, iv);
        /* half an interval more gives nothing */
        assert_int_equal(take_all(&c, &l, T0 + k * iv + iv / 2, &wait), 0);
        assert_int_equal(wait, iv / 2);
    }
    /* more than burst intervals of idling still gives only burst */
    assert_int_equal(take_all(&b, &l, T0 + 1000 * iv, &wait), 5);
    assert_int_equal(wait, iv);
    /* a steady caller at exactly the rate is always admitted */
    int64_t now = T0 + 2000 * iv;
    assert_int_equal(take_all(&b, &l, now, &wait), 5);
    for (int i = 1; i <= 50; i++) {
        assert_true(token_bucket_take(&b, &l, now + i * iv, &wait));
        assert_false(token_bucket_take(&b, &l, now + i * iv, &wait));
        assert_int_equal(wait, iv);
    }
}

static void test_due_time_boundary(void **state)
{
    (void)state;
    struct rate_limit l;
    struct token_bucket b;
    setup_bucket(&l, &b, 7, 3);
    int64_t iv = atomic_load(&l.interval_ns);
    int64_t wait;
    assert_int_equal(take_all(&b, &l, T0, &wait), 3);
    assert_int_equal(wait, iv);
    int64_t due = T0 + wait;
    /* 1 ns before the due time: refused, 1 ns to go */
    assert_false(token_bucket_take(&b, &l, due - 1, &wait));
    assert_int_equal(wait, 1);
    /* exactly at it: admitted, and then the next is a whole interval away */
    assert_true(token_bucket_take(&b, &l, due, &wait));
    assert_false(token_bucket_take(&b, &l, due, &wait));
    assert_int_equal(wait, iv);
    /* the same at the next due time */
    assert_false(token_bucket_take(&b, &l, due + iv - 1, &wait));
    assert_int_equal(wait, 1);
    assert_true(token_bucket_take(&b, &l, due + iv, &wait));
}

static void test_rate_zero_unlimited(void **state)
{
    (void)state;
    struct rate_limit l;
    struct token_bucket b;
    setup_bucket(&l, &b, 0, 5);
    assert_int_equal(atomic_load(&l.interval_ns), 0);
    assert_near(rate_limit_rate(&l), 0);
    for (int i = 0; i < 10000; i++)
        assert_true(token_bucket_take(&b, &l, T0, NULL));
    assert_int_equal(atomic_load(&b.admitted), 10000);
    assert_int_equal(atomic_load(&b.rejected), 0);
    assert_true(isinf(token_bucket_tokens(&b, &l, T0)));
    /* a negative rate is unlimited as well */
    rate_limit_set(&l, -3, 0);
    assert_int_equal(atomic_load(&l.interval_ns), 0);
    assert_true(token_bucket_take(&b, &l, T0, NULL));
}

static void test_burst_default(void **state)
{
    (void)state;
    static const struct {
        double rate;
        int64_t burst;
    } cases[] = {{10, 10}, {2.5, 3}, {1, 1}, {0.5, 1}, {0.01, 1}, {100.01, 101}, {1.5, 2}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rate_limit l;
        struct token_bucket b;
        setup_bucket(&l, &b, cases[i].rate, 0);
        assert_int_equal(atomic_load(&l.burst), cases[i].burst);
        int64_t wait;
        assert_int_equal(take_all(&b, &l, T0, &wait), cases[i].burst);
        /* a negative burst is the default too */
        rate_limit_set(&l, cases[i].rate, -4);
        assert_int_equal(atomic_load(&l.burst), cases[i].burst);
    }
}

static void test_fractional_rate(void **state)
{
    (void)state;
    struct rate_limit l;
    struct token_bucket b;
    setup_bucket(&l, &b, 0.5, 0); /* one every 2 s, burst 1 */
    assert_int_equal(atomic_load(&l.interval_ns), 2 * NS_PER_S);
    assert_near(rate_limit_rate(&l), 0.5);
    int64_t wait;
    assert_true(token_bucket_take(&b, &l, T0, &wait));
    assert_false(token_bucket_take(&b, &l, T0, &wait));
    assert_int_equal(wait, 2 * NS_PER_S);
    assert_near(token_bucket_tokens(&b, &l, T0), 0);
    /* half-way, half a token */
    assert_false(token_bucket_take(&b, &l, T0 + NS_PER_S, &wait));
    assert_int_equal(wait, NS_PER_S);
    assert_near(token_bucket_tokens(&b, &l, T0 + NS_PER_S), 0.5);
    assert_false(token_bucket_take(&b, &l, T0 + 2 * NS_PER_S - 1, &wait));
    assert_int_equal(wait, 1);
    assert_true(token_bucket_take(&b, &l, T0 + 2 * NS_PER_S, &wait));
    /* 2.5/s with burst 2: 400 ms apart */
    setup_bucket(&l, &b, 2.5, 2);
    assert_int_equal(atomic_load(&l.interval_ns), 400000000);
    assert_int_equal(take_all(&b, &l, T0, &wait), 2);
    assert_int_equal(wait, 400000000);
    /* polled every millisecond for 10 s: exactly 25 more */
    int64_t n = 0;
    for (int64_t t = T0 + 1000000; t <= T0 + 10 * NS_PER_S; t += 1000000)
        n += take_all(&b, &l, t, &wait);
    assert_int_equal(n, 25);
}

static void test_counters(void **state)
{
    (void)state;
    struct rate_limit l;
    struct token_bucket b;
    setup_bucket(&l, &b, 10, 4);
    assert_int_equal(atomic_load(&b.admitted), 0);
    assert_int_equal(atomic_load(&b.rejected), 0);
    for (int i = 0; i < 10; i++)
        token_bucket_take(&b, &l, T0, NULL);
    assert_int_equal(atomic_load(&b.admitted), 4);
    assert_int_equal(atomic_load(&b.rejected), 6);
    token_bucket_take(&b, &l, T0 + 100000000, NULL);
    token_bucket_take(&b, &l, T0 + 100000000, NULL);
    assert_int_equal(atomic_load(&b.admitted), 5);
    assert_int_equal(atomic_load(&b.rejected), 7);
}

static void test_tokens(void **state)
{
    (void)state;
    struct rate_limit l;
    struct token_bucket b;
    setup_bucket(&l, &b, 10, 4); /* 100 ms */
    const int64_t iv = 100000000;
    assert_near(token_bucket_tokens(&b, &l, T0), 4);
    for (int i = 1; i <= 4; i++) {
        assert_true(token_bucket_take(&b, &l, T0, NULL));
        assert_near(token_bucket_tokens(&b, &l, T0), 4 - i);
    }
    /* refusals do not go below zero */
    assert_false(token_bucket_take(&b, &l, T0, NULL));
    assert_near(token_bucket_tokens(&b, &l, T0), 0);
    assert_near(token_bucket_tokens(&b, &l, T0 + iv / 4), 0.25);
    assert_near(token_bucket_tokens(&b, &l, T0 + 3 * iv), 3);
    /* never more than burst */
    assert_near(token_bucket_tokens(&b, &l, T0 + 100 * iv), 4);
    /* reading does not take */
    assert_int_equal(atomic_load(&b.admitted), 4);
}

static void test_rate_change_at_run_time(void **state)
{
    (void)state;
    struct rate_limit l;
    struct token_bucket b;
    setup_bucket(&l, &b, 10, 1); /* 100 ms apart */
    int64_t wait, now = T0;
    assert_true(token_bucket_take(&b, &l, now, &wait));
    assert_false(token_bucket_take(&b, &l, now, &wait));
    assert_int_equal(wait, 100000000);

    /* faster: once the old debt is paid, 10 ms apart */
    rate_limit_set(&l, 100, 1);
    assert_near(rate_limit_rate(&l), 100);
    now += 100000000;
    assert_true(token_bucket_take(&b, &l, now, &wait));
    assert_false(token_bucket_take(&b, &l, now, &wait));
    assert_int_equal(wait, 10000000);
    now += 10000000;
    assert_true(token_bucket_take(&b, &l, now, &wait));

    /* a larger burst applies at once to a bucket that has refilled */
    rate_limit_set(&l, 100, 20);
    now += NS_PER_S;
    assert_int_equal(take_all(&b, &l, now, &wait), 20);
    assert_int_equal(wait, 10000000);

    /* slower: 1 s apart */
    rate_limit_set(&l, 1, 0);
    assert_int_equal(atomic_load(&l.burst), 1);
    now += 10 * NS_PER_S;
    assert_true(token_bucket_take(&b, &l, now, &wait));
    assert_false(token_bucket_take(&b, &l, now + NS_PER_S / 2, &wait));
    assert_int_equal(wait, NS_PER_S / 2);
    assert_true(token_bucket_take(&b, &l, now + NS_PER_S, &wait));

    /* unlimited and back */
    rate_limit_set(&l, 0, 0);
    for (int i = 0; i < 100; i++)
        assert_true(token_bucket_take(&b, &l, now + NS_PER_S, &wait));
    rate_limit_set(&l, 1, 1);
    now += 10 * NS_PER_S;
    assert_true(token_bucket_take(&b, &l, now, &wait));
    assert_false(token_bucket_take(&b, &l, now, &wait));
    assert_int_equal(wait, NS_PER_S);
}

/* Threads taking from one bucket at one frozen instant. The burst is half
 * of all the takes, so that the threads contend for tokens for most of the
 * run rather than only in its first microseconds; a lost update (two
 * threads moving tat from the same value) would admit more than burst. */
#define THREADS 4
#define TAKES_EACH 200000
#define MT_BURST (THREADS * TAKES_EACH / 2)
#define MT_ROUNDS 5

struct hammer {
    struct token_bucket *b;
    const struct rate_limit *l;
    pthread_barrier_t *start;
    int64_t now;
    int64_t admitted;
};

static void *hammer(void *arg)
{
    struct hammer *h = arg;
    pthread_barrier_wait(h->start);
    for (int i = 0; i < TAKES_EACH; i++)
        h->admitted += token_bucket_take(h->b, h->l, h->now, NULL);
    return NULL;
}

/* Runs THREADS threads at now; returns what they were admitted in all. */
static int64_t hammer_at(struct token_bucket *b, const struct rate_limit *l, int64_t now)
{
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    struct hammer h[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){.b = b, .l = l, .start = &start, .now = now};
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &h[i]), 0);
    }
    int64_t total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        total += h[i].admitted;
    }
    pthread_barrier_destroy(&start);
    return total;
}

/* Found by tests/fuzz: a rate so small that 1e9 / rate overflows int64
 * once became an interval of 1 ns (everything admitted), and a burst times
 * the interval overflowed (undefined behaviour on every take). Both are
 * capped at a quarter of the int64 range (73 years). */
static void test_tiny_rate_huge_burst_capped(void **state)
{
    (void)state;
    struct rate_limit l;
    struct token_bucket b;
    setup_bucket(&l, &b, 1e-11, 1);
    assert_int_equal(atomic_load(&l.interval_ns), INT64_MAX / 4);
    int64_t wait = -1;
    assert_int_equal(take_all(&b, &l, T0, &wait), 1); /* one token, then none for ages */
    assert_int_equal(wait, INT64_MAX / 4);
    setup_bucket(&l, &b, 0.0001, 10000000); /* 10^13 ns a token, 10^7 of them */
    assert_int_equal(atomic_load(&l.interval_ns), 10000000000000LL);
    assert_true(token_bucket_take(&b, &l, T0, &wait));
    /* a full bucket of 10^7 tokens cannot be counted out here; its depth is
     * capped, so the state moved by one interval and no more */
    assert_true(token_bucket_take(&b, &l, T0, &wait));
}

static void test_threads_admit_exactly_burst(void **state)
{
    (void)state;
    for (int round = 0; round < MT_ROUNDS; round++) {
        struct rate_limit l;
        struct token_bucket b;
        setup_bucket(&l, &b, 100, MT_BURST); /* 10 ms */
        const int64_t iv = 10000000;
        assert_int_equal(hammer_at(&b, &l, T0), MT_BURST);
        assert_int_equal(atomic_load(&b.admitted), MT_BURST);
        assert_int_equal(atomic_load(&b.rejected), THREADS * TAKES_EACH - MT_BURST);
        assert_int_equal(atomic_load(&b.tat_ns), T0 + MT_BURST * iv);
        /* 37 intervals later: exactly 37 more between them */
        assert_int_equal(hammer_at(&b, &l, T0 + 37 * iv), 37);
        assert_int_equal(atomic_load(&b.admitted), MT_BURST + 37);
        assert_int_equal(atomic_load(&b.rejected), 2 * THREADS * TAKES_EACH - MT_BURST - 37);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_bucket_admits_burst),
        cmocka_unit_test(test_refill_one_per_interval),
        cmocka_unit_test(test_due_time_boundary),
        cmocka_unit_test(test_rate_zero_unlimited),
        cmocka_unit_test(test_burst_default),
        cmocka_unit_test(test_fractional_rate),
        cmocka_unit_test(test_counters),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_rate_change_at_run_time),
        cmocka_unit_test(test_tiny_rate_huge_burst_capped),
        cmocka_unit_test(test_threads_admit_exactly_burst),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
