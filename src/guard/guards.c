/*
 * guards.c - see guards.h.
 *
 * Merchant buckets live in an open-addressing table whose slots are filled
 * by compare-and-swap and never emptied, so finding a merchant's bucket
 * takes no lock. The table holds MERCHANTS_MAX merchants; beyond that (a
 * number no single payd serves) the rest share one bucket, which a log line
 * says.
 *
 * Cluster mode adds one branch to a take: ask Redis for a token of the
 * whole limit, and only when Redis is unavailable use the local bucket at
 * the instance's share (struct shared_limiter). The shares are recomputed
 * when the settings change (install) and when a take finds that the
 * instance count moved.
 */
#include "guard/guards.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/ids.h"
#include "obs/log.h"
#include "util/util.h"

#define NS_PER_S 1000000000LL
#define MERCHANT_SLOTS (1 << 17)
#define MERCHANTS_MAX (MERCHANT_SLOTS / 4 * 3)
#define GUARDS_FILE "guards.json"
#define CATALOGUE_CHANNEL "catalogue" /* pub/sub: a breaker changed; message: its channel */
#define NOTICE_RETRY_MS 1000          /* a breaker notice Redis did not take is sent again */
#define INSTANCE_ID_MAX 100

_Static_assert(CONF_CHANNELS_MAX <= 32, "pending breaker notices are a 32-bit mask");

struct merchant_bucket {
    char id[ID_MAX];
    struct token_bucket bucket;
};

/* A rate limiter in cluster mode: the bucket is in Redis; while Redis is
 * unavailable the limiter's local bucket(s) run at share, this instance's
 * part of the whole limit. */
struct shared_limiter {
    const char *name; /* "global", "merchant": the metrics label */
    struct rate_limit share;
    atomic_bool local;              /* the last take that asked Redis fell back */
    atomic_uint_fast64_t fallbacks; /* takes decided at the share */
};

struct channel_guard {
    char name[33];
    struct breaker breaker;
    struct leaky_bucket pacer;
    int64_t pace_max_wait_ns;
    int fallback;
};

struct guards {
    char path[CONF_PATH_MAX + 32];
    guards_change_fn *on_change;
    void *arg;
    pthread_mutex_t apply_mu; /* one change at a time */
    /* the values in force (under apply_mu; the limiters hold atomic copies) */
    double merchant_rps, global_rps;
    int64_t merchant_burst, global_burst;
    bool adaptive;
    int64_t max_inflight;
    /* limiters */
    struct rate_limit global_limit, merchant_limit;
    struct token_bucket global;
    _Atomic(struct merchant_bucket *) *merchants;
    _Atomic int64_t merchant_count;
    struct token_bucket overflow;
    atomic_uint_fast64_t merchant_admitted, merchant_rejected;
    struct adaptive_limit inflight;
    int channel_count;
    struct channel_guard *channels;
    /* cluster mode; redis is NULL in embedded mode and nothing below is used */
    redis_limit *redis;
    struct shared_limiter shared_global, shared_merchant;
    pthread_mutex_t share_mu;    /* one recomputation of the shares at a time */
    _Atomic int share_instances; /* the count the shares were computed for */
    atomic_bool fallback;        /* Redis unavailable to the limiters (logged once) */
    pthread_mutex_t notice_mu;   /* guards the three below */
    pthread_cond_t notice_cond;
    uint32_t notice_pending; /* bit i: tell the others that channel i's breaker moved */
    bool notice_stop;
    pthread_t notifier;
};

static int64_t ceil_s(int64_t ns)
{
    int64_t s = (ns + NS_PER_S - 1) / NS_PER_S;
    return s < 1 ? 1 : s;
}

static void report_transition(void *arg, const char *name, enum breaker_state from,
                              enum breaker_state to, const char *why)
{
    guards *g = arg;
    const char *level_msg = to == BREAKER_CLOSED ? "breaker_closed" : "breaker_opened";
    if (to == BREAKER_HALF_OPEN)
        level_msg = "breaker_half_open";
    if (to == BREAKER_OPEN)
        log_warn(level_msg, "channel", name, "from", breaker_state_name(from), "to",
                 breaker_state_name(to), "reason", why, NULL);
    else
        log_info(level_msg, "channel", name, "from", breaker_state_name(from), "to",
                 breaker_state_name(to), "reason", why, NULL);
    for (int i = 0; i < g->channel_count; i++) {
        if (strcmp(g->channels[i].name, name) != 0)
            continue;
        if (g->on_change)
            g->on_change(g->arg, i);
        /* This runs under the breaker's mutex: the notifier thread sends
         * the message, so a slow Redis never holds a breaker. */
        if (g->redis) {
            pthread_mutex_lock(&g->notice_mu);
            g->notice_pending |= 1u << i;
            pthread_cond_signal(&g->notice_cond);
            pthread_mutex_unlock(&g->notice_mu);
        }
    }
}

/* ---- shares of the limits (cluster mode) ---- */

/* share = whole over n instances: n times the interval, the burst divided
 * by n and rounded up (a share of at least one token). The interval is
 * capped so that interval * burst, the bucket's depth in time, cannot
 * overflow. */
static void share_set(struct rate_limit *share, const struct rate_limit *whole, int n)
{
    int64_t interval = atomic_load(&whole->interval_ns);
    int64_t burst = (atomic_load(&whole->burst) + n - 1) / n;
    int64_t cap = INT64_MAX / 2 / burst;
    atomic_store(&share->burst, burst);
    atomic_store(&share->interval_ns, interval > cap / n ? cap : interval * n);
}

/* Recomputes both shares for n instances from the limits in force. */
static void compute_shares(guards *g, int n)
{
    PAYD_ASSERT(n >= 1);
    pthread_mutex_lock(&g->share_mu);
    share_set(&g->shared_global.share, &g->global_limit, n);
    share_set(&g->shared_merchant.share, &g->merchant_limit, n);
    atomic_store(&g->share_instances, n);
    pthread_mutex_unlock(&g->share_mu);
}

/* Puts the values in force into the limiters. Under apply_mu. */
static void install(guards *g)
{
    rate_limit_set(&g->global_limit, g->global_rps, g->global_burst);
    rate_limit_set(&g->merchant_limit, g->merchant_rps, g->merchant_burst);
    adaptive_configure(&g->inflight, g->adaptive, g->max_inflight);
    if (g->redis)
        compute_shares(g, redis_limit_instances(g->redis));
}

/* Records whether Redis answered a limiter's take. The flags are read
 * before they are written, so that the hot path writes only when they
 * change; the log says when an outage starts and when it ends, once. */
static void note_redis(guards *g, struct shared_limiter *sl, bool answered)
{
    if (atomic_load_explicit(&sl->local, memory_order_relaxed) == answered)
        atomic_store(&sl->local, !answered);
    if (atomic_load_explicit(&g->fallback, memory_order_relaxed) != answered ||
        atomic_exchange(&g->fallback, !answered) != answered)
        return;
    if (answered) {
        log_info("limits_shared_again", "note",
                 "Redis answers again: the limits are shared by the instances", NULL);
        return;
    }
    char n[16];
    snprintf(n, sizeof(n), "%d", redis_limit_instances(g->redis));
    log_warn("limits_local_fallback", "instances", n, "note",
             "Redis is unavailable: each limit is enforced here at this instance's share"
             " (the limit divided by the instances)",
             NULL);
}

/* Asks Redis for a token of the whole limit l under key: 1 admitted, 0
 * rejected (*wait_ns set), -1 Redis unavailable: then the caller takes from
 * its local bucket at share_of(). An unlimited limiter asks nobody. */
static int take_redis(guards *g, struct shared_limiter *sl, const char *key,
                      const struct rate_limit *l, int64_t *wait_ns)
{
    int64_t interval = atomic_load_explicit(&l->interval_ns, memory_order_relaxed);
    if (interval == 0)
        return 1;
    int64_t burst = atomic_load_explicit(&l->burst, memory_order_relaxed);
    int rc = redis_limit_take(g->redis, key, interval, burst, wait_ns);
    note_redis(g, sl, rc >= 0);
    return rc;
}

/* Recomputes the shares when the instance count moved since they were. */
static void refresh_shares(guards *g)
{
    int n = redis_limit_instances(g->redis);
    if (n != atomic_load_explicit(&g->share_instances, memory_order_relaxed))
        compute_shares(g, n);
}

/* The limiter's share, up to date; counts the take as a fallback. */
static const struct rate_limit *share_of(guards *g, struct shared_limiter *sl)
{
    refresh_shares(g);
    atomic_fetch_add_explicit(&sl->fallbacks, 1, memory_order_relaxed);
    return &sl->share;
}

/* ---- breaker notices to the other instances (cluster mode) ---- */

/* Publishes the pending channels; returns those Redis did not take. */
static uint32_t send_notices(guards *g, uint32_t pending)
{
    uint32_t failed = 0;
    for (int i = 0; i < g->channel_count; i++)
        if ((pending & 1u << i) &&
            redis_limit_publish(g->redis, CATALOGUE_CHANNEL, g->channels[i].name) < 0)
            failed |= 1u << i;
    return failed;
}

/* Sends what report_transition marked. Marks coalesce (a mask, one bit a
 * channel), so nothing grows however often breakers flap; what Redis did
 * not take is sent again after NOTICE_RETRY_MS. */
static void *notifier_main(void *arg)
{
    guards *g = arg;
    pthread_mutex_lock(&g->notice_mu);
    while (!g->notice_stop) {
        if (!g->notice_pending) {
            pthread_cond_wait(&g->notice_cond, &g->notice_mu);
            continue;
        }
        uint32_t pending = g->notice_pending;
        g->notice_pending = 0;
        pthread_mutex_unlock(&g->notice_mu);
        uint32_t failed = send_notices(g, pending);
        pthread_mutex_lock(&g->notice_mu);
        if (!failed)
            continue;
        g->notice_pending |= failed;
        struct timespec until;
        clock_deadline(NOTICE_RETRY_MS, &until);
        while (!g->notice_stop &&
               pthread_cond_timedwait(&g->notice_cond, &g->notice_mu, &until) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&g->notice_mu);
    return NULL;
}

/* Another instance's breaker moved (msg: the channel's name), or (msg
 * NULL) messages may have been lost. Runs on the subscription's thread. */
static void on_catalogue_message(void *arg, const char *msg)
{
    guards *g = arg;
    int ch = -1;
    for (int i = 0; msg && i < g->channel_count; i++)
        if (strcmp(g->channels[i].name, msg) == 0)
            ch = i;
    if (g->on_change)
        g->on_change(g->arg, ch);
}

/* ---- the persisted overrides ---- */

static json_t *settings_json(guards *g)
{
    json_t *chans = json_object();
    for (int i = 0; i < g->channel_count; i++)
        json_object_set_new(chans, g->channels[i].name,
                            json_pack("{s:f}", "rate", leaky_bucket_rate(&g->channels[i].pacer)));
    return json_pack("{s:{s:f, s:I, s:f, s:I, s:b, s:I}, s:o}", "limits", "merchant_rps",
                     g->merchant_rps, "merchant_burst", (json_int_t)g->merchant_burst,
                     "global_rps", g->global_rps, "global_burst", (json_int_t)g->global_burst,
                     "adaptive", g->adaptive, "max_inflight", (json_int_t)g->max_inflight,
                     "channels", chans);
}

/* Writes the settings to DIR/guards.json: a temporary file, fsync, rename,
 * fsync of the directory, so the file is the old or the new one whole. */
static int save(guards *g)
{
    char tmp[sizeof(g->path) + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", g->path);
    json_t *j = settings_json(g);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = -1;
    if (fd >= 0) {
        size_t len = strlen(text);
        if (write(fd, text, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0)
            rc = 0;
        close(fd);
    }
    free(text);
    if (rc == 0 && rename(tmp, g->path) != 0)
        rc = -1;
    if (rc == 0) {
        char dir[sizeof(g->path)];
        snprintf(dir, sizeof(dir), "%s", g->path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = '\0';
        int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    if (rc != 0)
        log_error("guards_save_failed", "path", g->path, "error", strerror(errno), NULL);
    return rc;
}

/* A change, checked whole before any of it is applied. */
struct change {
    bool has[6];
    double merchant_rps, global_rps;
    int64_t merchant_burst, global_burst, max_inflight;
    bool adaptive;
    bool has_rate[CONF_CHANNELS_MAX];
    double rate[CONF_CHANNELS_MAX];
};

static int number(const json_t *v, double lo, double hi, double *out)
{
    if (!json_is_number(v))
        return -1;
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi))
        return -1;
    *out = d;
    return 0;
}

static int parse_change(guards *g, const json_t *change, struct change *c, char *err,
                        size_t err_size)
{
    memset(c, 0, sizeof(*c));
    if (!json_is_object(change)) {
        snprintf(err, err_size, "the body must be a JSON object");
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)change, key, v)
    {
        if (strcmp(key, "limits") != 0 && strcmp(key, "channels") != 0) {
            snprintf(err, err_size, "unknown key %s (expected limits, channels)", key);
            return -1;
        }
    }
    const json_t *limits = json_object_get(change, "limits");
    if (limits && !json_is_object(limits)) {
        snprintf(err, err_size, "limits must be an object");
        return -1;
    }
    json_object_foreach((json_t *)limits, key, v)
    {
        double d;
        int bad = 0;
        if (strcmp(key, "merchant_rps") == 0) {
            bad = number(v, 0, 1e7, &c->merchant_rps);
            c->has[0] = true;
        } else if (strcmp(key, "merchant_burst") == 0) {
            bad = !json_is_integer(v) || number(v, 0, 1e7, &d);
            c->merchant_burst = (int64_t)json_integer_value(v);
            c->has[1] = true;
        } else if (strcmp(key, "global_rps") == 0) {
            bad = number(v, 0, 1e7, &c->global_rps);
            c->has[2] = true;
        } else if (strcmp(key, "global_burst") == 0) {
            bad = !json_is_integer(v) || number(v, 0, 1e7, &d);
            c->global_burst = (int64_t)json_integer_value(v);
            c->has[3] = true;
        } else if (strcmp(key, "adaptive") == 0) {
            bad = !json_is_boolean(v);
            c->adaptive = json_is_true(v);
            c->has[4] = true;
        } else if (strcmp(key, "max_inflight") == 0) {
            bad = !json_is_integer(v) || number(v, 1, 1e6, &d);
            c->max_inflight = (int64_t)json_integer_value(v);
            c->has[5] = true;
        } else {
            snprintf(err, err_size, "limits.%s: unknown key", key);
            return -1;
        }
        if (bad) {
            snprintf(err, err_size, "limits.%s: bad value", key);
            return -1;
        }
    }
    const json_t *chans = json_object_get(change, "channels");
    if (chans && !json_is_object(chans)) {
        snprintf(err, err_size, "channels must be an object");
        return -1;
    }
    json_object_foreach((json_t *)chans, key, v)
    {
        int ch = -1;
        for (int i = 0; i < g->channel_count; i++)
            if (strcmp(g->channels[i].name, key) == 0)
                ch = i;
        if (ch < 0) {
            snprintf(err, err_size, "channels.%s: no such channel", key);
            return -1;
        }
        const char *k2;
        json_t *v2;
        if (!json_is_object(v)) {
            snprintf(err, err_size, "channels.%s must be an object", key);
            return -1;
        }
        json_object_foreach(v, k2, v2)
        {
            if (strcmp(k2, "rate") != 0) {
                snprintf(err, err_size, "channels.%s.%s: unknown key", key, k2);
                return -1;
            }
            if (number(v2, 0, 1e6, &c->rate[ch]) != 0) {
                snprintf(err, err_size, "channels.%s.rate: bad value", key);
                return -1;
            }
            c->has_rate[ch] = true;
        }
    }
    return 0;
}

static void apply_change(guards *g, const struct change *c)
{
    if (c->has[0])
        g->merchant_rps = c->merchant_rps;
    if (c->has[1])
        g->merchant_burst = c->merchant_burst;
    if (c->has[2])
        g->global_rps = c->global_rps;
    if (c->has[3])
        g->global_burst = c->global_burst;
    if (c->has[4])
        g->adaptive = c->adaptive;
    if (c->has[5])
        g->max_inflight = c->max_inflight;
    for (int i = 0; i < g->channel_count; i++)
        if (c->has_rate[i])
            leaky_bucket_set(&g->channels[i].pacer, c->rate[i]);
    install(g);
}

int guards_apply(guards *g, const json_t *change, char *err, size_t err_size)
{
    struct change c;
    pthread_mutex_lock(&g->apply_mu);
    int rc = parse_change(g, change, &c, err, err_size);
    if (rc == 0) {
        apply_change(g, &c);
        char *text = json_dumps(change, JSON_COMPACT | JSON_SORT_KEYS);
        log_info("guards_changed", "change", text, NULL);
        free(text);
        if (save(g) != 0) {
            snprintf(err, err_size, "the change is in force but %s could not be written",
                     g->path);
            rc = -2;
        }
    }
    pthread_mutex_unlock(&g->apply_mu);
    return rc;
}

/* Applies DIR/guards.json when it exists. */
static int load(guards *g, char *err, size_t err_size)
{
    if (access(g->path, F_OK) != 0)
        return 0;
    json_error_t jerr;
    json_t *j = json_load_file(g->path, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        snprintf(err, err_size, "%s: %s (line %d); fix or delete it", g->path, jerr.text,
                 jerr.line);
        return -1;
    }
    struct change c;
    char why[256];
    int rc = parse_change(g, j, &c, why, sizeof(why));
    json_decref(j);
    if (rc != 0) {
        snprintf(err, err_size, "%s: %s; fix or delete it", g->path, why);
        return -1;
    }
    apply_change(g, &c);
    log_info("guards_loaded", "path", g->path, "note",
             "limits changed at run time override the configuration", NULL);
    return 0;
}

/* A name for this process among the instances: host, pid and a random
 * part, since pids repeat across hosts and containers. */
static void instance_id(char out[INSTANCE_ID_MAX])
{
    char host[65] = "";
    if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
        snprintf(host, sizeof(host), "host");
    uint32_t nonce;
    rand_bytes(&nonce, sizeof(nonce));
    snprintf(out, INSTANCE_ID_MAX, "%s:%d:%08x", host, (int)getpid(), nonce);
}

/* Cluster mode: connects to Redis, computes the shares, starts the breaker
 * notices and subscribes to the others'. Only api instances count among
 * the instances that split a limit: the workers never take from it. */
static int share_start(guards *g, const struct conf *conf, char *err, size_t err_size)
{
    char id[INSTANCE_ID_MAX];
    instance_id(id);
    g->redis = redis_limit_new(conf->lock_url, (conf->roles & ROLE_API) ? id : NULL, err,
                               err_size);
    if (!g->redis)
        return -1;
    g->shared_global.name = "global";
    g->shared_merchant.name = "merchant";
    pthread_mutex_init(&g->share_mu, NULL);
    pthread_mutex_init(&g->notice_mu, NULL);
    pthread_cond_init(&g->notice_cond, NULL);
    pthread_mutex_lock(&g->apply_mu);
    compute_shares(g, redis_limit_instances(g->redis));
    pthread_mutex_unlock(&g->apply_mu);
    int rc = pthread_create(&g->notifier, NULL, notifier_main, g);
    PAYD_ASSERT(rc == 0);
    /* -1 (Redis went away since) is fine: the subscription keeps trying. */
    rc = redis_limit_subscribe(g->redis, CATALOGUE_CHANNEL, on_catalogue_message, g);
    PAYD_ASSERT(rc != -2);
    return 0;
}

static void share_stop(guards *g)
{
    if (!g->redis)
        return;
    pthread_mutex_lock(&g->notice_mu);
    g->notice_stop = true;
    pthread_cond_signal(&g->notice_cond);
    pthread_mutex_unlock(&g->notice_mu);
    pthread_join(g->notifier, NULL);
    redis_limit_free(g->redis); /* joins the subscriptions: no callback after this */
    g->redis = NULL;
    pthread_cond_destroy(&g->notice_cond);
    pthread_mutex_destroy(&g->notice_mu);
    pthread_mutex_destroy(&g->share_mu);
}

redis_limit *guards_shared(guards *g)
{
    return g->redis;
}

guards *guards_new(const struct conf *conf, guards_change_fn *on_change, void *arg, char *err,
                   size_t err_size)
{
    guards *g = xcalloc(1, sizeof(*g));
    snprintf(g->path, sizeof(g->path), "%s/%s", conf->data_dir, GUARDS_FILE);
    g->on_change = on_change;
    g->arg = arg;
    pthread_mutex_init(&g->apply_mu, NULL);
    g->merchant_rps = conf->merchant_rps;
    g->merchant_burst = conf->merchant_burst;
    g->global_rps = conf->global_rps;
    g->global_burst = conf->global_burst;
    g->adaptive = conf->adaptive != 0;
    g->max_inflight = conf->max_inflight;
    token_bucket_init(&g->global);
    token_bucket_init(&g->overflow);
    g->merchants = xcalloc(MERCHANT_SLOTS, sizeof(*g->merchants));
    adaptive_init(&g->inflight, g->adaptive, g->max_inflight, clock_mono_ns());
    adaptive_set_tolerance(&g->inflight, conf->adaptive_tolerance);
    g->channel_count = conf->channel_count;
    g->channels = xcalloc((size_t)conf->channel_count, sizeof(*g->channels));
    struct breaker_config bc = {
        .window_s = conf->breaker_window_s,
        .min_calls = conf->breaker_min_calls,
        .failure_ratio = conf->breaker_failure_ratio,
        .slow_call_ns = conf->breaker_slow_call_ms * 1000000,
        .slow_ratio = conf->breaker_slow_ratio,
        .open_ns = conf->breaker_open_s * NS_PER_S,
        .half_open_calls = conf->breaker_half_open_calls,
    };
    for (int i = 0; i < conf->channel_count; i++) {
        const struct conf_channel *cc = &conf->channels[i];
        struct channel_guard *cg = &g->channels[i];
        snprintf(cg->name, sizeof(cg->name), "%s", cc->name);
        breaker_init(&cg->breaker, cc->name, &bc, report_transition, g);
        leaky_bucket_init(&cg->pacer, cc->rate);
        cg->pace_max_wait_ns = cc->pace_max_wait_ms * 1000000;
        cg->fallback = -1;
        for (int j = 0; j < conf->channel_count; j++)
            if (cc->fallback[0] && strcmp(conf->channels[j].name, cc->fallback) == 0)
                cg->fallback = j;
    }
    pthread_mutex_lock(&g->apply_mu);
    install(g);
    int rc = load(g, err, err_size);
    pthread_mutex_unlock(&g->apply_mu);
    if (rc == 0 && conf->lock_backend == LOCK_BACKEND_REDIS)
        rc = share_start(g, conf, err, err_size);
    if (rc != 0) {
        guards_free(g);
        return NULL;
    }
    return g;
}

void guards_free(guards *g)
{
    if (!g)
        return;
    share_stop(g);
    for (int i = 0; i < MERCHANT_SLOTS; i++)
        free(atomic_load(&g->merchants[i]));
    free(g->merchants);
    for (int i = 0; i < g->channel_count; i++)
        breaker_destroy(&g->channels[i].breaker);
    free(g->channels);
    adaptive_destroy(&g->inflight);
    pthread_mutex_destroy(&g->apply_mu);
    free(g);
}

bool guards_take_global(guards *g, int64_t now_ns, int64_t *retry_after_s)
{
    int64_t wait;
    const struct rate_limit *limit = &g->global_limit;
    if (g->redis) {
        int rc = take_redis(g, &g->shared_global, "global", limit, &wait);
        if (rc == 1) {
            atomic_fetch_add_explicit(&g->global.admitted, 1, memory_order_relaxed);
            return true;
        }
        if (rc == 0) {
            atomic_fetch_add_explicit(&g->global.rejected, 1, memory_order_relaxed);
            *retry_after_s = ceil_s(wait);
            return false;
        }
        limit = share_of(g, &g->shared_global);
    }
    if (token_bucket_take(&g->global, limit, now_ns, &wait))
        return true;
    *retry_after_s = ceil_s(wait);
    return false;
}

/* The merchant's bucket, added on first sight. */
static struct token_bucket *merchant_bucket(guards *g, const char *id)
{
    uint64_t h = hash_str(id);
    for (uint64_t i = 0; i < MERCHANT_SLOTS; i++) {
        _Atomic(struct merchant_bucket *) *slot = &g->merchants[(h + i) & (MERCHANT_SLOTS - 1)];
        struct merchant_bucket *mb = atomic_load_explicit(slot, memory_order_acquire);
        if (mb) {
            if (strcmp(mb->id, id) == 0)
                return &mb->bucket;
            continue;
        }
        if (atomic_load_explicit(&g->merchant_count, memory_order_relaxed) >= MERCHANTS_MAX)
            break;
        struct merchant_bucket *fresh = xcalloc(1, sizeof(*fresh));
        snprintf(fresh->id, sizeof(fresh->id), "%s", id);
        token_bucket_init(&fresh->bucket);
        struct merchant_bucket *expected = NULL;
        if (atomic_compare_exchange_strong_explicit(slot, &expected, fresh, memory_order_acq_rel,
                                                    memory_order_acquire)) {
            atomic_fetch_add(&g->merchant_count, 1);
            return &fresh->bucket;
        }
        free(fresh);
        if (strcmp(expected->id, id) == 0)
            return &expected->bucket;
    }
    static atomic_bool warned;
    if (!atomic_exchange(&warned, true))
        log_warn("merchant_limits_full", "note",
                 "more merchants than the limiter's table holds; the rest share one bucket",
                 NULL);
    return &g->overflow;
}

bool guards_take_merchant(guards *g, const char *merchant_id, int64_t now_ns,
                          int64_t *retry_after_s)
{
    if (atomic_load_explicit(&g->merchant_limit.interval_ns, memory_order_relaxed) == 0) {
        atomic_fetch_add_explicit(&g->merchant_admitted, 1, memory_order_relaxed);
        return true;
    }
    int64_t wait;
    int rc = -1; /* 1 admitted, 0 rejected, -1 not decided yet */
    const struct rate_limit *limit = &g->merchant_limit;
    if (g->redis) {
        char key[16 + ID_MAX];
        snprintf(key, sizeof(key), "merchant:%s", merchant_id);
        rc = take_redis(g, &g->shared_merchant, key, limit, &wait);
        if (rc < 0)
            limit = share_of(g, &g->shared_merchant);
    }
    if (rc < 0)
        rc = token_bucket_take(merchant_bucket(g, merchant_id), limit, now_ns, &wait);
    if (rc == 1) {
        atomic_fetch_add_explicit(&g->merchant_admitted, 1, memory_order_relaxed);
        return true;
    }
    atomic_fetch_add_explicit(&g->merchant_rejected, 1, memory_order_relaxed);
    *retry_after_s = ceil_s(wait);
    return false;
}

struct adaptive_limit *guards_inflight(guards *g)
{
    return &g->inflight;
}

struct breaker *guards_breaker(guards *g, int channel)
{
    return &g->channels[channel].breaker;
}

struct leaky_bucket *guards_pacer(guards *g, int channel)
{
    return &g->channels[channel].pacer;
}

int64_t guards_pace_max_wait_ns(const guards *g, int channel)
{
    return g->channels[channel].pace_max_wait_ns;
}

int guards_fallback(const guards *g, int channel)
{
    return g->channels[channel].fallback;
}

const char *guards_channel_status(guards *g, int channel, int64_t now_ns)
{
    switch (breaker_state_at(&g->channels[channel].breaker, now_ns)) {
    case BREAKER_OPEN:
        return "down";
    case BREAKER_HALF_OPEN:
        return "degraded";
    default:
        return "up";
    }
}

int64_t guards_open_remaining_s(guards *g, int channel, int64_t now_ns)
{
    struct breaker *b = &g->channels[channel].breaker;
    return ceil_s(atomic_load(&b->opened_ns) + b->cfg.open_ns - now_ns);
}

/* Whether a rate limiter is shared and by how many instances; in cluster
 * mode also its local share and how many takes were decided at it. */
static void view_sharing(guards *g, struct shared_limiter *sl, json_t *out)
{
    if (!g->redis) {
        json_object_set_new(out, "shared", json_false());
        json_object_set_new(out, "instances", json_integer(1));
        return;
    }
    json_object_set_new(out, "shared", json_boolean(!atomic_load(&sl->local)));
    json_object_set_new(out, "instances", json_integer(redis_limit_instances(g->redis)));
    json_object_set_new(out, "local_share",
                        json_pack("{s:f, s:I}", "rate", rate_limit_rate(&sl->share), "burst",
                                  (json_int_t)atomic_load(&sl->share.burst)));
    json_object_set_new(out, "fallbacks", json_integer((json_int_t)atomic_load(&sl->fallbacks)));
}

/* The global bucket's tokens: in cluster mode they are in Redis (null)
 * unless the local share is in use. */
static double global_tokens(guards *g, int64_t now_ns)
{
    if (!g->redis)
        return token_bucket_tokens(&g->global, &g->global_limit, now_ns);
    if (atomic_load(&g->shared_global.local))
        return token_bucket_tokens(&g->global, &g->shared_global.share, now_ns);
    return INFINITY;
}

json_t *guards_view(guards *g, int64_t now_ns)
{
    pthread_mutex_lock(&g->apply_mu);
    if (g->redis)
        refresh_shares(g);
    double tokens = global_tokens(g, now_ns);
    json_t *global = json_pack(
        "{s:f, s:I, s:o, s:I, s:I}", "rate", g->global_rps, "burst",
        (json_int_t)atomic_load(&g->global_limit.burst), "tokens",
        isinf(tokens) ? json_null() : json_real(floor(tokens * 1000) / 1000), "admitted",
        (json_int_t)atomic_load(&g->global.admitted), "rejected",
        (json_int_t)atomic_load(&g->global.rejected));
    json_t *merchant = json_pack(
        "{s:f, s:I, s:I, s:I, s:I}", "rate", g->merchant_rps, "burst",
        (json_int_t)atomic_load(&g->merchant_limit.burst), "merchants",
        (json_int_t)atomic_load(&g->merchant_count), "admitted",
        (json_int_t)atomic_load(&g->merchant_admitted), "rejected",
        (json_int_t)atomic_load(&g->merchant_rejected));
    json_t *inflight = json_pack(
        "{s:b, s:I, s:I, s:I, s:f, s:f, s:I, s:I}", "adaptive", g->adaptive, "max_inflight",
        (json_int_t)g->max_inflight, "limit", (json_int_t)atomic_load(&g->inflight.limit),
        "in_flight", (json_int_t)atomic_load(&g->inflight.inflight), "floor_ms",
        (double)atomic_load(&g->inflight.floor_ns) / 1e6, "last_mean_ms",
        (double)atomic_load(&g->inflight.last_mean_ns) / 1e6, "admitted",
        (json_int_t)atomic_load(&g->inflight.admitted), "rejected",
        (json_int_t)atomic_load(&g->inflight.rejected));
    view_sharing(g, &g->shared_global, global);
    view_sharing(g, &g->shared_merchant, merchant);
    json_t *limits = json_pack("{s:o, s:o, s:o}", "global", global, "merchant", merchant,
                               "inflight", inflight);
    pthread_mutex_unlock(&g->apply_mu);
    json_t *chans = json_array();
    for (int i = 0; i < g->channel_count; i++) {
        struct channel_guard *cg = &g->channels[i];
        struct breaker *b = &cg->breaker;
        enum breaker_state st = breaker_state_at(b, now_ns);
        int64_t calls, failures, slow;
        breaker_window(b, now_ns, &calls, &failures, &slow);
        json_t *bj = json_pack(
            "{s:s, s:{s:I, s:I, s:I}, s:I, s:I, s:I, s:{s:I, s:I, s:f, s:I, s:f, s:I, s:I}}",
            "state", breaker_state_name(st), "window", "calls", (json_int_t)calls, "failures",
            (json_int_t)failures, "slow", (json_int_t)slow, "allowed",
            (json_int_t)atomic_load(&b->allowed), "denied", (json_int_t)atomic_load(&b->denied),
            "transitions", (json_int_t)atomic_load(&b->transitions), "config", "window_s",
            (json_int_t)b->cfg.window_s, "min_calls", (json_int_t)b->cfg.min_calls,
            "failure_ratio", b->cfg.failure_ratio, "slow_call_ms",
            (json_int_t)(b->cfg.slow_call_ns / 1000000), "slow_ratio", b->cfg.slow_ratio,
            "open_s", (json_int_t)(b->cfg.open_ns / NS_PER_S), "half_open_calls",
            (json_int_t)b->cfg.half_open_calls);
        if (st == BREAKER_OPEN)
            json_object_set_new(bj, "open_remaining_s",
                                json_integer(guards_open_remaining_s(g, i, now_ns)));
        if (st == BREAKER_HALF_OPEN) {
            pthread_mutex_lock(&b->mu);
            json_object_set_new(bj, "probes_issued", json_integer(b->probes_issued));
            json_object_set_new(bj, "probes_succeeded", json_integer(b->probes_ok));
            pthread_mutex_unlock(&b->mu);
        }
        json_array_append_new(
            chans, json_pack("{s:s, s:s, s:o, s:{s:f, s:I, s:I, s:I, s:f}, s:o}", "id", cg->name,
                             "status", guards_channel_status(g, i, now_ns), "breaker", bj,
                             "pacer", "rate", leaky_bucket_rate(&cg->pacer), "max_wait_ms",
                             (json_int_t)(cg->pace_max_wait_ns / 1000000), "paced",
                             (json_int_t)atomic_load(&cg->pacer.paced), "deferred",
                             (json_int_t)atomic_load(&cg->pacer.deferred), "waited_s",
                             (double)atomic_load(&cg->pacer.waited_ns) / 1e9, "fallback",
                             cg->fallback >= 0 ? json_string(g->channels[cg->fallback].name)
                                               : json_null()));
    }
    json_object_set_new(limits, "channels", chans);
    return limits;
}

void guards_export(guards *g, metrics *m, int64_t now_ns)
{
    metrics_set_counter(m, M_LIMITER_ADMITTED, LIMITER_GLOBAL, 0, atomic_load(&g->global.admitted));
    metrics_set_counter(m, M_LIMITER_ADMITTED, LIMITER_MERCHANT, 0,
                        atomic_load(&g->merchant_admitted));
    metrics_set_counter(m, M_LIMITER_ADMITTED, LIMITER_INFLIGHT, 0,
                        atomic_load(&g->inflight.admitted));
    metrics_set_counter(m, M_LIMITER_REJECTED, LIMITER_GLOBAL, 0, atomic_load(&g->global.rejected));
    metrics_set_counter(m, M_LIMITER_REJECTED, LIMITER_MERCHANT, 0,
                        atomic_load(&g->merchant_rejected));
    metrics_set_counter(m, M_LIMITER_REJECTED, LIMITER_INFLIGHT, 0,
                        atomic_load(&g->inflight.rejected));
    if (g->redis) {
        /* Cluster mode only: in embedded mode there is no sharing to
         * report, and a constant "not shared" would read as a fallback. */
        struct shared_limiter *sls[] = {&g->shared_global, &g->shared_merchant};
        for (int i = 0; i < (int)ARRAY_LEN(sls); i++) {
            metrics_set(m, M_LIMITER_SHARED, i, 0, !atomic_load(&sls[i]->local));
            metrics_set_counter(m, M_LIMITER_FALLBACK, i, 0, atomic_load(&sls[i]->fallbacks));
        }
        metrics_set(m, M_LIMITER_INSTANCES, 0, 0, redis_limit_instances(g->redis));
    }
    metrics_set(m, M_INFLIGHT, 0, 0, (double)atomic_load(&g->inflight.inflight));
    metrics_set(m, M_INFLIGHT_LIMIT, 0, 0, (double)atomic_load(&g->inflight.limit));
    for (int i = 0; i < g->channel_count; i++) {
        struct channel_guard *cg = &g->channels[i];
        metrics_set(m, M_BREAKER_STATE, i, 0, (double)breaker_state_at(&cg->breaker, now_ns));
        metrics_set_counter(m, M_BREAKER_TRANSITIONS, i, 0, atomic_load(&cg->breaker.transitions));
        metrics_set_counter(m, M_CHANNEL_DEFERRED, i, DEFER_PACER, atomic_load(&cg->pacer.deferred));
        metrics_set_counter(m, M_CHANNEL_DEFERRED, i, DEFER_BREAKER, atomic_load(&cg->breaker.denied));
    }
}
