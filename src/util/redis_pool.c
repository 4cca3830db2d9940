/*
 * redis_pool.c - hiredis connections with timeouts, scripts by SHA and
 * fail-fast while Redis is down; see redis_pool.h.
 *
 * Each connection sits in a slot with its own mutex. A thread prefers one
 * slot (its own, when there are as many slots as threads), takes any free
 * one when that is busy, and waits at most the command timeout for its own
 * when all are. A slot's connection is reopened before use when it is
 * missing or older than the pool's epoch, which every failure advances.
 */
#include "util/redis_pool.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "obs/log.h"
#include "util/util.h"

#define ERROR_LOG_EVERY_MS 10000 /* error replies from scripts: one log line per period */

/* Where the server is and how to log in, parsed from the URL. */
struct target {
    bool unix_socket;
    char host[256]; /* name, address (IPv6 without brackets) or socket path */
    int port;
    int db;
    char user[128];
    char password[256];
    char where[300]; /* for logs and errors: never holds the password */
};

struct slot {
    pthread_mutex_t mu;
    redisContext *ctx; /* NULL: not connected */
    uint64_t epoch;    /* the pool's epoch when ctx was opened */
};

struct redis_pool {
    struct target t;
    char name[16];
    int64_t timeout_ms;
    const char *const *scripts;
    int nscripts;
    char sha[REDIS_POOL_MAX_SCRIPTS][41]; /* filled by the first connection, then read-only */
    redis_pool_connect_fn *on_connect;
    void *arg;
    int nslots;
    struct slot slots[REDIS_POOL_MAX_CONNS];
    _Atomic uint64_t epoch;
    _Atomic bool up;
    _Atomic int64_t next_error_log_ms;
    /* The prober: waits on cond while up, probes while down. */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
    pthread_t prober;
};

/* ---- URL ---------------------------------------------------------------- */

/* The URL itself is never echoed: it may hold a password. */
static int bad_url(char *err, size_t err_size, const char *why)
{
    snprintf(err, err_size,
             "Redis URL: %s (expected redis://[[user]:password@]host[:port][/db] or unix:/path)",
             why);
    return -1;
}

static int hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Copies s[0..len) into out, decoding %XX (passwords may hold '@' or '/'). */
static bool pct_decode(const char *s, size_t len, char *out, size_t out_size)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= len)
                return false;
            int hi = hex_digit(s[i + 1]), lo = hex_digit(s[i + 2]);
            if (hi < 0 || lo < 0)
                return false;
            c = hi * 16 + lo;
            i += 2;
        }
        if (n + 1 >= out_size || c == 0)
            return false;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return true;
}

/* Reads decimal digits at *s (at least one) up to max. */
static bool parse_uint(const char **s, long max, long *out)
{
    if (!isdigit((unsigned char)**s))
        return false;
    long v = 0;
    while (isdigit((unsigned char)**s)) {
        v = v * 10 + (**s - '0');
        if (v > max)
            return false;
        (*s)++;
    }
    *out = v;
    return true;
}

/* "password" or "user:password", percent-encoded. */
static bool parse_userinfo(const char *s, size_t len, struct target *t)
{
    const char *colon = memchr(s, ':', len);
    if (!colon)
        return pct_decode(s, len, t->password, sizeof(t->password));
    return pct_decode(s, (size_t)(colon - s), t->user, sizeof(t->user)) &&
           pct_decode(colon + 1, len - (size_t)(colon - s) - 1, t->password,
                      sizeof(t->password));
}

static int parse_tcp(const char *s, struct target *t, char *err, size_t err_size)
{
    const char *at = strrchr(s, '@');
    if (at) {
        if (!parse_userinfo(s, (size_t)(at - s), t))
            return bad_url(err, err_size, "bad user or password");
        s = at + 1;
    }
    bool v6 = *s == '[';
    size_t len;
    if (v6) {
        const char *close = strchr(++s, ']');
        if (!close)
            return bad_url(err, err_size, "unclosed [ in the host");
        len = (size_t)(close - s);
    } else {
        len = strcspn(s, ":/");
    }
    if (len == 0 || len >= sizeof(t->host))
        return bad_url(err, err_size, "no host, or a host too long");
    memcpy(t->host, s, len);
    t->host[len] = '\0';
    s += len + (v6 ? 1 : 0);
    long v;
    if (*s == ':') {
        s++;
        if (!parse_uint(&s, 65535, &v) || v == 0)
            return bad_url(err, err_size, "bad port");
        t->port = (int)v;
    }
    if (*s == '/' && *++s) {
        if (!parse_uint(&s, 1000000, &v))
            return bad_url(err, err_size, "bad database number");
        t->db = (int)v;
    }
    if (*s)
        return bad_url(err, err_size, "unexpected text after the host");
    snprintf(t->where, sizeof(t->where), v6 ? "[%s]:%d" : "%s:%d", t->host, t->port);
    if (t->db) {
        size_t n = strlen(t->where);
        snprintf(t->where + n, sizeof(t->where) - n, "/%d", t->db);
    }
    return 0;
}

static int parse_url(const char *url, struct target *t, char *err, size_t err_size)
{
    memset(t, 0, sizeof(*t));
    t->port = 6379;
    if (strncmp(url, "redis://", 8) == 0)
        return parse_tcp(url + 8, t, err, err_size);
    if (strncmp(url, "unix:", 5) != 0)
        return bad_url(err, err_size, "unknown scheme");
    const char *path = url + 5;
    if (strncmp(path, "///", 3) == 0) /* unix:///path */
        path += 2;
    if (path[0] != '/' || strlen(path) >= sizeof(t->host))
        return bad_url(err, err_size, "the socket path must be absolute and short");
    t->unix_socket = true;
    snprintf(t->host, sizeof(t->host), "%s", path);
    snprintf(t->where, sizeof(t->where), "unix:%s", path);
    return 0;
}

/* ---- one connection ----------------------------------------------------- */

static struct timeval ms_to_timeval(int64_t ms)
{
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

/* Frees r; true when it was the status reply "OK". */
static bool reply_ok(redisContext *c, redisReply *r, const char *what, char *err, size_t err_size)
{
    bool ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0;
    if (!ok)
        snprintf(err, err_size, "%s: %s", what,
                 !r ? c->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    if (r)
        freeReplyObject(r);
    return ok;
}

static bool script_load(redis_pool *p, redisContext *c, int i, char *err, size_t err_size)
{
    const char *argv[] = {"SCRIPT", "LOAD", p->scripts[i]};
    redisReply *r = redisCommandArgv(c, 3, argv, NULL);
    bool ok = r && r->type == REDIS_REPLY_STRING && r->len == 40;
    if (ok && !p->sha[i][0])
        memcpy(p->sha[i], r->str, 41);
    if (!ok)
        snprintf(err, err_size, "SCRIPT LOAD: %s",
                 !r ? c->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    if (r)
        freeReplyObject(r);
    return ok;
}

/* Connects, logs in, selects the database, loads the scripts and runs the
 * owner's on_connect. NULL with the reason in err. */
static redisContext *conn_open(redis_pool *p, char *err, size_t err_size)
{
    struct timeval tv = ms_to_timeval(p->timeout_ms);
    redisContext *c = p->t.unix_socket ? redisConnectUnixWithTimeout(p->t.host, tv)
                                       : redisConnectWithTimeout(p->t.host, p->t.port, tv);
    if (!c) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    if (c->err || redisSetTimeout(c, tv) != REDIS_OK) {
        snprintf(err, err_size, "connect: %s", c->errstr);
        goto out_free;
    }
    if (!p->t.unix_socket)
        redisEnableKeepAlive(c);
    if (p->t.password[0]) {
        const char *argv[3] = {"AUTH"};
        int argc = 1;
        if (p->t.user[0]) /* Redis 6 ACL user; without one AUTH takes the password alone */
            argv[argc++] = p->t.user;
        argv[argc++] = p->t.password;
        if (!reply_ok(c, redisCommandArgv(c, argc, argv, NULL), "AUTH", err, err_size))
            goto out_free;
    }
    if (p->t.db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", p->t.db);
        const char *argv[] = {"SELECT", db};
        if (!reply_ok(c, redisCommandArgv(c, 2, argv, NULL), "SELECT", err, err_size))
            goto out_free;
    }
    for (int i = 0; i < p->nscripts; i++)
        if (!script_load(p, c, i, err, err_size))
            goto out_free;
    if (p->on_connect && p->on_connect(p->arg, p, c, err, err_size) != 0)
        goto out_free;
    return c;

out_free:
    redisFree(c);
    return NULL;
}

/* ---- up and down -------------------------------------------------------- */

static void mark_down(redis_pool *p, const char *why)
{
    atomic_fetch_add(&p->epoch, 1);
    if (atomic_exchange(&p->up, false))
        log_warn("redis_down", "redis", p->t.where, "client", p->name, "error", why, NULL);
    pthread_mutex_lock(&p->mu);
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->mu);
}

/* While the pool is down: try to connect at once, then once a
 * REDIS_POOL_RETRY_MS until it works. */
static void *prober_main(void *arg)
{
    redis_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        if (atomic_load(&p->up)) {
            pthread_cond_wait(&p->cond, &p->mu);
            continue;
        }
        pthread_mutex_unlock(&p->mu);
        char err[256];
        redisContext *c = conn_open(p, err, sizeof(err));
        pthread_mutex_lock(&p->mu);
        if (c) {
            redisFree(c);
            atomic_store(&p->up, true);
            log_info("redis_up", "redis", p->t.where, "client", p->name, NULL);
            continue;
        }
        struct timespec until;
        clock_deadline(REDIS_POOL_RETRY_MS, &until);
        while (!p->stop && pthread_cond_timedwait(&p->cond, &p->mu, &until) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- slots -------------------------------------------------------------- */

static _Thread_local int tl_slot_hint = -1;
static atomic_int g_next_hint;

/* A locked slot, or NULL when none came free within the command timeout. */
static struct slot *slot_take(redis_pool *p)
{
    if (tl_slot_hint < 0)
        tl_slot_hint = atomic_fetch_add(&g_next_hint, 1) & 0xffff;
    int first = tl_slot_hint % p->nslots;
    for (int i = 0; i < p->nslots; i++) {
        struct slot *s = &p->slots[(first + i) % p->nslots];
        if (pthread_mutex_trylock(&s->mu) == 0)
            return s;
    }
    struct timespec until;
    clock_deadline(p->timeout_ms, &until);
    struct slot *s = &p->slots[first];
    return pthread_mutex_timedlock(&s->mu, &until) == 0 ? s : NULL;
}

/* Opens the slot's connection when it has none or an outdated one. */
static bool slot_ready(redis_pool *p, struct slot *s)
{
    uint64_t epoch = atomic_load(&p->epoch);
    if (s->ctx && s->epoch == epoch)
        return true;
    if (s->ctx) {
        redisFree(s->ctx);
        s->ctx = NULL;
    }
    char err[256];
    s->ctx = conn_open(p, err, sizeof(err));
    if (!s->ctx) {
        mark_down(p, err);
        return false;
    }
    s->epoch = epoch;
    return true;
}

/* Error replies that mean "this server cannot serve us now" (a replica
 * after a failover, a server loading its data): treated as a broken
 * connection, not as the script's answer. */
static bool server_unavailable(const redisReply *r)
{
    static const char *const prefixes[] = {"READONLY", "LOADING", "MASTERDOWN", "NOAUTH"};
    if (r->type != REDIS_REPLY_ERROR)
        return false;
    for (size_t i = 0; i < ARRAY_LEN(prefixes); i++)
        if (strncmp(r->str, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

static void log_error_reply(redis_pool *p, const redisReply *r)
{
    int64_t now_ms = clock_mono_ms();
    int64_t next_ms = atomic_load(&p->next_error_log_ms);
    if (now_ms < next_ms ||
        !atomic_compare_exchange_strong(&p->next_error_log_ms, &next_ms,
                                        now_ms + ERROR_LOG_EVERY_MS))
        return;
    log_error("redis_error_reply", "redis", p->t.where, "client", p->name, "error", r->str, NULL);
}

/* Runs a script (script >= 0) or a plain command on a pooled connection. */
static redisReply *run(redis_pool *p, int script, int nkeys, int argc, const char *const *argv)
{
    if (!atomic_load(&p->up))
        return NULL;
    struct slot *s = slot_take(p);
    if (!s)
        return NULL;
    redisReply *r = NULL;
    if (atomic_load(&p->up) && slot_ready(p, s)) {
        r = script >= 0 ? redis_pool_eval_on(p, s->ctx, script, nkeys, argc, argv)
                        : redisCommandArgv(s->ctx, argc, (const char **)argv, NULL);
        if (!r || server_unavailable(r)) {
            char why[256];
            snprintf(why, sizeof(why), "%s", r ? r->str : s->ctx->errstr);
            if (r)
                freeReplyObject(r);
            r = NULL;
            redisFree(s->ctx);
            s->ctx = NULL;
            mark_down(p, why);
        } else if (r->type == REDIS_REPLY_ERROR) {
            log_error_reply(p, r);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* ---- public ------------------------------------------------------------- */

redisReply *redis_pool_eval_on(redis_pool *p, redisContext *c, int script, int nkeys, int argc,
                               const char *const *argv)
{
    PAYD_ASSERT(script >= 0 && script < p->nscripts);
    PAYD_ASSERT(argc >= nkeys && nkeys >= 0 && argc <= REDIS_POOL_MAX_ARGS);
    const char *full[REDIS_POOL_MAX_ARGS + 3];
    char nkeys_s[12];
    snprintf(nkeys_s, sizeof(nkeys_s), "%d", nkeys);
    full[0] = "EVALSHA";
    full[1] = p->sha[script];
    full[2] = nkeys_s;
    memcpy(full + 3, argv, (size_t)argc * sizeof(*argv));
    redisReply *r = redisCommandArgv(c, argc + 3, full, NULL);
    /* The server lost its scripts (SCRIPT FLUSH, a failover): load it again. */
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(r);
        char err[256];
        if (!script_load(p, c, script, err, sizeof(err)))
            return NULL;
        r = redisCommandArgv(c, argc + 3, full, NULL);
    }
    return r;
}

redisReply *redis_pool_eval(redis_pool *p, int script, int nkeys, int argc,
                            const char *const *argv)
{
    return run(p, script, nkeys, argc, argv);
}

redisReply *redis_pool_command(redis_pool *p, int argc, const char *const *argv)
{
    return run(p, -1, 0, argc, argv);
}

redisContext *redis_pool_open(redis_pool *p, char *err, size_t err_size)
{
    char why[256];
    redisContext *c = conn_open(p, why, sizeof(why));
    if (!c)
        snprintf(err, err_size, "redis %s: %s", p->t.where, why);
    return c;
}

const char *redis_pool_where(const redis_pool *p)
{
    return p->t.where;
}

bool redis_pool_up(redis_pool *p)
{
    return atomic_load(&p->up);
}

redis_pool *redis_pool_new(const struct redis_pool_config *cfg, char *err, size_t err_size)
{
    PAYD_ASSERT(cfg->connections >= 1 && cfg->connections <= REDIS_POOL_MAX_CONNS);
    PAYD_ASSERT(cfg->nscripts >= 0 && cfg->nscripts <= REDIS_POOL_MAX_SCRIPTS);
    PAYD_ASSERT(cfg->timeout_ms > 0);
    redis_pool *p = xcalloc(1, sizeof(*p));
    if (parse_url(cfg->url, &p->t, err, err_size) != 0)
        goto out_free;
    snprintf(p->name, sizeof(p->name), "%s", cfg->name);
    p->timeout_ms = cfg->timeout_ms;
    p->scripts = cfg->scripts;
    p->nscripts = cfg->nscripts;
    p->on_connect = cfg->on_connect;
    p->arg = cfg->arg;
    p->nslots = cfg->connections;
    /* The first connection fills in the scripts' SHAs before any other
     * thread can read them. */
    p->slots[0].ctx = redis_pool_open(p, err, err_size);
    if (!p->slots[0].ctx)
        goto out_free;
    for (int i = 0; i < p->nslots; i++)
        pthread_mutex_init(&p->slots[i].mu, NULL);
    atomic_init(&p->up, true);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cond, NULL);
    int rc = pthread_create(&p->prober, NULL, prober_main, p);
    PAYD_ASSERT(rc == 0);
    return p;

out_free:
    explicit_bzero(&p->t, sizeof(p->t));
    free(p);
    return NULL;
}

void redis_pool_free(redis_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->prober, NULL);
    for (int i = 0; i < p->nslots; i++) {
        if (p->slots[i].ctx)
            redisFree(p->slots[i].ctx);
        pthread_mutex_destroy(&p->slots[i].mu);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cond);
    explicit_bzero(&p->t, sizeof(p->t));
    free(p);
}
