/*
 * check.c - the fuzz targets' shared invariants; see check.h.
 */
#include "lib/check.h"

#include <string.h>

#include "util/util.h"

static bool nonempty_str(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) > 0;
}

json_t *fuzz_check_answer(const http_req *r, const int *allowed)
{
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("PAYD_FUZZ_VERBOSE") != NULL;
    int status = fuzz_req_status(r);
    if (verbose)
        fprintf(stderr, "fuzz: %s %.200s -> %d %.300s\n", http_method(r), http_path(r), status,
                fuzz_req_answer(r, NULL));
    bool ok = false;
    for (const int *a = allowed; *a; a++)
        ok = ok || *a == status;
    size_t len;
    const char *body = fuzz_req_answer(r, &len);
    FUZZ_CHECK(ok, "unexpected status %d, body %.300s", status, body);

    const char *type = fuzz_req_content_type(r);
    FUZZ_CHECK(type != NULL, "no content type");
    if (strcmp(type, "application/json") != 0)
        return NULL;
    json_error_t jerr;
    json_t *j = json_loadb(body, len, 0, &jerr);
    FUZZ_CHECK(j != NULL, "the answer is not JSON (%s): %.300s", jerr.text, body);
    FUZZ_CHECK(json_is_object(j), "the answer is not an object: %.300s", body);
    if (status >= 400) {
        json_t *err = json_object_get(j, "error");
        FUZZ_CHECK(json_is_object(err), "a %d without an error object: %.300s", status, body);
        FUZZ_CHECK(nonempty_str(json_object_get(err, "type")) &&
                       nonempty_str(json_object_get(err, "code")) &&
                       nonempty_str(json_object_get(err, "message")),
                   "an error without type, code or message: %.300s", body);
        /* A param names a field or header; "" only for an unknown field
         * whose name is "" (the targets check which). */
        json_t *param = json_object_get(err, "param");
        FUZZ_CHECK(!param || json_is_string(param), "a param that is not a string: %.300s", body);
    }
    if (status == 429 || status == 503) {
        const char *retry = fuzz_req_answer_header(r, "Retry-After");
        FUZZ_CHECK(retry && *retry && strspn(retry, "0123456789") == strlen(retry) &&
                       strcmp(retry, "0") != 0,
                   "a %d without a good Retry-After (%s)", status, retry ? retry : "none");
    }
    return j;
}

const char *fuzz_error_code(const json_t *answer)
{
    return fuzz_json_str(json_object_get(answer, "error"), "code");
}

const char *fuzz_error_param(const json_t *answer)
{
    return fuzz_json_str(json_object_get(answer, "error"), "param");
}

const char *fuzz_json_str(const json_t *obj, const char *name)
{
    return json_string_value(json_object_get(obj, name));
}

char *fuzz_take_line(const uint8_t **data, size_t *size)
{
    if (*size == 0)
        return NULL;
    const uint8_t *nl = memchr(*data, '\n', *size);
    size_t n = nl ? (size_t)(nl - *data) : *size;
    char *line = xstrndup((const char *)*data, n);
    *data += nl ? n + 1 : n;
    *size -= nl ? n + 1 : n;
    return line;
}

bool fuzz_printable_ascii(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            return false;
    return true;
}
