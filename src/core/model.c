/*
 * model.c - comparisons on domain records, and the late-charge refund; see
 * model.h.
 */
#include "core/model.h"

#include <stdio.h>
#include <string.h>

bool order_same_content(const struct order *a, const struct order *b)
{
    if (a->amount_minor != b->amount_minor || strcmp(a->currency, b->currency) != 0)
        return false;
    if (a->has_description != b->has_description)
        return false;
    return !a->has_description || strcmp(a->description, b->description) == 0;
}

void refund_of_late_charge(const struct payment *p, const char *id, const char *refund_no,
                           struct refund *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->id, sizeof(out->id), "%s", id);
    memcpy(out->payment_id, p->id, sizeof(out->payment_id));
    memcpy(out->order_id, p->order_id, sizeof(out->order_id));
    memcpy(out->merchant_id, p->merchant_id, sizeof(out->merchant_id));
    out->amount_minor = p->amount_minor;
    memcpy(out->currency, p->currency, sizeof(out->currency));
    memcpy(out->channel, p->channel, sizeof(out->channel));
    memcpy(out->payment_serial_no, p->serial_no, sizeof(out->payment_serial_no));
    out->has_reason = true;
    snprintf(out->reason, sizeof(out->reason), "%s", LATE_CHARGE_REASON);
    out->status = PAYMENT_PROCESSING;
    snprintf(out->refund_no, sizeof(out->refund_no), "%s", refund_no);
    out->automatic = true;
    out->created_ms = out->updated_ms = p->updated_ms;
}
