/*
 * test_redis_limit.c - guard/redis_limit against a redis-server of its
 * own: a full bucket admits burst at once and then tells the right wait; it
 * refills at its rate; nanosecond intervals stay exact; interval 0 admits
 * without Redis; two instances, and threads in both, share one bucket
 * exactly; the instance count follows heartbeats and a clean stop, and a
 * client made without an instance id is not counted; pub/sub
 * reaches every subscriber and only on its channel; bad URLs fail without
 * showing the password; and when Redis is killed takes answer -1 at once,
 * the count keeps its last value, and after a restart takes work again and
 * subscribers are resubscribed and told that they may have missed
 * messages.
 */
#include "../testutil_redis.h"

#include <pthread.h>
#include <stdatomic.h>

#include "guard/redis_limit.h"

#define MS 1000000LL


static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static redis_limit *new_limit(const char *instance)
{
    char err[256] = "";
    redis_limit *r = redis_limit_new(g_redis.url, instance, err, sizeof(err));
    if (!r)
        fail_msg("redis_limit_new: %s", err);
    return r;
}

static void test_burst_then_wait(void **state)
{
    (void)state;
    redis_limit *r = new_limit("inst-a");
    int64_t wait_ns = -1;
    for (int i = 0; i < 5; i++)
        assert_int_equal(redis_limit_take(r, "merchant:m1", 100 * MS, 5, &wait_ns), 1);
    assert_int_equal(redis_limit_take(r, "merchant:m1", 100 * MS, 5, &wait_ns), 0);
    /* the next token is due one interval after the burst, less the time
     * the five takes took */
    assert_true(wait_ns > 50 * MS && wait_ns <= 100 * MS);
    /* another bucket is full */
    assert_int_equal(redis_limit_take(r, "merchant:m2", 100 * MS, 5, &wait_ns), 1);
    test_redis_sleep_ms((int)(wait_ns / MS) + 5);
    assert_int_equal(redis_limit_take(r, "merchant:m1", 100 * MS, 5, &wait_ns), 1);
    wait_ns = -1;
    assert_int_equal(redis_limit_take(r, "merchant:m1", 100 * MS, 5, &wait_ns), 0);
    assert_true(wait_ns > 80 * MS && wait_ns <= 100 * MS);
    /* a rejected take without a wait pointer */
    assert_int_equal(redis_limit_take(r, "merchant:m1", 100 * MS, 5, NULL), 0);
    redis_limit_free(r);
    redis_limit_free(NULL);
}

/* 50 per second with a burst of 1, asked every millisecond for a second. */
static void test_rate(void **state)
{
    (void)state;
    redis_limit *r = new_limit("inst-a");
    int admitted = 0;
    int64_t t0 = mono_ms();
    while (mono_ms() - t0 < 1000) {
        int rc = redis_limit_take(r, "global", 20 * MS, 1, NULL);
        assert_true(rc == 0 || rc == 1);
        admitted += rc;
        test_redis_sleep_ms(1);
    }
    if (admitted < 45 || admitted > 56)
        fail_msg("admitted %d in a second at 50/s", admitted);
    redis_limit_free(r);
}

/* Intervals of a nanosecond or a microsecond, far below a timestamp's
 * precision as a double: still exact, still admitted up to the burst. */
static void test_fast_rates(void **state)
{
    (void)state;
    redis_limit *r = new_limit("inst-a");
    int64_t wait_ns = -1;
    for (int i = 0; i < 100; i++)
        assert_int_equal(redis_limit_take(r, "merchant:ns", 1, 1000000000, NULL), 1);
    for (int i = 0; i < 100; i++)
        assert_int_equal(redis_limit_take(r, "merchant:us", 1000, 1000000, NULL), 1);
    /* a bucket of one at 1 per 10 s: the second take waits almost 10 s */
    assert_int_equal(redis_limit_take(r, "merchant:slow", 10000 * MS, 1, NULL), 1);
    assert_int_equal(redis_limit_take(r, "merchant:slow", 10000 * MS, 1, &wait_ns), 0);
    assert_true(wait_ns > 9000 * MS && wait_ns <= 10000 * MS);
    redis_limit_free(r);
}

static void test_unlimited(void **state)
{
    (void)state;
    redis_limit *r = new_limit("inst-a");
    for (int i = 0; i < 1000; i++)
        assert_int_equal(redis_limit_take(r, "global", 0, 1, NULL), 1);
    char reply[64];
    assert_true(test_redis_send(g_redis.port, "EXISTS payd:rl:global\r\n", 1, reply,
                                sizeof(reply), 2000) > 0);
    assert_string_equal(reply, ":0\r\n");
    redis_limit_free(r);
}

static void test_two_instances_share(void **state)
{
    (void)state;
    redis_limit *a = new_limit("inst-a");
    redis_limit *b = new_limit("inst-b");
    int admitted = 0;
    for (int i = 0; i < 20; i++)
        admitted += redis_limit_take(i % 2 ? a : b, "merchant:m1", 1000 * MS, 10, NULL);
    assert_int_equal(admitted, 10);
    int64_t wait_a = -1, wait_b = -1;
    assert_int_equal(redis_limit_take(a, "merchant:m1", 1000 * MS, 10, &wait_a), 0);
    assert_int_equal(redis_limit_take(b, "merchant:m1", 1000 * MS, 10, &wait_b), 0);
    assert_true(wait_a > 500 * MS && wait_a <= 1000 * MS);
    assert_true(wait_b > 500 * MS && wait_b <= wait_a);
    redis_limit_free(a);
    redis_limit_free(b);
}

/* Two threads in each of two instances, 300 takes each, from a bucket of
 * 100 that refills once in 100 s: exactly 100 admitted. */
struct taker {
    redis_limit *r;
    int admitted, errors;
};

static void *take_many(void *arg)
{
    struct taker *t = arg;
    for (int i = 0; i < 300; i++) {
        int rc = redis_limit_take(t->r, "global", 100000 * MS, 100, NULL);
        t->admitted += rc == 1;
        t->errors += rc < 0;
    }
    return NULL;
}

static void test_threads_share(void **state)
{
    (void)state;
    redis_limit *a = new_limit("inst-a");
    redis_limit *b = new_limit("inst-b");
    struct taker t[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (struct taker){.r = i % 2 ? a : b};
        assert_int_equal(pthread_create(&th[i], NULL, take_many, &t[i]), 0);
    }
    int admitted = 0, errors = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        admitted += t[i].admitted;
        errors += t[i].errors;
    }
    assert_int_equal(errors, 0);
    assert_int_equal(admitted, 100);
    redis_limit_free(a);
    redis_limit_free(b);
}

/* Polls until the count is want, for up to 3 heartbeats. */
static bool instances_become(redis_limit *r, int want)
{
    for (int64_t t0 = mono_ms(); mono_ms() - t0 < 3500; test_redis_sleep_ms(20))
        if (redis_limit_instances(r) == want)
            return true;
    return false;
}

static void test_instances(void **state)
{
    (void)state;
    redis_limit *a = new_limit("inst-a");
    assert_int_equal(redis_limit_instances(a), 1);
    redis_limit *b = new_limit("inst-b");
    assert_int_equal(redis_limit_instances(b), 2); /* its first heartbeat saw a */
    assert_true(instances_become(a, 2));
    redis_limit *c = new_limit("inst-c");
    assert_true(instances_become(a, 3));
    assert_true(instances_become(b, 3));
    /* a clean stop leaves the count at once */
    redis_limit_free(c);
    redis_limit_free(b);
    assert_true(instances_become(a, 1));
    redis_limit_free(a);
}

/* A process that takes no share (a worker, a merchant command) is not
 * counted, yet takes, publishes and subscribes. */
static void test_uncounted_client(void **state)
{
    (void)state;
    redis_limit *a = new_limit("inst-a");
    char err[256] = "";
    redis_limit *c = redis_limit_new(g_redis.url, NULL, err, sizeof(err));
    if (!c)
        fail_msg("redis_limit_new: %s", err);
    assert_int_equal(redis_limit_instances(c), 1);
    test_redis_sleep_ms(1200); /* a heartbeat of a's */
    assert_int_equal(redis_limit_instances(a), 1);
    assert_int_equal(redis_limit_take(c, "global", 1000 * MS, 1, NULL), 1);
    assert_int_equal(redis_limit_take(a, "global", 1000 * MS, 1, NULL), 0);
    assert_int_equal(redis_limit_publish(c, "nobody", "x"), 0);
    redis_limit_free(c);
    assert_int_equal(redis_limit_instances(a), 1);
    redis_limit_free(a);
}

/* Collects what a subscription delivers. */
struct inbox {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int n;
    char msgs[16][64];
    int resets; /* fn(arg, NULL) */
};

static void inbox_init(struct inbox *in)
{
    memset(in, 0, sizeof(*in));
    pthread_mutex_init(&in->mu, NULL);
    pthread_cond_init(&in->cond, NULL);
}

static void inbox_destroy(struct inbox *in)
{
    pthread_mutex_destroy(&in->mu);
    pthread_cond_destroy(&in->cond);
}

static void on_message(void *arg, const char *msg)
{
    struct inbox *in = arg;
    pthread_mutex_lock(&in->mu);
    if (!msg)
        in->resets++;
    else if (in->n < 16)
        snprintf(in->msgs[in->n++], sizeof(in->msgs[0]), "%s", msg);
    pthread_cond_broadcast(&in->cond);
    pthread_mutex_unlock(&in->mu);
}

/* Waits until the inbox holds n messages and resets resets; true then. */
static bool inbox_wait(struct inbox *in, int n, int resets, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&in->mu);
    while ((in->n < n || in->resets < resets) &&
           pthread_cond_timedwait(&in->cond, &in->mu, &until) == 0) {
    }
    bool ok = in->n >= n && in->resets >= resets;
    pthread_mutex_unlock(&in->mu);
    return ok;
}

static void test_pubsub(void **state)
{
    (void)state;
    redis_limit *a = new_limit("inst-a");
    redis_limit *b = new_limit("inst-b");
    struct inbox ina, inb, other;
    inbox_init(&ina);
    inbox_init(&inb);
    inbox_init(&other);
    assert_int_equal(redis_limit_subscribe(a, "catalogue", on_message, &ina), 0);
    assert_int_equal(redis_limit_subscribe(b, "catalogue", on_message, &inb), 0);
    assert_int_equal(redis_limit_subscribe(b, "elsewhere", on_message, &other), 0);
    assert_int_equal(redis_limit_publish(a, "catalogue", "version 2"), 2);
    assert_int_equal(redis_limit_publish(b, "catalogue", "version 3"), 2);
    assert_true(inbox_wait(&ina, 2, 0, 2000));
    assert_true(inbox_wait(&inb, 2, 0, 2000));
    assert_string_equal(ina.msgs[0], "version 2");
    assert_string_equal(ina.msgs[1], "version 3");
    assert_string_equal(inb.msgs[0], "version 2");
    assert_string_equal(inb.msgs[1], "version 3");
    assert_int_equal(other.n, 0);
    assert_int_equal(ina.resets + inb.resets + other.resets, 0);
    /* nobody listens on a channel without subscribers */
    assert_int_equal(redis_limit_publish(a, "nobody", "x"), 0);
    redis_limit_free(a);
    redis_limit_free(b);
    inbox_destroy(&ina);
    inbox_destroy(&inb);
    inbox_destroy(&other);
}

static void test_too_many_subscriptions(void **state)
{
    (void)state;
    redis_limit *a = new_limit("inst-a");
    struct inbox in;
    inbox_init(&in);
    for (int i = 0; i < REDIS_LIMIT_SUBS_MAX; i++)
        assert_int_equal(redis_limit_subscribe(a, "c", on_message, &in), 0);
    assert_int_equal(redis_limit_subscribe(a, "c", on_message, &in), -2);
    assert_int_equal(redis_limit_publish(a, "c", "m"), REDIS_LIMIT_SUBS_MAX);
    assert_true(inbox_wait(&in, REDIS_LIMIT_SUBS_MAX, 0, 2000));
    redis_limit_free(a);
    inbox_destroy(&in);
}

static void test_bad_url_and_unreachable(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(redis_limit_new("redis://:s3cret@127.0.0.1:x", "inst-a", err, sizeof(err)));
    assert_true(err[0] != '\0');
    assert_null(strstr(err, "s3cret"));
    char url[128];
    snprintf(url, sizeof(url), "redis://:s3cret@127.0.0.1:%d", test_redis_free_port());
    int64_t t0 = mono_ms();
    assert_null(redis_limit_new(url, "inst-a", err, sizeof(err)));
    assert_true(mono_ms() - t0 < 1500);
    assert_non_null(strstr(err, "127.0.0.1"));
    assert_null(strstr(err, "s3cret"));
}

/* Kept last: it restarts the server, empty. */
static void test_redis_killed_and_restarted(void **state)
{
    (void)state;
    redis_limit *a = new_limit("inst-a");
    redis_limit *b = new_limit("inst-b");
    struct inbox in;
    inbox_init(&in);
    assert_int_equal(redis_limit_subscribe(a, "catalogue", on_message, &in), 0);
    assert_true(instances_become(a, 2));
    assert_int_equal(redis_limit_take(a, "global", 1000 * MS, 100, NULL), 1);

    test_redis_kill(&g_redis);
    int64_t t0 = mono_ms();
    assert_int_equal(redis_limit_take(a, "global", 1000 * MS, 100, NULL), -1);
    assert_true(mono_ms() - t0 < 1500);
    /* known down now: every take answers at once */
    t0 = mono_ms();
    for (int i = 0; i < 10000; i++)
        assert_int_equal(redis_limit_take(a, "global", 1000 * MS, 100, NULL), -1);
    assert_true(mono_ms() - t0 < 500);
    assert_int_equal(redis_limit_publish(a, "catalogue", "lost"), -1);
    /* the count keeps what it last knew, for the callers' local shares */
    test_redis_sleep_ms(1200);
    assert_int_equal(redis_limit_instances(a), 2);

    test_redis_restart(&g_redis);
    int rc = -1;
    for (t0 = mono_ms(); rc < 0 && mono_ms() - t0 < 5000; test_redis_sleep_ms(20))
        rc = redis_limit_take(a, "global", 1000 * MS, 100, NULL);
    assert_int_equal(rc, 1);
    /* the subscriber comes back and says it may have missed messages */
    assert_true(inbox_wait(&in, 0, 1, 5000));
    /* b's pool comes back on its own prober's time */
    rc = -1;
    for (t0 = mono_ms(); rc < 1 && mono_ms() - t0 < 3000; test_redis_sleep_ms(20))
        rc = redis_limit_publish(b, "catalogue", "after");
    assert_int_equal(rc, 1);
    assert_true(inbox_wait(&in, 1, 1, 2000));
    assert_string_equal(in.msgs[0], "after");
    assert_true(instances_become(a, 2));
    redis_limit_free(a);
    redis_limit_free(b);
    inbox_destroy(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_burst_then_wait, test_redis_flush_each),
        cmocka_unit_test_setup(test_rate, test_redis_flush_each),
        cmocka_unit_test_setup(test_fast_rates, test_redis_flush_each),
        cmocka_unit_test_setup(test_unlimited, test_redis_flush_each),
        cmocka_unit_test_setup(test_two_instances_share, test_redis_flush_each),
        cmocka_unit_test_setup(test_threads_share, test_redis_flush_each),
        cmocka_unit_test_setup(test_instances, test_redis_flush_each),
        cmocka_unit_test_setup(test_uncounted_client, test_redis_flush_each),
        cmocka_unit_test_setup(test_pubsub, test_redis_flush_each),
        cmocka_unit_test_setup(test_too_many_subscriptions, test_redis_flush_each),
        cmocka_unit_test_setup(test_bad_url_and_unreachable, test_redis_flush_each),
        cmocka_unit_test_setup(test_redis_killed_and_restarted, test_redis_flush_each),
    };
    return cmocka_run_group_tests(tests, test_redis_group_setup, test_redis_group_teardown);
}
