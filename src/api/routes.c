/*
 * routes.c - the route table and the router; see api.h.
 *
 * A pattern is a path whose "{id}" segment captures one path segment. The
 * router finds the route whose pattern and method match; a path that matches
 * with another method is answered 405.
 *
 * Before a handler runs, in this order: the global rate limit (every /v1/
 * request), the caller's credentials (a merchant's API key for /v1/, the
 * admin key or a loopback peer for /admin/), the merchant's rate limit, and
 * for the routes that write (creations) a place under the in-flight limit.
 * A refusal writes nothing.
 */
#include <openssl/crypto.h>
#include <string.h>

#include "api/internal.h"
#include "core/ids.h"
#include "util/util.h"

/* Who may call a route, and whether it writes (takes an in-flight place):
 * MERCHANT_START starts new work (an order) and yields to MERCHANT_WRITE
 * (the payment of an existing order) under overload. */
enum access { OPEN, MERCHANT, MERCHANT_START, MERCHANT_WRITE, ADMIN };

struct route {
    const char *method;
    const char *pattern;
    enum access access;
    api_handler *handler;
};

#define ROUTES(X)                                                                          \
    X("POST", "/v1/orders", MERCHANT_START, api_order_create)                              \
    X("GET", "/v1/orders/{id}", MERCHANT, api_order_get)                                   \
    X("POST", "/v1/payments", MERCHANT_WRITE, api_payment_create)                          \
    X("GET", "/v1/payments", MERCHANT, api_payment_list)                                   \
    X("GET", "/v1/payments/{id}", MERCHANT, api_payment_get)                               \
    X("POST", "/v1/refunds", MERCHANT_WRITE, api_refund_create)                            \
    X("GET", "/v1/refunds", MERCHANT, api_refund_list)                                     \
    X("GET", "/v1/refunds/{id}", MERCHANT, api_refund_get)                                 \
    X("PUT", "/v1/webhook", MERCHANT, api_webhook_put)                                     \
    X("GET", "/v1/webhook", MERCHANT, api_webhook_get)                                     \
    X("DELETE", "/v1/webhook", MERCHANT, api_webhook_delete)                               \
    X("POST", "/v1/notify/{id}", OPEN, api_notify)                                         \
    X("GET", "/v1/channels", MERCHANT, api_channel_list)                                   \
    X("GET", "/v1/balance", MERCHANT, api_balance)                                         \
    X("GET", "/admin/guards", ADMIN, api_guards_get)                                       \
    X("PUT", "/admin/guards", ADMIN, api_guards_put)                                       \
    X("GET", "/healthz", OPEN, api_healthz)                                                \
    X("GET", "/readyz", OPEN, api_readyz)                                                  \
    X("GET", "/metrics", OPEN, api_metrics)                                                \
    X("GET", "/dashboard", OPEN, api_dashboard_asset)                                      \
    X("GET", "/dashboard/data", OPEN, api_dashboard_data)                                  \
    X("GET", "/dashboard/{id}", OPEN, api_dashboard_asset)

#define AS_ROUTE(m, p, a, h) {m, p, a, h},
#define AS_NAME(m, p, a, h) p,
#define AS_METHOD(m, p, a, h) m,

static const struct route routes[] = {ROUTES(AS_ROUTE)};
const char *const api_route_names[] = {ROUTES(AS_NAME)};
const char *const api_route_methods[] = {ROUTES(AS_METHOD)};
const int api_route_count = (int)ARRAY_LEN(routes);

#define ID_SEGMENT_MAX 128

/* Matches path against pattern; on success copies the {id} segment (if the
 * pattern has one) into id. */
static bool match(const char *pattern, const char *path, char id[ID_SEGMENT_MAX])
{
    id[0] = '\0';
    while (*pattern && *path) {
        if (strncmp(pattern, "{id}", 4) == 0) {
            size_t n = strcspn(path, "/");
            if (n == 0 || n >= ID_SEGMENT_MAX)
                return false;
            memcpy(id, path, n);
            id[n] = '\0';
            path += n;
            pattern += 4;
            continue;
        }
        if (*pattern != *path)
            return false;
        pattern++;
        path++;
    }
    return *pattern == '\0' && *path == '\0';
}

static bool authenticate(struct api_ctx *c, http_req *r)
{
    const char *auth = http_header(r, "Authorization");
    if (!auth || strncmp(auth, "Bearer ", 7) != 0 || auth[7] == '\0') {
        http_error(r, 401, "authentication_error", "api_key_missing",
                   "Send your API key as: Authorization: Bearer <key>", NULL);
        return false;
    }
    char hash[65];
    api_key_hash(auth + 7, hash);
    struct key_epoch epoch;
    if (key_cache_get(c->app->keys, hash, &c->merchant, &epoch))
        return true;
    int rc = store_merchant_by_key_hash(c->app->store, hash, &c->merchant);
    if (rc == STORE_OK)
        key_cache_put(c->app->keys, hash, &c->merchant, &epoch);
    if (rc == STORE_E_NOT_FOUND) {
        http_error(r, 401, "authentication_error", "api_key_invalid",
                   "The API key is not valid.", NULL);
        return false;
    }
    if (rc != STORE_OK) {
        api_store_failed(r, rc);
        return false;
    }
    return true;
}

/* The admin key (constant-time compare) or, when none is configured, a
 * loopback peer. */
static bool authenticate_admin(struct api_ctx *c, http_req *r)
{
    const char *want = c->app->conf->admin_key;
    const char *auth = http_header(r, "Authorization");
    if (want[0] != '\0') {
        size_t n = strlen(want);
        if (auth && strncmp(auth, "Bearer ", 7) == 0 && strlen(auth + 7) == n &&
            CRYPTO_memcmp(auth + 7, want, n) == 0)
            return true;
        http_error(r, 401, "authentication_error", "admin_key_invalid",
                   "Send the admin key as: Authorization: Bearer <key>", NULL);
        return false;
    }
    if (http_peer_loopback(r))
        return true;
    http_error(r, 403, "authentication_error", "admin_forbidden",
               "The admin API answers loopback only unless [server] admin_key is set.", NULL);
    return false;
}

/* 429 with Retry-After. */
static void rate_limited(http_req *r, int64_t retry_after_s, bool global)
{
    char secs[24];
    snprintf(secs, sizeof(secs), "%lld", (long long)retry_after_s);
    http_add_header(r, "Retry-After", secs);
    http_error(r, 429, "rate_limited", "rate_limited",
               api_message(r, global ? API_MSG_RATE_LIMITED_GLOBAL : API_MSG_RATE_LIMITED),
               NULL);
}

/* The checks before the handler; false when one refused and answered. */
static bool admit(struct api_ctx *c, http_req *r, enum access access, bool v1)
{
    guards *g = c->app->guards;
    int64_t retry;
    if (v1 && !guards_take_global(g, clock_mono_ns(), &retry)) {
        rate_limited(r, retry, true);
        return false;
    }
    if (access == ADMIN)
        return authenticate_admin(c, r);
    if (access == OPEN)
        return true;
    if (!authenticate(c, r))
        return false;
    http_note_ids(r, c->merchant.id, NULL, NULL);
    if (!guards_take_merchant(g, c->merchant.id, clock_mono_ns(), &retry)) {
        rate_limited(r, retry, false);
        return false;
    }
    if (access == MERCHANT_WRITE || access == MERCHANT_START) {
        if (!adaptive_acquire(guards_inflight(g), access == MERCHANT_START)) {
            api_degraded(r, 1, API_MSG_OVERLOADED);
            return false;
        }
        c->inflight_since_ns = clock_mono_ns();
    }
    return true;
}

static void ctx_free(void *p)
{
    struct api_ctx *c = p;
    if (c->inflight_since_ns) {
        int64_t now = clock_mono_ns();
        adaptive_release(guards_inflight(c->app->guards), now - c->inflight_since_ns, now);
    }
    api_payment_let_go(c);
    free(c->response_body);
    free(c->notice);
    free(c);
}

void api_dispatch(void *app, http_req *r)
{
    const char *method = http_method(r);
    const char *path = http_path(r);
    char id[ID_SEGMENT_MAX];
    bool path_known = false;
    for (int i = 0; i < api_route_count; i++) {
        if (!match(routes[i].pattern, path, id))
            continue;
        path_known = true;
        if (strcmp(routes[i].method, method) != 0)
            continue;
        http_set_route(r, i);
        bool v1 = strncmp(path, "/v1/", 4) == 0;
        if (v1 && !(((struct app *)app)->conf->roles & ROLE_API)) {
            http_error(r, 404, "not_found", "route_not_found",
                       "this instance runs the worker role only; send API requests to an api"
                       " instance",
                       NULL);
            return;
        }
        struct api_ctx *c = xcalloc(1, sizeof(*c));
        c->app = app;
        http_set_user(r, c, ctx_free);
        if (!admit(c, r, routes[i].access, v1))
            return;
        routes[i].handler(c, r, id);
        return;
    }
    if (path_known)
        http_error(r, 405, "invalid_request_error", "method_not_allowed",
                   "this path does not take that method", NULL);
    else
        http_error(r, 404, "not_found", "route_not_found", "no such path", NULL);
}
