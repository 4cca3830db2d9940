/*
 * refunds.c - POST /v1/refunds and GET /v1/refunds/{out_refund_no}.
 *
 * A refund is deduplicated by out_refund_no like a charge by out_trade_no.
 * The journal thread runs refunds one at a time, so the check that a
 * charge's refunds stay within its amount and the refund's insert cannot
 * interleave with another refund of the same charge (and a trigger in the
 * schema repeats the check).
 */
#include <stdio.h>
#include <string.h>

#include "api_internal.h"

bool refunds_prepare_create(struct call *c)
{
    static const char *const fields[] = {"out_trade_no", "out_refund_no", "amount",
                                         "notify_url", NULL};
    struct jop *op = api_start_write(c, fields, JOP_REFUND);
    return op &&
           api_get_string(c, "out_trade_no", true, op->refund.out_trade_no, OUT_NO_MAX,
                          model_out_no_valid) &&
           api_get_amount(c, "amount", &op->refund.amount) &&
           api_get_string(c, "notify_url", false, op->notify_url, URL_MAX, model_url_valid);
}

void refunds_render_create(struct call *c)
{
    struct jop *op = c->op;
    char msg[256];
    if (api_answer_written(c, "refunded"))
        return;
    switch (op->result) {
    case JR_CONFLICT:
        snprintf(msg, sizeof(msg),
                 "out_refund_no %s was used before with other parameters (%lld of %s)",
                 op->refund.out_refund_no, (long long)op->refund.amount,
                 op->refund.out_trade_no);
        api_answer_error(c, 409, "duplicate_out_refund_no", msg, "out_refund_no");
        return;
    case JR_NOT_FOUND:
        api_answer_error(c, 404, "not_found", "no charge with this out_trade_no",
                         "out_trade_no");
        return;
    case JR_NOT_REFUNDABLE:
        api_answer_error(c, 409, "charge_not_refundable",
                         "the charge did not succeed; there is nothing to refund",
                         "out_trade_no");
        return;
    case JR_EXCEEDS:
        snprintf(msg, sizeof(msg),
                 "the charge was %lld, %lld of it refunded already: at most %lld more",
                 (long long)op->charge.amount, (long long)op->refunded_before,
                 (long long)(op->charge.amount - op->refunded_before));
        api_answer_error(c, 409, "refund_exceeds_charge", msg, "amount");
        return;
    default:
        PAYD_ASSERT(!"impossible refund result");
    }
}

void refunds_get(struct call *c)
{
    struct refund rf;
    int found = journal_get_refund(c->api->cfg.journal, c->param, &rf);
    api_answer_found(c, found, found > 0 ? model_refund_json(&rf) : NULL, "refund",
                     "out_refund_no");
}
