/*
 * test_adaptive.c - guard/adaptive: acquire refuses over the limit and
 * counts both outcomes, and a low-priority request gets only
 * ADAPTIVE_LOW_SHARE of it; with adaptation off the limit is max_inflight
 * and stays there; with it on, windows of low latency while requests press
 * against the limit make it grow (never above max_inflight), latency over
 * the tolerance times the floor in two windows in a row that refused
 * requests moves it at once to its gradient's share plus a square-root
 * queue allowance (toward where the two balance; never below
 * ADAPTIVE_MIN_LIMIT), one such window alone or the same latency with
 * nothing refused leaves it, an idle service (peak in
 * flight under half the limit) does not grow it, and adaptive_configure and
 * adaptive_set_tolerance change it at run time.
 *
 * Time is a fake clock. A window is driven by acquiring requests (so that
 * the peak in flight is what the test wants) and releasing them with a
 * latency; the last release comes ADAPTIVE_WINDOW_NS after the window began
 * and closes it.
 */
#include "../testutil.h"

#include <math.h>
#include <pthread.h>

#include "guard/adaptive.h"

#define NS_PER_MS 1000000LL
#define T0 (INT64_C(1000000000000) + 123)
#define PRESS INT64_C(1000000) /* acquire until refused */

/* One window: requests are held want at a time (fewer when the limit
 * refuses), then released with latency_ns, until at least
 * ADAPTIVE_WINDOW_SAMPLES have ended. Every release but the last comes 1 ns
 * into the window, the last exactly ADAPTIVE_WINDOW_NS after its start, so
 * the window closes on it. Moves *now to the window's end and returns the
 * peak in flight. */
static int64_t run_window(struct adaptive_limit *a, int64_t *now, int64_t want,
                          int64_t latency_ns)
{
    int64_t start = *now, samples = 0, peak = 0;
    while (samples < ADAPTIVE_WINDOW_SAMPLES) {
        int64_t held = 0;
        while (held < want && adaptive_acquire(a, false))
            held++;
        assert_true(held > 0);
        assert_int_equal(atomic_load(&a->inflight), held);
        if (held > peak)
            peak = held;
        for (int64_t i = 0; i < held; i++) {
            samples++;
            bool closes = i == held - 1 && samples >= ADAPTIVE_WINDOW_SAMPLES;
            /* not closed before its end */
            assert_int_equal(atomic_load(&a->win_count), samples - 1);
            adaptive_release(a, latency_ns, closes ? start + ADAPTIVE_WINDOW_NS : start + 1);
        }
    }
    *now = start + ADAPTIVE_WINDOW_NS;
    /* closed: the next window starts empty */
    assert_int_equal(atomic_load(&a->win_count), 0);
    assert_int_equal(atomic_load(&a->win_sum_ns), 0);
    assert_int_equal(atomic_load(&a->win_start_ns), *now);
    assert_int_equal(atomic_load(&a->inflight), 0);
    assert_int_equal(atomic_load(&a->last_mean_ns), latency_ns);
    return peak;
}

static int64_t limit_of(struct adaptive_limit *a)
{
    return atomic_load(&a->limit);
}

static void test_acquire_refuses_and_counts(void **state)
{
    (void)state;
    struct adaptive_limit a;
    adaptive_init(&a, false, 3, T0);
    assert_int_equal(limit_of(&a), 3);
    assert_true(adaptive_acquire(&a, false));
    assert_true(adaptive_acquire(&a, false));
    assert_true(adaptive_acquire(&a, false));
    assert_false(adaptive_acquire(&a, false));
    assert_false(adaptive_acquire(&a, false));
    assert_int_equal(atomic_load(&a.inflight), 3);
    assert_int_equal(atomic_load(&a.admitted), 3);
    assert_int_equal(atomic_load(&a.rejected), 2);
    adaptive_release(&a, NS_PER_MS, T0 + 1);
    assert_int_equal(atomic_load(&a.inflight), 2);
    assert_true(adaptive_acquire(&a, false));
    assert_false(adaptive_acquire(&a, false));
    assert_int_equal(atomic_load(&a.admitted), 4);
    assert_int_equal(atomic_load(&a.rejected), 3);
    for (int i = 0; i < 3; i++)
        adaptive_release(&a, NS_PER_MS, T0 + 2);
    assert_int_equal(atomic_load(&a.inflight), 0);
    adaptive_destroy(&a);
}

/* Low priority (new work) gets ADAPTIVE_LOW_SHARE (0.75) of the limit,
 * rounded down and at least 1, counted against everything in flight. */
static void test_low_priority_share(void **state)
{
    (void)state;
    static const struct {
        int64_t limit, share;
    } cases[] = {{100, 75}, {10, 7}, {4, 3}, {3, 2}, {1, 1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct adaptive_limit a;
        adaptive_init(&a, false, cases[i].limit, T0);
        int64_t n = 0;
        while (adaptive_acquire(&a, true))
            n++;
        assert_int_equal(n, cases[i].share);
        /* the rest of the limit is still there for high priority */
        while (adaptive_acquire(&a, false))
            n++;
        assert_int_equal(n, cases[i].limit);
        assert_int_equal(atomic_load(&a.rejected), 2);
        /* high priority in flight leaves low priority nothing */
        for (int64_t k = 0; k < n; k++)
            adaptive_release(&a, NS_PER_MS, T0 + 1);
        for (int64_t k = 0; k < cases[i].share; k++)
            assert_true(adaptive_acquire(&a, false));
        assert_false(adaptive_acquire(&a, true));
        assert_int_equal(atomic_load(&a.inflight), cases[i].share);
        adaptive_destroy(&a);
    }
}

/* A window needs both the time and the samples. */
static void test_window_needs_time_and_samples(void **state)
{
    (void)state;
    struct adaptive_limit a;
    adaptive_init(&a, true, 1000, T0);
    /* many samples, but the time is not up */
    for (int i = 0; i < 3 * ADAPTIVE_WINDOW_SAMPLES; i++) {
        assert_true(adaptive_acquire(&a, false));
        adaptive_release(&a, NS_PER_MS, T0 + ADAPTIVE_WINDOW_NS - 1);
    }
    assert_int_equal(atomic_load(&a.win_count), 3 * ADAPTIVE_WINDOW_SAMPLES);
    assert_int_equal(atomic_load(&a.win_start_ns), T0);
    /* time is up, but too few samples */
    struct adaptive_limit b;
    adaptive_init(&b, true, 1000, T0);
    for (int i = 0; i < ADAPTIVE_WINDOW_SAMPLES - 1; i++) {
        assert_true(adaptive_acquire(&b, false));
        adaptive_release(&b, NS_PER_MS, T0 + 10 * ADAPTIVE_WINDOW_NS);
    }
    assert_int_equal(atomic_load(&b.win_count), ADAPTIVE_WINDOW_SAMPLES - 1);
    assert_int_equal(atomic_load(&b.last_mean_ns), 0);
    /* the next sample closes it */
    assert_true(adaptive_acquire(&b, false));
    adaptive_release(&b, NS_PER_MS, T0 + 10 * ADAPTIVE_WINDOW_NS);
    assert_int_equal(atomic_load(&b.win_count), 0);
    assert_int_equal(atomic_load(&b.last_mean_ns), NS_PER_MS);
    assert_int_equal(atomic_load(&b.floor_ns), NS_PER_MS);
    adaptive_destroy(&a);
    adaptive_destroy(&b);
}

static void test_off_is_fixed(void **state)
{
    (void)state;
    struct adaptive_limit a;
    int64_t now = T0;
    adaptive_init(&a, false, 10, now);
    assert_int_equal(limit_of(&a), 10);
    for (int w = 0; w < 20; w++) {
        run_window(&a, &now, PRESS, NS_PER_MS);
        assert_int_equal(limit_of(&a), 10);
    }
    for (int w = 0; w < 20; w++) {
        run_window(&a, &now, PRESS, 1000 * NS_PER_MS);
        assert_int_equal(limit_of(&a), 10);
    }
    /* off with a ceiling above the adaptive start (64) starts at it */
    struct adaptive_limit b;
    adaptive_init(&b, false, 500, now);
    assert_int_equal(limit_of(&b), 500);
    run_window(&b, &now, PRESS, NS_PER_MS);
    assert_int_equal(limit_of(&b), 500);
    adaptive_destroy(&a);
    adaptive_destroy(&b);
}

static void test_grows_under_pressure(void **state)
{
    (void)state;
    struct adaptive_limit a;
    int64_t now = T0;
    adaptive_init(&a, true, 80, now);
    assert_int_equal(limit_of(&a), 64);
    /* the first window: gradient 1, so limit + s * sqrt(limit) */
    assert_int_equal(run_window(&a, &now, PRESS, NS_PER_MS), 64);
    double want = 64 * (1 - ADAPTIVE_SMOOTHING) + ADAPTIVE_SMOOTHING * (64 + sqrt(64));
    assert_true(fabs(a.limit_f - want) < 1e-9);
    assert_int_equal(limit_of(&a), (int64_t)want);
    assert_int_equal(atomic_load(&a.floor_ns), NS_PER_MS);
    int64_t prev = limit_of(&a);
    for (int w = 0; w < 40; w++) {
        double prev_f = a.limit_f;
        run_window(&a, &now, PRESS, NS_PER_MS);
        int64_t l = limit_of(&a);
        assert_true(l >= prev);
        assert_true(l <= 80);
        if (prev_f < 80)
            assert_true(a.limit_f > prev_f);
        prev = l;
    }
    assert_int_equal(limit_of(&a), 80);
    assert_true(a.limit_f <= 80);
    /* latency exactly at the tolerance still counts as unqueued */
    adaptive_configure(&a, true, 1000);
    prev = limit_of(&a);
    run_window(&a, &now, PRESS, (int64_t)(ADAPTIVE_TOLERANCE * NS_PER_MS));
    assert_true(limit_of(&a) > prev);
    adaptive_destroy(&a);
}

/* A tolerance set at run time moves the point where queueing begins. */
static void test_set_tolerance(void **state)
{
    (void)state;
    struct adaptive_limit a;
    int64_t now = T0;
    adaptive_init(&a, true, 1000, now);
    run_window(&a, &now, PRESS, NS_PER_MS); /* the floor: 1 ms */
    /* by default 2 ms (2x the floor) still grows it */
    int64_t prev = limit_of(&a);
    run_window(&a, &now, PRESS, 2 * NS_PER_MS);
    assert_true(limit_of(&a) > prev);
    /* at 1.5, 2 ms is queueing: gradient 0.75, the second window in a row */
    adaptive_set_tolerance(&a, 1.5);
    double prev_f = a.limit_f;
    run_window(&a, &now, PRESS, 2 * NS_PER_MS);
    assert_true(a.limit_f == prev_f);
    run_window(&a, &now, PRESS, 2 * NS_PER_MS);
    double want = prev_f * 0.75 + sqrt(prev_f);
    assert_true(fabs(a.limit_f - want) < 1e-9);
    assert_true(a.limit_f < prev_f);
    /* and 1.5 ms is not */
    prev_f = a.limit_f;
    run_window(&a, &now, PRESS, 1500000);
    assert_true(a.limit_f > prev_f);
    adaptive_destroy(&a);
}

static void test_ceiling_below_start(void **state)
{
    (void)state;
    struct adaptive_limit a;
    int64_t now = T0;
    adaptive_init(&a, true, 10, now);
    assert_int_equal(limit_of(&a), 10);
    for (int w = 0; w < 10; w++) {
        run_window(&a, &now, PRESS, NS_PER_MS);
        assert_int_equal(limit_of(&a), 10);
    }
    adaptive_destroy(&a);
}

static void test_shrinks_on_queueing(void **state)
{
    (void)state;
    struct adaptive_limit a;
    int64_t now = T0;
    adaptive_init(&a, true, 1000, now);
    run_window(&a, &now, PRESS, NS_PER_MS); /* the floor: 1 ms */
    assert_int_equal(atomic_load(&a.floor_ns), NS_PER_MS);
    int64_t first = limit_of(&a);
    assert_int_equal(first, 65);
    int reached_min_at = -1;
    for (int w = 0; w < 300; w++) {
        double prev_f = a.limit_f;
        int64_t prev = limit_of(&a);
        /* far beyond the tolerance: the gradient is clamped at 0.5; the
         * first window of queueing is only counted */
        run_window(&a, &now, PRESS, 1000 * NS_PER_MS);
        double want = w == 0 ? prev_f : prev_f * 0.5 + sqrt(prev_f);
        if (want < ADAPTIVE_MIN_LIMIT)
            want = ADAPTIVE_MIN_LIMIT;
        assert_true(fabs(a.limit_f - want) < 1e-9);
        assert_int_equal(limit_of(&a), (int64_t)want);
        /* at most halving */
        assert_true(a.limit_f >= prev_f * 0.5 - 1e-9);
        assert_true(limit_of(&a) <= prev);
        assert_true(limit_of(&a) >= ADAPTIVE_MIN_LIMIT);
        if (w > 0 && prev > ADAPTIVE_MIN_LIMIT + 1)
            assert_true(a.limit_f < prev_f);
        if (reached_min_at < 0 && limit_of(&a) == ADAPTIVE_MIN_LIMIT)
            reached_min_at = w;
        /* the floor is not raised by queueing */
        assert_int_equal(atomic_load(&a.floor_ns), NS_PER_MS);
    }
    assert_true(reached_min_at > 0);
    assert_int_equal(limit_of(&a), ADAPTIVE_MIN_LIMIT);
    /* only MIN_LIMIT are let in */
    for (int i = 0; i < ADAPTIVE_MIN_LIMIT; i++)
        assert_true(adaptive_acquire(&a, false));
    assert_false(adaptive_acquire(&a, false));
    for (int i = 0; i < ADAPTIVE_MIN_LIMIT; i++)
        adaptive_release(&a, NS_PER_MS, now + 1);
    adaptive_destroy(&a);
}

/* A ceiling under ADAPTIVE_MIN_LIMIT is obeyed; once it is raised, the next
 * window lifts the limit to ADAPTIVE_MIN_LIMIT (with so few in flight that
 * window sets the floor, so it is no queueing: it grows, and the clamp
 * takes it to the minimum). */
static void test_min_limit_after_low_ceiling(void **state)
{
    (void)state;
    struct adaptive_limit a;
    int64_t now = T0;
    adaptive_init(&a, true, 1000, now);
    run_window(&a, &now, PRESS, NS_PER_MS); /* the floor: 1 ms */
    adaptive_configure(&a, true, 2);
    assert_int_equal(limit_of(&a), 2);
    for (int w = 0; w < 5; w++) {
        assert_int_equal(run_window(&a, &now, PRESS, 1000 * NS_PER_MS), 2);
        assert_int_equal(limit_of(&a), 2);
    }
    adaptive_configure(&a, true, 100);
    assert_int_equal(limit_of(&a), 2); /* a higher ceiling leaves it */
    run_window(&a, &now, PRESS, 1000 * NS_PER_MS);
    assert_int_equal(limit_of(&a), ADAPTIVE_MIN_LIMIT);
    assert_true(a.limit_f == ADAPTIVE_MIN_LIMIT);
    adaptive_destroy(&a);
}

/* Moderate queueing (3x the floor, gradient 2/3) cuts it in proportion, at
 * its second window in a row, from 65. */
static void test_shrink_gradient(void **state)
{
    (void)state;
    struct adaptive_limit a;
    int64_t now = T0;
    adaptive_init(&a, true, 1000, now);
    run_window(&a, &now, PRESS, NS_PER_MS);
    double prev_f = a.limit_f;
    run_window(&a, &now, PRESS, 3 * NS_PER_MS);
    assert_true(a.limit_f == prev_f);
    run_window(&a, &now, PRESS, 3 * NS_PER_MS);
    double g = ADAPTIVE_TOLERANCE / 3;
    double want = prev_f * g + sqrt(prev_f);
    assert_true(fabs(a.limit_f - want) < 1e-9);
    assert_true(limit_of(&a) < (int64_t)prev_f);
    adaptive_destroy(&a);
}

/* Latency over the tolerance in windows that refused nothing (fewer in
 * flight than the limit) leaves the limit: it did not cause the latency.
 * One window that refuses with that latency (a stall) only counts, and a
 * window without queueing between two such forgets it; two in a row cut. */
static void test_queueing_without_refusals_keeps(void **state)
{
    (void)state;
    struct adaptive_limit a;
    int64_t now = T0;
    adaptive_init(&a, true, 1000, now);
    run_window(&a, &now, 40, NS_PER_MS); /* the floor: 1 ms; 40 of 64 grows it */
    double before = a.limit_f;
    assert_true(before > 64);
    for (int w = 0; w < 10; w++) {
        assert_int_equal(run_window(&a, &now, 40, 10 * NS_PER_MS), 40);
        assert_true(a.limit_f == before);
        assert_int_equal(atomic_load(&a.win_rejected), 0);
    }
    uint64_t rejected = atomic_load(&a.rejected);
    run_window(&a, &now, PRESS, 10 * NS_PER_MS);
    assert_true(atomic_load(&a.rejected) > rejected);
    assert_true(a.limit_f == before);
    assert_int_equal(run_window(&a, &now, 10, NS_PER_MS), 10); /* fine, idle */
    assert_true(a.limit_f == before);
    run_window(&a, &now, PRESS, 10 * NS_PER_MS); /* a stall again: counted */
    assert_true(a.limit_f == before);
    run_window(&a, &now, PRESS, 10 * NS_PER_MS); /* and again: overload */
    assert_true(fabs(a.limit_f - (before * 0.5 + sqrt(before))) < 1e-9);
    assert_int_equal(atomic_load(&a.win_rejected), 0); /* counted per window */
    adaptive_destroy(&a);
}

/* Mild queueing at a small limit: limit * gradient + sqrt(limit) is above
 * the limit (under 1 / (1 - gradient)^2, where queueing and the allowance
 * balance), and the limit moves up to it, as in Gradient2. */
static void test_mild_queueing_settles_at_balance(void **state)
{
    (void)state;
    struct adaptive_limit a;
    int64_t now = T0;
    adaptive_init(&a, true, 1000, now);
    run_window(&a, &now, PRESS, NS_PER_MS); /* the floor: 1 ms */
    adaptive_configure(&a, true, 10);
    assert_int_equal(limit_of(&a), 10);
    adaptive_configure(&a, true, 1000);
    /* 2.2 ms: gradient 2 / 2.2; the first window only counts */
    double g = ADAPTIVE_TOLERANCE / 2.2;
    run_window(&a, &now, PRESS, 2200000);
    assert_true(a.limit_f == 10);
    double want = 10;
    for (int w = 0; w < 200; w++) {
        run_window(&a, &now, PRESS, 2200000);
        want = want * g + sqrt(want);
        assert_true(fabs(a.limit_f - want) < 1e-6);
    }
    double balance = 1 / ((1 - g) * (1 - g));
    assert_true(fabs(a.limit_f - balance) < 1);
    adaptive_destroy(&a);
}

static void test_idle_does_not_grow(void **state)
{
    (void)state;
    struct adaptive_limit a;
    int64_t now = T0;
    adaptive_init(&a, true, 1000, now);
    assert_int_equal(limit_of(&a), 64);
    for (int w = 0; w < 30; w++) {
        assert_int_equal(run_window(&a, &now, 10, NS_PER_MS), 10);
        assert_int_equal(limit_of(&a), 64);
    }
    /* just under half the limit: still idle */
    assert_int_equal(run_window(&a, &now, 31, NS_PER_MS), 31);
    assert_int_equal(limit_of(&a), 64);
    /* half the limit presses */
    assert_int_equal(run_window(&a, &now, 32, NS_PER_MS), 32);
    assert_true(limit_of(&a) > 64);
    adaptive_destroy(&a);
}

static void test_configure_at_run_time(void **state)
{
    (void)state;
    struct adaptive_limit a;
    int64_t now = T0;
    adaptive_init(&a, true, 1000, now);
    assert_int_equal(limit_of(&a), 64);

    /* off: the ceiling at once, and fixed */
    adaptive_configure(&a, false, 100);
    assert_false(atomic_load(&a.enabled));
    assert_int_equal(limit_of(&a), 100);
    assert_int_equal(run_window(&a, &now, PRESS, NS_PER_MS), 100);
    assert_int_equal(limit_of(&a), 100);
    run_window(&a, &now, PRESS, 1000 * NS_PER_MS);
    assert_int_equal(limit_of(&a), 100);

    /* on again: starts from there, and moves */
    adaptive_configure(&a, true, 100);
    assert_true(atomic_load(&a.enabled));
    assert_int_equal(limit_of(&a), 100);
    run_window(&a, &now, PRESS, NS_PER_MS); /* floor; already at the ceiling */
    assert_int_equal(limit_of(&a), 100);
    run_window(&a, &now, PRESS, 1000 * NS_PER_MS);
    assert_int_equal(limit_of(&a), 100); /* one window: counted */
    run_window(&a, &now, PRESS, 1000 * NS_PER_MS);
    assert_int_equal(limit_of(&a), 60); /* 100 * 0.5 + sqrt(100) */

    /* a lower ceiling cuts the limit at once */
    adaptive_configure(&a, true, 50);
    assert_int_equal(limit_of(&a), 50);
    assert_int_equal(run_window(&a, &now, PRESS, NS_PER_MS), 50);
    assert_true(limit_of(&a) <= 50);
    /* a ceiling above the current limit leaves it, and lets it grow */
    adaptive_configure(&a, true, 200);
    int64_t before = limit_of(&a);
    assert_true(before <= 50);
    run_window(&a, &now, PRESS, NS_PER_MS);
    assert_true(limit_of(&a) > before);
    assert_true(limit_of(&a) <= 200);

    /* off with a low ceiling: exactly that many get in */
    adaptive_configure(&a, false, 30);
    assert_int_equal(limit_of(&a), 30);
    assert_int_equal(run_window(&a, &now, PRESS, NS_PER_MS), 30);
    assert_int_equal(limit_of(&a), 30);
    adaptive_destroy(&a);
}

/* Threads acquiring at once never get more than the limit between them. */
#define THREADS 4
#define ACQUIRES_EACH 5000

struct acquirer {
    struct adaptive_limit *a;
    pthread_barrier_t *start;
    int64_t admitted;
};

static void *acquire_many(void *arg)
{
    struct acquirer *q = arg;
    pthread_barrier_wait(q->start);
    for (int i = 0; i < ACQUIRES_EACH; i++)
        q->admitted += adaptive_acquire(q->a, false);
    return NULL;
}

static void test_threads_respect_limit(void **state)
{
    (void)state;
    struct adaptive_limit a;
    adaptive_init(&a, false, 100, T0);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    struct acquirer q[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        q[i] = (struct acquirer){.a = &a, .start = &start};
        assert_int_equal(pthread_create(&th[i], NULL, acquire_many, &q[i]), 0);
    }
    int64_t total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        total += q[i].admitted;
    }
    pthread_barrier_destroy(&start);
    assert_int_equal(total, 100);
    assert_int_equal(atomic_load(&a.inflight), 100);
    assert_int_equal(atomic_load(&a.admitted), 100);
    assert_int_equal(atomic_load(&a.rejected), THREADS * ACQUIRES_EACH - 100);
    assert_int_equal(atomic_load(&a.win_peak_inflight), 100);
    adaptive_destroy(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acquire_refuses_and_counts),
        cmocka_unit_test(test_low_priority_share),
        cmocka_unit_test(test_window_needs_time_and_samples),
        cmocka_unit_test(test_off_is_fixed),
        cmocka_unit_test(test_grows_under_pressure),
        cmocka_unit_test(test_set_tolerance),
        cmocka_unit_test(test_ceiling_below_start),
        cmocka_unit_test(test_shrinks_on_queueing),
        cmocka_unit_test(test_shrink_gradient),
        cmocka_unit_test(test_min_limit_after_low_ceiling),
        cmocka_unit_test(test_queueing_without_refusals_keeps),
        cmocka_unit_test(test_mild_queueing_settles_at_balance),
        cmocka_unit_test(test_idle_does_not_grow),
        cmocka_unit_test(test_configure_at_run_time),
        cmocka_unit_test(test_threads_respect_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
