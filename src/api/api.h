/*
 * api.h - the HTTP API: the route table and its handlers.
 *
 * The route table (routes.c) is the one list of endpoints; the router, the
 * authentication step and the metrics labels are all read from it. Handlers
 * live one file per resource and know no SQL and no libmicrohttpd.
 */
#ifndef PAYD_API_API_H
#define PAYD_API_API_H

#include <jansson.h>

#include "app.h"
#include "http/server.h"

/* The server's dispatch callback; app is a struct app. */
void api_dispatch(void *app, http_req *r);

/* Route names and methods, for the metrics registry. */
extern const char *const api_route_names[];
extern const char *const api_route_methods[];
extern const int api_route_count;

/* Records as the API shows them (new references); merchant webhooks send
 * the same objects. */
json_t *api_order_json(const struct order *o);
json_t *api_payment_json(const struct payment *p);
json_t *api_refund_json(const struct refund *r);

#endif
