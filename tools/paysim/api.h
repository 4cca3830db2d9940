/*
 * api.h - paysim's HTTP API: the route table, and the path every merchant
 * request takes through the faults (docs/paysim.md, "Fault model"):
 *
 *   head in     outage / reset: the connection is reset, nothing done
 *   body in     signature (401), validation (400), error_rate (500)
 *   latency     the request waits, parked, before its work
 *   work        the charge / refund / close is journaled (or the read made)
 *   answer      hang: held unanswered; lost_answer: closed unanswered;
 *               else the answer
 *
 * The control API (/control/…, loopback only) and /healthz take none of it.
 */
#ifndef PAYSIM_API_H
#define PAYSIM_API_H

#include "faults.h"
#include "hold.h"
#include "journal.h"
#include "server.h"
#include "timer.h"

struct api_config {
    const char *secret;
    journal *journal;
    faults *faults;
    timer *timer;
    holder *holder;
};

typedef struct api api;

api *api_new(const struct api_config *cfg);
void api_free(api *a);

/* The server's hooks (struct srv_options). */
void api_head(void *app, http_req *r);
void api_dispatch(void *app, http_req *r);

#endif
