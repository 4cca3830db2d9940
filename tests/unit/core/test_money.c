/*
 * test_money.c - core/money: the currency table (known codes, the X.. codes
 * and malformed codes that are not in it, minor-unit exponents), the order
 * amount bounds, and money_add's overflow check in both directions.
 */
#include "../testutil.h"

#include "core/money.h"

static void test_known_currencies(void **state)
{
    (void)state;
    static const struct {
        const char *code;
        int exponent;
    } known[] = {
        {"CNY", 2}, {"USD", 2}, {"EUR", 2}, {"JPY", 0}, {"BHD", 3}, {"KWD", 3},
        {"KRW", 0}, {"GBP", 2}, {"AED", 2}, {"ZWL", 2}, /* the table's first and last */
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        const struct currency *c = money_currency_find(known[i].code);
        assert_non_null(c);
        assert_string_equal(c->code, known[i].code);
        assert_int_equal(c->exponent, known[i].exponent);
    }
}

static void test_unknown_currencies(void **state)
{
    (void)state;
    static const char *const unknown[] = {
        "XAU", "XTS", "XXX", "XAG", "XDR", /* metals, testing, no currency, SDR */
        "cny", "Cny", "usd",               /* codes are upper case */
        "", "C", "CN", "CNYY", "CNY ",     /* wrong length */
        "AAA", "ZZZ", "ABC",               /* well formed, not ISO 4217 */
    };
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        if (money_currency_find(unknown[i]) != NULL)
            fail_msg("'%s' was found but is not a payable currency", unknown[i]);
    }
}

/* The table is bisected, so every entry must be findable: walk the whole
 * upper-case alphabet and check that what is found is what was asked for. */
static void test_every_found_code_matches(void **state)
{
    (void)state;
    int found = 0;
    char code[4] = "AAA";
    for (char a = 'A'; a <= 'Z'; a++)
        for (char b = 'A'; b <= 'Z'; b++)
            for (char c = 'A'; c <= 'Z'; c++) {
                code[0] = a;
                code[1] = b;
                code[2] = c;
                const struct currency *cur = money_currency_find(code);
                if (!cur)
                    continue;
                found++;
                assert_string_equal(cur->code, code);
                assert_true(cur->exponent >= 0 && cur->exponent <= 3);
                assert_true(code[0] != 'X' || strcmp(code, "XAF") == 0 ||
                            strcmp(code, "XCD") == 0 || strcmp(code, "XOF") == 0 ||
                            strcmp(code, "XPF") == 0);
            }
    assert_true(found > 140);
}

static void test_amount_bounds(void **state)
{
    (void)state;
    assert_false(money_amount_valid(0));
    assert_true(money_amount_valid(1));
    assert_true(money_amount_valid(INT64_C(1000000000000000)));
    assert_int_equal(MONEY_AMOUNT_MAX, INT64_C(1000000000000000));
    assert_false(money_amount_valid(INT64_C(1000000000000001)));
    assert_false(money_amount_valid(-1));
    assert_false(money_amount_valid(INT64_MIN));
    assert_false(money_amount_valid(INT64_MAX));
}

static void test_add_plain(void **state)
{
    (void)state;
    int64_t a = 100;
    assert_int_equal(money_add(&a, 23), 0);
    assert_int_equal(a, 123);
    assert_int_equal(money_add(&a, -200), 0);
    assert_int_equal(a, -77);
    a = INT64_MAX - 1;
    assert_int_equal(money_add(&a, 1), 0);
    assert_int_equal(a, INT64_MAX);
    a = INT64_MIN + 1;
    assert_int_equal(money_add(&a, -1), 0);
    assert_int_equal(a, INT64_MIN);
}

static void test_add_overflow_up(void **state)
{
    (void)state;
    int64_t a = INT64_MAX;
    assert_int_equal(money_add(&a, 1), -1);
    assert_int_equal(a, INT64_MAX);
    a = INT64_MAX - 5;
    assert_int_equal(money_add(&a, INT64_MAX), -1);
    assert_int_equal(a, INT64_MAX - 5);
}

static void test_add_overflow_down(void **state)
{
    (void)state;
    int64_t a = INT64_MIN;
    assert_int_equal(money_add(&a, -1), -1);
    assert_int_equal(a, INT64_MIN);
    a = -10;
    assert_int_equal(money_add(&a, INT64_MIN), -1);
    assert_int_equal(a, -10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_currencies),
        cmocka_unit_test(test_unknown_currencies),
        cmocka_unit_test(test_every_found_code_matches),
        cmocka_unit_test(test_amount_bounds),
        cmocka_unit_test(test_add_plain),
        cmocka_unit_test(test_add_overflow_up),
        cmocka_unit_test(test_add_overflow_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
