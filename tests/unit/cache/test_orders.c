/*
 * test_orders.c - the order-facts cache (src/cache/orders.c): a put is
 * found by its id only, a colliding put replaces the slot's entry (never
 * returns another order's facts), and concurrent use stays consistent.
 */
#include "../testutil.h"

#include <pthread.h>

#include "cache/orders.h"

static struct order_facts facts(int i)
{
    struct order_facts f;
    memset(&f, 0, sizeof(f));
    snprintf(f.id, sizeof(f.id), "ord_%026d", i);
    snprintf(f.merchant_id, sizeof(f.merchant_id), "mch_%d", i % 7);
    f.amount_minor = 1000 + i;
    memcpy(f.currency, i % 2 ? "CNY" : "USD", 4);
    return f;
}

static void test_put_get(void **state)
{
    (void)state;
    order_cache *c = order_cache_new(1024);
    struct order_facts out, f = facts(42);
    assert_false(order_cache_get(c, f.id, &out));
    order_cache_put(c, &f);
    assert_true(order_cache_get(c, f.id, &out));
    assert_string_equal(out.merchant_id, f.merchant_id);
    assert_int_equal(out.amount_minor, 1042);
    assert_string_equal(out.currency, "USD");
    assert_false(order_cache_get(c, "ord_other", &out));
    order_cache_free(c);
}

static void test_collisions_never_mix(void **state)
{
    (void)state;
    order_cache *c = order_cache_new(8); /* far fewer slots than orders */
    for (int i = 0; i < 1000; i++) {
        struct order_facts f = facts(i);
        order_cache_put(c, &f);
    }
    int hits = 0;
    for (int i = 0; i < 1000; i++) {
        struct order_facts want = facts(i), out;
        if (order_cache_get(c, want.id, &out)) {
            hits++;
            assert_string_equal(out.id, want.id);
            assert_int_equal(out.amount_minor, want.amount_minor);
            assert_string_equal(out.merchant_id, want.merchant_id);
        }
    }
    assert_true(hits >= 1 && hits <= 8);
    order_cache_free(c);
}

static order_cache *shared;

static void *hammer(void *arg)
{
    int base = (int)(intptr_t)arg;
    for (int round = 0; round < 20000; round++) {
        struct order_facts f = facts(base + round % 500), out;
        order_cache_put(shared, &f);
        if (order_cache_get(shared, f.id, &out) && strcmp(out.id, f.id) == 0 &&
            out.amount_minor != f.amount_minor)
            return (void *)1; /* a torn entry */
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    shared = order_cache_new(64);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, (void *)(intptr_t)(i * 1000)), 0);
    for (int i = 0; i < 4; i++) {
        void *rc;
        pthread_join(t[i], &rc);
        assert_null(rc);
    }
    order_cache_free(shared);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get),
        cmocka_unit_test(test_collisions_never_mix),
        cmocka_unit_test(test_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
