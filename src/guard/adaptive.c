/*
 * adaptive.c - see adaptive.h.
 */
#include "guard/adaptive.h"

#include <math.h>

void adaptive_init(struct adaptive_limit *a, bool enabled, int64_t max_inflight, int64_t now_ns)
{
    atomic_init(&a->enabled, enabled);
    atomic_init(&a->max_inflight, max_inflight);
    int64_t start = enabled ? (max_inflight < 64 ? max_inflight : 64) : max_inflight;
    atomic_init(&a->limit, start);
    atomic_init(&a->inflight, 0);
    atomic_init(&a->admitted, 0);
    atomic_init(&a->rejected, 0);
    atomic_init(&a->win_start_ns, now_ns);
    atomic_init(&a->win_sum_ns, 0);
    atomic_init(&a->win_count, 0);
    atomic_init(&a->win_peak_inflight, 0);
    atomic_init(&a->win_rejected, 0);
    atomic_init(&a->floor_ns, 0);
    atomic_init(&a->last_mean_ns, 0);
    a->limit_f = (double)start;
    a->tolerance = ADAPTIVE_TOLERANCE;
    a->queueing_windows = 0;
    pthread_mutex_init(&a->mu, NULL);
}

void adaptive_set_tolerance(struct adaptive_limit *a, double tolerance)
{
    pthread_mutex_lock(&a->mu);
    a->tolerance = tolerance;
    pthread_mutex_unlock(&a->mu);
}

void adaptive_destroy(struct adaptive_limit *a)
{
    pthread_mutex_destroy(&a->mu);
}

void adaptive_configure(struct adaptive_limit *a, bool enabled, int64_t max_inflight)
{
    pthread_mutex_lock(&a->mu);
    atomic_store(&a->enabled, enabled);
    atomic_store(&a->max_inflight, max_inflight);
    if (!enabled || a->limit_f > (double)max_inflight)
        a->limit_f = (double)max_inflight;
    a->queueing_windows = 0;
    atomic_store(&a->limit, (int64_t)a->limit_f);
    pthread_mutex_unlock(&a->mu);
}

bool adaptive_acquire(struct adaptive_limit *a, bool low_priority)
{
    int64_t n = atomic_fetch_add_explicit(&a->inflight, 1, memory_order_relaxed) + 1;
    int64_t limit = atomic_load_explicit(&a->limit, memory_order_relaxed);
    if (low_priority) {
        int64_t share = (int64_t)((double)limit * ADAPTIVE_LOW_SHARE);
        limit = share > 0 ? share : 1;
    }
    if (n > limit) {
        atomic_fetch_sub_explicit(&a->inflight, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&a->rejected, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&a->win_rejected, 1, memory_order_relaxed);
        return false;
    }
    int64_t peak = atomic_load_explicit(&a->win_peak_inflight, memory_order_relaxed);
    while (n > peak && !atomic_compare_exchange_weak_explicit(&a->win_peak_inflight, &peak, n,
                                                              memory_order_relaxed,
                                                              memory_order_relaxed))
        ;
    atomic_fetch_add_explicit(&a->admitted, 1, memory_order_relaxed);
    return true;
}

/* Moves the limit after a window with this mean latency, peak concurrency
 * and number of requests refused; under mu. */
static void update(struct adaptive_limit *a, int64_t mean_ns, int64_t peak, int64_t refused)
{
    double limit = a->limit_f;
    int64_t floor_ns = atomic_load(&a->floor_ns);
    /* The floor: the lowest mean seen, and any mean of a window with so
     * little in flight that nothing queued (so the floor can also rise when
     * the machine itself got slower, but never just because of load). */
    if (floor_ns == 0 || mean_ns < floor_ns || peak <= 2)
        floor_ns = mean_ns > 0 ? mean_ns : 1;
    atomic_store(&a->floor_ns, floor_ns);
    atomic_store(&a->last_mean_ns, mean_ns);
    double gradient = a->tolerance * (double)floor_ns / (double)(mean_ns > 0 ? mean_ns : 1);
    if (gradient > 1)
        gradient = 1;
    if (gradient < 0.5)
        gradient = 0.5;
    if (gradient < 1 && refused > 0) {
        /* Queueing, and the limit is what let that much in (it refused
         * some). The first such window may be a stall (an fsync that took
         * long while requests kept coming): it is only counted. The second
         * in a row is overload: move at once to the gradient's share plus
         * the queue allowance (see adaptive.h), since every request
         * admitted meanwhile waits longer. */
        if (++a->queueing_windows >= ADAPTIVE_CUT_AFTER)
            limit = limit * gradient + sqrt(limit);
    } else {
        a->queueing_windows = 0;
        /* No queueing (or none the limit caused: latency that rises with
         * few in flight, from a slow disk or a machine busy with other
         * work, is not shortened by refusing the little that comes). Probe
         * upward by a smoothed square root, but only while requests press
         * against the limit (half of it in flight, or some refused): an
         * idle service must not drift to a limit it never tested. */
        if (gradient >= 1 && ((double)peak >= limit * 0.5 || refused > 0))
            limit += ADAPTIVE_SMOOTHING * sqrt(limit);
    }
    double max = (double)atomic_load(&a->max_inflight);
    if (limit > max)
        limit = max;
    if (limit < ADAPTIVE_MIN_LIMIT)
        limit = ADAPTIVE_MIN_LIMIT < max ? ADAPTIVE_MIN_LIMIT : max;
    a->limit_f = limit;
    atomic_store(&a->limit, (int64_t)limit);
}

void adaptive_release(struct adaptive_limit *a, int64_t latency_ns, int64_t now_ns)
{
    atomic_fetch_sub_explicit(&a->inflight, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&a->win_sum_ns, latency_ns, memory_order_relaxed);
    int64_t count = atomic_fetch_add_explicit(&a->win_count, 1, memory_order_relaxed) + 1;
    if (count < ADAPTIVE_WINDOW_SAMPLES ||
        now_ns - atomic_load_explicit(&a->win_start_ns, memory_order_relaxed) <
            ADAPTIVE_WINDOW_NS)
        return;
    if (pthread_mutex_trylock(&a->mu) != 0)
        return; /* another thread is closing this window */
    /* Recheck under the lock: the window may just have been closed. */
    if (now_ns - atomic_load(&a->win_start_ns) >= ADAPTIVE_WINDOW_NS &&
        atomic_load(&a->win_count) >= ADAPTIVE_WINDOW_SAMPLES) {
        int64_t n = atomic_exchange(&a->win_count, 0);
        int64_t sum = atomic_exchange(&a->win_sum_ns, 0);
        int64_t peak = atomic_exchange(&a->win_peak_inflight, atomic_load(&a->inflight));
        int64_t refused = atomic_exchange(&a->win_rejected, 0);
        atomic_store(&a->win_start_ns, now_ns);
        /* A sample that raced the exchanges lands in the next window. */
        if (n > 0 && atomic_load(&a->enabled))
            update(a, sum / n, peak, refused);
        else if (n > 0)
            atomic_store(&a->last_mean_ns, sum / n);
    }
    pthread_mutex_unlock(&a->mu);
}
