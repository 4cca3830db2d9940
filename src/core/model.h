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

/* True when two orders carry the same content (what a merchant sent), so a
 * repeated merchant_order_no is the same order and not a reuse. */
bool order_same_content(const struct order *a, const struct order *b);

#endif
