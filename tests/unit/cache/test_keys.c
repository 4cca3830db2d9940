/*
 * test_keys.c - the API-key cache (src/cache/keys.c): hits under an
 * unchanged epoch, and emptied as soon as the merchant commands append to
 * DIR/merchants.epoch, including a lookup that raced with the change; the
 * same for an explicit invalidation (cluster mode's broadcast); and
 * entries that expire with a maximum age.
 */
#include "../testutil.h"

#include <time.h>

#include "cache/keys.h"

static const char *hash_a = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
static const char *hash_b = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

static struct merchant merchant_named(const char *name)
{
    struct merchant m;
    memset(&m, 0, sizeof(m));
    snprintf(m.id, sizeof(m.id), "mch_%s", name);
    snprintf(m.name, sizeof(m.name), "%s", name);
    return m;
}

static void test_miss_then_hit(void **state)
{
    (void)state;
    char dir[TEST_PATH_MAX];
    test_tmpdir(dir);
    key_cache *c = key_cache_new(dir, 64);
    struct merchant out;
    struct key_epoch epoch;
    assert_false(key_cache_get(c, hash_a, &out, &epoch));
    struct merchant m = merchant_named("shop");
    key_cache_put(c, hash_a, &m, &epoch);
    assert_true(key_cache_get(c, hash_a, &out, &epoch));
    assert_string_equal(out.id, "mch_shop");
    assert_false(key_cache_get(c, hash_b, &out, &epoch));
    key_cache_free(c);
    test_rmtree(dir);
}

static void test_epoch_bump_empties(void **state)
{
    (void)state;
    char dir[TEST_PATH_MAX];
    test_tmpdir(dir);
    key_cache *c = key_cache_new(dir, 64);
    struct merchant out, m = merchant_named("shop");
    struct key_epoch epoch;
    for (int round = 0; round < 3; round++) {
        assert_false(key_cache_get(c, hash_a, &out, &epoch));
        key_cache_put(c, hash_a, &m, &epoch);
        assert_true(key_cache_get(c, hash_a, &out, &epoch));
        /* A rotation in another process: the entry must not survive it,
         * however quickly it follows (the file grows by a byte each time). */
        assert_int_equal(key_cache_bump_epoch(dir), 0);
        assert_false(key_cache_get(c, hash_a, &out, &epoch));
    }
    key_cache_free(c);
    test_rmtree(dir);
}

static void test_put_after_change_is_dropped(void **state)
{
    (void)state;
    char dir[TEST_PATH_MAX];
    test_tmpdir(dir);
    key_cache *c = key_cache_new(dir, 64);
    struct merchant out, m = merchant_named("shop");
    struct key_epoch before;
    assert_false(key_cache_get(c, hash_a, &out, &before));
    /* The key changes between this request's miss and its put: another
     * request notices first and empties the cache... */
    assert_int_equal(key_cache_bump_epoch(dir), 0);
    struct key_epoch now;
    assert_false(key_cache_get(c, hash_b, &out, &now));
    /* ...so the late put, made under the old epoch, is not kept. */
    key_cache_put(c, hash_a, &m, &before);
    assert_false(key_cache_get(c, hash_a, &out, &now));
    key_cache_free(c);
    test_rmtree(dir);
}

static void test_invalidate(void **state)
{
    (void)state;
    char dir[TEST_PATH_MAX];
    test_tmpdir(dir);
    key_cache *c = key_cache_new(dir, 64);
    struct merchant out, m = merchant_named("shop");
    struct key_epoch epoch, before;
    assert_false(key_cache_get(c, hash_a, &out, &epoch));
    key_cache_put(c, hash_a, &m, &epoch);
    assert_true(key_cache_get(c, hash_a, &out, &epoch));
    /* another instance rotated the key: the broadcast empties the cache */
    key_cache_invalidate(c);
    assert_false(key_cache_get(c, hash_a, &out, &before));
    /* a lookup that began before the next invalidation is not kept, even
     * when no other request came in between */
    key_cache_invalidate(c);
    key_cache_put(c, hash_a, &m, &before);
    assert_false(key_cache_get(c, hash_a, &out, &epoch));
    /* one made after it is */
    key_cache_put(c, hash_a, &m, &epoch);
    assert_true(key_cache_get(c, hash_a, &out, &epoch));
    key_cache_free(c);
    test_rmtree(dir);
}

static void test_max_age(void **state)
{
    (void)state;
    char dir[TEST_PATH_MAX];
    test_tmpdir(dir);
    key_cache *c = key_cache_new(dir, 64);
    key_cache_set_max_age_ms(c, 100);
    struct merchant out, m = merchant_named("shop");
    struct key_epoch epoch;
    assert_false(key_cache_get(c, hash_a, &out, &epoch));
    key_cache_put(c, hash_a, &m, &epoch);
    assert_true(key_cache_get(c, hash_a, &out, &epoch));
    struct timespec ts = {.tv_nsec = 150 * 1000000L};
    nanosleep(&ts, NULL);
    /* too old: looked up again, and then cached afresh */
    assert_false(key_cache_get(c, hash_a, &out, &epoch));
    key_cache_put(c, hash_a, &m, &epoch);
    assert_true(key_cache_get(c, hash_a, &out, &epoch));
    key_cache_free(c);
    test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_miss_then_hit),
        cmocka_unit_test(test_epoch_bump_empties),
        cmocka_unit_test(test_put_after_change_is_dropped),
        cmocka_unit_test(test_invalidate),
        cmocka_unit_test(test_max_age),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
