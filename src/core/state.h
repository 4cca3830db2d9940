/*
 * state.h - the order and payment state machines.
 *
 * Each is one enum and one transition function that names the state an
 * event leads to, or refuses it. The store turns an accepted transition into
 * a conditional update from the expected state, so a late or duplicate actor
 * changes nothing. Status names are the ones the API shows.
 */
#ifndef PAYD_CORE_STATE_H
#define PAYD_CORE_STATE_H

enum order_status {
    ORDER_PENDING_PAYMENT,
    ORDER_PAID,
    ORDER_CLOSED,
    ORDER_PARTIALLY_REFUNDED,
    ORDER_REFUNDED,
    ORDER_STATUS_COUNT
};

enum order_event {
    ORDER_EV_PAYMENT_SUCCEEDED,
    ORDER_EV_CLOSE,
    ORDER_EV_REFUND_PARTIAL,
    ORDER_EV_REFUND_FULL,
};

enum payment_status {
    PAYMENT_PROCESSING,
    PAYMENT_SUCCEEDED,
    PAYMENT_FAILED,
    PAYMENT_STATUS_COUNT
};

enum payment_event {
    PAYMENT_EV_SUCCEED,
    PAYMENT_EV_FAIL,
};

/* 0 and *to set when the event is legal in from; -1 when it is not. */
int order_transition(enum order_status from, enum order_event ev, enum order_status *to);
int payment_transition(enum payment_status from, enum payment_event ev,
                       enum payment_status *to);

const char *order_status_name(enum order_status s);
const char *payment_status_name(enum payment_status s);

/* Parse a stored status name; -1 when unknown. */
int order_status_parse(const char *name, enum order_status *out);
int payment_status_parse(const char *name, enum payment_status *out);

#endif
