/*
 * notifier.h - delivers the journal's pending notifications: POSTs each to
 * its URL, signed like a request (sign.h), and records every attempt in
 * the journal. Success is HTTP 200 with the body "success" (surrounding
 * white space allowed); anything else, or no answer within
 * NOTIFY_TIMEOUT_MS, is retried after the next delay of the schedule, and
 * after the last delay's attempt fails the notification is given up
 * ("failed"). The schedule lives in the journal (next_ms), so it survives a
 * restart; an attempt in flight when paysim dies is made again.
 */
#ifndef PAYSIM_NOTIFIER_H
#define PAYSIM_NOTIFIER_H

#include <stdint.h>

#include "journal.h"

#define NOTIFY_TIMEOUT_MS 5000
#define NOTIFY_DELAYS_MAX 32

typedef struct notifier notifier;

/* delays_ms: the waits after the 1st, 2nd, … failed attempt (copied). */
notifier *notifier_start(journal *j, const char *secret, const int64_t *delays_ms,
                         int delay_count);
/* Something new is pending: look now (any thread). */
void notifier_wake(void *n);
/* Abandons deliveries in flight (they stay pending), joins, frees. */
void notifier_stop(notifier *n);

#endif
