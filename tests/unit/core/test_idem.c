/*
 * test_idem.c - core/idem: request fingerprints (equal for equal requests,
 * different when the method, path or body differ) and the in-flight table:
 * enter/leave, per-merchant keys, the capacity bound, long runs of
 * enter/leave cycles (tombstones must be cleared, or probes slow down and the
 * table fills up), and threads racing for one key.
 */
#include "../testutil.h"

#include <pthread.h>
#include <time.h>

#include "core/idem.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- fingerprints ---- */

static void test_fingerprint_stable(void **state)
{
    (void)state;
    char a[IDEM_FINGERPRINT_LEN + 1], b[IDEM_FINGERPRINT_LEN + 1];
    idem_fingerprint("POST", "/v1/payments", "{\"order_id\":\"ord_1\"}", a);
    idem_fingerprint("POST", "/v1/payments", "{\"order_id\":\"ord_1\"}", b);
    assert_int_equal(strlen(a), IDEM_FINGERPRINT_LEN);
    for (int i = 0; i < IDEM_FINGERPRINT_LEN; i++)
        assert_non_null(strchr("0123456789abcdef", a[i]));
    assert_string_equal(a, b);
}

static void test_fingerprint_differs(void **state)
{
    (void)state;
    char base[IDEM_FINGERPRINT_LEN + 1], other[IDEM_FINGERPRINT_LEN + 1];
    idem_fingerprint("POST", "/v1/payments", "{\"a\":1}", base);

    idem_fingerprint("PUT", "/v1/payments", "{\"a\":1}", other);
    assert_string_not_equal(base, other);
    idem_fingerprint("POST", "/v1/orders", "{\"a\":1}", other);
    assert_string_not_equal(base, other);
    idem_fingerprint("POST", "/v1/payments", "{\"a\":2}", other);
    assert_string_not_equal(base, other);
    idem_fingerprint("POST", "/v1/payments", "", other);
    assert_string_not_equal(base, other);

    /* The parts are separated: moving bytes from one part to the next must
     * not give the same fingerprint. */
    char x[IDEM_FINGERPRINT_LEN + 1], y[IDEM_FINGERPRINT_LEN + 1];
    idem_fingerprint("POST", "/v1/pay", "ments{}", x);
    idem_fingerprint("POST", "/v1/payments", "{}", y);
    assert_string_not_equal(x, y);
    idem_fingerprint("POS", "T/v1/payments", "{}", x);
    assert_string_not_equal(x, y);
}

/* ---- the in-flight table ---- */

static void test_enter_leave(void **state)
{
    (void)state;
    idem_inflight *t = idem_inflight_new(64);
    assert_int_equal(idem_inflight_enter(t, "mch_a", "key-1"), 0);
    assert_int_equal(idem_inflight_enter(t, "mch_a", "key-1"), -1);
    assert_int_equal(idem_inflight_enter(t, "mch_a", "key-1"), -1);
    assert_int_equal(idem_inflight_enter(t, "mch_a", "key-2"), 0);
    idem_inflight_leave(t, "mch_a", "key-1");
    assert_int_equal(idem_inflight_enter(t, "mch_a", "key-1"), 0);
    assert_int_equal(idem_inflight_enter(t, "mch_a", "key-2"), -1); /* still there */
    idem_inflight_leave(t, "mch_a", "key-1");
    idem_inflight_leave(t, "mch_a", "key-2");
    idem_inflight_free(t);
    idem_inflight_free(NULL);
}

static void test_merchants_independent(void **state)
{
    (void)state;
    idem_inflight *t = idem_inflight_new(64);
    assert_int_equal(idem_inflight_enter(t, "mch_a", "same"), 0);
    assert_int_equal(idem_inflight_enter(t, "mch_b", "same"), 0);
    assert_int_equal(idem_inflight_enter(t, "mch_a", "same"), -1);
    assert_int_equal(idem_inflight_enter(t, "mch_b", "same"), -1);
    idem_inflight_leave(t, "mch_a", "same");
    assert_int_equal(idem_inflight_enter(t, "mch_b", "same"), -1);
    assert_int_equal(idem_inflight_enter(t, "mch_a", "same"), 0);
    /* The merchant and key are separated: "mch_ab"+"c" is not "mch_a"+"bc". */
    assert_int_equal(idem_inflight_enter(t, "mch_ab", "c"), 0);
    assert_int_equal(idem_inflight_enter(t, "mch_a", "bc"), 0);
    idem_inflight_leave(t, "mch_a", "same");
    idem_inflight_leave(t, "mch_b", "same");
    idem_inflight_leave(t, "mch_ab", "c");
    idem_inflight_leave(t, "mch_a", "bc");
    idem_inflight_free(t);
}

static void test_full_table(void **state)
{
    (void)state;
    enum { CAP = 8 };
    idem_inflight *t = idem_inflight_new(CAP);
    char key[32];
    for (int i = 0; i < CAP; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(idem_inflight_enter(t, "mch_a", key), 0);
    }
    assert_int_equal(idem_inflight_enter(t, "mch_a", "one-too-many"), -2);
    assert_int_equal(idem_inflight_enter(t, "mch_b", "k0"), -2);
    /* A key already in is still reported as in use, not as "full". */
    assert_int_equal(idem_inflight_enter(t, "mch_a", "k3"), -1);
    /* Leaving makes room for exactly one more. */
    idem_inflight_leave(t, "mch_a", "k3");
    assert_int_equal(idem_inflight_enter(t, "mch_a", "one-too-many"), 0);
    assert_int_equal(idem_inflight_enter(t, "mch_a", "k3"), -2);
    idem_inflight_free(t);
}

/* The table holds at least what was asked for, and is bounded. */
static void test_capacity_not_power_of_two(void **state)
{
    (void)state;
    enum { CAP = 100 };
    idem_inflight *t = idem_inflight_new(CAP);
    char key[32];
    int accepted = 0;
    for (int i = 0; i < 4 * CAP; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        int rc = idem_inflight_enter(t, "mch_a", key);
        if (rc == -2)
            break;
        assert_int_equal(rc, 0);
        accepted++;
    }
    assert_true(accepted >= CAP);
    assert_true(accepted <= 2 * CAP);
    idem_inflight_free(t);
}

/* Runs `cycles` enter/leave pairs of always new keys while `held` keys stay
 * in the table, then checks that the held keys are still found. */
static void churn(size_t capacity, int held, long cycles)
{
    idem_inflight *t = idem_inflight_new(capacity);
    char key[48];
    for (int i = 0; i < held; i++) {
        snprintf(key, sizeof(key), "held-%d", i);
        assert_int_equal(idem_inflight_enter(t, "mch_a", key), 0);
    }
    for (long i = 0; i < cycles; i++) {
        snprintf(key, sizeof(key), "cycle-%ld", i);
        int rc = idem_inflight_enter(t, "mch_a", key);
        if (rc != 0)
            fail_msg("enter of a new key returned %d after %ld cycles", rc, i);
        idem_inflight_leave(t, "mch_a", key);
    }
    for (int i = 0; i < held; i++) {
        snprintf(key, sizeof(key), "held-%d", i);
        assert_int_equal(idem_inflight_enter(t, "mch_a", key), -1);
        idem_inflight_leave(t, "mch_a", key);
        assert_int_equal(idem_inflight_enter(t, "mch_a", key), 0);
    }
    idem_inflight_free(t);
}

static void test_many_cycles_small_table(void **state)
{
    (void)state;
    int64_t t0 = now_ms();
    churn(8, 3, 1000000);
    int64_t elapsed_ms = now_ms() - t0;
    print_message("1,000,000 cycles on 16 slots: %lld ms\n", (long long)elapsed_ms);
    assert_true(elapsed_ms < 60000);
}

/* Enter/leave pairs of always new keys on a large table; returns the time
 * the last `chunk` pairs took over the time the first `chunk` took, scaled by
 * 100. Deleted slots that are never cleared would pile up until every probe
 * scans all 32768 slots: the last chunk would be tens of times slower than
 * the first, on a fresh table. */
static int64_t churn_slowdown_pct(long cycles, long chunk)
{
    idem_inflight *t = idem_inflight_new(16384);
    char key[48];
    for (int i = 0; i < 500; i++) {
        snprintf(key, sizeof(key), "held-%d", i);
        assert_int_equal(idem_inflight_enter(t, "mch_a", key), 0);
    }
    int64_t first_ms = 0, last_ms = 0, t0 = now_ms();
    for (long i = 0; i < cycles; i++) {
        if (i == chunk)
            first_ms = now_ms() - t0;
        if (i == cycles - chunk)
            t0 = now_ms();
        snprintf(key, sizeof(key), "cycle-%ld", i);
        int rc = idem_inflight_enter(t, "mch_a", key);
        if (rc != 0)
            fail_msg("enter of a new key returned %d after %ld cycles", rc, i);
        idem_inflight_leave(t, "mch_a", key);
    }
    last_ms = now_ms() - t0;
    for (int i = 0; i < 500; i++) {
        snprintf(key, sizeof(key), "held-%d", i);
        assert_int_equal(idem_inflight_enter(t, "mch_a", key), -1);
    }
    idem_inflight_free(t);
    print_message("first %ld cycles: %lld ms, last %ld: %lld ms\n", chunk, (long long)first_ms,
                  chunk, (long long)last_ms);
    return 100 * (last_ms + 1) / (first_ms + 1);
}

static void test_many_cycles_large_table(void **state)
{
    (void)state;
    int64_t pct = churn_slowdown_pct(600000, 100000);
    if (pct > 500)
        fail_msg("the table slowed down %lld%% over 600,000 enter/leave cycles",
                 (long long)pct);
}

/* ---- threads racing for one key ---- */

#define RACERS 8
#define ROUNDS 200

struct race {
    idem_inflight *t;
    pthread_barrier_t start, end;
    int results[RACERS];
};

struct racer {
    struct race *race;
    int index;
};

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    struct race *race = r->race;
    char key[32];
    for (int round = 0; round < ROUNDS; round++) {
        snprintf(key, sizeof(key), "race-%d", round);
        pthread_barrier_wait(&race->start);
        race->results[r->index] = idem_inflight_enter(race->t, "mch_a", key);
        pthread_barrier_wait(&race->end);
        /* the main thread counts, then lets the next round start */
        pthread_barrier_wait(&race->end);
    }
    return NULL;
}

static void test_concurrent_enter_one_wins(void **state)
{
    (void)state;
    struct race race = {.t = idem_inflight_new(64)};
    pthread_barrier_init(&race.start, NULL, RACERS);
    pthread_barrier_init(&race.end, NULL, RACERS + 1);
    pthread_t th[RACERS];
    struct racer racers[RACERS];
    for (int i = 0; i < RACERS; i++) {
        racers[i] = (struct racer){.race = &race, .index = i};
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &racers[i]), 0);
    }
    int bad_round = -1, bad_winners = 0;
    for (int round = 0; round < ROUNDS; round++) {
        pthread_barrier_wait(&race.end);
        int winners = 0, losers = 0;
        for (int i = 0; i < RACERS; i++) {
            if (race.results[i] == 0)
                winners++;
            else if (race.results[i] == -1)
                losers++;
        }
        if ((winners != 1 || losers != RACERS - 1) && bad_round < 0) {
            bad_round = round;
            bad_winners = winners;
        }
        char key[32];
        snprintf(key, sizeof(key), "race-%d", round);
        if (winners > 0)
            idem_inflight_leave(race.t, "mch_a", key);
        pthread_barrier_wait(&race.end);
    }
    for (int i = 0; i < RACERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&race.start);
    pthread_barrier_destroy(&race.end);
    idem_inflight_free(race.t);
    if (bad_round >= 0)
        fail_msg("round %d: %d winners", bad_round, bad_winners);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fingerprint_stable),
        cmocka_unit_test(test_fingerprint_differs),
        cmocka_unit_test(test_enter_leave),
        cmocka_unit_test(test_merchants_independent),
        cmocka_unit_test(test_full_table),
        cmocka_unit_test(test_capacity_not_power_of_two),
        cmocka_unit_test(test_many_cycles_small_table),
        cmocka_unit_test(test_many_cycles_large_table),
        cmocka_unit_test(test_concurrent_enter_one_wins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
