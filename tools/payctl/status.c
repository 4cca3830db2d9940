/*
 * status.c - payctl status: every component of a two-site deployment, its
 * role and its health, read live (docs/DR.md).
 *
 *   payctl status --topology FILE
 *
 * FILE is an INI file (deploy/dr/up writes one) with a section per site
 * and one for the failover controller:
 *
 *   [site.a]
 *   postgres = host=127.0.0.1 port=5432 user=postgres dbname=postgres
 *   redis    = 127.0.0.1:6379
 *   sentinel = 127.0.0.1:26379
 *   nats     = http://127.0.0.1:8222          (its monitoring port)
 *   payd     = http://127.0.0.1:8080          (one line per instance)
 *   [failover]
 *   state    = /path/to/state.json             (payfailover --state)
 *
 * Each is asked what it is: PostgreSQL whether it is in recovery (and, a
 * primary, which standby is synchronous), Redis its ROLE, a sentinel the
 * master it names, NATS its health and whether it leads JetStream's meta
 * group, payd its /readyz. One line each; exit 0 when every component
 * answered and is healthy, 1 when one is down or unhealthy, 2 on a bad
 * command line or file.
 */
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <ini.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "status.h"

#define COMPONENTS_MAX 64
#define TIMEOUT_MS 1000
#define BODY_MAX (256 * 1024)
#define SENTINEL_MASTER "payd"

enum kind { K_POSTGRES, K_REDIS, K_SENTINEL, K_NATS, K_PAYD, K_FAILOVER, K_COUNT };
static const char *const kind_names[K_COUNT] = {"postgres", "redis", "sentinel", "nats",
                                                "payd", "state"};

struct component {
    char site[32];
    enum kind kind;
    char *where;
};

struct topology {
    struct component c[COMPONENTS_MAX];
    int n;
    bool bad;
};

static int on_line(void *arg, const char *section, const char *name, const char *value)
{
    struct topology *t = arg;
    const char *site = NULL;
    if (strncmp(section, "site.", 5) == 0 && section[5])
        site = section + 5;
    else if (strcmp(section, "failover") == 0)
        site = "witness";
    int kind = -1;
    for (int k = 0; k < K_COUNT; k++)
        if (strcmp(name, kind_names[k]) == 0)
            kind = k;
    bool failover_key = kind == K_FAILOVER;
    if (!site || kind < 0 || failover_key != (strcmp(section, "failover") == 0) ||
        t->n == COMPONENTS_MAX) {
        fprintf(stderr, "payctl: topology: [%s] %s: unknown, or too many components\n", section,
                name);
        t->bad = true;
        return 0;
    }
    struct component *c = &t->c[t->n++];
    snprintf(c->site, sizeof(c->site), "%s", site);
    c->kind = (enum kind)kind;
    c->where = strdup(value);
    return 1;
}

/* What one check found: a role ("primary", "ready", ...) and whether the
 * component is healthy; detail says more. */
struct finding {
    char role[32];
    char detail[160];
    bool healthy;
};

static void found(struct finding *f, bool healthy, const char *role, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void found(struct finding *f, bool healthy, const char *role, const char *fmt, ...)
{
    f->healthy = healthy;
    snprintf(f->role, sizeof(f->role), "%s", role);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->detail, sizeof(f->detail), fmt, ap);
    va_end(ap);
}

/* The first line of libpq's error text (copied: libpq owns the buffer). */
static const char *first_line(const PGconn *c, char *buf, size_t size)
{
    snprintf(buf, size, "%s", c ? PQerrorMessage(c) : "out of memory");
    buf[strcspn(buf, "\n")] = '\0';
    return buf[0] ? buf : "no answer";
}

static void check_postgres(const char *conninfo, struct finding *f)
{
    char err[160];
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *values[] = {conninfo, "1", "payctl", NULL};
    PGconn *c = PQconnectdbParams(keys, values, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        found(f, false, "down", "%s", first_line(c, err, sizeof(err)));
        PQfinish(c);
        return;
    }
    PGresult *r = PQexec(c, "SELECT pg_is_in_recovery(),"
                            " coalesce((SELECT string_agg(application_name || ' ' || sync_state, ', ')"
                            "           FROM pg_stat_replication), ''),"
                            " coalesce((SELECT status FROM pg_stat_wal_receiver), '')");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        found(f, false, "unknown", "%s", first_line(c, err, sizeof(err)));
    } else if (strcmp(PQgetvalue(r, 0, 0), "t") == 0) {
        const char *receiver = PQgetvalue(r, 0, 2);
        found(f, strcmp(receiver, "streaming") == 0, "standby", "wal receiver: %s",
              receiver[0] ? receiver : "not running");
    } else {
        const char *standbys = PQgetvalue(r, 0, 1);
        found(f, true, "primary", "standbys: %s", standbys[0] ? standbys : "none");
    }
    PQclear(r);
    PQfinish(c);
}

/* host:port into its parts; false when malformed. */
static bool host_port(const char *where, char *host, size_t size, int *port)
{
    const char *colon = strrchr(where, ':');
    if (!colon || (size_t)(colon - where) >= size)
        return false;
    snprintf(host, size, "%.*s", (int)(colon - where), where);
    char *end;
    long p = strtol(colon + 1, &end, 10);
    *port = (int)p;
    return *end == '\0' && p > 0 && p < 65536;
}

static redisReply *redis_ask(const char *where, struct finding *f, const char *cmd)
{
    char host[256];
    int port;
    if (!host_port(where, host, sizeof(host), &port)) {
        found(f, false, "unknown", "not host:port");
        return NULL;
    }
    struct timeval tv = {TIMEOUT_MS / 1000, (TIMEOUT_MS % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err) {
        found(f, false, "down", "%s", c ? c->errstr : "no memory");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    redisReply *r = redisCommand(c, cmd);
    if (!r)
        found(f, false, "down", "%s", c->errstr);
    redisFree(c);
    return r;
}

static void check_redis(const char *where, struct finding *f)
{
    redisReply *r = redis_ask(where, f, "ROLE");
    if (!r)
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        found(f, false, "unknown", "unexpected ROLE reply");
    } else if (strcmp(r->element[0]->str, "master") == 0) {
        size_t replicas = r->elements >= 3 && r->element[2]->type == REDIS_REPLY_ARRAY
                              ? r->element[2]->elements
                              : 0;
        found(f, true, "master", "replicas: %zu", replicas);
    } else if (strcmp(r->element[0]->str, "slave") == 0 && r->elements >= 4) {
        const char *state = r->element[3]->type == REDIS_REPLY_STRING ? r->element[3]->str : "?";
        found(f, strcmp(state, "connected") == 0, "replica", "of %s:%lld, link %s",
              r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : "?",
              r->element[2]->integer, state);
    } else {
        found(f, false, r->element[0]->str, "unexpected role");
    }
    freeReplyObject(r);
}

static void check_sentinel(const char *where, struct finding *f)
{
    redisReply *r = redis_ask(where, f, "SENTINEL get-master-addr-by-name " SENTINEL_MASTER);
    if (!r)
        return;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        found(f, true, "sentinel", "master %s:%s", r->element[0]->str, r->element[1]->str);
    else
        found(f, false, "sentinel", "knows no master \"" SENTINEL_MASTER "\"");
    freeReplyObject(r);
}

struct body {
    char *data;
    size_t len;
};

static size_t on_body(char *ptr, size_t size, size_t n, void *arg)
{
    struct body *b = arg;
    size_t add = size * n;
    if (b->len + add > BODY_MAX)
        return 0;
    char *grown = realloc(b->data, b->len + add + 1);
    if (!grown)
        return 0;
    b->data = grown;
    memcpy(b->data + b->len, ptr, add);
    b->len += add;
    b->data[b->len] = '\0';
    return add;
}

/* GET url: the HTTP status (0: no answer) and the body (caller frees). */
static long http_get(const char *url, char **body)
{
    struct body b = {0};
    CURL *e = curl_easy_init();
    long status = 0;
    if (e) {
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)TIMEOUT_MS);
        curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
        if (curl_easy_perform(e) == CURLE_OK)
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(e);
    }
    *body = b.data;
    return status;
}

static void check_nats(const char *monitor, struct finding *f)
{
    char url[512], *body = NULL;
    snprintf(url, sizeof(url), "%s/healthz", monitor);
    long status = http_get(url, &body);
    free(body);
    if (status == 0) {
        found(f, false, "down", "no answer at %s", url);
        return;
    }
    /* its name (/varz), and the JetStream meta group's leader (/jsz) */
    json_t *docs[2] = {NULL, NULL};
    const char *paths[2] = {"varz", "jsz"};
    for (int i = 0; i < 2; i++) {
        snprintf(url, sizeof(url), "%s/%s", monitor, paths[i]);
        http_get(url, &body);
        docs[i] = body ? json_loads(body, 0, NULL) : NULL;
        free(body);
    }
    const char *name = NULL, *leader = NULL;
    json_unpack(docs[0], "{s:s}", "server_name", &name);
    json_unpack(docs[1], "{s:{s:s}}", "meta_cluster", "leader", &leader);
    bool leads = name && leader && strcmp(name, leader) == 0;
    found(f, status == 200, leads ? "meta leader" : "member", "%s, healthz %ld, meta leader %s",
          name ? name : "?", status, leader ? leader : "none");
    json_decref(docs[0]);
    json_decref(docs[1]);
}

static void check_payd(const char *base, struct finding *f)
{
    char url[512], *body = NULL;
    snprintf(url, sizeof(url), "%s/readyz", base);
    long status = http_get(url, &body);
    json_t *doc = body ? json_loads(body, 0, NULL) : NULL;
    free(body);
    const char *said = NULL;
    json_unpack(doc, "{s:s}", "status", &said);
    if (status == 0)
        found(f, false, "down", "no answer");
    else
        found(f, status == 200, said ? said : "?", "readyz %ld", status);
    json_decref(doc);
}

static void check_failover(const char *path, struct finding *f)
{
    json_error_t err;
    json_t *doc = json_load_file(path, 0, &err);
    const char *mode = NULL, *action = NULL;
    json_t *primary_json = NULL; /* null while no node is primary */
    json_int_t updated_ms = 0;
    if (!doc || json_unpack(doc, "{s:s, s?o, s:s, s:I}", "mode", &mode, "primary", &primary_json,
                            "last_action", &action, "updated_ms", &updated_ms) != 0) {
        found(f, false, "unknown", "cannot read %s", path);
    } else {
        /* the controller rewrites its state at every check */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        long long age_ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000 - updated_ms;
        found(f, age_ms < 10000 && strcmp(mode, "split") != 0, mode,
              "primary %s; %s; %.1f s ago",
              json_is_string(primary_json) ? json_string_value(primary_json) : "none", action,
              age_ms / 1000.0);
    }
    json_decref(doc);
}

int payctl_status(const char *topology_path)
{
    struct topology t = {0};
    int rc = ini_parse(topology_path, on_line, &t);
    if (rc != 0 || t.bad || t.n == 0) {
        if (rc != 0 && !t.bad)
            fprintf(stderr, "payctl: cannot read the topology %s (line %d)\n", topology_path, rc);
        for (int i = 0; i < t.n; i++)
            free(t.c[i].where);
        return 2;
    }
    int unhealthy = 0;
    printf("%-8s %-9s %-13s %-8s %s\n", "site", "component", "role", "health", "detail");
    for (int i = 0; i < t.n; i++) {
        struct component *c = &t.c[i];
        struct finding f = {0};
        switch (c->kind) {
        case K_POSTGRES: check_postgres(c->where, &f); break;
        case K_REDIS: check_redis(c->where, &f); break;
        case K_SENTINEL: check_sentinel(c->where, &f); break;
        case K_NATS: check_nats(c->where, &f); break;
        case K_PAYD: check_payd(c->where, &f); break;
        case K_FAILOVER: check_failover(c->where, &f); break;
        case K_COUNT:
        default: abort();
        }
        unhealthy += !f.healthy;
        printf("%-8s %-9s %-13s %-8s %s [%s]\n", c->site,
               c->kind == K_FAILOVER ? "failover" : kind_names[c->kind], f.role,
               f.healthy ? "ok" : "DOWN", f.detail, c->where);
        free(c->where);
    }
    return unhealthy ? 1 : 0;
}
