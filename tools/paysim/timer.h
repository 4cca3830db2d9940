/*
 * timer.h - runs callbacks after a delay, on one timer thread: how a
 * request waits out its injected latency without holding a server thread.
 */
#ifndef PAYSIM_TIMER_H
#define PAYSIM_TIMER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct timer timer;

timer *timer_start(void);
/* Calls fn(arg, false) on the timer thread delay_ms from now; at
 * timer_stop(), pending callbacks are called at once with cancelled true. */
void timer_add(timer *t, int64_t delay_ms, void (*fn)(void *arg, bool cancelled), void *arg);
/* Cancels what is pending (see timer_add) and joins the thread; from then
 * on timer_add() calls its callback at once, cancelled. */
void timer_stop(timer *t);
/* Frees a stopped timer. NULL does nothing. */
void timer_free(timer *t);

#endif
