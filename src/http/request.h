/*
 * request.h - an HTTP request as its handler sees it, in payd and in paysim
 * (tools/paysim): both servers are built on http/mhd.h, which implements
 * this.
 *
 * The server collects a request's body (bounded), then calls the handler
 * once on a server thread. A handler either answers at once (http_respond
 * and friends) or suspends the request (http_suspend) while the work goes
 * on elsewhere (a store write waiting for its group commit, an injected
 * latency); the connection then holds no thread. Whoever finishes the work
 * calls http_resume() from any thread, and the handler's on_resume() runs
 * on a server thread to answer.
 *
 * Handlers never see libmicrohttpd: only http_req and these functions.
 */
#ifndef PAYD_HTTP_REQUEST_H
#define PAYD_HTTP_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct http_req http_req;

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
/* True when the client connected from a loopback address (127.0.0.0/8,
 * ::1, or 127.x mapped into IPv6). */
bool http_peer_loopback(http_req *r);
/* Monotonic microseconds at the request's arrival. */
int64_t http_started_us(const http_req *r);

/* Per-request state of the handler: freed with free_fn when the request
 * ends, whatever happens to the connection. */
void http_set_user(http_req *r, void *user, void (*free_fn)(void *user));
void *http_user(const http_req *r);

/* ---- answering (exactly once per request) ---- */

/* Adds a header to the answer to come (at most 4); name and value are
 * copied. */
void http_add_header(http_req *r, const char *name, const char *value);
/* Answers with body (taken: freed by the server) as application/json. */
void http_respond_raw(http_req *r, int status, char *body, size_t len);
/* Answers with a JSON value (its reference is taken). */
void http_respond_json(http_req *r, int status, json_t *value);
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
