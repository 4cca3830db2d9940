/*
 * test_alerts.c - obs/alerts against series built by hand: the state
 * machine's table; breaker_open fires per channel with its label and
 * resolves; a rule with for_s is pending first, fires once the condition
 * has held that long, and a dip resets it; a ratio at the threshold does not
 * fire, just above does; the burn-rate rule needs both windows (a short
 * burst alone does not fire); fewer than min_requests in the window judge
 * nothing; queue age, dead letters and the ledger; a
 * disabled rule never fires; the longest window counts only enabled rules.
 * (The push to Alertmanager is tested against a real one in
 * tests/integration/test_obs.py.)
 */
#include "../testutil.h"

#include <math.h>

#include "guard/breaker.h"
#include "obs/alerts.h"

static const char *const channels[] = {"sandbox", "alipay"};

/* A sample at t_s with cumulative requests and errors, gauges zero. */
static struct sample at(int64_t t_s, uint64_t requests, uint64_t errors)
{
    struct sample x;
    memset(&x, 0, sizeof(x));
    x.t_ms = t_s * 1000;
    x.api_requests = requests;
    x.api_errors = errors;
    x.api_latency[0] = requests; /* all fast */
    x.channel_count = 2;
    return x;
}

static struct conf_alert *rule(struct conf *c, const char *name)
{
    for (int i = 0; i < c->alert_count; i++)
        if (strcmp(c->alerts[i].name, name) == 0)
            return &c->alerts[i];
    fail_msg("no rule %s", name);
    return NULL;
}

/* Turns every rule off but the named one. */
static void only(struct conf *c, const char *name)
{
    for (int i = 0; i < c->alert_count; i++)
        c->alerts[i].enabled = strcmp(c->alerts[i].name, name) == 0;
}

/* The state shown for name (and channel, or NULL): "firing", "pending" or
 * NULL when inactive. */
static const char *shown(alerts *a, const char *name, const char *channel)
{
    static char state[16];
    json_t *list = alerts_active_json(a);
    const char *found = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "name")), name) != 0)
            continue;
        json_t *ch = json_object_get(json_object_get(e, "labels"), "channel");
        if (channel && (!ch || strcmp(json_string_value(ch), channel) != 0))
            continue;
        snprintf(state, sizeof(state), "%s", json_string_value(json_object_get(e, "state")));
        found = state;
    }
    json_decref(list);
    return found;
}

static void test_state_table(void **state)
{
    (void)state;
    assert_int_equal(alert_next_state(ALERT_INACTIVE, false, 0, 0, 0), ALERT_INACTIVE);
    assert_int_equal(alert_next_state(ALERT_INACTIVE, true, 0, 0, 0), ALERT_FIRING);
    assert_int_equal(alert_next_state(ALERT_INACTIVE, true, 0, 0, 1000), ALERT_PENDING);
    assert_int_equal(alert_next_state(ALERT_PENDING, true, 0, 999, 1000), ALERT_PENDING);
    assert_int_equal(alert_next_state(ALERT_PENDING, true, 0, 1000, 1000), ALERT_FIRING);
    assert_int_equal(alert_next_state(ALERT_PENDING, false, 0, 5000, 1000), ALERT_INACTIVE);
    assert_int_equal(alert_next_state(ALERT_FIRING, true, 0, 5000, 1000), ALERT_FIRING);
    assert_int_equal(alert_next_state(ALERT_FIRING, false, 0, 5000, 1000), ALERT_INACTIVE);
}

static void test_breaker_open_per_channel(void **state)
{
    (void)state;
    struct conf c;
    conf_defaults(&c);
    char err[256];
    alerts *a = alerts_new(&c, channels, 2, err, sizeof(err));
    assert_non_null(a);
    series *s = series_new(100);
    struct sample x = at(1, 0, 0);
    series_append(s, &x);
    alerts_evaluate(a, s, 1000);
    assert_int_equal(alerts_firing(a), 0);
    x = at(2, 0, 0);
    x.breaker[1] = BREAKER_OPEN;
    series_append(s, &x);
    alerts_evaluate(a, s, 2000);
    assert_string_equal(shown(a, "PaydBreakerOpen", "alipay"), "firing");
    assert_null(shown(a, "PaydBreakerOpen", "sandbox"));
    assert_int_equal(alerts_firing(a), 1);
    x = at(3, 0, 0);
    x.breaker[1] = BREAKER_HALF_OPEN; /* probing: no longer open */
    series_append(s, &x);
    alerts_evaluate(a, s, 3000);
    assert_null(shown(a, "PaydBreakerOpen", NULL));
    assert_int_equal(alerts_firing(a), 0);
    alerts_free(a);
    series_free(s);
}

static void test_error_ratio_for(void **state)
{
    (void)state;
    struct conf c;
    conf_defaults(&c);
    only(&c, "PaydErrorRatioHigh"); /* 0.05 over 300 s, for 60 s */
    char err[256];
    alerts *a = alerts_new(&c, channels, 2, err, sizeof(err));
    series *s = series_new(1000);
    /* 100 requests a second; exactly 5 % errors: at the threshold, not over */
    uint64_t req = 0, errs = 0;
    int64_t t = 0;
    for (; t < 400; t += 10) {
        struct sample x = at(t, req, errs);
        series_append(s, &x);
        alerts_evaluate(a, s, t * 1000);
        req += 1000;
        errs += 50;
    }
    assert_null(shown(a, "PaydErrorRatioHigh", NULL));
    /* 20 % errors from now on: the 300 s ratio passes 5 % within a few
     * rounds; pending, then firing 60 s after it became true */
    int64_t pending_at = -1, firing_at = -1;
    for (; t < 800 && firing_at < 0; t += 10) {
        struct sample x = at(t, req, errs);
        series_append(s, &x);
        alerts_evaluate(a, s, t * 1000);
        const char *st = shown(a, "PaydErrorRatioHigh", NULL);
        if (st && strcmp(st, "pending") == 0 && pending_at < 0)
            pending_at = t;
        if (st && strcmp(st, "firing") == 0)
            firing_at = t;
        req += 1000;
        errs += 200;
    }
    assert_true(pending_at > 0);
    assert_int_equal(firing_at - pending_at, 60);
    /* errors stop: the ratio over 300 s falls below 5 % and it resolves */
    for (int i = 0; i < 40; i++, t += 10) {
        struct sample x = at(t, req, errs);
        series_append(s, &x);
        alerts_evaluate(a, s, t * 1000);
        req += 1000;
    }
    assert_null(shown(a, "PaydErrorRatioHigh", NULL));
    alerts_free(a);
    series_free(s);
}

/* Feeds samples every 60 s from t0 to t1 with the error share given. */
static void feed(alerts *a, series *s, int64_t *t, int64_t until, uint64_t *req, uint64_t *errs,
                 double share)
{
    for (; *t < until; *t += 60) {
        struct sample x = at(*t, *req, *errs);
        series_append(s, &x);
        alerts_evaluate(a, s, *t * 1000);
        *req += 6000;
        *errs += (uint64_t)(6000 * share);
    }
}

static void test_burn_rate_needs_both_windows(void **state)
{
    (void)state;
    struct conf c;
    conf_defaults(&c);
    only(&c, "PaydSLOBurnFast"); /* 14.4x over 1 h and 5 min, SLO 99.9 % */
    char err[256];
    alerts *a = alerts_new(&c, channels, 2, err, sizeof(err));
    series *s = series_new(1000);
    uint64_t req = 0, errs = 0;
    int64_t t = 0;
    feed(a, s, &t, 3600, &req, &errs, 0);
    /* 10 minutes at 2 % errors: 20x over 5 min, but about 3.3x over the hour */
    feed(a, s, &t, 3600 + 600, &req, &errs, 0.02);
    assert_null(shown(a, "PaydSLOBurnFast", NULL));
    /* the whole hour at 2 %: both windows burn 20x */
    feed(a, s, &t, 3600 + 3600 + 120, &req, &errs, 0.02);
    assert_string_equal(shown(a, "PaydSLOBurnFast", NULL), "firing");
    /* errors stop: the 5 min window recovers first, and that resolves it */
    feed(a, s, &t, t + 420, &req, &errs, 0);
    assert_null(shown(a, "PaydSLOBurnFast", NULL));
    alerts_free(a);
    series_free(s);
}

/* Every request of the window failed, but there were only 99 of them (one
 * under min_requests): nothing; one more failed request and it fires. */
static void test_min_requests(void **state)
{
    (void)state;
    struct conf c;
    conf_defaults(&c);
    only(&c, "PaydSLOBurnFast");
    char err[256];
    alerts *a = alerts_new(&c, channels, 2, err, sizeof(err));
    series *s = series_new(100);
    struct sample x = at(0, 0, 0);
    series_append(s, &x);
    x = at(10, 99, 99);
    series_append(s, &x);
    alerts_evaluate(a, s, 10000);
    assert_null(shown(a, "PaydSLOBurnFast", NULL));
    x = at(20, 100, 100);
    series_append(s, &x);
    alerts_evaluate(a, s, 20000);
    assert_string_equal(shown(a, "PaydSLOBurnFast", NULL), "firing");
    alerts_free(a);
    series_free(s);
}

static void test_gauge_rules(void **state)
{
    (void)state;
    struct conf c;
    conf_defaults(&c);
    rule(&c, "PaydQueueStale")->for_s = 0;
    char err[256];
    alerts *a = alerts_new(&c, channels, 2, err, sizeof(err));
    series *s = series_new(10);
    struct sample x = at(1, 0, 0);
    x.queue_oldest_age_s = 300; /* at the threshold */
    x.dead_letters = 0;
    x.ledger_imbalance = 0;
    series_append(s, &x);
    alerts_evaluate(a, s, 1000);
    assert_int_equal(alerts_firing(a), 0);
    x = at(2, 0, 0);
    x.queue_oldest_age_s = 301;
    x.dead_letters = 2;
    x.ledger_imbalance = 1999;
    series_append(s, &x);
    alerts_evaluate(a, s, 2000);
    assert_string_equal(shown(a, "PaydQueueStale", NULL), "firing");
    assert_string_equal(shown(a, "PaydDeadLetters", NULL), "firing");
    assert_string_equal(shown(a, "PaydLedgerImbalance", NULL), "firing");
    /* unknown (NaN) is not a breach */
    x = at(3, 0, 0);
    x.queue_oldest_age_s = x.dead_letters = x.ledger_imbalance = NAN;
    series_append(s, &x);
    alerts_evaluate(a, s, 3000);
    assert_int_equal(alerts_firing(a), 0);
    alerts_free(a);
    series_free(s);
}

static void test_disabled_and_windows(void **state)
{
    (void)state;
    struct conf c;
    conf_defaults(&c);
    assert_int_equal(alerts_longest_window_s(&c), 21600);
    rule(&c, "PaydSLOBurnSlow")->enabled = 0;
    assert_int_equal(alerts_longest_window_s(&c), 3600);
    rule(&c, "PaydLedgerImbalance")->enabled = 0;
    char err[256];
    alerts *a = alerts_new(&c, channels, 2, err, sizeof(err));
    series *s = series_new(10);
    struct sample x = at(1, 0, 0);
    x.ledger_imbalance = 5;
    series_append(s, &x);
    alerts_evaluate(a, s, 1000);
    assert_null(shown(a, "PaydLedgerImbalance", NULL));
    alerts_free(a);
    series_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_table),
        cmocka_unit_test(test_breaker_open_per_channel),
        cmocka_unit_test(test_error_ratio_for),
        cmocka_unit_test(test_burn_rate_needs_both_windows),
        cmocka_unit_test(test_min_requests),
        cmocka_unit_test(test_gauge_rules),
        cmocka_unit_test(test_disabled_and_windows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
