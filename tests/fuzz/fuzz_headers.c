/*
 * fuzz_headers.c - what payd reads from request headers:
 *
 *   Authorization     the merchant's API key (api_dispatch on GET /v1/balance) and the admin
 *                     key (api_dispatch on GET /admin/guards, from a non-loopback peer)
 *   Idempotency-Key   api_read_idem_key()
 *   Accept-Language   api_message(): the end-user sentence, English or Chinese
 *   X-Request-Id      the token check http/server.c keeps a client's id with (token_valid)
 *   Paysim-Timestamp, Paysim-Signature
 *                     sign_verify() of a channel notification over an empty body; "-" as the
 *                     timestamp stands for now, as the signature for the right one
 *
 * Input: header lines "Name: value" (as on the wire, without CR); a line
 * without ':' is skipped. Values lose their surrounding blanks, as
 * libmicrohttpd trims them.
 *
 * Checked: one well-formed answer per request (lib/check.h); a merchant
 * route answers 200 exactly for "Bearer " + a fixture merchant's key and
 * shows that merchant's balance only, else 401; the admin route answers
 * 200 exactly for "Bearer " + the admin key, else 401; an Idempotency-Key
 * is taken exactly when it is 1 to 255 bytes without control characters,
 * copied whole, and refused with a 400 naming the header otherwise; the
 * sentence is one of the two, English when the header names no Chinese;
 * a kept request id is 1 to 64 of A-Z a-z 0-9 . _ : -; a signature is
 * accepted only when it is the HMAC of the timestamp and body within the
 * window, a missing header is told from a malformed one.
 */
#include <string.h>
#include <strings.h>

#include "api/internal.h"
#include "lib/check.h"
#include "lib/fixture.h"
#include "lib/request.h"
#include "util/sign.h"
#include "util/util.h"

#define HEADERS_MAX 16

struct header {
    char *name, *value;
};

static void add_headers(http_req *r, const struct header *h, int n)
{
    for (int i = 0; i < n; i++)
        fuzz_req_header(r, h[i].name, h[i].value);
}

static void check_merchant_auth(struct app *app, const struct header *h, int n, const char *auth)
{
    http_req *r = fuzz_req_new("GET", "/v1/balance");
    add_headers(r, h, n);
    fuzz_req_serve(r, api_dispatch, app);
    static const int allowed[] = {200, 401, 0};
    json_t *answer = fuzz_check_answer(r, allowed);
    bool a = auth && strcmp(auth, "Bearer " FUZZ_KEY_A) == 0;
    bool b = auth && strcmp(auth, "Bearer " FUZZ_KEY_B) == 0;
    FUZZ_CHECK((fuzz_req_status(r) == 200) == (a || b),
               "Authorization %s answered %d", auth ? auth : "(none)", fuzz_req_status(r));
    if (fuzz_req_status(r) == 200) {
        /* A's balance holds its paid CNY; B's holds nothing paid. */
        json_t *data = json_object_get(answer, "data");
        FUZZ_CHECK(json_is_array(data) && json_array_size(data) == (a ? 1u : 0u),
                   "the balance of the wrong merchant");
    }
    json_decref(answer);
    fuzz_req_free(r);
}

static void check_admin_auth(struct app *app, const struct header *h, int n, const char *auth)
{
    http_req *r = fuzz_req_new("GET", "/admin/guards");
    add_headers(r, h, n);
    fuzz_req_loopback(r, false);
    fuzz_req_serve(r, api_dispatch, app);
    static const int allowed[] = {200, 401, 0};
    json_decref(fuzz_check_answer(r, allowed));
    bool admin = auth && strcmp(auth, "Bearer " FUZZ_ADMIN_KEY) == 0;
    FUZZ_CHECK((fuzz_req_status(r) == 200) == admin, "admin Authorization %s answered %d",
               auth ? auth : "(none)", fuzz_req_status(r));
    fuzz_req_free(r);
}

static void check_idem_key(struct app *app, const struct header *h, int n, const char *key)
{
    http_req *r = fuzz_req_new("POST", "/v1/payments");
    add_headers(r, h, n);
    struct api_ctx c = {.app = app};
    bool taken = api_read_idem_key(&c, r);
    bool ok = true;
    if (key) {
        size_t len = strlen(key);
        ok = len >= 1 && len <= IDEM_KEY_MAX;
        for (const unsigned char *p = (const unsigned char *)key; *p; p++)
            ok = ok && *p >= 0x20 && *p != 0x7f;
    }
    FUZZ_CHECK(taken == ok, "Idempotency-Key %s: taken %d", key, taken);
    if (taken) {
        FUZZ_CHECK(fuzz_req_status(r) == 0, "a taken key was answered");
        FUZZ_CHECK(c.has_idem_key == (key != NULL) && (!key || strcmp(c.idem_key, key) == 0),
                   "the key kept is not the key sent");
    } else {
        static const int allowed[] = {400, 0};
        json_t *answer = fuzz_check_answer(r, allowed);
        FUZZ_CHECK(strcmp(fuzz_error_code(answer), "idempotency_key_invalid") == 0 &&
                       strcmp(fuzz_error_param(answer), "Idempotency-Key") == 0,
                   "a bad key refused as %s", fuzz_error_code(answer));
        json_decref(answer);
    }
    fuzz_req_free(r);
}

static void check_language(const struct header *h, int n, const char *lang)
{
    static const enum api_msg msgs[] = {API_MSG_OVERLOADED, API_MSG_CHANNEL_DOWN,
                                        API_MSG_RATE_LIMITED, API_MSG_RATE_LIMITED_GLOBAL};
    http_req *r = fuzz_req_new("GET", "/");
    add_headers(r, h, n);
    http_req *en = fuzz_req_new("GET", "/");
    http_req *zh = fuzz_req_new("GET", "/");
    fuzz_req_header(zh, "Accept-Language", "zh-CN");
    bool names_zh = false;
    for (const char *p = lang; p && *p && !names_zh; p++)
        names_zh = strncasecmp(p, "zh", 2) == 0;
    for (size_t i = 0; i < ARRAY_LEN(msgs); i++) {
        const char *got = api_message(r, msgs[i]);
        const char *english = api_message(en, msgs[i]);
        const char *chinese = api_message(zh, msgs[i]);
        FUZZ_CHECK(strcmp(english, chinese) != 0, "no Chinese for zh-CN");
        FUZZ_CHECK(got == english || got == chinese, "a sentence that is neither");
        FUZZ_CHECK(names_zh || got == english, "Chinese for Accept-Language %s", lang);
    }
    fuzz_req_free(zh);
    fuzz_req_free(en);
    fuzz_req_free(r);
}

static void check_request_id(const char *id)
{
    if (!id)
        return;
    bool kept = token_valid(id, HTTP_REQUEST_ID_MAX, "._:-");
    size_t len = strlen(id);
    bool want = len >= 1 && len <= HTTP_REQUEST_ID_MAX &&
                strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") ==
                    len;
    FUZZ_CHECK(kept == want, "X-Request-Id %s kept %d", id, kept);
}

static void check_signature(const char *ts_in, const char *sig_in)
{
    int64_t now_s = clock_wall_ms() / 1000;
    char now[24], right[SIGN_HEX_LEN + 1];
    snprintf(now, sizeof(now), "%lld", (long long)now_s);
    const char *ts = ts_in && strcmp(ts_in, "-") == 0 ? now : ts_in;
    const char *sig = sig_in;
    if (sig && strcmp(sig, "-") == 0 && ts && *ts) {
        sign_compute(FUZZ_PSP_SECRET, ts, "", 0, right);
        sig = right;
    }
    enum sign_check rc = sign_verify(FUZZ_PSP_SECRET, ts, sig, "", 0, now_s);
    bool missing = !ts || !sig || !*ts || !*sig;
    FUZZ_CHECK((rc == SIGN_MISSING) == missing, "sign_verify %d for a %s header", rc,
               missing ? "missing" : "present");
    if (rc != SIGN_OK)
        return;
    size_t n = strlen(ts);
    FUZZ_CHECK(n >= 1 && n <= 12 && strspn(ts, "0123456789") == n, "accepted timestamp %s", ts);
    long long t = atoll(ts);
    FUZZ_CHECK(t >= now_s - SIGN_WINDOW_S && t <= now_s + SIGN_WINDOW_S,
               "accepted stale timestamp %s", ts);
    char want[SIGN_HEX_LEN + 1], given[SIGN_HEX_LEN + 1];
    sign_compute(FUZZ_PSP_SECRET, ts, "", 0, want);
    FUZZ_CHECK(strlen(sig) == SIGN_HEX_LEN, "accepted signature of %zu bytes", strlen(sig));
    for (int i = 0; i <= SIGN_HEX_LEN; i++)
        given[i] = (char)(sig[i] >= 'A' && sig[i] <= 'F' ? sig[i] - 'A' + 'a' : sig[i]);
    FUZZ_CHECK(strcmp(want, given) == 0, "accepted a signature that is not the HMAC");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct app *app = fuzz_app();
    struct header h[HEADERS_MAX];
    int n = 0;
    char *line;
    while (n < HEADERS_MAX && (line = fuzz_take_line(&data, &size)) != NULL) {
        char *colon = strchr(line, ':');
        if (!colon || colon == line) {
            free(line);
            continue;
        }
        *colon = '\0';
        h[n].name = line;
        h[n].value = colon + 1;
        n++;
    }
    /* What payd reads: the first of each name, trimmed. */
    http_req *seen = fuzz_req_new("GET", "/");
    add_headers(seen, h, n);

    check_merchant_auth(app, h, n, http_header(seen, "Authorization"));
    check_admin_auth(app, h, n, http_header(seen, "Authorization"));
    check_idem_key(app, h, n, http_header(seen, "Idempotency-Key"));
    check_language(h, n, http_header(seen, "Accept-Language"));
    check_request_id(http_header(seen, "X-Request-Id"));
    check_signature(http_header(seen, SIGN_HEADER_TIMESTAMP),
                    http_header(seen, SIGN_HEADER_SIGNATURE));

    fuzz_req_free(seen);
    for (int i = 0; i < n; i++)
        free(h[i].name);
    return 0;
}
