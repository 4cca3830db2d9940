/*
 * testutil_redis.h - a private redis-server for a test binary.
 *
 * The recipe, which the Python integration tests can follow as well:
 *   1. find a free port: bind a socket to 127.0.0.1 port 0, read the port
 *      the kernel chose, close it (should another process take it before
 *      Redis does, Redis exits at once and we try another port);
 *   2. start /usr/bin/redis-server on 127.0.0.1 at that port, with no
 *      persistence (--save '' --appendonly no), its files in a fresh
 *      temporary directory (--dir), and a Unix socket there as well;
 *   3. wait until PING is answered;
 *   4. stop it by its pid (kill, then waitpid) and remove the directory.
 * The child gets SIGKILL when the test process dies, so a crashed test
 * leaves no server behind. A replica (test_redis_start_replica) is started
 * the same way with --replicaof; test_redis_exec runs any other command
 * line (a sentinel) under the same rules.
 *
 * Static inline like testutil.h. Talks to the server with plain sockets
 * (inline commands), so it needs no client library.
 */
#ifndef PAYD_TESTS_UNIT_TESTUTIL_REDIS_H
#define PAYD_TESTS_UNIT_TESTUTIL_REDIS_H

#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#define TEST_REDIS_BIN "/usr/bin/redis-server"
#define TEST_REDIS_START_MS 5000

struct test_redis {
    pid_t pid; /* 0: not running */
    int port;
    const char *password; /* --requirepass (and --masterauth), or NULL */
    int replicaof;        /* a replica of the server on this port, or 0 */
    char dir[TEST_PATH_MAX];
    char url[128];                     /* redis://[:password@]127.0.0.1:PORT */
    char unix_url[TEST_PATH_MAX + 16]; /* unix:DIR/redis.sock */
};

static inline void test_redis_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* A port on 127.0.0.1 that nothing listens on right now. */
static inline int test_redis_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Sends inline commands (each ending in "\r\n") to 127.0.0.1:port and
 * reads into out until `lines` lines have come back or timeout_ms passed
 * without any. The byte count, or -1 when nothing could be sent or read. */
static inline int test_redis_send(int port, const char *cmds, int lines, char *out,
                                  size_t out_size, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int n = -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        write(fd, cmds, strlen(cmds)) == (ssize_t)strlen(cmds)) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        size_t len = 0;
        int seen = 0;
        while (seen < lines && len + 1 < out_size && poll(&pfd, 1, timeout_ms) == 1) {
            ssize_t got = read(fd, out + len, out_size - 1 - len);
            if (got <= 0)
                break;
            for (ssize_t i = 0; i < got; i++)
                seen += out[len + (size_t)i] == '\n';
            len += (size_t)got;
        }
        out[len] = '\0';
        n = len > 0 ? (int)len : -1;
    }
    close(fd);
    return n;
}

/* Runs argv, a redis-server (or sentinel) that will serve 127.0.0.1:r->port,
 * as r's process; true when it answers PING in time. */
static inline bool test_redis_exec(struct test_redis *r, const char *const *argv)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* Dies with the test process, even when the test crashes. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        execv(TEST_REDIS_BIN, (char *const *)argv);
        _exit(127);
    }
    r->pid = pid;
    char reply[256];
    for (int waited = 0; waited < TEST_REDIS_START_MS; waited += 10) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            r->pid = 0; /* exited: the port was taken, or no binary */
            return false;
        }
        /* Without the password the answer is -NOAUTH: up all the same. */
        if (test_redis_send(r->port, "PING\r\n", 1, reply, sizeof(reply), 200) > 0 &&
            (strncmp(reply, "+PONG", 5) == 0 || strncmp(reply, "-NOAUTH", 7) == 0))
            return true;
        test_redis_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    r->pid = 0;
    return false;
}

/* Starts the server on r->port; true when it answers PING in time. */
static inline bool test_redis_spawn(struct test_redis *r)
{
    char port[16], logfile[TEST_PATH_MAX + 16], sock[TEST_PATH_MAX + 16], master[16];
    snprintf(port, sizeof(port), "%d", r->port);
    snprintf(logfile, sizeof(logfile), "%s/redis.log", r->dir);
    snprintf(sock, sizeof(sock), "%s/redis.sock", r->dir);
    snprintf(master, sizeof(master), "%d", r->replicaof);
    const char *argv[32] = {TEST_REDIS_BIN, "--bind", "127.0.0.1", "--port", port,
                            "--save", "", "--appendonly", "no", "--dir", r->dir,
                            "--logfile", logfile, "--unixsocket", sock,
                            "--unixsocketperm", "700", "--daemonize", "no"};
    int argc = 0;
    while (argv[argc])
        argc++;
    if (r->password) {
        argv[argc++] = "--requirepass";
        argv[argc++] = r->password;
    }
    if (r->replicaof) {
        argv[argc++] = "--replicaof";
        argv[argc++] = "127.0.0.1";
        argv[argc++] = master;
        if (r->password) {
            argv[argc++] = "--masterauth";
            argv[argc++] = r->password;
        }
    }
    return test_redis_exec(r, argv);
}

/* Starts a server as r says (password, replicaof) in a new temporary
 * directory on a free port. Fails the test when it cannot. */
static inline void test_redis_launch(struct test_redis *r)
{
    if (access(TEST_REDIS_BIN, X_OK) != 0)
        fail_msg("%s is missing: run scripts/deps.sh", TEST_REDIS_BIN);
    test_tmpdir(r->dir);
    for (int attempt = 0; attempt < 5; attempt++) {
        r->port = test_redis_free_port();
        if (test_redis_spawn(r)) {
            const char *password = r->password;
            snprintf(r->url, sizeof(r->url), "redis://%s%s%s127.0.0.1:%d",
                     password ? ":" : "", password ? password : "", password ? "@" : "",
                     r->port);
            snprintf(r->unix_url, sizeof(r->unix_url), "unix:%s/redis.sock", r->dir);
            return;
        }
    }
    fail_msg("redis-server did not start (see %s/redis.log)", r->dir);
}

/* Starts a server, with requirepass when password is not NULL. */
static inline void test_redis_start(struct test_redis *r, const char *password)
{
    memset(r, 0, sizeof(*r));
    r->password = password;
    test_redis_launch(r);
}

/* Starts a replica of master (with its password). */
static inline void test_redis_start_replica(struct test_redis *r, const struct test_redis *master)
{
    memset(r, 0, sizeof(*r));
    r->password = master->password;
    r->replicaof = master->port;
    test_redis_launch(r);
}

/* Kills the server at once (SIGKILL) and reaps it. */
static inline void test_redis_kill(struct test_redis *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        r->pid = 0;
    }
}

/* Starts the server again on the same port and directory (empty: there is
 * no persistence). */
static inline void test_redis_restart(struct test_redis *r)
{
    test_redis_kill(r);
    for (int attempt = 0; attempt < 50; attempt++) {
        if (test_redis_spawn(r))
            return;
        test_redis_sleep_ms(100);
    }
    fail_msg("redis-server did not restart on port %d", r->port);
}

/* Kills the server and removes its directory. */
static inline void test_redis_stop(struct test_redis *r)
{
    test_redis_kill(r);
    if (r->dir[0])
        test_rmtree(r->dir);
    r->dir[0] = '\0';
}

/* Empties every database, so that tests do not see each other's keys. */
static inline void test_redis_flush(struct test_redis *r)
{
    char cmds[256], reply[256];
    snprintf(cmds, sizeof(cmds), "%s%s%sFLUSHALL\r\n", r->password ? "AUTH " : "",
             r->password ? r->password : "", r->password ? "\r\n" : "");
    assert_true(test_redis_send(r->port, cmds, r->password ? 2 : 1, reply, sizeof(reply),
                                2000) > 0);
    assert_non_null(strstr(reply, "+OK"));
    assert_null(strchr(reply, '-'));
}

/* The one server of a test binary, started for its groups of tests (as
 * cmocka group setup and teardown) and flushed before each test. */
static struct test_redis g_redis;

static inline int test_redis_group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN); /* as payd does: writes to a killed server */
    test_redis_start(&g_redis, NULL);
    return 0;
}

static inline int test_redis_group_teardown(void **state)
{
    (void)state;
    test_redis_stop(&g_redis);
    return 0;
}

static inline int test_redis_flush_each(void **state)
{
    (void)state;
    test_redis_flush(&g_redis);
    return 0;
}

#endif
