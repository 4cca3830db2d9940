/*
 * poller.h - threads that work through rows of the store as they fall due:
 * the refund workers and the webhook senders.
 *
 * Each thread waits until it is woken (a wake wakes one thread), or the next
 * row is due, or poll_ms have passed (rows another instance wrote wake no
 * one here), then calls run() until run() finds nothing more to do; after a
 * wake, only if next_due_ms() says a row is due.
 */
#ifndef PAYD_WORKER_POLLER_H
#define PAYD_WORKER_POLLER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct poller poller;

struct poller_ops {
    const char *thread_name; /* at most 15 characters */
    /* Wall ms when the next row is due; INT64_MAX when none. */
    int64_t (*next_due_ms)(void *arg);
    /* Claims and handles one row; returns how many it claimed (0: none due). */
    int (*run)(void *arg);
};

poller *poller_start(int threads, int64_t poll_ms, const struct poller_ops *ops, void *arg);
/* New rows were written here: look now rather than at the next poll. */
void poller_wake(poller *p); /* NULL is allowed */
/* Lets run() finish the batch in hand, then joins the threads. */
void poller_stop(poller *p); /* NULL is allowed */

#endif
