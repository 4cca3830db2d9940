/*
 * redis_limit_micro.c - what a shared rate-limit check costs: the time of
 * redis_limit_take with 1 and 2 threads against a Redis server on
 * 127.0.0.1, beside the cheapest thing any client of that server can do, a
 * PING round trip on a hiredis connection of each thread's own.
 *
 * Each row runs its operation in a loop on every thread for a fixed time
 * and prints nanoseconds per operation (per thread) and operations per
 * second over all threads. bench/redis_limit.sh starts the server and puts
 * redis-benchmark's PING figures beside these.
 *
 *   build/redis_limit_micro PORT [SECONDS_PER_ROW]
 */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "guard/redis_limit.h"
#include "util/util.h"

#define MERCHANTS 10000

enum op { OP_PING, OP_TAKE_ADMIT, OP_TAKE_REJECT, OP_TAKE_MERCHANTS };

static const char *const op_names[] = {
    [OP_PING] = "ceiling: PING round trip (hiredis)",
    [OP_TAKE_ADMIT] = "take, one bucket, admitted",
    [OP_TAKE_REJECT] = "take, one bucket, rejected",
    [OP_TAKE_MERCHANTS] = "take, 10k merchant buckets, admitted",
};

static struct {
    int port;
    redis_limit *r;
    _Atomic bool stop;
} B;

struct worker {
    pthread_t thread;
    enum op op;
    unsigned seed;
    uint64_t ops, errors;
};

/* One operation; false when it failed (Redis did not answer: a rejected
 * take is an answer). */
static bool step(struct worker *w, redisContext *c)
{
    char key[48];
    switch (w->op) {
    case OP_PING: {
        redisReply *rep = redisCommand(c, "PING");
        bool ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep)
            freeReplyObject(rep);
        return ok;
    }
    case OP_TAKE_ADMIT:
        return redis_limit_take(B.r, "bench:admit", 1, 1000000000, NULL) >= 0;
    case OP_TAKE_REJECT:
        return redis_limit_take(B.r, "bench:reject", 100000000000LL, 1, NULL) >= 0;
    case OP_TAKE_MERCHANTS:
        w->seed = w->seed * 1103515245u + 12345u;
        snprintf(key, sizeof(key), "merchant:mch_bench%05u", (w->seed >> 8) % MERCHANTS);
        return redis_limit_take(B.r, key, 1, 1000000000, NULL) >= 0;
    }
    return false;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    redisContext *c = NULL;
    if (w->op == OP_PING) {
        c = redisConnect("127.0.0.1", B.port);
        if (!c || c->err) {
            fprintf(stderr, "redis_limit_micro: cannot connect\n");
            exit(1);
        }
    }
    while (!atomic_load_explicit(&B.stop, memory_order_relaxed)) {
        w->errors += !step(w, c);
        w->ops++;
    }
    if (c)
        redisFree(c);
    return NULL;
}

static void row(enum op op, int threads, double seconds)
{
    struct worker w[2];
    atomic_store(&B.stop, false);
    int64_t t0 = clock_mono_ns();
    for (int i = 0; i < threads; i++) {
        w[i] = (struct worker){.op = op, .seed = (unsigned)(i * 7919 + 1)};
        pthread_create(&w[i].thread, NULL, run, &w[i]);
    }
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&B.stop, true);
    uint64_t total = 0, errors = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].thread, NULL);
        total += w[i].ops;
        errors += w[i].errors;
    }
    double elapsed = (double)(clock_mono_ns() - t0) / 1e9;
    double per_s = (double)total / elapsed;
    printf("| %-40s | %7d | %10.0f | %11.0f | %6llu |\n", op_names[op], threads,
           1e9 / (per_s / threads), per_s, (unsigned long long)errors);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    B.port = argc > 1 ? atoi(argv[1]) : 0;
    double seconds = argc > 2 ? atof(argv[2]) : 2.0;
    if (B.port <= 0 || seconds <= 0) {
        fprintf(stderr, "usage: redis_limit_micro PORT [SECONDS_PER_ROW]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char url[64], err[256];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", B.port);
    B.r = redis_limit_new(url, "bench", err, sizeof(err));
    if (!B.r) {
        fprintf(stderr, "redis_limit_micro: %s\n", err);
        return 1;
    }
    printf("redis_limit_micro: %.1f s per row, %ld cpus, server and client on this machine\n\n",
           seconds, sysconf(_SC_NPROCESSORS_ONLN));
    printf("| %-40s | %7s | %10s | %11s | %6s |\n", "operation", "threads", "ns/op",
           "ops/s all", "errors");
    printf("|------------------------------------------|---------|------------|-------------|"
           "--------|\n");
    for (enum op op = OP_PING; op <= OP_TAKE_MERCHANTS; op++)
        for (int threads = 1; threads <= 2; threads++)
            row(op, threads, seconds);
    redis_limit_free(B.r);
    return 0;
}
