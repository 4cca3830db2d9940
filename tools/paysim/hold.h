/*
 * hold.h - connections held without an answer (the "hang" fault): each
 * stays open, answered never, until its client gives up and closes it, or
 * HOLD_MAX_MS has passed, or paysim stops. A parked connection is invisible
 * to libmicrohttpd, which therefore cannot see the client leave; one watcher
 * thread polls the held sockets for the peer's hang-up instead.
 */
#ifndef PAYSIM_HOLD_H
#define PAYSIM_HOLD_H

#include <stdint.h>

#define HOLD_MAX_MS (10 * 60 * 1000)

typedef struct holder holder;

holder *hold_start(void);
/* Watches fd; calls release(arg) once (on the watcher thread) when the
 * peer has hung up, the hold is over HOLD_MAX_MS, or at hold_stop(). */
void hold_add(holder *h, int fd, void (*release)(void *arg), void *arg);
/* Connections held right now. */
int hold_count(holder *h);
/* Releases every held connection and joins the thread; from then on
 * hold_add() releases at once. */
void hold_stop(holder *h);
/* Frees a stopped holder. NULL does nothing. */
void hold_free(holder *h);

#endif
