/*
 * model.c - field validation and JSON forms; see model.h.
 */
#include "model.h"

#include <string.h>

#include "util/util.h"

bool model_out_no_valid(const char *s)
{
    return token_valid(s, OUT_NO_MAX, "_-.:");
}

bool model_currency_valid(const char *s)
{
    if (strlen(s) != CURRENCY_LEN)
        return false;
    for (const char *p = s; *p; p++)
        if (*p < 'A' || *p > 'Z')
            return false;
    return true;
}

bool model_url_valid(const char *s)
{
    size_t n = strlen(s);
    if (n > URL_MAX)
        return false;
    if (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0)
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return false;
    return n > 8;
}

bool model_method_valid(const char *s)
{
    return strcmp(s, "ok") == 0 || strcmp(s, "declined") == 0;
}

const char *model_charge_status_name(enum charge_status s)
{
    switch (s) {
    case CHARGE_SUCCEEDED:
        return "succeeded";
    case CHARGE_DECLINED:
        return "declined";
    case CHARGE_CLOSED:
        return "closed";
    }
    PAYD_ASSERT(!"bad charge status");
    return "";
}

json_t *model_charge_json(const struct charge *c)
{
    char when[RFC3339_LEN + 1];
    clock_format_rfc3339(c->created_ms, when);
    if (c->status == CHARGE_CLOSED)
        return json_pack("{s:s, s:s, s:s}", "out_trade_no", c->out_trade_no, "status", "closed",
                         "time", when);
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "out_trade_no", c->out_trade_no,
                          "trade_no", c->trade_no, "status", model_charge_status_name(c->status),
                          "amount", (json_int_t)c->amount, "currency", c->currency, "method",
                          c->method, "time", when);
    PAYD_ASSERT(o);
    if (c->status == CHARGE_DECLINED) {
        json_object_set_new(o, "code", json_string(c->code));
        json_object_set_new(o, "message", json_string(c->message));
    }
    return o;
}

json_t *model_refund_json(const struct refund *r)
{
    char when[RFC3339_LEN + 1];
    clock_format_rfc3339(r->created_ms, when);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "out_refund_no",
                          r->out_refund_no, "refund_id", r->refund_id, "out_trade_no",
                          r->out_trade_no, "trade_no", r->trade_no, "amount",
                          (json_int_t)r->amount, "currency", r->currency, "status", "succeeded",
                          "time", when);
    PAYD_ASSERT(o);
    return o;
}

char *model_json_text(json_t *value)
{
    char *text = json_dumps(value, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(value);
    PAYD_ASSERT(text);
    return text;
}

void model_id_new(const char *prefix, char out[PAYSIM_ID_MAX + 1])
{
    uint8_t rnd[12];
    size_t n = strlen(prefix);
    PAYD_ASSERT(n + 2 * sizeof(rnd) <= PAYSIM_ID_MAX);
    rand_bytes(rnd, sizeof(rnd));
    memcpy(out, prefix, n);
    hex_encode(rnd, sizeof(rnd), out + n);
}
