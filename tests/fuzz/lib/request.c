/*
 * request.c - the in-memory request of the fuzz targets; see request.h.
 *
 * Implements http/request.h and the per-request functions of
 * http/server.h (http_set_route, http_request_id, http_note_ids) for
 * requests made by fuzz_req_new(); the error object comes from payd's own
 * http/error.c.
 */
#include "lib/request.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/util.h"

#define FUZZ_FIELDS_MAX 32

struct field {
    char *name, *value; /* value may be NULL (an argument without '=') */
};

struct http_req {
    char method[16];
    char *path;
    struct field headers[FUZZ_FIELDS_MAX];
    int header_count;
    struct field args[FUZZ_FIELDS_MAX];
    int arg_count;
    char *body;
    size_t body_len;
    bool loopback;
    int64_t started_us;
    /* payd's part (http/server.h) */
    int route;
    char merchant_id[HTTP_LOG_ID_MAX + 1], order_id[HTTP_LOG_ID_MAX + 1],
        payment_id[HTTP_LOG_ID_MAX + 1];
    /* the answer */
    bool answered;
    int status;
    const char *content_type;
    char *resp_body;
    size_t resp_len;
    struct field extra[FUZZ_EXTRA_HEADERS_MAX];
    int extra_count;
    /* parking: parked and resumed are guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool parked, resumed;
    void (*on_resume)(http_req *r);
    /* the handler's state */
    void *user;
    void (*user_free)(void *user);
};

/* Percent-decodes s in place as libmicrohttpd does (with '+' as a space
 * first for arguments); the result ends at the first decoded NUL, since
 * libmicrohttpd hands out C strings. */
static void unescape(char *s, bool plus)
{
    if (plus)
        for (char *p = s; *p; p++)
            if (*p == '+')
                *p = ' ';
    size_t n = MHD_http_unescape(s);
    s[n] = '\0';
}

static void add_arg(http_req *r, const char *text, size_t len)
{
    if (len == 0 || r->arg_count == FUZZ_FIELDS_MAX)
        return;
    char *pair = xstrndup(text, len);
    char *eq = strchr(pair, '=');
    struct field *f = &r->args[r->arg_count++];
    if (eq) {
        *eq = '\0';
        f->value = xstrdup(eq + 1);
        unescape(f->value, true);
    }
    unescape(pair, true);
    f->name = pair;
}

http_req *fuzz_req_new(const char *method, const char *target)
{
    http_req *r = xcalloc(1, sizeof(*r));
    snprintf(r->method, sizeof(r->method), "%s", method);
    size_t path_len = strcspn(target, "?");
    r->path = xstrndup(target, path_len);
    unescape(r->path, false);
    if (target[path_len] == '?') {
        const char *q = target + path_len + 1;
        while (*q) {
            size_t n = strcspn(q, "&");
            add_arg(r, q, n);
            q += n;
            if (*q == '&')
                q++;
        }
    }
    r->started_us = clock_mono_us();
    r->route = -1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
    return r;
}

static void fields_free(struct field *f, int n)
{
    for (int i = 0; i < n; i++) {
        free(f[i].name);
        free(f[i].value);
    }
}

void fuzz_req_free(http_req *r)
{
    if (!r)
        return;
    if (r->user_free)
        r->user_free(r->user);
    fields_free(r->headers, r->header_count);
    fields_free(r->args, r->arg_count);
    fields_free(r->extra, r->extra_count);
    free(r->path);
    free(r->body);
    free(r->resp_body);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void fuzz_req_header(http_req *r, const char *name, const char *value)
{
    if (!value || r->header_count == FUZZ_FIELDS_MAX)
        return;
    value += strspn(value, " \t");
    size_t n = strlen(value);
    while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t'))
        n--;
    r->headers[r->header_count].name = xstrdup(name);
    r->headers[r->header_count].value = xstrndup(value, n);
    r->header_count++;
}

void fuzz_req_body(http_req *r, const void *data, size_t len)
{
    free(r->body);
    r->body = NULL;
    r->body_len = len;
    if (len == 0)
        return; /* as the server: no body is NULL, read as "" */
    r->body = xmalloc(len + 1);
    memcpy(r->body, data, len);
    r->body[len] = '\0';
}

void fuzz_req_loopback(http_req *r, bool loopback)
{
    r->loopback = loopback;
}

void fuzz_req_serve(http_req *r, void (*dispatch)(void *app, http_req *r), void *app)
{
    dispatch(app, r);
    for (;;) {
        pthread_mutex_lock(&r->mu);
        bool parked = r->parked;
        while (r->parked && !r->resumed)
            pthread_cond_wait(&r->cond, &r->mu);
        r->parked = false;
        r->resumed = false;
        pthread_mutex_unlock(&r->mu);
        if (!parked)
            break;
        r->on_resume(r);
    }
    PAYD_ASSERT(r->answered);
}

int fuzz_req_status(const http_req *r)
{
    return r->answered ? r->status : 0;
}

const char *fuzz_req_answer(const http_req *r, size_t *len)
{
    if (len)
        *len = r->answered ? r->resp_len : 0;
    return r->answered && r->resp_body ? r->resp_body : "";
}

const char *fuzz_req_content_type(const http_req *r)
{
    return r->answered ? r->content_type : NULL;
}

const char *fuzz_req_answer_header(const http_req *r, const char *name)
{
    for (int i = 0; i < r->extra_count; i++)
        if (strcasecmp(r->extra[i].name, name) == 0)
            return r->extra[i].value;
    return NULL;
}

/* ---- http/request.h ---- */

const char *http_method(const http_req *r)
{
    return r->method;
}

const char *http_path(const http_req *r)
{
    return r->path;
}

static const char *lookup(const struct field *f, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcasecmp(f[i].name, name) == 0)
            return f[i].value;
    return NULL;
}

const char *http_header(http_req *r, const char *name)
{
    return lookup(r->headers, r->header_count, name);
}

const char *http_query(http_req *r, const char *name)
{
    return lookup(r->args, r->arg_count, name);
}

const char *http_body(const http_req *r, size_t *len)
{
    if (len)
        *len = r->body_len;
    return r->body ? r->body : "";
}

bool http_peer_loopback(http_req *r)
{
    return r->loopback;
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

void http_add_header(http_req *r, const char *name, const char *value)
{
    PAYD_ASSERT(r->extra_count < FUZZ_EXTRA_HEADERS_MAX);
    r->extra[r->extra_count].name = xstrdup(name);
    r->extra[r->extra_count].value = xstrdup(value);
    r->extra_count++;
}

static void set_answer(http_req *r, int status, const char *content_type, char *body,
                       size_t len)
{
    PAYD_ASSERT(!r->answered);
    r->answered = true;
    r->status = status;
    r->content_type = content_type;
    /* The body is the server's (heap); a NUL after it lets checks read it
     * as a string. */
    r->resp_body = xrealloc(body, len + 1);
    r->resp_body[len] = '\0';
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
    pthread_mutex_lock(&r->mu);
    PAYD_ASSERT(!r->parked);
    r->on_resume = on_resume;
    r->parked = true;
    r->resumed = false;
    pthread_mutex_unlock(&r->mu);
}

void http_resume(http_req *r)
{
    pthread_mutex_lock(&r->mu);
    r->resumed = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
}

/* ---- the per-request part of http/server.h ---- */

void http_set_route(http_req *r, int route)
{
    r->route = route;
}

const char *http_request_id(const http_req *r)
{
    (void)r;
    return "req_fuzz";
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
