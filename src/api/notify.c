/*
 * notify.c - POST /v1/notify/{channel}: a remote channel's asynchronous
 * notification that a charge or a refund succeeded (docs/paysim.md,
 * "Notifications").
 *
 * The notification is believed only when it carries the channel's
 * signature over its timestamp and raw body, with a timestamp within 300 s
 * of our clock; anything else is answered 401 and changes nothing. A valid
 * one is applied in one transaction that also records its signature, so the
 * same signed message sent again (a replay) changes nothing and is refused;
 * the channel's own resends carry a new timestamp, hence a new signature,
 * and are answered success again. The transition is the worker's: from
 * processing to succeeded, conditional, so whichever of the worker and the
 * notification comes second finds the payment final and does nothing.
 */
#include <string.h>

#include "api/internal.h"
#include "obs/log.h"
#include "util/sign.h"
#include "util/util.h"
#include "worker/refunds.h"
#include "worker/webhooks.h"

static const struct conf_channel *http_channel_conf(const struct conf *conf, const char *name)
{
    for (int i = 0; i < conf->channel_count; i++)
        if (conf->channels[i].type == CHANNEL_TYPE_HTTP &&
            strcmp(conf->channels[i].name, name) == 0)
            return &conf->channels[i];
    return NULL;
}

/* A required string member of at most max bytes, or NULL. */
static const char *member(json_t *o, const char *name, size_t max)
{
    json_t *v = json_object_get(o, name);
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max ||
        strlen(json_string_value(v)) != json_string_length(v))
        return NULL;
    return json_string_value(v);
}

struct notice {
    char notify_id[65];
    bool refund;
    char number[CHAN_NUMBER_MAX + 1]; /* the PSP's limit; payd's own are shorter */
    char txn_id[CHANNEL_TXN_ID_MAX + 1];
    int64_t amount_minor;
    char currency[4];
    char signature[SIGN_HEX_LEN + 1];
};

/* Reads the notification's body into n; answers 400 and returns false when
 * it is not one. */
static bool parse_notice(http_req *r, const char *body, size_t len, struct notice *n)
{
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    const char *bad = NULL;
    const char *event = member(o, "event", 32);
    const char *id = member(o, "notify_id", sizeof(n->notify_id) - 1);
    const char *status = member(o, "status", 16);
    json_t *amount = json_object_get(o, "amount");
    const char *currency = member(o, "currency", 3);
    n->refund = event && strcmp(event, "refund.succeeded") == 0;
    const char *number = member(o, n->refund ? "out_refund_no" : "out_trade_no",
                                CHAN_NUMBER_MAX);
    const char *txn = member(o, n->refund ? "refund_id" : "trade_no", CHANNEL_TXN_ID_MAX);
    if (!json_is_object(o))
        bad = NULL;
    else if (!event || (!n->refund && strcmp(event, "charge.succeeded") != 0))
        bad = "event";
    else if (!id)
        bad = "notify_id";
    else if (!status || strcmp(status, "succeeded") != 0)
        bad = "status";
    else if (!json_is_integer(amount) || json_integer_value(amount) <= 0)
        bad = "amount";
    else if (!currency || strlen(currency) != 3)
        bad = "currency";
    else if (!number)
        bad = n->refund ? "out_refund_no" : "out_trade_no";
    else if (!txn)
        bad = n->refund ? "refund_id" : "trade_no";
    bool ok = json_is_object(o) && !bad;
    if (ok) {
        snprintf(n->notify_id, sizeof(n->notify_id), "%s", id);
        snprintf(n->number, sizeof(n->number), "%s", number);
        snprintf(n->txn_id, sizeof(n->txn_id), "%s", txn);
        n->amount_minor = json_integer_value(amount);
        memcpy(n->currency, currency, 4);
    } else {
        api_invalid(r, "notification_invalid",
                    bad ? "this notification field is missing or malformed"
                        : "the body is not a JSON object",
                    bad);
    }
    json_decref(o);
    return ok;
}

static void applied(http_req *r)
{
    struct api_ctx *c = http_user(r);
    struct store_op *op = &c->op;
    bool refund = op->in.notify.refund;
    const char *kind = refund ? "refund" : "payment";
    switch (op->rc) {
    case STORE_OK: {
        http_note_ids(r, op->out.notified.merchant_id, op->out.notified.order_id,
                      refund ? NULL : op->out.notified.id);
        if (op->out.notified.changed) {
            webhooks_wake(c->app->webhooks);
            int ch = channel_set_index(c->app->channels, op->in.notify.channel);
            if (ch >= 0)
                metrics_inc(c->app->metrics, refund ? M_REFUNDS_FINAL : M_PAYMENTS_FINAL, ch,
                            FINAL_SUCCEEDED);
            log_info(refund ? "refund_finished" : "payment_finished",
                     refund ? "refund_id" : "payment_id", op->out.notified.id, "order_id",
                     op->out.notified.order_id, "merchant_id", op->out.notified.merchant_id,
                     "status", "succeeded", "via", "notification", NULL);
        }
        if (op->out.notified.late_refund) {
            log_warn("late_charge_refunded", "payment_id", op->out.notified.id, "order_id",
                     op->out.notified.order_id, "refund_id", op->in.notify.late_refund_id, NULL);
            refunder_wake(c->app->refunder);
        }
        http_respond_text(r, 200, "text/plain", xstrdup("success"));
        break;
    }
    case STORE_E_DUPLICATE:
        http_error(r, 409, "conflict", "notification_replayed",
                   "This signed notification was received before.", NULL);
        break;
    case STORE_E_NOT_FOUND:
        http_error(r, 404, "not_found", "resource_missing",
                   refund ? "no refund on this channel has this out_refund_no"
                          : "no payment on this channel has this out_trade_no",
                   refund ? "out_refund_no" : "out_trade_no");
        break;
    case STORE_E_REUSED:
        log_error("notification_mismatch", "channel", op->in.notify.channel, "kind", kind,
                  "number", op->in.notify.number, "notify_id", op->in.notify.notify_id, NULL);
        http_error(r, 409, "conflict", "notification_mismatch",
                   "The amount or currency differ from ours.", "amount");
        break;
    case STORE_E_FINAL:
        /* The channel says it succeeded; payd recorded a failure. Money may
         * have moved that payd does not account for: a person must look
         * (reconciliation shows it too). */
        log_error("notification_contradicts", "channel", op->in.notify.channel, "kind", kind,
                  "id", op->out.notified.id, "notify_id", op->in.notify.notify_id, NULL);
        http_error(r, 409, "conflict", "already_failed",
                   "payd recorded this as failed; it needs a person to look.", NULL);
        break;
    default:
        api_store_failed(r, op->rc);
    }
}

void api_notify(struct api_ctx *c, http_req *r, const char *channel_name)
{
    const struct conf_channel *cc = http_channel_conf(c->app->conf, channel_name);
    if (!cc) {
        http_error(r, 404, "not_found", "route_not_found",
                   "no channel of this name takes notifications", NULL);
        return;
    }
    size_t len = 0;
    const char *body = http_body(r, &len);
    const char *ts = http_header(r, SIGN_HEADER_TIMESTAMP);
    const char *sig = http_header(r, SIGN_HEADER_SIGNATURE);
    switch (sign_verify(cc->secret, ts, sig, body ? body : "", len, clock_wall_ms() / 1000)) {
    case SIGN_OK:
        break;
    case SIGN_MISSING:
        http_error(r, 401, "authentication_error", "signature_missing",
                   "Paysim-Timestamp and Paysim-Signature are required.", NULL);
        return;
    case SIGN_STALE:
        http_error(r, 401, "authentication_error", "timestamp_stale",
                   "The timestamp is more than 300 s from our clock.", NULL);
        return;
    default:
        log_warn("notification_forged", "channel", cc->name, NULL);
        http_error(r, 401, "authentication_error", "signature_invalid",
                   "The signature does not match.", NULL);
        return;
    }
    struct notice *n = xcalloc(1, sizeof(*n));
    if (!parse_notice(r, body ? body : "", len, n)) {
        free(n);
        return;
    }
    /* The signature as sent, lower-cased: the same message in either case
     * is one message. */
    for (size_t i = 0; i < SIGN_HEX_LEN; i++)
        n->signature[i] = (char)(sig[i] >= 'A' && sig[i] <= 'F' ? sig[i] - 'A' + 'a' : sig[i]);
    c->notice = n;
    c->op.kind = STORE_OP_NOTIFY_APPLY;
    c->op.in.notify.channel = cc->name;
    c->op.in.notify.signature = n->signature;
    c->op.in.notify.notify_id = n->notify_id;
    c->op.in.notify.refund = n->refund;
    c->op.in.notify.number = n->number;
    c->op.in.notify.txn_id = n->txn_id;
    c->op.in.notify.amount_minor = n->amount_minor;
    c->op.in.notify.currency = n->currency;
    c->op.in.notify.received_ms = clock_wall_ms();
    id_new("re_", c->op.in.notify.received_ms, c->op.in.notify.late_refund_id);
    serial_no_new(c->op.in.notify.received_ms, c->op.in.notify.late_refund_no);
    api_write(c, r, applied);
}
