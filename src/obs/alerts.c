/*
 * alerts.c - rules, their instances' state machine, and the push to
 * Alertmanager; see alerts.h.
 */
#include "obs/alerts.h"

#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "guard/breaker.h"
#include "obs/log.h"
#include "util/util.h"

#define PUSH_QUEUE_MAX 64      /* bodies waiting for the pusher; older ones are dropped */
#define PUSH_TIMEOUT_MS 5000   /* one POST to Alertmanager */
#define PUSH_CONNECT_TIMEOUT_MS 2000
#define ENDS_AT_RESENDS 4      /* a firing alert's endsAt: this many resends ahead */

struct instance {
    enum alert_state state;
    int64_t pending_since_ms, firing_since_ms, last_sent_ms;
    char summary[320];
};

struct rule {
    const struct conf_alert *cfg;
    int instance_count; /* channel_count for breaker_open, else 1 */
    struct instance *instances;
};

struct alerts {
    const struct conf *conf;
    const char *const *channel_names;
    int channel_count;
    struct rule rules[CONF_ALERTS_MAX];
    int rule_count;
    pthread_mutex_t mu; /* the instances (the dashboard reads them) */
    /* the pusher */
    char url[CONF_PATH_MAX + 32];
    pthread_t pusher;
    bool pusher_started, stopping;
    pthread_mutex_t push_mu;
    pthread_cond_t push_cv;
    char *queue[PUSH_QUEUE_MAX];
    int queued;
};

enum alert_state alert_next_state(enum alert_state from, bool cond, int64_t pending_since_ms,
                                  int64_t now_ms, int64_t for_ms)
{
    switch (from) {
    case ALERT_INACTIVE:
        if (!cond)
            return ALERT_INACTIVE;
        return for_ms <= 0 ? ALERT_FIRING : ALERT_PENDING;
    case ALERT_PENDING:
        if (!cond)
            return ALERT_INACTIVE;
        return now_ms - pending_since_ms >= for_ms ? ALERT_FIRING : ALERT_PENDING;
    case ALERT_FIRING:
        return cond ? ALERT_FIRING : ALERT_INACTIVE;
    default:
        PAYD_ASSERT(!"unknown alert state");
        return ALERT_INACTIVE;
    }
}

int64_t alerts_longest_window_s(const struct conf *conf)
{
    int64_t longest = 0;
    for (int i = 0; i < conf->alert_count; i++) {
        const struct conf_alert *c = &conf->alerts[i];
        if (!c->enabled)
            continue;
        if ((c->kind == ALERT_ERROR_RATIO || c->kind == ALERT_LATENCY_P99 ||
             c->kind == ALERT_BURN_RATE) &&
            c->window_s > longest)
            longest = c->window_s;
    }
    return longest;
}

/* ---- judging ---- */

/* A ratio over a handful of requests says nothing: one 503 among the first
 * seven would page. The rule judges only windows with min_requests. */
static bool enough_requests(const struct conf_alert *c, const struct sample *older,
                            const struct sample *newest)
{
    return newest->api_requests - older->api_requests >= (uint64_t)c->min_requests;
}

/* Whether instance i of rule r holds at the newest sample; writes what it
 * saw into summary. */
static bool judge(alerts *a, const struct rule *r, int i, series *s, char *summary, size_t size)
{
    const struct conf_alert *c = r->cfg;
    struct sample newest, older;
    if (!series_window(s, c->window_s * 1000, &newest, &older))
        return false;
    switch ((enum alert_kind)c->kind) {
    case ALERT_ERROR_RATIO: {
        if (!enough_requests(c, &older, &newest))
            return false;
        double ratio = sample_error_ratio(&older, &newest);
        snprintf(summary, size, "5xx share of /v1 requests over %llds is %.2f %% (threshold "
                 "%.2f %%)", (long long)c->window_s, ratio * 100, c->threshold * 100);
        return ratio >= 0 && ratio > c->threshold;
    }
    case ALERT_LATENCY_P99: {
        if (!enough_requests(c, &older, &newest))
            return false;
        double p99 = sample_latency(&older, &newest, 0.99);
        snprintf(summary, size, "p99 latency of /v1 requests over %llds is %.3f s (threshold "
                 "%.3f s)", (long long)c->window_s, p99, c->threshold);
        return p99 >= 0 && p99 > c->threshold;
    }
    case ALERT_BREAKER_OPEN:
        snprintf(summary, size, "The breaker of channel %s is open: its payments wait or go "
                 "to its fallback", a->channel_names[i]);
        return i < newest.channel_count && newest.breaker[i] == BREAKER_OPEN;
    case ALERT_QUEUE_AGE:
        snprintf(summary, size, "The oldest queued payment is %.0f s old (threshold %.0f s)",
                 newest.queue_oldest_age_s, c->threshold);
        return !isnan(newest.queue_oldest_age_s) && newest.queue_oldest_age_s > c->threshold;
    case ALERT_DEAD_LETTERS:
        snprintf(summary, size, "%.0f payment messages were delivered more than [worker] "
                 "max_attempts times and are still not final", newest.dead_letters);
        return !isnan(newest.dead_letters) && newest.dead_letters > c->threshold;
    case ALERT_LEDGER_IMBALANCE:
        snprintf(summary, size, "The ledger does not balance: its entries sum to %.0f minor "
                 "units", newest.ledger_imbalance);
        return !isnan(newest.ledger_imbalance) && newest.ledger_imbalance > c->threshold;
    case ALERT_BURN_RATE: {
        if (!enough_requests(c, &older, &newest))
            return false;
        struct sample short_newest, short_older;
        series_window(s, c->short_window_s * 1000, &short_newest, &short_older);
        double budget = 1 - c->slo;
        double long_ratio = sample_error_ratio(&older, &newest);
        double short_ratio = sample_error_ratio(&short_older, &short_newest);
        double long_burn = long_ratio > 0 ? long_ratio / budget : 0;
        double short_burn = short_ratio > 0 ? short_ratio / budget : 0;
        snprintf(summary, size, "Error budget of the %.4g %% SLO burning %.1fx over %llds and "
                 "%.1fx over %llds (threshold %.1fx)", c->slo * 100, long_burn,
                 (long long)c->window_s, short_burn, (long long)c->short_window_s,
                 c->threshold);
        return long_burn > c->threshold && short_burn > c->threshold;
    }
    default:
        PAYD_ASSERT(!"unknown alert kind");
        return false;
    }
}

/* ---- pushing ---- */

static size_t discard_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    (void)ptr;
    (void)arg;
    return size * nmemb;
}

static void post(alerts *a, CURL *curl, const char *body)
{
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, a->url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)PUSH_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)PUSH_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_body);
    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    /* The URL is not logged: it may hold credentials. */
    if (rc != CURLE_OK) {
        log_warn("alert_push_failed", "error", curl_easy_strerror(rc), NULL);
    } else if (status < 200 || status >= 300) {
        char code[16];
        snprintf(code, sizeof(code), "%ld", status);
        log_warn("alert_push_failed", "status", code, NULL);
    }
}

static void *pusher_main(void *arg)
{
    alerts *a = arg;
    pthread_setname_np(pthread_self(), "payd-alertpush");
    CURL *curl = curl_easy_init();
    PAYD_ASSERT(curl);
    pthread_mutex_lock(&a->push_mu);
    for (;;) {
        while (a->queued == 0 && !a->stopping)
            pthread_cond_wait(&a->push_cv, &a->push_mu);
        if (a->stopping) {
            /* Stopping: a slow or absent Alertmanager must not hold the
             * shutdown; what is left is dropped (a firing alert's endsAt
             * lets Alertmanager resolve it by itself). */
            if (a->queued > 0)
                log_warn("alert_push_dropped", NULL);
            break;
        }
        char *body = a->queue[0];
        memmove(a->queue, a->queue + 1, (size_t)(a->queued - 1) * sizeof(char *));
        a->queued--;
        pthread_mutex_unlock(&a->push_mu);
        post(a, curl, body);
        free(body);
        pthread_mutex_lock(&a->push_mu);
    }
    pthread_mutex_unlock(&a->push_mu);
    curl_easy_cleanup(curl);
    return NULL;
}

static void enqueue(alerts *a, char *body)
{
    pthread_mutex_lock(&a->push_mu);
    if (a->queued == PUSH_QUEUE_MAX) {
        /* Alertmanager is away: the oldest state is the least useful. */
        free(a->queue[0]);
        memmove(a->queue, a->queue + 1, (size_t)(a->queued - 1) * sizeof(char *));
        a->queued--;
        log_warn("alert_push_dropped", NULL);
    }
    a->queue[a->queued++] = body;
    pthread_cond_signal(&a->push_cv);
    pthread_mutex_unlock(&a->push_mu);
}

static json_t *labels_of(alerts *a, const struct rule *r, int i)
{
    json_t *labels = json_pack("{s:s, s:s, s:s, s:s}", "alertname", r->cfg->name, "severity",
                               conf_alert_severity_name((int)r->cfg->severity), "service",
                               "payd", "instance", a->conf->listen);
    if (r->cfg->kind == ALERT_BREAKER_OPEN)
        json_object_set_new(labels, "channel", json_string(a->channel_names[i]));
    return labels;
}

/* One alert as Alertmanager's v2 API takes it. */
static json_t *am_alert(alerts *a, const struct rule *r, int i, bool resolved, int64_t now_ms)
{
    const struct instance *in = &r->instances[i];
    char starts[25], ends[25], url[300];
    clock_format_rfc3339(in->firing_since_ms, starts);
    clock_format_rfc3339(resolved ? now_ms
                                  : now_ms + ENDS_AT_RESENDS * a->conf->alert_resend_s * 1000,
                         ends);
    snprintf(url, sizeof(url), "http://%s/dashboard", a->conf->listen);
    const char *summary = r->cfg->summary[0] ? r->cfg->summary : in->summary;
    return json_pack("{s:o, s:{s:s, s:s}, s:s, s:s, s:s}", "labels", labels_of(a, r, i),
                     "annotations", "summary", summary, "description", in->summary, "startsAt",
                     starts, "endsAt", ends, "generatorURL", url);
}

static void push(alerts *a, json_t *batch)
{
    if (json_array_size(batch) > 0 && a->pusher_started) {
        char *body = json_dumps(batch, JSON_COMPACT);
        PAYD_ASSERT(body);
        enqueue(a, body);
    }
    json_decref(batch);
}

/* ---- the handle ---- */

alerts *alerts_new(const struct conf *conf, const char *const *channel_names, int channel_count,
                   char *err, size_t err_size)
{
    alerts *a = xcalloc(1, sizeof(*a));
    a->conf = conf;
    a->channel_names = channel_names;
    a->channel_count = channel_count;
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->push_mu, NULL);
    pthread_cond_init(&a->push_cv, NULL);
    for (int i = 0; i < conf->alert_count; i++) {
        if (!conf->alerts[i].enabled)
            continue;
        struct rule *r = &a->rules[a->rule_count++];
        r->cfg = &conf->alerts[i];
        r->instance_count = r->cfg->kind == ALERT_BREAKER_OPEN ? channel_count : 1;
        r->instances = xcalloc((size_t)r->instance_count + 1, sizeof(*r->instances));
    }
    if (conf->alertmanager_url[0]) {
        size_t n = strlen(conf->alertmanager_url);
        while (n > 0 && conf->alertmanager_url[n - 1] == '/')
            n--;
        snprintf(a->url, sizeof(a->url), "%.*s/api/v2/alerts", (int)n, conf->alertmanager_url);
        if (pthread_create(&a->pusher, NULL, pusher_main, a) != 0) {
            snprintf(err, err_size, "cannot start the alert pusher thread");
            alerts_free(a);
            return NULL;
        }
        a->pusher_started = true;
    }
    return a;
}

void alerts_free(alerts *a)
{
    if (!a)
        return;
    if (a->pusher_started) {
        pthread_mutex_lock(&a->push_mu);
        a->stopping = true;
        pthread_cond_signal(&a->push_cv);
        pthread_mutex_unlock(&a->push_mu);
        pthread_join(a->pusher, NULL);
    }
    for (int i = 0; i < a->queued; i++)
        free(a->queue[i]);
    for (int i = 0; i < a->rule_count; i++)
        free(a->rules[i].instances);
    pthread_cond_destroy(&a->push_cv);
    pthread_mutex_destroy(&a->push_mu);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

void alerts_evaluate(alerts *a, series *s, int64_t now_ms)
{
    json_t *batch = json_array();
    pthread_mutex_lock(&a->mu);
    for (int ri = 0; ri < a->rule_count; ri++) {
        struct rule *r = &a->rules[ri];
        for (int i = 0; i < r->instance_count; i++) {
            struct instance *in = &r->instances[i];
            char summary[sizeof(in->summary)];
            bool cond = judge(a, r, i, s, summary, sizeof(summary));
            enum alert_state from = in->state;
            enum alert_state to = alert_next_state(from, cond, in->pending_since_ms, now_ms,
                                                   r->cfg->for_s * 1000);
            if (cond)
                snprintf(in->summary, sizeof(in->summary), "%s", summary);
            if (from == ALERT_INACTIVE && to != ALERT_INACTIVE)
                in->pending_since_ms = now_ms;
            in->state = to;
            const char *channel = r->cfg->kind == ALERT_BREAKER_OPEN ? a->channel_names[i]
                                                                       : NULL;
            if (to == ALERT_FIRING && from != ALERT_FIRING) {
                in->firing_since_ms = now_ms;
                in->last_sent_ms = now_ms;
                log_warn("alert_firing", "alert", r->cfg->name, "severity",
                         conf_alert_severity_name((int)r->cfg->severity), "summary",
                         in->summary, channel ? "channel" : NULL, channel, NULL);
                json_array_append_new(batch, am_alert(a, r, i, false, now_ms));
            } else if (to == ALERT_FIRING &&
                       now_ms - in->last_sent_ms >= a->conf->alert_resend_s * 1000) {
                in->last_sent_ms = now_ms;
                json_array_append_new(batch, am_alert(a, r, i, false, now_ms));
            } else if (from == ALERT_FIRING && to != ALERT_FIRING) {
                log_info("alert_resolved", "alert", r->cfg->name, channel ? "channel" : NULL,
                         channel, NULL);
                json_array_append_new(batch, am_alert(a, r, i, true, now_ms));
            }
        }
    }
    pthread_mutex_unlock(&a->mu);
    push(a, batch);
}

int alerts_firing(alerts *a)
{
    int n = 0;
    pthread_mutex_lock(&a->mu);
    for (int ri = 0; ri < a->rule_count; ri++)
        for (int i = 0; i < a->rules[ri].instance_count; i++)
            n += a->rules[ri].instances[i].state == ALERT_FIRING;
    pthread_mutex_unlock(&a->mu);
    return n;
}

json_t *alerts_active_json(alerts *a)
{
    json_t *list = json_array();
    pthread_mutex_lock(&a->mu);
    for (int ri = 0; ri < a->rule_count; ri++) {
        const struct rule *r = &a->rules[ri];
        for (int i = 0; i < r->instance_count; i++) {
            const struct instance *in = &r->instances[i];
            if (in->state == ALERT_INACTIVE)
                continue;
            json_t *labels = json_object();
            if (r->cfg->kind == ALERT_BREAKER_OPEN)
                json_object_set_new(labels, "channel", json_string(a->channel_names[i]));
            bool firing = in->state == ALERT_FIRING;
            json_array_append_new(
                list, json_pack("{s:s, s:s, s:s, s:o, s:I, s:s}", "name", r->cfg->name, "state",
                                firing ? "firing" : "pending", "severity",
                                conf_alert_severity_name((int)r->cfg->severity), "labels",
                                labels, "since_ms",
                                (json_int_t)(firing ? in->firing_since_ms
                                                    : in->pending_since_ms),
                                "summary", r->cfg->summary[0] ? r->cfg->summary : in->summary));
        }
    }
    pthread_mutex_unlock(&a->mu);
    return list;
}
