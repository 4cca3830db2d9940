/*
 * state.c - the order and payment transition tables; see state.h.
 */
#include "core/state.h"

#include <string.h>

#include "util/util.h"

static const char *const order_names[ORDER_STATUS_COUNT] = {
    [ORDER_PENDING_PAYMENT] = "pending_payment",
    [ORDER_PAID] = "paid",
    [ORDER_CLOSED] = "closed",
    [ORDER_PARTIALLY_REFUNDED] = "partially_refunded",
    [ORDER_REFUNDED] = "refunded",
};

static const char *const payment_names[PAYMENT_STATUS_COUNT] = {
    [PAYMENT_PROCESSING] = "processing",
    [PAYMENT_SUCCEEDED] = "succeeded",
    [PAYMENT_FAILED] = "failed",
};

int order_transition(enum order_status from, enum order_event ev, enum order_status *to)
{
    switch (from) {
    case ORDER_PENDING_PAYMENT:
        if (ev == ORDER_EV_PAYMENT_SUCCEEDED) {
            *to = ORDER_PAID;
            return 0;
        }
        if (ev == ORDER_EV_CLOSE) {
            *to = ORDER_CLOSED;
            return 0;
        }
        return -1;
    case ORDER_PAID:
    case ORDER_PARTIALLY_REFUNDED:
        if (ev == ORDER_EV_REFUND_PARTIAL) {
            *to = ORDER_PARTIALLY_REFUNDED;
            return 0;
        }
        if (ev == ORDER_EV_REFUND_FULL) {
            *to = ORDER_REFUNDED;
            return 0;
        }
        return -1;
    case ORDER_CLOSED:
    case ORDER_REFUNDED:
        return -1;
    default:
        PAYD_ASSERT(!"unknown order status");
        return -1;
    }
}

int payment_transition(enum payment_status from, enum payment_event ev,
                       enum payment_status *to)
{
    switch (from) {
    case PAYMENT_PROCESSING:
        *to = ev == PAYMENT_EV_SUCCEED ? PAYMENT_SUCCEEDED : PAYMENT_FAILED;
        return 0;
    case PAYMENT_SUCCEEDED:
    case PAYMENT_FAILED:
        return -1; /* final states: nothing moves them */
    default:
        PAYD_ASSERT(!"unknown payment status");
        return -1;
    }
}

const char *order_status_name(enum order_status s)
{
    PAYD_ASSERT(s >= 0 && s < ORDER_STATUS_COUNT);
    return order_names[s];
}

const char *payment_status_name(enum payment_status s)
{
    PAYD_ASSERT(s >= 0 && s < PAYMENT_STATUS_COUNT);
    return payment_names[s];
}

int order_status_parse(const char *name, enum order_status *out)
{
    for (int i = 0; i < ORDER_STATUS_COUNT; i++)
        if (strcmp(order_names[i], name) == 0) {
            *out = (enum order_status)i;
            return 0;
        }
    return -1;
}

int payment_status_parse(const char *name, enum payment_status *out)
{
    for (int i = 0; i < PAYMENT_STATUS_COUNT; i++)
        if (strcmp(payment_names[i], name) == 0) {
            *out = (enum payment_status)i;
            return 0;
        }
    return -1;
}
