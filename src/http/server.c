/*
 * server.c - payd's HTTP server on http/mhd.h; see server.h.
 *
 * What payd adds to the shared request: its id (X-Request-Id, in and out),
 * the ids and the route its log line and metrics name, and on_answer()
 * once the answer is handed over.
 *
 * A body over the limit is answered 413. When Content-Length announces it,
 * the answer goes in the first call (the only moment before the body that
 * libmicrohttpd takes one), and the connection closes without reading the
 * body. A body without a length (chunked) that grows past the limit is read
 * and dropped, then answered; past DISCARD_MAX_BYTES the connection is cut.
 */
#include "http/server.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/mhd.h"
#include "util/util.h"

#define CONNECTION_LIMIT 20000
#define CONNECTION_TIMEOUT_S 60
#define LISTEN_BACKLOG 4096
#define DISCARD_MAX_BYTES (16 << 20)
/* libmicrohttpd's per-connection pool (headers and read buffer; bodies go to
 * our own buffer). A memset of its default 32 KiB was 3.5 % of the HTTP
 * threads' profile; 8 KiB holds any sane request head. (No throughput change
 * could be told from run-to-run noise.) */
#define CONNECTION_MEMORY_BYTES (8 << 10)

/* A request: the shared part first, then payd's. */
struct server_req {
    http_req req;
    int route;
    char request_id[HTTP_REQUEST_ID_MAX + 1];
    char merchant_id[HTTP_LOG_ID_MAX + 1], order_id[HTTP_LOG_ID_MAX + 1],
        payment_id[HTTP_LOG_ID_MAX + 1];
};

struct http_server {
    http_daemon *daemon;
    struct http_server_options opts;
    char id_prefix[9]; /* random, per process: made-up request ids */
    _Atomic uint64_t next_id;
};

static struct server_req *server_req_of(const http_req *r)
{
    return (struct server_req *)r;
}

/* ---- payd's part of the request ---- */

void http_set_route(http_req *r, int route)
{
    server_req_of(r)->route = route;
}

const char *http_request_id(const http_req *r)
{
    return server_req_of(r)->request_id;
}

void http_note_ids(http_req *r, const char *merchant_id, const char *order_id,
                   const char *payment_id)
{
    struct server_req *s = server_req_of(r);
    if (merchant_id)
        snprintf(s->merchant_id, sizeof(s->merchant_id), "%s", merchant_id);
    if (order_id)
        snprintf(s->order_id, sizeof(s->order_id), "%s", order_id);
    if (payment_id)
        snprintf(s->payment_id, sizeof(s->payment_id), "%s", payment_id);
}

/* A client's X-Request-Id is kept when it is a plain token: it goes into
 * logs and back into a header, so nothing that could break either. */
static bool request_id_valid(const char *id)
{
    return token_valid(id, HTTP_REQUEST_ID_MAX, "._:-");
}

static void set_request_id(struct server_req *s)
{
    struct http_server *srv = s->req.server;
    const char *given = http_header(&s->req, "X-Request-Id");
    if (given && request_id_valid(given)) {
        snprintf(s->request_id, sizeof(s->request_id), "%s", given);
        return;
    }
    uint64_t n = atomic_fetch_add_explicit(&srv->next_id, 1, memory_order_relaxed);
    snprintf(s->request_id, sizeof(s->request_id), "req_%s%012llx", srv->id_prefix,
             (unsigned long long)n);
}

/* ---- answering ---- */

static void add_request_id(http_req *r, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Request-Id", server_req_of(r)->request_id);
}

static enum MHD_Result queue_answer(struct server_req *s)
{
    struct http_server *srv = s->req.server;
    enum MHD_Result rc = http_req_queue(&s->req, add_request_id);
    if (s->req.queued && srv->opts.on_answer) {
        struct http_answer a = {.route = s->route, .status = s->req.status,
                                .latency_us = clock_mono_us() - s->req.started_us,
                                .method = s->req.method, .path = s->req.path,
                                .request_id = s->request_id, .merchant_id = s->merchant_id,
                                .order_id = s->order_id, .payment_id = s->payment_id};
        srv->opts.on_answer(srv->opts.app, &a);
    }
    return rc;
}

static void answer_too_large(http_req *r)
{
    struct http_server *srv = r->server;
    char msg[128];
    snprintf(msg, sizeof(msg), "the request body is over the limit of %zu bytes",
             srv->opts.max_body_bytes);
    http_error(r, 413, "invalid_request_error", "body_too_large", msg, NULL);
}

/* ---- the calls of a request (http/mhd.h) ---- */

static enum MHD_Result begin(http_req *r)
{
    struct server_req *s = server_req_of(r);
    struct http_server *srv = r->server;
    s->route = -1;
    set_request_id(s);
    const char *cl = http_header(r, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > srv->opts.max_body_bytes) {
        r->too_large = true;
        atomic_store(&r->state, HTTP_REQ_DISPATCHED);
        answer_too_large(r);
        return queue_answer(s);
    }
    return MHD_YES;
}

static enum MHD_Result end(http_req *r)
{
    /* No answer: the handler suspended the request (and it may even have
     * been resumed already, from another thread). */
    return r->answered ? queue_answer(server_req_of(r)) : MHD_YES;
}

/* ---- the server ---- */

http_server *http_server_start(const struct http_server_options *opts, char *err,
                               size_t err_size)
{
    struct http_server *srv = xcalloc(1, sizeof(*srv));
    srv->opts = *opts;
    uint8_t prefix[4];
    rand_bytes(prefix, sizeof(prefix));
    hex_encode(prefix, sizeof(prefix), srv->id_prefix);

    struct http_daemon_options d = {
        .host = opts->host,
        .port = opts->port,
        .threads = (unsigned int)opts->threads,
        .connection_limit = CONNECTION_LIMIT,
        .connection_timeout_s = CONNECTION_TIMEOUT_S,
        .listen_backlog = LISTEN_BACKLOG,
        .connection_memory_bytes = CONNECTION_MEMORY_BYTES,
        .max_body_bytes = opts->max_body_bytes,
        .discard_max_bytes = DISCARD_MAX_BYTES,
        .request_size = sizeof(struct server_req),
        .server = srv,
        .begin = begin,
        .dispatch = opts->dispatch,
        .app = opts->app,
        .too_large = answer_too_large,
        .end = end,
    };
    char why[256];
    srv->daemon = http_daemon_start(&d, why, sizeof(why));
    if (!srv->daemon) {
        snprintf(err, err_size, "http: %s", why);
        free(srv);
        return NULL;
    }
    return srv;
}

void http_server_stop(http_server *srv, int64_t grace_ms)
{
    if (!srv)
        return;
    /* Stop accepting, then let requests begun (parked ones too: the daemon
     * cannot stop while a connection is suspended) get their answer. */
    http_daemon_drain(srv->daemon, grace_ms);
    http_daemon_stop(srv->daemon);
    free(srv);
}
