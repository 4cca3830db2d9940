/*
 * sqlite.c - the embedded store: SQLite in WAL mode with synchronous=FULL.
 *
 * One writer thread owns the only write connection. Submitted operations
 * wait in a bounded ring; the writer takes everything that is there (up to
 * max_batch), runs each (in its own savepoint when it makes several
 * changes) inside one BEGIN IMMEDIATE transaction, commits once (one fsync
 * for the whole batch: group commit), and hands the batch to the completer
 * thread, which calls every operation's done() while the writer goes on
 * with the next batch: waking the waiting requests and threads costs
 * system calls that the writer, the one serial stage, should not pay. Reads use one connection per
 * thread, created on first use, so they never wait for the writer (WAL lets
 * readers see the last commit while a write is under way).
 *
 * The schema enforces what must never happen even if code above were wrong:
 * one succeeded payment per order and one processing payment per order
 * (partial unique indexes), one merchant order number per merchant, one
 * idempotency record per merchant and key, one posting per transfer and
 * account in the ledger.
 */
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "store/store.h"
#include "util/util.h"

extern const struct store_backend store_sqlite_backend;

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS merchants("
    "  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, key_hash TEXT NOT NULL UNIQUE,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS orders("
    "  id TEXT PRIMARY KEY, merchant_id TEXT NOT NULL REFERENCES merchants(id),"
    "  merchant_order_no TEXT NOT NULL,"
    "  amount INTEGER NOT NULL CHECK (amount BETWEEN 1 AND 1000000000000000),"
    "  currency TEXT NOT NULL CHECK (length(currency) = 3), description TEXT,"
    "  status TEXT NOT NULL CHECK (status IN ('pending_payment','paid','closed',"
    "    'partially_refunded','refunded')),"
    "  fence INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,"
    "  UNIQUE (merchant_id, merchant_order_no)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS payments("
    "  id TEXT PRIMARY KEY, order_id TEXT NOT NULL REFERENCES orders(id),"
    "  merchant_id TEXT NOT NULL, amount INTEGER NOT NULL CHECK (amount > 0),"
    "  currency TEXT NOT NULL, channel TEXT NOT NULL, method TEXT NOT NULL,"
    "  status TEXT NOT NULL CHECK (status IN ('processing','succeeded','failed')),"
    "  serial_no TEXT NOT NULL UNIQUE, channel_txn_id TEXT, failure_code TEXT,"
    "  failure_message TEXT, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL)"
    "  WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS payments_by_order ON payments(order_id, created_ms);"
    "CREATE UNIQUE INDEX IF NOT EXISTS payments_one_succeeded ON payments(order_id)"
    "  WHERE status = 'succeeded';"
    "CREATE UNIQUE INDEX IF NOT EXISTS payments_one_processing ON payments(order_id)"
    "  WHERE status = 'processing';"
    "CREATE TABLE IF NOT EXISTS outbox("
    "  id INTEGER PRIMARY KEY, payment_id TEXT NOT NULL REFERENCES payments(id),"
    "  available_ms INTEGER NOT NULL, deliveries INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox(available_ms);"
    "CREATE TABLE IF NOT EXISTS idempotency_keys("
    "  merchant_id TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,"
    "  status INTEGER NOT NULL, body TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (merchant_id, key)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS idempotency_keys_age ON idempotency_keys(created_ms);"
    "CREATE TABLE IF NOT EXISTS ledger_entries("
    "  transfer_id TEXT NOT NULL, account TEXT NOT NULL,"
    "  amount INTEGER NOT NULL, currency TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (transfer_id, account)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS ledger_by_account ON ledger_entries(account, currency);"
    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '1');";

#define ORDER_COLS "id, merchant_id, merchant_order_no, amount, currency, description, status," \
                   " created_ms"
#define PAYMENT_COLS "id, order_id, merchant_id, amount, currency, channel, method, status,"   \
                     " serial_no, channel_txn_id, failure_code, failure_message, created_ms,"   \
                     " updated_ms"

/* Write statements, prepared once on the writer connection. */
enum wstmt {
    W_SAVEPOINT,
    W_RELEASE,
    W_ROLLBACK_TO,
    W_BEGIN,
    W_COMMIT,
    W_ROLLBACK,
    W_ORDER_INSERT,
    W_ORDER_BY_NO,
    W_ORDER_LOCK_STATE,
    W_ORDER_SET_FENCE,
    W_ORDER_FENCE_PAID,
    W_IDEM_GET,
    W_IDEM_INSERT,
    W_PAYMENT_INSERT,
    W_PAYMENT_FINISH,
    W_OUTBOX_INSERT,
    W_OUTBOX_CLAIM,
    W_OUTBOX_ACK,
    W_OUTBOX_RETRY,
    W_OUTBOX_DEFER,
    W_OUTBOX_RESET,
    W_PAYMENT_REROUTE,
    W_LEDGER_INSERT,
    W_IDEM_PURGE,
    W_MERCHANT_INSERT,
    W_MERCHANT_ROTATE,
    W_PAYMENT_GET,
    W_COUNT
};

static const char *const wsql[W_COUNT] = {
    [W_SAVEPOINT] = "SAVEPOINT op",
    [W_RELEASE] = "RELEASE op",
    [W_ROLLBACK_TO] = "ROLLBACK TO op",
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_ORDER_INSERT] =
        "INSERT INTO orders(id, merchant_id, merchant_order_no, amount, currency, description,"
        " status, fence, created_ms, updated_ms) VALUES (?1,?2,?3,?4,?5,?6,'pending_payment',0,"
        "?7,?7)",
    [W_ORDER_BY_NO] = "SELECT id, merchant_id, merchant_order_no, amount, currency, description,"
                      " status, created_ms FROM orders WHERE merchant_id = ?1 AND"
                      " merchant_order_no = ?2",
    [W_ORDER_LOCK_STATE] = "SELECT status, fence, amount, currency FROM orders WHERE id = ?1"
                           " AND merchant_id = ?2",
    [W_ORDER_SET_FENCE] = "UPDATE orders SET fence = ?2 WHERE id = ?1",
    [W_ORDER_FENCE_PAID] = "UPDATE orders SET fence = ?2, status = 'paid', updated_ms = ?3"
                           " WHERE id = ?1",
    [W_IDEM_GET] = "SELECT fingerprint, status, body FROM idempotency_keys WHERE"
                   " merchant_id = ?1 AND key = ?2",
    [W_IDEM_INSERT] = "INSERT INTO idempotency_keys(merchant_id, key, fingerprint, status, body,"
                      " created_ms) VALUES (?1,?2,?3,?4,?5,?6)",
    [W_PAYMENT_INSERT] =
        "INSERT INTO payments(id, order_id, merchant_id, amount, currency, channel, method,"
        " status, serial_no, created_ms, updated_ms) VALUES (?1,?2,?3,?4,?5,?6,?7,'processing',"
        "?8,?9,?9)",
    [W_PAYMENT_FINISH] =
        "UPDATE payments SET status = ?2, channel_txn_id = ?3, failure_code = ?4,"
        " failure_message = ?5, updated_ms = ?6 WHERE id = ?1 AND order_id = ?7 AND"
        " status = 'processing'",
    [W_OUTBOX_INSERT] = "INSERT INTO outbox(payment_id, available_ms, deliveries, created_ms)"
                        " VALUES (?1, ?2, 0, ?2)",
    [W_OUTBOX_CLAIM] = "UPDATE outbox SET available_ms = ?2, deliveries = deliveries + 1"
                       " WHERE id IN (SELECT id FROM outbox WHERE available_ms <= ?1"
                       " ORDER BY available_ms LIMIT ?3) RETURNING id, payment_id, deliveries",
    [W_OUTBOX_ACK] = "DELETE FROM outbox WHERE id = ?1",
    [W_OUTBOX_RETRY] = "UPDATE outbox SET available_ms = ?2 WHERE id = ?1",
    [W_OUTBOX_DEFER] = "UPDATE outbox SET available_ms = ?2, deliveries = max(deliveries - 1, 0)"
                       " WHERE id = ?1 AND deliveries = ?3",
    [W_OUTBOX_RESET] = "UPDATE outbox SET available_ms = ?1 WHERE available_ms > ?1",
    [W_PAYMENT_REROUTE] = "UPDATE payments SET channel = ?2, updated_ms = ?3 WHERE id = ?1 AND"
                          " channel = ?4 AND status = 'processing'",
    [W_LEDGER_INSERT] = "INSERT INTO ledger_entries(transfer_id, account, amount, currency,"
                        " created_ms) VALUES (?1,?2,-?4,?5,?6), (?1,?3,?4,?5,?6)",
    [W_IDEM_PURGE] = "DELETE FROM idempotency_keys WHERE (merchant_id, key) IN (SELECT"
                     " merchant_id, key FROM idempotency_keys WHERE created_ms < ?1 LIMIT ?2)",
    [W_MERCHANT_INSERT] = "INSERT INTO merchants(id, name, key_hash, created_ms) VALUES"
                          " (?1,?2,?3,?4)",
    [W_MERCHANT_ROTATE] = "UPDATE merchants SET key_hash = ?2 WHERE name = ?1",
    [W_PAYMENT_GET] = "SELECT " PAYMENT_COLS " FROM payments WHERE id = ?1",
};

/* Read statements, prepared on each reader connection when first used. */
enum rstmt {
    R_MERCHANT_BY_HASH,
    R_MERCHANT_LIST,
    R_MERCHANT_COUNT,
    R_ORDER_GET,
    R_PAYMENT_GET,
    R_PAYMENT_LIST,
    R_IDEM_GET,
    R_BALANCE,
    R_MAX_FENCE,
    R_QUEUE_STATS,
    R_LEDGER_IMBALANCE,
    R_OUTBOX_NEXT,
    R_PING,
    R_COUNT
};

static const char *const rsql[R_COUNT] = {
    [R_MERCHANT_BY_HASH] = "SELECT id, name, created_ms FROM merchants WHERE key_hash = ?1",
    [R_MERCHANT_LIST] = "SELECT id, name, created_ms FROM merchants ORDER BY created_ms, name",
    [R_MERCHANT_COUNT] = "SELECT count(*) FROM merchants",
    [R_ORDER_GET] = "SELECT " ORDER_COLS " FROM orders WHERE id = ?1 AND merchant_id = ?2",
    [R_PAYMENT_GET] = "SELECT " PAYMENT_COLS " FROM payments WHERE id = ?1 AND merchant_id = ?2",
    [R_PAYMENT_LIST] = "SELECT " PAYMENT_COLS " FROM payments WHERE order_id = ?1 AND"
                       " merchant_id = ?2 ORDER BY created_ms, id",
    [R_IDEM_GET] = "SELECT fingerprint, status, body FROM idempotency_keys WHERE"
                   " merchant_id = ?1 AND key = ?2",
    [R_BALANCE] = "SELECT currency, sum(amount) FROM ledger_entries WHERE account = ?1"
                  " GROUP BY currency ORDER BY currency",
    [R_MAX_FENCE] = "SELECT coalesce(max(fence), 0) FROM orders",
    [R_QUEUE_STATS] = "SELECT count(*), coalesce(min(created_ms), 0),"
                      " coalesce(sum(deliveries >= ?1), 0) FROM outbox",
    [R_LEDGER_IMBALANCE] = "SELECT coalesce(sum(abs(t)), 0) FROM"
                           " (SELECT sum(amount) AS t FROM ledger_entries GROUP BY currency)",
    [R_OUTBOX_NEXT] = "SELECT min(available_ms) FROM outbox",
    [R_PING] = "SELECT 1",
};

/* How many idempotency records one purge operation deletes at most, so that
 * a purge never holds the writer for long. */
#define PURGE_BATCH 5000

/* WAL frames after which the checkpointer copies the log into the database.
 * Checkpoints run on their own thread and connection, so the writer never
 * spends its time on them (SQLite's automatic checkpoint would run inside
 * the writer's commit). */
#define CHECKPOINT_FRAMES 1000

struct reader {
    struct sqlite_store *owner;
    sqlite3 *db;
    sqlite3_stmt *stmts[R_COUNT];
    struct reader *next; /* in the store's list of readers */
};

struct sqlite_store {
    struct store base;
    char path[1100];
    /* writer */
    sqlite3 *wdb;
    sqlite3_stmt *w[W_COUNT];
    pthread_t writer;
    bool writer_started;
    pthread_mutex_t mu;
    pthread_cond_t nonempty;
    struct store_op **ring;
    int ring_cap, ring_head, ring_len;
    int max_batch;
    bool stopping;
    void (*on_commit)(void *arg, int ops, int64_t latency_us);
    void *on_commit_arg;
    /* completer */
    pthread_t completer;
    bool completer_started;
    pthread_mutex_t done_mu;
    pthread_cond_t has_done;
    struct done_batch *done_head, **done_tail;
    bool done_stopping;
    /* checkpointer */
    sqlite3 *cdb;
    pthread_t checkpointer;
    bool checkpointer_started;
    pthread_cond_t wal_grew;
    bool checkpoint_due;
    int wal_frames_checkpointed; /* the log's size at the last checkpoint */
    /* readers */
    pthread_key_t reader_key;
    pthread_mutex_t readers_mu;
    struct reader *readers;
};

static void log_db_error(sqlite3 *db, const char *what)
{
    fprintf(stderr, "{\"level\":\"error\",\"msg\":\"sqlite: %s: %s\"}\n", what, sqlite3_errmsg(db));
}

/* ---- small statement helpers ---- */

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* Copies a text column into a fixed buffer, cut to fit (fields are
 * validated to fit before they are stored). */
static void copy_col(sqlite3_stmt *st, int col, char *out, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    size_t n = t ? (size_t)sqlite3_column_bytes(st, col) : 0;
    if (n >= size)
        n = size - 1;
    if (n)
        memcpy(out, t, n);
    out[n] = '\0';
}

/* Runs a statement that returns no rows; returns the sqlite result code. */
static int step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static void row_to_order(sqlite3_stmt *st, struct order *o)
{
    memset(o, 0, sizeof(*o));
    copy_col(st, 0, o->id, sizeof(o->id));
    copy_col(st, 1, o->merchant_id, sizeof(o->merchant_id));
    copy_col(st, 2, o->merchant_order_no, sizeof(o->merchant_order_no));
    o->amount_minor = sqlite3_column_int64(st, 3);
    copy_col(st, 4, o->currency, sizeof(o->currency));
    o->has_description = sqlite3_column_type(st, 5) != SQLITE_NULL;
    copy_col(st, 5, o->description, sizeof(o->description));
    char status[32];
    copy_col(st, 6, status, sizeof(status));
    PAYD_ASSERT(order_status_parse(status, &o->status) == 0);
    o->created_ms = sqlite3_column_int64(st, 7);
}

static void row_to_payment(sqlite3_stmt *st, struct payment *p)
{
    memset(p, 0, sizeof(*p));
    copy_col(st, 0, p->id, sizeof(p->id));
    copy_col(st, 1, p->order_id, sizeof(p->order_id));
    copy_col(st, 2, p->merchant_id, sizeof(p->merchant_id));
    p->amount_minor = sqlite3_column_int64(st, 3);
    copy_col(st, 4, p->currency, sizeof(p->currency));
    copy_col(st, 5, p->channel, sizeof(p->channel));
    copy_col(st, 6, p->method, sizeof(p->method));
    char status[32];
    copy_col(st, 7, status, sizeof(status));
    PAYD_ASSERT(payment_status_parse(status, &p->status) == 0);
    copy_col(st, 8, p->serial_no, sizeof(p->serial_no));
    copy_col(st, 9, p->channel_txn_id, sizeof(p->channel_txn_id));
    copy_col(st, 10, p->failure_code, sizeof(p->failure_code));
    copy_col(st, 11, p->failure_message, sizeof(p->failure_message));
    p->created_ms = sqlite3_column_int64(st, 12);
    p->updated_ms = sqlite3_column_int64(st, 13);
}

/* ---- write operations, each run inside its own savepoint ---- */

static int op_order_create(struct sqlite_store *s, struct store_op *op)
{
    const struct order *o = &op->in.order_create;
    sqlite3_stmt *st = s->w[W_ORDER_INSERT];
    bind_text(st, 1, o->id);
    bind_text(st, 2, o->merchant_id);
    bind_text(st, 3, o->merchant_order_no);
    sqlite3_bind_int64(st, 4, o->amount_minor);
    bind_text(st, 5, o->currency);
    bind_text(st, 6, o->has_description ? o->description : NULL);
    sqlite3_bind_int64(st, 7, o->created_ms);
    int rc = step_done(st);
    if (rc == SQLITE_DONE)
        return STORE_OK;
    if (rc != SQLITE_CONSTRAINT)
        return STORE_E_IO;
    /* The merchant order number exists: the same order again, or a reuse. */
    st = s->w[W_ORDER_BY_NO];
    bind_text(st, 1, o->merchant_id);
    bind_text(st, 2, o->merchant_order_no);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        row_to_order(st, &op->out.order);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_ROW)
        return STORE_E_IO;
    return order_same_content(o, &op->out.order) ? STORE_E_EXISTS : STORE_E_REUSED;
}

/* Checks the caller's fencing token against the newest one the order has
 * seen and records it; with paid_ms > 0 also moves the order from
 * pending_payment to paid. Reads the order's status, amount and currency.
 * (A SELECT and a plain UPDATE: an UPDATE ... RETURNING costs more here,
 * as SQLite buffers its rows in a temporary table.) */
static int fence_order(struct sqlite_store *s, const char *order_id, const char *merchant_id,
                       int64_t fence, int64_t paid_ms, enum order_status *status,
                       int64_t *amount_minor, char currency[4])
{
    sqlite3_stmt *st = s->w[W_ORDER_LOCK_STATE];
    bind_text(st, 1, order_id);
    bind_text(st, 2, merchant_id);
    int rc = sqlite3_step(st);
    int64_t stored_fence = 0;
    char name[32] = "";
    if (rc == SQLITE_ROW) {
        copy_col(st, 0, name, sizeof(name));
        stored_fence = sqlite3_column_int64(st, 1);
        *amount_minor = sqlite3_column_int64(st, 2);
        copy_col(st, 3, currency, 4);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == SQLITE_DONE)
        return STORE_E_NOT_FOUND;
    if (rc != SQLITE_ROW)
        return STORE_E_IO;
    if (stored_fence > fence)
        return STORE_E_STALE_FENCE;
    PAYD_ASSERT(order_status_parse(name, status) == 0);
    if (paid_ms > 0 && *status != ORDER_PENDING_PAYMENT)
        return STORE_E_NOT_PAYABLE;

    st = s->w[paid_ms > 0 ? W_ORDER_FENCE_PAID : W_ORDER_SET_FENCE];
    bind_text(st, 1, order_id);
    sqlite3_bind_int64(st, 2, fence);
    if (paid_ms > 0)
        sqlite3_bind_int64(st, 3, paid_ms);
    if (step_done(st) != SQLITE_DONE)
        return STORE_E_IO;
    if (paid_ms > 0)
        *status = ORDER_PAID;
    return STORE_OK;
}

static int op_payment_create(struct sqlite_store *s, struct store_op *op)
{
    const struct payment *p = &op->in.payment_create.payment;
    const char *key = op->in.payment_create.idem_key;
    sqlite3_stmt *st;
    int rc;

    if (key) {
        st = s->w[W_IDEM_GET];
        bind_text(st, 1, p->merchant_id);
        bind_text(st, 2, key);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            struct idem_record *r = &op->out.idem;
            copy_col(st, 0, r->fingerprint, sizeof(r->fingerprint));
            r->status = sqlite3_column_int(st, 1);
            r->body = xstrdup((const char *)sqlite3_column_text(st, 2));
        }
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (rc == SQLITE_ROW)
            return STORE_E_IDEM_EXISTS;
        if (rc != SQLITE_DONE)
            return STORE_E_IO;
    }

    enum order_status status;
    int64_t amount_minor;
    char currency[4];
    rc = fence_order(s, p->order_id, p->merchant_id, op->in.payment_create.fence, 0, &status,
                     &amount_minor, currency);
    if (rc != STORE_OK)
        return rc;
    if (status != ORDER_PENDING_PAYMENT)
        return STORE_E_NOT_PAYABLE;
    /* The payment takes its amount from the order; the caller read it (an
     * order never changes its amount), and this is where that is checked. */
    PAYD_ASSERT(amount_minor == p->amount_minor && strcmp(currency, p->currency) == 0);

    st = s->w[W_PAYMENT_INSERT];
    bind_text(st, 1, p->id);
    bind_text(st, 2, p->order_id);
    bind_text(st, 3, p->merchant_id);
    sqlite3_bind_int64(st, 4, p->amount_minor);
    bind_text(st, 5, p->currency);
    bind_text(st, 6, p->channel);
    bind_text(st, 7, p->method);
    bind_text(st, 8, p->serial_no);
    sqlite3_bind_int64(st, 9, p->created_ms);
    rc = sqlite3_step(st);
    /* Only the partial unique index on processing payments names order_id;
     * a clash on id or serial_no is a bug, reported as a failure. */
    bool in_progress = rc == SQLITE_CONSTRAINT &&
                       strstr(sqlite3_errmsg(s->wdb), "payments.order_id") != NULL;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (in_progress)
        return STORE_E_IN_PROGRESS;
    if (rc != SQLITE_DONE)
        return STORE_E_IO;

    st = s->w[W_OUTBOX_INSERT];
    bind_text(st, 1, p->id);
    sqlite3_bind_int64(st, 2, p->created_ms);
    if (step_done(st) != SQLITE_DONE)
        return STORE_E_IO;

    if (key) {
        st = s->w[W_IDEM_INSERT];
        bind_text(st, 1, p->merchant_id);
        bind_text(st, 2, key);
        bind_text(st, 3, op->in.payment_create.idem_fingerprint);
        sqlite3_bind_int(st, 4, op->in.payment_create.idem_status);
        bind_text(st, 5, op->in.payment_create.idem_body);
        sqlite3_bind_int64(st, 6, p->created_ms);
        if (step_done(st) != SQLITE_DONE)
            return STORE_E_IO;
    }
    return STORE_OK;
}

/* Posts one transfer: amount_minor leaves `from` and reaches `to`, in one
 * statement, so the two legs always sum to zero. */
static int ledger_transfer(struct sqlite_store *s, const char *transfer_id, const char *from,
                           const char *to, int64_t amount_minor, const char *currency,
                           int64_t now_ms)
{
    sqlite3_stmt *st = s->w[W_LEDGER_INSERT];
    bind_text(st, 1, transfer_id);
    bind_text(st, 2, from);
    bind_text(st, 3, to);
    sqlite3_bind_int64(st, 4, amount_minor);
    bind_text(st, 5, currency);
    sqlite3_bind_int64(st, 6, now_ms);
    return step_done(st) == SQLITE_DONE ? STORE_OK : STORE_E_IO;
}

/* True when the payment exists and is no longer processing. */
static bool payment_final(struct sqlite_store *s, const char *payment_id)
{
    sqlite3_stmt *st = s->w[W_PAYMENT_GET];
    bind_text(st, 1, payment_id);
    bool final = false;
    if (sqlite3_step(st) == SQLITE_ROW) {
        struct payment p;
        row_to_payment(st, &p);
        final = p.status != PAYMENT_PROCESSING;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return final;
}

static int op_payment_finish(struct sqlite_store *s, struct store_op *op)
{
    const struct payment *p = &op->in.payment_finish.payment;
    PAYD_ASSERT(p->status == PAYMENT_SUCCEEDED || p->status == PAYMENT_FAILED);
    enum order_status order_status;
    int64_t amount_minor;
    char currency[4];
    bool ok = p->status == PAYMENT_SUCCEEDED;
    /* On success the order turns paid in the same statement that records
     * the token; the savepoint undoes it if the payment is already final. */
    int rc = fence_order(s, p->order_id, p->merchant_id, op->in.payment_finish.fence,
                         ok ? p->updated_ms : 0, &order_status, &amount_minor, currency);
    if (rc == STORE_E_NOT_PAYABLE && payment_final(s, p->id))
        return STORE_E_FINAL; /* a repeated outcome: the order was paid by it */
    if (rc != STORE_OK)
        return rc;
    sqlite3_stmt *st = s->w[W_PAYMENT_FINISH];
    bind_text(st, 1, p->id);
    bind_text(st, 2, payment_status_name(p->status));
    bind_text(st, 3, ok ? p->channel_txn_id : NULL);
    bind_text(st, 4, ok ? NULL : p->failure_code);
    bind_text(st, 5, ok ? NULL : p->failure_message);
    sqlite3_bind_int64(st, 6, p->updated_ms);
    bind_text(st, 7, p->order_id);
    rc = step_done(st);
    if (rc == SQLITE_CONSTRAINT)
        return STORE_E_NOT_PAYABLE; /* payments_one_succeeded */
    if (rc != SQLITE_DONE)
        return STORE_E_IO;
    if (sqlite3_changes(s->wdb) == 0)
        return STORE_E_FINAL;
    if (!ok)
        return STORE_OK;

    /* Double entry: the channel's clearing account pays the merchant. */
    char clearing[64], merchant[64];
    snprintf(clearing, sizeof(clearing), "clearing:%s", p->channel);
    snprintf(merchant, sizeof(merchant), "merchant:%s", p->merchant_id);
    if (ledger_transfer(s, p->id, clearing, merchant, p->amount_minor, p->currency,
                        p->updated_ms) != STORE_OK)
        return STORE_E_IO;
    return STORE_OK;
}

static int op_payment_reroute(struct sqlite_store *s, struct store_op *op)
{
    enum order_status status;
    int64_t amount_minor;
    char currency[4];
    int rc = fence_order(s, op->in.payment_reroute.order_id, op->in.payment_reroute.merchant_id,
                         op->in.payment_reroute.fence, 0, &status, &amount_minor, currency);
    if (rc != STORE_OK)
        return rc;
    sqlite3_stmt *st = s->w[W_PAYMENT_REROUTE];
    bind_text(st, 1, op->in.payment_reroute.payment_id);
    bind_text(st, 2, op->in.payment_reroute.to);
    sqlite3_bind_int64(st, 3, op->in.payment_reroute.updated_ms);
    bind_text(st, 4, op->in.payment_reroute.from);
    if (step_done(st) != SQLITE_DONE)
        return STORE_E_IO;
    return sqlite3_changes(s->wdb) == 1 ? STORE_OK : STORE_E_FINAL;
}

static int op_outbox_claim(struct sqlite_store *s, struct store_op *op)
{
    int64_t now_ms = clock_wall_ms();
    int max = op->in.outbox_claim.max;
    PAYD_ASSERT(max > 0 && max <= STORE_CLAIM_MAX);
    sqlite3_stmt *st = s->w[W_OUTBOX_CLAIM];
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int64(st, 2, now_ms + op->in.outbox_claim.lease_ms);
    sqlite3_bind_int(st, 3, max);
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        PAYD_ASSERT(n < max);
        struct outbox_msg *m = &op->in.outbox_claim.msgs[n++];
        m->id = sqlite3_column_int64(st, 0);
        copy_col(st, 1, m->payment_id, sizeof(m->payment_id));
        m->deliveries = sqlite3_column_int64(st, 2);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE)
        return STORE_E_IO;
    /* Hand each message its payment as it stands now, read on the writer's
     * connection (whose cache is never invalidated), so that workers need
     * no read of their own. */
    st = s->w[W_PAYMENT_GET];
    for (int i = 0; i < n; i++) {
        struct outbox_msg *m = &op->in.outbox_claim.msgs[i];
        bind_text(st, 1, m->payment_id);
        rc = sqlite3_step(st);
        m->found = rc == SQLITE_ROW;
        if (m->found)
            row_to_payment(st, &m->payment);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return STORE_E_IO;
    }
    op->out.claimed = n;
    return STORE_OK;
}

static int op_simple(struct sqlite_store *s, enum wstmt w, int64_t a, int64_t b)
{
    sqlite3_stmt *st = s->w[w];
    sqlite3_bind_int64(st, 1, a);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_int64(st, 2, b);
    return step_done(st) == SQLITE_DONE ? STORE_OK : STORE_E_IO;
}

static int op_merchant(struct sqlite_store *s, struct store_op *op)
{
    const struct merchant *m = &op->in.merchant.merchant;
    sqlite3_stmt *st;
    if (op->kind == STORE_OP_MERCHANT_ADD) {
        st = s->w[W_MERCHANT_INSERT];
        bind_text(st, 1, m->id);
        bind_text(st, 2, m->name);
        bind_text(st, 3, op->in.merchant.key_hash);
        sqlite3_bind_int64(st, 4, m->created_ms);
        int rc = step_done(st);
        if (rc == SQLITE_CONSTRAINT)
            return STORE_E_DUPLICATE;
        return rc == SQLITE_DONE ? STORE_OK : STORE_E_IO;
    }
    st = s->w[W_MERCHANT_ROTATE];
    bind_text(st, 1, m->name);
    bind_text(st, 2, op->in.merchant.key_hash);
    if (step_done(st) != SQLITE_DONE)
        return STORE_E_IO;
    return sqlite3_changes(s->wdb) == 1 ? STORE_OK : STORE_E_NOT_FOUND;
}

static int run_op(struct sqlite_store *s, struct store_op *op)
{
    switch (op->kind) {
    case STORE_OP_ORDER_CREATE:
        return op_order_create(s, op);
    case STORE_OP_PAYMENT_CREATE:
        return op_payment_create(s, op);
    case STORE_OP_PAYMENT_FINISH:
        return op_payment_finish(s, op);
    case STORE_OP_OUTBOX_CLAIM:
        return op_outbox_claim(s, op);
    case STORE_OP_OUTBOX_ACK:
        for (int i = 0; i < op->in.outbox_ack.count; i++)
            if (op_simple(s, W_OUTBOX_ACK, op->in.outbox_ack.ids[i], 0) != STORE_OK)
                return STORE_E_IO;
        return STORE_OK;
    case STORE_OP_OUTBOX_RETRY:
        if (op->in.outbox_retry.uncount) {
            sqlite3_bind_int64(s->w[W_OUTBOX_DEFER], 3, op->in.outbox_retry.deliveries);
            return op_simple(s, W_OUTBOX_DEFER, op->in.outbox_retry.id,
                             clock_wall_ms() + op->in.outbox_retry.delay_ms);
        }
        return op_simple(s, W_OUTBOX_RETRY, op->in.outbox_retry.id,
                         clock_wall_ms() + op->in.outbox_retry.delay_ms);
    case STORE_OP_PAYMENT_REROUTE:
        return op_payment_reroute(s, op);
    case STORE_OP_OUTBOX_RESET:
        return op_simple(s, W_OUTBOX_RESET, clock_wall_ms(), 0);
    case STORE_OP_IDEM_PURGE: {
        int rc = op_simple(s, W_IDEM_PURGE, op->in.idem_purge.older_than_ms, PURGE_BATCH);
        op->out.purged = sqlite3_changes(s->wdb);
        return rc;
    }
    case STORE_OP_MERCHANT_ADD:
    case STORE_OP_MERCHANT_ROTATE:
        return op_merchant(s, op);
    case STORE_OP_RELAY_CLAIM:
    case STORE_OP_RELAY_SENT:
    case STORE_OP_RELAY_SWEEP:
        return STORE_E_IO; /* a broker needs a shared store: refused by the configuration */
    default:
        PAYD_ASSERT(!"unknown store op");
        return STORE_E_IO;
    }
}

/* A committed batch on its way to the completer. */
struct done_batch {
    struct done_batch *next;
    int n;
    struct store_op *ops[];
};

static void *completer_main(void *arg)
{
    struct sqlite_store *s = arg;
    pthread_setname_np(pthread_self(), "payd-complete");
    pthread_mutex_lock(&s->done_mu);
    for (;;) {
        while (!s->done_head && !s->done_stopping)
            pthread_cond_wait(&s->has_done, &s->done_mu);
        struct done_batch *list = s->done_head;
        s->done_head = NULL;
        s->done_tail = &s->done_head;
        if (!list)
            break; /* stopping, and nothing left */
        pthread_mutex_unlock(&s->done_mu);
        while (list) {
            struct done_batch *next = list->next;
            for (int i = 0; i < list->n; i++)
                list->ops[i]->done(list->ops[i]);
            free(list);
            list = next;
        }
        pthread_mutex_lock(&s->done_mu);
    }
    pthread_mutex_unlock(&s->done_mu);
    return NULL;
}

/* True for the operations that make more than one change, which must be
 * undone together when a later step refuses; the others are one statement
 * (SQLite undoes a failed statement by itself) or harmless to keep. */
static bool needs_savepoint(enum store_op_kind kind)
{
    return kind == STORE_OP_PAYMENT_CREATE || kind == STORE_OP_PAYMENT_FINISH;
}

/* Runs one batch in one transaction and reports every op. */
static void run_batch(struct sqlite_store *s, struct store_op **ops, int n)
{
    if (step_done(s->w[W_BEGIN]) != SQLITE_DONE) {
        log_db_error(s->wdb, "begin");
        for (int i = 0; i < n; i++)
            ops[i]->rc = STORE_E_IO;
        goto out_report;
    }
    for (int i = 0; i < n; i++) {
        bool savepoint = needs_savepoint(ops[i]->kind);
        if (savepoint)
            PAYD_ASSERT(step_done(s->w[W_SAVEPOINT]) == SQLITE_DONE);
        ops[i]->rc = run_op(s, ops[i]);
        if (ops[i]->rc == STORE_E_IO)
            log_db_error(s->wdb, store_rc_name(ops[i]->rc));
        if (savepoint) {
            if (ops[i]->rc != STORE_OK)
                step_done(s->w[W_ROLLBACK_TO]);
            step_done(s->w[W_RELEASE]);
        }
    }
    if (step_done(s->w[W_COMMIT]) != SQLITE_DONE) {
        log_db_error(s->wdb, "commit");
        step_done(s->w[W_ROLLBACK]);
        for (int i = 0; i < n; i++) {
            if (ops[i]->rc == STORE_E_IDEM_EXISTS)
                free(ops[i]->out.idem.body);
            ops[i]->rc = STORE_E_IO;
        }
    }
out_report:
    if (s->on_commit)
        s->on_commit(s->on_commit_arg, n, clock_mono_us() - ops[0]->submitted_us);
    struct done_batch *b = xmalloc(sizeof(*b) + (size_t)n * sizeof(b->ops[0]));
    b->next = NULL;
    b->n = n;
    memcpy(b->ops, ops, (size_t)n * sizeof(ops[0]));
    pthread_mutex_lock(&s->done_mu);
    bool was_empty = !s->done_head;
    *s->done_tail = b;
    s->done_tail = &b->next;
    if (was_empty)
        pthread_cond_signal(&s->has_done);
    pthread_mutex_unlock(&s->done_mu);
}

static void *writer_main(void *arg)
{
    struct sqlite_store *s = arg;
    pthread_setname_np(pthread_self(), "payd-store");
    struct store_op **batch = xcalloc((size_t)s->max_batch, sizeof(*batch));
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (s->ring_len == 0 && !s->stopping)
            pthread_cond_wait(&s->nonempty, &s->mu);
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
        pthread_mutex_unlock(&s->mu);
        run_batch(s, batch, n);
    }
    free(batch);
    return NULL;
}

/* The writer connection's WAL hook: after each commit, with the log's size. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    struct sqlite_store *s = arg;
    /* Ask for a checkpoint once CHECKPOINT_FRAMES frames were added since
     * the last one (the log restarts from 0 once it was all copied). */
    pthread_mutex_lock(&s->mu);
    if (frames < s->wal_frames_checkpointed)
        s->wal_frames_checkpointed = 0;
    if (frames - s->wal_frames_checkpointed >= CHECKPOINT_FRAMES && !s->checkpoint_due) {
        s->checkpoint_due = true;
        s->wal_frames_checkpointed = frames;
        pthread_cond_signal(&s->wal_grew);
    }
    pthread_mutex_unlock(&s->mu);
    return SQLITE_OK;
}

static void *checkpointer_main(void *arg)
{
    struct sqlite_store *s = arg;
    pthread_setname_np(pthread_self(), "payd-checkpoint");
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->checkpoint_due && !s->stopping)
            pthread_cond_wait(&s->wal_grew, &s->mu);
        if (s->stopping)
            break;
        s->checkpoint_due = false;
        pthread_mutex_unlock(&s->mu);
        int log_frames = 0, done_frames = 0;
        int rc = sqlite3_wal_checkpoint_v2(s->cdb, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                           &done_frames);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            log_db_error(s->cdb, "checkpoint");
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static int sqlite_submit(store *base, struct store_op *op)
{
    struct sqlite_store *s = (struct sqlite_store *)base;
    pthread_mutex_lock(&s->mu);
    if (s->ring_len == s->ring_cap || s->stopping) {
        pthread_mutex_unlock(&s->mu);
        return STORE_E_BUSY;
    }
    s->ring[(s->ring_head + s->ring_len) % s->ring_cap] = op;
    s->ring_len++;
    if (s->ring_len == 1)
        pthread_cond_signal(&s->nonempty);
    pthread_mutex_unlock(&s->mu);
    return STORE_OK;
}

/* ---- connections ---- */

static int open_conn(const char *path, sqlite3 **out, char *err, size_t err_size)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, err_size, "store: cannot open %s: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_busy_timeout(db, 10000);
    char *msg = NULL;
    if (sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
                     NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, err_size, "store: %s: %s", path, msg ? msg : "pragma failed");
        sqlite3_free(msg);
        sqlite3_close(db);
        return -1;
    }
    *out = db;
    return 0;
}

static void reader_close(struct reader *r)
{
    for (int i = 0; i < R_COUNT; i++)
        sqlite3_finalize(r->stmts[i]);
    sqlite3_close(r->db);
    free(r);
}

static void reader_unlink(struct sqlite_store *s, struct reader *r)
{
    pthread_mutex_lock(&s->readers_mu);
    for (struct reader **pp = &s->readers; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    pthread_mutex_unlock(&s->readers_mu);
}

/* Each thread's reader is closed when the thread exits. */
static void reader_destroy(void *value)
{
    struct reader *r = value;
    reader_unlink(r->owner, r);
    reader_close(r);
}

/* Returns the calling thread's statement for q, prepared and reset. */
static sqlite3_stmt *reader_stmt(struct sqlite_store *s, enum rstmt q)
{
    struct reader *r = pthread_getspecific(s->reader_key);
    if (!r) {
        char err[256];
        r = xcalloc(1, sizeof(*r));
        if (open_conn(s->path, &r->db, err, sizeof(err)) != 0) {
            fprintf(stderr, "{\"level\":\"error\",\"msg\":\"%s\"}\n", err);
            free(r);
            return NULL;
        }
        r->owner = s;
        pthread_setspecific(s->reader_key, r);
        pthread_mutex_lock(&s->readers_mu);
        r->next = s->readers;
        s->readers = r;
        pthread_mutex_unlock(&s->readers_mu);
    }
    if (!r->stmts[q] && sqlite3_prepare_v3(r->db, rsql[q], -1, SQLITE_PREPARE_PERSISTENT,
                                           &r->stmts[q], NULL) != SQLITE_OK) {
        log_db_error(r->db, rsql[q]);
        return NULL;
    }
    return r->stmts[q];
}

static void reader_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* ---- reads ---- */

static int sqlite_merchant_by_key_hash(store *base, const char *key_hash, struct merchant *out)
{
    sqlite3_stmt *st = reader_stmt((struct sqlite_store *)base, R_MERCHANT_BY_HASH);
    if (!st)
        return STORE_E_IO;
    bind_text(st, 1, key_hash);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        copy_col(st, 0, out->id, sizeof(out->id));
        copy_col(st, 1, out->name, sizeof(out->name));
        out->created_ms = sqlite3_column_int64(st, 2);
    }
    reader_done(st);
    return rc == SQLITE_ROW ? STORE_OK : rc == SQLITE_DONE ? STORE_E_NOT_FOUND : STORE_E_IO;
}

static int sqlite_merchant_list(store *base, int (*each)(void *, const struct merchant *),
                                void *arg)
{
    sqlite3_stmt *st = reader_stmt((struct sqlite_store *)base, R_MERCHANT_LIST);
    if (!st)
        return STORE_E_IO;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct merchant m;
        copy_col(st, 0, m.id, sizeof(m.id));
        copy_col(st, 1, m.name, sizeof(m.name));
        m.created_ms = sqlite3_column_int64(st, 2);
        if (each(arg, &m) != 0)
            break;
    }
    reader_done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? STORE_OK : STORE_E_IO;
}

/* Runs a one-value query with up to two text parameters; returns the value,
 * or `fallback` when there is no row, the value is NULL or the query fails. */
static int64_t read_scalar(struct sqlite_store *s, enum rstmt q, int64_t fallback)
{
    sqlite3_stmt *st = reader_stmt(s, q);
    if (!st)
        return fallback;
    int64_t v = fallback;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        v = sqlite3_column_int64(st, 0);
    reader_done(st);
    return v;
}

static int64_t sqlite_merchant_count(store *base)
{
    return read_scalar((struct sqlite_store *)base, R_MERCHANT_COUNT, -1);
}

static int get_one(struct sqlite_store *s, enum rstmt q, const char *a, const char *b,
                   void (*convert)(sqlite3_stmt *, void *), void *out)
{
    sqlite3_stmt *st = reader_stmt(s, q);
    if (!st)
        return STORE_E_IO;
    bind_text(st, 1, a);
    if (b)
        bind_text(st, 2, b);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        convert(st, out);
    reader_done(st);
    return rc == SQLITE_ROW ? STORE_OK : rc == SQLITE_DONE ? STORE_E_NOT_FOUND : STORE_E_IO;
}

static void convert_order(sqlite3_stmt *st, void *out)
{
    row_to_order(st, out);
}

static void convert_payment(sqlite3_stmt *st, void *out)
{
    row_to_payment(st, out);
}

static int sqlite_order_get(store *base, const char *merchant_id, const char *id,
                            struct order *out)
{
    return get_one((struct sqlite_store *)base, R_ORDER_GET, id, merchant_id, convert_order,
                   out);
}

static int sqlite_payment_get(store *base, const char *merchant_id, const char *id,
                              struct payment *out)
{
    return get_one((struct sqlite_store *)base, R_PAYMENT_GET, id, merchant_id, convert_payment,
                   out);
}

static int sqlite_payment_list(store *base, const char *merchant_id, const char *order_id,
                               int (*each)(void *, const struct payment *), void *arg)
{
    sqlite3_stmt *st = reader_stmt((struct sqlite_store *)base, R_PAYMENT_LIST);
    if (!st)
        return STORE_E_IO;
    bind_text(st, 1, order_id);
    bind_text(st, 2, merchant_id);
    int rc;
    struct payment p;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        row_to_payment(st, &p);
        if (each(arg, &p) != 0)
            break;
    }
    reader_done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? STORE_OK : STORE_E_IO;
}

static void convert_idem(sqlite3_stmt *st, void *out)
{
    struct idem_record *r = out;
    copy_col(st, 0, r->fingerprint, sizeof(r->fingerprint));
    r->status = sqlite3_column_int(st, 1);
    r->body = xstrdup((const char *)sqlite3_column_text(st, 2));
}

static int sqlite_idem_get(store *base, const char *merchant_id, const char *key,
                           struct idem_record *out)
{
    return get_one((struct sqlite_store *)base, R_IDEM_GET, merchant_id, key, convert_idem,
                   out);
}

static int sqlite_balance(store *base, const char *merchant_id, struct store_amount *out,
                          int max)
{
    sqlite3_stmt *st = reader_stmt((struct sqlite_store *)base, R_BALANCE);
    if (!st)
        return STORE_E_IO;
    char account[64];
    snprintf(account, sizeof(account), "merchant:%s", merchant_id);
    bind_text(st, 1, account);
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < max) {
        copy_col(st, 0, out[n].currency, sizeof(out[n].currency));
        out[n].amount_minor = sqlite3_column_int64(st, 1);
        n++;
    }
    reader_done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? n : STORE_E_IO;
}

static int64_t sqlite_max_fence(store *base)
{
    return read_scalar((struct sqlite_store *)base, R_MAX_FENCE, 0);
}

static int64_t sqlite_outbox_next_due_ms(store *base)
{
    return read_scalar((struct sqlite_store *)base, R_OUTBOX_NEXT, INT64_MAX);
}

static int sqlite_queue_stats(store *base, int64_t dead_after, struct store_queue_stats *out)
{
    sqlite3_stmt *st = reader_stmt((struct sqlite_store *)base, R_QUEUE_STATS);
    if (!st)
        return STORE_E_IO;
    sqlite3_bind_int64(st, 1, dead_after);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->depth = sqlite3_column_int64(st, 0);
        out->oldest_created_ms = sqlite3_column_int64(st, 1);
        out->dead = sqlite3_column_int64(st, 2);
    }
    reader_done(st);
    return rc == SQLITE_ROW ? STORE_OK : STORE_E_IO;
}

static int64_t sqlite_ledger_imbalance(store *base)
{
    return read_scalar((struct sqlite_store *)base, R_LEDGER_IMBALANCE, -1);
}

static int sqlite_ping(store *base)
{
    return read_scalar((struct sqlite_store *)base, R_PING, 0) == 1 ? STORE_OK : STORE_E_IO;
}

/* ---- open and close ---- */

static void sqlite_close(store *base)
{
    struct sqlite_store *s = (struct sqlite_store *)base;
    if (!s)
        return;
    if (s->writer_started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        pthread_cond_signal(&s->nonempty);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->writer, NULL);
    }
    if (s->completer_started) {
        pthread_mutex_lock(&s->done_mu);
        s->done_stopping = true;
        pthread_cond_signal(&s->has_done);
        pthread_mutex_unlock(&s->done_mu);
        pthread_join(s->completer, NULL);
    }
    if (s->checkpointer_started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        pthread_cond_signal(&s->wal_grew);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->checkpointer, NULL);
    }
    sqlite3_close(s->cdb);
    for (int i = 0; i < W_COUNT; i++)
        sqlite3_finalize(s->w[i]);
    sqlite3_close(s->wdb);
    /* Close every reader still open; their threads must not read again. */
    pthread_mutex_lock(&s->readers_mu);
    struct reader *r = s->readers;
    s->readers = NULL;
    pthread_mutex_unlock(&s->readers_mu);
    while (r) {
        struct reader *next = r->next;
        reader_close(r);
        r = next;
    }
    pthread_setspecific(s->reader_key, NULL);
    pthread_key_delete(s->reader_key);
    pthread_mutex_destroy(&s->readers_mu);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->nonempty);
    pthread_cond_destroy(&s->wal_grew);
    pthread_mutex_destroy(&s->done_mu);
    pthread_cond_destroy(&s->has_done);
    free(s->ring);
    free(s);
}

/* Process-wide SQLite settings, before any connection: no memory
 * statistics, whose upkeep takes a global mutex on every allocation; and
 * statement journals (the undo log of each savepoint) kept in memory: by
 * default they spill to a temporary file past 64 KiB, which in a batch of
 * savepoints cost more write(2) calls than the WAL itself (measured: 17,800
 * writes a second to the temporary file against 2,900 to the WAL). */
static void configure_sqlite(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    sqlite3_config(SQLITE_CONFIG_STMTJRNL_SPILL, -1);
}

static store *sqlite_open(const struct store_options *opts, char *err, size_t err_size)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, configure_sqlite);
    struct sqlite_store *s = xcalloc(1, sizeof(*s));
    s->base.be = &store_sqlite_backend;
    snprintf(s->path, sizeof(s->path), "%s/payd.db", opts->data_dir);
    s->max_batch = opts->max_batch;
    s->on_commit = opts->on_commit;
    s->on_commit_arg = opts->on_commit_arg;
    s->ring_cap = opts->queue_capacity;
    s->ring = xcalloc((size_t)s->ring_cap, sizeof(*s->ring));
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->nonempty, NULL);
    pthread_cond_init(&s->wal_grew, NULL);
    pthread_mutex_init(&s->done_mu, NULL);
    pthread_cond_init(&s->has_done, NULL);
    s->done_tail = &s->done_head;
    pthread_mutex_init(&s->readers_mu, NULL);
    pthread_key_create(&s->reader_key, reader_destroy);

    if (mkdir(opts->data_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, err_size, "store: cannot create %s: %s", opts->data_dir, strerror(errno));
        goto out_free;
    }
    if (open_conn(s->path, &s->wdb, err, err_size) != 0)
        goto out_free;
    /* The writer touches the newest pages of every table and index in each
     * batch; a large cache keeps them all (readers keep SQLite's default). */
    sqlite3_exec(s->wdb, "PRAGMA cache_size=-32768; PRAGMA temp_store=MEMORY", NULL, NULL,
                 NULL);
    char *msg = NULL;
    if (sqlite3_exec(s->wdb, schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, err_size, "store: schema: %s", msg ? msg : "failed");
        sqlite3_free(msg);
        goto out_free;
    }
    for (int i = 0; i < W_COUNT; i++) {
        if (sqlite3_prepare_v3(s->wdb, wsql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->w[i],
                               NULL) != SQLITE_OK) {
            snprintf(err, err_size, "store: prepare: %s: %s", wsql[i], sqlite3_errmsg(s->wdb));
            goto out_free;
        }
    }
    if (open_conn(s->path, &s->cdb, err, err_size) != 0)
        goto out_free;
    sqlite3_wal_hook(s->wdb, on_wal_commit, s); /* replaces the automatic checkpoint */
    if (pthread_create(&s->checkpointer, NULL, checkpointer_main, s) != 0) {
        snprintf(err, err_size, "store: cannot start the checkpoint thread");
        goto out_free;
    }
    s->checkpointer_started = true;
    if (pthread_create(&s->completer, NULL, completer_main, s) != 0) {
        snprintf(err, err_size, "store: cannot start the completion thread");
        goto out_free;
    }
    s->completer_started = true;
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
        snprintf(err, err_size, "store: cannot start the writer thread");
        goto out_free;
    }
    s->writer_started = true;
    return &s->base;

out_free:
    sqlite_close(&s->base);
    return NULL;
}

const struct store_backend store_sqlite_backend = {
    .name = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .submit = sqlite_submit,
    .merchant_by_key_hash = sqlite_merchant_by_key_hash,
    .merchant_list = sqlite_merchant_list,
    .merchant_count = sqlite_merchant_count,
    .order_get = sqlite_order_get,
    .payment_get = sqlite_payment_get,
    .payment_list = sqlite_payment_list,
    .idem_get = sqlite_idem_get,
    .balance = sqlite_balance,
    .max_fence = sqlite_max_fence,
    .outbox_next_due_ms = sqlite_outbox_next_due_ms,
    .queue_stats = sqlite_queue_stats,
    .ledger_imbalance = sqlite_ledger_imbalance,
    .ping = sqlite_ping,
};
