/*
 * payd.c - the program: command line, configuration, wiring, signals.
 *
 *   payd serve [--config FILE] [--listen HOST:PORT] [--data-dir DIR]
 *   payd merchant add|rotate-key NAME [--data-dir DIR]
 *   payd merchant list [--data-dir DIR]
 *   payd version
 *
 * `serve` opens the store, the channels, the lock table and the queue,
 * starts the payment workers and the HTTP server, and waits for SIGTERM or
 * SIGINT in sigwait(): the signals are blocked in every thread (they are
 * blocked here before any thread starts), so none is lost to a server
 * thread. Shutdown drains: /readyz turns 503, parked requests get their
 * answers, workers finish the payment in hand, the store commits.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "app.h"
#include "cli.h"
#include "conf.h"
#include "core/ids.h"
#include "http/server.h"
#include "obs/log.h"
#include "obs/monitor.h"
#include "util/program.h"
#include "util/util.h"
#include "worker/housekeeper.h"
#include "worker/refunds.h"
#include "worker/webhooks.h"
#include "worker/worker.h"

#define INFLIGHT_KEYS_MAX 65536
#define KEY_CACHE_SLOTS 4096
/* Cluster mode: how long a cached key can outlive its rotation when the
 * "keys" message is lost. */
#define KEY_CACHE_MAX_AGE_CLUSTER_MS 5000
#define KEYS_CHANNEL "keys" /* pub/sub: a merchant's key changed; message: its name */
#define ORDER_CACHE_SLOTS (1 << 18) /* about 24 MiB */
#define SHUTDOWN_GRACE_MS 10000
#define CLI_STORE_WAIT_MS 10000
#define MONITOR_INTERVAL_MS 1000  /* one sample (and one judgement of the alerts) a second */
#define DASHBOARD_HISTORY_S 900   /* samples the dashboard can show */
#define REFUND_THREADS 2
#define REFUND_POLL_MS 1000 /* refunds and events another instance created */
#define WEBHOOK_THREADS 4

static void usage(void)
{
    fprintf(stderr,
            "usage:\n"
            "  payd serve [--config FILE] [--listen HOST:PORT] [--data-dir DIR]\n"
            "             [--log-format json|text]\n"
            "  payd merchant add NAME [--data-dir DIR]\n"
            "  payd merchant rotate-key NAME [--data-dir DIR]\n"
            "  payd merchant list [--data-dir DIR]\n"
            "  payd version\n");
}

static void wake_queue(void *q)
{
    queue_notify(q);
}

/* The queue on NATS JetStream: api instances relay the outbox to it,
 * workers consume it. NULL after saying why. */
static queue *open_nats(const struct conf *conf, store *s)
{
    struct queue_nats_options o = {.urls = conf->queue_url,
                                   .relay = (conf->roles & ROLE_API) != 0,
                                   .consume = (conf->roles & ROLE_WORKER) != 0,
                                   .ack_wait_ms = conf->worker_lease_ms,
                                   .max_deliver = (int)conf->queue_max_deliver,
                                   .replicas = (int)conf->queue_replicas,
                                   .sweep_after_ms = conf->queue_sweep_after_ms,
                                   .prefetch = (int)conf->worker_threads};
    char err[512];
    queue *q = queue_nats_new(s, &o, err, sizeof(err));
    if (!q)
        fprintf(stderr, "payd: %s\n", err);
    return q;
}

/* The order locks: in-process, or shared through Redis. NULL after saying
 * why. */
static lock_service *open_lock(const struct conf *conf, int64_t min_token)
{
    if (conf->lock_backend == LOCK_BACKEND_LOCAL)
        return lock_local_new(min_token);
    char err[512];
    lock_service *l = lock_redis_new(conf->lock_url, min_token, err, sizeof(err));
    if (!l)
        fprintf(stderr, "payd: %s\n", err);
    return l;
}

/* ---- merchants ---- */

static bool merchant_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > MERCHANT_NAME_MAX)
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
            return false;
    return true;
}

static bool api_key_acceptable(const char *key)
{
    size_t n = strlen(key);
    if (n < 16 || n > 128)
        return false;
    for (const char *p = key; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return false;
    return true;
}

/* Adds a merchant with the given key; 0, or a store_rc. */
static int merchant_add(store *s, const char *name, const char *key, struct merchant *m)
{
    char hash[65];
    api_key_hash(key, hash);
    struct store_op op = {.kind = STORE_OP_MERCHANT_ADD};
    m->created_ms = clock_wall_ms();
    id_new("mch_", m->created_ms, m->id);
    snprintf(m->name, sizeof(m->name), "%s", name);
    op.in.merchant.merchant = *m;
    op.in.merchant.key_hash = hash;
    return store_exec(s, &op, CLI_STORE_WAIT_MS);
}

/* Cluster mode: tells every instance to drop its key cache, since the
 * epoch file reaches only the instance whose data directory it is in.
 * When Redis cannot be told this says so; the instances drop the old key
 * after KEY_CACHE_MAX_AGE_CLUSTER_MS all the same. */
static void announce_key_change(const struct conf *conf, const char *name)
{
    if (conf->lock_backend != LOCK_BACKEND_REDIS)
        return;
    char err[512] = "PUBLISH failed";
    /* Without an instance id: a command is not counted among the instances. */
    redis_limit *r = redis_limit_new(conf->lock_url, NULL, err, sizeof(err));
    int told = r ? redis_limit_publish(r, KEYS_CHANNEL, name) : -1;
    redis_limit_free(r);
    if (told < 0)
        fprintf(stderr, "payd: the change is stored, but the running instances could not be "
                        "told (%s): a replaced key may still work for up to %d s\n",
                err, KEY_CACHE_MAX_AGE_CLUSTER_MS / 1000);
}

static int print_merchant(void *arg, const struct merchant *m)
{
    (void)arg;
    char created[25];
    clock_format_rfc3339(m->created_ms, created);
    printf("%-24s %-32s %s\n", m->name, m->id, created);
    return 0;
}

static int cmd_merchant(struct cli_args *a)
{
    if (a->positional_count < 1) {
        usage();
        return 2;
    }
    const char *verb = a->positional[0];
    bool list = strcmp(verb, "list") == 0;
    bool add = strcmp(verb, "add") == 0;
    bool rotate = strcmp(verb, "rotate-key") == 0;
    if (!list && !add && !rotate) {
        usage();
        return 2;
    }
    if ((list && a->positional_count != 1) || (!list && a->positional_count != 2)) {
        usage();
        return 2;
    }
    const char *name = list ? NULL : a->positional[1];
    if (name && !merchant_name_valid(name)) {
        fprintf(stderr, "payd: a merchant name is 1 to 64 of A-Z a-z 0-9 . _ -\n");
        return 1;
    }
    struct conf conf;
    if (cli_load_conf("payd", a, &conf) != 0)
        return 1;
    struct stat st;
    if (!add && stat(conf.data_dir, &st) != 0) {
        fprintf(stderr, "payd: no data directory at %s\n", conf.data_dir);
        return 1;
    }
    store *s = cli_open_store("payd", &conf, NULL, NULL);
    if (!s)
        return 1;

    int status = 0;
    if (list) {
        if (store_merchant_list(s, print_merchant, NULL) != STORE_OK) {
            fprintf(stderr, "payd: cannot read merchants\n");
            status = 1;
        }
        goto out_close;
    }
    char key[API_KEY_LEN + 1];
    api_key_new(key);
    int rc;
    if (add) {
        struct merchant m;
        rc = merchant_add(s, name, key, &m);
        if (rc == STORE_OK)
            printf("merchant %s created, id %s\nits API key (shown once; only a hash is "
                   "kept):\n%s\n",
                   name, m.id, key);
    } else {
        char hash[65];
        api_key_hash(key, hash);
        struct store_op op = {.kind = STORE_OP_MERCHANT_ROTATE};
        snprintf(op.in.merchant.merchant.name, sizeof(op.in.merchant.merchant.name), "%s",
                 name);
        op.in.merchant.key_hash = hash;
        rc = store_exec(s, &op, CLI_STORE_WAIT_MS);
        if (rc == STORE_OK)
            printf("merchant %s has a new API key; the old one no longer works:\n%s\n", name,
                   key);
    }
    bool epoch_failed = rc == STORE_OK && key_cache_bump_epoch(conf.data_dir) != 0;
    if (epoch_failed)
        fprintf(stderr, "payd: the change is stored, but %s/merchants.epoch could not be "
                        "written: a running server may accept the old key until it restarts\n",
                conf.data_dir);
    /* A failure here is bounded (the cluster's key cache ages) and said:
     * the command has done its job. */
    if (rc == STORE_OK)
        announce_key_change(&conf, name);
    if (rc == STORE_E_DUPLICATE)
        fprintf(stderr, "payd: a merchant named %s exists already\n", name);
    else if (rc == STORE_E_NOT_FOUND)
        fprintf(stderr, "payd: no merchant named %s\n", name);
    else if (rc != STORE_OK)
        fprintf(stderr, "payd: the store failed (%s)\n", store_rc_name(rc));
    status = rc == STORE_OK && !epoch_failed ? 0 : 1;
out_close:
    store_close(s);
    return status;
}

/* ---- serve ---- */

/* Writes the demo key file durably (mode 0600) before the key is stored, so
 * a crash can never leave a demo merchant whose key nobody has. */
static int write_key_file(const char *dir, const char *key, char path[1100])
{
    char tmp[1100];
    snprintf(path, 1100, "%s/demo.key", dir);
    snprintf(tmp, sizeof(tmp), "%s/demo.key.tmp", dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    size_t n = strlen(key);
    bool ok = write(fd, key, n) == (ssize_t)n && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) != 0)
        return -1;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* Creates the demo merchant in a new data directory. */
static int ensure_demo(store *s, const struct conf *conf)
{
    int64_t count = store_merchant_count(s);
    if (count < 0) {
        fprintf(stderr, "payd: cannot read merchants\n");
        return -1;
    }
    if (count > 0)
        return 0;
    char key[129];
    const char *env = getenv("PAYD_DEMO_KEY");
    if (env) {
        if (!api_key_acceptable(env)) {
            fprintf(stderr, "payd: PAYD_DEMO_KEY must be 16 to 128 printable characters "
                            "without spaces\n");
            return -1;
        }
        snprintf(key, sizeof(key), "%s", env);
    } else {
        api_key_new(key);
    }
    char path[1100];
    if (write_key_file(conf->data_dir, key, path) != 0) {
        fprintf(stderr, "payd: cannot write %s/demo.key: %s\n", conf->data_dir,
                strerror(errno));
        return -1;
    }
    struct merchant m;
    int rc = merchant_add(s, "demo", key, &m);
    if (rc != STORE_OK) {
        fprintf(stderr, "payd: cannot create the demo merchant (%s)\n", store_rc_name(rc));
        return -1;
    }
    printf("created merchant demo; its API key (also in %s):\n%s\n", path, key);
    return 0;
}

/* Holds an exclusive lock on DIR/payd.lock for the life of the process: one
 * server per data directory. The merchant commands do not take it. */
static int lock_data_dir(const char *dir)
{
    char path[1100];
    snprintf(path, sizeof(path), "%s/payd.lock", dir);
    int fd = lock_file(path);
    if (fd < 0)
        fprintf(stderr, "payd: another payd serves %s (or it cannot be locked)\n", dir);
    return fd;
}

/* Counts the answer and writes its log line. */
static void on_answer(void *arg, const struct http_answer *a)
{
    struct app *app = arg;
    metrics_http(app->metrics, a->route, a->status, a->latency_us);
    if (!app->conf->log_requests)
        return;
    struct log_request line = {.request_id = a->request_id, .method = a->method,
                               .route = metrics_route_name(app->metrics, a->route),
                               .path = a->path, .status = a->status,
                               .latency_us = a->latency_us, .merchant_id = a->merchant_id,
                               .order_id = a->order_id, .payment_id = a->payment_id};
    log_request(&line);
}

static void on_lock(void *arg, int rc, int64_t wait_us)
{
    struct app *app = arg;
    int result = rc == LOCK_OK       ? LOCK_RESULT_ACQUIRED
                 : rc == LOCK_E_BUSY ? LOCK_RESULT_BUSY
                                     : LOCK_RESULT_ERROR;
    metrics_inc(app->metrics, M_LOCK_ACQUISITIONS, result, 0);
    metrics_observe(app->metrics, M_LOCK_WAIT, 0, 0, wait_us);
}

/* At every scrape: the guards' state, which lives in the guards. */
static void on_render(void *arg, metrics *m)
{
    struct app *app = arg;
    guards_export(app->guards, m, clock_mono_ns());
}

/* Every second, on the monitor thread: what the store knows of the queue
 * and, every [alerts] ledger_check_s, of the ledger (a full read). */
static void refresh_gauges(void *arg, int64_t now_ms)
{
    struct app *app = arg;
    guards_export(app->guards, app->metrics, clock_mono_ns());
    struct store_queue_stats q;
    /* A dead letter has been delivered more than max_attempts times (a
     * message in its last attempt is still being worked on). */
    if (store_queue_stats(app->store, app->conf->worker_max_attempts + 1, &q) == STORE_OK) {
        metrics_set(app->metrics, M_QUEUE_DEPTH, 0, 0, (double)q.depth);
        double age_s = q.depth > 0 ? (double)(now_ms - q.oldest_created_ms) / 1000.0 : 0;
        metrics_set(app->metrics, M_QUEUE_OLDEST_AGE, 0, 0, age_s > 0 ? age_s : 0);
        metrics_set(app->metrics, M_DEAD_LETTERS, 0, 0, (double)q.dead);
    } else {
        /* Unknown, not stale: the rules do not judge what cannot be read. */
        metrics_set(app->metrics, M_QUEUE_DEPTH, 0, 0, NAN);
        metrics_set(app->metrics, M_QUEUE_OLDEST_AGE, 0, 0, NAN);
        metrics_set(app->metrics, M_DEAD_LETTERS, 0, 0, NAN);
    }
    if (now_ms - app->ledger_checked_ms >= app->conf->ledger_check_s * 1000) {
        app->ledger_checked_ms = now_ms;
        int64_t imbalance = store_ledger_imbalance(app->store);
        if (imbalance >= 0)
            metrics_set(app->metrics, M_LEDGER_IMBALANCE, 0, 0, (double)imbalance);
        else
            log_warn("ledger_check_failed", NULL);
    }
}

static void on_channel_change(void *arg, int ch)
{
    struct app *app = arg;
    (void)ch;
    catalogue_cache_invalidate(app->catalogue);
}

/* Another process changed a merchant's key (msg: its name), or (msg NULL)
 * such messages may have been lost. */
static void on_keys_change(void *arg, const char *msg)
{
    (void)msg;
    key_cache_invalidate(arg);
}

static void on_commit(void *arg, int ops, int64_t latency_us)
{
    struct app *app = arg;
    metrics_inc(app->metrics, M_STORE_COMMITS, 0, 0);
    metrics_add(app->metrics, M_STORE_COMMIT_OPS, 0, 0, (uint64_t)ops);
    metrics_observe(app->metrics, M_STORE_BATCH_SIZE, 0, 0, ops);
    metrics_observe(app->metrics, M_STORE_COMMIT_DURATION, 0, 0, latency_us);
}

static int cmd_serve(struct cli_args *a)
{
    struct conf conf;
    if (a->positional_count != 0) {
        usage();
        return 2;
    }
    if (cli_load_conf("payd", a, &conf) != 0)
        return 1;
    log_init((enum log_format)conf.log_format, (enum log_level)conf.log_level);

    /* glibc hands freed heap back to the kernel (madvise) and faults it in
     * again on the next allocation: page faults were 6 % and madvise 2 % of
     * the store writer's profile. Keep freed memory instead. (No throughput
     * change could be told from run-to-run noise.) */
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    mallopt(M_MMAP_THRESHOLD, 4 << 20);

    sigset_t sigs;
    signals_block_stop(&sigs);

    if (mkdir(conf.data_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "payd: cannot create %s: %s\n", conf.data_dir, strerror(errno));
        return 1;
    }
    int lock_fd = lock_data_dir(conf.data_dir);
    if (lock_fd < 0)
        return 1;

    int status = 1;
    char err[512];
    struct app app = {.conf = &conf};
    atomic_init(&app.draining, false);
    worker_pool *workers = NULL;
    housekeeper *keeper = NULL;
    monitor *mon = NULL;
    http_server *http = NULL;
    const char *channel_names[CONF_CHANNELS_MAX];

    app.store = cli_open_store("payd", &conf, on_commit, &app);
    if (!app.store)
        goto out_unlock;
    if (ensure_demo(app.store, &conf) != 0)
        goto out_store;
    app.channels = channel_set_new(&conf, err, sizeof(err));
    if (!app.channels) {
        fprintf(stderr, "payd: %s\n", err);
        goto out_store;
    }
    for (int i = 0; i < channel_set_count(app.channels); i++)
        channel_names[i] = channel_set_at(app.channels, i)->name;
    app.metrics = metrics_new(api_route_names, api_route_methods, api_route_count,
                              channel_names, channel_set_count(app.channels));
    app.catalogue = catalogue_cache_new();
    app.guards = guards_new(&conf, on_channel_change, &app, err, sizeof(err));
    if (!app.guards) {
        fprintf(stderr, "payd: %s\n", err);
        goto out_channels;
    }
    metrics_on_render(app.metrics, on_render, &app);
    app.alerts = alerts_new(&conf, channel_names, channel_set_count(app.channels), err,
                            sizeof(err));
    if (!app.alerts) {
        fprintf(stderr, "payd: %s\n", err);
        goto out_channels;
    }
    /* The dashboard shows a quarter of an hour; the rules may read more. */
    int64_t keep_s = alerts_longest_window_s(&conf);
    app.series = series_new((int)(keep_s > DASHBOARD_HISTORY_S ? keep_s : DASHBOARD_HISTORY_S) +
                            2);
    app.inflight = idem_inflight_new(INFLIGHT_KEYS_MAX);
    app.keys = key_cache_new(conf.data_dir, KEY_CACHE_SLOTS);
    if (guards_shared(app.guards)) {
        /* Cluster mode: the merchant commands run against another
         * instance's data directory; their change comes by pub/sub. */
        key_cache_set_max_age_ms(app.keys, KEY_CACHE_MAX_AGE_CLUSTER_MS);
        redis_limit_subscribe(guards_shared(app.guards), KEYS_CHANNEL, on_keys_change, app.keys);
    }
    app.orders = order_cache_new(ORDER_CACHE_SLOTS);
    /* Both services take order locks: the API to accept a payment, the
     * workers to process it. */
    app.lock = open_lock(&conf, store_max_fence(app.store));
    if (!app.lock)
        goto out_stop;
    app.lock->observe = on_lock;
    app.lock->observe_arg = &app;
    if (conf.queue_backend == QUEUE_BACKEND_NATS) {
        app.queue = open_nats(&conf, app.store);
        if (!app.queue)
            goto out_stop;
        store_on_outbox(app.store, wake_queue, app.queue); /* wakes the relay */
    } else if (conf.roles & ROLE_WORKER) {
        struct queue_outbox_options qopts = {.lease_ms = conf.worker_lease_ms,
                                             .prefetch = (int)conf.worker_threads};
        app.queue = queue_outbox_new(app.store, &qopts);
        store_on_outbox(app.store, wake_queue, app.queue);
    }
    if (conf.roles & ROLE_WORKER) {
        struct worker_options wopts = {.threads = (int)conf.worker_threads,
                                       .lease_ms = conf.worker_lease_ms,
                                       .max_attempts = (int)conf.worker_max_attempts,
                                       .retry_base_ms = conf.worker_retry_base_ms,
                                       .retry_max_ms = conf.worker_retry_max_ms};
        /* Senders before the refunders, refunders before the workers: each
         * wakes the ones started before it. */
        struct webhook_options hkopts = {.threads = WEBHOOK_THREADS,
                                         .timeout_ms = conf.webhook_timeout_ms,
                                         .retry_base_ms = conf.webhook_retry_base_ms,
                                         .retry_max_ms = conf.webhook_retry_max_ms,
                                         .give_up_s = conf.webhook_give_up_s,
                                         .poll_ms = REFUND_POLL_MS,
                                         .allow_private = conf.webhook_allow_private == 1};
        app.webhooks = webhooks_start(&app, &hkopts);
        struct refunder_options ropts = {.threads = REFUND_THREADS,
                                         .lease_ms = conf.worker_lease_ms,
                                         .max_attempts = (int)conf.worker_max_attempts,
                                         .retry_base_ms = conf.worker_retry_base_ms,
                                         .retry_max_ms = conf.worker_retry_max_ms,
                                         .poll_ms = REFUND_POLL_MS};
        app.refunder = refunder_start(&app, &ropts);
        workers = worker_pool_start(&app, &wopts);
    }
    struct housekeeper_options kopts = {
        .idem_ttl_s = (conf.roles & ROLE_API) ? conf.idem_ttl_s : 0,
        .idem_interval_s = conf.idem_purge_interval_s,
        .order_ttl_s = (conf.roles & ROLE_WORKER) ? conf.order_ttl_s : 0,
        .order_interval_s = conf.order_close_interval_s};
    keeper = housekeeper_start(app.store, &kopts);
    struct monitor_options mopts = {.metrics = app.metrics, .series = app.series,
                                    .alerts = app.alerts,
                                    .channel_count = channel_set_count(app.channels),
                                    .interval_ms = MONITOR_INTERVAL_MS,
                                    .refresh = refresh_gauges, .refresh_arg = &app};
    mon = monitor_start(&mopts);

    char host[128];
    int port;
    PAYD_ASSERT(conf_listen_split(conf.listen, host, &port) == 0);
    struct http_server_options hopts = {.host = host, .port = port,
                                        .threads = (int)conf.http_threads,
                                        .max_body_bytes = (size_t)conf.max_body_bytes,
                                        .dispatch = api_dispatch, .on_answer = on_answer,
                                        .app = &app};
    http = http_server_start(&hopts, err, sizeof(err));
    if (!http) {
        fprintf(stderr, "payd: %s\n", err);
        goto out_stop;
    }
    printf("payd %s listening on http://%s (data in %s)\n"
           "dashboard: http://%s/dashboard   metrics: http://%s/metrics\n"
           "try:\n  curl -s -X POST http://%s/v1/orders \\\n"
           "    -H \"Authorization: Bearer $(cat %s/demo.key)\" \\\n"
           "    -H 'Content-Type: application/json' \\\n"
           "    -d '{\"merchant_order_no\":\"A-1001\",\"amount\":1999,\"currency\":\"CNY\"}'\n",
           PAYD_VERSION, conf.listen, conf.data_dir, conf.listen, conf.listen, conf.listen,
           conf.data_dir);
    fflush(stdout);
    log_info("started", "listen", conf.listen, "data_dir", conf.data_dir, NULL);

    int sig = 0;
    sigwait(&sigs, &sig);
    log_info("stopping", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
    atomic_store(&app.draining, true);
    status = 0;

out_stop:
    http_server_stop(http, SHUTDOWN_GRACE_MS);
    monitor_stop(mon);
    housekeeper_stop(keeper);
    if (app.queue) {
        store_on_outbox(app.store, NULL, NULL);
        queue_stop(app.queue);
    }
    worker_pool_stop(workers);
    refunder_stop(app.refunder);
    webhooks_stop(app.webhooks);
    queue_free(app.queue);
    lock_free(app.lock);
    idem_inflight_free(app.inflight);
    order_cache_free(app.orders);
out_channels:
    alerts_free(app.alerts);
    series_free(app.series);
    guards_free(app.guards); /* ends the subscriptions that use the caches */
    key_cache_free(app.keys);
    catalogue_cache_free(app.catalogue);
    channel_set_free(app.channels);
out_store:
    store_close(app.store);
    metrics_free(app.metrics);
out_unlock:
    close(lock_fd);
    if (status == 0)
        log_info("stopped", NULL);
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    struct cli_args a;
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("payd %s\n", PAYD_VERSION);
        return 0;
    }
    if (cli_parse_args("payd", argc - 2, argv + 2, &a) != 0 || a.date || a.channel) {
        if (a.date || a.channel)
            fprintf(stderr, "payd: --date and --channel are payctl's options\n");
        usage();
        return 2;
    }
    if (strcmp(argv[1], "serve") == 0) {
        /* libcurl (the alert push) is set up once, before any thread. */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
            fprintf(stderr, "payd: cannot initialise libcurl\n");
            return 1;
        }
        int rc = cmd_serve(&a);
        curl_global_cleanup();
        return rc;
    }
    if (strcmp(argv[1], "merchant") == 0)
        return cmd_merchant(&a);
    usage();
    return 2;
}
