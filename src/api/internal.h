/*
 * internal.h - what the API's handler files share: the per-request context,
 * the handlers themselves, and JSON helpers for the records and for input.
 */
#ifndef PAYD_API_INTERNAL_H
#define PAYD_API_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "api/api.h"
#include "core/model.h"

/* One request's state, owned by the request (freed when it ends). */
struct api_ctx {
    struct app *app;
    struct merchant merchant; /* set for authenticated routes */
    struct store_op op;       /* the write this request waits for, if any */
    /* payments */
    char idem_key[IDEM_KEY_MAX + 1];
    bool has_idem_key, idem_entered;
    char fingerprint[IDEM_FINGERPRINT_LEN + 1];
    char *response_body; /* the 202 body, stored with the idempotency key */
    char lock_key[ID_MAX];
    int64_t fence;
    bool locked;
    int64_t inflight_since_ns; /* holds an in-flight place since; 0: none */
    struct notice *notice;     /* notifications: what c->op borrows */
};

typedef void api_handler(struct api_ctx *c, http_req *r, const char *id);

api_handler api_order_create, api_order_get;
api_handler api_payment_create, api_payment_get, api_payment_list;
api_handler api_refund_create, api_refund_get, api_refund_list;
api_handler api_notify;
api_handler api_webhook_put, api_webhook_get, api_webhook_delete;
api_handler api_channel_list, api_balance;
api_handler api_healthz, api_readyz, api_metrics;
api_handler api_guards_get, api_guards_put;
api_handler api_dashboard_asset, api_dashboard_data;


/* Parses the body as a JSON object whose keys are all in allowed (NULL-
 * terminated). On failure answers 400 and returns NULL. A number too large
 * for an int64 is blamed on number_field with number_code (the resource's
 * one numeric field), or on no field when number_field is NULL. */
json_t *api_parse_object(http_req *r, const char *const *allowed, const char *number_field,
                         const char *number_code);

/* A required string field of at most max_len bytes; answers 400 and returns
 * NULL when absent or not a string (empty strings are refused too). */
const char *api_string_field(http_req *r, json_t *obj, const char *name, size_t max_len);

/* The required "amount": an integer in minor units, 1 … 10^15; answers 400
 * (parameter_missing, amount_invalid) and returns false otherwise. */
bool api_amount_field(http_req *r, json_t *obj, int64_t *out);

/* An order's immutable facts, and putting them in the order cache. */
void api_order_facts(const struct order *o, struct order_facts *f);
void api_remember_order(struct app *app, const struct order *o);

/* Idempotency-Key: reads and checks the header into c (false: answered
 * 400); computes the request's fingerprint and takes the key's in-flight
 * mark (false: answered 409 idempotency_key_in_use or 503); answers a
 * stored response (the first answer again, or 422 when the fingerprint
 * differs). */
bool api_read_idem_key(struct api_ctx *c, http_req *r);
bool api_idem_enter(struct api_ctx *c, http_req *r, const char *path, json_t *body);
void api_replay(struct api_ctx *c, http_req *r, const struct idem_record *rec);

/* Releases the order lock and the idempotency in-flight mark a payment
 * request holds, if it still holds them. */
void api_payment_let_go(struct api_ctx *c);

/* Submits c->op and parks the request until it is committed; then
 * on_resume() answers from c->op.rc and c->op.out. If the write cannot even
 * be queued, on_resume() runs with that failure in c->op.rc. */
void api_write(struct api_ctx *c, http_req *r, void (*on_resume)(http_req *r));

/* Sentences for end users, in English or, when Accept-Language prefers
 * it, Chinese. */
enum api_msg {
    API_MSG_OVERLOADED,
    API_MSG_CHANNEL_DOWN,
    API_MSG_RATE_LIMITED,
    API_MSG_RATE_LIMITED_GLOBAL,
    API_MSG_STORAGE_FULL,
};
const char *api_message(http_req *r, enum api_msg msg);

/* 503 service_degraded with Retry-After (code overloaded, channel_unavailable
 * for API_MSG_CHANNEL_DOWN, storage_full for API_MSG_STORAGE_FULL). */
void api_degraded(http_req *r, int64_t retry_after_s, enum api_msg msg);

/* Common answers. */
void api_not_found(http_req *r, const char *param);
/* A write the store did not make: 503 (Retry-After) when it is busy or its
 * disk is full, 500 otherwise; nothing was changed either way. */
void api_store_failed(http_req *r, int rc);
void api_invalid(http_req *r, const char *code, const char *message, const char *param);

#endif
