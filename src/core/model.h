/*
 * model.h - the domain records: merchant, order, payment.
 *
 * Records are plain structs with fixed-size fields, so they can be copied,
 * kept on the stack and passed between threads without ownership questions.
 * Field sizes are the validated input limits plus the terminating NUL.
 */
#ifndef PAYD_CORE_MODEL_H
#define PAYD_CORE_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/ids.h"
#include "core/state.h"

#define MERCHANT_NAME_MAX 64
#define ORDER_NO_MAX 64
#define DESCRIPTION_MAX 1024
#define CHANNEL_NAME_MAX 32
#define METHOD_NAME_MAX 32
#define CHANNEL_TXN_ID_MAX 64
#define FAILURE_CODE_MAX 32
#define FAILURE_MESSAGE_MAX 160
#define IDEM_KEY_MAX 255
#define REFUND_REASON_MAX 256

struct merchant {
    char id[ID_MAX];
    char name[MERCHANT_NAME_MAX + 1];
    int64_t created_ms;
};

struct order {
    char id[ID_MAX];
    char merchant_id[ID_MAX];
    char merchant_order_no[ORDER_NO_MAX + 1];
    int64_t amount_minor;
    char currency[4];
    bool has_description;
    char description[DESCRIPTION_MAX + 1];
    enum order_status status;
    int64_t created_ms;
};

struct payment {
    char id[ID_MAX];
    char order_id[ID_MAX];
    char merchant_id[ID_MAX];
    int64_t amount_minor;
    char currency[4];
    char channel[CHANNEL_NAME_MAX + 1];
    char method[METHOD_NAME_MAX + 1];
    enum payment_status status;
    char serial_no[SERIAL_NO_LEN + 1];
    char channel_txn_id[CHANNEL_TXN_ID_MAX + 1];
    char failure_code[FAILURE_CODE_MAX + 1];
    char failure_message[FAILURE_MESSAGE_MAX + 1];
    int64_t created_ms;
    int64_t updated_ms;
};

/* A refund of (part of) a succeeded payment. Its status runs through the
 * payment states: processing, then succeeded or failed. refund_no is the
 * number the channel deduplicates the refund by (paysim's out_refund_no),
 * as serial_no is for a charge. */
struct refund {
    char id[ID_MAX];
    char payment_id[ID_MAX];
    char order_id[ID_MAX];
    char merchant_id[ID_MAX];
    int64_t amount_minor;
    char currency[4];
    char channel[CHANNEL_NAME_MAX + 1];
    char payment_serial_no[SERIAL_NO_LEN + 1];
    bool has_reason;
    char reason[REFUND_REASON_MAX + 1];
    enum payment_status status;
    char refund_no[SERIAL_NO_LEN + 1];
    char channel_refund_id[CHANNEL_TXN_ID_MAX + 1];
    char failure_code[FAILURE_CODE_MAX + 1];
    char failure_message[FAILURE_MESSAGE_MAX + 1];
    bool automatic;   /* made by payd itself (a charge that came after its order closed) */
    int64_t attempts; /* channel calls started so far */
    int64_t created_ms;
    int64_t updated_ms;
};

/* True when two orders carry the same content (what a merchant sent), so a
 * repeated merchant_order_no is the same order and not a reuse. */
bool order_same_content(const struct order *a, const struct order *b);

#define WEBHOOK_URL_MAX 2048
#define WEBHOOK_SECRET_LEN 38 /* "whsec_" + 32 hex digits */
#define EVENT_TYPE_MAX 24

/* A merchant's webhook endpoint: where payd POSTs its events, and the key
 * it signs them with. */
struct webhook {
    char merchant_id[ID_MAX];
    char url[WEBHOOK_URL_MAX + 1];
    char secret[WEBHOOK_SECRET_LEN + 1];
    int64_t updated_ms;
};

/* An event to deliver to a merchant's webhook: a payment or a refund
 * reached a final status. Its id is "evt_" + the object's id (one final
 * event per object), its body is built when it is sent. */
struct event {
    char id[ID_MAX + 4];
    char merchant_id[ID_MAX];
    char type[EVENT_TYPE_MAX + 1]; /* payment.succeeded, payment.failed, refund.… */
    char object_id[ID_MAX];
    int64_t attempts; /* deliveries started so far */
    int64_t created_ms;
    bool has_endpoint; /* claims: the merchant's endpoint now (url, secret) */
    char url[WEBHOOK_URL_MAX + 1];
    char secret[WEBHOOK_SECRET_LEN + 1];
};

/* The reason payd gives the automatic refund of a late charge. */
#define LATE_CHARGE_REASON "order_closed: the order closed unpaid before this charge succeeded"

/* The refund payd makes by itself of a payment that succeeded after its
 * order was closed: the whole amount, automatic, processing, created at the
 * payment's updated_ms, with the given id and channel refund number. */
void refund_of_late_charge(const struct payment *p, const char *id, const char *refund_no,
                           struct refund *out);

#endif
