/*
 * test_guards.c - the guards' cluster mode (src/guard/guards.c) against a
 * redis-server of its own, with each "instance" a guards of its own in this
 * process: embedded mode asks nothing of Redis; in cluster mode the global
 * and merchant limits hold across instances; the local share follows the
 * instance count (api instances only) and the settings; when Redis is
 * killed each instance falls back to its share (neither unlimited nor
 * refusing everything), says so once in its log, its view and its metrics,
 * and after a restart shares again; breaker transitions reach the other
 * instances.
 */
#include "../testutil_redis.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>

#include "guard/guards.h"
#include "util/util.h"

#define MS 1000000LL
#define S 1000000000LL


/* What on_change was told: the channel indexes, in order. */
struct changes {
    pthread_mutex_t mu;
    int n;
    int channel[64];
};

/* One instance: its guards, data directory and change log. */
struct instance {
    char dir[TEST_PATH_MAX];
    struct conf conf;
    struct changes changes;
    guards *g;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_change(void *arg, int channel)
{
    struct changes *c = arg;
    pthread_mutex_lock(&c->mu);
    if (c->n < 64)
        c->channel[c->n++] = channel;
    pthread_mutex_unlock(&c->mu);
}

/* True once on_change has been told about channel, within timeout_ms. */
static bool changed(struct changes *c, int channel, int timeout_ms)
{
    for (int64_t t0 = mono_ms(); mono_ms() - t0 < timeout_ms; test_redis_sleep_ms(10)) {
        pthread_mutex_lock(&c->mu);
        bool seen = false;
        for (int i = 0; i < c->n; i++)
            seen |= c->channel[i] == channel;
        pthread_mutex_unlock(&c->mu);
        if (seen)
            return true;
    }
    return false;
}

/* Starts an instance: merchant limit 20/s with a burst of 20, no global
 * limit, one channel whose breaker opens after 2 failed calls. cluster:
 * [lock] backend = redis on the test's server. */
static struct instance *start(bool cluster, int roles)
{
    struct instance *in = calloc(1, sizeof(*in));
    assert_non_null(in);
    test_tmpdir(in->dir);
    pthread_mutex_init(&in->changes.mu, NULL);
    struct conf *c = &in->conf;
    conf_defaults(c);
    snprintf(c->data_dir, sizeof(c->data_dir), "%s", in->dir);
    c->roles = roles;
    c->merchant_rps = 20;
    c->merchant_burst = 20;
    c->breaker_min_calls = 2;
    c->channel_count = 1;
    snprintf(c->channels[0].name, sizeof(c->channels[0].name), "sandbox");
    if (cluster) {
        c->lock_backend = LOCK_BACKEND_REDIS;
        snprintf(c->lock_url, sizeof(c->lock_url), "%s", g_redis.url);
    }
    char err[512] = "";
    in->g = guards_new(c, on_change, &in->changes, err, sizeof(err));
    if (!in->g)
        fail_msg("guards_new: %s", err);
    return in;
}

static void stop(struct instance *in)
{
    guards_free(in->g);
    pthread_mutex_destroy(&in->changes.mu);
    test_rmtree(in->dir);
    free(in);
}

static void apply(struct instance *in, const char *change)
{
    json_error_t jerr;
    json_t *j = json_loads(change, 0, &jerr);
    assert_non_null(j);
    char err[256];
    assert_int_equal(guards_apply(in->g, j, err, sizeof(err)), 0);
    json_decref(j);
}

/* The view's limits.NAME. */
static json_t *view_of(struct instance *in, const char *limiter)
{
    json_t *v = guards_view(in->g, clock_mono_ns());
    json_t *out = json_deep_copy(json_object_get(v, limiter));
    json_decref(v);
    return out;
}

static bool view_bool(struct instance *in, const char *limiter, const char *field)
{
    json_t *v = view_of(in, limiter);
    bool b = json_is_true(json_object_get(v, field));
    json_decref(v);
    return b;
}

static int64_t view_int(struct instance *in, const char *limiter, const char *field)
{
    json_t *v = view_of(in, limiter);
    int64_t i = json_integer_value(json_object_get(v, field));
    json_decref(v);
    return i;
}

/* limits.NAME.local_share.{rate,burst} */
static void view_share(struct instance *in, const char *limiter, double *rate, int64_t *burst)
{
    json_t *v = view_of(in, limiter);
    json_t *share = json_object_get(v, "local_share");
    assert_non_null(share);
    *rate = json_number_value(json_object_get(share, "rate"));
    *burst = json_integer_value(json_object_get(share, "burst"));
    json_decref(v);
}

static bool instances_become(struct instance *in, int want)
{
    for (int64_t t0 = mono_ms(); mono_ms() - t0 < 3500; test_redis_sleep_ms(20))
        if (view_int(in, "merchant", "instances") == want)
            return true;
    return false;
}

static int take_merchant(struct instance *in, const char *merchant, int64_t now_ns, int n)
{
    int admitted = 0;
    for (int i = 0; i < n; i++) {
        int64_t retry = 0;
        bool ok = guards_take_merchant(in->g, merchant, now_ns, &retry);
        assert_true(ok || retry >= 1);
        admitted += ok;
    }
    return admitted;
}

static int take_global(struct instance *in, int64_t now_ns, int n)
{
    int admitted = 0;
    for (int i = 0; i < n; i++) {
        int64_t retry = 0;
        admitted += guards_take_global(in->g, now_ns, &retry);
    }
    return admitted;
}

static bool metrics_have(struct instance *in, const char *line)
{
    static const char *const routes[] = {"/v1/x"}, *const methods[] = {"GET"};
    static const char *const channels[] = {"sandbox"};
    metrics *reg = metrics_new(routes, methods, 1, channels, 1);
    guards_export(in->g, reg, clock_mono_ns());
    char *m = metrics_render(reg, "test");
    bool found = strstr(m, line) != NULL;
    free(m);
    metrics_free(reg);
    return found;
}

/* Embedded mode: the local buckets as ever, nothing of Redis. */
static void test_embedded(void **state)
{
    (void)state;
    struct instance *a = start(false, ROLE_API | ROLE_WORKER);
    assert_null(guards_shared(a->g));
    int64_t now = clock_mono_ns();
    assert_int_equal(take_merchant(a, "mch_a", now, 25), 20);
    assert_int_equal(take_merchant(a, "mch_a", now + S / 2, 20), 10);
    assert_false(view_bool(a, "merchant", "shared"));
    assert_false(view_bool(a, "global", "shared"));
    assert_int_equal(view_int(a, "merchant", "instances"), 1);
    json_t *m = view_of(a, "merchant");
    assert_null(json_object_get(m, "local_share"));
    json_decref(m);
    assert_false(metrics_have(a, "payd_limiter_shared"));
    assert_false(metrics_have(a, "payd_limiter_fallback_total"));
    char reply[64];
    assert_true(test_redis_send(g_redis.port, "DBSIZE\r\n", 1, reply, sizeof(reply), 2000) > 0);
    assert_string_equal(reply, ":0\r\n");
    stop(a);
}

/* Two instances take from one bucket per limit: the merchant's 20 and a
 * global 30 hold in total, not per instance. The rates are slow so that
 * nothing refills during the test. */
static void test_limits_shared(void **state)
{
    (void)state;
    struct instance *a = start(true, ROLE_API);
    struct instance *b = start(true, ROLE_API);
    apply(a, "{\"limits\": {\"merchant_rps\": 0.1, \"global_rps\": 0.1, \"global_burst\": 30}}");
    apply(b, "{\"limits\": {\"merchant_rps\": 0.1, \"global_rps\": 0.1, \"global_burst\": 30}}");
    assert_non_null(guards_shared(a->g));
    int64_t now = clock_mono_ns();
    int admitted = 0;
    for (int i = 0; i < 40; i++)
        admitted += take_merchant(i % 2 ? a : b, "mch_a", now, 1);
    assert_int_equal(admitted, 20);
    /* another merchant has a bucket of its own */
    assert_int_equal(take_merchant(a, "mch_b", now, 1), 1);
    admitted = 0;
    for (int i = 0; i < 60; i++)
        admitted += take_global(i % 2 ? a : b, now, 1);
    assert_int_equal(admitted, 30);
    /* a rejection says when to come back: 10 s at 0.1/s */
    int64_t retry = 0;
    assert_false(guards_take_global(a->g, now, &retry));
    assert_true(retry >= 9 && retry <= 10);
    assert_true(view_bool(a, "merchant", "shared"));
    assert_true(view_bool(a, "global", "shared"));
    assert_true(instances_become(a, 2));
    assert_int_equal(view_int(a, "merchant", "admitted"), 11);
    assert_int_equal(view_int(a, "global", "admitted") + view_int(b, "global", "admitted"), 30);
    assert_true(metrics_have(a, "payd_limiter_shared{limiter=\"merchant\"} 1\n"));
    assert_true(metrics_have(a, "payd_limiter_fallback_total{limiter=\"merchant\"} 0\n"));
    assert_true(metrics_have(a, "payd_limiter_instances 2\n"));
    stop(a);
    stop(b);
}

/* The share is the limit over the api instances, and follows the count
 * and the settings. */
static void test_share_follows_instances_and_settings(void **state)
{
    (void)state;
    struct instance *a = start(true, ROLE_API);
    struct instance *b = start(true, ROLE_API | ROLE_WORKER);
    struct instance *w = start(true, ROLE_WORKER); /* takes no share */
    assert_true(instances_become(a, 2));
    test_redis_sleep_ms(1200); /* a heartbeat later: the worker is still not counted */
    assert_int_equal(view_int(a, "merchant", "instances"), 2);
    assert_int_equal(view_int(w, "merchant", "instances"), 1);
    double rate;
    int64_t burst;
    view_share(a, "merchant", &rate, &burst);
    assert_true(fabs(rate - 10) < 1e-6);
    assert_int_equal(burst, 10);

    struct instance *c = start(true, ROLE_API);
    assert_true(instances_become(a, 3));
    view_share(a, "merchant", &rate, &burst);
    assert_true(fabs(rate - 20.0 / 3) < 1e-3);
    assert_int_equal(burst, 7); /* 20 / 3 rounded up */

    apply(a, "{\"limits\": {\"merchant_burst\": 30, \"global_rps\": 300}}");
    view_share(a, "merchant", &rate, &burst);
    assert_int_equal(burst, 10);
    view_share(a, "global", &rate, &burst);
    assert_true(fabs(rate - 100) < 1e-3);
    assert_int_equal(burst, 100);

    /* a clean stop leaves the count at once */
    stop(c);
    assert_true(instances_become(a, 2));
    view_share(a, "merchant", &rate, &burst);
    assert_int_equal(burst, 15);
    stop(w);
    stop(b);
    stop(a);
}

/* Breaker transitions reach the other instances' on_change. */
static void test_breaker_change_reaches_others(void **state)
{
    (void)state;
    struct instance *a = start(true, ROLE_WORKER);
    struct instance *b = start(true, ROLE_API);
    struct breaker *br = guards_breaker(a->g, 0);
    int64_t now = clock_mono_ns();
    for (int i = 0; i < 2; i++) {
        struct breaker_ticket t;
        assert_true(breaker_allow(br, now, &t));
        breaker_record(br, &t, BREAKER_FAILURE, MS, now);
    }
    assert_int_equal(breaker_state_at(br, now), BREAKER_OPEN);
    assert_true(changed(&a->changes, 0, 100)); /* its own, at once */
    assert_true(changed(&b->changes, 0, 2000));
    /* a channel this instance does not have: "something changed" */
    assert_int_equal(redis_limit_publish(guards_shared(a->g), "catalogue", "elsewhere"), 2);
    assert_true(changed(&b->changes, -1, 2000));
    stop(a);
    stop(b);
}

/* Counts lines holding word in a file. */
static int count_in_file(const char *path, const char *word)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, word) != NULL;
    fclose(f);
    return n;
}

/* Kept last: it restarts the server, empty. */
static void test_redis_killed_then_restarted(void **state)
{
    (void)state;
    struct instance *a = start(true, ROLE_API);
    struct instance *b = start(true, ROLE_API);
    apply(a, "{\"limits\": {\"global_rps\": 40}}");
    assert_true(instances_become(a, 2));
    int64_t now = clock_mono_ns();
    assert_int_equal(take_merchant(a, "mch_a", now, 1), 1);

    /* The log goes to a file for the rest of the test. */
    char log_path[TEST_PATH_MAX + 16];
    snprintf(log_path, sizeof(log_path), "%s/stderr.log", a->dir);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);

    test_redis_kill(&g_redis);
    /* The shares of two instances: merchant 10/s with 10 at once, global
     * 20/s with 20 at once. Neither unlimited nor refusing everything. */
    int64_t t0 = mono_ms();
    int merchant = take_merchant(a, "mch_a", now, 15);
    int global = take_global(a, now, 30);
    assert_true(mono_ms() - t0 < 1500); /* one failed round trip at most */
    assert_int_equal(merchant, 10);
    assert_int_equal(global, 20);
    assert_false(view_bool(a, "merchant", "shared"));
    assert_false(view_bool(a, "global", "shared"));
    assert_int_equal(view_int(a, "merchant", "fallbacks"), 15);
    assert_true(metrics_have(a, "payd_limiter_shared{limiter=\"merchant\"} 0\n"));
    assert_true(metrics_have(a, "payd_limiter_shared{limiter=\"global\"} 0\n"));
    assert_true(metrics_have(a, "payd_limiter_fallback_total{limiter=\"merchant\"} 15\n"));
    assert_true(metrics_have(a, "payd_limiter_fallback_total{limiter=\"global\"} 30\n"));
    /* the count is what it was when Redis was last reached */
    assert_int_equal(view_int(a, "merchant", "instances"), 2);
    /* the share refills at its rate: 10 a second */
    assert_int_equal(take_merchant(a, "mch_a", now + S, 15), 10);
    /* a change of the settings changes the share at once */
    apply(a, "{\"limits\": {\"merchant_burst\": 40}}");
    assert_int_equal(take_merchant(a, "mch_a", now + 10 * S, 30), 20);

    test_redis_restart(&g_redis);
    bool shared = false;
    for (t0 = mono_ms(); !shared && mono_ms() - t0 < 5000; test_redis_sleep_ms(20)) {
        take_merchant(a, "mch_a", clock_mono_ns(), 1);
        shared = view_bool(a, "merchant", "shared");
    }
    assert_true(shared);
    /* the catalogue subscription came back and said messages may be lost */
    assert_true(changed(&a->changes, -1, 5000));
    assert_true(instances_become(a, 2));
    /* whole again: a fresh bucket in Redis of 40 at once, for both */
    take_global(a, clock_mono_ns(), 1);
    assert_true(view_bool(a, "global", "shared"));
    assert_true(metrics_have(a, "payd_limiter_shared{limiter=\"merchant\"} 1\n"));

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    /* one line when the outage began and one when it ended, whatever the
     * number of takes in between */
    assert_int_equal(count_in_file(log_path, "limits_local_fallback"), 1);
    assert_int_equal(count_in_file(log_path, "limits_shared_again"), 1);
    stop(a);
    stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_embedded, test_redis_flush_each),
        cmocka_unit_test_setup(test_limits_shared, test_redis_flush_each),
        cmocka_unit_test_setup(test_share_follows_instances_and_settings, test_redis_flush_each),
        cmocka_unit_test_setup(test_breaker_change_reaches_others, test_redis_flush_each),
        cmocka_unit_test_setup(test_redis_killed_then_restarted, test_redis_flush_each),
    };
    return cmocka_run_group_tests(tests, test_redis_group_setup, test_redis_group_teardown);
}
