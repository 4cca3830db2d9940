/*
 * mhd.h - libmicrohttpd under payd's HTTP server (http/server.c) and
 * paysim's (tools/paysim/server.c): the daemon, the calls of its access
 * handler, and the request they build (struct http_req, which handlers see
 * through http/request.h). For the servers only, never for handlers.
 *
 * libmicrohttpd calls the access handler several times per request: first
 * with the head (method, path, headers), then once per piece of body, then
 * once with no data. The first call makes the request and runs the
 * server's begin(); nothing is answered there unless begin() does so on
 * purpose (libmicrohttpd 0.9.75 closes the connection after an answer
 * queued in that call, losing keep-alive). The body is collected up to
 * max_body_bytes, then read and dropped (past discard_max_bytes the
 * connection is cut). The last call runs the request: dispatch(), or
 * too_large() when the body was over the limit; a request parked by
 * http_suspend() runs its on_resume() in the call that follows
 * http_resume(). After each of those the server's end() ends the call,
 * queueing the answer (http_req_queue) or not (the request was parked, or
 * the server drops it).
 *
 * The request's state is atomic because http_resume() runs on other
 * threads: a wake-up that arrives before the resume has landed finds the
 * request still SUSPENDED and does nothing.
 *
 * A server keeps its own per-request data in a struct that starts with
 * struct http_req (request_size tells its size), and its own state behind
 * http_req.server.
 */
#ifndef PAYD_HTTP_MHD_H
#define PAYD_HTTP_MHD_H

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/request.h"

#define HTTP_EXTRA_HEADERS_MAX 4

enum http_req_state { HTTP_REQ_READING, HTTP_REQ_DISPATCHED, HTTP_REQ_SUSPENDED, HTTP_REQ_RESUMED };

typedef struct http_daemon http_daemon;

struct http_req {
    http_daemon *daemon;
    void *server; /* http_daemon_options.server */
    struct MHD_Connection *conn;
    char method[16];
    char *path;
    char *body; /* NUL-terminated; NULL while empty */
    size_t body_len, body_cap;
    bool too_large;   /* the body went over max_body_bytes */
    size_t discarded; /* body bytes dropped after too_large */
    int64_t started_us;
    _Atomic int state; /* enum http_req_state */
    void (*on_resume)(http_req *r);
    /* the answer, once set; queued once handed to libmicrohttpd */
    bool answered, queued;
    int status;
    const char *content_type;
    char *resp_body; /* ours until queued */
    size_t resp_len;
    struct {
        char *name, *value;
    } headers[HTTP_EXTRA_HEADERS_MAX];
    int header_count;
    /* the handler's state */
    void *user;
    void (*user_free)(void *user);
};

struct http_daemon_options {
    const char *host;
    int port; /* 0: any free port (http_daemon_port() tells which) */
    unsigned int threads;
    unsigned int connection_limit;
    unsigned int connection_timeout_s;
    unsigned int listen_backlog;
    /* libmicrohttpd's pool per connection (the head and the read buffer;
     * bodies go to the request's own buffer) */
    size_t connection_memory_bytes;
    size_t max_body_bytes;
    size_t discard_max_bytes;
    /* the size of the server's request struct, which starts with
     * struct http_req (zeroed when made) */
    size_t request_size;
    void *server;
    /* The first call, the head in: MHD_YES to read on, or what the server
     * answered or dropped. NULL: read on. */
    enum MHD_Result (*begin)(http_req *r);
    /* The whole body is in. */
    void (*dispatch)(void *app, http_req *r);
    void *app;
    /* The body was over max_body_bytes (instead of dispatch()). */
    void (*too_large)(http_req *r);
    /* After dispatch(), too_large() or an on_resume(): ends the call. */
    enum MHD_Result (*end)(http_req *r);
    /* libmicrohttpd's own messages; NULL: on stderr, as libmicrohttpd
     * writes them itself. */
    MHD_LogCallback log;
    void *log_cls;
};

/* Starts listening (host may be a name; IPv6 when it resolves so) with
 * epoll, a pool of threads and suspend/resume. NULL on failure, with err
 * ("cannot resolve HOST: ...", "cannot listen on HOST:PORT ..."). */
http_daemon *http_daemon_start(const struct http_daemon_options *opts, char *err,
                               size_t err_size);
int http_daemon_port(const http_daemon *d);
/* Stops accepting new connections; requests in progress go on. */
void http_daemon_quiesce(http_daemon *d);
/* Quiesces, then waits up to grace_ms for every request begun to have its
 * answer sent (parked ones resumed and answered); returns how many are
 * still parked. */
int http_daemon_drain(http_daemon *d, int64_t grace_ms);
/* Closes every connection, joins the threads and frees. */
void http_daemon_stop(http_daemon *d);

/* Hands the answer set to libmicrohttpd: the body with its Content-Type,
 * then the headers add_headers() adds (may be NULL), then those of
 * http_add_header(). MHD_NO (the connection closes) when the answer cannot
 * be made. */
enum MHD_Result http_req_queue(http_req *r,
                               void (*add_headers)(http_req *r, struct MHD_Response *resp));

#endif
