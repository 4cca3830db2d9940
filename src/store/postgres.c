/*
 * postgres.c - the cluster store: PostgreSQL through libpq; see store.h.
 *
 * The schema and every multi-step write live in the database as versioned
 * migrations (src/store/migrations/), applied at start-up under an advisory
 * lock, so two instances starting at once apply each migration once.
 *
 * Writes: `writers` threads, each with its own connection, take batches of
 * submitted operations (up to max_batch) from one bounded ring. A batch is
 * BEGIN, one prepared statement per operation (most call a function of the
 * schema that checks everything before it writes, so a refusal leaves at
 * most the newer fencing token it was shown, which is harmless),
 * COMMIT, all sent in libpq's pipeline mode: one round trip and one commit
 * for the whole batch. Operations in a batch are sorted by the row they
 * lock first, so two batches (of this or another instance) take order locks
 * in the same order. A batch the server aborts for a transient reason
 * (deadlock, serialization, a lost connection) runs again: each write is
 * idempotent by the ids its caller chose, so a batch whose COMMIT was lost
 * with the connection is neither lost nor doubled by running it again. An
 * operation that fails for any other reason is taken out, answered
 * STORE_E_IO, and the rest of the batch runs again without it.
 *
 * Reads: a bounded pool of connections, taken and given back per read.
 *
 * A listener thread LISTENs for new queue messages, which writers announce
 * after committing them, so that workers and relays on every instance hear
 * of a payment as soon as it is committed.
 *
 * Every connection prepares every statement when it connects; no SQL is ever
 * built from values.
 */
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obs/log.h"
#include "store/pg_migrations.h"
#include "store/store.h"
#include "util/util.h"

extern const struct store_backend store_postgres_backend;

/* Any number that other applications are unlikely to use for their own
 * advisory locks: "payd" in ASCII. */
#define MIGRATION_LOCK_ID 0x70617964
#define BATCH_ATTEMPTS 5       /* runs of one batch before its ops fail */
#define RECONNECT_WAIT_MS 5000 /* a writer tries this long to reconnect */
#define POOL_WAIT_MS 2000      /* a reader waits this long for a connection */
#define PURGE_BATCH 5000
/* How long the signature of a channel's notification is kept to refuse its
 * replay: longer than the 300 s a timestamp stays fresh (as in sqlite.c). */
#define NOTIFY_KEEP_MS (3600 * 1000)
#define CONNECT_TIMEOUT_S "5"
#define NOTIFY_MIN_GAP_MS 5

#define PAYMENT_COLS "id, order_id, merchant_id, amount, currency, channel, method, status," \
                     " serial_no, channel_txn_id, failure_code, failure_message, created_ms,"  \
                     " updated_ms"
#define ORDER_COLS "id, merchant_id, merchant_order_no, amount, currency, description, status," \
                   " created_ms"
/* The columns of struct refund, in the order of payd_refund_claim's result. */
#define REFUND_COLS "id, payment_id, order_id, merchant_id, amount, currency, channel,"        \
                    " payment_serial_no, reason, status, refund_no, channel_refund_id,"        \
                    " failure_code, failure_message, automatic, attempts, created_ms, updated_ms"

enum stmt {
    /* writes */
    S_ORDER_CREATE,
    S_PAYMENT_CREATE,
    S_PAYMENT_FINISH,
    S_PAYMENT_REROUTE,
    S_OUTBOX_CLAIM,
    S_OUTBOX_ACK,
    S_OUTBOX_RETRY,
    S_OUTBOX_DEFER,
    S_IDEM_PURGE,
    S_MERCHANT_ADD,
    S_MERCHANT_ROTATE,
    S_RELAY_CLAIM,
    S_RELAY_RELEASE,
    S_REFUND_CREATE,
    S_REFUND_CLAIM,
    S_REFUND_FINISH,
    S_REFUND_RETRY,
    S_NOTIFY_APPLY,
    S_ORDER_CLOSE_EXPIRED,
    S_WEBHOOK_UPSERT,
    S_WEBHOOK_DELETE,
    S_EVENT_CLAIM,
    S_EVENT_FINISH,
    S_RECONCILIATION_INSERT,
    /* reads */
    S_MERCHANT_BY_HASH,
    S_MERCHANT_LIST,
    S_MERCHANT_COUNT,
    S_ORDER_GET,
    S_PAYMENT_GET,
    S_PAYMENT_LIST,
    S_IDEM_GET,
    S_REFUND_GET,
    S_REFUND_LIST,
    S_REFUND_NEXT,
    S_WEBHOOK_GET,
    S_EVENT_NEXT,
    S_PAYMENT_BY_SERIAL,
    S_REFUND_BY_NO,
    S_PAYMENTS_SUCCEEDED,
    S_REFUNDS_SUCCEEDED,
    S_BALANCE,
    S_MAX_FENCE,
    S_QUEUE_STATS,
    S_LEDGER_IMBALANCE,
    S_OUTBOX_NEXT,
    S_PING,
    S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
    [S_ORDER_CREATE] = "SELECT * FROM payd_order_create($1,$2,$3,$4,$5,$6,$7)",
    [S_PAYMENT_CREATE] =
        "SELECT * FROM payd_payment_create($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
    [S_PAYMENT_FINISH] = "SELECT * FROM payd_payment_finish($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,"
                         "$12)",
    [S_PAYMENT_REROUTE] = "SELECT payd_payment_reroute($1,$2,$3,$4,$5,$6,$7)",
    [S_OUTBOX_CLAIM] = "SELECT * FROM payd_outbox_claim($1,$2,$3)",
    [S_OUTBOX_ACK] = "DELETE FROM outbox WHERE id = ANY($1::bigint[])",
    [S_OUTBOX_RETRY] = "UPDATE outbox SET available_ms = $2 WHERE id = $1",
    [S_OUTBOX_DEFER] = "UPDATE outbox SET available_ms = $2,"
                       " deliveries = greatest(deliveries - 1, 0) WHERE id = $1"
                       " AND deliveries = $3",
    /* Counts the idempotency records only; notifications' signatures go too. */
    [S_IDEM_PURGE] = "WITH n AS (DELETE FROM channel_notifications WHERE received_ms < $3)"
                     " DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(SELECT ctid FROM"
                     " idempotency_keys WHERE created_ms < $1 LIMIT $2))",
    [S_MERCHANT_ADD] = "SELECT payd_merchant_add($1,$2,$3,$4)",
    [S_MERCHANT_ROTATE] = "UPDATE merchants SET key_hash = $2 WHERE name = $1",
    [S_RELAY_CLAIM] = "SELECT * FROM payd_relay_claim($1,$2,$3,$4)",
    [S_RELAY_RELEASE] = "UPDATE outbox SET available_ms = $2 WHERE id = ANY($1::bigint[])",
    [S_REFUND_CREATE] = "SELECT * FROM payd_refund_create($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,"
                        "$12,$13,$14,$15,$16)",
    [S_REFUND_CLAIM] = "SELECT * FROM payd_refund_claim($1,$2,$3)",
    [S_REFUND_FINISH] = "SELECT payd_refund_finish($1,$2,$3,$4,$5,$6)",
    [S_REFUND_RETRY] = "UPDATE refunds SET next_attempt_ms = $2 WHERE id = $1 AND"
                       " status = 'processing'",
    [S_NOTIFY_APPLY] = "SELECT * FROM payd_notify_apply($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
    /* Orders that a payment write holds are skipped: closed at the next
     * round if still unpaid, never waited for. */
    [S_ORDER_CLOSE_EXPIRED] = "UPDATE orders SET status = 'closed', updated_ms = $2 WHERE id IN"
                              " (SELECT id FROM orders WHERE status = 'pending_payment' AND"
                              " created_ms < $1 ORDER BY created_ms LIMIT $3"
                              " FOR UPDATE SKIP LOCKED)",
    [S_WEBHOOK_UPSERT] = "INSERT INTO webhooks (merchant_id, url, secret, updated_ms) VALUES"
                         " ($1,$2,$3,$4) ON CONFLICT (merchant_id) DO UPDATE SET"
                         " url = excluded.url, secret = excluded.secret,"
                         " updated_ms = excluded.updated_ms",
    [S_WEBHOOK_DELETE] = "DELETE FROM webhooks WHERE merchant_id = $1",
    [S_EVENT_CLAIM] = "SELECT * FROM payd_event_claim($1,$2,$3)",
    /* Delivered, retried ($6: when) or failed; a pending event only. */
    [S_EVENT_FINISH] = "UPDATE events SET state = $2, last_status = $3, last_error = $4,"
                       " updated_ms = $5, next_attempt_ms = coalesce($6, next_attempt_ms)"
                       " WHERE id = $1 AND state = 'pending'",
    /* Once: run again after a lost commit, the same report is not added twice. */
    [S_RECONCILIATION_INSERT] =
        "INSERT INTO reconciliations (date, channel, run_ms, differences, report)"
        " SELECT $1::text, $2::text, $3::bigint, $4::bigint, $5::text WHERE NOT EXISTS"
        " (SELECT 1 FROM reconciliations r WHERE r.date = $1 AND r.channel = $2 AND"
        " r.run_ms = $3)",
    [S_MERCHANT_BY_HASH] = "SELECT id, name, created_ms FROM merchants WHERE key_hash = $1",
    [S_MERCHANT_LIST] = "SELECT id, name, created_ms FROM merchants ORDER BY created_ms, name",
    [S_MERCHANT_COUNT] = "SELECT count(*) FROM merchants",
    [S_ORDER_GET] = "SELECT " ORDER_COLS " FROM orders WHERE id = $1 AND merchant_id = $2",
    [S_PAYMENT_GET] = "SELECT " PAYMENT_COLS " FROM payments WHERE id = $1 AND merchant_id = $2",
    [S_PAYMENT_LIST] = "SELECT " PAYMENT_COLS " FROM payments WHERE order_id = $1 AND"
                       " merchant_id = $2 ORDER BY created_ms, id",
    [S_IDEM_GET] = "SELECT fingerprint, status, body FROM idempotency_keys WHERE"
                   " merchant_id = $1 AND key = $2",
    [S_REFUND_GET] = "SELECT " REFUND_COLS " FROM refunds WHERE id = $1 AND merchant_id = $2",
    [S_REFUND_LIST] = "SELECT " REFUND_COLS " FROM refunds WHERE payment_id = $1 AND"
                      " merchant_id = $2 ORDER BY created_ms, id",
    [S_REFUND_NEXT] = "SELECT min(next_attempt_ms) FROM refunds WHERE status = 'processing'",
    [S_WEBHOOK_GET] = "SELECT merchant_id, url, secret, updated_ms FROM webhooks WHERE"
                      " merchant_id = $1",
    [S_EVENT_NEXT] = "SELECT min(next_attempt_ms) FROM events WHERE state = 'pending'",
    [S_PAYMENT_BY_SERIAL] = "SELECT " PAYMENT_COLS " FROM payments WHERE serial_no = $1",
    [S_REFUND_BY_NO] = "SELECT " REFUND_COLS " FROM refunds WHERE refund_no = $1",
    [S_PAYMENTS_SUCCEEDED] = "SELECT " PAYMENT_COLS " FROM payments WHERE channel = $1 AND"
                             " status = 'succeeded' AND created_ms >= $2 AND created_ms < $3"
                             " ORDER BY created_ms, id",
    [S_REFUNDS_SUCCEEDED] = "SELECT " REFUND_COLS " FROM refunds WHERE channel = $1 AND"
                            " status = 'succeeded' AND created_ms >= $2 AND created_ms < $3"
                            " ORDER BY created_ms, id",
    [S_BALANCE] = "SELECT currency, sum(amount) FROM ledger_entries WHERE account = $1"
                  " GROUP BY currency ORDER BY currency",
    [S_MAX_FENCE] = "SELECT coalesce(max(fence), 0) FROM orders",
    [S_QUEUE_STATS] = "SELECT count(*), coalesce(min(created_ms), 0),"
                      " count(*) FILTER (WHERE deliveries >= $1::bigint) FROM outbox",
    [S_LEDGER_IMBALANCE] = "SELECT coalesce(sum(abs(t)), 0)::bigint FROM"
                           " (SELECT sum(amount) AS t FROM ledger_entries GROUP BY currency) s",
    [S_OUTBOX_NEXT] = "SELECT min(available_ms) FROM outbox",
    /* 1 on a server that takes writes; 0 on a standby (read-only) */
    [S_PING] = "SELECT (NOT pg_is_in_recovery())::int",
};

struct pg_store {
    struct store base;
    char *conninfo;
    const char *conn_values[9]; /* for conn_keys; the same for every connection */
    int max_batch;
    void (*on_commit)(void *arg, int ops, int64_t latency_us);
    void *on_commit_arg;
    /* the write ring */
    pthread_mutex_t mu;
    pthread_cond_t nonempty;
    struct store_op **ring;
    int ring_cap, ring_head, ring_len;
    bool stopping;
    pthread_t *writers;
    int writer_count, writers_started;
    /* the listener: new queue messages committed by any instance */
    pthread_t listener;
    bool listener_started, listener_stop; /* listener_stop under mu */
    void (*on_outbox)(void *arg);
    void *on_outbox_arg;
    /* the read pool */
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_free;
    PGconn **idle;
    int idle_len, pool_open, pool_max;
};

/* ---- connections ---- */

static void log_pg(const char *what, const char *detail)
{
    log_error("postgres", "what", what, "error", detail, NULL);
}

/* The first line of the connection's last error (libpq's messages end in a
 * newline and may run on with context). */
static const char *conn_error(PGconn *c, char *buf, size_t size)
{
    snprintf(buf, size, "%s", c ? PQerrorMessage(c) : "out of memory");
    buf[strcspn(buf, "\n")] = '\0';
    return buf;
}

/* Server notices (e.g. "already exists, skipping") are not errors; libpq
 * would print them on stderr. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static int prepare_all(PGconn *c, char *err, size_t err_size)
{
    PQsetNoticeProcessor(c, ignore_notice, NULL);
    for (int i = 0; i < S_COUNT; i++) {
        char name[16];
        snprintf(name, sizeof(name), "s%d", i);
        PGresult *r = PQprepare(c, name, stmt_sql[i], 0, NULL);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            snprintf(err, err_size, "store: prepare %s: %s", stmt_sql[i],
                     PQresultErrorMessage(r));
        PQclear(r);
        if (!ok)
            return -1;
    }
    return 0;
}

/* Connection settings ahead of the user's string, which wins where it says
 * otherwise: a bounded connect, and TCP keepalives with a user timeout, so
 * that a database host that vanishes without a reset (power, partition)
 * fails the connection in seconds instead of leaving a writer waiting for
 * an answer forever. */
static const char *const conn_keys[] = {"connect_timeout", "application_name", "keepalives",
                                        "keepalives_idle", "keepalives_interval",
                                        "keepalives_count", "tcp_user_timeout", "dbname", NULL};

static void conn_values_init(struct pg_store *s)
{
    s->conn_values[0] = CONNECT_TIMEOUT_S;
    s->conn_values[1] = "payd";
    s->conn_values[2] = "1";
    s->conn_values[3] = "5";
    s->conn_values[4] = "2";
    s->conn_values[5] = "3";
    s->conn_values[6] = "10000";
    s->conn_values[7] = s->conninfo;
    s->conn_values[8] = NULL;
}

/* A new connection with every statement prepared, or NULL (err says why). */
static PGconn *connect_db(struct pg_store *s, char *err, size_t err_size)
{
    PGconn *c = PQconnectdbParams(conn_keys, s->conn_values, 1);
    char buf[256];
    if (!c || PQstatus(c) != CONNECTION_OK) {
        snprintf(err, err_size, "store: cannot connect to PostgreSQL: %s",
                 conn_error(c, buf, sizeof(buf)));
        PQfinish(c);
        return NULL;
    }
    if (prepare_all(c, err, err_size) != 0) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

static bool exec_ok(PGconn *c, const char *sql, char *err, size_t err_size)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(err, err_size, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return ok;
}

/* Applies the migrations the database does not have yet, each in its own
 * transaction, holding an advisory lock so that instances starting
 * together take turns. */
static int migrate(PGconn *c, char *err, size_t err_size)
{
    char msg[512];
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(%d)", MIGRATION_LOCK_ID);
    if (!exec_ok(c, sql, msg, sizeof(msg))) {
        snprintf(err, err_size, "store: migration lock: %s", msg);
        return -1;
    }
    int rc = -1;
    if (!exec_ok(c,
                 "CREATE TABLE IF NOT EXISTS payd_schema_migrations(version int PRIMARY KEY,"
                 " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                 msg, sizeof(msg))) {
        snprintf(err, err_size, "store: migrations table: %s", msg);
        goto out_unlock;
    }
    PGresult *r = PQexec(c, "SELECT coalesce(max(version), 0) FROM payd_schema_migrations");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, err_size, "store: migrations: %s", PQresultErrorMessage(r));
        PQclear(r);
        goto out_unlock;
    }
    int have = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    for (int i = 0; i < pg_migration_count; i++) {
        const struct pg_migration *m = &pg_migrations[i];
        if (m->version <= have)
            continue;
        if (!exec_ok(c, "BEGIN", msg, sizeof(msg)) || !exec_ok(c, m->sql, msg, sizeof(msg))) {
            snprintf(err, err_size, "store: migration %s: %s", m->name, msg);
            exec_ok(c, "ROLLBACK", msg, sizeof(msg));
            goto out_unlock;
        }
        char version[16];
        snprintf(version, sizeof(version), "%d", m->version);
        const char *params[] = {version, m->name};
        r = PQexecParams(c, "INSERT INTO payd_schema_migrations(version, name) VALUES ($1, $2)",
                         2, NULL, params, NULL, NULL, 0);
        bool inserted = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!inserted || !exec_ok(c, "COMMIT", msg, sizeof(msg))) {
            snprintf(err, err_size, "store: migration %s: %s", m->name,
                     inserted ? msg : "cannot record it");
            exec_ok(c, "ROLLBACK", msg, sizeof(msg));
            goto out_unlock;
        }
        log_info("store_migrated", "version", m->name, NULL);
    }
    rc = 0;
out_unlock:
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%d)", MIGRATION_LOCK_ID);
    exec_ok(c, sql, msg, sizeof(msg));
    return rc;
}

/* ---- parameters and rows ---- */

/* Text parameters for one statement; numbers are printed into num[]. */
struct params {
    int n;
    const char *v[16];
    char num[6][24];
    int nums;
};

static void p_text(struct params *p, const char *s)
{
    p->v[p->n++] = s;
}

static void p_int(struct params *p, int64_t x)
{
    PAYD_ASSERT(p->nums < (int)ARRAY_LEN(p->num));
    char *buf = p->num[p->nums++];
    snprintf(buf, sizeof(p->num[0]), "%lld", (long long)x);
    p->v[p->n++] = buf;
}

static void copy_val(const PGresult *r, int row, int col, char *out, size_t size)
{
    snprintf(out, size, "%s", PQgetvalue(r, row, col));
}

static int64_t int_val(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* A boolean's text form is "t" or "f" (NULL: ""). */
static bool bool_val(const PGresult *r, int row, int col)
{
    return strcmp(PQgetvalue(r, row, col), "t") == 0;
}

static void row_to_order(const PGresult *r, int row, int col, struct order *o)
{
    memset(o, 0, sizeof(*o));
    copy_val(r, row, col + 0, o->id, sizeof(o->id));
    copy_val(r, row, col + 1, o->merchant_id, sizeof(o->merchant_id));
    copy_val(r, row, col + 2, o->merchant_order_no, sizeof(o->merchant_order_no));
    o->amount_minor = int_val(r, row, col + 3);
    copy_val(r, row, col + 4, o->currency, sizeof(o->currency));
    o->has_description = !PQgetisnull(r, row, col + 5);
    copy_val(r, row, col + 5, o->description, sizeof(o->description));
    PAYD_ASSERT(order_status_parse(PQgetvalue(r, row, col + 6), &o->status) == 0);
    o->created_ms = int_val(r, row, col + 7);
}

static void row_to_payment(const PGresult *r, int row, int col, struct payment *p)
{
    memset(p, 0, sizeof(*p));
    copy_val(r, row, col + 0, p->id, sizeof(p->id));
    copy_val(r, row, col + 1, p->order_id, sizeof(p->order_id));
    copy_val(r, row, col + 2, p->merchant_id, sizeof(p->merchant_id));
    p->amount_minor = int_val(r, row, col + 3);
    copy_val(r, row, col + 4, p->currency, sizeof(p->currency));
    copy_val(r, row, col + 5, p->channel, sizeof(p->channel));
    copy_val(r, row, col + 6, p->method, sizeof(p->method));
    PAYD_ASSERT(payment_status_parse(PQgetvalue(r, row, col + 7), &p->status) == 0);
    copy_val(r, row, col + 8, p->serial_no, sizeof(p->serial_no));
    copy_val(r, row, col + 9, p->channel_txn_id, sizeof(p->channel_txn_id));
    copy_val(r, row, col + 10, p->failure_code, sizeof(p->failure_code));
    copy_val(r, row, col + 11, p->failure_message, sizeof(p->failure_message));
    p->created_ms = int_val(r, row, col + 12);
    p->updated_ms = int_val(r, row, col + 13);
}

/* A row of REFUND_COLS (or of payd_refund_claim). */
static void row_to_refund(const PGresult *r, int row, struct refund *f)
{
    memset(f, 0, sizeof(*f));
    copy_val(r, row, 0, f->id, sizeof(f->id));
    copy_val(r, row, 1, f->payment_id, sizeof(f->payment_id));
    copy_val(r, row, 2, f->order_id, sizeof(f->order_id));
    copy_val(r, row, 3, f->merchant_id, sizeof(f->merchant_id));
    f->amount_minor = int_val(r, row, 4);
    copy_val(r, row, 5, f->currency, sizeof(f->currency));
    copy_val(r, row, 6, f->channel, sizeof(f->channel));
    copy_val(r, row, 7, f->payment_serial_no, sizeof(f->payment_serial_no));
    f->has_reason = !PQgetisnull(r, row, 8);
    copy_val(r, row, 8, f->reason, sizeof(f->reason));
    PAYD_ASSERT(payment_status_parse(PQgetvalue(r, row, 9), &f->status) == 0);
    copy_val(r, row, 10, f->refund_no, sizeof(f->refund_no));
    copy_val(r, row, 11, f->channel_refund_id, sizeof(f->channel_refund_id));
    copy_val(r, row, 12, f->failure_code, sizeof(f->failure_code));
    copy_val(r, row, 13, f->failure_message, sizeof(f->failure_message));
    f->automatic = bool_val(r, row, 14);
    f->attempts = int_val(r, row, 15);
    f->created_ms = int_val(r, row, 16);
    f->updated_ms = int_val(r, row, 17);
}

/* ---- writes: one statement per operation ---- */

/* The statement and parameters of op. ids is scratch for an ack list. */
static enum stmt op_params(struct store_op *op, struct params *p, char **ids)
{
    memset(p, 0, sizeof(*p));
    switch (op->kind) {
    case STORE_OP_ORDER_CREATE: {
        const struct order *o = &op->in.order_create;
        p_text(p, o->id);
        p_text(p, o->merchant_id);
        p_text(p, o->merchant_order_no);
        p_int(p, o->amount_minor);
        p_text(p, o->currency);
        p_text(p, o->has_description ? o->description : NULL);
        p_int(p, o->created_ms);
        return S_ORDER_CREATE;
    }
    case STORE_OP_PAYMENT_CREATE: {
        const struct payment *y = &op->in.payment_create.payment;
        p_text(p, y->id);
        p_text(p, y->order_id);
        p_text(p, y->merchant_id);
        p_int(p, y->amount_minor);
        p_text(p, y->currency);
        p_text(p, y->channel);
        p_text(p, y->method);
        p_text(p, y->serial_no);
        p_int(p, y->created_ms);
        p_int(p, op->in.payment_create.fence);
        p_text(p, op->in.payment_create.idem_key);
        p_text(p, op->in.payment_create.idem_fingerprint);
        p_int(p, op->in.payment_create.idem_status);
        p_text(p, op->in.payment_create.idem_body);
        return S_PAYMENT_CREATE;
    }
    case STORE_OP_PAYMENT_FINISH: {
        const struct payment *y = &op->in.payment_finish.payment;
        PAYD_ASSERT(y->status == PAYMENT_SUCCEEDED || y->status == PAYMENT_FAILED);
        bool ok = y->status == PAYMENT_SUCCEEDED;
        p_text(p, y->id);
        p_text(p, y->order_id);
        p_text(p, y->merchant_id);
        p_text(p, payment_status_name(y->status));
        p_text(p, ok ? y->channel_txn_id : NULL);
        p_text(p, ok ? NULL : y->failure_code);
        p_text(p, ok ? NULL : y->failure_message);
        p_int(p, y->updated_ms);
        p_int(p, op->in.payment_finish.fence);
        /* Used only for a late charge; the amount, currency and channel of
         * the payment and of its refund are the stored payment's. */
        p_text(p, ok ? op->in.payment_finish.late_refund_id : NULL);
        p_text(p, ok ? op->in.payment_finish.late_refund_no : NULL);
        p_text(p, LATE_CHARGE_REASON);
        return S_PAYMENT_FINISH;
    }
    case STORE_OP_PAYMENT_REROUTE:
        p_text(p, op->in.payment_reroute.payment_id);
        p_text(p, op->in.payment_reroute.order_id);
        p_text(p, op->in.payment_reroute.merchant_id);
        p_text(p, op->in.payment_reroute.from);
        p_text(p, op->in.payment_reroute.to);
        p_int(p, op->in.payment_reroute.fence);
        p_int(p, op->in.payment_reroute.updated_ms);
        return S_PAYMENT_REROUTE;
    case STORE_OP_OUTBOX_CLAIM: /* for a worker */
    case STORE_OP_RELAY_CLAIM:  /* for the relay to a broker */
        PAYD_ASSERT(op->in.outbox_claim.max > 0 && op->in.outbox_claim.max <= STORE_CLAIM_MAX);
        p_int(p, clock_wall_ms());
        if (op->kind == STORE_OP_RELAY_CLAIM)
            p_int(p, op->in.outbox_claim.first_lease_ms);
        p_int(p, op->in.outbox_claim.lease_ms);
        p_int(p, op->in.outbox_claim.max);
        return op->kind == STORE_OP_OUTBOX_CLAIM ? S_OUTBOX_CLAIM : S_RELAY_CLAIM;
    case STORE_OP_RELAY_RELEASE:
    case STORE_OP_OUTBOX_ACK: {
        /* an array literal: {1,2,3} */
        int count = op->in.outbox_ack.count;
        char *a = xmalloc((size_t)count * 21 + 3);
        size_t len = 0;
        a[len++] = '{';
        for (int i = 0; i < count; i++)
            len += (size_t)sprintf(a + len, "%s%lld", i ? "," : "",
                                   (long long)op->in.outbox_ack.ids[i]);
        a[len++] = '}';
        a[len] = '\0';
        *ids = a;
        p_text(p, a);
        if (op->kind == STORE_OP_OUTBOX_ACK)
            return S_OUTBOX_ACK;
        p_int(p, clock_wall_ms());
        return S_RELAY_RELEASE;
    }
    case STORE_OP_OUTBOX_RETRY:
        p_int(p, op->in.outbox_retry.id);
        p_int(p, clock_wall_ms() + op->in.outbox_retry.delay_ms);
        if (!op->in.outbox_retry.uncount)
            return S_OUTBOX_RETRY;
        /* conditional: a batch run again must not take a delivery back twice */
        p_int(p, op->in.outbox_retry.deliveries);
        return S_OUTBOX_DEFER;
    case STORE_OP_IDEM_PURGE: {
        p_int(p, op->in.idem_purge.older_than_ms);
        p_int(p, PURGE_BATCH);
        /* Notifications' signatures, long after their timestamps went stale. */
        int64_t seen_before_ms = clock_wall_ms() - NOTIFY_KEEP_MS;
        p_int(p, op->in.idem_purge.older_than_ms < seen_before_ms
                     ? op->in.idem_purge.older_than_ms
                     : seen_before_ms);
        return S_IDEM_PURGE;
    }
    case STORE_OP_MERCHANT_ADD:
        p_text(p, op->in.merchant.merchant.id);
        p_text(p, op->in.merchant.merchant.name);
        p_text(p, op->in.merchant.key_hash);
        p_int(p, op->in.merchant.merchant.created_ms);
        return S_MERCHANT_ADD;
    case STORE_OP_MERCHANT_ROTATE:
        p_text(p, op->in.merchant.merchant.name);
        p_text(p, op->in.merchant.key_hash);
        return S_MERCHANT_ROTATE;
    case STORE_OP_REFUND_CREATE: {
        const struct refund *f = &op->in.refund_create.refund;
        p_text(p, f->id);
        p_text(p, f->payment_id);
        p_text(p, f->order_id);
        p_text(p, f->merchant_id);
        p_int(p, f->amount_minor);
        p_text(p, f->currency);
        p_text(p, f->channel);
        p_text(p, f->payment_serial_no);
        p_text(p, f->has_reason ? f->reason : NULL);
        p_text(p, f->refund_no);
        p_text(p, f->automatic ? "true" : "false");
        p_int(p, f->created_ms);
        p_text(p, op->in.refund_create.idem_key);
        p_text(p, op->in.refund_create.idem_fingerprint);
        p_int(p, op->in.refund_create.idem_status);
        p_text(p, op->in.refund_create.idem_body);
        return S_REFUND_CREATE;
    }
    case STORE_OP_REFUND_CLAIM:
        PAYD_ASSERT(op->in.refund_claim.max > 0 && op->in.refund_claim.max <= STORE_CLAIM_MAX);
        p_int(p, clock_wall_ms());
        p_int(p, op->in.refund_claim.lease_ms);
        p_int(p, op->in.refund_claim.max);
        return S_REFUND_CLAIM;
    case STORE_OP_REFUND_FINISH: {
        /* Only the outcome comes from the caller; the amount, merchant,
         * channel, order and payment are the stored refund's. */
        const struct refund *f = &op->in.refund_finish.refund;
        PAYD_ASSERT(f->status == PAYMENT_SUCCEEDED || f->status == PAYMENT_FAILED);
        bool ok = f->status == PAYMENT_SUCCEEDED;
        p_text(p, f->id);
        p_text(p, payment_status_name(f->status));
        p_text(p, ok ? f->channel_refund_id : NULL);
        p_text(p, ok ? NULL : f->failure_code);
        p_text(p, ok ? NULL : f->failure_message);
        p_int(p, f->updated_ms);
        return S_REFUND_FINISH;
    }
    case STORE_OP_REFUND_RETRY:
        p_text(p, op->in.refund_retry.id);
        p_int(p, clock_wall_ms() + op->in.refund_retry.delay_ms);
        return S_REFUND_RETRY;
    case STORE_OP_NOTIFY_APPLY:
        p_text(p, op->in.notify.channel);
        p_text(p, op->in.notify.signature);
        p_text(p, op->in.notify.notify_id);
        p_text(p, op->in.notify.refund ? "true" : "false");
        p_text(p, op->in.notify.number);
        p_text(p, op->in.notify.txn_id);
        p_int(p, op->in.notify.amount_minor);
        p_text(p, op->in.notify.currency);
        p_int(p, op->in.notify.received_ms);
        p_text(p, op->in.notify.late_refund_id);
        p_text(p, op->in.notify.late_refund_no);
        p_text(p, LATE_CHARGE_REASON);
        return S_NOTIFY_APPLY;
    case STORE_OP_ORDER_CLOSE_EXPIRED:
        p_int(p, op->in.order_close.created_before_ms);
        p_int(p, op->in.order_close.updated_ms);
        p_int(p, op->in.order_close.max);
        return S_ORDER_CLOSE_EXPIRED;
    case STORE_OP_WEBHOOK_SET: {
        const struct webhook *w = &op->in.webhook_set;
        p_text(p, w->merchant_id);
        if (!w->url[0])
            return S_WEBHOOK_DELETE;
        p_text(p, w->url);
        p_text(p, w->secret);
        p_int(p, w->updated_ms);
        return S_WEBHOOK_UPSERT;
    }
    case STORE_OP_EVENT_CLAIM:
        PAYD_ASSERT(op->in.event_claim.max > 0 && op->in.event_claim.max <= STORE_CLAIM_MAX);
        p_int(p, clock_wall_ms());
        p_int(p, op->in.event_claim.lease_ms);
        p_int(p, op->in.event_claim.max);
        return S_EVENT_CLAIM;
    case STORE_OP_EVENT_FINISH: {
        int64_t now_ms = clock_wall_ms();
        bool delivered = op->in.event_finish.delivered;
        bool retry = !delivered && op->in.event_finish.retry_in_ms >= 0;
        p_text(p, op->in.event_finish.id);
        p_text(p, delivered ? "delivered" : retry ? "pending" : "failed");
        if (op->in.event_finish.status > 0)
            p_int(p, op->in.event_finish.status);
        else
            p_text(p, NULL);
        p_text(p, delivered ? NULL : op->in.event_finish.error);
        p_int(p, now_ms);
        if (retry)
            p_int(p, now_ms + op->in.event_finish.retry_in_ms);
        else
            p_text(p, NULL); /* next_attempt_ms unchanged */
        return S_EVENT_FINISH;
    }
    case STORE_OP_RECONCILIATION_RECORD:
        p_text(p, op->in.reconciliation.date);
        p_text(p, op->in.reconciliation.channel);
        p_int(p, op->in.reconciliation.run_ms);
        p_int(p, op->in.reconciliation.differences);
        p_text(p, op->in.reconciliation.report);
        return S_RECONCILIATION_INSERT;
    case STORE_OP_OUTBOX_RESET:
    default:
        PAYD_ASSERT(!"no statement for this store op");
        return S_PING;
    }
}

/* Reads op's answer from its statement's result (which succeeded). */
static int op_result(struct store_op *op, const PGresult *r)
{
    switch (op->kind) {
    case STORE_OP_ORDER_CREATE: {
        if (PQntuples(r) != 1)
            return STORE_E_IO;
        if (int_val(r, 0, 0) == 0)
            return STORE_OK;
        row_to_order(r, 0, 1, &op->out.order);
        return order_same_content(&op->in.order_create, &op->out.order) ? STORE_E_EXISTS
                                                                         : STORE_E_REUSED;
    }
    case STORE_OP_PAYMENT_CREATE: {
        if (PQntuples(r) != 1)
            return STORE_E_IO;
        int rc = (int)int_val(r, 0, 0);
        if (rc == STORE_E_IDEM_EXISTS) {
            struct idem_record *k = &op->out.idem;
            copy_val(r, 0, 1, k->fingerprint, sizeof(k->fingerprint));
            k->status = (int)int_val(r, 0, 2);
            k->body = xstrdup(PQgetvalue(r, 0, 3));
        }
        return rc;
    }
    case STORE_OP_REFUND_CREATE: {
        if (PQntuples(r) != 1)
            return STORE_E_IO;
        int rc = (int)int_val(r, 0, 0);
        if (rc == STORE_E_EXCEEDS)
            op->out.refundable = int_val(r, 0, 1);
        if (rc == STORE_E_IDEM_EXISTS) {
            struct idem_record *k = &op->out.idem;
            copy_val(r, 0, 2, k->fingerprint, sizeof(k->fingerprint));
            k->status = (int)int_val(r, 0, 3);
            k->body = xstrdup(PQgetvalue(r, 0, 4));
        }
        return rc;
    }
    case STORE_OP_PAYMENT_FINISH:
        if (PQntuples(r) != 1)
            return STORE_E_IO;
        op->out.late_refund = bool_val(r, 0, 1);
        return (int)int_val(r, 0, 0);
    case STORE_OP_NOTIFY_APPLY: {
        if (PQntuples(r) != 1)
            return STORE_E_IO;
        int rc = (int)int_val(r, 0, 0);
        memset(&op->out.notified, 0, sizeof(op->out.notified));
        copy_val(r, 0, 1, op->out.notified.id, sizeof(op->out.notified.id));
        copy_val(r, 0, 2, op->out.notified.order_id, sizeof(op->out.notified.order_id));
        copy_val(r, 0, 3, op->out.notified.merchant_id, sizeof(op->out.notified.merchant_id));
        op->out.notified.changed = bool_val(r, 0, 4);
        op->out.notified.late_refund = bool_val(r, 0, 5);
        return rc;
    }
    case STORE_OP_PAYMENT_REROUTE:
    case STORE_OP_MERCHANT_ADD:
    case STORE_OP_REFUND_FINISH:
        return PQntuples(r) == 1 ? (int)int_val(r, 0, 0) : STORE_E_IO;
    case STORE_OP_EVENT_CLAIM: {
        int n = PQntuples(r);
        PAYD_ASSERT(n <= op->in.event_claim.max);
        for (int i = 0; i < n; i++) {
            struct event *e = &op->in.event_claim.events[i];
            memset(e, 0, sizeof(*e));
            copy_val(r, i, 0, e->id, sizeof(e->id));
            copy_val(r, i, 1, e->merchant_id, sizeof(e->merchant_id));
            copy_val(r, i, 2, e->type, sizeof(e->type));
            copy_val(r, i, 3, e->object_id, sizeof(e->object_id));
            e->attempts = int_val(r, i, 4);
            e->created_ms = int_val(r, i, 5);
            e->has_endpoint = bool_val(r, i, 6);
            copy_val(r, i, 7, e->url, sizeof(e->url));
            copy_val(r, i, 8, e->secret, sizeof(e->secret));
        }
        op->out.claimed = n;
        return STORE_OK;
    }
    case STORE_OP_REFUND_CLAIM: {
        int n = PQntuples(r);
        PAYD_ASSERT(n <= op->in.refund_claim.max);
        for (int i = 0; i < n; i++)
            row_to_refund(r, i, &op->in.refund_claim.refunds[i]);
        op->out.claimed = n;
        return STORE_OK;
    }
    case STORE_OP_OUTBOX_CLAIM: {
        int n = PQntuples(r);
        PAYD_ASSERT(n <= op->in.outbox_claim.max);
        for (int i = 0; i < n; i++) {
            struct outbox_msg *m = &op->in.outbox_claim.msgs[i];
            m->id = int_val(r, i, 0);
            copy_val(r, i, 1, m->payment_id, sizeof(m->payment_id));
            m->deliveries = int_val(r, i, 2);
            m->found = !PQgetisnull(r, i, 3);
            if (m->found)
                row_to_payment(r, i, 3, &m->payment);
        }
        op->out.claimed = n;
        return STORE_OK;
    }
    case STORE_OP_RELAY_CLAIM: {
        int n = PQntuples(r);
        PAYD_ASSERT(n <= op->in.outbox_claim.max);
        for (int i = 0; i < n; i++) {
            struct outbox_msg *m = &op->in.outbox_claim.msgs[i];
            memset(m, 0, sizeof(*m));
            m->id = int_val(r, i, 0);
            copy_val(r, i, 1, m->payment_id, sizeof(m->payment_id));
            copy_val(r, i, 2, m->payment.merchant_id, sizeof(m->payment.merchant_id));
            m->deliveries = int_val(r, i, 3); /* times published, this one included */
        }
        op->out.claimed = n;
        return STORE_OK;
    }
    case STORE_OP_IDEM_PURGE:
    case STORE_OP_ORDER_CLOSE_EXPIRED:
        op->out.purged = strtoll(PQcmdTuples((PGresult *)r), NULL, 10);
        return STORE_OK;
    case STORE_OP_MERCHANT_ROTATE:
    case STORE_OP_WEBHOOK_SET:
        return strcmp(PQcmdTuples((PGresult *)r), "1") == 0 ? STORE_OK : STORE_E_NOT_FOUND;
    case STORE_OP_REFUND_RETRY: /* a refund no longer processing needs no retry */
    default:
        return STORE_OK;
    }
}

/* Sorts after every id and number: for the writes that lock many rows but
 * never wait for one (SKIP LOCKED) or, for the idempotency purge, hardly
 * ever. Run last in their batch, they hold their rows only from there to
 * the commit, when the batch waits for nothing more. */
#define LOCK_KEY_LAST "\xff"

/* The row an operation locks first, as a sort key: batches take locks in
 * this order, so that two of them never wait for each other in a cycle.
 * The refund writes of an order's payment lock (in this order) the order,
 * the payment's refund totals and the refund (0007_refunds.sql), so they
 * sort by the order too, next to the order's payment writes. A retry
 * locks its refund only, and sorts after them (refund ids come after order
 * ids), so a batch holds a refund's row only once it has its orders.
 *
 * A notification names its payment or refund by the channel's number, so
 * its order is not known here: it sorts first and takes its order's row
 * while its batch holds nothing yet. A cycle with another batch remains
 * possible (rarely: two notifications in two batches, each for an order the
 * other batch writes); the server detects it and the batch runs again. */
static const char *lock_key(const struct store_op *op)
{
    switch (op->kind) {
    case STORE_OP_ORDER_CREATE:
        return op->in.order_create.merchant_order_no;
    case STORE_OP_PAYMENT_CREATE:
        return op->in.payment_create.payment.order_id;
    case STORE_OP_PAYMENT_FINISH:
        return op->in.payment_finish.payment.order_id;
    case STORE_OP_PAYMENT_REROUTE:
        return op->in.payment_reroute.order_id;
    case STORE_OP_REFUND_CREATE:
        return op->in.refund_create.refund.order_id;
    case STORE_OP_REFUND_FINISH:
        return op->in.refund_finish.refund.order_id; /* the caller's copy: a sort key only */
    case STORE_OP_REFUND_RETRY:
        return op->in.refund_retry.id;
    case STORE_OP_EVENT_FINISH:
        return op->in.event_finish.id;
    case STORE_OP_WEBHOOK_SET:
        return op->in.webhook_set.merchant_id;
    case STORE_OP_ORDER_CLOSE_EXPIRED: /* holds the orders it closed, from there to the commit */
    case STORE_OP_IDEM_PURGE:
        return LOCK_KEY_LAST;
    case STORE_OP_NOTIFY_APPLY:
    case STORE_OP_REFUND_CLAIM: /* skips what others hold: never waits */
    case STORE_OP_EVENT_CLAIM:
    default:
        return "";
    }
}

static int by_lock_key(const void *a, const void *b)
{
    const struct store_op *x = *(struct store_op *const *)a, *y = *(struct store_op *const *)b;
    int c = strcmp(lock_key(x), lock_key(y));
    return c ? c : (x->kind > y->kind) - (x->kind < y->kind);
}

/* SQLSTATEs that say the connection is no good: the batch runs again on a
 * new one (which, with a multi-host connection string, finds the primary). */
static bool reconnect_state(const char *sqlstate)
{
    return sqlstate && (strncmp(sqlstate, "08", 2) == 0 /* connection exceptions */
                        || strcmp(sqlstate, "57P01") == 0  /* admin_shutdown */
                        || strcmp(sqlstate, "57P02") == 0  /* crash_shutdown */
                        || strcmp(sqlstate, "57P03") == 0  /* cannot_connect_now */
                        || strcmp(sqlstate, "25006") == 0  /* read_only: a demoted primary */
                        || strcmp(sqlstate, "57014") == 0); /* query_canceled */
}

/* SQLSTATEs after which the same batch may simply run again. */
static bool transient(const char *sqlstate)
{
    return sqlstate && (strcmp(sqlstate, "40001") == 0     /* serialization_failure */
                        || strcmp(sqlstate, "40P01") == 0  /* deadlock_detected */
                        || strcmp(sqlstate, "55P03") == 0  /* lock_not_available */
                        || reconnect_state(sqlstate));
}

enum batch_outcome {
    BATCH_COMMITTED,
    BATCH_RETRY,  /* transient: run it all again */
    BATCH_BAD_OP, /* one op failed for its own reason: *bad is its index */
    BATCH_CONN,   /* the connection is gone */
    BATCH_FULL,   /* the server's disk is full (disk_full): none can be written */
};

/* Runs ops[0..n) in one transaction, pipelined. On BATCH_COMMITTED every
 * op's rc is set. */
static enum batch_outcome run_pipeline(PGconn *c, struct store_op **ops, int n, int *bad)
{
    enum batch_outcome outcome = BATCH_COMMITTED;
    char **ids = xcalloc((size_t)n, sizeof(*ids));
    if (PQenterPipelineMode(c) != 1) {
        free(ids);
        return BATCH_CONN;
    }
    bool sent = PQsendQueryParams(c, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) == 1;
    for (int i = 0; sent && i < n; i++) {
        struct params p;
        enum stmt s = op_params(ops[i], &p, &ids[i]);
        char name[16];
        snprintf(name, sizeof(name), "s%d", (int)s);
        sent = PQsendQueryPrepared(c, name, p.n, p.v, NULL, NULL, 0) == 1;
    }
    sent = sent && PQsendQueryParams(c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) == 1;
    sent = sent && PQpipelineSync(c) == 1;
    if (!sent) {
        outcome = BATCH_CONN;
        goto out;
    }

    /* Results come in order: BEGIN, each op, COMMIT, then the sync. */
    const char *failed_state = NULL;
    char state[6] = "";
    for (int i = -1; i <= n; i++) {
        PGresult *r = PQgetResult(c);
        if (!r) {
            outcome = BATCH_CONN;
            goto out;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_FATAL_ERROR && !failed_state) {
            const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            snprintf(state, sizeof(state), "%s", code ? code : "");
            failed_state = state;
            if (i >= 0 && i < n && !transient(code)) {
                *bad = i;
                char msg[256];
                log_pg(store_rc_name(STORE_E_IO), conn_error(c, msg, sizeof(msg)));
            }
        }
        if ((st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) && i >= 0 && i < n &&
            !failed_state)
            ops[i]->rc = op_result(ops[i], r);
        PQclear(r);
        /* each query's results end with a NULL */
        r = PQgetResult(c);
        PQclear(r);
    }
    PGresult *sync = PQgetResult(c);
    bool synced = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    PQclear(sync);
    if (!synced) {
        outcome = BATCH_CONN;
        goto out;
    }
    if (failed_state) {
        bool own = *bad >= 0 && !transient(failed_state);
        outcome = own ? BATCH_BAD_OP : reconnect_state(failed_state) ? BATCH_CONN : BATCH_RETRY;
        if (strcmp(failed_state, "53100") == 0)
            outcome = BATCH_FULL;
    }
out:
    if (outcome != BATCH_COMMITTED) {
        /* answers read before the failure are void: nothing committed */
        for (int i = 0; i < n; i++)
            if ((ops[i]->kind == STORE_OP_PAYMENT_CREATE ||
                 ops[i]->kind == STORE_OP_REFUND_CREATE) &&
                ops[i]->rc == STORE_E_IDEM_EXISTS) {
                free(ops[i]->out.idem.body);
                ops[i]->out.idem.body = NULL;
                ops[i]->rc = STORE_E_IO;
            }
    }
    if (PQstatus(c) == CONNECTION_OK)
        PQexitPipelineMode(c);
    if (PQstatus(c) != CONNECTION_OK)
        outcome = BATCH_CONN;
    else if (PQtransactionStatus(c) != PQTRANS_IDLE) {
        PGresult *r = PQexec(c, "ROLLBACK");
        PQclear(r);
    }
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    return outcome;
}

/* Tells the instances' listeners that new queue messages were committed:
 * a NOTIFY of its own, outside the batch (NOTIFY takes a database-wide lock
 * at commit, which serialized every batch when it was part of them), and at
 * most every NOTIFY_MIN_GAP_MS per writer: under load the consumers are
 * busy and need no waking. */
static _Thread_local int64_t notified_ms; /* this writer's last NOTIFY */
static _Thread_local bool notify_pending; /* committed messages not announced yet */

/* Sends the NOTIFY when one is pending and the gap has passed. */
static void notify_if_due(PGconn *c)
{
    int64_t now = clock_mono_ms();
    if (!c)
        notify_pending = false; /* the listeners poll meanwhile */
    if (!notify_pending || now - notified_ms < NOTIFY_MIN_GAP_MS)
        return;
    notify_pending = false;
    notified_ms = now;
    PGresult *r = PQexec(c, "NOTIFY payd_outbox");
    PQclear(r);
}

/* Only a new payment adds a queue message. A new refund is no message: the
 * refund worker finds it by refund_next_due_ms, and on_outbox wakes only
 * the queue. */
static void notify_new_messages(PGconn *c, struct store_op **ops, int n)
{
    for (int i = 0; i < n && !notify_pending; i++)
        notify_pending = ops[i]->kind == STORE_OP_PAYMENT_CREATE && ops[i]->rc == STORE_OK;
    notify_if_due(c);
}

/* The writer's connection, reconnecting for up to RECONNECT_WAIT_MS. */
static PGconn *writer_conn(struct pg_store *s, PGconn **c)
{
    if (*c && PQstatus(*c) == CONNECTION_OK)
        return *c;
    PQfinish(*c);
    *c = NULL;
    int64_t deadline = clock_mono_ms() + RECONNECT_WAIT_MS;
    int64_t pause = 50;
    char err[512] = "";
    while (!(*c = connect_db(s, err, sizeof(err)))) {
        if (clock_mono_ms() + pause > deadline) {
            log_pg("writer_connect", err);
            return NULL;
        }
        sleep_ms(pause);
        pause = pause * 2 > 1000 ? 1000 : pause * 2;
    }
    return *c;
}

/* Runs a batch until it commits, taking out ops that fail on their own and
 * failing everything when the database stays unreachable. */
static void run_batch(struct pg_store *s, PGconn **c, struct store_op **ops, int n)
{
    /* A reset has no statement: it is for a single owner of the outbox;
     * here leases simply expire. */
    struct store_op **work = xcalloc((size_t)n, sizeof(*work));
    int t = 0;
    for (int i = 0; i < n; i++) {
        ops[i]->rc = STORE_OK;
        if (ops[i]->kind != STORE_OP_OUTBOX_RESET)
            work[t++] = ops[i];
    }
    qsort(work, (size_t)t, sizeof(*work), by_lock_key);
    int attempts = 0;
    while (t > 0) {
        for (int i = 0; i < t; i++)
            work[i]->rc = STORE_E_IO; /* until this run commits */
        if (!writer_conn(s, c))
            break;
        int bad = -1;
        enum batch_outcome o = run_pipeline(*c, work, t, &bad);
        if (o == BATCH_COMMITTED) {
            notify_new_messages(*c, work, t);
            break;
        }
        if (o == BATCH_FULL) {
            for (int i = 0; i < t; i++)
                work[i]->rc = STORE_E_FULL;
            break;
        }
        if (o == BATCH_BAD_OP) {
            work[bad]->rc = STORE_E_IO;
            memmove(&work[bad], &work[bad + 1], (size_t)(t - bad - 1) * sizeof(*work));
            t--;
            continue;
        }
        if (o == BATCH_CONN) {
            /* closed whatever happens next: it may hold unread results */
            PQfinish(*c);
            *c = NULL;
        }
        if (++attempts >= BATCH_ATTEMPTS) {
            log_pg("batch", "gave up after repeated transient failures");
            for (int i = 0; i < t; i++)
                work[i]->rc = STORE_E_IO;
            break;
        }
        if (o == BATCH_CONN)
            log_pg("batch", "connection lost; running the batch again");
        sleep_ms(5 * attempts);
    }
    free(work);
}

static void *writer_main(void *arg)
{
    struct pg_store *s = arg;
    pthread_setname_np(pthread_self(), "payd-pgwrite");
    struct store_op **batch = xcalloc((size_t)s->max_batch, sizeof(*batch));
    PGconn *c = NULL;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (s->ring_len == 0 && !s->stopping) {
            if (!notify_pending) {
                pthread_cond_wait(&s->nonempty, &s->mu);
                continue;
            }
            /* idle with an announcement held back: send it when due */
            struct timespec ts;
            clock_deadline(NOTIFY_MIN_GAP_MS, &ts);
            pthread_cond_timedwait(&s->nonempty, &s->mu, &ts);
            if (s->ring_len == 0) {
                pthread_mutex_unlock(&s->mu);
                notify_if_due(c);
                pthread_mutex_lock(&s->mu);
            }
        }
        if (s->ring_len == 0 && s->stopping) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        int n = 0;
        while (s->ring_len > 0 && n < s->max_batch) {
            batch[n++] = s->ring[s->ring_head];
            s->ring_head = (s->ring_head + 1) % s->ring_cap;
            s->ring_len--;
        }
        /* another writer takes what is left */
        if (s->ring_len > 0)
            pthread_cond_signal(&s->nonempty);
        pthread_mutex_unlock(&s->mu);
        int64_t oldest_us = batch[0]->submitted_us;
        run_batch(s, &c, batch, n);
        if (s->on_commit)
            s->on_commit(s->on_commit_arg, n, clock_mono_us() - oldest_us);
        for (int i = 0; i < n; i++)
            batch[i]->done(batch[i]);
    }
    PQfinish(c);
    free(batch);
    return NULL;
}

static int pg_submit(store *base, struct store_op *op)
{
    struct pg_store *s = (struct pg_store *)base;
    pthread_mutex_lock(&s->mu);
    if (s->ring_len == s->ring_cap || s->stopping) {
        pthread_mutex_unlock(&s->mu);
        return STORE_E_BUSY;
    }
    s->ring[(s->ring_head + s->ring_len) % s->ring_cap] = op;
    s->ring_len++;
    pthread_cond_signal(&s->nonempty);
    pthread_mutex_unlock(&s->mu);
    return STORE_OK;
}

/* ---- reads, on pooled connections ---- */

/* Takes a connection from the pool (opening one while below the bound), or
 * NULL when none is free within POOL_WAIT_MS or the database is down. */
static PGconn *pool_take(struct pg_store *s)
{
    struct timespec deadline;
    clock_deadline(POOL_WAIT_MS, &deadline);
    pthread_mutex_lock(&s->pool_mu);
    while (s->idle_len == 0 && s->pool_open >= s->pool_max) {
        if (pthread_cond_timedwait(&s->pool_free, &s->pool_mu, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&s->pool_mu);
            return NULL;
        }
    }
    if (s->idle_len > 0) {
        PGconn *c = s->idle[--s->idle_len];
        pthread_mutex_unlock(&s->pool_mu);
        return c;
    }
    s->pool_open++;
    pthread_mutex_unlock(&s->pool_mu);
    char err[512];
    PGconn *c = connect_db(s, err, sizeof(err));
    if (!c) {
        log_pg("reader_connect", err);
        pthread_mutex_lock(&s->pool_mu);
        s->pool_open--;
        pthread_cond_signal(&s->pool_free);
        pthread_mutex_unlock(&s->pool_mu);
    }
    return c;
}

/* Gives a connection back; a broken one is closed and its place freed. */
static void pool_give(struct pg_store *s, PGconn *c)
{
    bool broken = PQstatus(c) != CONNECTION_OK;
    if (broken)
        PQfinish(c);
    pthread_mutex_lock(&s->pool_mu);
    if (broken)
        s->pool_open--;
    else
        s->idle[s->idle_len++] = c;
    pthread_cond_signal(&s->pool_free);
    pthread_mutex_unlock(&s->pool_mu);
}

/* Runs a read statement with nparams text parameters v. A read that meets
 * a broken connection runs once more on a fresh one. NULL on failure. */
static PGresult *read_query_n(struct pg_store *s, enum stmt q, int nparams,
                              const char *const *v)
{
    char name[16];
    snprintf(name, sizeof(name), "s%d", (int)q);
    for (int attempt = 0; attempt < 2; attempt++) {
        PGconn *c = pool_take(s);
        if (!c)
            return NULL;
        PGresult *r = PQexecPrepared(c, name, nparams, v, NULL, NULL, 0);
        bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        bool broken = PQstatus(c) != CONNECTION_OK;
        if (!ok && !broken) {
            char msg[256];
            log_pg(stmt_sql[q], conn_error(c, msg, sizeof(msg)));
        }
        pool_give(s, c);
        if (ok)
            return r;
        PQclear(r);
        if (!broken)
            return NULL;
    }
    return NULL;
}

/* read_query_n with up to two parameters (b NULL: one; a NULL too: none). */
static PGresult *read_query(struct pg_store *s, enum stmt q, const char *a, const char *b)
{
    const char *v[2] = {a, b};
    return read_query_n(s, q, b ? 2 : a ? 1 : 0, v);
}

static int pg_merchant_by_key_hash(store *base, const char *key_hash, struct merchant *out)
{
    PGresult *r = read_query((struct pg_store *)base, S_MERCHANT_BY_HASH, key_hash, NULL);
    if (!r)
        return STORE_E_IO;
    int rc = PQntuples(r) == 1 ? STORE_OK : STORE_E_NOT_FOUND;
    if (rc == STORE_OK) {
        copy_val(r, 0, 0, out->id, sizeof(out->id));
        copy_val(r, 0, 1, out->name, sizeof(out->name));
        out->created_ms = int_val(r, 0, 2);
    }
    PQclear(r);
    return rc;
}

static int pg_merchant_list(store *base, int (*each)(void *, const struct merchant *), void *arg)
{
    PGresult *r = read_query((struct pg_store *)base, S_MERCHANT_LIST, NULL, NULL);
    if (!r)
        return STORE_E_IO;
    for (int i = 0; i < PQntuples(r); i++) {
        struct merchant m;
        copy_val(r, i, 0, m.id, sizeof(m.id));
        copy_val(r, i, 1, m.name, sizeof(m.name));
        m.created_ms = int_val(r, i, 2);
        if (each(arg, &m) != 0)
            break;
    }
    PQclear(r);
    return STORE_OK;
}

/* A one-value query: the value, or fallback when there is none. */
static int64_t read_scalar(struct pg_store *s, enum stmt q, int64_t fallback)
{
    PGresult *r = read_query(s, q, NULL, NULL);
    int64_t v = fallback;
    if (r && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        v = int_val(r, 0, 0);
    PQclear(r);
    return v;
}

static int64_t pg_merchant_count(store *base)
{
    return read_scalar((struct pg_store *)base, S_MERCHANT_COUNT, -1);
}

/* A one-row read: convert fills out from the row when there is one. */
static int get_one(store *base, enum stmt q, const char *a, const char *b,
                   void (*convert)(const PGresult *r, void *out), void *out)
{
    PGresult *r = read_query((struct pg_store *)base, q, a, b);
    if (!r)
        return STORE_E_IO;
    int rc = PQntuples(r) == 1 ? STORE_OK : STORE_E_NOT_FOUND;
    if (rc == STORE_OK)
        convert(r, out);
    PQclear(r);
    return rc;
}

static void convert_order(const PGresult *r, void *out)
{
    row_to_order(r, 0, 0, out);
}

static void convert_payment(const PGresult *r, void *out)
{
    row_to_payment(r, 0, 0, out);
}

static void convert_idem(const PGresult *r, void *out)
{
    struct idem_record *k = out;
    copy_val(r, 0, 0, k->fingerprint, sizeof(k->fingerprint));
    k->status = (int)int_val(r, 0, 1);
    k->body = xstrdup(PQgetvalue(r, 0, 2));
}

static int pg_order_get(store *base, const char *merchant_id, const char *id, struct order *out)
{
    return get_one(base, S_ORDER_GET, id, merchant_id, convert_order, out);
}

static int pg_payment_get(store *base, const char *merchant_id, const char *id,
                          struct payment *out)
{
    return get_one(base, S_PAYMENT_GET, id, merchant_id, convert_payment, out);
}

static int pg_payment_list(store *base, const char *merchant_id, const char *order_id,
                           int (*each)(void *, const struct payment *), void *arg)
{
    PGresult *r = read_query((struct pg_store *)base, S_PAYMENT_LIST, order_id, merchant_id);
    if (!r)
        return STORE_E_IO;
    for (int i = 0; i < PQntuples(r); i++) {
        struct payment p;
        row_to_payment(r, i, 0, &p);
        if (each(arg, &p) != 0)
            break;
    }
    PQclear(r);
    return STORE_OK;
}

static int pg_idem_get(store *base, const char *merchant_id, const char *key,
                       struct idem_record *out)
{
    return get_one(base, S_IDEM_GET, merchant_id, key, convert_idem, out);
}

static void convert_refund(const PGresult *r, void *out)
{
    row_to_refund(r, 0, out);
}

static int pg_refund_get(store *base, const char *merchant_id, const char *id,
                         struct refund *out)
{
    return get_one(base, S_REFUND_GET, id, merchant_id, convert_refund, out);
}

static int pg_refund_list(store *base, const char *merchant_id, const char *payment_id,
                          int (*each)(void *, const struct refund *), void *arg)
{
    PGresult *r = read_query((struct pg_store *)base, S_REFUND_LIST, payment_id, merchant_id);
    if (!r)
        return STORE_E_IO;
    int rc = STORE_OK;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        struct refund f;
        row_to_refund(r, i, &f);
        rc = each(arg, &f);
    }
    PQclear(r);
    return rc;
}

/* As pg_outbox_next_due_ms: INT64_MAX also when the store cannot be read
 * (the caller polls again after its idle interval). */
static int64_t pg_refund_next_due_ms(store *base)
{
    return read_scalar((struct pg_store *)base, S_REFUND_NEXT, INT64_MAX);
}

static void convert_webhook(const PGresult *r, void *out)
{
    struct webhook *w = out;
    memset(w, 0, sizeof(*w));
    copy_val(r, 0, 0, w->merchant_id, sizeof(w->merchant_id));
    copy_val(r, 0, 1, w->url, sizeof(w->url));
    copy_val(r, 0, 2, w->secret, sizeof(w->secret));
    w->updated_ms = int_val(r, 0, 3);
}

static int pg_webhook_get(store *base, const char *merchant_id, struct webhook *out)
{
    return get_one(base, S_WEBHOOK_GET, merchant_id, NULL, convert_webhook, out);
}

/* As pg_refund_next_due_ms. */
static int64_t pg_event_next_due_ms(store *base)
{
    return read_scalar((struct pg_store *)base, S_EVENT_NEXT, INT64_MAX);
}

static int pg_payment_by_serial(store *base, const char *serial_no, struct payment *out)
{
    return get_one(base, S_PAYMENT_BY_SERIAL, serial_no, NULL, convert_payment, out);
}

static int pg_refund_by_no(store *base, const char *refund_no, struct refund *out)
{
    return get_one(base, S_REFUND_BY_NO, refund_no, NULL, convert_refund, out);
}

/* The rows of q for (channel, from_ms, to_ms), or NULL on failure. */
static PGresult *read_between(store *base, enum stmt q, const char *channel, int64_t from_ms,
                              int64_t to_ms)
{
    char from[24], to[24];
    snprintf(from, sizeof(from), "%lld", (long long)from_ms);
    snprintf(to, sizeof(to), "%lld", (long long)to_ms);
    const char *v[3] = {channel, from, to};
    return read_query_n((struct pg_store *)base, q, 3, v);
}

static int pg_payments_succeeded(store *base, const char *channel, int64_t from_ms,
                                 int64_t to_ms, int (*each)(void *, const struct payment *),
                                 void *arg)
{
    PGresult *r = read_between(base, S_PAYMENTS_SUCCEEDED, channel, from_ms, to_ms);
    if (!r)
        return STORE_E_IO;
    for (int i = 0; i < PQntuples(r); i++) {
        struct payment p;
        row_to_payment(r, i, 0, &p);
        if (each(arg, &p) != 0)
            break;
    }
    PQclear(r);
    return STORE_OK;
}

static int pg_refunds_succeeded(store *base, const char *channel, int64_t from_ms,
                                int64_t to_ms, int (*each)(void *, const struct refund *),
                                void *arg)
{
    PGresult *r = read_between(base, S_REFUNDS_SUCCEEDED, channel, from_ms, to_ms);
    if (!r)
        return STORE_E_IO;
    for (int i = 0; i < PQntuples(r); i++) {
        struct refund f;
        row_to_refund(r, i, &f);
        if (each(arg, &f) != 0)
            break;
    }
    PQclear(r);
    return STORE_OK;
}

static int pg_balance(store *base, const char *merchant_id, struct store_amount *out, int max)
{
    char account[64];
    snprintf(account, sizeof(account), "merchant:%s", merchant_id);
    PGresult *r = read_query((struct pg_store *)base, S_BALANCE, account, NULL);
    if (!r)
        return STORE_E_IO;
    int n = 0;
    for (int i = 0; i < PQntuples(r) && n < max; i++, n++) {
        copy_val(r, i, 0, out[n].currency, sizeof(out[n].currency));
        out[n].amount_minor = int_val(r, i, 1);
    }
    PQclear(r);
    return n;
}

static int64_t pg_max_fence(store *base)
{
    return read_scalar((struct pg_store *)base, S_MAX_FENCE, 0);
}

static int64_t pg_outbox_next_due_ms(store *base)
{
    return read_scalar((struct pg_store *)base, S_OUTBOX_NEXT, INT64_MAX);
}

static int pg_queue_stats(store *base, int64_t dead_after, struct store_queue_stats *out)
{
    char after[24];
    snprintf(after, sizeof(after), "%lld", (long long)dead_after);
    PGresult *r = read_query((struct pg_store *)base, S_QUEUE_STATS, after, NULL);
    if (!r)
        return STORE_E_IO;
    int rc = PQntuples(r) == 1 ? STORE_OK : STORE_E_IO;
    if (rc == STORE_OK) {
        out->depth = int_val(r, 0, 0);
        out->oldest_created_ms = int_val(r, 0, 1);
        out->dead = int_val(r, 0, 2);
    }
    PQclear(r);
    return rc;
}

static int64_t pg_ledger_imbalance(store *base)
{
    return read_scalar((struct pg_store *)base, S_LEDGER_IMBALANCE, -1);
}

static int pg_ping(store *base)
{
    return read_scalar((struct pg_store *)base, S_PING, 0) == 1 ? STORE_OK : STORE_E_IO;
}

/* ---- notifications ---- */

#define LISTEN_POLL_MS 500 /* how often the listener looks at the stop flag */

static bool listener_stopping(struct pg_store *s)
{
    pthread_mutex_lock(&s->mu);
    bool stop = s->stopping || s->listener_stop;
    pthread_mutex_unlock(&s->mu);
    return stop;
}

/* LISTENs on payd_outbox and calls on_outbox for every notification, and
 * once after each (re)connection, as messages may have come meanwhile. */
static void *listener_main(void *arg)
{
    struct pg_store *s = arg;
    pthread_setname_np(pthread_self(), "payd-pglisten");
    PGconn *c = NULL;
    while (!listener_stopping(s)) {
        if (!c || PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            char err[512];
            c = connect_db(s, err, sizeof(err));
            PGresult *r = c ? PQexec(c, "LISTEN payd_outbox") : NULL;
            bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
            PQclear(r);
            if (!ok) {
                PQfinish(c);
                c = NULL;
                sleep_ms(1000);
                continue;
            }
            s->on_outbox(s->on_outbox_arg);
        }
        struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
        if (poll(&pfd, 1, LISTEN_POLL_MS) <= 0)
            continue;
        if (PQconsumeInput(c) != 1)
            continue; /* the connection broke: reconnect above */
        bool any = false;
        PGnotify *n;
        while ((n = PQnotifies(c))) {
            any = true;
            PQfreemem(n);
        }
        if (any)
            s->on_outbox(s->on_outbox_arg);
    }
    PQfinish(c);
    return NULL;
}

static void stop_listener(struct pg_store *s)
{
    if (!s->listener_started)
        return;
    pthread_mutex_lock(&s->mu);
    s->listener_stop = true;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->listener, NULL);
    s->listener_started = false;
}

/* fn NULL: stop calling (before whatever fn touches goes away). */
static void pg_on_outbox(store *base, void (*fn)(void *), void *arg)
{
    struct pg_store *s = (struct pg_store *)base;
    stop_listener(s);
    if (!fn)
        return;
    s->listener_stop = false;
    s->on_outbox = fn;
    s->on_outbox_arg = arg;
    if (pthread_create(&s->listener, NULL, listener_main, s) == 0)
        s->listener_started = true;
    else
        log_pg("listener", "cannot start the thread; workers will poll");
}

/* ---- open and close ---- */

static void pg_close(store *base)
{
    struct pg_store *s = (struct pg_store *)base;
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->nonempty);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->writers_started; i++)
        pthread_join(s->writers[i], NULL);
    stop_listener(s);
    for (int i = 0; i < s->idle_len; i++)
        PQfinish(s->idle[i]);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->nonempty);
    pthread_mutex_destroy(&s->pool_mu);
    pthread_cond_destroy(&s->pool_free);
    free(s->writers);
    free(s->idle);
    free(s->ring);
    free(s->conninfo);
    free(s);
}

static store *pg_open(const struct store_options *opts, char *err, size_t err_size)
{
    if (!opts->url || !*opts->url) {
        snprintf(err, err_size, "store: [store] url is required for the postgres backend");
        return NULL;
    }
    struct pg_store *s = xcalloc(1, sizeof(*s));
    s->base.be = &store_postgres_backend;
    s->conninfo = xstrdup(opts->url);
    conn_values_init(s);
    s->max_batch = opts->max_batch;
    s->on_commit = opts->on_commit;
    s->on_commit_arg = opts->on_commit_arg;
    s->ring_cap = opts->queue_capacity;
    s->ring = xcalloc((size_t)s->ring_cap, sizeof(*s->ring));
    s->pool_max = opts->pool_size > 0 ? opts->pool_size : 8;
    s->idle = xcalloc((size_t)s->pool_max, sizeof(*s->idle));
    s->writer_count = opts->writers > 0 ? opts->writers : 2;
    s->writers = xcalloc((size_t)s->writer_count, sizeof(*s->writers));
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->nonempty, NULL);
    pthread_mutex_init(&s->pool_mu, NULL);
    pthread_cond_init(&s->pool_free, NULL);

    /* The first connection applies the migrations, then joins the pool
     * (it is prepared again: the schema's functions may be new). */
    PGconn *c = PQconnectdbParams(conn_keys, s->conn_values, 1);
    char buf[256];
    if (!c || PQstatus(c) != CONNECTION_OK) {
        snprintf(err, err_size, "store: cannot connect to PostgreSQL: %s",
                 conn_error(c, buf, sizeof(buf)));
        PQfinish(c);
        goto out_free;
    }
    PQsetNoticeProcessor(c, ignore_notice, NULL);
    int migrated = migrate(c, err, err_size);
    PQfinish(c);
    if (migrated != 0)
        goto out_free;
    c = connect_db(s, err, err_size);
    if (!c)
        goto out_free;
    s->idle[s->idle_len++] = c;
    s->pool_open = 1;

    for (int i = 0; i < s->writer_count; i++) {
        if (pthread_create(&s->writers[i], NULL, writer_main, s) != 0) {
            snprintf(err, err_size, "store: cannot start a writer thread");
            goto out_free;
        }
        s->writers_started++;
    }
    return &s->base;

out_free:
    pg_close(&s->base);
    return NULL;
}

const struct store_backend store_postgres_backend = {
    .name = "postgres",
    .open = pg_open,
    .close = pg_close,
    .submit = pg_submit,
    .merchant_by_key_hash = pg_merchant_by_key_hash,
    .merchant_list = pg_merchant_list,
    .merchant_count = pg_merchant_count,
    .order_get = pg_order_get,
    .payment_get = pg_payment_get,
    .payment_list = pg_payment_list,
    .idem_get = pg_idem_get,
    .refund_get = pg_refund_get,
    .refund_list = pg_refund_list,
    .refund_next_due_ms = pg_refund_next_due_ms,
    .webhook_get = pg_webhook_get,
    .payment_by_serial = pg_payment_by_serial,
    .refund_by_no = pg_refund_by_no,
    .payments_succeeded = pg_payments_succeeded,
    .refunds_succeeded = pg_refunds_succeeded,
    .event_next_due_ms = pg_event_next_due_ms,
    .balance = pg_balance,
    .max_fence = pg_max_fence,
    .outbox_next_due_ms = pg_outbox_next_due_ms,
    .queue_stats = pg_queue_stats,
    .ledger_imbalance = pg_ledger_imbalance,
    .ping = pg_ping,
    .on_outbox = pg_on_outbox,
};
