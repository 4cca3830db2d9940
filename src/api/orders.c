/*
 * orders.c - POST /v1/orders and GET /v1/orders/{id}.
 *
 * The merchant's order number is the natural idempotency key: the same
 * number with the same content answers the existing order (200), with other
 * content 409 order_number_reused. A read answers repeats without a write;
 * the store's unique constraint settles the race between two new ones.
 */
#include <string.h>

#include "api/internal.h"
#include "core/money.h"
#include "util/util.h"

static const char *const order_fields[] = {"merchant_order_no", "amount", "currency",
                                           "description", NULL};

static bool order_no_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > ORDER_NO_MAX)
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            return false;
    return true;
}

/* Validates the body into o; answers 400 and returns false on bad input. */
static bool parse_order(http_req *r, json_t *body, struct order *o)
{
    json_t *no = json_object_get(body, "merchant_order_no");
    if (!no || json_is_null(no)) {
        api_invalid(r, "parameter_missing", "merchant_order_no is required",
                    "merchant_order_no");
        return false;
    }
    if (!json_is_string(no) || strlen(json_string_value(no)) != json_string_length(no) ||
        !order_no_valid(json_string_value(no))) {
        api_invalid(r, "parameter_invalid",
                    "merchant_order_no must be 1 to 64 printable ASCII characters",
                    "merchant_order_no");
        return false;
    }
    snprintf(o->merchant_order_no, sizeof(o->merchant_order_no), "%s", json_string_value(no));

    if (!api_amount_field(r, body, &o->amount_minor))
        return false;

    json_t *currency = json_object_get(body, "currency");
    if (!currency || json_is_null(currency)) {
        api_invalid(r, "parameter_missing", "currency is required", "currency");
        return false;
    }
    if (!json_is_string(currency) ||
        strlen(json_string_value(currency)) != json_string_length(currency) ||
        !money_currency_find(json_string_value(currency))) {
        api_invalid(r, "currency_invalid",
                    "currency must be an ISO 4217 currency code in upper case, such as CNY",
                    "currency");
        return false;
    }
    snprintf(o->currency, sizeof(o->currency), "%s", json_string_value(currency));

    json_t *desc = json_object_get(body, "description");
    if (desc && !json_is_null(desc)) {
        if (!json_is_string(desc) || json_string_length(desc) > DESCRIPTION_MAX ||
            strlen(json_string_value(desc)) != json_string_length(desc)) {
            api_invalid(r, "parameter_invalid",
                        "description must be a string of at most 1024 bytes", "description");
            return false;
        }
        o->has_description = true;
        snprintf(o->description, sizeof(o->description), "%s", json_string_value(desc));
    }
    return true;
}

static void answer_existing(struct api_ctx *c, http_req *r, const struct order *sent,
                            const struct order *existing)
{
    http_note_ids(r, NULL, existing->id, NULL);
    if (order_same_content(sent, existing)) {
        metrics_inc(c->app->metrics, M_IDEM_REPLAYS, 0, 0);
        http_respond_json(r, 200, api_order_json(existing));
        return;
    }
    metrics_inc(c->app->metrics, M_IDEM_CONFLICTS, 0, 0);
    http_error(r, 409, "conflict", "order_number_reused",
               "this merchant_order_no was used for an order with other content",
               "merchant_order_no");
}

static void order_created(http_req *r)
{
    struct api_ctx *c = http_user(r);
    const struct order *sent = &c->op.in.order_create;
    switch (c->op.rc) {
    case STORE_OK:
        api_remember_order(c->app, sent);
        http_note_ids(r, NULL, sent->id, NULL);
        http_respond_json(r, 201, api_order_json(sent));
        break;
    case STORE_E_EXISTS:
    case STORE_E_REUSED:
        answer_existing(c, r, sent, &c->op.out.order);
        break;
    default:
        api_store_failed(r, c->op.rc);
    }
}

void api_order_create(struct api_ctx *c, http_req *r, const char *id)
{
    (void)id;
    json_t *body = api_parse_object(r, order_fields, "amount", "amount_invalid");
    if (!body)
        return;
    struct order *o = &c->op.in.order_create;
    bool ok = parse_order(r, body, o);
    json_decref(body);
    if (!ok)
        return;

    /* No read first: a repeated order number is rare, and the write finds
     * it under the unique constraint and answers from the existing order. */
    o->created_ms = clock_wall_ms();
    id_new("ord_", o->created_ms, o->id);
    snprintf(o->merchant_id, sizeof(o->merchant_id), "%s", c->merchant.id);
    o->status = ORDER_PENDING_PAYMENT;
    c->op.kind = STORE_OP_ORDER_CREATE;
    api_write(c, r, order_created);
}

void api_order_get(struct api_ctx *c, http_req *r, const char *id)
{
    http_note_ids(r, NULL, id, NULL);
    struct order o;
    int rc = store_order_get(c->app->store, c->merchant.id, id, &o);
    if (rc == STORE_OK)
        http_respond_json(r, 200, api_order_json(&o));
    else if (rc == STORE_E_NOT_FOUND)
        api_not_found(r, NULL);
    else
        api_store_failed(r, rc);
}
