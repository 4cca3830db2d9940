/*
 * hold.c - the watcher of held connections; see hold.h.
 *
 * poll() with POLLRDHUP on each held socket (never reading from it: bytes a
 * client pipelines after its request are not a hang-up), woken through an
 * eventfd when a connection is added or paysim stops, and at least every
 * TICK_MS to enforce HOLD_MAX_MS.
 */
#include "hold.h"

#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "util/util.h"

#define TICK_MS 500

struct held {
    int fd;
    int64_t since_ms;
    void (*release)(void *arg);
    void *arg;
};

struct holder {
    pthread_t thread;
    pthread_mutex_t mu;
    int wake_fd;
    struct held *items;
    size_t count, cap;
    bool stopping;
};

static void wake(holder *h)
{
    uint64_t one = 1;
    ssize_t n = write(h->wake_fd, &one, sizeof(one));
    (void)n; /* a full counter still wakes the poll */
}

static void *hold_main(void *arg)
{
    holder *h = arg;
    struct pollfd *pfds = NULL;
    size_t pfds_cap = 0;
    for (;;) {
        pthread_mutex_lock(&h->mu);
        bool stopping = h->stopping;
        size_t n = h->count;
        if (n + 1 > pfds_cap) {
            pfds_cap = (n + 1) * 2;
            pfds = xrealloc(pfds, pfds_cap * sizeof(*pfds));
        }
        pfds[0] = (struct pollfd){.fd = h->wake_fd, .events = POLLIN};
        for (size_t i = 0; i < n; i++)
            pfds[i + 1] = (struct pollfd){.fd = h->items[i].fd, .events = POLLRDHUP};
        pthread_mutex_unlock(&h->mu);
        if (stopping)
            break;

        int rc = poll(pfds, n + 1, TICK_MS);
        if (rc > 0 && (pfds[0].revents & POLLIN)) {
            uint64_t v;
            ssize_t got = read(h->wake_fd, &v, sizeof(v));
            (void)got;
        }
        /* Release those whose peer left or whose time is up. Items added
         * since the snapshot sit past n and are looked at next round. */
        int64_t now_ms = clock_mono_ms();
        pthread_mutex_lock(&h->mu);
        size_t keep = 0;
        struct held *gone = xmalloc((n ? n : 1) * sizeof(*gone));
        size_t gone_count = 0;
        for (size_t i = 0; i < h->count; i++) {
            bool polled = i < n;
            short gone_mask = POLLRDHUP | POLLHUP | POLLERR | POLLNVAL;
            bool left = polled && (pfds[i + 1].revents & gone_mask);
            bool expired = now_ms - h->items[i].since_ms >= HOLD_MAX_MS;
            if (polled && (left || expired))
                gone[gone_count++] = h->items[i];
            else
                h->items[keep++] = h->items[i];
        }
        h->count = keep;
        pthread_mutex_unlock(&h->mu);
        for (size_t i = 0; i < gone_count; i++)
            gone[i].release(gone[i].arg);
        free(gone);
    }
    free(pfds);
    /* Stopping: release all. */
    pthread_mutex_lock(&h->mu);
    struct held *all = h->items;
    size_t count = h->count;
    h->items = NULL;
    h->count = h->cap = 0;
    pthread_mutex_unlock(&h->mu);
    for (size_t i = 0; i < count; i++)
        all[i].release(all[i].arg);
    free(all);
    return NULL;
}

holder *hold_start(void)
{
    holder *h = xcalloc(1, sizeof(*h));
    pthread_mutex_init(&h->mu, NULL);
    h->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    PAYD_ASSERT(h->wake_fd >= 0);
    PAYD_ASSERT(pthread_create(&h->thread, NULL, hold_main, h) == 0);
    return h;
}

void hold_add(holder *h, int fd, void (*release)(void *arg), void *arg)
{
    pthread_mutex_lock(&h->mu);
    bool stopping = h->stopping;
    if (!stopping) {
        if (h->count == h->cap) {
            h->cap = h->cap ? h->cap * 2 : 16;
            h->items = xrealloc(h->items, h->cap * sizeof(*h->items));
        }
        h->items[h->count++] =
            (struct held){.fd = fd, .since_ms = clock_mono_ms(), .release = release, .arg = arg};
    }
    pthread_mutex_unlock(&h->mu);
    if (stopping)
        release(arg);
    else
        wake(h);
}

int hold_count(holder *h)
{
    pthread_mutex_lock(&h->mu);
    int n = (int)h->count;
    pthread_mutex_unlock(&h->mu);
    return n;
}

void hold_stop(holder *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    pthread_mutex_unlock(&h->mu);
    wake(h);
    pthread_join(h->thread, NULL);
}

void hold_free(holder *h)
{
    if (!h)
        return;
    close(h->wake_fd);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
