/*
 * refunds.c - POST /v1/refunds, GET /v1/refunds/{id}, GET /v1/refunds.
 *
 * Accepting a refund: validate -> idempotency (in-flight mark, then the
 * stored answer) -> read the payment -> write the refund, its reservation
 * of the amount and the idempotency record in one transaction -> 202. A
 * refund worker asks the channel. What decides whether the amount is still
 * refundable is the write: it reserves the amount against what the payment
 * captured, under a constraint, so concurrent refunds never add up to more.
 */
#include <string.h>

#include "api/internal.h"
#include "util/util.h"
#include "worker/refunds.h"

static const char *const refund_fields[] = {"payment_id", "amount", "reason", NULL};

json_t *api_refund_json(const struct refund *r)
{
    char created[RFC3339_LEN + 1], updated[RFC3339_LEN + 1];
    clock_format_rfc3339(r->created_ms, created);
    clock_format_rfc3339(r->updated_ms, updated);
    json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:o, s:s, s:b, s:s, s:s}", "id",
                          r->id, "payment_id", r->payment_id, "order_id", r->order_id, "amount",
                          (json_int_t)r->amount_minor, "currency", r->currency, "channel",
                          r->channel, "status", payment_status_name(r->status), "reason",
                          r->has_reason ? json_string(r->reason) : json_null(), "refund_no",
                          r->refund_no, "automatic", r->automatic, "created_at", created,
                          "updated_at", updated);
    if (r->status == PAYMENT_SUCCEEDED)
        json_object_set_new(j, "channel_refund_id", json_string(r->channel_refund_id));
    if (r->status == PAYMENT_FAILED)
        json_object_set_new(j, "failure", json_pack("{s:s, s:s}", "code", r->failure_code,
                                                    "message", r->failure_message));
    return j;
}

static void not_refundable(http_req *r)
{
    http_error(r, 409, "conflict", "payment_not_refundable",
               "Only a succeeded payment can be refunded.", "payment_id");
}

static void refund_written(http_req *r)
{
    struct api_ctx *c = http_user(r);
    api_payment_let_go(c);
    const struct refund *rf = &c->op.in.refund_create.refund;
    switch (c->op.rc) {
    case STORE_OK:
        http_note_ids(r, NULL, rf->order_id, rf->payment_id);
        refunder_wake(c->app->refunder);
        http_respond_raw(r, 202, c->response_body, strlen(c->response_body));
        c->response_body = NULL; /* the server owns it now */
        break;
    case STORE_E_IDEM_EXISTS:
        api_replay(c, r, &c->op.out.idem);
        free(c->op.out.idem.body);
        break;
    case STORE_E_NOT_FOUND:
        api_not_found(r, "payment_id");
        break;
    case STORE_E_NOT_REFUNDABLE:
        not_refundable(r);
        break;
    case STORE_E_EXCEEDS: {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "amount exceeds what is left to refund of this payment (%lld)",
                 (long long)c->op.out.refundable);
        api_invalid(r, "amount_exceeds_refundable", msg, "amount");
        break;
    }
    default:
        api_store_failed(r, c->op.rc);
    }
}

/* Validates the body into rf; answers 400 and returns false on bad input. */
static bool parse_refund(http_req *r, json_t *body, struct refund *rf)
{
    const char *payment_id = api_string_field(r, body, "payment_id", ID_MAX - 1);
    if (!payment_id)
        return false;
    snprintf(rf->payment_id, sizeof(rf->payment_id), "%s", payment_id);
    if (!api_amount_field(r, body, &rf->amount_minor))
        return false;
    json_t *reason = json_object_get(body, "reason");
    if (reason && !json_is_null(reason)) {
        if (!json_is_string(reason) || json_string_length(reason) > REFUND_REASON_MAX ||
            strlen(json_string_value(reason)) != json_string_length(reason)) {
            api_invalid(r, "parameter_invalid", "reason must be a string of at most 256 bytes",
                        "reason");
            return false;
        }
        rf->has_reason = true;
        snprintf(rf->reason, sizeof(rf->reason), "%s", json_string_value(reason));
    }
    return true;
}

void api_refund_create(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    struct app *app = c->app;
    if (!api_read_idem_key(c, r))
        return;
    json_t *body = api_parse_object(r, refund_fields, "amount", "amount_invalid");
    if (!body)
        return;
    struct refund *rf = &c->op.in.refund_create.refund;
    if (!parse_refund(r, body, rf))
        goto out_body;
    http_note_ids(r, NULL, NULL, rf->payment_id);
    if (!api_idem_enter(c, r, "/v1/refunds", body))
        goto out_body;

    struct payment p;
    int rc = store_payment_get(app->store, c->merchant.id, rf->payment_id, &p);
    if (rc == STORE_E_NOT_FOUND) {
        /* A retry after the payment's record was purged cannot happen: the
         * payment is never deleted. But its key may answer a retry. */
        api_not_found(r, "payment_id");
        goto out_let_go;
    }
    if (rc != STORE_OK) {
        api_store_failed(r, rc);
        goto out_let_go;
    }
    if (p.status != PAYMENT_SUCCEEDED) {
        /* The same request again gets its first answer, whatever happened. */
        struct idem_record rec;
        if (c->has_idem_key &&
            store_idem_get(app->store, c->merchant.id, c->idem_key, &rec) == STORE_OK) {
            api_replay(c, r, &rec);
            free(rec.body);
        } else {
            not_refundable(r);
        }
        goto out_let_go;
    }

    rf->created_ms = rf->updated_ms = clock_wall_ms();
    id_new("re_", rf->created_ms, rf->id);
    serial_no_new(rf->created_ms, rf->refund_no);
    memcpy(rf->order_id, p.order_id, sizeof(rf->order_id));
    memcpy(rf->merchant_id, c->merchant.id, sizeof(rf->merchant_id));
    memcpy(rf->currency, p.currency, sizeof(rf->currency));
    memcpy(rf->channel, p.channel, sizeof(rf->channel));
    memcpy(rf->payment_serial_no, p.serial_no, sizeof(rf->payment_serial_no));
    rf->status = PAYMENT_PROCESSING;
    json_t *shown = api_refund_json(rf);
    c->response_body = json_dumps(shown, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(shown);

    c->op.kind = STORE_OP_REFUND_CREATE;
    if (c->has_idem_key) {
        c->op.in.refund_create.idem_key = c->idem_key;
        c->op.in.refund_create.idem_fingerprint = c->fingerprint;
        c->op.in.refund_create.idem_status = 202;
        c->op.in.refund_create.idem_body = c->response_body;
    }
    json_decref(body);
    api_write(c, r, refund_written);
    return;

out_let_go:
    api_payment_let_go(c);
out_body:
    json_decref(body);
}

void api_refund_get(struct api_ctx *c, http_req *r, const char *id)
{
    struct refund rf;
    int rc = store_refund_get(c->app->store, c->merchant.id, id, &rf);
    if (rc == STORE_OK) {
        http_note_ids(r, NULL, rf.order_id, rf.payment_id);
        http_respond_json(r, 200, api_refund_json(&rf));
    } else if (rc == STORE_E_NOT_FOUND) {
        api_not_found(r, NULL);
    } else {
        api_store_failed(r, rc);
    }
}

static int append_refund(void *arg, const struct refund *rf)
{
    json_array_append_new(arg, api_refund_json(rf));
    return 0;
}

void api_refund_list(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    const char *payment_id = http_query(r, "payment_id");
    if (!payment_id || !*payment_id) {
        api_invalid(r, "parameter_missing", "payment_id is required", "payment_id");
        return;
    }
    struct payment p;
    int rc = store_payment_get(c->app->store, c->merchant.id, payment_id, &p);
    if (rc == STORE_E_NOT_FOUND) {
        api_not_found(r, "payment_id");
        return;
    }
    json_t *data = json_array();
    if (rc == STORE_OK)
        rc = store_refund_list(c->app->store, c->merchant.id, payment_id, append_refund, data);
    if (rc != STORE_OK) {
        json_decref(data);
        api_store_failed(r, rc);
        return;
    }
    http_respond_json(r, 200, json_pack("{s:o}", "data", data));
}
