/*
 * journal.c - the journal's schema and its one writer thread; see journal.h.
 *
 * The writer takes every operation waiting (at most BATCH_MAX), opens one
 * transaction (BEGIN IMMEDIATE), runs each operation inside its own
 * savepoint so that a failing one is undone alone, commits, and then calls
 * each operation's done(). A failed commit rolls the whole batch back and
 * every operation in it reports JR_ERROR: nothing of it was written, so the
 * answers that follow ("500, nothing charged") stay true.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "journal_internal.h"
#include "log.h"
#include "util/util.h"

#define BATCH_MAX 512

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS meta (\n"
    "  key TEXT PRIMARY KEY,\n"
    "  value TEXT NOT NULL);\n"
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');\n"
    "CREATE TABLE IF NOT EXISTS charges (\n"
    "  seq INTEGER PRIMARY KEY,\n"
    "  out_trade_no TEXT NOT NULL UNIQUE,\n"
    "  trade_no TEXT NOT NULL UNIQUE,\n"
    "  amount INTEGER NOT NULL CHECK (amount > 0),\n"
    "  currency TEXT NOT NULL,\n"
    "  method TEXT NOT NULL,\n"
    "  status TEXT NOT NULL CHECK (status IN ('succeeded', 'declined')),\n"
    "  code TEXT,\n"
    "  message TEXT,\n"
    "  notify_url TEXT,\n"
    "  created_ms INTEGER NOT NULL);\n"
    "CREATE INDEX IF NOT EXISTS charges_created ON charges (created_ms);\n"
    "CREATE TABLE IF NOT EXISTS closed_trades (\n"
    "  out_trade_no TEXT PRIMARY KEY,\n"
    "  created_ms INTEGER NOT NULL);\n"
    "CREATE TABLE IF NOT EXISTS refunds (\n"
    "  seq INTEGER PRIMARY KEY,\n"
    "  out_refund_no TEXT NOT NULL UNIQUE,\n"
    "  refund_id TEXT NOT NULL UNIQUE,\n"
    "  out_trade_no TEXT NOT NULL REFERENCES charges (out_trade_no),\n"
    "  trade_no TEXT NOT NULL,\n"
    "  amount INTEGER NOT NULL CHECK (amount > 0),\n"
    "  currency TEXT NOT NULL,\n"
    "  status TEXT NOT NULL CHECK (status = 'succeeded'),\n"
    "  notify_url TEXT,\n"
    "  created_ms INTEGER NOT NULL);\n"
    "CREATE INDEX IF NOT EXISTS refunds_trade ON refunds (out_trade_no);\n"
    "CREATE INDEX IF NOT EXISTS refunds_created ON refunds (created_ms);\n"
    "CREATE TABLE IF NOT EXISTS notifications (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  notify_id TEXT NOT NULL UNIQUE,\n"
    "  event TEXT NOT NULL CHECK (event IN ('charge.succeeded', 'refund.succeeded')),\n"
    "  out_trade_no TEXT NOT NULL,\n"
    "  out_refund_no TEXT,\n"
    "  url TEXT NOT NULL,\n"
    "  body TEXT NOT NULL,\n"
    "  state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),\n"
    "  attempts INTEGER NOT NULL DEFAULT 0,\n"
    "  next_ms INTEGER,\n"
    "  last_status INTEGER,\n"
    "  last_error TEXT,\n"
    "  created_ms INTEGER NOT NULL,\n"
    "  updated_ms INTEGER NOT NULL);\n"
    "CREATE INDEX IF NOT EXISTS notifications_due ON notifications (state, next_ms);\n"
    "CREATE TABLE IF NOT EXISTS notification_attempts (\n"
    "  notification_id INTEGER NOT NULL REFERENCES notifications (id),\n"
    "  attempt INTEGER NOT NULL,\n"
    "  at_ms INTEGER NOT NULL,\n"
    "  http_status INTEGER,\n"
    "  error TEXT,\n"
    "  PRIMARY KEY (notification_id, attempt));\n"
    /* The rules again, below the code: refunds within a succeeded charge,
     * no charge of a closed trade, charges and refunds never changed. */
    "CREATE TRIGGER IF NOT EXISTS refunds_within_charge BEFORE INSERT ON refunds BEGIN\n"
    "  SELECT RAISE(ABORT, 'charge_not_refundable') WHERE NOT EXISTS (\n"
    "    SELECT 1 FROM charges WHERE out_trade_no = NEW.out_trade_no\n"
    "      AND status = 'succeeded' AND currency = NEW.currency);\n"
    "  SELECT RAISE(ABORT, 'refund_exceeds_charge') WHERE\n"
    "    (SELECT coalesce(sum(amount), 0) FROM refunds WHERE out_trade_no = NEW.out_trade_no)\n"
    "      + NEW.amount > (SELECT amount FROM charges WHERE out_trade_no = NEW.out_trade_no);\n"
    "END;\n"
    "CREATE TRIGGER IF NOT EXISTS charges_not_closed BEFORE INSERT ON charges BEGIN\n"
    "  SELECT RAISE(ABORT, 'trade_closed') WHERE EXISTS (\n"
    "    SELECT 1 FROM closed_trades WHERE out_trade_no = NEW.out_trade_no);\n"
    "END;\n"
    "CREATE TRIGGER IF NOT EXISTS closed_not_charged BEFORE INSERT ON closed_trades BEGIN\n"
    "  SELECT RAISE(ABORT, 'trade_charged') WHERE EXISTS (\n"
    "    SELECT 1 FROM charges WHERE out_trade_no = NEW.out_trade_no);\n"
    "END;\n"
    "CREATE TRIGGER IF NOT EXISTS charges_no_update BEFORE UPDATE ON charges BEGIN\n"
    "  SELECT RAISE(ABORT, 'charges are never changed');\n"
    "END;\n"
    "CREATE TRIGGER IF NOT EXISTS charges_no_delete BEFORE DELETE ON charges BEGIN\n"
    "  SELECT RAISE(ABORT, 'charges are never deleted');\n"
    "END;\n"
    "CREATE TRIGGER IF NOT EXISTS refunds_no_update BEFORE UPDATE ON refunds BEGIN\n"
    "  SELECT RAISE(ABORT, 'refunds are never changed');\n"
    "END;\n"
    "CREATE TRIGGER IF NOT EXISTS refunds_no_delete BEFORE DELETE ON refunds BEGIN\n"
    "  SELECT RAISE(ABORT, 'refunds are never deleted');\n"
    "END;\n";

/* ---- connections ---- */

sqlite3 *journal_connect(const char *path, bool query_only, char *err, size_t err_size)
{
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (query_only ? 0 : SQLITE_OPEN_CREATE);
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        snprintf(err, err_size, "journal: cannot open %s: %s", path,
                 db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, JOURNAL_BUSY_TIMEOUT_MS);
    const char *pragmas = query_only ? "PRAGMA query_only = ON;"
                                     : "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
                                       "PRAGMA foreign_keys = ON;";
    char *msg = NULL;
    if (sqlite3_exec(db, pragmas, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, err_size, "journal: %s: %s", path, msg ? msg : "pragma failed");
        sqlite3_free(msg);
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

static sqlite3_stmt *prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        log_line("journal: cannot prepare \"%s\": %s", sql, sqlite3_errmsg(db));
        PAYD_ASSERT(!"statement does not prepare");
    }
    return st;
}

static const char *const statement_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT op",
    [ST_RELEASE] = "RELEASE op",
    [ST_ROLLBACK_TO] = "ROLLBACK TO op",
    [ST_CHARGE_GET] = "SELECT " JOURNAL_CHARGE_COLUMNS ", notify_url FROM charges "
                      "WHERE out_trade_no = ?1",
    [ST_CLOSED_GET] = "SELECT " JOURNAL_CLOSED_COLUMNS " FROM closed_trades "
                      "WHERE out_trade_no = ?1",
    [ST_CHARGE_INSERT] = "INSERT INTO charges (out_trade_no, trade_no, amount, currency, "
                         "method, status, code, message, notify_url, created_ms) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [ST_CLOSED_INSERT] = "INSERT INTO closed_trades (out_trade_no, created_ms) VALUES (?1, ?2)",
    [ST_REFUND_GET] = "SELECT " JOURNAL_REFUND_COLUMNS " FROM refunds WHERE out_refund_no = ?1",
    [ST_REFUND_SUM] = "SELECT coalesce(sum(amount), 0) FROM refunds WHERE out_trade_no = ?1",
    [ST_REFUND_INSERT] = "INSERT INTO refunds (out_refund_no, refund_id, out_trade_no, "
                         "trade_no, amount, currency, status, notify_url, created_ms) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'succeeded', ?7, ?8)",
    [ST_NOTIFY_INSERT] = "INSERT INTO notifications (notify_id, event, out_trade_no, "
                         "out_refund_no, url, body, state, attempts, next_ms, created_ms, "
                         "updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?7, ?7)",
    [ST_NOTIFY_UPDATE] = "UPDATE notifications SET attempts = ?2, state = ?3, next_ms = ?4, "
                         "last_status = ?5, last_error = ?6, updated_ms = ?7 "
                         "WHERE id = ?1 AND state = 'pending' AND attempts = ?2 - 1",
    [ST_ATTEMPT_INSERT] = "INSERT INTO notification_attempts "
                          "(notification_id, attempt, at_ms, http_status, error) "
                          "VALUES (?1, ?2, ?3, ?4, ?5)",
};

static void prepare_all(journal *j)
{
    for (int i = 0; i < ST_COUNT; i++)
        j->st[i] = prepare(j->db, statement_sql[i]);
}

static void finalize_all(journal *j)
{
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(j->st[i]);
}

/* Makes a statement ready for its next use: reset, unbound. */
static void stmt_reset(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Runs a statement without rows; returns the sqlite result (SQLITE_DONE). */
static int step_once(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    stmt_reset(st);
    return rc;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s)
{
    if (s && *s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

/* 0 binds NULL. */
static void bind_int_or_null(sqlite3_stmt *st, int i, int v)
{
    if (v)
        sqlite3_bind_int(st, i, v);
    else
        sqlite3_bind_null(st, i);
}

/* ---- lookups on the writer's connection (inside the transaction) ---- */

/* journal_lookup(), then the statement made ready for its next use. */
static int find(sqlite3_stmt *st, const char *key, journal_row_fn *row, void *out)
{
    int found = journal_lookup(st, key, row, out);
    stmt_reset(st);
    return found;
}

/* 1 found (c filled, charge's notify_url into url when given), 0 none, -1 error. */
static int find_charge(journal *j, const char *out_trade_no, struct charge *c, char *url,
                       size_t url_size)
{
    sqlite3_stmt *st = j->st[ST_CHARGE_GET];
    int found = journal_lookup(st, out_trade_no, journal_charge_row, c);
    if (found > 0 && url)
        journal_copy_col(st, 9, url, url_size); /* notify_url, after the charge's columns */
    stmt_reset(st);
    return found;
}

/* A closed trade, as a charge of status closed. */
static int find_closed(journal *j, const char *out_trade_no, struct charge *c)
{
    return find(j->st[ST_CLOSED_GET], out_trade_no, journal_charge_row, c);
}

static int find_refund(journal *j, const char *out_refund_no, struct refund *r)
{
    return find(j->st[ST_REFUND_GET], out_refund_no, journal_refund_row, r);
}

/* ---- notifications: queued in the same transaction as what they announce ---- */

static int queue_notification(journal *j, const char *event, const char *url,
                              const struct charge *c, const struct refund *r, bool *created)
{
    char notify_id[PAYSIM_ID_MAX + 1];
    char when[RFC3339_LEN + 1];
    model_id_new("pn_", notify_id);
    json_t *body;
    if (r) {
        clock_format_rfc3339(r->created_ms, when);
        body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "notify_id",
                         notify_id, "event", event, "out_trade_no", r->out_trade_no, "trade_no",
                         r->trade_no, "out_refund_no", r->out_refund_no, "refund_id",
                         r->refund_id, "amount", (json_int_t)r->amount, "currency", r->currency,
                         "status", "succeeded", "time", when);
    } else {
        clock_format_rfc3339(c->created_ms, when);
        body = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "notify_id", notify_id,
                         "event", event, "out_trade_no", c->out_trade_no, "trade_no",
                         c->trade_no, "amount", (json_int_t)c->amount, "currency", c->currency,
                         "status", "succeeded", "time", when);
    }
    PAYD_ASSERT(body);
    char *text = model_json_text(body);
    sqlite3_stmt *st = j->st[ST_NOTIFY_INSERT];
    sqlite3_bind_text(st, 1, notify_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, event, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, r ? r->out_trade_no : c->out_trade_no, -1, SQLITE_TRANSIENT);
    bind_text_or_null(st, 4, r ? r->out_refund_no : NULL);
    sqlite3_bind_text(st, 5, url, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, text, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 7, r ? r->created_ms : c->created_ms);
    int rc = step_once(st);
    free(text);
    if (rc != SQLITE_DONE)
        return -1;
    *created = true;
    return 0;
}

/* ---- the operations ---- */

static enum jop_result run_charge(journal *j, struct jop *op, bool *notified)
{
    struct charge *c = &op->charge;
    struct charge old;
    int found = find_charge(j, c->out_trade_no, &old, NULL, 0);
    if (found < 0)
        return JR_ERROR;
    if (found) {
        bool same = old.amount == c->amount && strcmp(old.currency, c->currency) == 0 &&
                    strcmp(old.method, c->method) == 0;
        *c = old;
        return same ? JR_EXISTING : JR_CONFLICT;
    }
    found = find_closed(j, c->out_trade_no, &old);
    if (found < 0)
        return JR_ERROR;
    if (found) {
        *c = old;
        return JR_CLOSED;
    }
    model_id_new("pt_", c->trade_no);
    c->created_ms = clock_wall_ms();
    if (strcmp(c->method, "declined") == 0 || op->decline) {
        c->status = CHARGE_DECLINED;
        snprintf(c->code, sizeof(c->code), "card_declined");
        snprintf(c->message, sizeof(c->message), "The card was declined.");
    } else {
        c->status = CHARGE_SUCCEEDED;
        c->code[0] = c->message[0] = '\0';
    }
    sqlite3_stmt *st = j->st[ST_CHARGE_INSERT];
    sqlite3_bind_text(st, 1, c->out_trade_no, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, c->trade_no, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, c->amount);
    sqlite3_bind_text(st, 4, c->currency, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, c->method, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, model_charge_status_name(c->status), -1, SQLITE_STATIC);
    bind_text_or_null(st, 7, c->code);
    bind_text_or_null(st, 8, c->message);
    bind_text_or_null(st, 9, op->notify_url);
    sqlite3_bind_int64(st, 10, c->created_ms);
    if (step_once(st) != SQLITE_DONE) {
        log_line("journal: charge %s not written: %s", c->out_trade_no, sqlite3_errmsg(j->db));
        return JR_ERROR;
    }
    const char *url = op->notify_url[0] ? op->notify_url : j->default_notify_url;
    if (c->status == CHARGE_SUCCEEDED && url &&
        queue_notification(j, "charge.succeeded", url, c, NULL, notified) != 0)
        return JR_ERROR;
    return JR_CREATED;
}

static enum jop_result run_close(journal *j, struct jop *op)
{
    struct charge *c = &op->charge;
    char out_trade_no[OUT_NO_MAX + 1];
    snprintf(out_trade_no, sizeof(out_trade_no), "%s", c->out_trade_no);
    int found = find_charge(j, out_trade_no, c, NULL, 0);
    if (found == 0)
        found = find_closed(j, out_trade_no, c);
    if (found < 0)
        return JR_ERROR;
    if (found)
        return JR_EXISTING;
    memset(c, 0, sizeof(*c));
    snprintf(c->out_trade_no, sizeof(c->out_trade_no), "%s", out_trade_no);
    c->status = CHARGE_CLOSED;
    c->created_ms = clock_wall_ms();
    sqlite3_stmt *st = j->st[ST_CLOSED_INSERT];
    sqlite3_bind_text(st, 1, c->out_trade_no, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, c->created_ms);
    if (step_once(st) != SQLITE_DONE) {
        log_line("journal: close %s not written: %s", c->out_trade_no, sqlite3_errmsg(j->db));
        return JR_ERROR;
    }
    return JR_CREATED;
}

static enum jop_result run_refund(journal *j, struct jop *op, bool *notified)
{
    struct refund *r = &op->refund;
    struct refund old;
    int found = find_refund(j, r->out_refund_no, &old);
    if (found < 0)
        return JR_ERROR;
    if (found) {
        bool same = old.amount == r->amount && strcmp(old.out_trade_no, r->out_trade_no) == 0;
        *r = old;
        return same ? JR_EXISTING : JR_CONFLICT;
    }
    struct charge *c = &op->charge;
    char charge_url[URL_MAX + 1] = "";
    found = find_charge(j, r->out_trade_no, c, charge_url, sizeof(charge_url));
    if (found < 0)
        return JR_ERROR;
    if (!found)
        return JR_NOT_FOUND;
    if (c->status != CHARGE_SUCCEEDED)
        return JR_NOT_REFUNDABLE;
    sqlite3_stmt *st = j->st[ST_REFUND_SUM];
    sqlite3_bind_text(st, 1, r->out_trade_no, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    int64_t refunded = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    stmt_reset(st);
    if (rc != SQLITE_ROW)
        return JR_ERROR;
    /* Both are at most AMOUNT_MAX: the sum cannot overflow. */
    if (refunded + r->amount > c->amount) {
        op->refunded_before = refunded;
        return JR_EXCEEDS;
    }
    model_id_new("pr_", r->refund_id);
    snprintf(r->trade_no, sizeof(r->trade_no), "%s", c->trade_no);
    snprintf(r->currency, sizeof(r->currency), "%s", c->currency);
    r->created_ms = clock_wall_ms();
    st = j->st[ST_REFUND_INSERT];
    sqlite3_bind_text(st, 1, r->out_refund_no, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, r->refund_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, r->out_trade_no, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, r->trade_no, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 5, r->amount);
    sqlite3_bind_text(st, 6, r->currency, -1, SQLITE_TRANSIENT);
    bind_text_or_null(st, 7, op->notify_url);
    sqlite3_bind_int64(st, 8, r->created_ms);
    if (step_once(st) != SQLITE_DONE) {
        log_line("journal: refund %s not written: %s", r->out_refund_no, sqlite3_errmsg(j->db));
        return JR_ERROR;
    }
    const char *url = op->notify_url[0] ? op->notify_url
                      : charge_url[0]   ? charge_url
                                        : j->default_notify_url;
    if (url && queue_notification(j, "refund.succeeded", url, c, r, notified) != 0)
        return JR_ERROR;
    return JR_CREATED;
}

static enum jop_result run_notify_result(journal *j, struct jop *op)
{
    static const char *const state[] = {
        [NOTIFY_DELIVERED] = "delivered", [NOTIFY_RETRY] = "pending", [NOTIFY_GAVE_UP] = "failed"};
    sqlite3_stmt *st = j->st[ST_NOTIFY_UPDATE];
    sqlite3_bind_int64(st, 1, op->note.id);
    sqlite3_bind_int(st, 2, op->note.attempt);
    sqlite3_bind_text(st, 3, state[op->note.outcome], -1, SQLITE_STATIC);
    if (op->note.outcome == NOTIFY_RETRY)
        sqlite3_bind_int64(st, 4, op->note.next_ms);
    else
        sqlite3_bind_null(st, 4);
    bind_int_or_null(st, 5, op->note.http_status);
    bind_text_or_null(st, 6, op->note.error);
    sqlite3_bind_int64(st, 7, op->note.at_ms);
    if (step_once(st) != SQLITE_DONE)
        return JR_ERROR;
    if (sqlite3_changes(j->db) == 0)
        return JR_EXISTING; /* already recorded (cannot happen with one notifier) */
    st = j->st[ST_ATTEMPT_INSERT];
    sqlite3_bind_int64(st, 1, op->note.id);
    sqlite3_bind_int(st, 2, op->note.attempt);
    sqlite3_bind_int64(st, 3, op->note.at_ms);
    bind_int_or_null(st, 4, op->note.http_status);
    bind_text_or_null(st, 5, op->note.error);
    return step_once(st) == SQLITE_DONE ? JR_CREATED : JR_ERROR;
}

static enum jop_result run_op(journal *j, struct jop *op, bool *notified)
{
    switch (op->kind) {
    case JOP_CHARGE:
        return run_charge(j, op, notified);
    case JOP_CLOSE:
        return run_close(j, op);
    case JOP_REFUND:
        return run_refund(j, op, notified);
    case JOP_NOTIFY_RESULT:
        return run_notify_result(j, op);
    }
    PAYD_ASSERT(!"bad journal operation");
    return JR_ERROR;
}

/* One batch: one transaction, one savepoint per operation, one commit. */
static bool run_batch(journal *j, struct jop *ops)
{
    bool notified = false;
    if (step_once(j->st[ST_BEGIN]) != SQLITE_DONE) {
        log_line("journal: BEGIN failed: %s", sqlite3_errmsg(j->db));
        for (struct jop *op = ops; op; op = op->next)
            op->result = JR_ERROR;
        return false;
    }
    for (struct jop *op = ops; op; op = op->next) {
        bool op_notified = false;
        if (step_once(j->st[ST_SAVEPOINT]) != SQLITE_DONE) {
            op->result = JR_ERROR;
            continue;
        }
        op->result = run_op(j, op, &op_notified);
        if (op->result == JR_ERROR) {
            step_once(j->st[ST_ROLLBACK_TO]);
            op_notified = false;
        }
        step_once(j->st[ST_RELEASE]);
        notified = notified || op_notified;
    }
    if (step_once(j->st[ST_COMMIT]) != SQLITE_DONE) {
        log_line("journal: COMMIT failed: %s; the batch is undone", sqlite3_errmsg(j->db));
        step_once(j->st[ST_ROLLBACK]);
        for (struct jop *op = ops; op; op = op->next)
            op->result = JR_ERROR;
        return false;
    }
    return notified;
}

static void *writer_main(void *arg)
{
    journal *j = arg;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        while (!j->head && !j->stopping)
            pthread_cond_wait(&j->cond, &j->mu);
        if (!j->head) {
            pthread_mutex_unlock(&j->mu);
            break;
        }
        struct jop *batch = j->head, *last = batch;
        for (int n = 1; n < BATCH_MAX && last->next; n++)
            last = last->next;
        j->head = last->next;
        if (!j->head)
            j->tail = &j->head;
        last->next = NULL;
        void (*listener)(void *) = j->listener;
        void *listener_arg = j->listener_arg;
        pthread_mutex_unlock(&j->mu);

        bool notified = run_batch(j, batch);
        for (struct jop *op = batch, *next; op; op = next) {
            next = op->next;
            op->next = NULL;
            op->done(op); /* may free op */
        }
        if (notified && listener)
            listener(listener_arg);
    }
    return NULL;
}

void journal_submit(journal *j, struct jop *op)
{
    PAYD_ASSERT(op->done);
    op->next = NULL;
    pthread_mutex_lock(&j->mu);
    PAYD_ASSERT(!j->stopping);
    *j->tail = op;
    j->tail = &op->next;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->mu);
}

void journal_set_listener(journal *j, void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&j->mu);
    j->listener = fn;
    j->listener_arg = arg;
    pthread_mutex_unlock(&j->mu);
}

/* ---- open and close ---- */

static journal *journal_alloc(const char *dir, int readers)
{
    journal *j = xcalloc(1, sizeof(*j));
    snprintf(j->path, sizeof(j->path), "%s/%s", dir, JOURNAL_FILE);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cond, NULL);
    j->tail = &j->head;
    pthread_mutex_init(&j->readers_mu, NULL);
    pthread_cond_init(&j->readers_cond, NULL);
    j->readers_max = readers < 1 ? 1 : readers > JOURNAL_READERS_MAX ? JOURNAL_READERS_MAX
                                                                       : readers;
    return j;
}

journal *journal_open(const char *dir, const char *default_notify_url, int readers, char *err,
                      size_t err_size)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, err_size, "journal: cannot create %s: %s", dir, strerror(errno));
        return NULL;
    }
    journal *j = journal_alloc(dir, readers);
    j->db = journal_connect(j->path, false, err, err_size);
    if (!j->db)
        goto out_free;
    char *msg = NULL;
    if (sqlite3_exec(j->db, schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, err_size, "journal: schema of %s: %s", j->path, msg ? msg : "?");
        sqlite3_free(msg);
        goto out_close;
    }
    prepare_all(j);
    if (default_notify_url && *default_notify_url)
        j->default_notify_url = xstrdup(default_notify_url);
    if (pthread_create(&j->thread, NULL, writer_main, j) != 0) {
        snprintf(err, err_size, "journal: cannot start its thread");
        finalize_all(j);
        goto out_close;
    }
    j->thread_started = true;
    return j;

out_close:
    sqlite3_close(j->db);
out_free:
    free(j->default_notify_url);
    free(j);
    return NULL;
}

journal *journal_open_reader(const char *dir, char *err, size_t err_size)
{
    journal *j = journal_alloc(dir, 1);
    struct stat sb;
    if (stat(j->path, &sb) != 0) {
        snprintf(err, err_size, "journal: %s: %s", j->path, strerror(errno));
        free(j);
        return NULL;
    }
    sqlite3 *db = journal_connect(j->path, true, err, err_size);
    if (!db) {
        free(j);
        return NULL;
    }
    journal_reader_put(j, db);
    j->readers_open = 1;
    return j;
}

void journal_close(journal *j)
{
    if (!j)
        return;
    if (j->thread_started) {
        pthread_mutex_lock(&j->mu);
        j->stopping = true;
        pthread_cond_signal(&j->cond);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->thread, NULL);
    }
    journal_readers_close(j);
    if (j->db) {
        finalize_all(j);
        sqlite3_close(j->db);
    }
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cond);
    pthread_mutex_destroy(&j->readers_mu);
    pthread_cond_destroy(&j->readers_cond);
    free(j->default_notify_url);
    free(j);
}
