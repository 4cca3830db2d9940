/*
 * fuzz_query.c - request targets of GET requests: the router's path match
 * (the {id} segment) and the query strings of the list endpoints, through
 * api_dispatch as merchant A of the fixture (lib/fixture.h):
 *
 *   /v1/payments?order_id=…   /v1/refunds?payment_id=…   /dashboard/data?since_ms=…
 *   /v1/orders/{id}   /v1/payments/{id}   /v1/refunds/{id}   and every other route
 *
 * Input: the request target, e.g. "/v1/payments?order_id=ord_…" (up to a
 * newline or the end). It is split and percent-decoded as libmicrohttpd
 * does (lib/request.h) before payd sees it.
 *
 * Checked: one well-formed answer (lib/check.h), 200, 400, 401 (the admin
 * routes), 404 or 405; no answer ever holds an id or number of merchant
 * B's records; a list answers 400 exactly when its filter is absent or
 * empty, and lists only records of the order or payment asked for; a
 * record read by id is that record; since_ms is refused exactly when it is
 * not 1 to 18 digits.
 */
#include <string.h>

#include "api/internal.h"
#include "lib/check.h"
#include "lib/fixture.h"
#include "lib/request.h"

/* Every list entry's member is value. */
static void check_list(const json_t *answer, const char *member, const char *value)
{
    const json_t *data = json_object_get(answer, "data");
    FUZZ_CHECK(json_is_array(data), "a list without data");
    size_t i;
    const json_t *item;
    json_array_foreach(data, i, item) {
        const char *got = fuzz_json_str(item, member);
        FUZZ_CHECK(got && strcmp(got, value) == 0, "a list by %s=%s holds %s", member, value,
                   got ? got : "(none)");
    }
}

static void check_filter(http_req *r, const json_t *answer, const char *name, const char *member)
{
    const char *value = http_query(r, name);
    int status = fuzz_req_status(r);
    bool missing = !value || !*value;
    FUZZ_CHECK(missing == (status == 400), "%s=%s answered %d", name, value ? value : "(none)",
               status);
    if (status == 200)
        check_list(answer, member, value);
}

/* GET PREFIX{id}: 200 shows the record of that id. */
static void check_by_id(const http_req *r, const json_t *answer, const char *prefix)
{
    const char *path = http_path(r);
    size_t n = strlen(prefix);
    if (strncmp(path, prefix, n) != 0 || fuzz_req_status(r) != 200)
        return;
    const char *id = path + n;
    FUZZ_CHECK(!strchr(id, '/'), "%s answered 200", path);
    const char *got = fuzz_json_str(answer, "id");
    FUZZ_CHECK(got && strcmp(got, id) == 0, "%s shows %s", path, got ? got : "(none)");
}

static void check_since(http_req *r)
{
    const char *since = http_query(r, "since_ms");
    size_t n = since ? strspn(since, "0123456789") : 0;
    bool bad = since && (n == 0 || n > 18 || since[n] != '\0');
    FUZZ_CHECK(bad == (fuzz_req_status(r) == 400), "since_ms=%s answered %d", since,
               fuzz_req_status(r));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct app *app = fuzz_app();
    char *target = fuzz_take_line(&data, &size);
    if (!target)
        return 0;
    http_req *r = fuzz_req_new("GET", target);
    fuzz_req_header(r, "Authorization", "Bearer " FUZZ_KEY_A);
    fuzz_req_serve(r, api_dispatch, app);
    static const int allowed[] = {200, 400, 401, 404, 405, 0};
    json_t *answer = fuzz_check_answer(r, allowed);

    const char *body = fuzz_req_answer(r, NULL);
    static const char *const others[] = {FUZZ_ORDER_OTHER, FUZZ_PAYMENT_OTHER, FUZZ_SERIAL_OTHER,
                                         FUZZ_MERCHANT_B};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
        FUZZ_CHECK(!strstr(body, others[i]), "merchant B's %s shown to A", others[i]);

    const char *path = http_path(r);
    if (strcmp(path, "/v1/payments") == 0)
        check_filter(r, answer, "order_id", "order_id");
    else if (strcmp(path, "/v1/refunds") == 0)
        check_filter(r, answer, "payment_id", "payment_id");
    else if (strcmp(path, "/dashboard/data") == 0)
        check_since(r);
    check_by_id(r, answer, "/v1/orders/");
    check_by_id(r, answer, "/v1/payments/");
    check_by_id(r, answer, "/v1/refunds/");

    json_decref(answer);
    fuzz_req_free(r);
    free(target);
    return 0;
}
