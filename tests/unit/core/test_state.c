/*
 * test_state.c - core/state: every (state, event) pair of the order and
 * payment machines against a table of the legal moves, status names round
 * trip through parse, and unknown names are refused.
 */
#include "../testutil.h"

#include "core/state.h"

#define ORDER_EVENT_COUNT 4
#define PAYMENT_EVENT_COUNT 2
#define ILLEGAL (-1)

/* order_next[from][event]: the state the event leads to, or ILLEGAL. */
static const int order_next[ORDER_STATUS_COUNT][ORDER_EVENT_COUNT] = {
    [ORDER_PENDING_PAYMENT] =
        {
            [ORDER_EV_PAYMENT_SUCCEEDED] = ORDER_PAID,
            [ORDER_EV_CLOSE] = ORDER_CLOSED,
            [ORDER_EV_REFUND_PARTIAL] = ILLEGAL,
            [ORDER_EV_REFUND_FULL] = ILLEGAL,
        },
    [ORDER_PAID] =
        {
            [ORDER_EV_PAYMENT_SUCCEEDED] = ILLEGAL,
            [ORDER_EV_CLOSE] = ILLEGAL,
            [ORDER_EV_REFUND_PARTIAL] = ORDER_PARTIALLY_REFUNDED,
            [ORDER_EV_REFUND_FULL] = ORDER_REFUNDED,
        },
    [ORDER_CLOSED] =
        {
            [ORDER_EV_PAYMENT_SUCCEEDED] = ILLEGAL,
            [ORDER_EV_CLOSE] = ILLEGAL,
            [ORDER_EV_REFUND_PARTIAL] = ILLEGAL,
            [ORDER_EV_REFUND_FULL] = ILLEGAL,
        },
    [ORDER_PARTIALLY_REFUNDED] =
        {
            [ORDER_EV_PAYMENT_SUCCEEDED] = ILLEGAL,
            [ORDER_EV_CLOSE] = ILLEGAL,
            [ORDER_EV_REFUND_PARTIAL] = ORDER_PARTIALLY_REFUNDED,
            [ORDER_EV_REFUND_FULL] = ORDER_REFUNDED,
        },
    [ORDER_REFUNDED] =
        {
            [ORDER_EV_PAYMENT_SUCCEEDED] = ILLEGAL,
            [ORDER_EV_CLOSE] = ILLEGAL,
            [ORDER_EV_REFUND_PARTIAL] = ILLEGAL,
            [ORDER_EV_REFUND_FULL] = ILLEGAL,
        },
};

static const int payment_next[PAYMENT_STATUS_COUNT][PAYMENT_EVENT_COUNT] = {
    [PAYMENT_PROCESSING] = {[PAYMENT_EV_SUCCEED] = PAYMENT_SUCCEEDED,
                            [PAYMENT_EV_FAIL] = PAYMENT_FAILED},
    [PAYMENT_SUCCEEDED] = {[PAYMENT_EV_SUCCEED] = ILLEGAL, [PAYMENT_EV_FAIL] = ILLEGAL},
    [PAYMENT_FAILED] = {[PAYMENT_EV_SUCCEED] = ILLEGAL, [PAYMENT_EV_FAIL] = ILLEGAL},
};

static void test_order_transitions(void **state)
{
    (void)state;
    int legal = 0;
    for (int from = 0; from < ORDER_STATUS_COUNT; from++)
        for (int ev = 0; ev < ORDER_EVENT_COUNT; ev++) {
            /* a sentinel that no transition writes */
            enum order_status to = ORDER_STATUS_COUNT;
            int rc = order_transition((enum order_status)from, (enum order_event)ev, &to);
            int want = order_next[from][ev];
            if (want == ILLEGAL) {
                if (rc != -1)
                    fail_msg("order %s + event %d accepted", order_status_name(from), ev);
                assert_int_equal(to, ORDER_STATUS_COUNT); /* untouched */
            } else {
                if (rc != 0)
                    fail_msg("order %s + event %d refused", order_status_name(from), ev);
                assert_int_equal(to, want);
                legal++;
            }
        }
    assert_int_equal(legal, 6);
}

static void test_payment_transitions(void **state)
{
    (void)state;
    int legal = 0;
    for (int from = 0; from < PAYMENT_STATUS_COUNT; from++)
        for (int ev = 0; ev < PAYMENT_EVENT_COUNT; ev++) {
            enum payment_status to = PAYMENT_STATUS_COUNT;
            int rc = payment_transition((enum payment_status)from, (enum payment_event)ev, &to);
            int want = payment_next[from][ev];
            if (want == ILLEGAL) {
                if (rc != -1)
                    fail_msg("payment %s + event %d accepted", payment_status_name(from), ev);
                assert_int_equal(to, PAYMENT_STATUS_COUNT);
            } else {
                if (rc != 0)
                    fail_msg("payment %s + event %d refused", payment_status_name(from), ev);
                assert_int_equal(to, want);
                legal++;
            }
        }
    assert_int_equal(legal, 2);
}

static void test_order_names_round_trip(void **state)
{
    (void)state;
    static const char *const names[ORDER_STATUS_COUNT] = {
        "pending_payment", "paid", "closed", "partially_refunded", "refunded",
    };
    for (int s = 0; s < ORDER_STATUS_COUNT; s++) {
        const char *name = order_status_name((enum order_status)s);
        assert_string_equal(name, names[s]);
        enum order_status back = ORDER_STATUS_COUNT;
        assert_int_equal(order_status_parse(name, &back), 0);
        assert_int_equal(back, s);
    }
}

static void test_payment_names_round_trip(void **state)
{
    (void)state;
    static const char *const names[PAYMENT_STATUS_COUNT] = {"processing", "succeeded",
                                                            "failed"};
    for (int s = 0; s < PAYMENT_STATUS_COUNT; s++) {
        const char *name = payment_status_name((enum payment_status)s);
        assert_string_equal(name, names[s]);
        enum payment_status back = PAYMENT_STATUS_COUNT;
        assert_int_equal(payment_status_parse(name, &back), 0);
        assert_int_equal(back, s);
    }
}

static void test_parse_unknown(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "PAID", "Paid", "paid ", " paid", "pending", "pending_payment_", "processing",
        "succeeded", "unknown", "refund",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum order_status o = ORDER_STATUS_COUNT;
        if (order_status_parse(bad[i], &o) != -1)
            fail_msg("order status '%s' parsed", bad[i]);
        assert_int_equal(o, ORDER_STATUS_COUNT);
    }
    static const char *const bad_payment[] = {
        "", "Processing", "success", "fail", "paid", "pending_payment", "succeeded\n",
    };
    for (size_t i = 0; i < sizeof(bad_payment) / sizeof(bad_payment[0]); i++) {
        enum payment_status p = PAYMENT_STATUS_COUNT;
        if (payment_status_parse(bad_payment[i], &p) != -1)
            fail_msg("payment status '%s' parsed", bad_payment[i]);
        assert_int_equal(p, PAYMENT_STATUS_COUNT);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_transitions),
        cmocka_unit_test(test_payment_transitions),
        cmocka_unit_test(test_order_names_round_trip),
        cmocka_unit_test(test_payment_names_round_trip),
        cmocka_unit_test(test_parse_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
