/*
 * request.h - an in-memory HTTP request for the fuzz targets.
 *
 * payd's handlers see a request only through http/request.h and the
 * per-request part of http/server.h. In payd those are implemented by
 * http/mhd.c and http/server.c on top of libmicrohttpd; the fuzz targets
 * link every payd object except those two and use this file instead, so
 * that a request can be made from a fuzz input, run through the real
 * router and handlers (api_dispatch), and its answer inspected, without a
 * socket or a server thread.
 *
 * What libmicrohttpd would have done to the request before payd sees it is
 * done here the same way: the request target is split at the first '?',
 * the query string into '&'-separated name=value arguments with '+' as a
 * space, and the path and the arguments are percent-decoded with
 * libmicrohttpd's own MHD_http_unescape(); header values lose their
 * surrounding blanks; names are compared without regard to case.
 *
 * A handler that parks its request (http_suspend) while a store write
 * waits for its group commit is resumed by the store's writer thread
 * (http_resume); fuzz_req_serve() waits for that and runs the handler's
 * on_resume() on the calling thread, as the server would on one of its
 * own. The same assertions as http/mhd.c hold: a request is answered at
 * most once, with at most FUZZ_EXTRA_HEADERS_MAX headers added.
 *
 * Ownership: fuzz_req_new() returns a request owned by the caller, freed
 * with fuzz_req_free() (which also frees the handler's state, as the server
 * does when a request ends). Every string given to it is copied.
 */
#ifndef PAYD_TESTS_FUZZ_REQUEST_H
#define PAYD_TESTS_FUZZ_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "http/request.h"
#include "http/server.h"

#define FUZZ_EXTRA_HEADERS_MAX 4 /* as http/mhd.h's HTTP_EXTRA_HEADERS_MAX */

/* A request for method and target ("/v1/payments?order_id=..."); target
 * may hold any bytes but NUL. */
http_req *fuzz_req_new(const char *method, const char *target);
void fuzz_req_free(http_req *r);

/* Adds a request header (value NULL: nothing is added). */
void fuzz_req_header(http_req *r, const char *name, const char *value);
/* Sets the body (len bytes, copied and NUL-terminated as the server does). */
void fuzz_req_body(http_req *r, const void *data, size_t len);
/* Whether the peer is on loopback (false unless set). */
void fuzz_req_loopback(http_req *r, bool loopback);

/* Runs dispatch(app, r), then every on_resume() of a parked request as it
 * is resumed, until the request is answered. Aborts when the handler
 * leaves it neither answered nor parked. */
void fuzz_req_serve(http_req *r, void (*dispatch)(void *app, http_req *r), void *app);

/* The answer: status (0 while none), body (NUL-terminated; "" while none),
 * content type, and a header added with http_add_header() (or NULL). */
int fuzz_req_status(const http_req *r);
const char *fuzz_req_answer(const http_req *r, size_t *len);
const char *fuzz_req_content_type(const http_req *r);
const char *fuzz_req_answer_header(const http_req *r, const char *name);

#endif
