/*
 * fuzz_conf.c - the configuration as payd builds it at start-up (cli.c):
 * the defaults, then an INI file (conf_load_file: payd's own prescan of the
 * lines, then libinih with conf.c's handler and key table), then PAYD_*
 * environment variables (conf_load_env), then the checks across keys
 * (conf_finish).
 *
 * Input: the file's text; optionally followed by a line "%%" and lines
 * NAME=VALUE, set in the environment for this input when NAME starts with
 * PAYD_ (and unset after). The file is handed over as a path, as payd
 * does: a memfd reached through /proc/self/fd. With PAYD_FUZZ_VERBOSE set
 * it prints "accepted" or the refusal of each input.
 *
 * Checked: a refused configuration says why ("config: …", NUL-terminated
 * within CONF_ERR_MAX); an accepted one keeps every key within the bounds
 * of conf.c's table and conf.h, every string NUL-terminated in its buffer,
 * and what conf_finish promises: a HOST:PORT listen address, 1 to 16
 * channels of valid, distinct names, http channels with a URL, a secret and
 * a method list, fallbacks that name another channel, alerts with a kind,
 * burn-rate windows in order, roles that fit the store.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "lib/check.h"

#define ENV_MAX 16

extern char **environ;

static int g_fd = -1;
static char g_path[64];
static bool g_verbose;

#define TERMINATED(field) (memchr((field), '\0', sizeof(field)) != NULL)

static bool name_ok(const char *s, size_t max, const char *extra, bool upper)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (const char *p = s; *p; p++)
        if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) &&
            !(upper && isupper((unsigned char)*p)) && !strchr(extra, *p))
            return false;
    return true;
}

static bool http_url(const char *s)
{
    return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

static void check_channel(const struct conf *conf, const struct conf_channel *ch)
{
    FUZZ_CHECK(TERMINATED(ch->name) && TERMINATED(ch->fallback) && TERMINATED(ch->journal) &&
                   TERMINATED(ch->url) && TERMINATED(ch->secret) && TERMINATED(ch->notify_url) &&
                   TERMINATED(ch->methods),
               "a channel string not terminated");
    FUZZ_CHECK(name_ok(ch->name, 32, "_-", false), "channel name %s", ch->name);
    FUZZ_CHECK(ch->type == CHANNEL_TYPE_SANDBOX || ch->type == CHANNEL_TYPE_HTTP,
               "channel %s type %lld", ch->name, (long long)ch->type);
    FUZZ_CHECK(ch->timeout_ms >= 1 && ch->timeout_ms <= 600000 && ch->rate >= 0 &&
                   ch->rate <= 1e6 && ch->pace_max_wait_ms >= 0 && ch->pace_max_wait_ms <= 60000,
               "channel %s numbers out of bounds", ch->name);
    if (ch->type == CHANNEL_TYPE_HTTP) {
        FUZZ_CHECK(http_url(ch->url) && ch->secret[0], "http channel %s: url or secret",
                   ch->name);
        /* 1 to 16 comma-separated names of 1 to 32 of A-Z a-z 0-9 _ - . */
        int count = 0;
        for (const char *p = ch->methods;; count++) {
            size_t n = strcspn(p, ",");
            char m[40];
            FUZZ_CHECK(n >= 1 && n <= 32, "channel %s methods %s", ch->name, ch->methods);
            snprintf(m, sizeof(m), "%.*s", (int)n, p);
            FUZZ_CHECK(name_ok(m, 32, "_-.", true), "channel %s method %s", ch->name, m);
            p += n;
            if (!*p++)
                break;
        }
        FUZZ_CHECK(count + 1 <= CONF_METHODS_MAX, "channel %s: %d methods", ch->name, count + 1);
    }
    FUZZ_CHECK(!ch->notify_url[0] || http_url(ch->notify_url), "channel %s notify_url",
               ch->name);
    if (ch->fallback[0]) {
        bool found = false;
        for (int i = 0; i < conf->channel_count; i++)
            found = found || (&conf->channels[i] != ch &&
                              strcmp(conf->channels[i].name, ch->fallback) == 0);
        FUZZ_CHECK(found && strcmp(ch->fallback, ch->name) != 0, "channel %s fallback %s",
                   ch->name, ch->fallback);
    }
}

static void check_alert(const struct conf_alert *a)
{
    FUZZ_CHECK(TERMINATED(a->name) && TERMINATED(a->summary), "an alert string not terminated");
    FUZZ_CHECK(name_ok(a->name, 63, "_", true), "alert name %s", a->name);
    FUZZ_CHECK(a->kind >= 0 && a->kind < ALERT_KIND_COUNT, "alert %s kind %lld", a->name,
               (long long)a->kind);
    FUZZ_CHECK(strcmp(conf_alert_kind_name((int)a->kind), "none") != 0, "alert kind name");
    FUZZ_CHECK(a->severity >= ALERT_SEVERITY_PAGE && a->severity <= ALERT_SEVERITY_INFO,
               "alert %s severity", a->name);
    FUZZ_CHECK(conf_alert_severity_name((int)a->severity)[0], "alert severity name");
    FUZZ_CHECK(a->enabled == 0 || a->enabled == 1, "alert %s enabled", a->name);
    FUZZ_CHECK(a->threshold >= -1e18 && a->threshold <= 1e18 && a->for_s >= 0 &&
                   a->for_s <= 86400 && a->window_s >= 1 && a->window_s <= 7 * 86400 &&
                   a->short_window_s >= 1 && a->short_window_s <= 7 * 86400 && a->slo >= 0.5 &&
                   a->slo <= 0.999999 && a->min_requests >= 0 && a->min_requests <= 1000000000,
               "alert %s numbers out of bounds", a->name);
    FUZZ_CHECK(a->kind != ALERT_BURN_RATE || a->short_window_s < a->window_s,
               "alert %s windows", a->name);
}

static void check_accepted(const struct conf *c)
{
    FUZZ_CHECK(TERMINATED(c->listen) && TERMINATED(c->data_dir) && TERMINATED(c->admin_key) &&
                   TERMINATED(c->roles_text) && TERMINATED(c->lock_url) &&
                   TERMINATED(c->queue_url) && TERMINATED(c->store_url) &&
                   TERMINATED(c->alertmanager_url),
               "a string not terminated");
    char host[128];
    int port = 0;
    FUZZ_CHECK(conf_listen_split(c->listen, host, &port) == 0 && port >= 1 && port <= 65535,
               "listen %s", c->listen);
    FUZZ_CHECK(c->data_dir[0] && c->roles_text[0], "an empty required string");
    FUZZ_CHECK(c->roles >= 1 && c->roles <= (ROLE_API | ROLE_WORKER), "roles %d", c->roles);
    FUZZ_CHECK(c->roles == (ROLE_API | ROLE_WORKER) || c->store_backend == STORE_BACKEND_POSTGRES,
               "one role without a shared store");
    FUZZ_CHECK(c->store_backend != STORE_BACKEND_POSTGRES || c->store_url[0],
               "postgres without a url");
    FUZZ_CHECK(c->max_body_bytes >= 256 && c->max_body_bytes <= (64 << 20) &&
                   c->http_threads >= 1 && c->http_threads <= 64 && c->store_pool_size >= 1 &&
                   c->store_pool_size <= 1000 && c->store_writers >= 1 && c->store_writers <= 64 &&
                   c->store_max_batch >= 1 && c->store_max_batch <= 100000 &&
                   c->store_queue_capacity >= 16 && c->store_queue_capacity <= (1 << 22) &&
                   c->worker_threads >= 1 && c->worker_threads <= 1024 &&
                   c->worker_max_attempts >= 1 && c->worker_max_attempts <= 100 &&
                   c->worker_retry_base_ms <= c->worker_retry_max_ms && c->idem_ttl_s >= 1 &&
                   c->order_ttl_s >= 0 && c->queue_replicas >= 1 && c->queue_replicas <= 5,
               "an integer key out of bounds");
    FUZZ_CHECK(c->merchant_rps >= 0 && c->merchant_rps <= 1e7 && c->global_rps >= 0 &&
                   c->global_rps <= 1e7 && c->adaptive_tolerance >= 1.1 &&
                   c->adaptive_tolerance <= 100 && c->breaker_failure_ratio >= 0.01 &&
                   c->breaker_failure_ratio <= 1 && c->breaker_slow_ratio >= 0.01 &&
                   c->breaker_slow_ratio <= 1,
               "a real key out of bounds");
    FUZZ_CHECK(c->log_format >= LOG_FORMAT_JSON && c->log_format <= LOG_FORMAT_TEXT &&
                   c->log_level >= LOG_DEBUG && c->log_level <= LOG_ERROR &&
                   (c->log_requests == 0 || c->log_requests == 1) &&
                   (c->adaptive == 0 || c->adaptive == 1) && c->store_backend >= 0 &&
                   c->store_backend <= STORE_BACKEND_POSTGRES && c->lock_backend >= 0 &&
                   c->lock_backend <= LOCK_BACKEND_REDIS && c->queue_backend >= 0 &&
                   c->queue_backend <= QUEUE_BACKEND_NATS,
               "an enum key out of range");
    FUZZ_CHECK(!c->alertmanager_url[0] || http_url(c->alertmanager_url), "alertmanager_url");
    FUZZ_CHECK(c->channel_count >= 1 && c->channel_count <= CONF_CHANNELS_MAX, "%d channels",
               c->channel_count);
    for (int i = 0; i < c->channel_count; i++) {
        for (int j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(c->channels[i].name, c->channels[j].name) != 0,
                       "channel %s twice", c->channels[i].name);
        check_channel(c, &c->channels[i]);
    }
    FUZZ_CHECK(c->alert_count >= 0 && c->alert_count <= CONF_ALERTS_MAX, "%d alerts",
               c->alert_count);
    for (int i = 0; i < c->alert_count; i++)
        check_alert(&c->alerts[i]);
}

/* Unsets the PAYD_* variables the environment came with: each input
 * brings its own. */
static void clear_payd_env(void)
{
    for (;;) {
        char **e = environ;
        while (*e && strncmp(*e, "PAYD_", 5) != 0)
            e++;
        if (!*e)
            return;
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)strcspn(*e, "="), *e);
        unsetenv(name);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (g_fd < 0) {
        g_verbose = getenv("PAYD_FUZZ_VERBOSE") != NULL; /* before it is cleared */
        clear_payd_env();
        g_fd = memfd_create("payd-fuzz-conf", MFD_CLOEXEC);
        FUZZ_CHECK(g_fd >= 0, "memfd_create: %s", strerror(errno));
        snprintf(g_path, sizeof(g_path), "/proc/self/fd/%d", g_fd);
    }
    /* The file, then "%%" and the environment. */
    size_t file_len = size;
    const uint8_t *env = NULL;
    size_t env_len = 0;
    for (size_t i = 0; i + 2 <= size; i++)
        if ((i == 0 || data[i - 1] == '\n') && memcmp(data + i, "%%", 2) == 0 &&
            (i + 2 == size || data[i + 2] == '\n')) {
            file_len = i;
            env = data + i + 2;
            env_len = size - i - 2;
            break;
        }
    FUZZ_CHECK(ftruncate(g_fd, 0) == 0 && pwrite(g_fd, data, file_len, 0) == (ssize_t)file_len,
               "cannot write the memfd");

    char names[ENV_MAX][64];
    int n_env = 0;
    char *line;
    while (n_env < ENV_MAX && (line = fuzz_take_line(&env, &env_len)) != NULL) {
        char *eq = strchr(line, '=');
        size_t name_len = eq ? (size_t)(eq - line) : 0;
        if (eq && name_len > 5 && name_len < sizeof(names[0]) && strncmp(line, "PAYD_", 5) == 0 &&
            strspn(line, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == name_len) {
            *eq = '\0';
            snprintf(names[n_env++], sizeof(names[0]), "%s", line);
            setenv(line, eq + 1, 1);
        }
        free(line);
    }

    static struct conf conf;
    char err[CONF_ERR_MAX];
    memset(err, 0, sizeof(err));
    conf_defaults(&conf);
    int rc = conf_load_file(&conf, g_path, err);
    if (rc == 0)
        rc = conf_load_env(&conf, err);
    if (rc == 0)
        rc = conf_finish(&conf, err);
    for (int i = 0; i < n_env; i++)
        unsetenv(names[i]);

    if (g_verbose)
        fprintf(stderr, "fuzz: %s\n", rc == 0 ? "accepted" : err);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1, "a refusal of %d", rc);
        FUZZ_CHECK(TERMINATED(err) && strncmp(err, "config: ", 8) == 0 && strlen(err) > 8,
                   "a refusal that does not say why: %.*s", CONF_ERR_MAX, err);
        return 0;
    }
    check_accepted(&conf);
    return 0;
}
