/*
 * webhooks.c - a merchant's webhook endpoint: PUT, GET and DELETE
 * /v1/webhook. The events themselves are sent by worker/webhooks.c.
 *
 * PUT sets the URL and makes a new signing secret, shown in its answer and
 * never again (a PUT of the same URL is how a merchant rotates it). Unless
 * [webhooks] allow_private is on, a URL that names a loopback, private,
 * link-local or reserved address (or localhost) is refused here; a name
 * that resolves to one is refused when the sender connects.
 */
#include <stdio.h>
#include <string.h>

#include "api/internal.h"
#include "util/netaddr.h"
#include "util/util.h"

static const char *const webhook_fields[] = {"url", NULL};

/* An http(s) URL of printable ASCII that libcurl, which will send to it,
 * can parse; *kind is what its host is. */
static bool url_valid(const char *u, size_t n, enum addr_kind *kind)
{
    if (n > WEBHOOK_URL_MAX || strlen(u) != n)
        return false;
    size_t scheme = strncmp(u, "https://", 8) == 0 ? 8 : strncmp(u, "http://", 7) == 0 ? 7 : 0;
    if (scheme == 0 || n == scheme)
        return false;
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return false;
    return addr_kind_of_url(u, kind) == 0;
}

static json_t *webhook_json(const struct webhook *w, bool with_secret)
{
    char updated[RFC3339_LEN + 1];
    clock_format_rfc3339(w->updated_ms, updated);
    json_t *j = json_pack("{s:s, s:s}", "url", w->url, "updated_at", updated);
    if (with_secret)
        json_object_set_new(j, "secret", json_string(w->secret));
    return j;
}

static void written(http_req *r)
{
    struct api_ctx *c = http_user(r);
    const struct webhook *w = &c->op.in.webhook_set;
    if (c->op.rc == STORE_OK && w->url[0])
        http_respond_json(r, 200, webhook_json(w, true));
    else if (c->op.rc == STORE_OK)
        http_respond_json(r, 200, json_pack("{s:b}", "deleted", 1));
    else if (c->op.rc == STORE_E_NOT_FOUND)
        api_not_found(r, NULL);
    else
        api_store_failed(r, c->op.rc);
}

void api_webhook_put(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    json_t *body = api_parse_object(r, webhook_fields, NULL, NULL);
    if (!body)
        return;
    json_t *url = json_object_get(body, "url");
    enum addr_kind kind = ADDR_INVALID;
    if (!url || json_is_null(url)) {
        api_invalid(r, "parameter_missing", "url is required", "url");
    } else if (!json_is_string(url) ||
               !url_valid(json_string_value(url), json_string_length(url), &kind)) {
        api_invalid(r, "url_invalid",
                    "url must be an http:// or https:// URL of at most 2048 characters, "
                    "without spaces",
                    "url");
    } else if (!c->app->conf->webhook_allow_private && kind != ADDR_PUBLIC) {
        char why[200];
        snprintf(why, sizeof(why),
                 "url names a %s address; webhooks go to public addresses only "
                 "([webhooks] allow_private = on allows others)",
                 addr_kind_name(kind));
        api_invalid(r, "url_not_allowed", why, "url");
    } else {
        struct webhook *w = &c->op.in.webhook_set;
        memcpy(w->merchant_id, c->merchant.id, sizeof(w->merchant_id));
        snprintf(w->url, sizeof(w->url), "%s", json_string_value(url));
        uint8_t key[16];
        rand_bytes(key, sizeof(key));
        memcpy(w->secret, "whsec_", 6);
        hex_encode(key, sizeof(key), w->secret + 6);
        w->updated_ms = clock_wall_ms();
        c->op.kind = STORE_OP_WEBHOOK_SET;
        api_write(c, r, written);
    }
    json_decref(body);
}

void api_webhook_get(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    struct webhook w;
    int rc = store_webhook_get(c->app->store, c->merchant.id, &w);
    if (rc == STORE_OK)
        http_respond_json(r, 200, webhook_json(&w, false));
    else if (rc == STORE_E_NOT_FOUND)
        api_not_found(r, NULL);
    else
        api_store_failed(r, rc);
}

void api_webhook_delete(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    memcpy(c->op.in.webhook_set.merchant_id, c->merchant.id, ID_MAX);
    c->op.in.webhook_set.url[0] = '\0';
    c->op.kind = STORE_OP_WEBHOOK_SET;
    api_write(c, r, written);
}
