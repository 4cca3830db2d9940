/*
 * server.c - paysim's server on payd's libmicrohttpd layer; see server.h.
 *
 * head() runs in the first call of a request (src/http/mhd.h's begin()),
 * dispatch() in the last; a request too large is answered 413 once its
 * body has been read and dropped (past DISCARD_MAX_BYTES the connection is
 * cut).
 *
 * A dropped request returns MHD_NO, and libmicrohttpd closes the connection
 * (shutdown(SHUT_WR) and close: the client reads end-of-file). A reset first
 * disconnects the socket itself with connect(AF_UNSPEC), which makes Linux
 * send a RST at once and leaves the descriptor to libmicrohttpd, which then
 * closes it as usual.
 */
#include "server.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "http/mhd.h"
#include "log.h"
#include "util/util.h"

#define CONNECTION_LIMIT 10000
#define CONNECTION_TIMEOUT_S 120
#define CONNECTION_MEMORY_BYTES (16 << 10)
#define LISTEN_BACKLOG 1024
#define DISCARD_MAX_BYTES (1 << 20) /* past it, a too-large body cuts the connection */

enum drop { DROP_NONE, DROP_CLOSE, DROP_RESET };

/* A request: the shared part first, then paysim's. */
struct srv_req {
    http_req req;
    enum drop drop;
};

struct srv {
    http_daemon *daemon;
    struct srv_options opts;
};

/* ---- ending a request ---- */

void srv_drop(http_req *r, bool reset)
{
    struct srv_req *s = (struct srv_req *)r;
    PAYD_ASSERT(!r->answered && s->drop == DROP_NONE);
    s->drop = reset ? DROP_RESET : DROP_CLOSE;
}

int srv_fd(http_req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

json_t *srv_error_json(const char *code, const char *message, const char *param)
{
    json_t *err = json_pack("{s:s, s:s}", "code", code, "message", message);
    PAYD_ASSERT(err);
    if (param && *param)
        json_object_set_new(err, "param", json_string(param));
    return json_pack("{s:o}", "error", err);
}

void srv_error(http_req *r, int status, const char *code, const char *message,
               const char *param)
{
    http_respond_json(r, status, srv_error_json(code, message, param));
}

static void answer_too_large(http_req *r)
{
    srv_error(r, 413, "body_too_large", "the request body is too large", NULL);
}

/* ---- the calls of a request (src/http/mhd.h) ---- */

/* Turns the request's ending into what libmicrohttpd expects. */
static enum MHD_Result end(http_req *r)
{
    switch (((struct srv_req *)r)->drop) {
    case DROP_RESET: {
        int fd = srv_fd(r);
        if (fd >= 0) {
            struct sockaddr sa = {.sa_family = AF_UNSPEC};
            (void)connect(fd, &sa, sizeof(sa)); /* sends RST; MHD closes fd later */
        }
        return MHD_NO;
    }
    case DROP_CLOSE:
        return MHD_NO;
    case DROP_NONE:
        break;
    }
    /* No answer: suspended, nothing to do until resumed. */
    return r->answered ? http_req_queue(r, NULL) : MHD_YES;
}

static enum MHD_Result begin(http_req *r)
{
    struct srv *s = r->server;
    if (s->opts.head)
        s->opts.head(s->opts.app, r);
    PAYD_ASSERT(!r->answered); /* head() may only drop */
    return end(r);
}

/* libmicrohttpd's own messages, in paysim's log; the one it writes for
 * every connection we drop on purpose is left out. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    if (strstr(msg, "Application reported internal error"))
        return;
    log_line("libmicrohttpd: %s", msg);
}

/* ---- the server ---- */

srv *srv_start(const struct srv_options *opts, char *err, size_t err_size)
{
    struct srv *s = xcalloc(1, sizeof(*s));
    s->opts = *opts;
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
        .request_size = sizeof(struct srv_req),
        .server = s,
        .begin = begin,
        .dispatch = opts->dispatch,
        .app = opts->app,
        .too_large = answer_too_large,
        .end = end,
        .log = on_mhd_log,
    };
    s->daemon = http_daemon_start(&d, err, err_size);
    if (!s->daemon) {
        free(s);
        return NULL;
    }
    return s;
}

int srv_port(const srv *s)
{
    return http_daemon_port(s->daemon);
}

void srv_quiesce(srv *s)
{
    http_daemon_quiesce(s->daemon);
}

void srv_stop(srv *s, int64_t grace_ms)
{
    if (!s)
        return;
    int parked = http_daemon_drain(s->daemon, grace_ms);
    if (parked > 0)
        log_line("stopping with %d requests still parked", parked);
    http_daemon_stop(s->daemon);
    free(s);
}
