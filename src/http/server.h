/*
 * server.h - payd's HTTP server: libmicrohttpd with epoll and an internal
 * thread pool (through http/mhd.h, which paysim's server shares), calling
 * dispatch() once per request with its body read.
 *
 * Handlers work with the request of http/request.h (what came, the
 * answer, suspending while a store write waits for its group commit) and
 * with payd's own helpers below: the request id, the ids a request's log
 * line names, the metrics route, the API's error object. They never see
 * libmicrohttpd.
 */
#ifndef PAYD_HTTP_SERVER_H
#define PAYD_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/request.h"

typedef struct http_server http_server;

#define HTTP_REQUEST_ID_MAX 64
#define HTTP_LOG_ID_MAX 64

/* What a request was and how it was answered; the strings live as long as
 * the call. The ids are those the handler noted ("" when none). */
struct http_answer {
    int route; /* -1: none matched */
    int status;
    int64_t latency_us;
    const char *method, *path, *request_id;
    const char *merchant_id, *order_id, *payment_id;
};

struct http_server_options {
    const char *host;
    int port;
    int threads;
    size_t max_body_bytes;
    /* Called once per request with the whole body read. */
    void (*dispatch)(void *app, http_req *r);
    /* Called once per answered request (metrics, the request log); may be
     * NULL. */
    void (*on_answer)(void *app, const struct http_answer *a);
    void *app;
};

http_server *http_server_start(const struct http_server_options *opts, char *err,
                               size_t err_size);
/* Stops accepting, waits up to grace_ms for suspended requests to be
 * answered, closes connections and joins the server threads. */
void http_server_stop(http_server *srv, int64_t grace_ms);

/* ---- payd's part of the request (the rest: http/request.h) ---- */

/* The route index for metrics (-1 until set). */
void http_set_route(http_req *r, int route);
/* The request's id: its X-Request-Id when that is 1 to 64 of A-Z a-z 0-9
 * . _ : -, else one made up (unique in this process); the answer carries
 * it back in X-Request-Id. */
const char *http_request_id(const http_req *r);
/* Notes the ids a request concerns, for its log line; NULL leaves one as it
 * is. Copied (truncated at HTTP_LOG_ID_MAX). */
void http_note_ids(http_req *r, const char *merchant_id, const char *order_id,
                   const char *payment_id);

/* Answers with the error object of the API; param may be NULL. */
void http_error(http_req *r, int status, const char *type, const char *code,
                const char *message, const char *param);

#endif
