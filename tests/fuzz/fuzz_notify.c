/*
 * fuzz_notify.c - POST /v1/notify/{channel}, a channel's signed
 * notification, end to end through api_dispatch: the signature headers
 * (sign_verify), the body (parse_notice in api/notify.c) and its
 * application to the fixture's store (lib/fixture.h: channel "psp", whose
 * payment PROC and refund PROC are processing).
 *
 * Input, three lines then the body:
 *
 *   psp                   the {channel} path segment (percent-decoded)
 *   -                     Paysim-Timestamp: "-" is now; empty: no header
 *   -                     Paysim-Signature: "-" is the right one for the
 *                         timestamp and body under psp's secret; empty: no header
 *   {"event":"charge.succeeded",…}
 *
 * With "-" twice most inputs get past the signature and reach the body.
 *
 * Checked: one well-formed answer (lib/check.h); a signature that is not
 * the HMAC of the timestamp and body within the window is answered 401 and
 * a good one never is; a signed body is refused 400 exactly when it breaks
 * the documented rules (docs/API.md, docs/paysim.md: event, notify_id,
 * status, amount, currency, the number and the channel's id), naming the
 * field; a 200 is "success" for a record of that channel with that amount
 * and currency, which is then succeeded, with the ledger still balanced.
 */
#include <string.h>

#include "api/internal.h"
#include "lib/check.h"
#include "lib/fixture.h"
#include "lib/request.h"
#include "util/sign.h"
#include "util/util.h"

#define NOTIFY_ID_MAX 64

static bool member_ok(const json_t *o, const char *name, size_t max)
{
    const json_t *v = json_object_get(o, name);
    return json_is_string(v) && json_string_length(v) >= 1 && json_string_length(v) <= max &&
           strlen(json_string_value(v)) == json_string_length(v);
}

/* The documented rules; *refund tells which event it is. */
static bool notice_valid(const uint8_t *body, size_t len, bool *refund)
{
    json_t *o = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, NULL);
    const char *event = fuzz_json_str(o, "event");
    *refund = event && strcmp(event, "refund.succeeded") == 0;
    const json_t *amount = json_object_get(o, "amount");
    const json_t *currency = json_object_get(o, "currency");
    bool ok = json_is_object(o) && event && (*refund || strcmp(event, "charge.succeeded") == 0) &&
              member_ok(o, "event", 32) && member_ok(o, "notify_id", NOTIFY_ID_MAX) &&
              member_ok(o, "status", 16) && strcmp(fuzz_json_str(o, "status"), "succeeded") == 0 &&
              json_is_integer(amount) && json_integer_value(amount) > 0 &&
              member_ok(o, "currency", 3) && json_string_length(currency) == 3 &&
              member_ok(o, *refund ? "out_refund_no" : "out_trade_no", CHAN_NUMBER_MAX) &&
              member_ok(o, *refund ? "refund_id" : "trade_no", CHANNEL_TXN_ID_MAX);
    json_decref(o);
    return ok;
}

static bool in_list(const char *s, const char *const *list)
{
    for (const char *const *l = list; *l; l++)
        if (s && strcmp(*l, s) == 0)
            return true;
    return false;
}

/* After a 200: the record named is succeeded, and the ledger balances. */
static void check_applied(struct app *app, const uint8_t *body, size_t len, bool refund)
{
    json_t *o = json_loadb((const char *)body, len, 0, NULL);
    const char *number = fuzz_json_str(o, refund ? "out_refund_no" : "out_trade_no");
    json_int_t amount = json_integer_value(json_object_get(o, "amount"));
    const char *currency = fuzz_json_str(o, "currency");
    if (refund) {
        FUZZ_CHECK(strcmp(number, FUZZ_REFUND_NO_PROC) == 0 && amount == FUZZ_REFUND_PROC_AMOUNT &&
                       strcmp(currency, "CNY") == 0,
                   "a refund notification for %s %lld %s applied", number, (long long)amount,
                   currency);
        struct refund rf;
        int rc = store_refund_get(app->store, FUZZ_MERCHANT_A, FUZZ_REFUND_PROC, &rf);
        FUZZ_CHECK(rc == STORE_OK && rf.status == PAYMENT_SUCCEEDED,
                   "the refund notified is not succeeded");
    } else {
        bool proc = strcmp(number, FUZZ_SERIAL_PROC) == 0 && amount == FUZZ_PROC_AMOUNT &&
                    strcmp(currency, "USD") == 0;
        bool paid = strcmp(number, FUZZ_SERIAL_PAID) == 0 && amount == FUZZ_PAID_AMOUNT &&
                    strcmp(currency, "CNY") == 0;
        FUZZ_CHECK(proc || paid, "a charge notification for %s %lld %s applied", number,
                   (long long)amount, currency);
        struct payment p;
        FUZZ_CHECK(store_payment_get(app->store, FUZZ_MERCHANT_A,
                                     proc ? FUZZ_PAYMENT_PROC : FUZZ_PAYMENT_PAID,
                                     &p) == STORE_OK &&
                       p.status == PAYMENT_SUCCEEDED,
                   "the payment notified is not succeeded");
    }
    FUZZ_CHECK(store_ledger_imbalance(app->store) == 0, "the ledger does not balance");
    json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct app *app = fuzz_app();
    char *chan = fuzz_take_line(&data, &size);
    char *ts_in = fuzz_take_line(&data, &size);
    char *sig_in = fuzz_take_line(&data, &size);
    if (!sig_in) {
        free(chan);
        free(ts_in);
        return 0;
    }
    int64_t now_s = clock_wall_ms() / 1000;
    char now[24], right[SIGN_HEX_LEN + 1];
    snprintf(now, sizeof(now), "%lld", (long long)now_s);
    const char *ts = strcmp(ts_in, "-") == 0 ? now : ts_in;
    const char *sig = sig_in;
    if (strcmp(sig_in, "-") == 0) {
        sign_compute(FUZZ_PSP_SECRET, ts, (const char *)data, size, right);
        sig = right;
    }

    char target[64 + 1024];
    snprintf(target, sizeof(target), "/v1/notify/%.1000s", chan);
    http_req *r = fuzz_req_new("POST", target);
    fuzz_req_header(r, SIGN_HEADER_TIMESTAMP, *ts ? ts : NULL);
    fuzz_req_header(r, SIGN_HEADER_SIGNATURE, *sig ? sig : NULL);
    fuzz_req_body(r, data, size);
    fuzz_req_serve(r, api_dispatch, app);
    static const int allowed[] = {200, 400, 401, 404, 409, 0};
    json_t *answer = fuzz_check_answer(r, allowed);
    int status = fuzz_req_status(r);
    bool psp = strcmp(http_path(r), "/v1/notify/psp") == 0;

    if (psp) {
        /* What payd saw, after the trimming of header values. */
        enum sign_check rc =
            sign_verify(FUZZ_PSP_SECRET, http_header(r, SIGN_HEADER_TIMESTAMP),
                        http_header(r, SIGN_HEADER_SIGNATURE), (const char *)data, size, now_s);
        long long t = atoll(ts);
        bool edge = t <= now_s - SIGN_WINDOW_S + 1 || t >= now_s + SIGN_WINDOW_S - 1;
        if (rc != SIGN_OK)
            FUZZ_CHECK(status == 401, "a bad signature (%d) answered %d", rc, status);
        else if (!edge)
            FUZZ_CHECK(status != 401, "a good signature answered 401");
        if (status != 401) {
            bool refund;
            bool valid = notice_valid(data, size, &refund);
            FUZZ_CHECK(valid == (status != 400), "rules say %s, payd answered %d (%s)",
                       valid ? "valid" : "invalid", status, fuzz_error_code(answer));
            static const char *const fields[] = {"event",       "notify_id",    "status",
                                                 "amount",      "currency",     "out_trade_no",
                                                 "trade_no",    "out_refund_no", "refund_id",
                                                 NULL};
            const char *param = fuzz_error_param(answer);
            if (status == 400)
                FUZZ_CHECK(!param || in_list(param, fields), "refused naming %s", param);
            if (status == 200) {
                FUZZ_CHECK(strcmp(fuzz_req_answer(r, NULL), "success") == 0,
                           "a 200 that is not success");
                check_applied(app, data, size, refund);
            }
        }
    } else {
        FUZZ_CHECK(status == 404, "a notification for channel %s answered %d", http_path(r),
                   status);
    }

    json_decref(answer);
    fuzz_req_free(r);
    free(chan);
    free(ts_in);
    free(sig_in);
    return 0;
}
