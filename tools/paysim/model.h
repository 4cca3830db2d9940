/*
 * model.h - what paysim keeps: charges, refunds and closed trades, their
 * field limits, and their JSON form on the wire.
 *
 * A charge is immutable once journaled: its JSON form is the same in the
 * first answer, in every deduplicated replay and in every query. Amounts are
 * integers in minor units, never floating point.
 */
#ifndef PAYSIM_MODEL_H
#define PAYSIM_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define PAYSIM_ID_MAX 32                /* trade_no, refund_id, notify_id */
#define OUT_NO_MAX 64                   /* out_trade_no, out_refund_no */
#define CURRENCY_LEN 3
#define METHOD_MAX 15
#define URL_MAX 2048
#define AMOUNT_MAX 1000000000000LL      /* 10^12 minor units */
#define CODE_MAX 31
#define MESSAGE_MAX 127

enum charge_status {
    CHARGE_SUCCEEDED,
    CHARGE_DECLINED,
    CHARGE_CLOSED, /* never charged: the merchant closed the trade (a tombstone) */
};

struct charge {
    char out_trade_no[OUT_NO_MAX + 1];
    char trade_no[PAYSIM_ID_MAX + 1];          /* "" when closed */
    int64_t amount;                     /* 0 when closed */
    char currency[CURRENCY_LEN + 1];    /* "" when closed */
    char method[METHOD_MAX + 1];        /* "" when closed */
    enum charge_status status;
    char code[CODE_MAX + 1];            /* declined: why */
    char message[MESSAGE_MAX + 1];
    int64_t created_ms;                 /* wall clock */
};

struct refund {
    char out_refund_no[OUT_NO_MAX + 1];
    char refund_id[PAYSIM_ID_MAX + 1];
    char out_trade_no[OUT_NO_MAX + 1];
    char trade_no[PAYSIM_ID_MAX + 1];
    int64_t amount;
    char currency[CURRENCY_LEN + 1];
    int64_t created_ms;
};

/* 1 to OUT_NO_MAX of A-Z a-z 0-9 _ - . : */
bool model_out_no_valid(const char *s);
/* Three upper-case ASCII letters. */
bool model_currency_valid(const char *s);
/* http:// or https://, at most URL_MAX bytes, no control characters or spaces. */
bool model_url_valid(const char *s);
/* "ok" or "declined". */
bool model_method_valid(const char *s);

const char *model_charge_status_name(enum charge_status s);

/* The wire forms (new references). */
json_t *model_charge_json(const struct charge *c);
json_t *model_refund_json(const struct refund *r);

/* A JSON value as paysim writes it everywhere (compact, keys in order):
 * the text, malloc'd; takes value's reference. */
char *model_json_text(json_t *value);

/* A new id of paysim's own: prefix and 24 random hex digits ("pt_9f0c…"). */
void model_id_new(const char *prefix, char out[PAYSIM_ID_MAX + 1]);

#endif
