/*
 * ops.c - the catalogue, the balance and the operations endpoints:
 * GET /v1/channels, GET /v1/balance, /healthz, /readyz, /metrics, and the
 * guards' admin view GET|PUT /admin/guards.
 */
#include <string.h>

#include "api/internal.h"
#include "util/util.h"

#define BALANCE_CURRENCIES_MAX 64

/* The catalogue is the same for every merchant and changes only when a
 * breaker does, so it is rendered once per change (cache/catalogue.h). */
void api_channel_list(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    struct app *app = c->app;
    int64_t now = clock_mono_ns();
    /* Let a breaker whose open_s has passed move on (which drops the cached
     * body) before the cache is read. */
    for (int i = 0; i < channel_set_count(app->channels); i++)
        guards_channel_status(app->guards, i, now);
    size_t len;
    uint64_t gen;
    char *body = catalogue_cache_get(app->catalogue, &len, &gen);
    if (!body) {
        json_t *data = json_array();
        for (int i = 0; i < channel_set_count(app->channels); i++) {
            channel *ch = channel_set_at(app->channels, i);
            json_t *methods = json_array();
            for (const char *const *m = ch->methods; *m; m++)
                json_array_append_new(methods, json_string(*m));
            json_array_append_new(data, json_pack("{s:s, s:o, s:s}", "id", ch->name, "methods",
                                                  methods, "status",
                                                  guards_channel_status(app->guards, i, now)));
        }
        json_t *doc = json_pack("{s:o}", "data", data);
        body = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(doc);
        len = strlen(body);
        catalogue_cache_put(app->catalogue, gen, body, len);
    }
    http_respond_raw(r, 200, body, len);
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
    char *text = metrics_render(c->app->metrics, PAYD_VERSION);
    http_respond_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", text);
}

void api_guards_get(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    http_respond_json(r, 200, guards_view(c->app->guards, clock_mono_ns()));
}

void api_guards_put(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    size_t len;
    const char *body = http_body(r, &len);
    json_error_t jerr;
    json_t *change = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!change) {
        api_invalid(r, "body_invalid", "the body is not a JSON object", NULL);
        return;
    }
    char err[256];
    int rc = guards_apply(c->app->guards, change, err, sizeof(err));
    json_decref(change);
    if (rc == -1) {
        api_invalid(r, "parameter_invalid", err, NULL);
        return;
    }
    if (rc == -2) {
        http_error(r, 500, "api_error", "not_persisted", err, NULL);
        return;
    }
    http_respond_json(r, 200, guards_view(c->app->guards, clock_mono_ns()));
}
