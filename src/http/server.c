/*
 * server.c - libmicrohttpd glue; see server.h.
 *
 * libmicrohttpd calls the access handler several times per request: first
 * with the headers, then once per piece of body, then once with no data.
 * We never answer in the first call (libmicrohttpd 0.9.75 then closes the
 * connection after every reply, losing keep-alive), dispatch on the last,
 * and answer on a later call after a suspended request is resumed.
 *
 * A body over the limit is answered 413. When Content-Length announces it,
 * the answer goes in the first call (the only moment before the body that
 * libmicrohttpd takes one), and the connection closes without reading the
 * body. A body without a length (chunked) that grows past the limit is read
 * and dropped, then answered; past DISCARD_MAX_BYTES the connection is cut.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/util.h"

#define MAX_EXTRA_HEADERS 4
#define CONNECTION_LIMIT 20000
#define CONNECTION_TIMEOUT_S 60
#define DISCARD_MAX_BYTES (16 << 20)
/* libmicrohttpd's per-connection pool (headers and read buffer; bodies go to
 * our own buffer). A memset of its default 32 KiB was 3.5 % of the HTTP
 * threads' profile; 8 KiB holds any sane request head. (No throughput change
 * could be told from run-to-run noise.) */
#define CONNECTION_MEMORY_BYTES (8 << 10)

enum req_state { REQ_READING, REQ_DISPATCHED, REQ_SUSPENDED, REQ_RESUMED };

struct header {
    char *name, *value;
};

struct http_req {
    struct http_server *srv;
    struct MHD_Connection *conn;
    char method[16];
    char *path;
    char *body;
    size_t body_len, body_cap;
    bool too_large;
    size_t discarded; /* body bytes dropped after too_large */
    int64_t started_us;
    int route;
    char request_id[HTTP_REQUEST_ID_MAX + 1];
    char merchant_id[HTTP_LOG_ID_MAX + 1], order_id[HTTP_LOG_ID_MAX + 1],
        payment_id[HTTP_LOG_ID_MAX + 1];
    _Atomic int state; /* enum req_state */
    void (*on_resume)(http_req *r);
    /* the answer, once set */
    bool answered, queued;
    int status;
    char *resp_body;
    size_t resp_len;
    const char *content_type;
    struct header headers[MAX_EXTRA_HEADERS];
    int header_count;
    /* the handler's state */
    void *user;
    void (*user_free)(void *user);
};

struct http_server {
    struct MHD_Daemon *daemon;
    struct http_server_options opts;
    atomic_int suspended; /* requests parked, waiting for http_resume() */
    char id_prefix[9];    /* random, per process: made-up request ids */
    _Atomic uint64_t next_id;
};

/* ---- request accessors ---- */

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

void http_set_route(http_req *r, int route)
{
    r->route = route;
}

const char *http_request_id(const http_req *r)
{
    return r->request_id;
}

void http_note_ids(http_req *r, const char *merchant_id, const char *order_id,
                   const char *payment_id)
{
    if (merchant_id)
        snprintf(r->merchant_id, sizeof(r->merchant_id), "%s", merchant_id);
    if (order_id)
        snprintf(r->order_id, sizeof(r->order_id), "%s", order_id);
    if (payment_id)
        snprintf(r->payment_id, sizeof(r->payment_id), "%s", payment_id);
}

/* A client's X-Request-Id is kept when it is a plain token: it goes into
 * logs and back into a header, so nothing that could break either. */
static bool request_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > HTTP_REQUEST_ID_MAX)
        return false;
    for (const char *p = id; *p; p++)
        if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') && !(*p >= '0' && *p <= '9') &&
            *p != '.' && *p != '_' && *p != ':' && *p != '-')
            return false;
    return true;
}

static void set_request_id(http_req *r)
{
    const char *given = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Request-Id");
    if (given && request_id_valid(given)) {
        snprintf(r->request_id, sizeof(r->request_id), "%s", given);
        return;
    }
    uint64_t n = atomic_fetch_add_explicit(&r->srv->next_id, 1, memory_order_relaxed);
    snprintf(r->request_id, sizeof(r->request_id), "req_%s%012llx", r->srv->id_prefix,
             (unsigned long long)n);
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
    PAYD_ASSERT(r->header_count < MAX_EXTRA_HEADERS);
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

void http_error(http_req *r, int status, const char *type, const char *code,
                const char *message, const char *param)
{
    json_t *err = json_pack("{s:s, s:s, s:s}", "type", type, "code", code, "message", message);
    if (param)
        json_object_set_new(err, "param", json_string(param));
    http_respond_json(r, status, json_pack("{s:o}", "error", err));
}

void http_suspend(http_req *r, void (*on_resume)(http_req *r))
{
    r->on_resume = on_resume;
    atomic_fetch_add(&r->srv->suspended, 1);
    atomic_store(&r->state, REQ_SUSPENDED);
    MHD_suspend_connection(r->conn);
}

void http_resume(http_req *r)
{
    atomic_store(&r->state, REQ_RESUMED);
    MHD_resume_connection(r->conn);
}

/* ---- libmicrohttpd callbacks ---- */

static http_req *req_new(struct http_server *srv, struct MHD_Connection *conn, const char *url,
                         const char *method)
{
    http_req *r = xcalloc(1, sizeof(*r));
    r->srv = srv;
    r->conn = conn;
    r->route = -1;
    r->started_us = clock_mono_us();
    snprintf(r->method, sizeof(r->method), "%s", method);
    r->path = xstrdup(url);
    atomic_init(&r->state, REQ_READING);
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

static enum MHD_Result queue_answer(http_req *r)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(r->resp_len, r->resp_body, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        return MHD_NO;
    r->resp_body = NULL; /* libmicrohttpd frees it now */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    for (int i = 0; i < r->header_count; i++)
        MHD_add_response_header(resp, r->headers[i].name, r->headers[i].value);
    enum MHD_Result rc = MHD_queue_response(r->conn, (unsigned int)r->status, resp);
    MHD_destroy_response(resp);
    r->queued = true;
    if (r->srv->opts.on_answer) {
        struct http_answer a = {.route = r->route, .status = r->status,
                                .latency_us = clock_mono_us() - r->started_us,
                                .method = r->method, .path = r->path,
                                .request_id = r->request_id, .merchant_id = r->merchant_id,
                                .order_id = r->order_id, .payment_id = r->payment_id};
        r->srv->opts.on_answer(r->srv->opts.app, &a);
    }
    return rc;
}

static void answer_too_large(http_req *r)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "the request body is over the limit of %zu bytes",
             r->srv->opts.max_body_bytes);
    http_error(r, 413, "invalid_request_error", "body_too_large", msg, NULL);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
    (void)version;
    struct http_server *srv = cls;
    http_req *r = *con_cls;
    size_t max = srv->opts.max_body_bytes;

    if (!r) {
        r = req_new(srv, conn, url, method);
        *con_cls = r;
        set_request_id(r);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > max) {
            r->too_large = true;
            atomic_store(&r->state, REQ_DISPATCHED);
            answer_too_large(r);
            return queue_answer(r);
        }
        return MHD_YES;
    }
    if (r->queued)
        return MHD_YES;

    if (*upload_data_size > 0) {
        if (!r->too_large && r->body_len + *upload_data_size > max)
            r->too_large = true;
        if (r->too_large) {
            r->discarded += *upload_data_size;
            *upload_data_size = 0;
            return r->discarded > DISCARD_MAX_BYTES ? MHD_NO : MHD_YES;
        }
        if (r->body_len + *upload_data_size + 1 > r->body_cap) {
            r->body_cap = (r->body_len + *upload_data_size + 1) * 2;
            if (r->body_cap > max + 1)
                r->body_cap = max + 1;
            r->body = xrealloc(r->body, r->body_cap);
        }
        memcpy(r->body + r->body_len, upload_data, *upload_data_size);
        r->body_len += *upload_data_size;
        r->body[r->body_len] = '\0';
        *upload_data_size = 0;
        return MHD_YES;
    }

    switch (atomic_load(&r->state)) {
    case REQ_READING:
        atomic_store(&r->state, REQ_DISPATCHED);
        if (r->too_large)
            answer_too_large(r);
        else
            srv->opts.dispatch(srv->opts.app, r);
        break;
    case REQ_RESUMED:
        atomic_store(&r->state, REQ_DISPATCHED);
        atomic_fetch_sub(&srv->suspended, 1);
        r->on_resume(r);
        break;
    case REQ_SUSPENDED:
    case REQ_DISPATCHED:
        return MHD_YES; /* woken before the resume landed; nothing to do yet */
    default:
        PAYD_ASSERT(!"bad request state");
    }
    if (r->answered)
        return queue_answer(r);
    /* No answer: the handler suspended the request (and it may even have
     * been resumed already, from another thread). */
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    if (*con_cls)
        req_free(*con_cls);
    *con_cls = NULL;
}

http_server *http_server_start(const struct http_server_options *opts, char *err,
                               size_t err_size)
{
    struct http_server *srv = xcalloc(1, sizeof(*srv));
    srv->opts = *opts;
    uint8_t prefix[4];
    rand_bytes(prefix, sizeof(prefix));
    hex_encode(prefix, sizeof(prefix), srv->id_prefix);

    char port[16];
    snprintf(port, sizeof(port), "%d", opts->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(opts->host, port, &hints, &ai);
    if (gai != 0) {
        snprintf(err, err_size, "http: cannot resolve %s: %s", opts->host, gai_strerror(gai));
        free(srv);
        return NULL;
    }
    unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                         MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)opts->port, NULL, NULL, on_access, srv, MHD_OPTION_SOCK_ADDR,
        ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)opts->threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CONNECTION_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CONNECTION_TIMEOUT_S,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)4096,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY_BYTES,
        MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, srv, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!srv->daemon) {
        snprintf(err, err_size, "http: cannot listen on %s:%d (in use, or not allowed)",
                 opts->host, opts->port);
        free(srv);
        return NULL;
    }
    return srv;
}

void http_server_stop(http_server *srv, int64_t grace_ms)
{
    if (!srv)
        return;
    /* Stop accepting, then let parked requests get their answer: the
     * daemon cannot stop while a connection is suspended. */
    MHD_socket fd = MHD_quiesce_daemon(srv->daemon);
    int64_t deadline_ms = clock_mono_ms() + grace_ms;
    while (atomic_load(&srv->suspended) > 0 && clock_mono_ms() < deadline_ms)
        sleep_ms(5);
    if (atomic_load(&srv->suspended) == 0)
        sleep_ms(50); /* the answers just resumed get written */
    MHD_stop_daemon(srv->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    free(srv);
}
