/*
 * payfailover - the failover controller of payd's two-site PostgreSQL
 * (docs/DR.md).
 *
 * Two nodes, each named for its site (the name is also its
 * application_name as a standby), one a primary and one a hot standby fed
 * by streaming replication. Every interval the controller asks both what
 * they are, and keeps one state:
 *
 *   SYNC   the primary's synchronous_standby_names is the standby's name
 *          and the standby streams as its synchronous standby: a commit is
 *          acknowledged only once the standby has it, so the standby holds
 *          every acknowledged payment (RPO = 0).
 *   ALONE  the primary commits without waiting: the standby is down,
 *          fenced, or catching up. The standby may miss commits, so the
 *          controller never promotes it on its own in this state.
 *   SPLIT  both nodes say they are primaries: nothing is done, loudly (the
 *          fence is meant to make this impossible).
 *
 * What it does:
 *   - SYNC is entered when the standby streams: the controller names it in
 *     the primary's synchronous_standby_names (ALTER SYSTEM, reload) and
 *     waits for the primary to report it as 'sync'.
 *   - The standby missing for `failures` checks in SYNC: the primary is
 *     told to commit alone (ALONE). Commits would block otherwise. This
 *     gives up RPO = 0 only while the standby is away, and that is why
 *     ALONE never fails over.
 *   - The primary missing for `failures` checks in SYNC, the standby up:
 *     the old primary is fenced first (the fence command must succeed: in
 *     the local topology it kills the server and leaves standby.signal in
 *     its data directory, so that it can only ever start again read-only;
 *     elsewhere it is the site's power or network fence), then the standby
 *     is promoted (pg_promote), and only then told to commit alone, since
 *     nothing else can take writes. The roles swap; state ALONE until the
 *     old primary is rebuilt as a standby (deploy/dr/rebuild) and streams.
 *
 *   - A primary found naming a standby that does not stream while the state
 *     is ALONE (the controller restarted, or a failover's last step
 *     failed): the absent node is fenced, then the primary commits alone.
 *
 * The state survives a restart: it is read back from --state, so that a
 * controller restarted in SYNC (or in the middle of a failover: the state
 * turns ALONE only once the standby is promoted) still fails over. SYNC is
 * entered only once the standby has flushed the WAL written before it was
 * named, so that no commit acknowledged earlier is missing there; it is
 * left before the primary is told to commit alone, so that a lost answer
 * leaves the controller on the safe side. Every query has a deadline
 * (TCP keepalives, tcp_user_timeout, statement_timeout), and the fence
 * command FENCE_TIMEOUT_S: a fence that hangs is a fence that failed.
 *
 * payd finds the primary by itself: its connection string names both hosts
 * with target_session_attrs=read-write.
 *
 * The state, the roles and the last action are written as JSON to --state
 * after every check (payctl status reads it), and every change is logged
 * on stderr as one line of key=value pairs.
 */
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NODES 2
#define NAME_MAX_LEN 63
#define CONNECT_TIMEOUT_S "1"
#define QUERY_TIMEOUT_MS "2000" /* statement_timeout and tcp_user_timeout */
#define PROMOTE_WAIT_S "30"
#define FENCE_TIMEOUT_S 30

enum mode { MODE_ALONE, MODE_SYNC, MODE_SPLIT };
static const char *const mode_names[] = {"alone", "sync", "split"};

/* What one check of a node saw. */
struct probe {
    bool up;
    bool in_recovery;
    char sync_names[256];    /* its synchronous_standby_names */
    char peer_state[16];     /* the other node's sync_state as its standby; "" none */
    int64_t peer_flush;      /* and the WAL position it has flushed (bytes) */
    int64_t wal_now;         /* a primary's current WAL position (bytes) */
};

struct node {
    char name[NAME_MAX_LEN + 1];
    const char *conninfo;
    PGconn *conn; /* kept between checks; NULL while down */
    int missing;  /* checks in a row it did not answer */
    struct probe last;
};

struct controller {
    struct node nodes[NODES];
    int primary; /* index into nodes, -1 until one is seen */
    enum mode mode;
    const char *fence_command;
    const char *state_path;
    int interval_ms, failures;
    int standby_absent; /* checks in a row the primary saw no standby streaming */
    int64_t sync_from;  /* WAL the standby must have flushed before SYNC; 0 unset */
    char last_action[256];
    long long last_action_ms;
    long long failovers;
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stopping) {
    }
}

/* One log line: time, event, then key=value pairs (NULL-terminated). */
static void log_event(const char *event, ...)
{
    fprintf(stderr, "ts_ms=%lld event=%s", wall_ms(), event);
    va_list ap;
    va_start(ap, event);
    const char *k;
    while ((k = va_arg(ap, const char *))) {
        const char *v = va_arg(ap, const char *);
        fprintf(stderr, " %s=\"%s\"", k, v ? v : "");
    }
    va_end(ap);
    fputc('\n', stderr);
}

static void set_action(struct controller *ctl, const char *what)
{
    snprintf(ctl->last_action, sizeof(ctl->last_action), "%s", what);
    ctl->last_action_ms = wall_ms();
}

static void drop_conn(struct node *n)
{
    PQfinish(n->conn);
    n->conn = NULL;
}

/* Runs sql (no parameters but the peer's name) on node n; NULL and the
 * connection dropped when it fails. */
static PGresult *node_query(struct node *n, const char *sql, const char *param)
{
    if (!n->conn) {
        const char *keys[] = {"dbname", "connect_timeout", "application_name", "keepalives",
                              "keepalives_idle", "keepalives_interval", "keepalives_count",
                              "tcp_user_timeout", "options", NULL};
        const char *values[] = {n->conninfo, CONNECT_TIMEOUT_S, "payfailover", "1", "1", "1", "2",
                                QUERY_TIMEOUT_MS, "-c statement_timeout=" QUERY_TIMEOUT_MS, NULL};
        n->conn = PQconnectdbParams(keys, values, 1);
        if (PQstatus(n->conn) != CONNECTION_OK) {
            drop_conn(n);
            return NULL;
        }
    }
    const char *params[] = {param};
    PGresult *r = PQexecParams(n->conn, sql, param ? 1 : 0, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        log_event("query_failed", "node", n->name, "error", PQerrorMessage(n->conn), NULL);
        PQclear(r);
        drop_conn(n);
        return NULL;
    }
    return r;
}

static void probe_node(struct node *n, const struct node *peer)
{
    struct probe p = {0};
    PGresult *r = node_query(n,
                             "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names'),"
                             " coalesce(r.sync_state, ''),"
                             " coalesce(pg_wal_lsn_diff(r.flush_lsn, '0/0')::bigint, 0),"
                             " CASE WHEN pg_is_in_recovery() THEN 0"
                             "      ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint END"
                             " FROM (SELECT 1) one LEFT JOIN"
                             "  (SELECT sync_state, flush_lsn FROM pg_stat_replication"
                             "   WHERE application_name = $1 AND state = 'streaming' LIMIT 1) r ON true",
                             peer->name);
    if (r && PQntuples(r) == 1) {
        p.up = true;
        p.in_recovery = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        snprintf(p.sync_names, sizeof(p.sync_names), "%s", PQgetvalue(r, 0, 1));
        snprintf(p.peer_state, sizeof(p.peer_state), "%s", PQgetvalue(r, 0, 2));
        p.peer_flush = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
        p.wal_now = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
    }
    PQclear(r);
    n->missing = p.up ? 0 : n->missing + 1;
    n->last = p;
}

/* Sets the primary's synchronous_standby_names; true when done. */
static bool set_sync_names(struct node *n, const char *names)
{
    char sql[160];
    /* names are node names, checked to be plain identifiers at start-up */
    snprintf(sql, sizeof(sql), "ALTER SYSTEM SET synchronous_standby_names = '%s'", names);
    PGresult *r = node_query(n, sql, NULL);
    if (!r)
        return false;
    PQclear(r);
    r = node_query(n, "SELECT pg_reload_conf()", NULL);
    PQclear(r);
    return r != NULL;
}

/* Runs the fence command for node n, in a process group of its own; true
 * when it exited 0 within FENCE_TIMEOUT_S (else the group is killed). */
static bool run_fence(struct controller *ctl, struct node *n)
{
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        setpgid(0, 0);
        setenv("PAYFAILOVER_NODE", n->name, 1);
        execl("/bin/sh", "sh", "-c", ctl->fence_command, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    long long deadline_ms = wall_ms() + FENCE_TIMEOUT_S * 1000LL;
    int status;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            return WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (w < 0 && errno != EINTR)
            return false;
        if (wall_ms() > deadline_ms) {
            log_event("fence_timeout", "node", n->name, NULL);
            kill(-pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            return false;
        }
        sleep_ms(20);
    }
}

/* run_fence, logged either way. */
static bool fence(struct controller *ctl, struct node *n)
{
    bool ok = run_fence(ctl, n);
    if (ok)
        log_event("fenced", "node", n->name, NULL);
    else
        log_event("fence_failed", "node", n->name, "command", ctl->fence_command, NULL);
    return ok;
}

/* pg_promote, waiting for it up to PROMOTE_WAIT_S: longer than the
 * connection's statement_timeout allows other queries. */
static bool promote(struct node *n)
{
    PGresult *r = node_query(n, "SET statement_timeout = '" PROMOTE_WAIT_S "s'", NULL);
    bool set = r != NULL;
    PQclear(r);
    if (!set)
        return false;
    r = node_query(n, "SELECT pg_promote(true, " PROMOTE_WAIT_S ")", NULL);
    bool ok = r && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    PQclear(node_query(n, "SET statement_timeout = " QUERY_TIMEOUT_MS, NULL));
    return ok;
}

static void change_mode(struct controller *ctl, enum mode to, const char *why)
{
    if (ctl->mode == to)
        return;
    log_event("mode", "from", mode_names[ctl->mode], "to", mode_names[to], "why", why, NULL);
    ctl->mode = to;
    set_action(ctl, why);
}

/* The primary is gone: fence it, promote the standby, let it commit alone. */
static void fail_over(struct controller *ctl)
{
    struct node *old = &ctl->nodes[ctl->primary];
    struct node *next = &ctl->nodes[1 - ctl->primary];
    log_event("failover_begin", "primary", old->name, "standby", next->name, NULL);
    if (!fence(ctl, old)) {
        set_action(ctl, "fence failed: no promotion");
        return;
    }
    drop_conn(old);
    if (!promote(next)) {
        log_event("promote_failed", "node", next->name, NULL);
        set_action(ctl, "promotion failed; retrying");
        return; /* fenced already: the next check tries again */
    }
    ctl->primary = 1 - ctl->primary;
    ctl->failovers++;
    log_event("promoted", "node", next->name, NULL);
    char why[160];
    snprintf(why, sizeof(why), "failover: %s fenced, %s promoted", old->name, next->name);
    change_mode(ctl, MODE_ALONE, why);
    /* the old primary is fenced: nothing else can take writes. Should this
     * fail, check() fences again and retries (the ALONE rule). */
    if (!set_sync_names(next, ""))
        log_event("alone_failed", "node", next->name, NULL);
}

static void check(struct controller *ctl)
{
    for (int i = 0; i < NODES; i++)
        probe_node(&ctl->nodes[i], &ctl->nodes[1 - i]);
    struct node *a = &ctl->nodes[0], *b = &ctl->nodes[1];
    bool a_primary = a->last.up && !a->last.in_recovery;
    bool b_primary = b->last.up && !b->last.in_recovery;
    if (a_primary && b_primary) {
        change_mode(ctl, MODE_SPLIT, "both nodes take writes");
        return;
    }
    if (a_primary || b_primary) {
        int seen = a_primary ? 0 : 1;
        if (ctl->primary != seen) {
            if (ctl->primary >= 0) {
                log_event("primary_changed", "node", ctl->nodes[seen].name, NULL);
                change_mode(ctl, MODE_ALONE, "another node is primary");
            }
            ctl->primary = seen;
            ctl->sync_from = 0;
        }
        if (ctl->mode == MODE_SPLIT)
            change_mode(ctl, MODE_ALONE, "one primary again");
    }
    if (ctl->primary < 0)
        return; /* no primary seen yet */
    struct node *p = &ctl->nodes[ctl->primary];
    struct node *s = &ctl->nodes[1 - ctl->primary];
    if (p->last.up && !p->last.in_recovery) {
        bool streaming = p->last.peer_state[0] != '\0';
        ctl->standby_absent = streaming ? 0 : ctl->standby_absent + 1;
        if (!streaming)
            ctl->sync_from = 0;
        if (streaming && strcmp(p->last.sync_names, s->name) != 0) {
            if (set_sync_names(p, s->name))
                log_event("sync_standby_named", "primary", p->name, "standby", s->name, NULL);
        } else if (streaming && ctl->mode != MODE_SYNC) {
            /* named: SYNC once the standby has what was written before */
            if (ctl->sync_from == 0)
                ctl->sync_from = p->last.wal_now;
            else if (strcmp(p->last.peer_state, "sync") == 0 &&
                     p->last.peer_flush >= ctl->sync_from)
                change_mode(ctl, MODE_SYNC, "the standby streams synchronously");
        } else if (!streaming && ctl->standby_absent >= ctl->failures &&
                   p->last.sync_names[0] != '\0') {
            /* the standby's server is down, or up and not streaming. In
             * SYNC it can take no writes by itself; otherwise (a restart,
             * or a failover's last step failed) it is fenced first unless
             * it answers as a standby. */
            if (ctl->mode != MODE_SYNC && !s->last.up && !fence(ctl, s))
                return;
            change_mode(ctl, MODE_ALONE, "standby lost: the primary commits alone");
            if (!set_sync_names(p, ""))
                log_event("alone_failed", "node", p->name, NULL);
        }
        return;
    }
    if (p->missing < ctl->failures)
        return;
    if (ctl->mode != MODE_SYNC) {
        if (p->missing == ctl->failures)
            log_event("no_failover", "primary", p->name, "why",
                      "the standby was not in sync: promoting it could lose payments", NULL);
        return;
    }
    if (s->last.up && s->last.in_recovery)
        fail_over(ctl);
}

/* Reads the state a previous run left in the state file, if any: its mode
 * and primary (a SPLIT is not carried over). */
static void load_state(struct controller *ctl)
{
    json_t *doc = ctl->state_path ? json_load_file(ctl->state_path, 0, NULL) : NULL;
    const char *mode = NULL;
    json_t *primary = NULL;
    if (doc && json_unpack(doc, "{s:s, s?o}", "mode", &mode, "primary", &primary) == 0 &&
        json_is_string(primary)) {
        for (int i = 0; i < NODES; i++)
            if (strcmp(ctl->nodes[i].name, json_string_value(primary)) == 0)
                ctl->primary = i;
        if (ctl->primary >= 0 && strcmp(mode, "sync") == 0)
            ctl->mode = MODE_SYNC;
        if (ctl->primary >= 0)
            log_event("state_loaded", "mode", mode_names[ctl->mode], "primary",
                      ctl->nodes[ctl->primary].name, NULL);
    }
    json_decref(doc);
}

/* Writes the state file (via a temporary file and rename). */
static void write_state(const struct controller *ctl)
{
    if (!ctl->state_path)
        return;
    json_t *nodes = json_array();
    for (int i = 0; i < NODES; i++) {
        const struct node *n = &ctl->nodes[i];
        const char *role = !n->last.up ? "down" : n->last.in_recovery ? "standby" : "primary";
        json_array_append_new(nodes, json_pack("{s:s, s:s, s:i, s:s}", "name", n->name, "role",
                                               role, "missing_checks", n->missing,
                                               "synchronous_standby_names", n->last.sync_names));
    }
    json_t *doc = json_pack("{s:s, s:s?, s:o, s:s, s:I, s:I, s:I}", "mode",
                            mode_names[ctl->mode], "primary",
                            ctl->primary >= 0 ? ctl->nodes[ctl->primary].name : NULL, "nodes",
                            nodes, "last_action", ctl->last_action, "last_action_ms",
                            (json_int_t)ctl->last_action_ms, "failovers",
                            (json_int_t)ctl->failovers, "updated_ms", (json_int_t)wall_ms());
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", ctl->state_path);
    if (json_dump_file(doc, tmp, JSON_INDENT(2)) == 0)
        rename(tmp, ctl->state_path);
    json_decref(doc);
}

static bool plain_name(const char *s, size_t len)
{
    if (len == 0 || len > NAME_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!(s[i] == '_' || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
            return false;
    return true;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: payfailover --node NAME=CONNINFO --node NAME=CONNINFO --fence COMMAND\n"
            "                   [--interval-ms N] [--failures N] [--state FILE]\n"
            "  --node      a PostgreSQL node: its name (its application_name as a standby;\n"
            "              a-z, 0-9, _) and a libpq connection string; exactly two\n"
            "  --fence     run by /bin/sh with PAYFAILOVER_NODE=NAME before the other node\n"
            "              is promoted; must make NAME unable to take writes, exit 0\n"
            "  --interval-ms  between checks (default 500)\n"
            "  --failures     checks a node must miss to count as gone (default 3)\n"
            "  --state     a JSON file rewritten after every check (payctl status)\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct controller ctl = {.primary = -1, .mode = MODE_ALONE, .interval_ms = 500,
                             .failures = 3};
    int nodes = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            return usage();
        i++;
        if (strcmp(arg, "--node") == 0) {
            const char *eq = strchr(val, '=');
            if (nodes == NODES || !eq || !plain_name(val, (size_t)(eq - val))) {
                fprintf(stderr, "payfailover: --node NAME=CONNINFO, two of them, NAME in a-z0-9_\n");
                return 2;
            }
            snprintf(ctl.nodes[nodes].name, sizeof(ctl.nodes[nodes].name), "%.*s",
                     (int)(eq - val), val);
            ctl.nodes[nodes++].conninfo = eq + 1;
        } else if (strcmp(arg, "--fence") == 0) {
            ctl.fence_command = val;
        } else if (strcmp(arg, "--state") == 0) {
            ctl.state_path = val;
        } else if (strcmp(arg, "--interval-ms") == 0 || strcmp(arg, "--failures") == 0) {
            char *end;
            long v = strtol(val, &end, 10);
            bool interval = strcmp(arg, "--interval-ms") == 0;
            if (*end || v < 1 || v > (interval ? 60000 : 100)) {
                fprintf(stderr, "payfailover: %s: a number, %s\n", arg,
                        interval ? "1 ... 60000" : "1 ... 100");
                return 2;
            }
            *(interval ? &ctl.interval_ms : &ctl.failures) = (int)v;
        } else {
            return usage();
        }
    }
    if (nodes != NODES || !ctl.fence_command ||
        strcmp(ctl.nodes[0].name, ctl.nodes[1].name) == 0)
        return usage();
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    load_state(&ctl);
    set_action(&ctl, "started");
    log_event("start", "nodes", ctl.nodes[0].name, "and", ctl.nodes[1].name, NULL);
    while (!stopping) {
        check(&ctl);
        write_state(&ctl);
        sleep_ms(ctl.interval_ms);
    }
    for (int i = 0; i < NODES; i++)
        drop_conn(&ctl.nodes[i]);
    log_event("stop", NULL);
    return 0;
}
