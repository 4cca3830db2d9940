/*
 * adaptive.h - an adaptive concurrency limit: how many write requests
 * (order and payment creations) may be in flight at once, adapted to their
 * measured latency, after Netflix's concurrency-limits (Gradient2).
 *
 * Requests report their latency when they end. Every window (at least
 * ADAPTIVE_WINDOW_NS and ADAPTIVE_WINDOW_SAMPLES samples) the limit moves:
 *
 *   gradient = clamp(tolerance * floor / mean, 0.5, 1)   (tolerance [2])
 *   gradient < 1 (queueing) and requests refused, in ADAPTIVE_CUT_AFTER
 *   windows in a row:
 *       limit = limit * gradient + sqrt(limit)    (at once)
 *   gradient = 1, and the peak in flight reached half the limit or the
 *   window refused requests:
 *       limit = limit + s * sqrt(limit)           (s a smoothing factor)
 *   otherwise the limit stays.
 *
 * where mean is the window's mean latency and floor the lowest window mean
 * seen with little in flight (latency without queueing); sqrt(limit) is
 * Gradient2's queue allowance, which keeps the limit from collapsing to
 * its minimum when latency rises for reasons the limit cannot remove (on a
 * machine that also has to refuse the overload): the limit settles where
 * the two balance, 1 / (1 - gradient)^2, so at mild queueing a small limit
 * rises toward it. Measured (bench/RESULTS.md, 2026-11-30): capping that
 * move at the current limit pinned the limit at its minimum under 3x
 * overload, and goodput fell from 31-33 % to 23 % of capacity. Unlike Gradient2 the cut
 * is not smoothed: measured on two cores (bench/RESULTS.md, 2026-11-30), a
 * smoothed cut took 2 s to bring a limit learned at a quarter of capacity
 * down when a 3x overload began, and the accepted requests of those 2 s
 * alone put the p99 far over the unloaded one. A window of queueing that
 * refused nothing leaves the limit alone: the limit did not cause that
 * latency, and cutting it would only refuse work. One window of queueing
 * alone does not cut either: at a quarter of capacity a single slow fsync
 * fills the limit while requests keep arriving, and cutting on each such
 * stall ratcheted the limit down until 1.5 % of the orders were refused at
 * that load.
 * A request over the limit is refused at once (503 with Retry-After) rather
 * than queued until its client gives up.
 *
 * With adaptation off the limit is fixed at max_inflight.
 */
#ifndef PAYD_GUARD_ADAPTIVE_H
#define PAYD_GUARD_ADAPTIVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define ADAPTIVE_WINDOW_NS 50000000LL /* 50 ms */
#define ADAPTIVE_WINDOW_SAMPLES 20
#define ADAPTIVE_MIN_LIMIT 4
#define ADAPTIVE_TOLERANCE 2.0
#define ADAPTIVE_SMOOTHING 0.2
#define ADAPTIVE_LOW_SHARE 0.75
#define ADAPTIVE_CUT_AFTER 2 /* windows of queueing in a row that refused some */

struct adaptive_limit {
    atomic_bool enabled;
    _Atomic int64_t max_inflight;
    _Atomic int64_t limit; /* current; == max_inflight when not enabled */
    _Atomic int64_t inflight;
    atomic_uint_fast64_t admitted, rejected;
    /* the current window, added to lock-free */
    _Atomic int64_t win_start_ns, win_sum_ns, win_count, win_peak_inflight, win_rejected;
    /* the estimator, under mu (taken by one thread per window, try-lock) */
    pthread_mutex_t mu;
    double limit_f;
    double tolerance; /* ADAPTIVE_TOLERANCE unless set */
    int queueing_windows; /* in a row, that refused requests */
    _Atomic int64_t floor_ns; /* 0 until measured */
    _Atomic int64_t last_mean_ns;
};

void adaptive_init(struct adaptive_limit *a, bool enabled, int64_t max_inflight, int64_t now_ns);
void adaptive_destroy(struct adaptive_limit *a);
/* Run-time change of the switch or the ceiling. */
void adaptive_configure(struct adaptive_limit *a, bool enabled, int64_t max_inflight);

/* How far above the floor the mean latency may go before the limit
 * shrinks (> 1). */
void adaptive_set_tolerance(struct adaptive_limit *a, double tolerance);

/* Admits one request, or refuses (false) when the limit is reached. A
 * request that starts new work (low_priority: an order creation) gets only
 * ADAPTIVE_LOW_SHARE of the limit, so that under overload the places left
 * go to work already begun (the payment of an order created), which
 * otherwise would be wasted. */
bool adaptive_acquire(struct adaptive_limit *a, bool low_priority);
/* An admitted request ended after latency_ns; may close the window. */
void adaptive_release(struct adaptive_limit *a, int64_t latency_ns, int64_t now_ns);

#endif
