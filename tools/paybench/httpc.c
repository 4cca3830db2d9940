/*
 * httpc.c - paybench's HTTP/1.1 client transport, written by hand.
 *
 * Why by hand (our rule: only when a measurement shows the library is the
 * bottleneck). Until 2026-11-25 paybench drove libcurl's multi interface
 * through epoll. On this 2-core machine, against nginx answering a static
 * 200, it reached 30,896 req/s using 99 % of a core, while wrk -t1 -c64 got
 * 61,817 req/s from the same nginx: the client, at ~32 us of CPU per
 * request, was the limit, not nginx. Against payd (create-and-pay, two
 * requests a session) it spent 120-150 us of CPU per session, 0.4-0.6 of a
 * core taken from the two the server under test also needs. With this file
 * instead (same machine, same day, runs interleaved with the libcurl build):
 * nginx 89,000-95,000 req/s at ~70 % of a core, 7.8 us per request (libcurl:
 * 38,000-39,000 req/s at 98 %, 25.5 us; wrk: 90,000-92,000 req/s at ~80 %,
 * ~8.8 us); payd 27-39 us per session, 12-14 % of a core (libcurl: 109-129
 * us, 36-40 %; about a fifth of that gain is jsonscan.c replacing a jansson
 * parse per answer). bench/RESULTS.md, "Client cost", has the runs and the
 * commands.
 *
 * What it does: keep-alive connections to one host:port; one request in
 * flight per connection; the request written with one send() (more only if
 * the socket buffer is full); the answer read into one buffer per connection
 * and parsed as it arrives: the status line, Content-Length, Connection
 * (close / keep-alive, and HTTP/1.0's default), or a body delimited by the
 * server's close. A request that fails on a reused connection before any
 * byte of answer came (the server closed the idle connection) is sent once
 * more on a new connection, as curl and browsers do; a connection whose
 * server closes it while idle is reopened by the next request.
 *
 * What it leaves out, on purpose: TLS, proxies, redirects, pipelining, 1xx
 * answers, and Transfer-Encoding (chunked): neither payd nor nginx's
 * `return 200` sends it, so an answer with one fails with HTTPC_ERR_CHUNKED
 * instead of being misread.
 *
 * Each socket is registered once, when it is opened, edge-triggered for
 * reading and writing (no epoll_ctl per request); so reads continue until
 * EAGAIN or a complete answer, and a finished write is followed by a read.
 * Closing the socket removes it from the epoll set. An event that arrives for
 * a socket the connection has since replaced is harmless: every step first
 * asks the socket (EAGAIN, SO_ERROR) rather than trusting the event.
 */
#include "httpc.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "common.h"

#define HTTPC_BUFFER_BYTES_INITIAL (4u * 1024u)
#define HTTPC_DISCARD_BYTES (16u * 1024u) /* scratch for body bytes over the limit */
#define HTTPC_USER_AGENT "paybench/2"

/* A connection's state; each request walks CLOSED or IDLE -> (CONNECTING)
 * -> SENDING -> RECEIVING -> IDLE, or CLOSED when the answer said close or
 * anything failed. */
enum conn_state {
    CONN_CLOSED,     /* no socket */
    CONN_IDLE,       /* open, no request */
    CONN_CONNECTING, /* a request waits for the connect to finish */
    CONN_SENDING,    /* the request is partly written */
    CONN_RECEIVING,  /* the request is written; the answer is not complete */
};

struct httpc_conn {
    const struct httpc_target *target; /* borrowed */
    int epoll_fd;                      /* borrowed */
    void *owner;
    struct httpc_limits limits;
    int fd; /* -1 when CONN_CLOSED */
    enum conn_state state;

    /* The request in flight; the bytes are the caller's. */
    const char *request;
    size_t request_len;
    size_t request_sent;
    bool reused;  /* it started on a connection that had answered before */
    bool retried; /* it has been sent again on a new connection */
    int64_t connect_deadline_us;
    int64_t deadline_us;

    /* The answer: the head, then the body up to the limit, then a NUL. */
    char *buf; /* owned */
    size_t buf_len;
    size_t buf_cap;
    size_t head_len;        /* 0 until the blank line after the headers arrived */
    int64_t content_length; /* -1: the body ends when the server closes */
    bool close_after;       /* the connection closes after this answer */
    uint64_t body_seen;     /* body bytes received, kept or dropped */
    struct httpc_response resp;
    int sys_errno;
};

const char *httpc_strerror(int rc)
{
    switch (rc) {
    case HTTPC_OK:
        return "ok";
    case HTTPC_AGAIN:
        return "in progress";
    case HTTPC_ERR_CONNECT:
        return "could not connect";
    case HTTPC_ERR_IO:
        return "connection failed or closed before the answer was complete";
    case HTTPC_ERR_PROTOCOL:
        return "malformed or unsupported HTTP answer";
    case HTTPC_ERR_CHUNKED:
        return "answer with Transfer-Encoding (chunked), which paybench's client does not "
               "implement";
    case HTTPC_ERR_TIMEOUT:
        return "timed out";
    default:
        return "unknown error";
    }
}

/* ---- URL and request ----------------------------------------------------- */

static void set_error(char *error, size_t error_cap, const char *message, const char *detail)
{
    snprintf(error, error_cap, "%s%s%s", message, detail[0] != '\0' ? ": " : "", detail);
}

int httpc_target_parse(struct httpc_target *t, const char *url, char *error, size_t error_cap)
{
    memset(t, 0, sizeof(*t));
    static const char scheme[] = "http://";
    if (strncasecmp(url, scheme, strlen(scheme)) != 0) {
        set_error(error, error_cap, "only http:// URLs are supported", url);
        return -1;
    }
    const char *authority = url + strlen(scheme);
    size_t authority_len = strcspn(authority, "/?#");
    if (authority_len == 0 || authority_len > HTTPC_AUTHORITY_CHARS_MAX ||
        memchr(authority, '@', authority_len) != NULL) {
        set_error(error, error_cap, "bad host in URL", url);
        return -1;
    }
    memcpy(t->authority, authority, authority_len);
    t->authority[authority_len] = '\0';

    /* host, [v6 host], host:port or [v6 host]:port */
    char host[HTTPC_AUTHORITY_CHARS_MAX + 1];
    const char *port = "80";
    char *colon;
    snprintf(host, sizeof(host), "%s", t->authority);
    if (host[0] == '[') {
        char *close = strchr(host, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':')) {
            set_error(error, error_cap, "bad IPv6 host in URL", url);
            return -1;
        }
        if (close[1] == ':')
            port = close + 2;
        *close = '\0';
        memmove(host, host + 1, strlen(host));
    } else if ((colon = strchr(host, ':')) != NULL) {
        *colon = '\0';
        port = colon + 1;
    }
    if (host[0] == '\0' || port[0] == '\0' || strlen(port) > 5 ||
        strspn(port, "0123456789") != strlen(port) || atoi(port) < 1 || atoi(port) > 65535) {
        set_error(error, error_cap, "bad host or port in URL", url);
        return -1;
    }

    const char *path = authority + authority_len;
    size_t path_len = strcspn(path, "#");
    bool add_slash = path_len == 0 || path[0] == '?';
    if (path_len + (add_slash ? 1 : 0) > HTTPC_PATH_CHARS_MAX) {
        set_error(error, error_cap, "URL path too long", "");
        return -1;
    }
    snprintf(t->path, sizeof(t->path), "%s%.*s", add_slash ? "/" : "", (int)path_len, path);

    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    struct addrinfo *found = NULL;
    int gai = getaddrinfo(host, port, &hints, &found);
    if (gai != 0) {
        set_error(error, error_cap, "cannot resolve the URL's host", gai_strerror(gai));
        return -1;
    }
    const struct addrinfo *pick = found;
    for (const struct addrinfo *ai = found; ai != NULL; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
    }
    PB_ASSERT(pick->ai_addrlen <= sizeof(t->addr));
    memcpy(&t->addr, pick->ai_addr, pick->ai_addrlen);
    t->addr_len = pick->ai_addrlen;
    freeaddrinfo(found);
    return 0;
}

int httpc_request_format(char *buf, size_t cap, const struct httpc_target *t, const char *method,
                         const char *path, const char *header_lines, const char *body,
                         size_t body_len)
{
    int n;
    if (body != NULL)
        n = snprintf(buf, cap,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: " HTTPC_USER_AGENT
                     "\r\n%sContent-Length: %zu\r\n\r\n",
                     method, path, t->authority, header_lines, body_len);
    else
        n = snprintf(buf, cap, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: " HTTPC_USER_AGENT
                               "\r\n%s\r\n",
                     method, path, t->authority, header_lines);
    if (n < 0 || (size_t)n >= cap || body_len > cap - (size_t)n)
        return -1;
    if (body != NULL)
        memcpy(buf + n, body, body_len);
    size_t len = (size_t)n + (body != NULL ? body_len : 0);
    return len <= (size_t)INT32_MAX ? (int)len : -1;
}

/* ---- connection ----------------------------------------------------------- */

struct httpc_conn *httpc_conn_new(const struct httpc_target *target, int epoll_fd,
                                  const struct httpc_limits *limits, void *owner)
{
    PB_ASSERT(limits->body_bytes_max > 0 && limits->connect_timeout_us > 0 &&
              limits->request_timeout_us > 0);
    struct httpc_conn *c = xcalloc(1, sizeof(*c));
    c->target = target;
    c->epoll_fd = epoll_fd;
    c->owner = owner;
    c->limits = *limits;
    c->fd = -1;
    c->state = CONN_CLOSED;
    c->buf_cap = HTTPC_BUFFER_BYTES_INITIAL;
    c->buf = xrealloc(NULL, c->buf_cap);
    c->buf[0] = '\0';
    c->resp.head = c->buf;
    c->resp.body = c->buf;
    return c;
}

static void conn_close(struct httpc_conn *c)
{
    if (c->fd >= 0)
        close(c->fd); /* also leaves the epoll set: the socket is not shared */
    c->fd = -1;
    c->state = CONN_CLOSED;
}

void httpc_conn_free(struct httpc_conn *c)
{
    if (c == NULL)
        return;
    conn_close(c);
    free(c->buf);
    free(c);
}

void *httpc_conn_owner(const struct httpc_conn *c)
{
    return c->owner;
}

bool httpc_conn_busy(const struct httpc_conn *c)
{
    return c->state == CONN_CONNECTING || c->state == CONN_SENDING ||
           c->state == CONN_RECEIVING;
}

const struct httpc_response *httpc_conn_response(const struct httpc_conn *c)
{
    return &c->resp;
}

int httpc_conn_errno(const struct httpc_conn *c)
{
    return c->sys_errno;
}

/* The request failed: the socket closes and the code goes to the caller. */
static int conn_fail(struct httpc_conn *c, int rc, int sys_errno)
{
    PB_ASSERT(rc < 0 && rc != HTTPC_AGAIN);
    conn_close(c);
    c->sys_errno = sys_errno;
    c->resp.status = 0;
    c->resp.head = c->buf;
    c->resp.head_len = 0;
    c->resp.body = c->buf;
    c->resp.body_len = 0;
    c->buf[0] = '\0';
    return rc;
}

static int conn_open_and_send(struct httpc_conn *c);

/* The connection broke under the request. Send it again on a new connection
 * when that is safe: the connection had been idle (the server may have
 * closed it just then), nothing of an answer came and it is the first retry. */
static int conn_fail_or_retry(struct httpc_conn *c, int rc, int sys_errno)
{
    if (!c->reused || c->retried || c->buf_len > 0)
        return conn_fail(c, rc, sys_errno);
    conn_close(c);
    c->retried = true;
    c->reused = false;
    return conn_open_and_send(c);
}

/* Writes what is left of the request; HTTPC_AGAIN while in flight. */
static int conn_send_rest(struct httpc_conn *c)
{
    while (c->request_sent < c->request_len) {
        ssize_t n = send(c->fd, c->request + c->request_sent, c->request_len - c->request_sent,
                         MSG_NOSIGNAL);
        if (n > 0) {
            c->request_sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->state = CONN_SENDING;
            return HTTPC_AGAIN;
        }
        return conn_fail_or_retry(c, HTTPC_ERR_IO, n < 0 ? errno : 0);
    }
    c->state = CONN_RECEIVING;
    return HTTPC_AGAIN;
}

/* Opens a socket, registers it and connects; sends when connected at once. */
static int conn_open_and_send(struct httpc_conn *c)
{
    PB_ASSERT(c->fd < 0);
    const struct httpc_target *t = c->target;
    c->fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return conn_fail(c, HTTPC_ERR_CONNECT, errno);
    c->resp.connects++;
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = c;
    PB_ASSERT(epoll_ctl(c->epoll_fd, EPOLL_CTL_ADD, c->fd, &ev) == 0);
    c->request_sent = 0;
    if (connect(c->fd, (const struct sockaddr *)&t->addr, t->addr_len) == 0)
        return conn_send_rest(c);
    if (errno != EINPROGRESS)
        return conn_fail(c, HTTPC_ERR_CONNECT, errno);
    c->state = CONN_CONNECTING;
    c->connect_deadline_us = clock_mono_us() + c->limits.connect_timeout_us;
    return HTTPC_AGAIN;
}

int httpc_conn_send(struct httpc_conn *c, const char *request, size_t len)
{
    PB_ASSERT(!httpc_conn_busy(c) && len > 0);
    c->request = request;
    c->request_len = len;
    c->request_sent = 0;
    c->retried = false;
    c->deadline_us = clock_mono_us() + c->limits.request_timeout_us;
    c->buf_len = 0;
    c->head_len = 0;
    c->content_length = -1;
    c->close_after = false;
    c->body_seen = 0;
    c->sys_errno = 0;
    memset(&c->resp, 0, sizeof(c->resp));
    c->resp.head = c->buf;
    c->resp.body = c->buf;
    if (c->state == CONN_CLOSED) {
        c->reused = false;
        return conn_open_and_send(c);
    }
    c->reused = true;
    return conn_send_rest(c);
}

/* ---- answer --------------------------------------------------------------- */

/* Whether header name [name, name + len) is `want` (lower case), ignoring case. */
static bool name_is(const char *name, size_t len, const char *want)
{
    return len == strlen(want) && strncasecmp(name, want, len) == 0;
}

/* Whether the comma-separated list [v, v + len) holds token `want`. */
static bool list_has_token(const char *v, size_t len, const char *want)
{
    size_t want_len = strlen(want);
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == want_len && strncasecmp(v + start, want, want_len) == 0)
            return true;
    }
    return false;
}

/* Parses buf[0 .. head_len): the status line and the headers paybench
 * needs. Returns HTTPC_OK or a negative code. */
static int parse_head(struct httpc_conn *c)
{
    const char *p = c->buf;
    const char *end = c->buf + c->head_len; /* ends with "\r\n\r\n" */
    /* "HTTP/1.1 201 Created\r\n" (the reason phrase may be empty) */
    if (c->head_len < 16 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') ||
        p[8] != ' ' || strspn(p + 9, "0123456789") != 3 || (p[12] != ' ' && p[12] != '\r'))
        return HTTPC_ERR_PROTOCOL;
    int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (status < 200)
        return HTTPC_ERR_PROTOCOL; /* 1xx: never asked for (no Expect, no Upgrade) */
    bool http_1_0 = p[7] == '0';
    bool conn_close_token = false;
    bool conn_keep_alive_token = false;
    int64_t content_length = -1;

    const char *line = memchr(p, '\n', (size_t)(end - p)) + 1;
    while (line < end - 2) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        PB_ASSERT(eol != NULL); /* the head ends in "\r\n" */
        if (eol == line || eol[-1] != '\r')
            return HTTPC_ERR_PROTOCOL;
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon == NULL || colon == line)
            return HTTPC_ERR_PROTOCOL;
        size_t name_len = (size_t)(colon - line);
        const char *value = colon + 1;
        const char *value_end = eol - 1;
        while (value < value_end && (*value == ' ' || *value == '\t'))
            value++;
        while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t'))
            value_end--;
        size_t value_len = (size_t)(value_end - value);

        if (name_is(line, name_len, "content-length")) {
            if (value_len == 0 || value_len > 18 || strspn(value, "0123456789") < value_len)
                return HTTPC_ERR_PROTOCOL;
            int64_t n = 0;
            for (size_t i = 0; i < value_len; i++)
                n = n * 10 + (value[i] - '0'); /* at most 18 digits: no overflow */
            if (content_length >= 0 && content_length != n)
                return HTTPC_ERR_PROTOCOL;
            content_length = n;
        } else if (name_is(line, name_len, "transfer-encoding")) {
            return HTTPC_ERR_CHUNKED;
        } else if (name_is(line, name_len, "connection")) {
            conn_close_token |= list_has_token(value, value_len, "close");
            conn_keep_alive_token |= list_has_token(value, value_len, "keep-alive");
        }
        line = eol + 1;
    }
    if (status == 204 || status == 304)
        content_length = 0;
    c->resp.status = status;
    c->content_length = content_length;
    c->close_after = content_length < 0 || conn_close_token || (http_1_0 && !conn_keep_alive_token);
    return HTTPC_OK;
}

/* The answer is complete: publish it, and keep or close the connection. */
static int conn_finish(struct httpc_conn *c)
{
    c->resp.head = c->buf;
    c->resp.head_len = c->head_len;
    c->resp.body = c->buf + c->head_len;
    c->resp.body_len = c->buf_len - c->head_len;
    c->buf[c->buf_len] = '\0';
    if (c->close_after)
        conn_close(c);
    else
        c->state = CONN_IDLE;
    return HTTPC_OK;
}

/* Makes room to receive into and returns how many bytes may go into the
 * buffer now: the head may grow to HTTPC_HEAD_BYTES_MAX, the body is kept up
 * to the limit (room for all of it at once when its length is known). 0 when
 * the body is at its limit: further bytes are dropped. */
static size_t conn_reserve(struct httpc_conn *c)
{
    size_t want;
    if (c->head_len == 0) {
        want = HTTPC_HEAD_BYTES_MAX;
    } else {
        uint64_t body_max = c->limits.body_bytes_max;
        if (c->content_length >= 0 && (uint64_t)c->content_length < body_max)
            body_max = (uint64_t)c->content_length;
        want = c->head_len + (size_t)body_max;
    }
    if (c->buf_len >= want)
        return 0;
    if (c->buf_cap - 1 <= c->buf_len) {
        size_t cap = c->buf_cap * 2;
        if (cap > want + 1 || (c->head_len > 0 && c->content_length >= 0))
            cap = want + 1;
        c->buf = xrealloc(c->buf, cap);
        c->buf_cap = cap;
    }
    size_t room = c->buf_cap - 1 - c->buf_len;
    return room < want - c->buf_len ? room : want - c->buf_len;
}

/* Looks for the end of the head among the newly received bytes from `from`;
 * once found, parses it and trims the body to the limit. */
static int conn_take_head(struct httpc_conn *c, size_t from)
{
    size_t start = from >= 3 ? from - 3 : 0;
    const char *hit = NULL;
    for (const char *q = c->buf + start; q + 4 <= c->buf + c->buf_len; q++) {
        q = memchr(q, '\r', (size_t)(c->buf + c->buf_len - q));
        if (q == NULL || q + 4 > c->buf + c->buf_len)
            break;
        if (memcmp(q, "\r\n\r\n", 4) == 0) {
            hit = q;
            break;
        }
    }
    if (hit == NULL)
        return c->buf_len >= HTTPC_HEAD_BYTES_MAX ? HTTPC_ERR_PROTOCOL : HTTPC_AGAIN;
    c->head_len = (size_t)(hit + 4 - c->buf);
    int rc = parse_head(c);
    if (rc != HTTPC_OK)
        return rc;
    c->body_seen = c->buf_len - c->head_len;
    if (c->body_seen > c->limits.body_bytes_max) {
        c->buf_len = c->head_len + c->limits.body_bytes_max;
        c->resp.body_truncated = true;
    }
    return HTTPC_OK;
}

/* Reads until the answer is complete or the socket has nothing more. */
static int conn_receive(struct httpc_conn *c)
{
    char discard[HTTPC_DISCARD_BYTES];
    for (;;) {
        size_t room = conn_reserve(c);
        bool keep = room > 0;
        PB_ASSERT(keep || c->head_len > 0); /* a head over the bound failed before */
        char *dst = keep ? c->buf + c->buf_len : discard;
        if (!keep)
            room = sizeof(discard);
        ssize_t n = recv(c->fd, dst, room, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return HTTPC_AGAIN;
        if (n <= 0) {
            /* The server closed (or reset) the connection. */
            if (n == 0 && c->head_len > 0 && c->content_length < 0)
                return conn_finish(c); /* the body ran to the close */
            return conn_fail_or_retry(c, HTTPC_ERR_IO, n < 0 ? errno : 0);
        }
        if (c->head_len == 0) {
            size_t from = c->buf_len;
            c->buf_len += (size_t)n;
            int rc = conn_take_head(c, from);
            if (rc == HTTPC_AGAIN)
                continue;
            if (rc != HTTPC_OK)
                return conn_fail(c, rc, 0);
        } else {
            if (keep)
                c->buf_len += (size_t)n;
            else
                c->resp.body_truncated = true;
            c->body_seen += (uint64_t)n;
        }
        if (c->content_length >= 0) {
            if (c->body_seen == (uint64_t)c->content_length)
                return conn_finish(c);
            if (c->body_seen > (uint64_t)c->content_length)
                return conn_fail(c, HTTPC_ERR_PROTOCOL, 0); /* more than announced */
        }
    }
}

int httpc_conn_on_event(struct httpc_conn *c, uint32_t events)
{
    switch (c->state) {
    case CONN_CLOSED:
        return HTTPC_AGAIN; /* for a socket already closed */
    case CONN_IDLE: {
        /* Between requests only a close (or stray bytes) can arrive: either
         * way the connection is done, and the next request opens another. */
        if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
            return HTTPC_AGAIN;
        char byte;
        ssize_t n = recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return HTTPC_AGAIN;
        conn_close(c);
        return HTTPC_AGAIN;
    }
    case CONN_CONNECTING: {
        int err = 0;
        socklen_t err_len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &err_len) != 0)
            err = errno;
        if (err != 0)
            return conn_fail(c, HTTPC_ERR_CONNECT, err);
        if (!(events & EPOLLOUT))
            return HTTPC_AGAIN;
        c->state = CONN_SENDING;
    }
        /* fall through */
    case CONN_SENDING: {
        int rc = conn_send_rest(c);
        if (rc != HTTPC_AGAIN || c->state != CONN_RECEIVING)
            return rc;
        /* An answer that came while we were still writing left no new edge. */
        return conn_receive(c);
    }
    case CONN_RECEIVING:
        return conn_receive(c);
    default:
        PB_ASSERT(!"unknown connection state");
        return HTTPC_ERR_PROTOCOL;
    }
}

int httpc_conn_expire(struct httpc_conn *c, int64_t now_us)
{
    if (!httpc_conn_busy(c))
        return HTTPC_AGAIN;
    if (now_us >= c->deadline_us ||
        (c->state == CONN_CONNECTING && now_us >= c->connect_deadline_us))
        return conn_fail(c, HTTPC_ERR_TIMEOUT, 0);
    return HTTPC_AGAIN;
}

void httpc_conn_abort(struct httpc_conn *c)
{
    if (httpc_conn_busy(c))
        (void)conn_fail(c, HTTPC_ERR_IO, 0);
}
