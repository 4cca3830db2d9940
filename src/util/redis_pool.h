/*
 * redis_pool.h - a small pool of hiredis connections to one Redis server
 * (or to the master that Redis Sentinel names), shared by the Redis lock
 * backend and the Redis rate limiter.
 *
 * The pool owns what both need and neither should repeat: parsing the URL,
 * connecting with a timeout on connect and on every command, AUTH and
 * SELECT, loading Lua scripts once per connection and running them by SHA
 * (reloading on NOSCRIPT), and failing fast while Redis is down.
 *
 * URLs:
 *   redis://[[user]:password@]host[:port][/db]        one server (port 6379)
 *   unix:/path                                        one server's socket
 *   redis-sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db]
 * The last names up to REDIS_POOL_MAX_SENTINELS Redis Sentinels (port 26379
 * by default) and the master they watch (letters, digits, '-', '_', '.').
 * Every new connection asks the sentinels in turn, starting with the one
 * that answered last, SENTINEL get-master-addr-by-name, connects to the
 * address the first answer names and checks that the server there says
 * ROLE master (one demoted, that the sentinels have not caught up with,
 * fails the connect). The user and password are for the master; the
 * sentinels are asked without AUTH. An ACL user needs ROLE, besides the
 * commands and scripts of its owner. Hosts may be IPv6 in brackets; user
 * and password are percent-encoded.
 *
 * Following a failover: a broken connection, or an error reply that says
 * the server cannot serve now (READONLY from a master demoted to replica,
 * LOADING, MASTERDOWN, NOAUTH), counts as a failure, below, so the pool
 * asks the sentinels again when it reconnects. A new connection that
 * reaches another master than the last one retires the connections to the
 * old one and logs the switch (redis_master_switched).
 *
 * Failing fast: the first failed connect or command marks the pool down and
 * every call after it returns NULL at once, at the cost of reading a flag.
 * A prober thread tries to connect at once and then at most once a
 * REDIS_POOL_RETRY_MS, and marks the pool up when it gets through; callers
 * never wait for a connect to a server known to be down. A failure also
 * retires every other connection (they are reopened before their next use),
 * so that after a Redis restart one call fails, not one per connection.
 *
 * Nothing the pool logs or writes into an error message contains the
 * password: the server is named by redis_pool_where(). The process must
 * ignore SIGPIPE (payd does), since a write to a dead server raises it.
 */
#ifndef PAYD_UTIL_REDIS_POOL_H
#define PAYD_UTIL_REDIS_POOL_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REDIS_POOL_MAX_CONNS 16
#define REDIS_POOL_MAX_SCRIPTS 8
#define REDIS_POOL_MAX_ARGS 16 /* keys and arguments of one script call */
#define REDIS_POOL_RETRY_MS 1000
#define REDIS_POOL_MAX_SENTINELS 8

typedef struct redis_pool redis_pool;

/* Runs on every new connection, after AUTH, SELECT and the script loads and
 * before the connection is used: 0, or -1 with a reason in err (then the
 * connection is dropped as if the connect had failed). */
typedef int redis_pool_connect_fn(void *arg, redis_pool *p, redisContext *c, char *err,
                                  size_t err_size);

struct redis_pool_config {
    const char *url;
    const char *name;        /* who uses it, for logs: "lock", "limit" */
    int connections;         /* 1 .. REDIS_POOL_MAX_CONNS */
    int64_t timeout_ms;      /* connect and each command */
    const char *const *scripts; /* Lua sources, indexed by the caller's enum; static */
    int nscripts;
    redis_pool_connect_fn *on_connect; /* may be NULL */
    void *arg;
};

/* Parses the URL and opens one connection. NULL with a message in err when
 * the URL is bad or Redis cannot be reached. */
redis_pool *redis_pool_new(const struct redis_pool_config *cfg, char *err, size_t err_size);

/* Stops the prober and closes every connection. No other thread may be
 * using the pool. redis_pool_free(NULL) does nothing. */
void redis_pool_free(redis_pool *p);

/* The server as "host:port[/db]", "unix:/path" or, with sentinels,
 * "sentinel:master[/db] (host:port,...)"; without credentials. */
const char *redis_pool_where(const redis_pool *p);

/* False while the pool is marked down. */
bool redis_pool_up(redis_pool *p);

/* Runs script number `script` with argc strings, the first nkeys of them
 * keys. Returns the reply (the caller frees it with freeReplyObject), which
 * may be an error reply from the script; or NULL when Redis could not be
 * asked (down, timeout, broken connection). Thread-safe. */
redisReply *redis_pool_eval(redis_pool *p, int script, int nkeys, int argc,
                            const char *const *argv);

/* Runs one plain command (argv[0] is its name); as redis_pool_eval. */
redisReply *redis_pool_command(redis_pool *p, int argc, const char *const *argv);

/* Runs a script on a given connection (from an on_connect callback, or one
 * from redis_pool_open). NULL when the connection failed. */
redisReply *redis_pool_eval_on(redis_pool *p, redisContext *c, int script, int nkeys, int argc,
                               const char *const *argv);

/* A new connection outside the pool, owned by the caller (redisFree), for a
 * long-lived use such as a pub/sub subscription. NULL with the reason in
 * err when Redis cannot be reached; does not mark the pool down. */
redisContext *redis_pool_open(redis_pool *p, char *err, size_t err_size);

#endif
