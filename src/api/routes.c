/*
 * routes.c - the route table and the router; see api.h.
 *
 * A pattern is a path whose "{id}" segment captures one path segment. The
 * router finds the route whose pattern and method match; a path that matches
 * with another method is answered 405. Routes marked auth need a merchant's
 * API key, checked here, before the handler runs.
 */
#include <string.h>

#include "api/internal.h"
#include "core/ids.h"
#include "util/util.h"

struct route {
    const char *method;
    const char *pattern;
    bool auth;
    api_handler *handler;
};

#define ROUTES(X)                                                                          \
    X("POST", "/v1/orders", true, api_order_create)                                        \
    X("GET", "/v1/orders/{id}", true, api_order_get)                                       \
    X("POST", "/v1/payments", true, api_payment_create)                                    \
    X("GET", "/v1/payments", true, api_payment_list)                                       \
    X("GET", "/v1/payments/{id}", true, api_payment_get)                                   \
    X("GET", "/v1/channels", true, api_channel_list)                                       \
    X("GET", "/v1/balance", true, api_balance)                                             \
    X("GET", "/healthz", false, api_healthz)                                               \
    X("GET", "/readyz", false, api_readyz)                                                 \
    X("GET", "/metrics", false, api_metrics)

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

static void ctx_free(void *p)
{
    struct api_ctx *c = p;
    api_payment_let_go(c);
    free(c->response_body);
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
        struct api_ctx *c = xcalloc(1, sizeof(*c));
        c->app = app;
        http_set_user(r, c, ctx_free);
        if (routes[i].auth && !authenticate(c, r))
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
