/*
 * fuzz_json_bodies.c - the JSON bodies of the API's writes, end to end:
 * POST /v1/orders, POST /v1/payments, POST /v1/refunds and PUT /v1/webhook
 * through the router (api_dispatch) as merchant A of the fixture
 * (lib/fixture.h), with its SQLite store; and PUT /admin/guards through its
 * handler on a guards set of its own.
 *
 * Input: one byte that picks the endpoint, then the body.
 *
 *   o  POST /v1/orders          p  POST /v1/payments   P  the same with an Idempotency-Key
 *   w  PUT /v1/webhook          r  POST /v1/refunds    R  the same with an Idempotency-Key
 *   g  PUT /admin/guards        any other byte: one of these by its value
 *
 * The Idempotency-Key is one of eight, chosen by a hash of the body, so
 * that replays (the same body again) and reuse with another body (422)
 * both happen.
 *
 * Checked for every input (lib/check.h): one answer, a JSON body, the
 * error object on errors. Then against the rules docs/API.md states for
 * each body, checked here independently of payd's code: a body that breaks
 * one is answered 400 with a param that names a field of the resource (or
 * the unknown field), and one that keeps them all is not; what a 2xx answer
 * shows is what was sent (amount, currency, number, description, ids) and
 * lies within the documented bounds; merchant B's records are never found.
 * After a guards change, the rate limits in force are the ones shown: the
 * scratch guards are asked for tokens at chosen instants (check_limits).
 */
#include <string.h>

#include "api/internal.h"
#include "core/money.h"
#include "lib/check.h"
#include "lib/fixture.h"
#include "lib/request.h"
#include "util/netaddr.h"

enum endpoint { ORDER, PAYMENT, PAYMENT_KEYED, REFUND, REFUND_KEYED, WEBHOOK, GUARDS, N_ENDPOINTS };

static enum endpoint endpoint_of(uint8_t b)
{
    switch (b) {
    case 'o': return ORDER;
    case 'p': return PAYMENT;
    case 'P': return PAYMENT_KEYED;
    case 'r': return REFUND;
    case 'R': return REFUND_KEYED;
    case 'w': return WEBHOOK;
    case 'g': return GUARDS;
    default: return (enum endpoint)(b % N_ENDPOINTS);
    }
}

/* ---- the documented rules, checked on the body as jansson reads it ---- */

/* A string member that is a C string (no NUL inside) of min_len … max_len
 * bytes; absent_ok lets it be absent or null. */
static bool str_ok(const json_t *obj, const char *name, size_t min_len, size_t max_len,
                   bool absent_ok)
{
    const json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v))
        return absent_ok;
    if (!json_is_string(v))
        return false;
    size_t n = json_string_length(v);
    return strlen(json_string_value(v)) == n && n >= min_len && n <= max_len;
}

static bool amount_ok(const json_t *obj)
{
    const json_t *v = json_object_get(obj, "amount");
    return json_is_integer(v) && json_integer_value(v) >= 1 &&
           json_integer_value(v) <= MONEY_AMOUNT_MAX;
}

static bool only_fields(const json_t *obj, const char *const *fields)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        bool known = false;
        for (const char *const *f = fields; *f; f++)
            known = known || strcmp(*f, key) == 0;
        if (!known)
            return false;
    }
    return true;
}

static bool in_list(const char *s, const char *const *list)
{
    for (const char *const *l = list; *l; l++)
        if (s && strcmp(*l, s) == 0)
            return true;
    return false;
}

static const char *const order_fields[] = {"merchant_order_no", "amount", "currency",
                                           "description", NULL};
static const char *const payment_fields[] = {"order_id", "channel", "method", NULL};
static const char *const refund_fields[] = {"payment_id", "amount", "reason", NULL};
static const char *const webhook_fields[] = {"url", NULL};

static bool order_valid(const json_t *b)
{
    if (!only_fields(b, order_fields) || !amount_ok(b) ||
        !str_ok(b, "merchant_order_no", 1, ORDER_NO_MAX, false) ||
        !fuzz_printable_ascii(fuzz_json_str(b, "merchant_order_no")) ||
        !str_ok(b, "currency", 3, 3, false) || !str_ok(b, "description", 0, DESCRIPTION_MAX, true))
        return false;
    return money_currency_find(fuzz_json_str(b, "currency")) != NULL;
}

static bool payment_valid(struct app *app, const json_t *b)
{
    if (!only_fields(b, payment_fields) || !str_ok(b, "order_id", 1, ID_MAX - 1, false) ||
        !str_ok(b, "channel", 1, CHANNEL_NAME_MAX, false) ||
        !str_ok(b, "method", 1, METHOD_NAME_MAX, false))
        return false;
    channel *ch = channel_set_find(app->channels, fuzz_json_str(b, "channel"));
    return ch && channel_method_valid(ch, fuzz_json_str(b, "method"));
}

static bool refund_valid(const json_t *b)
{
    return only_fields(b, refund_fields) && str_ok(b, "payment_id", 1, ID_MAX - 1, false) &&
           amount_ok(b) && str_ok(b, "reason", 0, REFUND_REASON_MAX, true);
}

static bool webhook_valid(const json_t *b)
{
    if (!only_fields(b, webhook_fields) || !str_ok(b, "url", 1, WEBHOOK_URL_MAX, false))
        return false;
    const char *u = fuzz_json_str(b, "url");
    size_t scheme = strncmp(u, "https://", 8) == 0 ? 8 : strncmp(u, "http://", 7) == 0 ? 7 : 0;
    if (scheme == 0 || strlen(u) == scheme)
        return false;
    for (const unsigned char *p = (const unsigned char *)u; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return false;
    /* A URL libcurl cannot parse is refused, and the fixture keeps
     * [webhooks] allow_private off: so is one naming a non-public address
     * (the kinds are tests/unit's). */
    enum addr_kind kind;
    return addr_kind_of_url(u, &kind) == 0 && kind == ADDR_PUBLIC;
}

/* The body as payd's rules read it: NULL when it is not a JSON object. */
static json_t *parse_body(const uint8_t *data, size_t size)
{
    json_t *b = json_loadb((const char *)data, size,
                           JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (b && !json_is_object(b)) {
        json_decref(b);
        b = NULL;
    }
    return b;
}

/* A 400's param names a field of the resource, or the unknown field. */
static void check_refusal(const json_t *answer, const json_t *body, const char *const *fields)
{
    const char *code = fuzz_error_code(answer);
    const char *param = fuzz_error_param(answer);
    if (code && strcmp(code, "parameter_unknown") == 0) {
        FUZZ_CHECK(param && !in_list(param, fields) && json_object_get(body, param),
                   "parameter_unknown names %s", param ? param : "nothing");
        return;
    }
    FUZZ_CHECK(!param || in_list(param, fields) || strcmp(param, "Idempotency-Key") == 0,
               "a 400 (%s) names param %s, not a field", code, param);
}

/* ---- the checks of each answer ---- */

static void check_order(const http_req *r, const json_t *answer, const json_t *body)
{
    int status = fuzz_req_status(r);
    bool valid = body && order_valid(body);
    FUZZ_CHECK(valid == (status != 400), "orders: rules say %s, payd answered %d (%s)",
               valid ? "valid" : "invalid", status, fuzz_error_code(answer));
    if (status == 400) {
        check_refusal(answer, body, order_fields);
        return;
    }
    if (status == 409) {
        FUZZ_CHECK(strcmp(fuzz_error_code(answer), "order_number_reused") == 0, "orders: 409 %s",
                   fuzz_error_code(answer));
        return;
    }
    /* 201 new, 200 the same order again: the order shown is the one sent */
    FUZZ_CHECK(id_valid("ord_", fuzz_json_str(answer, "id")), "orders: id %s",
               fuzz_json_str(answer, "id"));
    FUZZ_CHECK(json_equal(json_object_get(answer, "merchant_order_no"),
                          json_object_get(body, "merchant_order_no")) &&
                   json_equal(json_object_get(answer, "amount"), json_object_get(body, "amount")) &&
                   json_equal(json_object_get(answer, "currency"),
                              json_object_get(body, "currency")),
               "orders: the order shown is not the one sent");
    const json_t *sent = json_object_get(body, "description");
    const json_t *shown = json_object_get(answer, "description");
    FUZZ_CHECK(sent && !json_is_null(sent) ? json_equal(sent, shown) : json_is_null(shown),
               "orders: the description shown is not the one sent");
    if (status == 201)
        FUZZ_CHECK(strcmp(fuzz_json_str(answer, "status"), "pending_payment") == 0,
                   "orders: a new order is %s", fuzz_json_str(answer, "status"));
}

static void check_payment(struct app *app, const http_req *r, const json_t *answer,
                          const json_t *body)
{
    int status = fuzz_req_status(r);
    bool valid = body && payment_valid(app, body);
    FUZZ_CHECK(valid == (status != 400), "payments: rules say %s, payd answered %d (%s)",
               valid ? "valid" : "invalid", status, fuzz_error_code(answer));
    if (status == 400) {
        check_refusal(answer, body, payment_fields);
        return;
    }
    const char *order_id = fuzz_json_str(body, "order_id");
    if (strcmp(order_id, FUZZ_ORDER_OTHER) == 0)
        FUZZ_CHECK(status == 404 || status == 422, "payments: B's order answered %d to A",
                   status);
    if (status != 202)
        return;
    /* Accepted now, or the first answer replayed (the same key and body). */
    FUZZ_CHECK(id_valid("pay_", fuzz_json_str(answer, "id")), "payments: id %s",
               fuzz_json_str(answer, "id"));
    FUZZ_CHECK(json_equal(json_object_get(answer, "order_id"), json_object_get(body, "order_id")) &&
                   json_equal(json_object_get(answer, "method"), json_object_get(body, "method")),
               "payments: the payment shown is not the one asked for");
    FUZZ_CHECK(strcmp(fuzz_json_str(answer, "status"), "processing") == 0,
               "payments: accepted as %s", fuzz_json_str(answer, "status"));
    json_t *amount = json_object_get(answer, "amount");
    FUZZ_CHECK(json_is_integer(amount) && money_amount_valid(json_integer_value(amount)) &&
                   money_currency_find(fuzz_json_str(answer, "currency")),
               "payments: amount or currency out of bounds");
}

static void check_refund(const http_req *r, const json_t *answer, const json_t *body)
{
    int status = fuzz_req_status(r);
    const char *code = fuzz_error_code(answer);
    bool exceeds = status == 400 && strcmp(code, "amount_exceeds_refundable") == 0;
    bool valid = body && refund_valid(body);
    FUZZ_CHECK(valid == (status != 400 || exceeds),
               "refunds: rules say %s, payd answered %d (%s)", valid ? "valid" : "invalid",
               status, code);
    if (status == 400) {
        check_refusal(answer, body, refund_fields);
        return;
    }
    const char *payment_id = fuzz_json_str(body, "payment_id");
    if (strcmp(payment_id, FUZZ_PAYMENT_OTHER) == 0)
        FUZZ_CHECK(status == 404 || status == 422, "refunds: B's payment answered %d to A",
                   status);
    if (status != 202)
        return;
    FUZZ_CHECK(id_valid("re_", fuzz_json_str(answer, "id")), "refunds: id %s",
               fuzz_json_str(answer, "id"));
    FUZZ_CHECK(strcmp(payment_id, FUZZ_PAYMENT_PAID) == 0, "refunds: of %s accepted", payment_id);
    FUZZ_CHECK(json_equal(json_object_get(answer, "payment_id"),
                          json_object_get(body, "payment_id")) &&
                   json_equal(json_object_get(answer, "amount"), json_object_get(body, "amount")),
               "refunds: the refund shown is not the one asked for");
    FUZZ_CHECK(strcmp(fuzz_json_str(answer, "currency"), "CNY") == 0 &&
                   strcmp(fuzz_json_str(answer, "order_id"), FUZZ_ORDER_PAID) == 0,
               "refunds: not the payment's currency or order");
    const json_t *sent = json_object_get(body, "reason");
    const json_t *shown = json_object_get(answer, "reason");
    FUZZ_CHECK(sent && !json_is_null(sent) ? json_equal(sent, shown) : json_is_null(shown),
               "refunds: the reason shown is not the one sent");
}

static void check_webhook(const http_req *r, const json_t *answer, const json_t *body)
{
    int status = fuzz_req_status(r);
    bool valid = body && webhook_valid(body);
    FUZZ_CHECK(valid == (status == 200), "webhook: rules say %s, payd answered %d (%s)",
               valid ? "valid" : "invalid", status, fuzz_error_code(answer));
    if (status != 200) {
        check_refusal(answer, body, webhook_fields);
        const char *code = fuzz_error_code(answer);
        enum addr_kind kind = ADDR_PUBLIC;
        if (code && strcmp(code, "url_not_allowed") == 0)
            FUZZ_CHECK(addr_kind_of_url(fuzz_json_str(body, "url"), &kind) == 0 &&
                           kind != ADDR_PUBLIC,
                       "webhook: url_not_allowed for a public host");
        return;
    }
    FUZZ_CHECK(json_equal(json_object_get(answer, "url"), json_object_get(body, "url")),
               "webhook: the url shown is not the one sent");
    const char *secret = fuzz_json_str(answer, "secret");
    FUZZ_CHECK(secret && strlen(secret) == WEBHOOK_SECRET_LEN &&
                   strncmp(secret, "whsec_", 6) == 0 &&
                   strspn(secret + 6, "0123456789abcdef") == WEBHOOK_SECRET_LEN - 6,
               "webhook: secret %s", secret ? secret : "none");
}

/* ---- the limits a guards change puts in force ---- */

typedef bool take_fn(guards *g, int64_t now_ns, int64_t *retry_after_s);

static bool take_global(guards *g, int64_t now_ns, int64_t *retry_after_s)
{
    return guards_take_global(g, now_ns, retry_after_s);
}

static bool take_merchant(guards *g, int64_t now_ns, int64_t *retry_after_s)
{
    return guards_take_merchant(g, FUZZ_MERCHANT_A, now_ns, retry_after_s);
}

/* The limit shown in the view (rate per second, burst) holds: rate 0 lets
 * everything through; else at most burst are let through at one instant,
 * and once refused, within the next min(1 s, 0.5/rate) at most one more
 * (more would be a rate in force above the one shown). A refusal says
 * when to come back (>= 1 s). The times are the scratch guards' own,
 * later for each input. */
static void check_limit(guards *g, const json_t *view, take_fn *take, int64_t now_ns)
{
    double rate = json_number_value(json_object_get(view, "rate"));
    json_int_t burst = json_integer_value(json_object_get(view, "burst"));
    int64_t retry = 0;
    if (rate <= 0) {
        FUZZ_CHECK(take(g, now_ns, &retry), "a limit that is off refused");
        return;
    }
    FUZZ_CHECK(burst >= 1, "a limit of rate %g with burst %lld", rate, (long long)burst);
    if (burst > 64) {
        take(g, now_ns, &retry);
        return;
    }
    bool refused = false;
    for (json_int_t i = 0; i <= burst && !refused; i++)
        refused = !take(g, now_ns, &retry);
    FUZZ_CHECK(refused, "rate %g burst %lld: %lld let through at once", rate, (long long)burst,
               (long long)burst + 1);
    FUZZ_CHECK(retry >= 1, "a refusal with Retry-After %lld", (long long)retry);
    double window_s = rate >= 0.5 ? 0.5 / rate : 1;
    int64_t later = now_ns + (int64_t)(window_s * 1e9);
    int admitted = 0;
    for (json_int_t i = 0; i <= burst; i++)
        admitted += take(g, later, &retry) ? 1 : 0;
    FUZZ_CHECK(admitted <= 1, "rate %g burst %lld: %d let through within %g s of a refusal",
               rate, (long long)burst, admitted, window_s);
}

/* The pacer of each channel the change set a rate for paces at that rate
 * (1e9 / its interval in ns, within rounding), never faster; a rate below
 * one call in 2^61 ns (73 years) paces at that. */
static void check_pacers(struct app *app, guards *g, const json_t *body)
{
    const char *name;
    const json_t *v;
    json_object_foreach(json_object_get(body, "channels"), name, v) {
        int i = channel_set_index(app->channels, name);
        double want = json_number_value(json_object_get(v, "rate"));
        if (i < 0 || !json_is_number(json_object_get(v, "rate")))
            continue;
        double got = leaky_bucket_rate(guards_pacer(g, i));
        double slowest = 1e9 / (double)(INT64_MAX / 4);
        FUZZ_CHECK(want > 0 ? got > 0 && got <= (want > slowest ? want : slowest) * 1.01
                            : got == 0,
                   "channel %s: rate %g asked, %g in force", name, want, got);
    }
}

static void check_limits(struct app *app, guards *g, const json_t *answer, const json_t *body)
{
    static uint64_t n;
    /* about nine seconds on for each input, from a start far from zero;
     * wrapping after 2^24 inputs keeps it far from overflow */
    int64_t now_ns = (INT64_C(1) << 40) + (int64_t)(n++ % (UINT64_C(1) << 24)) * (INT64_C(1) << 33);
    const json_t *limits = json_object_get(answer, "limits");
    if (!limits)
        limits = answer;
    check_limit(g, json_object_get(limits, "global"), take_global, now_ns);
    check_limit(g, json_object_get(limits, "merchant"), take_merchant, now_ns);
    check_pacers(app, g, body);
}

/* ---- the requests ---- */

static const char *const paths[N_ENDPOINTS] = {
    [ORDER] = "/v1/orders",     [PAYMENT] = "/v1/payments", [PAYMENT_KEYED] = "/v1/payments",
    [REFUND] = "/v1/refunds",   [REFUND_KEYED] = "/v1/refunds", [WEBHOOK] = "/v1/webhook",
    [GUARDS] = "/admin/guards",
};

/* PUT /admin/guards on the scratch guards: the handler with a context of
 * its own (the route's admission is fuzz_headers.c's). */
static void guards_put(void *arg, http_req *r)
{
    struct app *scratch = arg;
    struct api_ctx c = {.app = scratch};
    api_guards_put(&c, r, "");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct app *app = fuzz_app();
    enum endpoint e = endpoint_of(data[0]);
    data++;
    size--;

    http_req *r = fuzz_req_new(e == WEBHOOK || e == GUARDS ? "PUT" : "POST", paths[e]);
    fuzz_req_body(r, data, size);
    fuzz_req_header(r, "Content-Type", "application/json");
    if (e == PAYMENT_KEYED || e == REFUND_KEYED) {
        uint32_t h = 2166136261u; /* FNV-1a */
        for (size_t i = 0; i < size; i++)
            h = (h ^ data[i]) * 16777619u;
        char key[32];
        snprintf(key, sizeof(key), "fuzz-key-%u", h % 8);
        fuzz_req_header(r, "Idempotency-Key", key);
    }

    if (e == GUARDS) {
        static struct app scratch;
        scratch = *app;
        scratch.guards = fuzz_scratch_guards();
        fuzz_req_header(r, "Authorization", "Bearer " FUZZ_ADMIN_KEY);
        fuzz_req_serve(r, guards_put, &scratch);
        static const int allowed[] = {200, 400, 0};
        json_t *answer = fuzz_check_answer(r, allowed);
        json_t *body = parse_body(data, size);
        if (fuzz_req_status(r) == 200)
            check_limits(app, scratch.guards, answer, body);
        json_decref(body);
        json_decref(answer);
        fuzz_req_free(r);
        return 0;
    }

    fuzz_req_header(r, "Authorization", "Bearer " FUZZ_KEY_A);
    fuzz_req_serve(r, api_dispatch, app);
    static const int allowed[] = {200, 201, 202, 400, 404, 409, 422, 0};
    json_t *answer = fuzz_check_answer(r, allowed);
    json_t *body = parse_body(data, size);
    switch (e) {
    case ORDER: check_order(r, answer, body); break;
    case PAYMENT:
    case PAYMENT_KEYED: check_payment(app, r, answer, body); break;
    case REFUND:
    case REFUND_KEYED: check_refund(r, answer, body); break;
    case WEBHOOK: check_webhook(r, answer, body); break;
    default: PAYD_ASSERT(!"an endpoint without checks");
    }
    json_decref(body);
    json_decref(answer);
    fuzz_req_free(r);
    return 0;
}
