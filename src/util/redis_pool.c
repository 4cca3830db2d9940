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
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "obs/log.h"
#include "util/util.h"

#define ERROR_LOG_EVERY_MS 10000 /* error replies from scripts: one log line per period */
#define ERR_MAX 512              /* why a connect or a command failed */
#define ADDR_MAX 272             /* "[host]:port" */

#define SENTINEL_PORT 26379
#define MASTER_NAME_MAX 64
#define MASTER_NAME_CHARS                                                                  \
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
#define STR_(x) #x
#define STR(x) STR_(x)

/* A host (name, address with IPv6 without brackets, or socket path) and port. */
struct endpoint {
    char host[256];
    int port;
};

/* Where the server is and how to log in, parsed from the URL: one server
 * (redis://, unix:), or sentinels and the name of the master they watch
 * (redis-sentinel://, nsentinels > 0). */
struct target {
    bool unix_socket;
    struct endpoint server;
    int nsentinels;
    struct endpoint sentinels[REDIS_POOL_MAX_SENTINELS];
    char master_name[MASTER_NAME_MAX];
    int db;
    char user[128];
    char password[256];
    char where[512]; /* for logs and errors: never holds the password */
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
    _Atomic unsigned sentinel_next; /* the sentinel asked first (modulo nsentinels) */
    /* The prober: waits on cond while up, probes while down. */
    pthread_mutex_t mu; /* guards stop and master */
    pthread_cond_t cond;
    bool stop;
    pthread_t prober;
    char master[ADDR_MAX]; /* with sentinels: the master last connected to, "" before */
};

/* ---- URL ---------------------------------------------------------------- */

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

/* "host:port", or "[host]:port" for IPv6, into out (ADDR_MAX bytes hold any). */
static void endpoint_name(const struct endpoint *e, char *out, size_t out_size)
{
    snprintf(out, out_size, strchr(e->host, ':') ? "[%s]:%d" : "%s:%d", e->host, e->port);
}

/* Appends to t->where as far as it has room. */
__attribute__((format(printf, 2, 3))) static void where_add(struct target *t, const char *fmt,
                                                             ...)
{
    size_t n = strlen(t->where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->where + n, sizeof(t->where) - n, fmt, ap);
    va_end(ap);
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

/* The parsers below return NULL, or why the URL is bad. */

/* "[userinfo@]" at the front of *s (the last '@' ends it), moving *s past it. */
static const char *parse_login(const char **s, struct target *t)
{
    const char *at = strrchr(*s, '@');
    if (!at)
        return NULL;
    bool ok = parse_userinfo(*s, (size_t)(at - *s), t);
    *s = at + 1;
    return ok ? NULL : "bad user or password";
}

/* "host[:port]" or "[v6host][:port]" at *s, moving *s past it; the port
 * is left as it is when absent. */
static const char *parse_endpoint(const char **s, struct endpoint *e)
{
    const char *p = *s;
    bool v6 = *p == '[';
    size_t len;
    if (v6) {
        const char *close = strchr(++p, ']');
        if (!close)
            return "unclosed [ in a host";
        len = (size_t)(close - p);
    } else {
        len = strcspn(p, ":/,");
    }
    if (len == 0 || len >= sizeof(e->host))
        return "no host, or a host too long";
    memcpy(e->host, p, len);
    e->host[len] = '\0';
    p += len + (v6 ? 1 : 0);
    long v;
    if (*p == ':') {
        p++;
        if (!parse_uint(&p, 65535, &v) || v == 0)
            return "bad port";
        e->port = (int)v;
    }
    *s = p;
    return NULL;
}

/* "[/db]" and the end of the URL. */
static const char *parse_db(const char *s, struct target *t)
{
    long v;
    if (*s == '/' && *++s) {
        if (!parse_uint(&s, 1000000, &v))
            return "bad database number";
        t->db = (int)v;
    }
    return *s ? "unexpected text at the end" : NULL;
}

/* After "redis://". */
static const char *parse_tcp(const char *s, struct target *t)
{
    const char *why;
    t->server.port = 6379;
    if ((why = parse_login(&s, t)) || (why = parse_endpoint(&s, &t->server)) ||
        (why = parse_db(s, t)))
        return why;
    endpoint_name(&t->server, t->where, sizeof(t->where));
    if (t->db)
        where_add(t, "/%d", t->db);
    return NULL;
}

/* After "redis-sentinel://": "[login@]host[:port][,host[:port]...]/master[/db]". */
static const char *parse_sentinel(const char *s, struct target *t)
{
    const char *why = parse_login(&s, t);
    if (why)
        return why;
    if (*s == '\0' || *s == '/')
        return "no sentinel";
    for (;;) {
        if (t->nsentinels == REDIS_POOL_MAX_SENTINELS)
            return "more than " STR(REDIS_POOL_MAX_SENTINELS) " sentinels";
        struct endpoint *e = &t->sentinels[t->nsentinels++];
        e->port = SENTINEL_PORT;
        if ((why = parse_endpoint(&s, e)))
            return why;
        if (*s != ',')
            break;
        s++;
    }
    if (*s == '\0')
        return "no master name";
    if (*s != '/')
        return "unexpected text after a sentinel";
    size_t len = strspn(++s, MASTER_NAME_CHARS);
    if (len == 0 && (*s == '\0' || *s == '/'))
        return "no master name";
    if (len >= sizeof(t->master_name) || (s[len] && s[len] != '/'))
        return "bad or too long master name (letters, digits, '-', '_', '.')";
    memcpy(t->master_name, s, len);
    if ((why = parse_db(s + len, t)))
        return why;
    where_add(t, "sentinel:%s", t->master_name);
    if (t->db)
        where_add(t, "/%d", t->db);
    for (int i = 0; i < t->nsentinels; i++) {
        char name[ADDR_MAX];
        endpoint_name(&t->sentinels[i], name, sizeof(name));
        where_add(t, "%s%s", i ? "," : " (", name);
    }
    where_add(t, ")");
    return NULL;
}

/* After "unix:". */
static const char *parse_unix(const char *path, struct target *t)
{
    if (strncmp(path, "///", 3) == 0) /* unix:///path */
        path += 2;
    if (path[0] != '/' || strlen(path) >= sizeof(t->server.host))
        return "the socket path must be absolute and short";
    t->unix_socket = true;
    snprintf(t->server.host, sizeof(t->server.host), "%s", path);
    snprintf(t->where, sizeof(t->where), "unix:%s", path);
    return NULL;
}

/* The URL itself is never echoed: it may hold a password. */
static int parse_url(const char *url, struct target *t, char *err, size_t err_size)
{
    static const struct {
        const char *prefix;
        const char *(*parse)(const char *s, struct target *t);
        const char *syntax;
    } schemes[] = {
        {"redis://", parse_tcp, "redis://[[user]:password@]host[:port][/db]"},
        {"redis-sentinel://", parse_sentinel,
         "redis-sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db]"},
        {"unix:", parse_unix, "unix:/path"},
    };
    memset(t, 0, sizeof(*t));
    for (size_t i = 0; i < ARRAY_LEN(schemes); i++) {
        size_t len = strlen(schemes[i].prefix);
        if (strncmp(url, schemes[i].prefix, len) != 0)
            continue;
        const char *why = schemes[i].parse(url + len, t);
        if (!why)
            return 0;
        snprintf(err, err_size, "Redis URL: %s (expected %s)", why, schemes[i].syntax);
        return -1;
    }
    snprintf(err, err_size,
             "Redis URL: unknown scheme (expected redis://, redis-sentinel:// or unix:)");
    return -1;
}

/* ---- one connection ----------------------------------------------------- */

static struct timeval ms_to_timeval(int64_t ms)
{
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

/* Why a command failed: the connection's error, or the error reply. */
static const char *failure(const redisContext *c, const redisReply *r)
{
    return !r ? c->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply";
}

/* Frees r; true when it was the status reply "OK". */
static bool reply_ok(redisContext *c, redisReply *r, const char *what, char *err, size_t err_size)
{
    bool ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0;
    if (!ok)
        snprintf(err, err_size, "%s: %s", what, failure(c, r));
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
        snprintf(err, err_size, "SCRIPT LOAD: %s", failure(c, r));
    if (r)
        freeReplyObject(r);
    return ok;
}

/* A connection with the pool's timeouts, not yet logged in. NULL with the
 * reason in err. */
static redisContext *connect_to(redis_pool *p, const struct endpoint *e, bool unix_socket,
                                char *err, size_t err_size)
{
    struct timeval tv = ms_to_timeval(p->timeout_ms);
    redisContext *c = unix_socket ? redisConnectUnixWithTimeout(e->host, tv)
                                  : redisConnectWithTimeout(e->host, e->port, tv);
    if (!c) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    if (c->err || redisSetTimeout(c, tv) != REDIS_OK) {
        snprintf(err, err_size, "connect: %s", c->errstr);
        redisFree(c);
        return NULL;
    }
    if (!unix_socket)
        redisEnableKeepAlive(c);
    return c;
}

/* A sentinel's answer, the master's address and port as text, into m. */
static bool parse_address(const char *host, const char *port, struct endpoint *m)
{
    long v;
    if (!host[0] || strlen(host) >= sizeof(m->host) || !parse_uint(&port, 65535, &v) || *port ||
        v == 0)
        return false;
    snprintf(m->host, sizeof(m->host), "%s", host);
    m->port = (int)v;
    return true;
}

/* Asks one sentinel where the master is: true with its address in m. */
static bool ask_sentinel(redis_pool *p, const struct endpoint *s, struct endpoint *m, char *err,
                         size_t err_size)
{
    char why[160];
    bool ok = false;
    redisContext *c = connect_to(p, s, false, why, sizeof(why));
    if (c) {
        const char *argv[] = {"SENTINEL", "get-master-addr-by-name", p->t.master_name};
        redisReply *r = redisCommandArgv(c, 3, argv, NULL);
        /* ["ip", "port"], or nil when it watches no master of that name */
        ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
             r->element[0]->type == REDIS_REPLY_STRING &&
             r->element[1]->type == REDIS_REPLY_STRING &&
             parse_address(r->element[0]->str, r->element[1]->str, m);
        if (!ok)
            snprintf(why, sizeof(why), "%s",
                     r && r->type == REDIS_REPLY_NIL ? "does not know the master"
                                                     : failure(c, r));
        if (r)
            freeReplyObject(r);
        redisFree(c);
    }
    if (!ok) {
        char name[ADDR_MAX];
        endpoint_name(s, name, sizeof(name));
        snprintf(err, err_size, "sentinel %s: %s", name, why);
    }
    return ok;
}

/* Asks the sentinels in turn, from p->sentinel_next, where the master is,
 * and connects to it: its address in m, the sentinel that named it in
 * *asked (-1 when none answered). NULL with the reason in err: the last
 * sentinel's when none answered. */
static redisContext *master_connect(redis_pool *p, struct endpoint *m, int *asked, char *err,
                                    size_t err_size)
{
    unsigned first = atomic_load(&p->sentinel_next);
    *asked = -1;
    for (int i = 0; i < p->t.nsentinels; i++) {
        int k = (int)((first + (unsigned)i) % (unsigned)p->t.nsentinels);
        if (!ask_sentinel(p, &p->t.sentinels[k], m, err, err_size))
            continue;
        *asked = k;
        char why[160], name[ADDR_MAX];
        redisContext *c = connect_to(p, m, false, why, sizeof(why));
        if (!c) {
            endpoint_name(m, name, sizeof(name));
            snprintf(err, err_size, "master %s: %s", name, why);
        }
        return c;
    }
    return NULL;
}

/* True when the server says ROLE master; a demoted one says "slave". */
static bool role_master(redisContext *c, const struct endpoint *m, char *err, size_t err_size)
{
    redisReply *r = redisCommand(c, "ROLE");
    bool array = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                 r->element[0]->type == REDIS_REPLY_STRING;
    const char *role = array ? r->element[0]->str : failure(c, r);
    bool ok = array && strcmp(role, "master") == 0;
    if (!ok) {
        char name[ADDR_MAX];
        endpoint_name(m, name, sizeof(name));
        snprintf(err, err_size, "master %s: ROLE: %s", name, role);
    }
    if (r)
        freeReplyObject(r);
    return ok;
}

/* Notes the master a new connection reached. Another one than before is a
 * switch: it is logged, and the connections to the old one are retired. */
static void note_master(redis_pool *p, const struct endpoint *m)
{
    char now[sizeof(p->master)], was[sizeof(p->master)];
    endpoint_name(m, now, sizeof(now));
    pthread_mutex_lock(&p->mu);
    memcpy(was, p->master, sizeof(was));
    memcpy(p->master, now, sizeof(now));
    pthread_mutex_unlock(&p->mu);
    if (strcmp(was, now) == 0)
        return;
    if (!was[0]) {
        log_info("redis_master", "redis", p->t.where, "client", p->name, "master", now, NULL);
        return;
    }
    atomic_fetch_add(&p->epoch, 1);
    log_warn("redis_master_switched", "redis", p->t.where, "client", p->name, "master", now,
             "previous", was, NULL);
}

/* Connects (with sentinels, to the master they name, which must say it is
 * one), logs in, selects the database, loads the scripts and runs the
 * owner's on_connect. NULL with the reason in err; *named false when no
 * sentinel named a master. */
static redisContext *conn_open_once(redis_pool *p, bool *named, char *err, size_t err_size)
{
    struct endpoint master;
    int asked = -1;
    redisContext *c = p->t.nsentinels
                          ? master_connect(p, &master, &asked, err, err_size)
                          : connect_to(p, &p->t.server, p->t.unix_socket, err, err_size);
    *named = asked >= 0;
    if (!c)
        goto out_next_sentinel;
    if (p->t.password[0]) {
        const char *argv[3] = {"AUTH"};
        int argc = 1;
        if (p->t.user[0]) /* Redis 6 ACL user; without one AUTH takes the password alone */
            argv[argc++] = p->t.user;
        argv[argc++] = p->t.password;
        if (!reply_ok(c, redisCommandArgv(c, argc, argv, NULL), "AUTH", err, err_size))
            goto out_free;
    }
    if (p->t.nsentinels && !role_master(c, &master, err, err_size))
        goto out_free;
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
    if (p->t.nsentinels) {
        atomic_store(&p->sentinel_next, (unsigned)asked);
        note_master(p, &master);
    }
    return c;

out_free:
    redisFree(c);
out_next_sentinel:
    /* The master a sentinel named would not do (down, demoted): ask another
     * sentinel first next time, so that a stale one is not asked for ever. */
    if (asked >= 0)
        atomic_store(&p->sentinel_next, (unsigned)asked + 1);
    return NULL;
}

/* conn_open_once; with sentinels, a master that will not do (a sentinel
 * restarted with an old view names a demoted master until the others tell
 * it better) sends the same attempt on to the next sentinel, each asked at
 * most once; none answering ends it at once. */
static redisContext *conn_open(redis_pool *p, char *err, size_t err_size)
{
    int tries = p->t.nsentinels > 0 ? p->t.nsentinels : 1;
    redisContext *c = NULL;
    bool named = true;
    for (int i = 0; i < tries && !c && named; i++)
        c = conn_open_once(p, &named, err, err_size);
    return c;
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
        char err[ERR_MAX];
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
    char err[ERR_MAX];
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
    char why[ERR_MAX];
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
    pthread_mutex_init(&p->mu, NULL); /* the first connection notes its master */
    /* The first connection fills in the scripts' SHAs before any other
     * thread can read them. */
    p->slots[0].ctx = redis_pool_open(p, err, err_size);
    if (!p->slots[0].ctx)
        goto out_destroy_mu;
    for (int i = 0; i < p->nslots; i++)
        pthread_mutex_init(&p->slots[i].mu, NULL);
    atomic_init(&p->up, true);
    pthread_cond_init(&p->cond, NULL);
    int rc = pthread_create(&p->prober, NULL, prober_main, p);
    PAYD_ASSERT(rc == 0);
    return p;

out_destroy_mu:
    pthread_mutex_destroy(&p->mu);
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
