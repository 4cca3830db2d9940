/*
 * timer.c - delayed callbacks: a binary min-heap of deadlines (monotonic
 * clock) and one thread sleeping until the earliest; see timer.h.
 */
#include "timer.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "util/util.h"

struct entry {
    int64_t due_us;
    uint64_t seq; /* ties fire in the order added */
    void (*fn)(void *arg, bool cancelled);
    void *arg;
};

struct timer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond; /* on CLOCK_MONOTONIC */
    struct entry *heap;
    size_t count, cap;
    uint64_t next_seq;
    bool stopping;
};

static bool before(const struct entry *a, const struct entry *b)
{
    return a->due_us < b->due_us || (a->due_us == b->due_us && a->seq < b->seq);
}

static void swap(struct entry *a, struct entry *b)
{
    struct entry t = *a;
    *a = *b;
    *b = t;
}

static void heap_push(timer *t, struct entry e)
{
    if (t->count == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->heap = xrealloc(t->heap, t->cap * sizeof(*t->heap));
    }
    size_t i = t->count++;
    t->heap[i] = e;
    while (i > 0 && before(&t->heap[i], &t->heap[(i - 1) / 2])) {
        swap(&t->heap[i], &t->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
}

static struct entry heap_pop(timer *t)
{
    PAYD_ASSERT(t->count > 0);
    struct entry top = t->heap[0];
    t->heap[0] = t->heap[--t->count];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < t->count && before(&t->heap[l], &t->heap[m]))
            m = l;
        if (r < t->count && before(&t->heap[r], &t->heap[m]))
            m = r;
        if (m == i)
            break;
        swap(&t->heap[i], &t->heap[m]);
        i = m;
    }
    return top;
}

static void *timer_main(void *arg)
{
    timer *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stopping) {
        if (t->count == 0) {
            pthread_cond_wait(&t->cond, &t->mu);
            continue;
        }
        int64_t now_us = clock_mono_us();
        if (t->heap[0].due_us <= now_us) {
            struct entry e = heap_pop(t);
            pthread_mutex_unlock(&t->mu);
            e.fn(e.arg, false);
            pthread_mutex_lock(&t->mu);
            continue;
        }
        int64_t due = t->heap[0].due_us;
        struct timespec ts = {.tv_sec = (time_t)(due / 1000000),
                              .tv_nsec = (long)(due % 1000000) * 1000};
        pthread_cond_timedwait(&t->cond, &t->mu, &ts);
    }
    while (t->count > 0) {
        struct entry e = heap_pop(t);
        pthread_mutex_unlock(&t->mu);
        e.fn(e.arg, true);
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

timer *timer_start(void)
{
    timer *t = xcalloc(1, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    PAYD_ASSERT(pthread_create(&t->thread, NULL, timer_main, t) == 0);
    return t;
}

void timer_add(timer *t, int64_t delay_ms, void (*fn)(void *arg, bool cancelled), void *arg)
{
    struct entry e = {.due_us = clock_mono_us() + delay_ms * 1000, .fn = fn, .arg = arg};
    pthread_mutex_lock(&t->mu);
    bool stopping = t->stopping;
    if (!stopping) {
        e.seq = t->next_seq++;
        heap_push(t, e);
        pthread_cond_signal(&t->cond);
    }
    pthread_mutex_unlock(&t->mu);
    if (stopping)
        fn(arg, true);
}

void timer_stop(timer *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->stopping = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
}

void timer_free(timer *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cond);
    free(t->heap);
    free(t);
}
