/*
 * charges.c - POST /v1/charges, GET /v1/charges/{out_trade_no} and
 * POST /v1/charges/{out_trade_no}/close.
 *
 * A charge is deduplicated by out_trade_no, as real PSPs refuse a second
 * trade with the merchant's number: the same request again returns the
 * first result and charges nothing; other parameters under the same number
 * are refused (409 duplicate_out_trade_no). Closing a trade that was never
 * charged makes sure it never will be (WeChat Pay's closeorder, Alipay's
 * trade.close): the merchant's way to settle a charge whose outcome it
 * never learnt.
 */
#include <stdio.h>
#include <string.h>

#include "api_internal.h"

/* ---- create ---- */

bool charges_prepare_create(struct call *c)
{
    static const char *const fields[] = {"out_trade_no", "amount", "currency", "method",
                                         "notify_url", NULL};
    struct jop *op = api_start_write(c, fields, JOP_CHARGE);
    if (!op)
        return false;
    struct charge *ch = &op->charge;
    if (!api_get_amount(c, "amount", &ch->amount) ||
        !api_get_string(c, "currency", true, ch->currency, CURRENCY_LEN,
                        model_currency_valid) ||
        !api_get_string(c, "method", false, ch->method, METHOD_MAX, model_method_valid) ||
        !api_get_string(c, "notify_url", false, op->notify_url, URL_MAX, model_url_valid))
        return false;
    if (!ch->method[0])
        snprintf(ch->method, sizeof(ch->method), "ok");
    op->decline = c->draw.decline;
    return true;
}

void charges_render_create(struct call *c)
{
    const struct charge *ch = &c->op->charge;
    if (api_answer_written(c, "charged"))
        return;
    if (c->op->result == JR_CLOSED) {
        api_answer_error(c, 409, "trade_closed",
                         "the trade was closed; nothing was charged and nothing will be",
                         "out_trade_no");
        return;
    }
    PAYD_ASSERT(c->op->result == JR_CONFLICT);
    char msg[256];
    snprintf(msg, sizeof(msg),
             "out_trade_no %s was charged before with other parameters (%lld %s, method %s)",
             ch->out_trade_no, (long long)ch->amount, ch->currency, ch->method);
    api_answer_error(c, 409, "duplicate_out_trade_no", msg, "out_trade_no");
}

/* ---- close ---- */

bool charges_prepare_close(struct call *c)
{
    size_t len;
    http_body(c->r, &len);
    if (len > 0) {
        static const char *const none[] = {NULL};
        if (!api_parse_object(c, none))
            return false;
    }
    struct jop *op = api_new_op(c, JOP_CLOSE);
    snprintf(op->charge.out_trade_no, sizeof(op->charge.out_trade_no), "%s", c->param);
    return true;
}

/* Closed now, closed before, or charged before: the trade as it stands. */
void charges_render_close(struct call *c)
{
    bool answered = api_answer_written(c, "closed");
    PAYD_ASSERT(answered);
}

/* ---- query ---- */

void charges_get(struct call *c)
{
    struct charge ch;
    int found = journal_get_charge(c->api->cfg.journal, c->param, &ch);
    api_answer_found(c, found, found > 0 ? model_charge_json(&ch) : NULL, "charge",
                     "out_trade_no");
}
