/*
 * ops.c - the catalogue, the balance and the operations endpoints:
 * GET /v1/channels, GET /v1/balance, /healthz, /readyz, /metrics.
 */
#include <string.h>

#include "api/internal.h"
#include "util/util.h"

#define BALANCE_CURRENCIES_MAX 64

void api_channel_list(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    json_t *data = json_array();
    for (int i = 0; i < channel_set_count(c->app->channels); i++) {
        channel *ch = channel_set_at(c->app->channels, i);
        json_t *methods = json_array();
        for (const char *const *m = ch->methods; *m; m++)
            json_array_append_new(methods, json_string(*m));
        json_array_append_new(data, json_pack("{s:s, s:o, s:s}", "id", ch->name, "methods",
                                              methods, "status", "up"));
    }
    http_respond_json(r, 200, json_pack("{s:o}", "data", data));
}

void api_balance(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    struct store_amount sums[BALANCE_CURRENCIES_MAX];
    int n = store_balance(c->app->store, c->merchant.id, sums, BALANCE_CURRENCIES_MAX);
    if (n < 0) {
        api_store_failed(r, n);
        return;
    }
    json_t *data = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(data, json_pack("{s:s, s:I}", "currency", sums[i].currency,
                                              "amount", (json_int_t)sums[i].amount_minor));
    http_respond_json(r, 200, json_pack("{s:o}", "data", data));
}

void api_healthz(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)c;
    (void)unused;
    http_respond_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

void api_readyz(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    if (atomic_load(&c->app->draining)) {
        http_respond_json(r, 503, json_pack("{s:s}", "status", "draining"));
        return;
    }
    if (store_ping(c->app->store) != STORE_OK) {
        http_respond_json(r, 503, json_pack("{s:s}", "status", "store_unavailable"));
        return;
    }
    http_respond_json(r, 200, json_pack("{s:s}", "status", "ready"));
}

void api_metrics(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    http_respond_text(r, 200, "text/plain; version=0.0.4; charset=utf-8",
                      metrics_render(c->app->metrics, PAYD_VERSION));
}
