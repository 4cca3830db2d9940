/*
 * test_breaker.c - guard/breaker: breaker_next_state is the whole table
 * (every state and event, -1 where not allowed); closed trips to open only
 * when the window holds min_calls calls and the failure share reaches
 * failure_ratio (just below and exactly at the boundary), or the slow-call
 * share reaches slow_ratio; successes alone never trip it; failures older
 * than window_s no longer count; open denies until open_ns has passed, then
 * half-open lets exactly half_open_calls probes through (also when threads
 * ask at once); all probes succeeding closes it with an empty window, any
 * failing or slow probe opens it again; breaker_cancel hands a probe back;
 * outcomes of tickets from an earlier generation count for nothing; the
 * report callback is called once per transition with the right states.
 *
 * Time is a fake clock: a plain nanosecond count that the tests move.
 */
#include "../testutil.h"

#include <pthread.h>
#include <sched.h>

#include "guard/breaker.h"

#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL
/* On a second's boundary, so that tests can place calls in the window's
 * one-second buckets. */
#define T0 (1000 * NS_PER_S)
#define FAST (10 * NS_PER_MS)

static const struct breaker_config base_cfg = {
    .window_s = 10,
    .min_calls = 10,
    .failure_ratio = 0.5,
    .slow_call_ns = 2 * NS_PER_S,
    .slow_ratio = 0.8,
    .open_ns = 30 * NS_PER_S,
    .half_open_calls = 3,
};

/* The report callback's record of every transition. */
#define MAX_REPORTS 256

struct reports {
    pthread_mutex_t mu;
    int n;
    enum breaker_state from[MAX_REPORTS], to[MAX_REPORTS];
    char why[MAX_REPORTS][96];
    int bad_name;
};

static void on_report(void *arg, const char *name, enum breaker_state from,
                      enum breaker_state to, const char *why)
{
    struct reports *r = arg;
    pthread_mutex_lock(&r->mu);
    if (strcmp(name, "psp_test") != 0)
        r->bad_name++;
    if (r->n < MAX_REPORTS) {
        r->from[r->n] = from;
        r->to[r->n] = to;
        snprintf(r->why[r->n], sizeof(r->why[r->n]), "%s", why ? why : "");
    }
    r->n++;
    pthread_mutex_unlock(&r->mu);
}

/* One breaker with its report record, per test. */
struct fixture {
    struct breaker b;
    struct reports r;
};

static struct fixture *fixture_new(const struct breaker_config *cfg)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    pthread_mutex_init(&f->r.mu, NULL);
    breaker_init(&f->b, "psp_test", cfg, on_report, &f->r);
    assert_int_equal(atomic_load(&f->b.state), BREAKER_CLOSED);
    return f;
}

static void fixture_free(struct fixture *f)
{
    assert_int_equal(f->r.bad_name, 0);
    breaker_destroy(&f->b);
    pthread_mutex_destroy(&f->r.mu);
    free(f);
}

/* The i-th report was from -> to. */
static void assert_report(const struct fixture *f, int i, enum breaker_state from,
                          enum breaker_state to)
{
    assert_true(i < f->r.n);
    assert_int_equal(f->r.from[i], from);
    assert_int_equal(f->r.to[i], to);
}

/* A call let through at now with outcome o and duration. */
static void call(struct fixture *f, int64_t now, enum breaker_outcome o, int64_t duration_ns)
{
    struct breaker_ticket t;
    assert_true(breaker_allow(&f->b, now, &t));
    breaker_record(&f->b, &t, o, duration_ns, now);
}

static void calls(struct fixture *f, int n, int64_t now, enum breaker_outcome o,
                  int64_t duration_ns)
{
    for (int i = 0; i < n; i++)
        call(f, now, o, duration_ns);
}

static enum breaker_state state_of(struct fixture *f)
{
    return (enum breaker_state)atomic_load(&f->b.state);
}

/* Trips a closed breaker at now with failures (at most 1000). */
static void trip(struct fixture *f, int64_t now)
{
    for (int i = 0; i < 1000 && state_of(f) == BREAKER_CLOSED; i++)
        call(f, now, BREAKER_FAILURE, FAST);
    assert_int_equal(state_of(f), BREAKER_OPEN);
}

static void test_next_state_table(void **state)
{
    (void)state;
    static const enum breaker_state states[] = {BREAKER_CLOSED, BREAKER_OPEN,
                                                BREAKER_HALF_OPEN};
    static const enum breaker_event events[] = {BREAKER_EV_TRIP, BREAKER_EV_OPEN_ELAPSED,
                                                BREAKER_EV_PROBES_PASSED,
                                                BREAKER_EV_PROBE_FAILED};
    /* [state][event] */
    static const int want[3][4] = {
        {BREAKER_OPEN, -1, -1, -1},
        {-1, BREAKER_HALF_OPEN, -1, -1},
        {-1, -1, BREAKER_CLOSED, BREAKER_OPEN},
    };
    for (size_t s = 0; s < 3; s++)
        for (size_t e = 0; e < 4; e++)
            assert_int_equal(breaker_next_state(states[s], events[e]), want[s][e]);
    /* out of range, either way */
    assert_int_equal(breaker_next_state((enum breaker_state)3, BREAKER_EV_TRIP), -1);
    assert_int_equal(breaker_next_state((enum breaker_state)-1, BREAKER_EV_TRIP), -1);
    assert_int_equal(breaker_next_state(BREAKER_CLOSED, (enum breaker_event)4), -1);
    assert_int_equal(breaker_next_state(BREAKER_HALF_OPEN, (enum breaker_event)-1), -1);
    assert_string_equal(breaker_state_name(BREAKER_CLOSED), "closed");
    assert_string_equal(breaker_state_name(BREAKER_OPEN), "open");
    assert_string_equal(breaker_state_name(BREAKER_HALF_OPEN), "half_open");
    assert_string_equal(breaker_state_name((enum breaker_state)7), "?");
}

static void test_trip_failure_ratio(void **state)
{
    (void)state;
    /* just below: 4 of 10 */
    struct fixture *f = fixture_new(&base_cfg);
    calls(f, 6, T0, BREAKER_SUCCESS, FAST);
    calls(f, 4, T0, BREAKER_FAILURE, FAST);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    assert_int_equal(f->r.n, 0);
    int64_t c, fl, sl;
    breaker_window(&f->b, T0, &c, &fl, &sl);
    assert_int_equal(c, 10);
    assert_int_equal(fl, 4);
    assert_int_equal(sl, 0);
    fixture_free(f);

    /* exactly at it: 5 of 10 trips on the 5th failure */
    f = fixture_new(&base_cfg);
    calls(f, 5, T0, BREAKER_SUCCESS, FAST);
    calls(f, 4, T0, BREAKER_FAILURE, FAST);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    call(f, T0, BREAKER_FAILURE, FAST);
    assert_int_equal(state_of(f), BREAKER_OPEN);
    assert_int_equal(f->r.n, 1);
    assert_report(f, 0, BREAKER_CLOSED, BREAKER_OPEN);
    assert_non_null(strstr(f->r.why[0], "failure ratio"));
    assert_int_equal(atomic_load(&f->b.opened_ns), T0);
    assert_int_equal(atomic_load(&f->b.transitions), 1);
    fixture_free(f);

    /* every call failing, but fewer than min_calls: no trip until the 10th */
    f = fixture_new(&base_cfg);
    calls(f, 9, T0, BREAKER_FAILURE, FAST);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    call(f, T0 + 1, BREAKER_FAILURE, FAST);
    assert_int_equal(state_of(f), BREAKER_OPEN);
    assert_int_equal(f->r.n, 1);
    fixture_free(f);
}

/* The boundary for every ratio an operator can write with two decimals
 * (conf.c reads them as doubles): with 100 calls, k failures trip
 * failure_ratio 0.kk and k - 1 do not; the same for slow calls and
 * slow_ratio. */
static void test_trip_ratio_decimal(void **state)
{
    (void)state;
    const int64_t slow = base_cfg.slow_call_ns + 1;
    for (int k = 1; k <= 100; k++) {
        char text[16];
        snprintf(text, sizeof(text), "%d.%02d", k / 100, k % 100);
        double ratio = strtod(text, NULL);
        for (int kind = 0; kind < 2; kind++) {
            /* kind 0: fast failures against failure_ratio; 1: slow
             * successes against slow_ratio */
            struct breaker_config cfg = base_cfg;
            cfg.min_calls = 100;
            cfg.failure_ratio = kind == 0 ? ratio : 1;
            cfg.slow_ratio = kind == 1 ? ratio : 1;
            enum breaker_outcome bad_o = kind == 0 ? BREAKER_FAILURE : BREAKER_SUCCESS;
            int64_t bad_d = kind == 0 ? FAST : slow;
            const char *what = kind == 0 ? "failure_ratio" : "slow_ratio";

            struct fixture *f = fixture_new(&cfg);
            calls(f, 100 - k, T0, BREAKER_SUCCESS, FAST);
            calls(f, k, T0, bad_o, bad_d);
            if (state_of(f) != BREAKER_OPEN)
                fail_msg("%s %s: %d bad of 100 calls did not trip", what, text, k);
            fixture_free(f);

            f = fixture_new(&cfg);
            calls(f, 101 - k, T0, BREAKER_SUCCESS, FAST);
            calls(f, k - 1, T0, bad_o, bad_d);
            if (state_of(f) != BREAKER_CLOSED)
                fail_msg("%s %s: %d bad of 100 calls tripped", what, text, k - 1);
            fixture_free(f);
        }
    }
}

static void test_trip_slow_ratio(void **state)
{
    (void)state;
    const int64_t slow = base_cfg.slow_call_ns + 1, quick = base_cfg.slow_call_ns - 1;
    /* just below: 7 slow of 10 */
    struct fixture *f = fixture_new(&base_cfg);
    calls(f, 3, T0, BREAKER_SUCCESS, quick);
    calls(f, 7, T0, BREAKER_SUCCESS, slow);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    int64_t c, fl, sl;
    breaker_window(&f->b, T0, &c, &fl, &sl);
    assert_int_equal(c, 10);
    assert_int_equal(fl, 0);
    assert_int_equal(sl, 7);
    fixture_free(f);

    /* at it: 8 slow of 10, all of them successes */
    f = fixture_new(&base_cfg);
    calls(f, 2, T0, BREAKER_SUCCESS, quick);
    calls(f, 7, T0, BREAKER_SUCCESS, slow);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    call(f, T0, BREAKER_SUCCESS, slow);
    assert_int_equal(state_of(f), BREAKER_OPEN);
    assert_int_equal(f->r.n, 1);
    assert_report(f, 0, BREAKER_CLOSED, BREAKER_OPEN);
    assert_non_null(strstr(f->r.why[0], "slow-call ratio"));
    fixture_free(f);

    /* slow failures count as both */
    f = fixture_new(&base_cfg);
    calls(f, 5, T0, BREAKER_SUCCESS, quick);
    calls(f, 4, T0, BREAKER_FAILURE, slow);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    call(f, T0, BREAKER_FAILURE, slow);
    assert_int_equal(state_of(f), BREAKER_OPEN);
    fixture_free(f);
}

static void test_successes_never_trip(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(&base_cfg);
    for (int s = 0; s < 30; s++)
        calls(f, 100, T0 + s * NS_PER_S + s, BREAKER_SUCCESS, FAST);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    assert_int_equal(f->r.n, 0);
    assert_int_equal(atomic_load(&f->b.allowed), 3000);
    assert_int_equal(atomic_load(&f->b.denied), 0);
    int64_t c, fl, sl;
    breaker_window(&f->b, T0 + 29 * NS_PER_S, &c, &fl, &sl);
    assert_int_equal(c, 1000); /* the last 10 seconds */
    assert_int_equal(fl, 0);
    /* a failure now and then among them does not either */
    for (int i = 0; i < 1000; i++)
        call(f, T0 + 40 * NS_PER_S, i % 10 == 0 ? BREAKER_FAILURE : BREAKER_SUCCESS, FAST);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    fixture_free(f);
}

static void test_window_rolls_over(void **state)
{
    (void)state;
    int64_t c, fl, sl;
    /* 9 failures at second 0; one more at 9.999 s trips, they all count */
    struct fixture *f = fixture_new(&base_cfg);
    calls(f, 9, T0, BREAKER_FAILURE, FAST);
    breaker_window(&f->b, T0 + 10 * NS_PER_S - 1, &c, &fl, &sl);
    assert_int_equal(c, 9);
    assert_int_equal(fl, 9);
    call(f, T0 + 10 * NS_PER_S - 1, BREAKER_FAILURE, FAST);
    assert_int_equal(state_of(f), BREAKER_OPEN);
    fixture_free(f);

    /* one more at 10 s: the first nine are out of the window */
    f = fixture_new(&base_cfg);
    calls(f, 9, T0, BREAKER_FAILURE, FAST);
    breaker_window(&f->b, T0 + 10 * NS_PER_S, &c, &fl, &sl);
    assert_int_equal(c, 0);
    assert_int_equal(fl, 0);
    call(f, T0 + 10 * NS_PER_S, BREAKER_FAILURE, FAST);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    breaker_window(&f->b, T0 + 10 * NS_PER_S, &c, &fl, &sl);
    assert_int_equal(c, 1);
    assert_int_equal(fl, 1);
    /* much later, the bucket of that second is reused with fresh counts */
    calls(f, 9, T0 + 1000 * NS_PER_S, BREAKER_FAILURE, FAST);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    breaker_window(&f->b, T0 + 1000 * NS_PER_S, &c, &fl, &sl);
    assert_int_equal(c, 9);
    assert_int_equal(f->r.n, 0);
    fixture_free(f);

    /* failures spread over the window add up */
    f = fixture_new(&base_cfg);
    calls(f, 3, T0, BREAKER_FAILURE, FAST);
    calls(f, 3, T0 + 4 * NS_PER_S, BREAKER_FAILURE, FAST);
    calls(f, 3, T0 + 9 * NS_PER_S, BREAKER_FAILURE, FAST);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    call(f, T0 + 9 * NS_PER_S + 500 * NS_PER_MS, BREAKER_FAILURE, FAST);
    assert_int_equal(state_of(f), BREAKER_OPEN);
    fixture_free(f);

    /* only the part older than window_s drops out: with the first five
     * counted this would be 10 of 16 and trip */
    f = fixture_new(&base_cfg);
    calls(f, 5, T0, BREAKER_FAILURE, FAST);
    calls(f, 4, T0 + 5 * NS_PER_S, BREAKER_FAILURE, FAST);
    calls(f, 6, T0 + 10 * NS_PER_S, BREAKER_SUCCESS, FAST);
    call(f, T0 + 10 * NS_PER_S, BREAKER_FAILURE, FAST); /* 5 of 11 */
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    breaker_window(&f->b, T0 + 10 * NS_PER_S, &c, &fl, &sl);
    assert_int_equal(c, 11);
    assert_int_equal(fl, 5);
    call(f, T0 + 10 * NS_PER_S, BREAKER_FAILURE, FAST); /* 6 of 12 */
    assert_int_equal(state_of(f), BREAKER_OPEN);
    fixture_free(f);
}

/* Open denies until open_ns has passed; then exactly half_open_calls probes;
 * all succeeding closes it with an empty window. */
static void test_open_half_open_closed(void **state)
{
    (void)state;
    /* open for less than the window, so that the failures that tripped it
     * are still inside the window when it closes */
    struct breaker_config cfg = base_cfg;
    cfg.open_ns = 2 * NS_PER_S;
    struct fixture *f = fixture_new(&cfg);
    calls(f, 3, T0, BREAKER_SUCCESS, FAST);
    const int64_t t_trip = T0 + 2 * NS_PER_S + 7;
    trip(f, t_trip);
    assert_int_equal(atomic_load(&f->b.opened_ns), t_trip);
    /* it tripped at the 7th failure: 7 of 10 */
    int64_t c, fl, sl;
    breaker_window(&f->b, t_trip, &c, &fl, &sl);
    assert_int_equal(c, 10);
    assert_int_equal(fl, 7);
    struct breaker_ticket t;
    assert_false(breaker_allow(&f->b, t_trip, &t));
    assert_false(breaker_allow(&f->b, t_trip + cfg.open_ns - 1, &t));
    assert_int_equal(breaker_state_at(&f->b, t_trip + cfg.open_ns - 1), BREAKER_OPEN);
    assert_int_equal(atomic_load(&f->b.denied), 2);
    assert_int_equal(f->r.n, 1);

    /* exactly at open_ns: half-open, 3 probes, the 4th denied */
    const int64_t t_half = t_trip + cfg.open_ns;
    struct breaker_ticket p[3];
    for (int i = 0; i < 3; i++) {
        assert_true(breaker_allow(&f->b, t_half, &p[i]));
        assert_true(p[i].probe);
    }
    assert_int_equal(state_of(f), BREAKER_HALF_OPEN);
    assert_int_equal(f->r.n, 2);
    assert_report(f, 1, BREAKER_OPEN, BREAKER_HALF_OPEN);
    assert_false(breaker_allow(&f->b, t_half, &t));
    assert_false(breaker_allow(&f->b, t_half + 1, &t));
    assert_int_equal(breaker_state_at(&f->b, t_half + 1), BREAKER_HALF_OPEN);

    /* two successes are not enough */
    breaker_record(&f->b, &p[0], BREAKER_SUCCESS, FAST, t_half + 1);
    breaker_record(&f->b, &p[1], BREAKER_SUCCESS, FAST, t_half + 2);
    assert_int_equal(state_of(f), BREAKER_HALF_OPEN);
    assert_false(breaker_allow(&f->b, t_half + 3, &t));
    breaker_record(&f->b, &p[2], BREAKER_SUCCESS, FAST, t_half + 3);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    assert_int_equal(f->r.n, 3);
    assert_report(f, 2, BREAKER_HALF_OPEN, BREAKER_CLOSED);

    /* closed with an empty window: the failures that tripped it are gone
     * even though they are within window_s */
    breaker_window(&f->b, t_half + 3, &c, &fl, &sl);
    assert_int_equal(c, 0);
    assert_int_equal(fl, 0);
    assert_true(breaker_allow(&f->b, t_half + 3, &t));
    assert_false(t.probe);
    /* and it takes min_calls fresh calls to trip again */
    calls(f, 9, t_half + 4, BREAKER_FAILURE, FAST);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    call(f, t_half + 4, BREAKER_FAILURE, FAST);
    assert_int_equal(state_of(f), BREAKER_OPEN);
    assert_int_equal(f->r.n, 4);
    assert_int_equal(atomic_load(&f->b.transitions), 4);
    fixture_free(f);
}

static void test_probe_failure_reopens(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(&base_cfg);
    trip(f, T0);
    const int64_t t_half = T0 + base_cfg.open_ns;
    struct breaker_ticket p[3], t;
    for (int i = 0; i < 3; i++)
        assert_true(breaker_allow(&f->b, t_half, &p[i]));
    breaker_record(&f->b, &p[0], BREAKER_SUCCESS, FAST, t_half + 1);
    assert_int_equal(state_of(f), BREAKER_HALF_OPEN);
    const int64_t t_fail = t_half + 5 * NS_PER_S;
    breaker_record(&f->b, &p[1], BREAKER_FAILURE, FAST, t_fail);
    assert_int_equal(state_of(f), BREAKER_OPEN);
    assert_int_equal(f->r.n, 3);
    assert_report(f, 2, BREAKER_HALF_OPEN, BREAKER_OPEN);
    assert_non_null(strstr(f->r.why[2], "probe failed"));
    assert_int_equal(atomic_load(&f->b.opened_ns), t_fail);
    /* the last probe's success is from the earlier generation */
    breaker_record(&f->b, &p[2], BREAKER_SUCCESS, FAST, t_fail + 1);
    assert_int_equal(state_of(f), BREAKER_OPEN);
    assert_int_equal(f->r.n, 3);
    /* open for open_ns from the failure, then probes again */
    const int64_t t_half2 = t_fail + base_cfg.open_ns;
    assert_false(breaker_allow(&f->b, t_half2 - 1, &t));
    for (int i = 0; i < 3; i++) {
        assert_true(breaker_allow(&f->b, t_half2, &p[i]));
        assert_true(p[i].probe);
    }
    assert_false(breaker_allow(&f->b, t_half2, &t));
    assert_int_equal(f->r.n, 4);
    assert_report(f, 3, BREAKER_OPEN, BREAKER_HALF_OPEN);
    /* a new half-open needs all its probes again: the success of the
     * previous one does not carry over */
    breaker_record(&f->b, &p[0], BREAKER_SUCCESS, FAST, t_half2 + 1);
    breaker_record(&f->b, &p[1], BREAKER_SUCCESS, FAST, t_half2 + 1);
    assert_int_equal(state_of(f), BREAKER_HALF_OPEN);
    breaker_record(&f->b, &p[2], BREAKER_SUCCESS, FAST, t_half2 + 1);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    assert_int_equal(f->r.n, 5);
    fixture_free(f);
}

static void test_slow_probe_fails(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(&base_cfg);
    trip(f, T0);
    const int64_t t_half = T0 + base_cfg.open_ns;
    struct breaker_ticket p;
    assert_true(breaker_allow(&f->b, t_half, &p));
    breaker_record(&f->b, &p, BREAKER_SUCCESS, base_cfg.slow_call_ns + 1, t_half + 1);
    assert_int_equal(state_of(f), BREAKER_OPEN);
    assert_int_equal(f->r.n, 3);
    assert_report(f, 2, BREAKER_HALF_OPEN, BREAKER_OPEN);
    assert_non_null(strstr(f->r.why[2], "slow"));
    fixture_free(f);
}

static void test_cancel_returns_probe(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(&base_cfg);
    struct breaker_ticket closed_t;
    assert_true(breaker_allow(&f->b, T0, &closed_t));
    trip(f, T0);
    const int64_t t_half = T0 + base_cfg.open_ns;
    struct breaker_ticket p[4], t;
    for (int i = 0; i < 3; i++)
        assert_true(breaker_allow(&f->b, t_half, &p[i]));
    assert_false(breaker_allow(&f->b, t_half, &t));
    /* a cancelled probe lets exactly one more through */
    breaker_cancel(&f->b, &p[1]);
    assert_true(breaker_allow(&f->b, t_half, &p[3]));
    assert_true(p[3].probe);
    assert_false(breaker_allow(&f->b, t_half, &t));
    /* cancelling a non-probe ticket hands nothing back: one from the closed
     * state, or one of the current generation (breaker_allow's closed path
     * can hand one out when the state changes between its two loads) */
    breaker_cancel(&f->b, &closed_t);
    assert_false(breaker_allow(&f->b, t_half, &t));
    struct breaker_ticket racer = {.gen = atomic_load(&f->b.gen), .probe = false};
    breaker_cancel(&f->b, &racer);
    assert_false(breaker_allow(&f->b, t_half, &t));
    /* the cancelled probe does not count: three successes are still needed */
    breaker_record(&f->b, &p[0], BREAKER_SUCCESS, FAST, t_half + 1);
    breaker_record(&f->b, &p[2], BREAKER_SUCCESS, FAST, t_half + 1);
    assert_int_equal(state_of(f), BREAKER_HALF_OPEN);
    breaker_record(&f->b, &p[3], BREAKER_SUCCESS, FAST, t_half + 1);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    assert_int_equal(f->r.n, 3);
    fixture_free(f);

    /* a probe of an earlier half-open period hands nothing back */
    f = fixture_new(&base_cfg);
    trip(f, T0);
    struct breaker_ticket old[3];
    for (int i = 0; i < 3; i++)
        assert_true(breaker_allow(&f->b, t_half, &old[i]));
    breaker_record(&f->b, &old[0], BREAKER_FAILURE, FAST, t_half); /* open again */
    const int64_t t_half2 = t_half + base_cfg.open_ns;
    for (int i = 0; i < 3; i++)
        assert_true(breaker_allow(&f->b, t_half2, &p[i]));
    breaker_cancel(&f->b, &old[1]);
    assert_false(breaker_allow(&f->b, t_half2, &t));
    fixture_free(f);
}

/* Outcomes of calls let through in an earlier state count for nothing. */
static void test_stale_tickets_ignored(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(&base_cfg);
    struct breaker_ticket before[5];
    for (int i = 0; i < 5; i++)
        assert_true(breaker_allow(&f->b, T0, &before[i]));
    trip(f, T0);
    assert_int_equal(f->r.n, 1);
    /* failures of the closed generation after the trip: no second trip */
    breaker_record(&f->b, &before[0], BREAKER_FAILURE, FAST, T0 + 1);
    assert_int_equal(state_of(f), BREAKER_OPEN);
    assert_int_equal(f->r.n, 1);
    assert_int_equal(atomic_load(&f->b.opened_ns), T0);

    /* half-open: a closed-state success is not a probe's */
    const int64_t t_half = T0 + base_cfg.open_ns;
    struct breaker_ticket p[3];
    for (int i = 0; i < 3; i++)
        assert_true(breaker_allow(&f->b, t_half, &p[i]));
    breaker_record(&f->b, &before[1], BREAKER_SUCCESS, FAST, t_half);
    breaker_record(&f->b, &before[2], BREAKER_SUCCESS, FAST, t_half);
    breaker_record(&f->b, &before[3], BREAKER_SUCCESS, FAST, t_half);
    breaker_record(&f->b, &p[0], BREAKER_SUCCESS, FAST, t_half);
    breaker_record(&f->b, &p[1], BREAKER_SUCCESS, FAST, t_half);
    assert_int_equal(state_of(f), BREAKER_HALF_OPEN);
    /* nor does its failure reopen it */
    breaker_record(&f->b, &before[4], BREAKER_FAILURE, FAST, t_half);
    assert_int_equal(state_of(f), BREAKER_HALF_OPEN);
    breaker_record(&f->b, &p[2], BREAKER_SUCCESS, FAST, t_half);
    assert_int_equal(state_of(f), BREAKER_CLOSED);

    /* closed again: a probe's late failure and old closed-state failures
     * land nowhere */
    breaker_record(&f->b, &p[0], BREAKER_FAILURE, FAST, t_half + 1);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 3; j++)
            breaker_record(&f->b, &before[i], BREAKER_FAILURE, base_cfg.slow_call_ns,
                           t_half + 1);
    assert_int_equal(state_of(f), BREAKER_CLOSED);
    int64_t c, fl, sl;
    breaker_window(&f->b, t_half + 1, &c, &fl, &sl);
    assert_int_equal(c, 0);
    assert_int_equal(fl, 0);
    assert_int_equal(sl, 0);
    assert_int_equal(f->r.n, 3);
    fixture_free(f);
}

/* The report: once per transition, from and to as they happened, and not
 * again for repeated looks at the state. */
static void test_report_sequence(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(&base_cfg);
    int64_t now = T0;
    struct breaker_ticket t;
    trip(f, now); /* closed -> open */
    now += base_cfg.open_ns;
    assert_int_equal(breaker_state_at(&f->b, now), BREAKER_HALF_OPEN); /* -> half-open */
    assert_int_equal(breaker_state_at(&f->b, now), BREAKER_HALF_OPEN);
    assert_true(breaker_allow(&f->b, now, &t));
    breaker_record(&f->b, &t, BREAKER_FAILURE, FAST, now); /* -> open */
    now += base_cfg.open_ns;
    for (int i = 0; i < 3; i++) { /* -> half-open, -> closed */
        assert_true(breaker_allow(&f->b, now, &t));
        breaker_record(&f->b, &t, BREAKER_SUCCESS, FAST, now);
    }
    now += NS_PER_S;
    trip(f, now); /* -> open */
    assert_int_equal(breaker_state_at(&f->b, now + 1), BREAKER_OPEN);

    static const enum breaker_state want[][2] = {
        {BREAKER_CLOSED, BREAKER_OPEN},      {BREAKER_OPEN, BREAKER_HALF_OPEN},
        {BREAKER_HALF_OPEN, BREAKER_OPEN},   {BREAKER_OPEN, BREAKER_HALF_OPEN},
        {BREAKER_HALF_OPEN, BREAKER_CLOSED}, {BREAKER_CLOSED, BREAKER_OPEN},
    };
    const int nwant = (int)(sizeof(want) / sizeof(want[0]));
    assert_int_equal(f->r.n, nwant);
    for (int i = 0; i < nwant; i++)
        assert_report(f, i, want[i][0], want[i][1]);
    assert_int_equal(atomic_load(&f->b.transitions), nwant);
    /* every transition starts a new generation */
    assert_int_equal(atomic_load(&f->b.gen), 1 + nwant);
    fixture_free(f);

    /* no callback is fine */
    struct breaker b;
    breaker_init(&b, "quiet", &base_cfg, NULL, NULL);
    for (int i = 0; i < 10; i++) {
        assert_true(breaker_allow(&b, T0, &t));
        breaker_record(&b, &t, BREAKER_FAILURE, FAST, T0);
    }
    assert_int_equal(atomic_load(&b.state), BREAKER_OPEN);
    breaker_destroy(&b);
}

/* Threads asking at once in half-open: exactly half_open_calls get through,
 * and the open -> half-open transition is reported once. The threads do not
 * wait on a barrier (they would wake microseconds apart and never overlap)
 * but poll a round number, so that those running when it moves call
 * breaker_allow within nanoseconds of each other. In odd rounds they find
 * the breaker open and race for the move to half-open too; in even rounds
 * it is half-open already, so they go straight for the probes. */
#define PROBERS 4
#define ROUNDS 4000

struct probe_race {
    struct breaker *b;
    atomic_int go;   /* r + 1: round r may start */
    atomic_int done; /* allow calls finished, over all rounds */
    int64_t now[ROUNDS];
    int allowed[PROBERS][ROUNDS];
    struct breaker_ticket tickets[PROBERS][ROUNDS];
};

struct prober {
    struct probe_race *race;
    int id;
};

static void *probe_rounds(void *arg)
{
    struct prober *p = arg;
    struct probe_race *race = p->race;
    for (int r = 0; r < ROUNDS; r++) {
        while (atomic_load(&race->go) != r + 1)
            sched_yield();
        race->allowed[p->id][r] =
            breaker_allow(race->b, race->now[r], &race->tickets[p->id][r]);
        atomic_fetch_add(&race->done, 1);
    }
    return NULL;
}

static void concurrent_probes(int64_t half_open_calls)
{
    struct breaker_config cfg = base_cfg;
    cfg.half_open_calls = half_open_calls;
    struct fixture *f = fixture_new(&cfg);
    struct probe_race *race = calloc(1, sizeof(*race));
    assert_non_null(race);
    race->b = &f->b;
    /* round r opens the breaker at T0 + 2 r open_ns (the first by a trip,
     * the others by a failing probe of the round before); the probers ask
     * open_ns later */
    for (int r = 0; r < ROUNDS; r++)
        race->now[r] = T0 + (2 * r + 1) * cfg.open_ns;
    trip(f, T0);
    const uint64_t allowed_before = atomic_load(&f->b.allowed);
    struct prober p[PROBERS];
    pthread_t th[PROBERS];
    for (int i = 0; i < PROBERS; i++) {
        p[i] = (struct prober){.race = race, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, probe_rounds, &p[i]), 0);
    }
    int bad_allowed = 0, bad_reports = 0, bad_state = 0;
    for (int r = 0; r < ROUNDS; r++) {
        bad_state += state_of(f) != BREAKER_OPEN;
        int reports_before = f->r.n;
        if (r % 2 == 0)
            bad_state += breaker_state_at(&f->b, race->now[r]) != BREAKER_HALF_OPEN;
        atomic_store(&race->go, r + 1);
        while (atomic_load(&race->done) < PROBERS * (r + 1))
            sched_yield();
        int allowed = 0;
        struct breaker_ticket *probe = NULL;
        for (int i = 0; i < PROBERS; i++) {
            if (race->allowed[i][r]) {
                allowed++;
                bad_allowed += !race->tickets[i][r].probe;
                probe = &race->tickets[i][r];
            }
        }
        bad_allowed += allowed != half_open_calls;
        bad_reports += f->r.n != reports_before + 1;
        bad_state += state_of(f) != BREAKER_HALF_OPEN;
        /* a failing probe opens it for the next round */
        if (probe)
            breaker_record(&f->b, probe, BREAKER_FAILURE, FAST, T0 + (2 * r + 2) * cfg.open_ns);
        bad_state += state_of(f) != BREAKER_OPEN;
    }
    for (int i = 0; i < PROBERS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(bad_allowed, 0);
    assert_int_equal(bad_reports, 0);
    assert_int_equal(bad_state, 0);
    assert_int_equal(f->r.n, 1 + 2 * ROUNDS);
    assert_int_equal(atomic_load(&f->b.allowed) - allowed_before, ROUNDS * half_open_calls);
    free(race);
    fixture_free(f);
}

static void test_concurrent_probes(void **state)
{
    (void)state;
    concurrent_probes(1);
    concurrent_probes(3);
}

/* Probes succeeding at once from several threads close it once. */
struct recorder {
    struct breaker *b;
    struct breaker_ticket t;
    pthread_barrier_t *start;
    int64_t now;
};

static void *record_success(void *arg)
{
    struct recorder *q = arg;
    pthread_barrier_wait(q->start);
    breaker_record(q->b, &q->t, BREAKER_SUCCESS, FAST, q->now);
    return NULL;
}

static void test_concurrent_probe_successes(void **state)
{
    (void)state;
    struct breaker_config cfg = base_cfg;
    cfg.half_open_calls = 4;
    for (int round = 0; round < 50; round++) {
        struct fixture *f = fixture_new(&cfg);
        trip(f, T0);
        const int64_t t_half = T0 + cfg.open_ns;
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 4);
        struct recorder q[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            q[i] = (struct recorder){.b = &f->b, .start = &start, .now = t_half + 1};
            assert_true(breaker_allow(&f->b, t_half, &q[i].t));
        }
        for (int i = 0; i < 4; i++)
            assert_int_equal(pthread_create(&th[i], NULL, record_success, &q[i]), 0);
        for (int i = 0; i < 4; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&start);
        assert_int_equal(state_of(f), BREAKER_CLOSED);
        assert_int_equal(f->r.n, 3);
        assert_report(f, 2, BREAKER_HALF_OPEN, BREAKER_CLOSED);
        fixture_free(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_next_state_table),
        cmocka_unit_test(test_trip_failure_ratio),
        cmocka_unit_test(test_trip_ratio_decimal),
        cmocka_unit_test(test_trip_slow_ratio),
        cmocka_unit_test(test_successes_never_trip),
        cmocka_unit_test(test_window_rolls_over),
        cmocka_unit_test(test_open_half_open_closed),
        cmocka_unit_test(test_probe_failure_reopens),
        cmocka_unit_test(test_slow_probe_fails),
        cmocka_unit_test(test_cancel_returns_probe),
        cmocka_unit_test(test_stale_tickets_ignored),
        cmocka_unit_test(test_report_sequence),
        cmocka_unit_test(test_concurrent_probes),
        cmocka_unit_test(test_concurrent_probe_successes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
