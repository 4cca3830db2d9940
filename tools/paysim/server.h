/*
 * server.h - paysim's HTTP server: payd's libmicrohttpd layer (src/http/
 * mhd.h; the request is src/http/request.h's http_req), and what a PSP
 * simulator needs beyond payd's server: a hook on the head, requests that
 * end without an answer, any free port, and stopping in two steps.
 *
 * Two hooks see a request: head() once its head is in (method, path and
 * headers; no body yet), where it may be dropped before anything is read,
 * and dispatch() once its whole body is in. A request then ends in exactly
 * one of these ways:
 *
 *   http_respond*()  an HTTP answer (srv_error(): paysim's error object);
 *   srv_drop()       no answer: the connection is closed (FIN), or reset
 *                    (RST) when asked (from head() or later);
 *   http_suspend()   parked, holding no thread, until http_resume() (any
 *                    thread); on_resume() then runs on a server thread and
 *                    ends it in one of these ways again.
 */
#ifndef PAYSIM_SERVER_H
#define PAYSIM_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/request.h"

typedef struct srv srv;

struct srv_options {
    const char *host;
    int port; /* 0: any free port (srv_port() tells which) */
    int threads;
    size_t max_body_bytes;
    void (*head)(void *app, http_req *r);     /* may be NULL; may only drop */
    void (*dispatch)(void *app, http_req *r); /* must end or suspend the request */
    void *app;
};

srv *srv_start(const struct srv_options *opts, char *err, size_t err_size);
int srv_port(const srv *s);
/* Stops accepting new connections; requests in progress go on. */
void srv_quiesce(srv *s);
/* Waits up to grace_ms for parked requests to end, then stops and frees. */
void srv_stop(srv *s, int64_t grace_ms);

/* Ends the request without an answer: the connection is closed, or reset. */
void srv_drop(http_req *r, bool reset);
/* The connection's socket (for watching a held connection's client). */
int srv_fd(http_req *r);

/* paysim's error object: {"error":{"code","message"[,"param"]}}; param may
 * be NULL or "" for none. srv_error() answers with it. */
json_t *srv_error_json(const char *code, const char *message, const char *param);
void srv_error(http_req *r, int status, const char *code, const char *message,
               const char *param);

#endif
