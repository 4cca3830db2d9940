/*
 * conf.c - the configuration table and its three sources; see conf.h.
 *
 * The INI file is parsed by inih (Debian's libinih); this file only maps a
 * (section, key, value) triple onto the table.
 */
#include "conf.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

enum key_type { KEY_INT, KEY_REAL, KEY_STR, KEY_ENUM };

/* One configuration key. For KEY_INT the value lies in [min, max], for
 * KEY_REAL in [dmin, dmax]; for KEY_ENUM it is one of names[], stored as its
 * index; KEY_STR is copied into a buffer of size max (and may be empty only
 * when its default is). */
struct key {
    const char *section;
    const char *name;
    enum key_type type;
    size_t offset;
    int64_t min, max;
    const char *const *names;
    const char *deflt;
    double dmin, dmax;
};

static const char *const log_formats[] = {"json", "text", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const channel_types[] = {"sandbox", "http", NULL};
static const char *const on_off[] = {"off", "on", NULL};
static const char *const store_backends[] = {"sqlite", "postgres", NULL};
static const char *const lock_backends[] = {"local", "redis", NULL};
static const char *const queue_backends[] = {"outbox", "nats", NULL};
static const char *const alert_kinds[] = {"error_ratio",  "latency_p99",      "breaker_open",
                                          "queue_age",    "dead_letters",     "ledger_imbalance",
                                          "burn_rate",    NULL};
static const char *const alert_severities[] = {"page", "ticket", "info", NULL};
_Static_assert(sizeof(alert_kinds) / sizeof(alert_kinds[0]) == ALERT_KIND_COUNT + 1,
               "one name per alert kind");

#define INT_KEY(sec, nm, field, lo, hi, def)                                              \
    {sec, nm, KEY_INT, offsetof(struct conf, field), lo, hi, NULL, def, 0, 0}
#define STR_KEY(sec, nm, field, def)                                                      \
    {sec, nm, KEY_STR, offsetof(struct conf, field), 0, sizeof(((struct conf *)0)->field),  \
     NULL, def, 0, 0}
#define ENUM_KEY(sec, nm, field, names, def)                                              \
    {sec, nm, KEY_ENUM, offsetof(struct conf, field), 0, 0, names, def, 0, 0}
#define REAL_KEY(sec, nm, field, lo, hi, def)                                             \
    {sec, nm, KEY_REAL, offsetof(struct conf, field), 0, 0, NULL, def, lo, hi}

static const struct key keys[] = {
    STR_KEY("server", "listen", listen, "127.0.0.1:8080"),
    STR_KEY("server", "data_dir", data_dir, "./payd-data"),
    INT_KEY("server", "max_body_bytes", max_body_bytes, 256, 64 << 20, "65536"),
    INT_KEY("server", "http_threads", http_threads, 1, 64, "2"),
    STR_KEY("server", "admin_key", admin_key, ""),
    STR_KEY("server", "roles", roles_text, "api,worker"),
    ENUM_KEY("lock", "backend", lock_backend, lock_backends, "local"),
    STR_KEY("lock", "url", lock_url, ""),
    ENUM_KEY("queue", "backend", queue_backend, queue_backends, "outbox"),
    STR_KEY("queue", "url", queue_url, ""),
    INT_KEY("queue", "max_deliver", queue_max_deliver, 2, 100000, "100"),
    INT_KEY("queue", "replicas", queue_replicas, 1, 5, "1"),
    INT_KEY("queue", "sweep_after_ms", queue_sweep_after_ms, 1000, 86400000, "120000"),
    REAL_KEY("limits", "merchant_rps", merchant_rps, 0, 1e7, "0"),
    INT_KEY("limits", "merchant_burst", merchant_burst, 0, 10000000, "0"),
    REAL_KEY("limits", "global_rps", global_rps, 0, 1e7, "0"),
    INT_KEY("limits", "global_burst", global_burst, 0, 10000000, "0"),
    ENUM_KEY("limits", "adaptive", adaptive, on_off, "on"),
    INT_KEY("limits", "max_inflight", max_inflight, 1, 1000000, "1000"),
    REAL_KEY("limits", "adaptive_tolerance", adaptive_tolerance, 1.1, 100, "2"),
    INT_KEY("breaker", "window_s", breaker_window_s, 1, 600, "10"),
    INT_KEY("breaker", "min_calls", breaker_min_calls, 1, 1000000, "20"),
    REAL_KEY("breaker", "failure_ratio", breaker_failure_ratio, 0.01, 1, "0.5"),
    INT_KEY("breaker", "slow_call_ms", breaker_slow_call_ms, 1, 3600000, "5000"),
    REAL_KEY("breaker", "slow_ratio", breaker_slow_ratio, 0.01, 1, "0.8"),
    INT_KEY("breaker", "open_s", breaker_open_s, 1, 86400, "5"),
    INT_KEY("breaker", "half_open_calls", breaker_half_open_calls, 1, 1000, "3"),
    ENUM_KEY("store", "backend", store_backend, store_backends, "sqlite"),
    STR_KEY("store", "url", store_url, ""),
    INT_KEY("store", "pool_size", store_pool_size, 1, 1000, "8"),
    INT_KEY("store", "writers", store_writers, 1, 64, "2"),
    INT_KEY("store", "max_batch", store_max_batch, 1, 100000, "1024"),
    INT_KEY("store", "queue_capacity", store_queue_capacity, 16, 1 << 22, "16384"),
    INT_KEY("worker", "threads", worker_threads, 1, 1024, "64"),
    INT_KEY("worker", "lease_ms", worker_lease_ms, 1000, 3600000, "30000"),
    INT_KEY("worker", "max_attempts", worker_max_attempts, 1, 100, "3"),
    INT_KEY("worker", "retry_base_ms", worker_retry_base_ms, 1, 3600000, "250"),
    INT_KEY("worker", "retry_max_ms", worker_retry_max_ms, 1, 86400000, "30000"),
    INT_KEY("idempotency", "ttl_s", idem_ttl_s, 1, 365LL * 86400, "86400"),
    INT_KEY("idempotency", "purge_interval_s", idem_purge_interval_s, 1, 86400, "60"),
    INT_KEY("orders", "ttl_s", order_ttl_s, 0, 365LL * 86400, "1800"),
    INT_KEY("webhooks", "timeout_ms", webhook_timeout_ms, 100, 120000, "10000"),
    INT_KEY("webhooks", "retry_base_ms", webhook_retry_base_ms, 1, 3600000, "5000"),
    INT_KEY("webhooks", "retry_max_ms", webhook_retry_max_ms, 1, 86400000, "3600000"),
    INT_KEY("webhooks", "give_up_s", webhook_give_up_s, 1, 30LL * 86400, "86400"),
    ENUM_KEY("webhooks", "allow_private", webhook_allow_private, on_off, "off"),
    INT_KEY("orders", "close_interval_s", order_close_interval_s, 1, 86400, "5"),
    ENUM_KEY("log", "format", log_format, log_formats, "json"),
    ENUM_KEY("log", "level", log_level, log_levels, "info"),
    ENUM_KEY("log", "requests", log_requests, on_off, "on"),
    STR_KEY("alerts", "alertmanager_url", alertmanager_url, ""),
    INT_KEY("alerts", "resend_s", alert_resend_s, 1, 86400, "60"),
    INT_KEY("alerts", "ledger_check_s", ledger_check_s, 1, 86400, "10"),
};

/* Keys of a [channel.NAME] section, with offsets into struct conf_channel. */
static const struct key channel_keys[] = {
    {"channel", "type", KEY_ENUM, offsetof(struct conf_channel, type), 0, 0, channel_types,
     "sandbox", 0, 0},
    {"channel", "timeout_ms", KEY_INT, offsetof(struct conf_channel, timeout_ms), 1, 600000,
     NULL, "3000", 0, 0},
    {"channel", "rate", KEY_REAL, offsetof(struct conf_channel, rate), 0, 0, NULL, "0", 0, 1e6},
    {"channel", "pace_max_wait_ms", KEY_INT, offsetof(struct conf_channel, pace_max_wait_ms), 0,
     60000, NULL, "1000", 0, 0},
    {"channel", "fallback", KEY_STR, offsetof(struct conf_channel, fallback), 0,
     sizeof(((struct conf_channel *)0)->fallback), NULL, "", 0, 0},
    {"channel", "journal", KEY_STR, offsetof(struct conf_channel, journal), 0,
     sizeof(((struct conf_channel *)0)->journal), NULL, "", 0, 0},
    {"channel", "url", KEY_STR, offsetof(struct conf_channel, url), 0,
     sizeof(((struct conf_channel *)0)->url), NULL, "", 0, 0},
    {"channel", "secret", KEY_STR, offsetof(struct conf_channel, secret), 0,
     sizeof(((struct conf_channel *)0)->secret), NULL, "", 0, 0},
    {"channel", "methods", KEY_STR, offsetof(struct conf_channel, methods), 0,
     sizeof(((struct conf_channel *)0)->methods), NULL, "ok,declined", 0, 0},
    {"channel", "notify_url", KEY_STR, offsetof(struct conf_channel, notify_url), 0,
     sizeof(((struct conf_channel *)0)->notify_url), NULL, "", 0, 0},
};

/* Keys of an [alert.NAME] section, with offsets into struct conf_alert. */
#define ALERT_KEY(nm, tp, field, lo, hi, names, def, dlo, dhi)                              \
    {"alert", nm, tp, offsetof(struct conf_alert, field), lo, hi, names, def, dlo, dhi}
static const struct key alert_keys[] = {
    ALERT_KEY("kind", KEY_ENUM, kind, 0, 0, alert_kinds, "error_ratio", 0, 0),
    ALERT_KEY("threshold", KEY_REAL, threshold, 0, 0, NULL, "0", -1e18, 1e18),
    ALERT_KEY("for_s", KEY_INT, for_s, 0, 86400, NULL, "0", 0, 0),
    ALERT_KEY("window_s", KEY_INT, window_s, 1, 7 * 86400, NULL, "60", 0, 0),
    ALERT_KEY("short_window_s", KEY_INT, short_window_s, 1, 7 * 86400, NULL, "300", 0, 0),
    ALERT_KEY("slo", KEY_REAL, slo, 0, 0, NULL, "0.999", 0.5, 0.999999),
    ALERT_KEY("min_requests", KEY_INT, min_requests, 0, 1000000000, NULL, "100", 0, 0),
    ALERT_KEY("severity", KEY_ENUM, severity, 0, 0, alert_severities, "page", 0, 0),
    ALERT_KEY("enabled", KEY_ENUM, enabled, 0, 0, on_off, "on", 0, 0),
    {"alert", "summary", KEY_STR, offsetof(struct conf_alert, summary), 0,
     sizeof(((struct conf_alert *)0)->summary), NULL, "", 0, 0},
};

/* The built-in rules: section name, then key = value pairs. The same rules
 * are Prometheus alerting rules in deploy/prometheus/payd.rules.yml. */
static const char *const builtin_alerts[][12] = {
    {"PaydErrorRatioHigh", "kind", "error_ratio", "threshold", "0.05", "window_s", "300",
     "for_s", "60", "severity", "page", NULL},
    {"PaydLatencyP99High", "kind", "latency_p99", "threshold", "0.5", "window_s", "300",
     "for_s", "60", "severity", "ticket", NULL},
    {"PaydBreakerOpen", "kind", "breaker_open", "severity", "ticket", NULL},
    {"PaydQueueStale", "kind", "queue_age", "threshold", "300", "for_s", "60", "severity",
     "page", NULL},
    {"PaydDeadLetters", "kind", "dead_letters", "threshold", "0", "severity", "ticket", NULL},
    {"PaydLedgerImbalance", "kind", "ledger_imbalance", "threshold", "0", "severity", "page",
     NULL},
    {"PaydSLOBurnFast", "kind", "burn_rate", "threshold", "14.4", "window_s", "3600",
     "short_window_s", "300", "slo", "0.999", NULL},
    {"PaydSLOBurnSlow", "kind", "burn_rate", "threshold", "6", "window_s", "21600",
     "short_window_s", "1800", "slo", "0.999", NULL},
};

const char *conf_alert_kind_name(int kind)
{
    return kind >= 0 && kind < ALERT_KIND_COUNT ? alert_kinds[kind] : "none";
}

const char *conf_alert_severity_name(int severity)
{
    PAYD_ASSERT(severity >= 0 && severity < (int)ARRAY_LEN(alert_severities) - 1);
    return alert_severities[severity];
}

static int set_value(void *base, const struct key *k, const char *section, const char *value,
                     char err[CONF_ERR_MAX])
{
    char *field = (char *)base + k->offset;
    switch (k->type) {
    case KEY_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end != '\0' || v < k->min || v > k->max) {
            snprintf(err, CONF_ERR_MAX,
                     "config: [%s] %s: '%s' is not an integer from %lld to %lld", section,
                     k->name, value, (long long)k->min, (long long)k->max);
            return -1;
        }
        *(int64_t *)field = v;
        return 0;
    }
    case KEY_REAL: {
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end != '\0' || !(v >= k->dmin && v <= k->dmax)) {
            snprintf(err, CONF_ERR_MAX, "config: [%s] %s: '%s' is not a number from %g to %g",
                     section, k->name, value, k->dmin, k->dmax);
            return -1;
        }
        *(double *)field = v;
        return 0;
    }
    case KEY_STR:
        if ((value[0] == '\0' && k->deflt[0] != '\0') || strlen(value) >= (size_t)k->max) {
            snprintf(err, CONF_ERR_MAX, "config: [%s] %s: value is empty or too long", section,
                     k->name);
            return -1;
        }
        memcpy(field, value, strlen(value) + 1);
        return 0;
    case KEY_ENUM:
        for (int i = 0; k->names[i]; i++)
            if (strcmp(k->names[i], value) == 0) {
                *(int64_t *)field = i;
                return 0;
            }
        snprintf(err, CONF_ERR_MAX, "config: [%s] %s: '%s' is not one of the allowed values",
                 section, k->name, value);
        return -1;
    default:
        PAYD_ASSERT(!"unknown key type");
        return -1;
    }
}

static bool channel_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > 32)
        return false;
    for (const char *p = name; *p; p++)
        if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '_' &&
            *p != '-')
            return false;
    return true;
}

/* Finds or adds the channel of a "channel.NAME" section. */
/* A channel's method list: 1 to CONF_METHODS_MAX comma-separated tokens. */
static bool methods_valid(const char *list)
{
    int n = 0;
    for (const char *p = list;; n++) {
        size_t len = strcspn(p, ",");
        char name[40];
        if (len == 0 || len > 32)
            return false;
        snprintf(name, sizeof(name), "%.*s", (int)len, p);
        if (!token_valid(name, 32, "_-."))
            return false;
        p += len;
        if (*p == '\0')
            return n + 1 <= CONF_METHODS_MAX;
        p++;
    }
}

static struct conf_channel *channel_for(struct conf *conf, const char *name, bool add,
                                        char err[CONF_ERR_MAX])
{
    for (int i = 0; i < conf->channel_count; i++)
        if (strcmp(conf->channels[i].name, name) == 0)
            return &conf->channels[i];
    if (!add)
        return NULL;
    if (!channel_name_valid(name)) {
        snprintf(err, CONF_ERR_MAX,
                 "config: [channel.%s]: a channel name is 1 to 32 of a-z 0-9 _ -", name);
        return NULL;
    }
    if (conf->channel_count == CONF_CHANNELS_MAX) {
        snprintf(err, CONF_ERR_MAX, "config: [channel.%s]: more than %d channels", name,
                 CONF_CHANNELS_MAX);
        return NULL;
    }
    struct conf_channel *ch = &conf->channels[conf->channel_count++];
    memset(ch, 0, sizeof(*ch));
    snprintf(ch->name, sizeof(ch->name), "%s", name);
    for (size_t i = 0; i < ARRAY_LEN(channel_keys); i++) {
        char ignored[CONF_ERR_MAX];
        PAYD_ASSERT(set_value(ch, &channel_keys[i], "channel", channel_keys[i].deflt,
                              ignored) == 0);
    }
    return ch;
}

static bool alert_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > 63)
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_')
            return false;
    return true;
}

/* Finds or adds the alert of an "alert.NAME" section; a new one has no
 * kind until its section gives one. */
static struct conf_alert *alert_for(struct conf *conf, const char *name, char err[CONF_ERR_MAX])
{
    for (int i = 0; i < conf->alert_count; i++)
        if (strcmp(conf->alerts[i].name, name) == 0)
            return &conf->alerts[i];
    if (!alert_name_valid(name)) {
        snprintf(err, CONF_ERR_MAX,
                 "config: [alert.%s]: an alert name is 1 to 63 of A-Z a-z 0-9 _", name);
        return NULL;
    }
    if (conf->alert_count == CONF_ALERTS_MAX) {
        snprintf(err, CONF_ERR_MAX, "config: [alert.%s]: more than %d alerts", name,
                 CONF_ALERTS_MAX);
        return NULL;
    }
    struct conf_alert *a = &conf->alerts[conf->alert_count++];
    memset(a, 0, sizeof(*a));
    snprintf(a->name, sizeof(a->name), "%s", name);
    for (size_t i = 0; i < ARRAY_LEN(alert_keys); i++) {
        char ignored[CONF_ERR_MAX];
        PAYD_ASSERT(set_value(a, &alert_keys[i], "alert", alert_keys[i].deflt, ignored) == 0);
    }
    a->kind = -1;
    return a;
}

static int alert_set(struct conf_alert *a, const char *section, const char *key,
                     const char *value, char err[CONF_ERR_MAX])
{
    for (size_t i = 0; i < ARRAY_LEN(alert_keys); i++)
        if (strcmp(alert_keys[i].name, key) == 0)
            return set_value(a, &alert_keys[i], section, value, err);
    snprintf(err, CONF_ERR_MAX, "config: [%s] %s: unknown key", section, key);
    return -1;
}

void conf_defaults(struct conf *conf)
{
    memset(conf, 0, sizeof(*conf));
    char err[CONF_ERR_MAX];
    for (size_t i = 0; i < ARRAY_LEN(keys); i++)
        PAYD_ASSERT(set_value(conf, &keys[i], keys[i].section, keys[i].deflt, err) == 0);
    for (size_t i = 0; i < ARRAY_LEN(builtin_alerts); i++) {
        struct conf_alert *a = alert_for(conf, builtin_alerts[i][0], err);
        PAYD_ASSERT(a);
        for (int k = 1; builtin_alerts[i][k]; k += 2)
            PAYD_ASSERT(alert_set(a, "alert", builtin_alerts[i][k], builtin_alerts[i][k + 1],
                                  err) == 0);
    }
}

int conf_set(struct conf *conf, const char *section, const char *key, const char *value,
             char err[CONF_ERR_MAX])
{
    if (strncmp(section, "alert.", 6) == 0) {
        struct conf_alert *a = alert_for(conf, section + 6, err);
        return a ? alert_set(a, section, key, value, err) : -1;
    }
    if (strncmp(section, "channel.", 8) == 0) {
        struct conf_channel *ch = channel_for(conf, section + 8, true, err);
        if (!ch)
            return -1;
        for (size_t i = 0; i < ARRAY_LEN(channel_keys); i++)
            if (strcmp(channel_keys[i].name, key) == 0)
                return set_value(ch, &channel_keys[i], section, value, err);
        snprintf(err, CONF_ERR_MAX, "config: [%s] %s: unknown key", section, key);
        return -1;
    }
    bool section_known = false;
    for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
        if (strcmp(keys[i].section, section) != 0)
            continue;
        section_known = true;
        if (strcmp(keys[i].name, key) == 0)
            return set_value(conf, &keys[i], section, value, err);
    }
    if (section_known)
        snprintf(err, CONF_ERR_MAX, "config: [%s] %s: unknown key", section, key);
    else
        snprintf(err, CONF_ERR_MAX, "config: [%s]: unknown section (key %s)", section, key);
    return -1;
}

struct file_ctx {
    struct conf *conf;
    char *err;
    bool failed;
};

static int on_ini_line(void *user, const char *section, const char *name, const char *value)
{
    struct file_ctx *ctx = user;
    if (ctx->failed)
        return 0;
    if (section[0] == '\0') {
        snprintf(ctx->err, CONF_ERR_MAX, "config: key %s is outside any [section]", name);
        ctx->failed = true;
        return 0;
    }
    if (conf_set(ctx->conf, section, name, value, ctx->err) != 0) {
        ctx->failed = true;
        return 0;
    }
    return 1;
}

/*
 * Two things Debian's build of inih does not do, checked in a first pass:
 * it reads lines into a buffer of INI_MAX_LINE bytes and parses the rest of
 * a longer line as a line of its own (so a long comment could set a key),
 * and it does not report a section header that has no keys, which would
 * silently drop an empty [channel.NAME]. This pass refuses long lines and
 * declares every channel section it sees.
 */
static int prescan(struct conf *conf, const char *path, char err[CONF_ERR_MAX])
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, CONF_ERR_MAX, "config: cannot read %s", path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (len >= INI_MAX_LINE - 1) {
            /* Name the key, when the line has one, as every error does. */
            char key[48] = "";
            const char *eq = strchr(line, '=');
            if (eq && line[strspn(line, " \t")] != ';' && line[strspn(line, " \t")] != '#') {
                const char *k = line + strspn(line, " \t");
                int n = (int)(eq - k);
                while (n > 0 && isspace((unsigned char)k[n - 1]))
                    n--;
                snprintf(key, sizeof(key), " (key %.*s)", n < 32 ? n : 32, k);
            }
            snprintf(err, CONF_ERR_MAX, "config: %s line %d%s: longer than %d characters",
                     path, lineno, key, INI_MAX_LINE - 2);
            rc = -1;
            break;
        }
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        char *end = p + strlen(p);
        while (end > p && isspace((unsigned char)end[-1]))
            *--end = '\0';
        if (strncmp(p, "[channel.", 9) == 0 && end[-1] == ']') {
            end[-1] = '\0';
            if (!channel_for(conf, p + 9, true, err)) {
                rc = -1;
                break;
            }
        }
        if (strncmp(p, "[alert.", 7) == 0 && end[-1] == ']') {
            end[-1] = '\0';
            if (!alert_for(conf, p + 7, err)) {
                rc = -1;
                break;
            }
        }
    }
    free(line);
    fclose(f);
    return rc;
}

int conf_load_file(struct conf *conf, const char *path, char err[CONF_ERR_MAX])
{
    if (prescan(conf, path, err) != 0)
        return -1;
    struct file_ctx ctx = {.conf = conf, .err = err};
    int rc = ini_parse(path, on_ini_line, &ctx);
    if (ctx.failed)
        return -1;
    if (rc < 0) {
        snprintf(err, CONF_ERR_MAX, "config: cannot read %s", path);
        return -1;
    }
    if (rc > 0) {
        snprintf(err, CONF_ERR_MAX, "config: %s line %d: not a section, key = value or comment",
                 path, rc);
        return -1;
    }
    return 0;
}

/* PAYD_ + section + _ + key, upper case, with '.' and '-' as '_'. */
static void env_name(const char *section, const char *key, char *out, size_t size)
{
    snprintf(out, size, "PAYD_%s_%s", section, key);
    for (char *p = out; *p; p++) {
        if (*p == '.' || *p == '-')
            *p = '_';
        else
            *p = (char)toupper((unsigned char)*p);
    }
}

extern char **environ;

/* True when a PAYD_* variable names a key this table knows (after the
 * channels are known), or is one of the variables that are not keys. */
static bool env_known(const struct conf *conf, const char *var, size_t len)
{
    static const char *const not_keys[] = {"PAYD_DEMO_KEY"};
    char name[160];
    for (size_t i = 0; i < ARRAY_LEN(not_keys); i++)
        if (strlen(not_keys[i]) == len && strncmp(var, not_keys[i], len) == 0)
            return true;
    for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
        env_name(keys[i].section, keys[i].name, name, sizeof(name));
        if (strlen(name) == len && strncmp(var, name, len) == 0)
            return true;
    }
    for (int c = 0; c < conf->channel_count; c++) {
        char section[64];
        snprintf(section, sizeof(section), "channel.%s", conf->channels[c].name);
        for (size_t i = 0; i < ARRAY_LEN(channel_keys); i++) {
            env_name(section, channel_keys[i].name, name, sizeof(name));
            if (strlen(name) == len && strncmp(var, name, len) == 0)
                return true;
        }
    }
    for (int a = 0; a < conf->alert_count; a++) {
        char section[80];
        snprintf(section, sizeof(section), "alert.%s", conf->alerts[a].name);
        for (size_t i = 0; i < ARRAY_LEN(alert_keys); i++) {
            env_name(section, alert_keys[i].name, name, sizeof(name));
            if (strlen(name) == len && strncmp(var, name, len) == 0)
                return true;
        }
    }
    return false;
}

/* A PAYD_<SECTION>_... variable of a configuration section that names no
 * key is refused, as an unknown key in the file is (a typo must not be
 * ignored). Other PAYD_* variables are not configuration and are left
 * alone. Besides the table's sections, PAYD_CHANNEL_* names a key of a
 * channel, so one that matches no configured channel's key is refused. */
static int env_check_unknown(const struct conf *conf, char err[CONF_ERR_MAX])
{
    static const char *const later_sections[] = {"channel", "alert"};
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "PAYD_", 5) != 0)
            continue;
        size_t len = strcspn(*e, "=");
        if (env_known(conf, *e, len))
            continue;
        bool in_section = false;
        char prefix[64];
        for (size_t i = 0; i < ARRAY_LEN(keys) && !in_section; i++) {
            env_name(keys[i].section, "", prefix, sizeof(prefix));
            in_section = strncmp(*e, prefix, strlen(prefix)) == 0;
        }
        for (size_t i = 0; i < ARRAY_LEN(later_sections) && !in_section; i++) {
            env_name(later_sections[i], "", prefix, sizeof(prefix));
            in_section = strncmp(*e, prefix, strlen(prefix)) == 0;
        }
        if (in_section) {
            snprintf(err, CONF_ERR_MAX, "config: environment %.*s: unknown key", (int)len, *e);
            return -1;
        }
    }
    return 0;
}

int conf_load_env(struct conf *conf, char err[CONF_ERR_MAX])
{
    char name[160];
    for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
        env_name(keys[i].section, keys[i].name, name, sizeof(name));
        const char *v = getenv(name);
        if (v && set_value(conf, &keys[i], keys[i].section, v, err) != 0)
            return -1;
    }
    /* Channel keys apply to channels the file named, and to the default
     * sandbox channel when the file named none. */
    if (conf->channel_count == 0)
        channel_for(conf, "sandbox", true, err);
    for (int c = 0; c < conf->channel_count; c++) {
        char section[64];
        snprintf(section, sizeof(section), "channel.%s", conf->channels[c].name);
        for (size_t i = 0; i < ARRAY_LEN(channel_keys); i++) {
            env_name(section, channel_keys[i].name, name, sizeof(name));
            const char *v = getenv(name);
            if (v && set_value(&conf->channels[c], &channel_keys[i], section, v, err) != 0)
                return -1;
        }
    }
    /* Alert keys apply to the built-in alerts and those the file named. */
    for (int a = 0; a < conf->alert_count; a++) {
        char section[80];
        snprintf(section, sizeof(section), "alert.%s", conf->alerts[a].name);
        for (size_t i = 0; i < ARRAY_LEN(alert_keys); i++) {
            env_name(section, alert_keys[i].name, name, sizeof(name));
            const char *v = getenv(name);
            if (v && set_value(&conf->alerts[a], &alert_keys[i], section, v, err) != 0)
                return -1;
        }
    }
    return env_check_unknown(conf, err);
}

int conf_listen_split(const char *listen, char host[128], int *port)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || (size_t)(colon - listen) >= 128)
        return -1;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end != '\0' || p < 1 || p > 65535)
        return -1;
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    *port = (int)p;
    return 0;
}

/* Parses [server] roles ("api", "worker", or both, comma-separated) into
 * bits; 0 when it is not that. */
static int parse_roles(const char *text)
{
    int roles = 0;
    char buf[sizeof(((struct conf *)0)->roles_text)];
    snprintf(buf, sizeof(buf), "%s", text);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        size_t n = strlen(t);
        while (n > 0 && t[n - 1] == ' ')
            t[--n] = '\0';
        int bit = strcmp(t, "api") == 0 ? ROLE_API : strcmp(t, "worker") == 0 ? ROLE_WORKER : 0;
        if (!bit || (roles & bit))
            return 0;
        roles |= bit;
    }
    return roles;
}

/* What the cluster keys need of each other. */
static int finish_cluster(struct conf *conf, char err[CONF_ERR_MAX])
{
    conf->roles = parse_roles(conf->roles_text);
    if (!conf->roles) {
        snprintf(err, CONF_ERR_MAX,
                 "config: [server] roles: '%s' is not api, worker or api,worker",
                 conf->roles_text);
        return -1;
    }
    bool shared = conf->store_backend == STORE_BACKEND_POSTGRES;
    if (conf->roles != (ROLE_API | ROLE_WORKER) && !shared) {
        snprintf(err, CONF_ERR_MAX,
                 "config: [server] roles: an instance with one role shares its store with"
                 " others; that needs [store] backend = postgres");
        return -1;
    }
    if (shared && conf->store_url[0] == '\0') {
        snprintf(err, CONF_ERR_MAX,
                 "config: [store] url: required with backend = postgres (a libpq connection"
                 " string, e.g. host=db1,db2 dbname=payd target_session_attrs=read-write)");
        return -1;
    }
    if (conf->lock_backend == LOCK_BACKEND_REDIS && conf->lock_url[0] == '\0') {
        snprintf(err, CONF_ERR_MAX,
                 "config: [lock] url: required with backend = redis (e.g."
                 " redis://127.0.0.1:6379)");
        return -1;
    }
    if (conf->queue_backend == QUEUE_BACKEND_NATS && !shared) {
        snprintf(err, CONF_ERR_MAX,
                 "config: [queue] backend = nats: the relay publishes the store's outbox,"
                 " which needs [store] backend = postgres");
        return -1;
    }
    if (conf->queue_backend == QUEUE_BACKEND_NATS && conf->queue_url[0] == '\0') {
        snprintf(err, CONF_ERR_MAX,
                 "config: [queue] url: required with backend = nats (e.g."
                 " nats://127.0.0.1:4222)");
        return -1;
    }
    if (conf->queue_backend == QUEUE_BACKEND_NATS &&
        conf->queue_sweep_after_ms <= conf->worker_retry_max_ms) {
        snprintf(err, CONF_ERR_MAX,
                 "config: [queue] sweep_after_ms: must exceed [worker] retry_max_ms, or"
                 " payments waiting for a retry would be sent again");
        return -1;
    }
    if (conf->lock_backend == LOCK_BACKEND_LOCAL && shared &&
        conf->roles != (ROLE_API | ROLE_WORKER)) {
        snprintf(err, CONF_ERR_MAX,
                 "config: [lock] backend: instances that share a store need a shared lock:"
                 " backend = redis");
        return -1;
    }
    return 0;
}

int conf_finish(struct conf *conf, char err[CONF_ERR_MAX])
{
    char host[128];
    int port;
    if (conf_listen_split(conf->listen, host, &port) != 0) {
        snprintf(err, CONF_ERR_MAX, "config: [server] listen: '%s' is not HOST:PORT",
                 conf->listen);
        return -1;
    }
    if (conf->channel_count == 0 && !channel_for(conf, "sandbox", true, err))
        return -1;
    for (int i = 0; i < conf->channel_count; i++) {
        const struct conf_channel *ch = &conf->channels[i];
        if (ch->type == CHANNEL_TYPE_HTTP &&
            strncmp(ch->url, "http://", 7) != 0 && strncmp(ch->url, "https://", 8) != 0) {
            snprintf(err, CONF_ERR_MAX,
                     "config: [channel.%s] url: type = http needs the PSP's http:// or"
                     " https:// base URL", ch->name);
            return -1;
        }
        if (ch->notify_url[0] && strncmp(ch->notify_url, "http://", 7) != 0 &&
            strncmp(ch->notify_url, "https://", 8) != 0) {
            snprintf(err, CONF_ERR_MAX,
                     "config: [channel.%s] notify_url: an http:// or https:// URL (payd's"
                     " /v1/notify/%s as the PSP reaches it)", ch->name, ch->name);
            return -1;
        }
        if (ch->type == CHANNEL_TYPE_HTTP && !methods_valid(ch->methods)) {
            snprintf(err, CONF_ERR_MAX,
                     "config: [channel.%s] methods: 1 to %d comma-separated names of 1 to 32"
                     " characters of A-Z a-z 0-9 _ - .", ch->name, CONF_METHODS_MAX);
            return -1;
        }
        if (ch->type == CHANNEL_TYPE_HTTP && ch->secret[0] == '\0') {
            snprintf(err, CONF_ERR_MAX,
                     "config: [channel.%s] secret: type = http needs the key its requests are"
                     " signed with", ch->name);
            return -1;
        }
    }
    for (int i = 0; i < conf->channel_count; i++) {
        const struct conf_channel *ch = &conf->channels[i];
        if (ch->fallback[0] == '\0')
            continue;
        if (strcmp(ch->fallback, ch->name) == 0 || !channel_for(conf, ch->fallback, false, err)) {
            snprintf(err, CONF_ERR_MAX,
                     "config: [channel.%s] fallback: '%s' is not another configured channel",
                     ch->name, ch->fallback);
            return -1;
        }
    }
    for (int i = 0; i < conf->alert_count; i++) {
        const struct conf_alert *a = &conf->alerts[i];
        if (a->kind < 0) {
            snprintf(err, CONF_ERR_MAX, "config: [alert.%s] kind: required (one of error_ratio,"
                     " latency_p99, breaker_open, queue_age, dead_letters, ledger_imbalance,"
                     " burn_rate)", a->name);
            return -1;
        }
        if (a->kind == ALERT_BURN_RATE && a->short_window_s >= a->window_s) {
            snprintf(err, CONF_ERR_MAX,
                     "config: [alert.%s] short_window_s: must be shorter than window_s",
                     a->name);
            return -1;
        }
    }
    if (conf->alertmanager_url[0] && strncmp(conf->alertmanager_url, "http://", 7) != 0 &&
        strncmp(conf->alertmanager_url, "https://", 8) != 0) {
        /* Not echoed: a URL may hold credentials. */
        snprintf(err, CONF_ERR_MAX,
                 "config: [alerts] alertmanager_url: not an http:// or https:// URL");
        return -1;
    }
    if (conf->worker_retry_base_ms > conf->worker_retry_max_ms) {
        snprintf(err, CONF_ERR_MAX, "config: [worker] retry_base_ms: above retry_max_ms");
        return -1;
    }
    return finish_cluster(conf, err);
}
