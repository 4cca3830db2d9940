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
    "CREATE INDEX IF NOT EXISTS orders_pending ON orders(created_ms)"
    "  WHERE status = 'pending_payment';"
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
    "CREATE TABLE IF NOT EXISTS refunds("
    "  id TEXT PRIMARY KEY, payment_id TEXT NOT NULL REFERENCES payments(id),"
    "  order_id TEXT NOT NULL, merchant_id TEXT NOT NULL,"
    "  amount INTEGER NOT NULL CHECK (amount > 0), currency TEXT NOT NULL,"
    "  channel TEXT NOT NULL, payment_serial_no TEXT NOT NULL, reason TEXT,"
    "  status TEXT NOT NULL CHECK (status IN ('processing','succeeded','failed')),"
    "  refund_no TEXT NOT NULL UNIQUE, channel_refund_id TEXT, failure_code TEXT,"
    "  failure_message TEXT, automatic INTEGER NOT NULL DEFAULT 0,"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_attempt_ms INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS refunds_by_payment ON refunds(payment_id, created_ms);"
    "CREATE INDEX IF NOT EXISTS refunds_due ON refunds(next_attempt_ms)"
    "  WHERE status = 'processing';"
    /* What makes refunding more than was captured impossible. */
    "CREATE TABLE IF NOT EXISTS refund_totals("
    "  payment_id TEXT PRIMARY KEY REFERENCES payments(id), captured INTEGER NOT NULL,"
    "  reserved INTEGER NOT NULL DEFAULT 0, refunded INTEGER NOT NULL DEFAULT 0,"
    "  CHECK (0 <= refunded AND refunded <= reserved AND reserved <= captured))"
    "  WITHOUT ROWID;"
    /* Signatures of the channels' notifications, so that one is applied once. */
    "CREATE TABLE IF NOT EXISTS channel_notifications("
    "  signature TEXT PRIMARY KEY, channel TEXT NOT NULL, notify_id TEXT NOT NULL,"
    "  received_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS channel_notifications_age"
    "  ON channel_notifications(received_ms);"
    /* Merchants' webhook endpoints, and the events to deliver to them. */
    "CREATE TABLE IF NOT EXISTS webhooks("
    "  merchant_id TEXT PRIMARY KEY REFERENCES merchants(id), url TEXT NOT NULL,"
    "  secret TEXT NOT NULL, updated_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS events("
    "  id TEXT PRIMARY KEY, merchant_id TEXT NOT NULL, type TEXT NOT NULL,"
    "  object_id TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('pending','delivered','failed')),"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_attempt_ms INTEGER NOT NULL,"
    "  last_status INTEGER, last_error TEXT, created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS events_due ON events(next_attempt_ms) WHERE state = 'pending';"
    /* Reconciliation reports (payctl reconcile). */
    "CREATE TABLE IF NOT EXISTS reconciliations("
    "  id INTEGER PRIMARY KEY, date TEXT NOT NULL, channel TEXT NOT NULL,"
    "  run_ms INTEGER NOT NULL, differences INTEGER NOT NULL, report TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS payments_by_channel_created ON payments(channel, created_ms)"
    "  WHERE status = 'succeeded';"
    "CREATE INDEX IF NOT EXISTS refunds_by_channel_created ON refunds(channel, created_ms)"
    "  WHERE status = 'succeeded';"
    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '1');";

#define ORDER_COLS "id, merchant_id, merchant_order_no, amount, currency, description, status," \
                   " created_ms"
#define PAYMENT_COLS "id, order_id, merchant_id, amount, currency, channel, method, status,"   \
                     " serial_no, channel_txn_id, failure_code, failure_message, created_ms,"   \
                     " updated_ms"
#define REFUND_COLS "id, payment_id, order_id, merchant_id, amount, currency, channel,"         \
                    " payment_serial_no, reason, status, refund_no, channel_refund_id,"         \
                    " failure_code, failure_message, automatic, attempts, created_ms, updated_ms"

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
    W_REFUND_TOTALS_INIT,
    W_REFUND_TOTALS_GET,
    W_REFUND_RESERVE,
    W_REFUND_INSERT,
    W_REFUND_CLAIM,
    W_REFUND_FINISH,
    W_REFUND_GET,
    W_REFUND_SETTLE,
    W_REFUND_RELEASE,
    W_REFUND_ORDER,
    W_REFUND_RETRY,
    W_NOTIFY_INSERT,
    W_ORDER_CLOSE_EXPIRED,
    W_RECONCILIATION_INSERT,
    W_EVENT_INSERT,
    W_WEBHOOK_UPSERT,
    W_WEBHOOK_DELETE,
    W_WEBHOOK_GET,
    W_EVENT_CLAIM,
    W_EVENT_DELIVERED,
    W_EVENT_RETRY,
    W_EVENT_FAILED,
    W_NOTIFY_PURGE,
    W_PAYMENT_BY_SERIAL,
    W_REFUND_BY_NO,
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
    [W_REFUND_TOTALS_INIT] = "INSERT OR IGNORE INTO refund_totals(payment_id, captured)"
                             " VALUES (?1, ?2)",
    [W_REFUND_TOTALS_GET] = "SELECT captured - reserved FROM refund_totals WHERE"
                            " payment_id = ?1",
    [W_REFUND_RESERVE] = "UPDATE refund_totals SET reserved = reserved + ?2 WHERE"
                         " payment_id = ?1",
    [W_REFUND_INSERT] =
        "INSERT INTO refunds(id, payment_id, order_id, merchant_id, amount, currency, channel,"
        " payment_serial_no, reason, status, refund_no, automatic, attempts, next_attempt_ms,"
        " created_ms, updated_ms) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,'processing',?10,?11,0,"
        "?12,?12,?12)",
    [W_REFUND_CLAIM] = "UPDATE refunds SET next_attempt_ms = ?2, attempts = attempts + 1"
                       " WHERE id IN (SELECT id FROM refunds WHERE status = 'processing' AND"
                       " next_attempt_ms <= ?1 ORDER BY next_attempt_ms LIMIT ?3)"
                       " RETURNING " REFUND_COLS,
    [W_REFUND_FINISH] =
        "UPDATE refunds SET status = ?2, channel_refund_id = ?3, failure_code = ?4,"
        " failure_message = ?5, updated_ms = ?6 WHERE id = ?1 AND status = 'processing'"
        " RETURNING payment_id, order_id, merchant_id, amount, currency, channel",
    [W_REFUND_GET] = "SELECT " REFUND_COLS " FROM refunds WHERE id = ?1",
    [W_REFUND_SETTLE] = "UPDATE refund_totals SET refunded = refunded + ?2 WHERE"
                        " payment_id = ?1 RETURNING refunded = captured",
    [W_REFUND_RELEASE] = "UPDATE refund_totals SET reserved = reserved - ?2 WHERE"
                         " payment_id = ?1",
    [W_REFUND_ORDER] = "UPDATE orders SET status = ?2, updated_ms = ?3 WHERE id = ?1 AND"
                       " status IN ('paid', 'partially_refunded')",
    [W_REFUND_RETRY] = "UPDATE refunds SET next_attempt_ms = ?2 WHERE id = ?1 AND"
                       " status = 'processing'",
    [W_NOTIFY_INSERT] = "INSERT INTO channel_notifications(signature, channel, notify_id,"
                        " received_ms) VALUES (?1,?2,?3,?4)",
    [W_ORDER_CLOSE_EXPIRED] = "UPDATE orders SET status = 'closed', updated_ms = ?2 WHERE id IN"
                              " (SELECT id FROM orders WHERE status = 'pending_payment' AND"
                              " created_ms < ?1 ORDER BY created_ms LIMIT ?3)",
    [W_EVENT_INSERT] = "INSERT OR IGNORE INTO events(id, merchant_id, type, object_id, state,"
                       " attempts, next_attempt_ms, created_ms, updated_ms) SELECT 'evt_' || ?1,"
                       " ?2, ?3, ?1, 'pending', 0, ?4, ?4, ?4 FROM webhooks WHERE"
                       " merchant_id = ?2",
    [W_WEBHOOK_UPSERT] = "INSERT INTO webhooks(merchant_id, url, secret, updated_ms) VALUES"
                         " (?1,?2,?3,?4) ON CONFLICT (merchant_id) DO UPDATE SET"
                         " url = excluded.url, secret = excluded.secret,"
                         " updated_ms = excluded.updated_ms",
    [W_WEBHOOK_DELETE] = "DELETE FROM webhooks WHERE merchant_id = ?1",
    [W_WEBHOOK_GET] = "SELECT url, secret FROM webhooks WHERE merchant_id = ?1",
    [W_EVENT_CLAIM] = "UPDATE events SET next_attempt_ms = ?2, attempts = attempts + 1"
                      " WHERE id IN (SELECT id FROM events WHERE state = 'pending' AND"
                      " next_attempt_ms <= ?1 ORDER BY next_attempt_ms LIMIT ?3)"
                      " RETURNING id, merchant_id, type, object_id, attempts, created_ms",
    [W_EVENT_DELIVERED] = "UPDATE events SET state = 'delivered', last_status = ?2,"
                          " last_error = NULL, updated_ms = ?3 WHERE id = ?1 AND"
                          " state = 'pending'",
    [W_EVENT_RETRY] = "UPDATE events SET next_attempt_ms = ?5, last_status = ?2,"
                      " last_error = ?4, updated_ms = ?3 WHERE id = ?1 AND state = 'pending'",
    [W_EVENT_FAILED] = "UPDATE events SET state = 'failed', last_status = ?2, last_error = ?4,"
                       " updated_ms = ?3 WHERE id = ?1 AND state = 'pending'",
    [W_RECONCILIATION_INSERT] = "INSERT INTO reconciliations(date, channel, run_ms,"
                                " differences, report) VALUES (?1,?2,?3,?4,?5)",
    [W_NOTIFY_PURGE] = "DELETE FROM channel_notifications WHERE received_ms < ?1",
    [W_PAYMENT_BY_SERIAL] = "SELECT " PAYMENT_COLS " FROM payments WHERE serial_no = ?1",
    [W_REFUND_BY_NO] = "SELECT " REFUND_COLS " FROM refunds WHERE refund_no = ?1",
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
    R_REFUND_GET,
    R_REFUND_LIST,
    R_REFUND_NEXT,
    R_WEBHOOK_GET,
    R_EVENT_NEXT,
    R_PAYMENT_BY_SERIAL,
    R_REFUND_BY_NO,
    R_PAYMENTS_SUCCEEDED,
    R_REFUNDS_SUCCEEDED,
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
    [R_REFUND_GET] = "SELECT " REFUND_COLS " FROM refunds WHERE id = ?1 AND merchant_id = ?2",
    [R_REFUND_LIST] = "SELECT " REFUND_COLS " FROM refunds WHERE payment_id = ?1 AND"
                      " merchant_id = ?2 ORDER BY created_ms, id",
    [R_REFUND_NEXT] = "SELECT min(next_attempt_ms) FROM refunds WHERE status = 'processing'",
    [R_WEBHOOK_GET] = "SELECT merchant_id, url, secret, updated_ms FROM webhooks WHERE"
                      " merchant_id = ?1",
    [R_EVENT_NEXT] = "SELECT min(next_attempt_ms) FROM events WHERE state = 'pending'",
    [R_PAYMENT_BY_SERIAL] = "SELECT " PAYMENT_COLS " FROM payments WHERE serial_no = ?1",
    [R_REFUND_BY_NO] = "SELECT " REFUND_COLS " FROM refunds WHERE refund_no = ?1",
    [R_PAYMENTS_SUCCEEDED] = "SELECT " PAYMENT_COLS " FROM payments WHERE channel = ?1 AND"
                             " status = 'succeeded' AND created_ms >= ?2 AND created_ms < ?3"
                             " ORDER BY created_ms, id",
    [R_REFUNDS_SUCCEEDED] = "SELECT " REFUND_COLS " FROM refunds WHERE channel = ?1 AND"
                            " status = 'succeeded' AND created_ms >= ?2 AND created_ms < ?3"
                            " ORDER BY created_ms, id",
};

/* How many idempotency records one purge operation deletes at most, so that
 * a purge never holds the writer for long. */
#define PURGE_BATCH 5000

/* How long the signature of a channel's notification is kept to refuse its
 * replay: longer than the 300 s a timestamp stays fresh, either way. */
#define NOTIFY_KEEP_MS (3600 * 1000)

/* WAL frames after which the checkpointer copies the log into the database.
 * Checkpoints run on their own thread and connection, so the writer never
 * spends its time on them (SQLite's automatic checkpoint would run inside
 * the writer's commit). */
#define CHECKPOINT_FRAMES 1000

/* A checkpoint that copies the whole log cannot also restart it while any
 * reader still reads from it. Readers here never stop under load, so
 * without help the log never restarts and grows without end (measured:
 * 50 MB/s at 1,200 paid orders/s, 800 MB after 16 s, each commit an append
 * whose fsync must also journal the file's new size). So once the log
 * holds wal_restart_frames frames, the writer, between two batches, runs a
 * RESTART checkpoint itself: it copies what the checkpointer has not, waits
 * at most WAL_RESTART_WAIT_MS for the readers to leave the log, and the
 * next commit writes the log from its start again (overwrites, not
 * appends). Measured at that load: 2.6-9.5 ms a restart, one every 1.3 s
 * with the default size. A restart a reader kept from finishing is tried
 * again WAL_RESTART_RETRY_FIRST_MS later, and after each further failure
 * twice as late, up to WAL_RESTART_RETRY_MAX_MS: a reader the scheduler
 * merely paused is gone by the first retry (a fixed second let the log
 * grow by 28 MB in a sanitizer run, where such a pause is common), while
 * a long report query costs the writer at most one 20 ms wait a second.
 *
 * The restart copies on the commit path, so it waits until the checkpointer
 * has copied all but WAL_RESTART_BACKLOG checkpoints' worth of the log
 * (after a long reader the backlog could be the whole log). And the
 * checkpointer, whose passes under load can follow one another without a
 * gap, starts no new pass while the writer wants to restart. */
#define WAL_RESTART_WAIT_MS 20
#define WAL_RESTART_BACKLOG 2
#define WAL_RESTART_RETRY_FIRST_MS 25
#define WAL_RESTART_RETRY_MAX_MS 1000
#define STORE_BUSY_TIMEOUT_MS 10000

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
    bool checkpoint_running; /* the checkpointer is copying */
    bool restart_wanted;     /* the writer waits for that pass to end */
    bool restarting;         /* the writer is restarting the log */
    int wal_frames;          /* the log's size at the last commit */
    int wal_frames_checkpointed; /* the log's size at the last checkpoint */
    int wal_backfilled;          /* frames the last pass left copied */
    int checkpoint_frames;       /* a pass after this many new frames */
    int wal_restart_frames;      /* < 0: never */
    int64_t wal_restart_not_before_ms;
    int wal_restart_retry_ms;    /* the wait after the next failure */
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

static void row_to_refund(sqlite3_stmt *st, struct refund *r)
{
    memset(r, 0, sizeof(*r));
    copy_col(st, 0, r->id, sizeof(r->id));
    copy_col(st, 1, r->payment_id, sizeof(r->payment_id));
    copy_col(st, 2, r->order_id, sizeof(r->order_id));
    copy_col(st, 3, r->merchant_id, sizeof(r->merchant_id));
    r->amount_minor = sqlite3_column_int64(st, 4);
    copy_col(st, 5, r->currency, sizeof(r->currency));
    copy_col(st, 6, r->channel, sizeof(r->channel));
    copy_col(st, 7, r->payment_serial_no, sizeof(r->payment_serial_no));
    r->has_reason = sqlite3_column_type(st, 8) != SQLITE_NULL;
    copy_col(st, 8, r->reason, sizeof(r->reason));
    char status[32];
    copy_col(st, 9, status, sizeof(status));
    PAYD_ASSERT(payment_status_parse(status, &r->status) == 0);
    copy_col(st, 10, r->refund_no, sizeof(r->refund_no));
    copy_col(st, 11, r->channel_refund_id, sizeof(r->channel_refund_id));
    copy_col(st, 12, r->failure_code, sizeof(r->failure_code));
    copy_col(st, 13, r->failure_message, sizeof(r->failure_message));
    r->automatic = sqlite3_column_int(st, 14) != 0;
    r->attempts = sqlite3_column_int64(st, 15);
    r->created_ms = sqlite3_column_int64(st, 16);
    r->updated_ms = sqlite3_column_int64(st, 17);
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
 * seen and records it (fence < 0: no token, nothing checked); with paid_ms > 0 also moves the order from
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
    if (fence < 0)
        fence = stored_fence; /* a channel's notification: no token, none needed */
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

/* A statement of a text key ?1 and a number ?2. */
static int op_simple_text(struct sqlite_store *s, enum wstmt w, const char *a, int64_t b)
{
    sqlite3_stmt *st = s->w[w];
    bind_text(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    return step_done(st) == SQLITE_DONE ? STORE_OK : STORE_E_IO;
}

/* A claim of due rows (the outbox, refunds, events): its statement with
 * ?1 = now, ?2 = the lease's end, ?3 = max, ready to step. */
static sqlite3_stmt *claim_statement(struct sqlite_store *s, enum wstmt w, int max,
                                     int64_t lease_ms)
{
    PAYD_ASSERT(max > 0 && max <= STORE_CLAIM_MAX);
    int64_t now_ms = clock_wall_ms();
    sqlite3_stmt *st = s->w[w];
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int64(st, 2, now_ms + lease_ms);
    sqlite3_bind_int(st, 3, max);
    return st;
}

/* Reads the idempotency record of key into out; STORE_E_IDEM_EXISTS when
 * there is one, STORE_OK when not. */
static int idem_check(struct sqlite_store *s, const char *merchant_id, const char *key,
                      struct idem_record *out)
{
    sqlite3_stmt *st = s->w[W_IDEM_GET];
    bind_text(st, 1, merchant_id);
    bind_text(st, 2, key);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        copy_col(st, 0, out->fingerprint, sizeof(out->fingerprint));
        out->status = sqlite3_column_int(st, 1);
        out->body = xstrdup((const char *)sqlite3_column_text(st, 2));
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == SQLITE_ROW)
        return STORE_E_IDEM_EXISTS;
    return rc == SQLITE_DONE ? STORE_OK : STORE_E_IO;
}

static int idem_insert(struct sqlite_store *s, const char *merchant_id, const char *key,
                       const char *fingerprint, int status, const char *body, int64_t now_ms)
{
    sqlite3_stmt *st = s->w[W_IDEM_INSERT];
    bind_text(st, 1, merchant_id);
    bind_text(st, 2, key);
    bind_text(st, 3, fingerprint);
    sqlite3_bind_int(st, 4, status);
    bind_text(st, 5, body);
    sqlite3_bind_int64(st, 6, now_ms);
    return step_done(st) == SQLITE_DONE ? STORE_OK : STORE_E_IO;
}

static int op_payment_create(struct sqlite_store *s, struct store_op *op)
{
    const struct payment *p = &op->in.payment_create.payment;
    const char *key = op->in.payment_create.idem_key;
    sqlite3_stmt *st;
    int rc;

    if (key && (rc = idem_check(s, p->merchant_id, key, &op->out.idem)) != STORE_OK)
        return rc;

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

    if (key)
        return idem_insert(s, p->merchant_id, key, op->in.payment_create.idem_fingerprint,
                           op->in.payment_create.idem_status, op->in.payment_create.idem_body,
                           p->created_ms);
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

/* The final event of a payment or refund, when its merchant has a webhook
 * endpoint (else nothing). */
static int add_event(struct sqlite_store *s, const char *object_id, const char *merchant_id,
                     const char *type, int64_t now_ms)
{
    sqlite3_stmt *st = s->w[W_EVENT_INSERT];
    bind_text(st, 1, object_id);
    bind_text(st, 2, merchant_id);
    bind_text(st, 3, type);
    sqlite3_bind_int64(st, 4, now_ms);
    return step_done(st) == SQLITE_DONE ? STORE_OK : STORE_E_IO;
}

/* Reserves r's amount against what its payment captured (at most what is
 * left: else STORE_E_EXCEEDS with *refundable set) and inserts the refund,
 * processing and due at once. */
static int reserve_refund(struct sqlite_store *s, const struct refund *r, int64_t captured,
                          int64_t *refundable)
{
    sqlite3_stmt *st;
    int rc;
    if (op_simple_text(s, W_REFUND_TOTALS_INIT, r->payment_id, captured) != STORE_OK)
        return STORE_E_IO;
    st = s->w[W_REFUND_TOTALS_GET];
    bind_text(st, 1, r->payment_id);
    rc = sqlite3_step(st);
    int64_t left = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_ROW)
        return STORE_E_IO;
    if (left < r->amount_minor) {
        *refundable = left;
        return STORE_E_EXCEEDS;
    }
    /* The CHECK on refund_totals stands behind the test above. */
    if (op_simple_text(s, W_REFUND_RESERVE, r->payment_id, r->amount_minor) != STORE_OK)
        return STORE_E_IO;

    st = s->w[W_REFUND_INSERT];
    bind_text(st, 1, r->id);
    bind_text(st, 2, r->payment_id);
    bind_text(st, 3, r->order_id);
    bind_text(st, 4, r->merchant_id);
    sqlite3_bind_int64(st, 5, r->amount_minor);
    bind_text(st, 6, r->currency);
    bind_text(st, 7, r->channel);
    bind_text(st, 8, r->payment_serial_no);
    bind_text(st, 9, r->has_reason ? r->reason : NULL);
    bind_text(st, 10, r->refund_no);
    sqlite3_bind_int(st, 11, r->automatic);
    sqlite3_bind_int64(st, 12, r->created_ms);
    if (step_done(st) != SQLITE_DONE)
        return STORE_E_IO;
    return STORE_OK;
}

/* Records a payment's final status, from processing (see store.h,
 * payment_finish); late_id and late_no name the automatic refund of a
 * charge that succeeded after its order closed, *late tells whether one was
 * made. */
static int finish_payment(struct sqlite_store *s, const struct payment *p, int64_t fence,
                          const char *late_id, const char *late_no, bool *late)
{
    PAYD_ASSERT(p->status == PAYMENT_SUCCEEDED || p->status == PAYMENT_FAILED);
    enum order_status order_status;
    int64_t amount_minor;
    char currency[4];
    bool ok = p->status == PAYMENT_SUCCEEDED;
    *late = false;
    /* On success the order turns paid in the same statement that records
     * the token; the savepoint undoes it if the payment is already final. */
    int rc = fence_order(s, p->order_id, p->merchant_id, fence, ok ? p->updated_ms : 0,
                         &order_status, &amount_minor, currency);
    if (rc == STORE_E_NOT_PAYABLE) {
        if (payment_final(s, p->id))
            return STORE_E_FINAL; /* a repeated outcome: the order was paid by it */
        if (order_status != ORDER_CLOSED)
            return rc;
        /* Charged after the order closed: the money moved, so it is
         * recorded, and given back below. The order stays closed; the
         * token is recorded as for any outcome. */
        *late = true;
        if (fence >= 0 && op_simple_text(s, W_ORDER_SET_FENCE, p->order_id, fence) != STORE_OK)
            return STORE_E_IO;
    } else if (rc != STORE_OK) {
        return rc;
    }
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
    if (add_event(s, p->id, p->merchant_id, ok ? "payment.succeeded" : "payment.failed",
                  p->updated_ms) != STORE_OK)
        return STORE_E_IO;
    if (!ok)
        return STORE_OK;

    /* Double entry: the channel's clearing account pays the merchant. */
    char clearing[64], merchant[64];
    snprintf(clearing, sizeof(clearing), "clearing:%s", p->channel);
    snprintf(merchant, sizeof(merchant), "merchant:%s", p->merchant_id);
    if (ledger_transfer(s, p->id, clearing, merchant, p->amount_minor, p->currency,
                        p->updated_ms) != STORE_OK)
        return STORE_E_IO;
    if (!*late)
        return STORE_OK;
    struct refund r;
    refund_of_late_charge(p, late_id, late_no, &r);
    int64_t left;
    rc = reserve_refund(s, &r, p->amount_minor, &left);
    return rc == STORE_OK ? STORE_OK : STORE_E_IO; /* nothing was refunded before */
}

static int op_refund_create(struct sqlite_store *s, struct store_op *op)
{
    const struct refund *r = &op->in.refund_create.refund;
    const char *key = op->in.refund_create.idem_key;
    int rc;
    if (key && (rc = idem_check(s, r->merchant_id, key, &op->out.idem)) != STORE_OK)
        return rc;

    sqlite3_stmt *st = s->w[W_PAYMENT_GET];
    bind_text(st, 1, r->payment_id);
    rc = sqlite3_step(st);
    struct payment p;
    if (rc == SQLITE_ROW)
        row_to_payment(st, &p);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == SQLITE_DONE)
        return STORE_E_NOT_FOUND;
    if (rc != SQLITE_ROW)
        return STORE_E_IO;
    if (strcmp(p.merchant_id, r->merchant_id) != 0 || strcmp(p.order_id, r->order_id) != 0 ||
        strcmp(p.currency, r->currency) != 0 || strcmp(p.channel, r->channel) != 0 ||
        strcmp(p.serial_no, r->payment_serial_no) != 0)
        return STORE_E_NOT_FOUND;
    if (p.status != PAYMENT_SUCCEEDED)
        return STORE_E_NOT_REFUNDABLE;

    if ((rc = reserve_refund(s, r, p.amount_minor, &op->out.refundable)) != STORE_OK)
        return rc;
    if (key)
        return idem_insert(s, r->merchant_id, key, op->in.refund_create.idem_fingerprint,
                           op->in.refund_create.idem_status, op->in.refund_create.idem_body,
                           r->created_ms);
    return STORE_OK;
}

static int op_refund_claim(struct sqlite_store *s, struct store_op *op)
{
    int max = op->in.refund_claim.max;
    sqlite3_stmt *st = claim_statement(s, W_REFUND_CLAIM, max, op->in.refund_claim.lease_ms);
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        PAYD_ASSERT(n < max);
        row_to_refund(st, &op->in.refund_claim.refunds[n++]);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE)
        return STORE_E_IO;
    op->out.claimed = n;
    return STORE_OK;
}

/* Records a refund's final status, from processing; see store.h. */
static int finish_refund(struct sqlite_store *s, const struct refund *r)
{
    bool ok = r->status == PAYMENT_SUCCEEDED;
    PAYD_ASSERT(ok || r->status == PAYMENT_FAILED);
    sqlite3_stmt *st = s->w[W_REFUND_FINISH];
    bind_text(st, 1, r->id);
    bind_text(st, 2, payment_status_name(r->status));
    bind_text(st, 3, ok ? r->channel_refund_id : NULL);
    bind_text(st, 4, ok ? NULL : r->failure_code);
    bind_text(st, 5, ok ? NULL : r->failure_message);
    sqlite3_bind_int64(st, 6, r->updated_ms);
    /* The refund as stored, not as the caller has it. */
    struct refund stored = {0};
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        copy_col(st, 0, stored.payment_id, sizeof(stored.payment_id));
        copy_col(st, 1, stored.order_id, sizeof(stored.order_id));
        copy_col(st, 2, stored.merchant_id, sizeof(stored.merchant_id));
        stored.amount_minor = sqlite3_column_int64(st, 3);
        copy_col(st, 4, stored.currency, sizeof(stored.currency));
        copy_col(st, 5, stored.channel, sizeof(stored.channel));
        rc = sqlite3_step(st);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE)
        return STORE_E_IO;
    if (!stored.payment_id[0])
        return STORE_E_FINAL;
    if (add_event(s, r->id, stored.merchant_id, ok ? "refund.succeeded" : "refund.failed",
                  r->updated_ms) != STORE_OK)
        return STORE_E_IO;
    if (!ok)
        return op_simple_text(s, W_REFUND_RELEASE, stored.payment_id, stored.amount_minor);

    st = s->w[W_REFUND_SETTLE];
    bind_text(st, 1, stored.payment_id);
    sqlite3_bind_int64(st, 2, stored.amount_minor);
    rc = sqlite3_step(st);
    bool full = rc == SQLITE_ROW && sqlite3_column_int(st, 0) != 0;
    if (rc == SQLITE_ROW)
        rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE)
        return STORE_E_IO;
    /* The money goes back: the merchant pays the channel's clearing account. */
    char clearing[64], merchant[64];
    snprintf(clearing, sizeof(clearing), "clearing:%s", stored.channel);
    snprintf(merchant, sizeof(merchant), "merchant:%s", stored.merchant_id);
    if (ledger_transfer(s, r->id, merchant, clearing, stored.amount_minor, stored.currency,
                        r->updated_ms) != STORE_OK)
        return STORE_E_IO;
    st = s->w[W_REFUND_ORDER];
    bind_text(st, 1, stored.order_id);
    bind_text(st, 2, order_status_name(full ? ORDER_REFUNDED : ORDER_PARTIALLY_REFUNDED));
    sqlite3_bind_int64(st, 3, r->updated_ms);
    return step_done(st) == SQLITE_DONE ? STORE_OK : STORE_E_IO;
}

/* The payment or refund a notification names, moved to succeeded. */
static int op_notify_apply(struct sqlite_store *s, struct store_op *op)
{
    const char *number = op->in.notify.number;
    sqlite3_stmt *st = s->w[W_NOTIFY_INSERT];
    bind_text(st, 1, op->in.notify.signature);
    bind_text(st, 2, op->in.notify.channel);
    bind_text(st, 3, op->in.notify.notify_id);
    sqlite3_bind_int64(st, 4, op->in.notify.received_ms);
    int rc = step_done(st);
    if (rc == SQLITE_CONSTRAINT)
        return STORE_E_DUPLICATE;
    if (rc != SQLITE_DONE)
        return STORE_E_IO;

    struct payment p;
    struct refund r;
    st = s->w[op->in.notify.refund ? W_REFUND_BY_NO : W_PAYMENT_BY_SERIAL];
    bind_text(st, 1, number);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (op->in.notify.refund)
            row_to_refund(st, &r);
        else
            row_to_payment(st, &p);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == SQLITE_DONE)
        return STORE_E_NOT_FOUND;
    if (rc != SQLITE_ROW)
        return STORE_E_IO;

    const char *channel = op->in.notify.refund ? r.channel : p.channel;
    int64_t amount = op->in.notify.refund ? r.amount_minor : p.amount_minor;
    const char *currency = op->in.notify.refund ? r.currency : p.currency;
    enum payment_status status = op->in.notify.refund ? r.status : p.status;
    if (strcmp(channel, op->in.notify.channel) != 0)
        return STORE_E_NOT_FOUND;
    if (amount != op->in.notify.amount_minor || strcmp(currency, op->in.notify.currency) != 0)
        return STORE_E_REUSED;
    snprintf(op->out.notified.id, sizeof(op->out.notified.id), "%s",
             op->in.notify.refund ? r.id : p.id);
    snprintf(op->out.notified.order_id, sizeof(op->out.notified.order_id), "%s",
             op->in.notify.refund ? r.order_id : p.order_id);
    snprintf(op->out.notified.merchant_id, sizeof(op->out.notified.merchant_id), "%s",
             op->in.notify.refund ? r.merchant_id : p.merchant_id);
    op->out.notified.changed = false;
    if (status == PAYMENT_SUCCEEDED)
        return STORE_OK;
    if (status == PAYMENT_FAILED)
        return STORE_E_FINAL;
    op->out.notified.changed = true;
    int64_t now_ms = op->in.notify.received_ms;
    if (op->in.notify.refund) {
        r.status = PAYMENT_SUCCEEDED;
        snprintf(r.channel_refund_id, sizeof(r.channel_refund_id), "%s", op->in.notify.txn_id);
        r.updated_ms = now_ms;
        return finish_refund(s, &r);
    }
    p.status = PAYMENT_SUCCEEDED;
    snprintf(p.channel_txn_id, sizeof(p.channel_txn_id), "%s", op->in.notify.txn_id);
    p.updated_ms = now_ms;
    return finish_payment(s, &p, -1, op->in.notify.late_refund_id,
                          op->in.notify.late_refund_no, &op->out.notified.late_refund);
}

static int op_webhook_set(struct sqlite_store *s, struct store_op *op)
{
    const struct webhook *w = &op->in.webhook_set;
    sqlite3_stmt *st = s->w[w->url[0] ? W_WEBHOOK_UPSERT : W_WEBHOOK_DELETE];
    bind_text(st, 1, w->merchant_id);
    if (w->url[0]) {
        bind_text(st, 2, w->url);
        bind_text(st, 3, w->secret);
        sqlite3_bind_int64(st, 4, w->updated_ms);
    }
    if (step_done(st) != SQLITE_DONE)
        return STORE_E_IO;
    return sqlite3_changes(s->wdb) > 0 ? STORE_OK : STORE_E_NOT_FOUND;
}

static int op_event_claim(struct sqlite_store *s, struct store_op *op)
{
    int max = op->in.event_claim.max;
    sqlite3_stmt *st = claim_statement(s, W_EVENT_CLAIM, max, op->in.event_claim.lease_ms);
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        PAYD_ASSERT(n < max);
        struct event *e = &op->in.event_claim.events[n++];
        memset(e, 0, sizeof(*e));
        copy_col(st, 0, e->id, sizeof(e->id));
        copy_col(st, 1, e->merchant_id, sizeof(e->merchant_id));
        copy_col(st, 2, e->type, sizeof(e->type));
        copy_col(st, 3, e->object_id, sizeof(e->object_id));
        e->attempts = sqlite3_column_int64(st, 4);
        e->created_ms = sqlite3_column_int64(st, 5);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE)
        return STORE_E_IO;
    st = s->w[W_WEBHOOK_GET];
    for (int i = 0; i < n; i++) {
        struct event *e = &op->in.event_claim.events[i];
        bind_text(st, 1, e->merchant_id);
        rc = sqlite3_step(st);
        e->has_endpoint = rc == SQLITE_ROW;
        if (rc == SQLITE_ROW) {
            copy_col(st, 0, e->url, sizeof(e->url));
            copy_col(st, 1, e->secret, sizeof(e->secret));
        }
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return STORE_E_IO;
    }
    op->out.claimed = n;
    return STORE_OK;
}

static int op_event_finish(struct sqlite_store *s, struct store_op *op)
{
    int64_t now_ms = clock_wall_ms();
    bool retry = !op->in.event_finish.delivered && op->in.event_finish.retry_in_ms >= 0;
    enum wstmt w = op->in.event_finish.delivered ? W_EVENT_DELIVERED
                   : retry                       ? W_EVENT_RETRY
                                                 : W_EVENT_FAILED;
    sqlite3_stmt *st = s->w[w];
    bind_text(st, 1, op->in.event_finish.id);
    if (op->in.event_finish.status > 0)
        sqlite3_bind_int(st, 2, op->in.event_finish.status);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_int64(st, 3, now_ms);
    if (w != W_EVENT_DELIVERED)
        bind_text(st, 4, op->in.event_finish.error);
    if (retry)
        sqlite3_bind_int64(st, 5, now_ms + op->in.event_finish.retry_in_ms);
    return step_done(st) == SQLITE_DONE ? STORE_OK : STORE_E_IO;
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
    int max = op->in.outbox_claim.max;
    sqlite3_stmt *st = claim_statement(s, W_OUTBOX_CLAIM, max, op->in.outbox_claim.lease_ms);
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
        return finish_payment(s, &op->in.payment_finish.payment, op->in.payment_finish.fence,
                              op->in.payment_finish.late_refund_id,
                              op->in.payment_finish.late_refund_no, &op->out.late_refund);
    case STORE_OP_NOTIFY_APPLY:
        return op_notify_apply(s, op);
    case STORE_OP_WEBHOOK_SET:
        return op_webhook_set(s, op);
    case STORE_OP_RECONCILIATION_RECORD: {
        sqlite3_stmt *st = s->w[W_RECONCILIATION_INSERT];
        bind_text(st, 1, op->in.reconciliation.date);
        bind_text(st, 2, op->in.reconciliation.channel);
        sqlite3_bind_int64(st, 3, op->in.reconciliation.run_ms);
        sqlite3_bind_int64(st, 4, op->in.reconciliation.differences);
        bind_text(st, 5, op->in.reconciliation.report);
        return step_done(st) == SQLITE_DONE ? STORE_OK : STORE_E_IO;
    }
    case STORE_OP_EVENT_CLAIM:
        return op_event_claim(s, op);
    case STORE_OP_EVENT_FINISH:
        return op_event_finish(s, op);
    case STORE_OP_ORDER_CLOSE_EXPIRED: {
        sqlite3_bind_int(s->w[W_ORDER_CLOSE_EXPIRED], 3, op->in.order_close.max);
        int rc = op_simple(s, W_ORDER_CLOSE_EXPIRED, op->in.order_close.created_before_ms,
                           op->in.order_close.updated_ms);
        op->out.purged = sqlite3_changes(s->wdb);
        return rc;
    }
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
        /* Notifications' signatures, long after their timestamps went stale. */
        int64_t seen_before_ms = clock_wall_ms() - NOTIFY_KEEP_MS;
        if (op->in.idem_purge.older_than_ms < seen_before_ms)
            seen_before_ms = op->in.idem_purge.older_than_ms;
        if (rc == STORE_OK)
            rc = op_simple(s, W_NOTIFY_PURGE, seen_before_ms, 0);
        return rc;
    }
    case STORE_OP_MERCHANT_ADD:
    case STORE_OP_MERCHANT_ROTATE:
        return op_merchant(s, op);
    case STORE_OP_REFUND_CREATE:
        return op_refund_create(s, op);
    case STORE_OP_REFUND_CLAIM:
        return op_refund_claim(s, op);
    case STORE_OP_REFUND_FINISH:
        return finish_refund(s, &op->in.refund_finish.refund);
    case STORE_OP_REFUND_RETRY:
        return op_simple_text(s, W_REFUND_RETRY, op->in.refund_retry.id,
                              clock_wall_ms() + op->in.refund_retry.delay_ms);
    case STORE_OP_RELAY_CLAIM:
    case STORE_OP_RELAY_RELEASE:
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
    return kind == STORE_OP_PAYMENT_CREATE || kind == STORE_OP_PAYMENT_FINISH ||
           kind == STORE_OP_REFUND_CREATE || kind == STORE_OP_REFUND_FINISH ||
           kind == STORE_OP_NOTIFY_APPLY;
}

/* The rc for a batch the database failed: STORE_E_FULL when the disk (or
 * the database's size limit) is full, STORE_E_IO otherwise. */
static int failed_rc(sqlite3 *db)
{
    return (sqlite3_extended_errcode(db) & 0xff) == SQLITE_FULL ? STORE_E_FULL : STORE_E_IO;
}

/* Every op of the batch failed with rc: nothing of it is committed. */
static void fail_batch(struct store_op **ops, int n, int rc)
{
    for (int i = 0; i < n; i++) {
        if (ops[i]->rc == STORE_E_IDEM_EXISTS)
            free(ops[i]->out.idem.body);
        ops[i]->rc = rc;
    }
}

/* Whether an op the database failed takes its batch down: an op without a
 * savepoint may have written half of itself, and after a full disk or an
 * I/O error SQLite may have rolled the whole transaction back already. A
 * constraint failure in an op with a savepoint fails that op alone. */
static bool batch_lost(sqlite3 *db, bool savepoint)
{
    int code = sqlite3_extended_errcode(db) & 0xff;
    return !savepoint || sqlite3_get_autocommit(db) || code == SQLITE_FULL ||
           code == SQLITE_IOERR || code == SQLITE_NOMEM || code == SQLITE_CORRUPT;
}

/* Runs one batch in one transaction and reports every op. When the
 * database fails an op so that the batch is lost (batch_lost()), nothing of
 * the batch is committed and every op is told so. */
static void run_batch(struct sqlite_store *s, struct store_op **ops, int n)
{
    if (step_done(s->w[W_BEGIN]) != SQLITE_DONE) {
        log_db_error(s->wdb, "begin");
        fail_batch(ops, n, failed_rc(s->wdb));
        goto out_report;
    }
    for (int i = 0; i < n; i++) {
        bool savepoint = needs_savepoint(ops[i]->kind);
        if (savepoint && step_done(s->w[W_SAVEPOINT]) != SQLITE_DONE)
            ops[i]->rc = STORE_E_IO;
        else
            ops[i]->rc = run_op(s, ops[i]);
        if (ops[i]->rc == STORE_E_IO)
            log_db_error(s->wdb, store_rc_name(ops[i]->rc));
        if (ops[i]->rc == STORE_E_IO && batch_lost(s->wdb, savepoint)) {
            int rc = failed_rc(s->wdb);
            step_done(s->w[W_ROLLBACK]); /* fails harmlessly if SQLite rolled back */
            fail_batch(ops, i + 1, rc);  /* the ops run so far */
            for (int j = i + 1; j < n; j++)
                ops[j]->rc = rc;         /* and those never run */
            goto out_report;
        }
        if (savepoint) {
            if (ops[i]->rc != STORE_OK)
                step_done(s->w[W_ROLLBACK_TO]);
            step_done(s->w[W_RELEASE]);
        }
    }
    if (step_done(s->w[W_COMMIT]) != SQLITE_DONE) {
        log_db_error(s->wdb, "commit");
        int rc = failed_rc(s->wdb);
        step_done(s->w[W_ROLLBACK]);
        fail_batch(ops, n, rc);
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

/* Between batches, on the writer: restarts the log once it is due (see
 * WAL_RESTART_WAIT_MS). While the checkpointer is copying, the restart
 * would find its lock taken: it asks the checkpointer to start no new pass
 * and the next batch tries again. */
static void restart_log_if_due(struct sqlite_store *s)
{
    pthread_mutex_lock(&s->mu);
    bool due = s->wal_restart_frames > 0 && s->wal_frames >= s->wal_restart_frames &&
               clock_mono_ms() >= s->wal_restart_not_before_ms;
    if (due && s->wal_frames - s->wal_backfilled > WAL_RESTART_BACKLOG * s->checkpoint_frames) {
        /* Most of the log is still to copy: the checkpointer does that, off
         * the commit path, first. */
        due = false;
        s->restart_wanted = false;
        if (!s->checkpoint_due) {
            s->checkpoint_due = true;
            pthread_cond_signal(&s->wal_grew);
        }
    } else if (due && s->checkpoint_running) {
        due = false;
        s->restart_wanted = true;
    }
    if (due) {
        s->restarting = true;
        s->restart_wanted = false;
    }
    pthread_mutex_unlock(&s->mu);
    if (!due)
        return;
    int log_frames = 0, done_frames = 0;
    sqlite3_busy_timeout(s->wdb, WAL_RESTART_WAIT_MS);
    int rc = sqlite3_wal_checkpoint_v2(s->wdb, NULL, SQLITE_CHECKPOINT_RESTART, &log_frames,
                                       &done_frames);
    sqlite3_busy_timeout(s->wdb, STORE_BUSY_TIMEOUT_MS);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
        log_db_error(s->wdb, "checkpoint (restart)");
    pthread_mutex_lock(&s->mu);
    s->restarting = false;
    if (rc == SQLITE_OK) {
        s->wal_frames = s->wal_backfilled = 0; /* the next commit writes from the start */
        s->wal_restart_retry_ms = WAL_RESTART_RETRY_FIRST_MS;
    } else {
        s->wal_restart_not_before_ms = clock_mono_ms() + s->wal_restart_retry_ms;
        s->wal_restart_retry_ms *= 2;
        if (s->wal_restart_retry_ms > WAL_RESTART_RETRY_MAX_MS)
            s->wal_restart_retry_ms = WAL_RESTART_RETRY_MAX_MS;
    }
    pthread_cond_signal(&s->wal_grew); /* a checkpoint held back may run */
    pthread_mutex_unlock(&s->mu);
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
        restart_log_if_due(s);
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
    /* Ask for a checkpoint once checkpoint_frames frames were added since
     * the last one (the log restarts from 0 once it was all copied). */
    pthread_mutex_lock(&s->mu);
    s->wal_frames = frames;
    if (frames < s->wal_frames_checkpointed)
        s->wal_frames_checkpointed = 0;
    if (frames < s->wal_backfilled)
        s->wal_backfilled = 0;
    if (frames - s->wal_frames_checkpointed >= s->checkpoint_frames && !s->checkpoint_due) {
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
        while ((!s->checkpoint_due || s->restarting || s->restart_wanted) && !s->stopping)
            pthread_cond_wait(&s->wal_grew, &s->mu);
        if (s->stopping)
            break;
        s->checkpoint_due = false;
        s->checkpoint_running = true;
        pthread_mutex_unlock(&s->mu);
        int log_frames = 0, done_frames = 0;
        int rc = sqlite3_wal_checkpoint_v2(s->cdb, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                           &done_frames);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            log_db_error(s->cdb, "checkpoint");
        pthread_mutex_lock(&s->mu);
        s->checkpoint_running = false;
        if (rc == SQLITE_OK || rc == SQLITE_BUSY)
            s->wal_backfilled = done_frames;
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
    sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
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

static void convert_refund(sqlite3_stmt *st, void *out)
{
    row_to_refund(st, out);
}

static int sqlite_refund_get(store *base, const char *merchant_id, const char *id,
                             struct refund *out)
{
    return get_one((struct sqlite_store *)base, R_REFUND_GET, id, merchant_id, convert_refund,
                   out);
}

static int64_t sqlite_refund_next_due_ms(store *base)
{
    return read_scalar((struct sqlite_store *)base, R_REFUND_NEXT, INT64_MAX);
}

static void convert_webhook(sqlite3_stmt *st, void *out)
{
    struct webhook *w = out;
    memset(w, 0, sizeof(*w));
    copy_col(st, 0, w->merchant_id, sizeof(w->merchant_id));
    copy_col(st, 1, w->url, sizeof(w->url));
    copy_col(st, 2, w->secret, sizeof(w->secret));
    w->updated_ms = sqlite3_column_int64(st, 3);
}

static int sqlite_webhook_get(store *base, const char *merchant_id, struct webhook *out)
{
    return get_one((struct sqlite_store *)base, R_WEBHOOK_GET, merchant_id, NULL,
                   convert_webhook, out);
}

static int64_t sqlite_event_next_due_ms(store *base)
{
    return read_scalar((struct sqlite_store *)base, R_EVENT_NEXT, INT64_MAX);
}

static int sqlite_payment_by_serial(store *base, const char *serial_no, struct payment *out)
{
    return get_one((struct sqlite_store *)base, R_PAYMENT_BY_SERIAL, serial_no, NULL,
                   convert_payment, out);
}

static int sqlite_refund_by_no(store *base, const char *refund_no, struct refund *out)
{
    return get_one((struct sqlite_store *)base, R_REFUND_BY_NO, refund_no, NULL,
                   convert_refund, out);
}

/* Hands the rows of a list read to a caller's each(), as records. */
struct each_call {
    int (*payment)(void *arg, const struct payment *p);
    int (*refund)(void *arg, const struct refund *r);
    void *arg;
};

/* Runs read q with ?1 = a and either ?2 = b (b not NULL) or ?2, ?3 = the
 * range [from_ms, to_ms), and hands each row, as a payment or a refund, to
 * the caller until its each() returns non-zero. */
static int each_row(struct sqlite_store *s, enum rstmt q, const char *a, const char *b,
                    int64_t from_ms, int64_t to_ms, const struct each_call *c)
{
    sqlite3_stmt *st = reader_stmt(s, q);
    if (!st)
        return STORE_E_IO;
    bind_text(st, 1, a);
    if (b) {
        bind_text(st, 2, b);
    } else {
        sqlite3_bind_int64(st, 2, from_ms);
        sqlite3_bind_int64(st, 3, to_ms);
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int stop;
        if (c->payment) {
            struct payment p;
            row_to_payment(st, &p);
            stop = c->payment(c->arg, &p);
        } else {
            struct refund r;
            row_to_refund(st, &r);
            stop = c->refund(c->arg, &r);
        }
        if (stop != 0)
            break;
    }
    reader_done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? STORE_OK : STORE_E_IO;
}

static int sqlite_payment_list(store *base, const char *merchant_id, const char *order_id,
                               int (*each)(void *, const struct payment *), void *arg)
{
    struct each_call c = {.payment = each, .arg = arg};
    return each_row((struct sqlite_store *)base, R_PAYMENT_LIST, order_id, merchant_id, 0, 0,
                    &c);
}

static int sqlite_refund_list(store *base, const char *merchant_id, const char *payment_id,
                              int (*each)(void *, const struct refund *), void *arg)
{
    struct each_call c = {.refund = each, .arg = arg};
    return each_row((struct sqlite_store *)base, R_REFUND_LIST, payment_id, merchant_id, 0, 0,
                    &c);
}

static int sqlite_payments_succeeded(store *base, const char *channel, int64_t from_ms,
                                     int64_t to_ms, int (*each)(void *, const struct payment *),
                                     void *arg)
{
    struct each_call c = {.payment = each, .arg = arg};
    return each_row((struct sqlite_store *)base, R_PAYMENTS_SUCCEEDED, channel, NULL, from_ms,
                    to_ms, &c);
}

static int sqlite_refunds_succeeded(store *base, const char *channel, int64_t from_ms,
                                    int64_t to_ms, int (*each)(void *, const struct refund *),
                                    void *arg)
{
    struct each_call c = {.refund = each, .arg = arg};
    return each_row((struct sqlite_store *)base, R_REFUNDS_SUCCEEDED, channel, NULL, from_ms,
                    to_ms, &c);
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

/* The database's page size (SQLite's default, 4096, if it cannot say). */
static int64_t page_size(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int64_t size = 4096;
    if (sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) > 0)
        size = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return size;
}

static store *sqlite_open(const struct store_options *opts, char *err, size_t err_size)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, configure_sqlite);
    struct sqlite_store *s = xcalloc(1, sizeof(*s));
    s->base.be = &store_sqlite_backend;
    snprintf(s->path, sizeof(s->path), "%s/payd.db", opts->data_dir);
    s->max_batch = opts->max_batch;
    s->wal_restart_frames =
        opts->wal_restart_frames != 0 ? opts->wal_restart_frames : STORE_WAL_RESTART_FRAMES;
    s->wal_restart_retry_ms = WAL_RESTART_RETRY_FIRST_MS;
    s->checkpoint_frames =
        opts->wal_checkpoint_frames > 0 ? opts->wal_checkpoint_frames : CHECKPOINT_FRAMES;
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
    /* A log that grew past twice its restart size while a long reader held
     * it is cut back to that when it restarts (a frame is a page and its
     * 24-byte header). */
    if (s->wal_restart_frames > 0) {
        char pragma[96];
        snprintf(pragma, sizeof(pragma), "PRAGMA journal_size_limit=%lld",
                 2LL * s->wal_restart_frames * (page_size(s->wdb) + 24));
        sqlite3_exec(s->wdb, pragma, NULL, NULL, NULL);
    }
    /* The schema in one BEGIN IMMEDIATE transaction: its statements read the
     * schema before they may write, and in WAL a statement that upgrades a
     * read to a write while another process (a running server, for a
     * command) writes gets "database is locked" at once, without the busy
     * timeout; a write transaction taken first waits for its turn. */
    char *msg = NULL;
    if (sqlite3_exec(s->wdb, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(s->wdb, schema_sql, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(s->wdb, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
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
    .refund_get = sqlite_refund_get,
    .refund_list = sqlite_refund_list,
    .refund_next_due_ms = sqlite_refund_next_due_ms,
    .webhook_get = sqlite_webhook_get,
    .payment_by_serial = sqlite_payment_by_serial,
    .refund_by_no = sqlite_refund_by_no,
    .payments_succeeded = sqlite_payments_succeeded,
    .refunds_succeeded = sqlite_refunds_succeeded,
    .event_next_due_ms = sqlite_event_next_due_ms,
    .balance = sqlite_balance,
    .max_fence = sqlite_max_fence,
    .outbox_next_due_ms = sqlite_outbox_next_due_ms,
    .queue_stats = sqlite_queue_stats,
    .ledger_imbalance = sqlite_ledger_imbalance,
    .ping = sqlite_ping,
};
