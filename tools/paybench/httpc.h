/*
 * httpc.h - paybench's HTTP/1.1 client: keep-alive connections to one
 * host:port (http only) on non-blocking sockets, driven by the caller's epoll
 * loop in one thread. One request is in flight per connection (no
 * pipelining). Why it is written by hand, and what it leaves out, is at the
 * top of httpc.c.
 *
 * Use: httpc_target_parse() once; httpc_conn_new() per connection (each
 * registers its socket in the caller's epoll set with the connection as
 * event.data.ptr); httpc_request_format() the bytes of a request and
 * httpc_conn_send() them; hand every epoll event to httpc_conn_on_event() and
 * call httpc_conn_expire() now and then. A request ends exactly once, with
 * HTTPC_OK (the answer is in httpc_conn_response()) or a negative code.
 */
#ifndef PAYBENCH_HTTPC_H
#define PAYBENCH_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define HTTPC_AUTHORITY_CHARS_MAX 255 /* host[:port] as written in the URL */
#define HTTPC_PATH_CHARS_MAX 1023     /* path and query of the URL */
#define HTTPC_HEAD_BYTES_MAX (16u * 1024u) /* status line and headers of an answer */

/* Outcomes. HTTPC_AGAIN means "in flight, wait for the next event". */
enum httpc_rc {
    HTTPC_OK = 0,
    HTTPC_AGAIN = -1,
    HTTPC_ERR_CONNECT = -2,  /* could not connect (httpc_conn_errno() says why) */
    HTTPC_ERR_IO = -3,       /* send or receive failed, or the server closed early */
    HTTPC_ERR_PROTOCOL = -4, /* not an HTTP/1.x answer this client understands */
    HTTPC_ERR_CHUNKED = -5,  /* Transfer-Encoding in an answer: refused (payd never sends one) */
    HTTPC_ERR_TIMEOUT = -6,  /* the connect or the whole request took too long */
};

/* Where requests go: one address, the Host header, and the URL's path. */
struct httpc_target {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char authority[HTTPC_AUTHORITY_CHARS_MAX + 1];
    char path[HTTPC_PATH_CHARS_MAX + 1]; /* "/" when the URL has none */
};

/* Bounds of one connection. */
struct httpc_limits {
    size_t body_bytes_max;      /* kept of an answer's body; the rest is dropped */
    int64_t connect_timeout_us;
    int64_t request_timeout_us; /* from httpc_conn_send() to the whole answer */
};

/* What the last request got. `head` and `body` point into the connection's
 * buffer (the body is NUL-terminated, the head is not); they are valid until
 * the next httpc_conn_send(), httpc_conn_abort() or httpc_conn_free(). */
struct httpc_response {
    int status;          /* 200 ...; 0 when the request failed */
    const char *head;    /* the status line and the headers, "\r\n\r\n" included */
    size_t head_len;     /* 0 when the request failed */
    const char *body;
    size_t body_len;     /* bytes kept */
    bool body_truncated; /* more than body_bytes_max arrived; the rest was dropped */
    uint32_t connects;   /* connections opened for this request (0: reused one) */
};

/* An opaque connection: its socket (reopened as needed) and receive buffer. */
struct httpc_conn;

/*
 * Parses an http:// URL (host, IPv6 in brackets, optional port, path and
 * query; no user info, no https) and resolves the host, preferring IPv4.
 * Returns 0, or -1 with a message in error[0 .. error_cap).
 */
int httpc_target_parse(struct httpc_target *t, const char *url, char *error, size_t error_cap);

/*
 * Writes a request into buf[0 .. cap): the request line, Host, User-Agent,
 * `header_lines` (each ending in "\r\n"; may be ""), Content-Length when
 * body is not NULL, and the body. Returns its length, or -1 when it does not
 * fit.
 */
int httpc_request_format(char *buf, size_t cap, const struct httpc_target *t, const char *method,
                         const char *path, const char *header_lines, const char *body,
                         size_t body_len);

/* A closed connection to `target` (borrowed: it must outlive the
 * connection) whose socket will join `epoll_fd`; `owner` is the caller's,
 * returned by httpc_conn_owner(). Never NULL (out of memory aborts). */
struct httpc_conn *httpc_conn_new(const struct httpc_target *target, int epoll_fd,
                                  const struct httpc_limits *limits, void *owner);

/* Closes the socket and frees the connection; NULL does nothing. */
void httpc_conn_free(struct httpc_conn *c);

void *httpc_conn_owner(const struct httpc_conn *c);

/* Whether a request is in flight. */
bool httpc_conn_busy(const struct httpc_conn *c);

/*
 * Sends request[0 .. len) on the open connection, or on a new one. The bytes
 * stay the caller's and must not change until the request ends (they are
 * sent again, once, when a reused connection turns out to have been closed
 * by the server before any answer). Returns HTTPC_AGAIN (in flight) or a
 * negative code when it failed at once (it will not be reported again).
 * No request may be in flight.
 */
int httpc_conn_send(struct httpc_conn *c, const char *request, size_t len);

/* Handles an epoll event for this connection. Returns HTTPC_AGAIN while the
 * request is in flight (or none is), HTTPC_OK when its answer is complete,
 * or a negative code when it failed (the socket is then closed). */
int httpc_conn_on_event(struct httpc_conn *c, uint32_t events);

/* HTTPC_ERR_TIMEOUT (and the socket closed) when the request in flight is
 * past its deadline at now_us; HTTPC_AGAIN otherwise. */
int httpc_conn_expire(struct httpc_conn *c, int64_t now_us);

/* Drops the request in flight, if any, and closes the socket. */
void httpc_conn_abort(struct httpc_conn *c);

const struct httpc_response *httpc_conn_response(const struct httpc_conn *c);

/* errno of the last failure (0 when it had none, such as a protocol error). */
int httpc_conn_errno(const struct httpc_conn *c);

/* A fixed description of a code. */
const char *httpc_strerror(int rc);

#endif
