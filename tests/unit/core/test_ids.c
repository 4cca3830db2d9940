/*
 * test_ids.c - core/ids: object ids (prefix + 26 Crockford base32
 * characters, validation, uniqueness over 100k, ordering by time), serial
 * numbers (28 digits, the UTC date first, unique) and API keys ("sk_" + 48
 * hex, and a stable hash that differs per key).
 */
#include "../testutil.h"

#include <ctype.h>

#include "core/ids.h"

#define ALPHABET "0123456789abcdefghjkmnpqrstvwxyz"
#define UNIQUE_N 100000

/* 2026-11-25T09:03:46.123Z */
#define SOME_MS INT64_C(1795597426123)

static int cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void test_id_format(void **state)
{
    (void)state;
    static const char *const prefixes[] = {"ord_", "pay_", "mch_", "x_", "abcdefghijk_"};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        char id[ID_MAX];
        id_new(prefixes[i], SOME_MS, id);
        size_t plen = strlen(prefixes[i]);
        assert_int_equal(strlen(id), plen + ID_BODY_LEN);
        assert_memory_equal(id, prefixes[i], plen);
        for (size_t j = plen; id[j]; j++)
            if (!strchr(ALPHABET, id[j]))
                fail_msg("id %s has '%c' outside the base32 alphabet", id, id[j]);
        assert_true(id_valid(prefixes[i], id));
    }
}

static void test_id_valid_rejects(void **state)
{
    (void)state;
    char id[ID_MAX];
    id_new("ord_", SOME_MS, id);
    assert_true(id_valid("ord_", id));

    /* wrong prefix, or none */
    assert_false(id_valid("pay_", id));
    assert_false(id_valid("ord_", id + 4));
    assert_false(id_valid("ord_", ""));
    assert_false(id_valid("ord_", "ord_"));

    /* wrong length: one short, one long */
    char bad[ID_MAX + 2];
    snprintf(bad, sizeof(bad), "%s", id);
    bad[strlen(bad) - 1] = '\0';
    assert_false(id_valid("ord_", bad));
    snprintf(bad, sizeof(bad), "%s0", id);
    assert_false(id_valid("ord_", bad));

    /* one character outside the alphabet, at the start, middle and end; the
     * letters i l o u are excluded by Crockford, and upper case is not ours */
    static const char wrong[] = {'i', 'l', 'o', 'u', 'A', 'Z', '-', '_', ' ', '!'};
    static const size_t where[] = {4, 4 + 13, 4 + ID_BODY_LEN - 1};
    for (size_t w = 0; w < sizeof(where) / sizeof(where[0]); w++)
        for (size_t c = 0; c < sizeof(wrong); c++) {
            snprintf(bad, sizeof(bad), "%s", id);
            bad[where[w]] = wrong[c];
            if (id_valid("ord_", bad))
                fail_msg("'%s' accepted", bad);
        }
}

static void test_id_unique(void **state)
{
    (void)state;
    /* The same millisecond for all of them: uniqueness rests on the 80
     * random bits alone. */
    char(*ids)[ID_MAX] = calloc(UNIQUE_N, ID_MAX);
    assert_non_null(ids);
    for (int i = 0; i < UNIQUE_N; i++)
        id_new("pay_", SOME_MS, ids[i]);
    qsort(ids, UNIQUE_N, ID_MAX, cmp_str);
    for (int i = 1; i < UNIQUE_N; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            fail_msg("duplicate id %s", ids[i]);
    free(ids);
}

static void test_id_time_ordered(void **state)
{
    (void)state;
    /* The first 10 characters encode the milliseconds, most significant
     * first, in an alphabet that is in ASCII order: a later millisecond
     * gives a larger prefix and a larger id. */
    static const int64_t steps[] = {1, 2, 31, 32, 1000, 86400000, INT64_C(1) << 40};
    char prev[ID_MAX], next[ID_MAX];
    int64_t ms = SOME_MS;
    id_new("ord_", ms, prev);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        ms += steps[i];
        id_new("ord_", ms, next);
        if (memcmp(prev + 4, next + 4, 10) >= 0)
            fail_msg("%s is not before %s (step %lld)", prev, next, (long long)steps[i]);
        assert_true(strcmp(prev, next) < 0);
        memcpy(prev, next, sizeof(prev));
    }
    /* The same millisecond gives the same time prefix. */
    char a[ID_MAX], b[ID_MAX];
    id_new("ord_", SOME_MS, a);
    id_new("ord_", SOME_MS, b);
    assert_memory_equal(a, b, 4 + 10);
    assert_string_not_equal(a, b);
    /* Millisecond 0 is all zeros. */
    id_new("ord_", 0, a);
    assert_memory_equal(a, "ord_0000000000", 14);
}

static void test_serial_no(void **state)
{
    (void)state;
    char s[SERIAL_NO_LEN + 1];
    serial_no_new(SOME_MS, s);
    assert_int_equal(strlen(s), 28);
    for (int i = 0; i < 28; i++)
        assert_true(isdigit((unsigned char)s[i]));
    /* date and time to the second, in UTC */
    assert_memory_equal(s, "20261125090346", 14);
}

static void test_serial_no_unique(void **state)
{
    (void)state;
    char(*serials)[SERIAL_NO_LEN + 1] = calloc(UNIQUE_N, SERIAL_NO_LEN + 1);
    assert_non_null(serials);
    for (int i = 0; i < UNIQUE_N; i++) {
        serial_no_new(SOME_MS, serials[i]);
        assert_int_equal(strlen(serials[i]), SERIAL_NO_LEN);
    }
    qsort(serials, UNIQUE_N, SERIAL_NO_LEN + 1, cmp_str);
    for (int i = 1; i < UNIQUE_N; i++)
        if (strcmp(serials[i - 1], serials[i]) == 0)
            fail_msg("duplicate serial number %s", serials[i]);
    free(serials);
}

static void test_api_key_form(void **state)
{
    (void)state;
    char k1[API_KEY_LEN + 1], k2[API_KEY_LEN + 1];
    api_key_new(k1);
    api_key_new(k2);
    assert_int_equal(strlen(k1), API_KEY_LEN);
    assert_int_equal(API_KEY_LEN, 3 + 48);
    assert_memory_equal(k1, "sk_", 3);
    for (int i = 3; i < API_KEY_LEN; i++)
        assert_non_null(strchr("0123456789abcdef", k1[i]));
    assert_string_not_equal(k1, k2);
}

static void test_api_key_hash(void **state)
{
    (void)state;
    char k1[API_KEY_LEN + 1], k2[API_KEY_LEN + 1];
    char h1[65], h1again[65], h2[65];
    api_key_new(k1);
    api_key_new(k2);
    api_key_hash(k1, h1);
    api_key_hash(k1, h1again);
    api_key_hash(k2, h2);
    assert_int_equal(strlen(h1), 64);
    for (int i = 0; i < 64; i++)
        assert_non_null(strchr("0123456789abcdef", h1[i]));
    assert_string_equal(h1, h1again);
    assert_string_not_equal(h1, h2);

    /* It is SHA-256 of the key's bytes: check against a known vector. */
    char habc[65];
    api_key_hash("abc", habc);
    assert_string_equal(habc, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_format),
        cmocka_unit_test(test_id_valid_rejects),
        cmocka_unit_test(test_id_unique),
        cmocka_unit_test(test_id_time_ordered),
        cmocka_unit_test(test_serial_no),
        cmocka_unit_test(test_serial_no_unique),
        cmocka_unit_test(test_api_key_form),
        cmocka_unit_test(test_api_key_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
