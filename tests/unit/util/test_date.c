/*
 * test_date.c - util: date_parse and date_format, the calendar dates of
 * payctl reconcile and the statements.
 */
#include "../testutil.h"

#include "util/util.h"

static void test_parse_valid(void **state)
{
    (void)state;
    int64_t ms = -1;
    assert_int_equal(date_parse("1970-01-01", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(date_parse("2026-11-29", &ms), 0);
    assert_int_equal(ms, 1795910400000LL); /* date -u -d 2026-11-29 +%s */
    assert_int_equal(date_parse("2024-02-29", &ms), 0); /* a leap day */
    char back[DATE_LEN + 1];
    date_format(ms, back);
    assert_string_equal(back, "2024-02-29");
    date_format(ms + DAY_MS - 1, back); /* the day's last millisecond */
    assert_string_equal(back, "2024-02-29");
    date_format(ms + DAY_MS, back);
    assert_string_equal(back, "2024-03-01");
}

static void test_parse_refused(void **state)
{
    (void)state;
    const char *bad[] = {"2026-02-30", "2025-02-29", "2026-13-01", "2026-00-10", "2026-1-01",
                         "2026-01-1",  "20260101",   "2026/01/01", "2026-01-01x", "",
                         "abcd-ef-gh", "2026-04-31", " 2026-01-01"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ms = 42;
        if (date_parse(bad[i], &ms) != -1)
            fail_msg("accepted %s", bad[i]);
        assert_int_equal(ms, 42); /* untouched */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
