/*
 * guard_micro.c - what a guard check costs, with 1 and 2 threads hammering
 * the same limiter (the worst case: one hot merchant, one global bucket).
 *
 * Each row runs its operation in a tight loop on every thread for a fixed
 * time and prints nanoseconds per operation and operations per second over
 * all threads. The ceilings beside them are the cheapest things a shared
 * limiter could possibly do: one relaxed atomic add on a shared counter
 * (the cache line bounces between cores exactly as a bucket's does), and
 * reading the monotonic clock, which every check needs.
 *
 *   build/guard_micro [SECONDS_PER_ROW]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "guard/adaptive.h"
#include "guard/breaker.h"
#include "guard/guards.h"
#include "guard/token_bucket.h"
#include "util/util.h"

#define MERCHANTS 10000

enum op {
    OP_ATOMIC_ADD,
    OP_CLOCK,
    OP_BUCKET_ADMIT,
    OP_BUCKET_REJECT,
    OP_MERCHANT,
    OP_ADAPTIVE,
    OP_BREAKER,
    OP_ADMISSION,
};

static const char *const op_names[] = {
    [OP_ATOMIC_ADD] = "ceiling: atomic add on a shared counter",
    [OP_CLOCK] = "ceiling: read the monotonic clock",
    [OP_BUCKET_ADMIT] = "token bucket, one bucket, admitted",
    [OP_BUCKET_REJECT] = "token bucket, one bucket, rejected",
    [OP_MERCHANT] = "merchant bucket (lookup of 10k merchants)",
    [OP_ADAPTIVE] = "in-flight limit acquire + release",
    [OP_BREAKER] = "breaker allow + record",
    [OP_ADMISSION] = "whole admission: clock+global+merchant+inflight",
};

static struct {
    guards *g;
    struct rate_limit fast, slow;
    struct token_bucket bucket_fast, bucket_slow;
    struct adaptive_limit inflight;
    struct breaker breaker;
    _Atomic uint64_t counter;
    char merchant_ids[MERCHANTS][24];
    _Atomic bool stop;
} B;

struct worker {
    pthread_t thread;
    enum op op;
    unsigned seed;
    uint64_t ops;
};

static void *run(void *arg)
{
    struct worker *w = arg;
    uint64_t n = 0;
    int64_t sink = 0, retry;
    unsigned m = w->seed;
    struct breaker_ticket t;
    while (!atomic_load_explicit(&B.stop, memory_order_relaxed)) {
        /* 64 operations between looks at the stop flag */
        for (int i = 0; i < 64; i++) {
            switch (w->op) {
            case OP_ATOMIC_ADD:
                atomic_fetch_add_explicit(&B.counter, 1, memory_order_relaxed);
                break;
            case OP_CLOCK:
                sink += clock_mono_ns();
                break;
            case OP_BUCKET_ADMIT:
                sink += token_bucket_take(&B.bucket_fast, &B.fast, clock_mono_ns(), NULL);
                break;
            case OP_BUCKET_REJECT:
                sink += token_bucket_take(&B.bucket_slow, &B.slow, clock_mono_ns(), &retry);
                break;
            case OP_MERCHANT:
                m = m * 1103515245u + 12345u;
                sink += guards_take_merchant(B.g, B.merchant_ids[(m >> 8) % MERCHANTS],
                                             clock_mono_ns(), &retry);
                break;
            case OP_ADAPTIVE:
                if (adaptive_acquire(&B.inflight, false))
                    adaptive_release(&B.inflight, 1000000, clock_mono_ns());
                break;
            case OP_BREAKER: {
                int64_t now = clock_mono_ns();
                if (breaker_allow(&B.breaker, now, &t))
                    breaker_record(&B.breaker, &t, BREAKER_SUCCESS, 1000000, now);
                break;
            }
            case OP_ADMISSION: {
                int64_t now = clock_mono_ns();
                m = m * 1103515245u + 12345u;
                if (guards_take_global(B.g, now, &retry) &&
                    guards_take_merchant(B.g, B.merchant_ids[(m >> 8) % MERCHANTS], now,
                                         &retry) &&
                    adaptive_acquire(guards_inflight(B.g), true))
                    adaptive_release(guards_inflight(B.g), 1000000, now);
                break;
            }
            }
        }
        n += 64;
    }
    w->ops = n;
    return (void *)(intptr_t)(sink & 1);
}

static void row(enum op op, int threads, double seconds)
{
    struct worker w[2];
    atomic_store(&B.stop, false);
    for (int i = 0; i < threads; i++) {
        w[i] = (struct worker){.op = op, .seed = (unsigned)(i * 7919 + 1)};
        pthread_create(&w[i].thread, NULL, run, &w[i]);
    }
    int64_t t0 = clock_mono_ns();
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&B.stop, true);
    uint64_t total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].thread, NULL);
        total += w[i].ops;
    }
    double elapsed = (double)(clock_mono_ns() - t0) / 1e9;
    double per_s = (double)total / elapsed;
    printf("| %-50s | %7d | %10.1f | %12.2f |\n", op_names[op], threads,
           1e9 / (per_s / threads), per_s / 1e6);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    if (seconds <= 0) {
        fprintf(stderr, "usage: guard_micro [SECONDS_PER_ROW]\n");
        return 2;
    }
    char dir[] = "/tmp/guard_micro.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    struct conf conf;
    char err[CONF_ERR_MAX];
    conf_defaults(&conf);
    snprintf(conf.data_dir, sizeof(conf.data_dir), "%s", dir);
    /* limits far above what two cores can ask, so every check is admitted
     * and all of them touch the shared state */
    conf.global_rps = 1e9;
    conf.global_burst = 1000000000;
    conf.merchant_rps = 1e9;
    conf.merchant_burst = 1000000000;
    conf.max_inflight = 1000000;
    if (conf_finish(&conf, err) != 0) {
        fprintf(stderr, "config: %s\n", err);
        return 1;
    }
    B.g = guards_new(&conf, NULL, NULL, err, sizeof(err));
    if (!B.g) {
        fprintf(stderr, "guards: %s\n", err);
        return 1;
    }
    for (int i = 0; i < MERCHANTS; i++)
        snprintf(B.merchant_ids[i], sizeof(B.merchant_ids[i]), "mch_bench%06d", i);
    rate_limit_set(&B.fast, 1e9, 1000000000);
    rate_limit_set(&B.slow, 1000, 1);
    token_bucket_init(&B.bucket_fast);
    token_bucket_init(&B.bucket_slow);
    adaptive_init(&B.inflight, true, 1000000, clock_mono_ns());
    struct breaker_config bc = {.window_s = 10,
                                .min_calls = 20,
                                .failure_ratio = 0.5,
                                .slow_call_ns = 2000000000,
                                .slow_ratio = 1.0,
                                .open_ns = 30000000000LL,
                                .half_open_calls = 3};
    breaker_init(&B.breaker, "bench", &bc, NULL, NULL);

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("guard_micro: %.1f s per row, %ld cpus\n\n", seconds, cpus);
    printf("| %-50s | %7s | %10s | %12s |\n", "operation", "threads", "ns/op", "M ops/s all");
    printf("|%s|%s|%s|%s|\n", "----------------------------------------------------",
           "---------", "------------", "--------------");
    for (enum op op = OP_ATOMIC_ADD; op <= OP_ADMISSION; op++)
        for (int threads = 1; threads <= 2; threads++)
            row(op, threads, seconds);

    breaker_destroy(&B.breaker);
    adaptive_destroy(&B.inflight);
    guards_free(B.g);
    rmdir(dir);
    return 0;
}
