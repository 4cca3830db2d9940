/*
 * mhd.c - libmicrohttpd glue shared by payd's server and paysim's: the
 * request (http/request.h) and the daemon with its callbacks (http/mhd.h).
 */
#include "http/mhd.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/util.h"

struct http_daemon {
    struct MHD_Daemon *mhd;
    struct http_daemon_options opts;
    int port;
    atomic_int parked; /* requests suspended, waiting for http_resume() */
    atomic_int live;   /* requests begun whose answer is not yet sent */
    MHD_socket quiesced_fd;
};

/* ---- the request ---- */

const char *http_method(const http_req *r)
{
    return r->method;
}

const char *http_path(const http_req *r)
{
    return r->path;
}

const char *http_header(http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_query(http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_body(const http_req *r, size_t *len)
{
    if (len)
        *len = r->body_len;
    return r->body ? r->body : "";
}

bool http_peer_loopback(http_req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return false;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return false;
}

int64_t http_started_us(const http_req *r)
{
    return r->started_us;
}

void http_set_user(http_req *r, void *user, void (*free_fn)(void *user))
{
    PAYD_ASSERT(!r->user);
    r->user = user;
    r->user_free = free_fn;
}

void *http_user(const http_req *r)
{
    return r->user;
}

/* ---- answering ---- */

void http_add_header(http_req *r, const char *name, const char *value)
{
    PAYD_ASSERT(r->header_count < HTTP_EXTRA_HEADERS_MAX);
    r->headers[r->header_count].name = xstrdup(name);
    r->headers[r->header_count].value = xstrdup(value);
    r->header_count++;
}

static void set_answer(http_req *r, int status, const char *content_type, char *body,
                       size_t len)
{
    PAYD_ASSERT(!r->answered);
    r->answered = true;
    r->status = status;
    r->content_type = content_type;
    r->resp_body = body;
    r->resp_len = len;
}

void http_respond_raw(http_req *r, int status, char *body, size_t len)
{
    set_answer(r, status, "application/json", body, len);
}

void http_respond_bytes(http_req *r, int status, const char *content_type, char *body,
                        size_t len)
{
    set_answer(r, status, content_type, body, len);
}

void http_respond_text(http_req *r, int status, const char *content_type, char *body)
{
    set_answer(r, status, content_type, body, strlen(body));
}

void http_respond_json(http_req *r, int status, json_t *value)
{
    char *s = json_dumps(value, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(value);
    PAYD_ASSERT(s);
    http_respond_raw(r, status, s, strlen(s));
}

void http_suspend(http_req *r, void (*on_resume)(http_req *r))
{
    r->on_resume = on_resume;
    atomic_fetch_add(&r->daemon->parked, 1);
    atomic_store(&r->state, HTTP_REQ_SUSPENDED);
    MHD_suspend_connection(r->conn);
}

void http_resume(http_req *r)
{
    atomic_store(&r->state, HTTP_REQ_RESUMED);
    MHD_resume_connection(r->conn);
}

enum MHD_Result http_req_queue(http_req *r,
                               void (*add_headers)(http_req *r, struct MHD_Response *resp))
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(r->resp_len, r->resp_body, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        return MHD_NO;
    r->resp_body = NULL; /* libmicrohttpd frees it now */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    if (add_headers)
        add_headers(r, resp);
    for (int i = 0; i < r->header_count; i++)
        MHD_add_response_header(resp, r->headers[i].name, r->headers[i].value);
    enum MHD_Result rc = MHD_queue_response(r->conn, (unsigned int)r->status, resp);
    MHD_destroy_response(resp);
    r->queued = true;
    return rc;
}

/* ---- libmicrohttpd callbacks ---- */

static http_req *req_new(http_daemon *d, struct MHD_Connection *conn, const char *url,
                         const char *method)
{
    PAYD_ASSERT(d->opts.request_size >= sizeof(http_req));
    http_req *r = xcalloc(1, d->opts.request_size);
    r->daemon = d;
    r->server = d->opts.server;
    r->conn = conn;
    r->started_us = clock_mono_us();
    snprintf(r->method, sizeof(r->method), "%s", method);
    r->path = xstrdup(url);
    atomic_init(&r->state, HTTP_REQ_READING);
    return r;
}

static void req_free(http_req *r)
{
    if (r->user_free)
        r->user_free(r->user);
    free(r->path);
    free(r->body);
    free(r->resp_body); /* set only when the answer was never handed over */
    for (int i = 0; i < r->header_count; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r);
}

/* A piece of body: kept up to max_body_bytes, then dropped; MHD_NO cuts a
 * connection that sent more than discard_max_bytes too many. */
static enum MHD_Result take_body(http_req *r, const char *data, size_t *size)
{
    size_t max = r->daemon->opts.max_body_bytes;
    if (!r->too_large && r->body_len + *size > max)
        r->too_large = true;
    if (r->too_large) {
        r->discarded += *size;
        *size = 0;
        return r->discarded > r->daemon->opts.discard_max_bytes ? MHD_NO : MHD_YES;
    }
    if (r->body_len + *size + 1 > r->body_cap) {
        r->body_cap = (r->body_len + *size + 1) * 2;
        if (r->body_cap > max + 1)
            r->body_cap = max + 1;
        r->body = xrealloc(r->body, r->body_cap);
    }
    memcpy(r->body + r->body_len, data, *size);
    r->body_len += *size;
    r->body[r->body_len] = '\0';
    *size = 0;
    return MHD_YES;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
    (void)version;
    http_daemon *d = cls;
    http_req *r = *con_cls;

    if (!r) {
        r = req_new(d, conn, url, method);
        atomic_fetch_add(&d->live, 1);
        *con_cls = r;
        return d->opts.begin ? d->opts.begin(r) : MHD_YES;
    }
    if (r->queued)
        return MHD_YES;
    if (*upload_data_size > 0)
        return take_body(r, upload_data, upload_data_size);

    switch (atomic_load(&r->state)) {
    case HTTP_REQ_READING:
        atomic_store(&r->state, HTTP_REQ_DISPATCHED);
        if (r->too_large)
            d->opts.too_large(r);
        else
            d->opts.dispatch(d->opts.app, r);
        break;
    case HTTP_REQ_RESUMED:
        atomic_store(&r->state, HTTP_REQ_DISPATCHED);
        atomic_fetch_sub(&d->parked, 1);
        r->on_resume(r);
        break;
    case HTTP_REQ_SUSPENDED:
    case HTTP_REQ_DISPATCHED:
        return MHD_YES; /* woken before the resume landed; nothing to do yet */
    default:
        PAYD_ASSERT(!"bad request state");
    }
    return d->opts.end(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_daemon *d = cls;
    (void)conn;
    (void)toe;
    if (*con_cls) {
        req_free(*con_cls);
        atomic_fetch_sub(&d->live, 1);
    }
    *con_cls = NULL;
}

/* What libmicrohttpd does with its messages when given no logger. */
static void log_stderr(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    vfprintf(stderr, fmt, ap);
}

/* ---- the daemon ---- */

http_daemon *http_daemon_start(const struct http_daemon_options *opts, char *err,
                               size_t err_size)
{
    PAYD_ASSERT(opts->dispatch && opts->too_large && opts->end);
    http_daemon *d = xcalloc(1, sizeof(*d));
    d->opts = *opts;
    d->quiesced_fd = MHD_INVALID_SOCKET;
    atomic_init(&d->parked, 0);
    atomic_init(&d->live, 0);

    char port[16];
    snprintf(port, sizeof(port), "%d", opts->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(opts->host, port, &hints, &ai);
    if (gai != 0) {
        snprintf(err, err_size, "cannot resolve %s: %s", opts->host, gai_strerror(gai));
        free(d);
        return NULL;
    }
    unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                         MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    d->mhd = MHD_start_daemon(
        flags, (uint16_t)opts->port, NULL, NULL, on_access, d,
        /* first, so that every message of libmicrohttpd goes through it */
        MHD_OPTION_EXTERNAL_LOGGER, opts->log ? opts->log : log_stderr, opts->log_cls,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE, opts->threads,
        MHD_OPTION_CONNECTION_LIMIT, opts->connection_limit, MHD_OPTION_CONNECTION_TIMEOUT,
        opts->connection_timeout_s, MHD_OPTION_LISTEN_BACKLOG_SIZE, opts->listen_backlog,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, opts->connection_memory_bytes,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, d, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!d->mhd) {
        snprintf(err, err_size, "cannot listen on %s:%d (in use, or not allowed)", opts->host,
                 opts->port);
        free(d);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d->mhd, MHD_DAEMON_INFO_BIND_PORT);
    d->port = di ? di->port : opts->port;
    return d;
}

int http_daemon_port(const http_daemon *d)
{
    return d->port;
}

void http_daemon_quiesce(http_daemon *d)
{
    if (d->quiesced_fd == MHD_INVALID_SOCKET)
        d->quiesced_fd = MHD_quiesce_daemon(d->mhd);
}

int http_daemon_drain(http_daemon *d, int64_t grace_ms)
{
    /* The daemon cannot stop while a connection is suspended. */
    http_daemon_quiesce(d);
    int64_t deadline_ms = clock_mono_ms() + grace_ms;
    /* Completion is notified once the answer is sent (or the connection
     * closed), so this waits for the answers just resumed to be written. */
    while (atomic_load(&d->live) > 0 && clock_mono_ms() < deadline_ms)
        sleep_ms(5);
    return atomic_load(&d->parked);
}

void http_daemon_stop(http_daemon *d)
{
    MHD_stop_daemon(d->mhd);
    if (d->quiesced_fd != MHD_INVALID_SOCKET)
        close(d->quiesced_fd);
    free(d);
}
