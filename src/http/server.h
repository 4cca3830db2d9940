/*
 * server.h - the HTTP server: libmicrohttpd with epoll and an internal
 * thread pool, and the request/response helpers the API is written with.
 *
 * The server collects a request's body (bounded), then calls dispatch() once
 * on a server thread. A handler either answers at once (http_respond and
 * friends) or suspends the request (http_suspend) while a store write waits
 * for its group commit; the connection then holds no thread. Whoever
 * finishes the work calls http_resume() from any thread, and the handler's
 * on_resume() runs on a server thread to answer.
 *
 * Handlers never see libmicrohttpd: only struct http_req and these helpers.
 */
#ifndef PAYD_HTTP_SERVER_H
#define PAYD_HTTP_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct http_server http_server;
typedef struct http_req http_req;

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

/* ---- the request ---- */

const char *http_method(const http_req *r);
/* The path without the query string. */
const char *http_path(const http_req *r);
/* A request header (case-insensitive name), or NULL. */
const char *http_header(http_req *r, const char *name);
/* A query-string argument, or NULL. */
const char *http_query(http_req *r, const char *name);
/* The body, NUL-terminated; len may be NULL. */
const char *http_body(const http_req *r, size_t *len);
/* True when the client connected from a loopback address. */
bool http_peer_loopback(http_req *r);
/* Monotonic microseconds at the request's arrival. */
int64_t http_started_us(const http_req *r);
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

/* Per-request state of the handler: freed with free_fn when the request
 * ends, whatever happens to the connection. */
void http_set_user(http_req *r, void *user, void (*free_fn)(void *user));
void *http_user(const http_req *r);

/* ---- answering (exactly once per request) ---- */

/* Adds a header to the answer to come; name and value are copied. */
void http_add_header(http_req *r, const char *name, const char *value);
/* Answers with body (taken: freed by the server) as application/json. */
void http_respond_raw(http_req *r, int status, char *body, size_t len);
/* Answers with a JSON value (its reference is taken). */
void http_respond_json(http_req *r, int status, json_t *value);
/* Answers with the error object of the API; param may be NULL. */
void http_error(http_req *r, int status, const char *type, const char *code,
                const char *message, const char *param);
/* Answers with len bytes of the given content type (body taken). */
void http_respond_bytes(http_req *r, int status, const char *content_type, char *body,
                        size_t len);
/* Answers with text of the given content type (body taken). */
void http_respond_text(http_req *r, int status, const char *content_type, char *body);

/* Parks the request until http_resume(); must be called from dispatch() or
 * on_resume(), before the work that will resume it is started. */
void http_suspend(http_req *r, void (*on_resume)(http_req *r));
/* Wakes a parked request; any thread. */
void http_resume(http_req *r);

#endif
