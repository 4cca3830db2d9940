/*
 * common.c - JSON rendering of records and input helpers shared by the
 * handlers; see internal.h.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/internal.h"
#include "core/money.h"
#include "util/util.h"

/* Retry-After while the store's disk is full: space comes back when an
 * operator frees it, seldom within a second. */
#define STORAGE_FULL_RETRY_S 5

json_t *api_order_json(const struct order *o)
{
    char created[25];
    clock_format_rfc3339(o->created_ms, created);
    return json_pack("{s:s, s:s, s:I, s:s, s:o, s:s, s:s}", "id", o->id, "merchant_order_no",
                     o->merchant_order_no, "amount", (json_int_t)o->amount_minor, "currency",
                     o->currency, "description",
                     o->has_description ? json_string(o->description) : json_null(), "status",
                     order_status_name(o->status), "created_at", created);
}

json_t *api_payment_json(const struct payment *p)
{
    char created[25], updated[25];
    clock_format_rfc3339(p->created_ms, created);
    clock_format_rfc3339(p->updated_ms, updated);
    json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", p->id,
                          "order_id", p->order_id, "amount", (json_int_t)p->amount_minor,
                          "currency", p->currency, "channel", p->channel, "method", p->method,
                          "status", payment_status_name(p->status), "serial_no", p->serial_no,
                          "created_at", created, "updated_at", updated);
    if (p->status == PAYMENT_SUCCEEDED)
        json_object_set_new(j, "channel_txn_id", json_string(p->channel_txn_id));
    if (p->status == PAYMENT_FAILED)
        json_object_set_new(j, "failure", json_pack("{s:s, s:s}", "code", p->failure_code,
                                                    "message", p->failure_message));
    return j;
}

void api_order_facts(const struct order *o, struct order_facts *f)
{
    memcpy(f->id, o->id, sizeof(f->id));
    memcpy(f->merchant_id, o->merchant_id, sizeof(f->merchant_id));
    f->amount_minor = o->amount_minor;
    memcpy(f->currency, o->currency, sizeof(f->currency));
    f->created_ms = o->created_ms;
}

void api_remember_order(struct app *app, const struct order *o)
{
    struct order_facts f;
    api_order_facts(o, &f);
    order_cache_put(app->orders, &f);
}

void api_invalid(http_req *r, const char *code, const char *message, const char *param)
{
    http_error(r, 400, "invalid_request_error", code, message, param);
}

json_t *api_parse_object(http_req *r, const char *const *allowed, const char *number_field,
                         const char *number_code)
{
    size_t len;
    const char *body = http_body(r, &len);
    json_error_t jerr;
    json_t *obj =
        json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!obj && json_error_code(&jerr) == json_error_numeric_overflow) {
        if (number_field) {
            char msg[160];
            snprintf(msg, sizeof(msg), "%s is out of range", number_field);
            api_invalid(r, number_code, msg, number_field);
        } else {
            api_invalid(r, "parameter_invalid", "a number in the body is out of range", NULL);
        }
        return NULL;
    }
    if (!obj) {
        char msg[256];
        snprintf(msg, sizeof(msg), "the body is not valid JSON: %s (line %d, column %d)",
                 jerr.text, jerr.line, jerr.column);
        api_invalid(r, "json_invalid", msg, NULL);
        return NULL;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        api_invalid(r, "body_not_object", "the body must be a JSON object", NULL);
        return NULL;
    }
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        bool known = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, key) == 0)
                known = true;
        if (!known) {
            char msg[160];
            snprintf(msg, sizeof(msg), "unknown field: %.100s", key);
            api_invalid(r, "parameter_unknown", msg, key);
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

const char *api_string_field(http_req *r, json_t *obj, const char *name, size_t max_len)
{
    json_t *v = json_object_get(obj, name);
    char msg[160];
    if (!v || json_is_null(v)) {
        snprintf(msg, sizeof(msg), "%s is required", name);
        api_invalid(r, "parameter_missing", msg, name);
        return NULL;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max_len ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(msg, sizeof(msg), "%s must be a string of 1 to %zu characters", name, max_len);
        api_invalid(r, "parameter_invalid", msg, name);
        return NULL;
    }
    return json_string_value(v);
}

void api_not_found(http_req *r, const char *param)
{
    http_error(r, 404, "not_found", "resource_missing", "no such object", param);
}

/* True when Accept-Language ranks Chinese above English (RFC 9110
 * weights; an unlisted language weighs 0, "*" weighs for both). */
static bool wants_chinese(http_req *r)
{
    const char *h = http_header(r, "Accept-Language");
    double zh = 0, en = 0, any = 0;
    while (h && *h) {
        h += strspn(h, " \t,");
        size_t n = strcspn(h, ",;");
        const char *tag = h;
        double q = 1;
        h += n;
        if (*h == ';') {
            const char *qs = strstr(h, "q=");
            if (qs && qs < h + strcspn(h, ","))
                q = strtod(qs + 2, NULL);
            h += strcspn(h, ",");
        }
        if (n >= 2 && strncasecmp(tag, "zh", 2) == 0 && (n == 2 || tag[2] == '-'))
            zh = q > zh ? q : zh;
        else if (n >= 2 && strncasecmp(tag, "en", 2) == 0 && (n == 2 || tag[2] == '-'))
            en = q > en ? q : en;
        else if (n == 1 && tag[0] == '*')
            any = q;
    }
    if (zh == 0 && en == 0)
        return false;
    return zh > (en > 0 ? en : any);
}

const char *api_message(http_req *r, enum api_msg msg)
{
    static const char *const text[][2] = {
        [API_MSG_OVERLOADED] =
            {"We are receiving more payments than we can take right now. Please try again in "
             "a moment.",
             "当前支付请求较多，请稍后再试。"},
        [API_MSG_CHANNEL_DOWN] =
            {"This payment method is temporarily unavailable. Please try again in a few "
             "minutes or choose another payment method.",
             "该支付方式暂时不可用，请稍后再试或选择其他支付方式。"},
        [API_MSG_RATE_LIMITED] = {"Too many requests from this account. Please retry after "
                                  "the number of seconds in Retry-After.",
                                  "该账户请求过于频繁，请在 Retry-After 所示秒数后重试。"},
        [API_MSG_RATE_LIMITED_GLOBAL] = {"Too many requests right now. Please retry after the "
                                         "number of seconds in Retry-After.",
                                         "当前请求过多，请在 Retry-After 所示秒数后重试。"},
        [API_MSG_STORAGE_FULL] = {"We cannot take payments for a moment; nothing was "
                                  "charged. Please try again shortly.",
                                  "暂时无法受理支付，未产生任何扣款，请稍后再试。"},
    };
    return text[msg][wants_chinese(r) ? 1 : 0];
}

void api_degraded(http_req *r, int64_t retry_after_s, enum api_msg msg)
{
    char secs[24];
    snprintf(secs, sizeof(secs), "%lld", (long long)(retry_after_s > 0 ? retry_after_s : 1));
    http_add_header(r, "Retry-After", secs);
    const char *code = msg == API_MSG_CHANNEL_DOWN   ? "channel_unavailable"
                       : msg == API_MSG_STORAGE_FULL ? "storage_full"
                                                     : "overloaded";
    http_error(r, 503, "service_degraded", code, api_message(r, msg), NULL);
}

void api_store_failed(http_req *r, int rc)
{
    if (rc == STORE_E_BUSY) {
        api_degraded(r, 1, API_MSG_OVERLOADED);
        return;
    }
    if (rc == STORE_E_FULL) {
        api_degraded(r, STORAGE_FULL_RETRY_S, API_MSG_STORAGE_FULL);
        return;
    }
    http_error(r, 500, "api_error", "internal_error",
               "Something went wrong on our side; nothing was changed. Please try again.",
               NULL);
}

void api_replay(struct api_ctx *c, http_req *r, const struct idem_record *rec)
{
    if (strcmp(rec->fingerprint, c->fingerprint) != 0) {
        metrics_inc(c->app->metrics, M_IDEM_CONFLICTS, 0, 0);
        http_error(r, 422, "idempotency_error", "idempotency_key_reused",
                   "This Idempotency-Key was used with a different request.",
                   "Idempotency-Key");
        return;
    }
    metrics_inc(c->app->metrics, M_IDEM_REPLAYS, 0, 0);
    json_t *stored = json_loads(rec->body, 0, NULL);
    json_t *id = json_object_get(stored, "id"); /* a 202's payment; absent in an error */
    if (json_is_string(id))
        http_note_ids(r, NULL, NULL, json_string_value(id));
    json_decref(stored);
    http_add_header(r, "Idempotent-Replayed", "true");
    http_respond_raw(r, rec->status, xstrdup(rec->body), strlen(rec->body));
}

/* Checks the Idempotency-Key header; false (answered 400) when malformed. */
bool api_read_idem_key(struct api_ctx *c, http_req *r)
{
    const char *key = http_header(r, "Idempotency-Key");
    if (!key)
        return true;
    size_t n = strlen(key);
    bool ok = n >= 1 && n <= IDEM_KEY_MAX;
    for (const char *p = key; ok && *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
            ok = false;
    if (!ok) {
        api_invalid(r, "idempotency_key_invalid",
                    "Idempotency-Key must be 1 to 255 characters without control characters",
                    "Idempotency-Key");
        return false;
    }
    memcpy(c->idem_key, key, n + 1);
    c->has_idem_key = true;
    return true;
}

bool api_idem_enter(struct api_ctx *c, http_req *r, const char *path, json_t *body)
{
    if (!c->has_idem_key)
        return true;
    char *canonical = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    idem_fingerprint("POST", path, canonical, c->fingerprint);
    free(canonical);
    int rc = idem_inflight_enter(c->app->inflight, c->merchant.id, c->idem_key);
    if (rc == 0) {
        c->idem_entered = true;
        return true;
    }
    if (rc == -1) {
        metrics_inc(c->app->metrics, M_IDEM_CONFLICTS, 0, 0);
        http_error(r, 409, "conflict", "idempotency_key_in_use",
                   "A request with this Idempotency-Key is being handled; retry later.",
                   "Idempotency-Key");
    } else {
        api_store_failed(r, STORE_E_BUSY);
    }
    return false;
}

bool api_amount_field(http_req *r, json_t *obj, int64_t *out)
{
    json_t *amount = json_object_get(obj, "amount");
    if (!amount || json_is_null(amount)) {
        api_invalid(r, "parameter_missing", "amount is required", "amount");
        return false;
    }
    if (!json_is_integer(amount) || !money_amount_valid(json_integer_value(amount))) {
        api_invalid(r, "amount_invalid",
                    "amount must be a positive integer (minor units) of at most 10^15",
                    "amount");
        return false;
    }
    *out = json_integer_value(amount);
    return true;
}

static void resume_on_commit(struct store_op *op)
{
    http_resume(op->arg);
}

void api_write(struct api_ctx *c, http_req *r, void (*on_resume)(http_req *r))
{
    c->op.done = resume_on_commit;
    c->op.arg = r;
    /* Suspend first: the commit may resume the request before
     * store_submit() even returns. From a successful submit on, only the
     * writer touches c->op.rc. */
    http_suspend(r, on_resume);
    int rc = store_submit(c->app->store, &c->op);
    if (rc != STORE_OK) {
        c->op.rc = rc;
        http_resume(r);
    }
}
