/*
 * journal_read.c - reads of the journal on a pool of read connections:
 * queries by merchant number, the daily statement, the witness dumps and the
 * notifications due. WAL lets them run beside the journal thread's writes;
 * each sees the journal as of its last commit.
 */
#include <stdio.h>
#include <string.h>

#include "journal_internal.h"
#include "log.h"
#include "util/util.h"

/* ---- the pool ---- */

sqlite3 *journal_reader_get(journal *j)
{
    pthread_mutex_lock(&j->readers_mu);
    for (;;) {
        if (j->readers_free_count > 0) {
            sqlite3 *db = j->readers_free[--j->readers_free_count];
            pthread_mutex_unlock(&j->readers_mu);
            return db;
        }
        if (j->readers_open < j->readers_max) {
            j->readers_open++;
            pthread_mutex_unlock(&j->readers_mu);
            char err[256];
            sqlite3 *db = journal_connect(j->path, true, err, sizeof(err));
            if (!db) {
                log_line("%s", err);
                pthread_mutex_lock(&j->readers_mu);
                j->readers_open--;
                pthread_cond_signal(&j->readers_cond);
                pthread_mutex_unlock(&j->readers_mu);
            }
            return db;
        }
        pthread_cond_wait(&j->readers_cond, &j->readers_mu);
    }
}

void journal_reader_put(journal *j, sqlite3 *db)
{
    pthread_mutex_lock(&j->readers_mu);
    PAYD_ASSERT(j->readers_free_count < JOURNAL_READERS_MAX);
    j->readers_free[j->readers_free_count++] = db;
    pthread_cond_signal(&j->readers_cond);
    pthread_mutex_unlock(&j->readers_mu);
}

void journal_readers_close(journal *j)
{
    pthread_mutex_lock(&j->readers_mu);
    PAYD_ASSERT(j->readers_free_count == j->readers_open);
    for (int i = 0; i < j->readers_free_count; i++)
        sqlite3_close(j->readers_free[i]);
    j->readers_free_count = j->readers_open = 0;
    pthread_mutex_unlock(&j->readers_mu);
}

/* One statement on a borrowed connection, prepared per call (reads are not
 * the hot path of a PSP simulator; the cache of prepared statements is
 * SQLite's own). Returns NULL on error, logged. */
static sqlite3_stmt *read_prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        log_line("journal: cannot prepare a read: %s", sqlite3_errmsg(db));
        return NULL;
    }
    return st;
}

/* ---- rows ---- */

void journal_copy_col(sqlite3_stmt *st, int col, char *out, size_t size)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    snprintf(out, size, "%s", s ? (const char *)s : "");
}

void journal_charge_row(sqlite3_stmt *st, void *charge)
{
    struct charge *c = charge;
    memset(c, 0, sizeof(*c));
    journal_copy_col(st, 0, c->out_trade_no, sizeof(c->out_trade_no));
    journal_copy_col(st, 1, c->trade_no, sizeof(c->trade_no));
    c->amount = sqlite3_column_int64(st, 2);
    journal_copy_col(st, 3, c->currency, sizeof(c->currency));
    journal_copy_col(st, 4, c->method, sizeof(c->method));
    const char *status = (const char *)sqlite3_column_text(st, 5);
    c->status = status && strcmp(status, "succeeded") == 0  ? CHARGE_SUCCEEDED
                : status && strcmp(status, "declined") == 0 ? CHARGE_DECLINED
                                                            : CHARGE_CLOSED;
    journal_copy_col(st, 6, c->code, sizeof(c->code));
    journal_copy_col(st, 7, c->message, sizeof(c->message));
    c->created_ms = sqlite3_column_int64(st, 8);
}

void journal_refund_row(sqlite3_stmt *st, void *refund)
{
    struct refund *r = refund;
    memset(r, 0, sizeof(*r));
    journal_copy_col(st, 0, r->out_refund_no, sizeof(r->out_refund_no));
    journal_copy_col(st, 1, r->refund_id, sizeof(r->refund_id));
    journal_copy_col(st, 2, r->out_trade_no, sizeof(r->out_trade_no));
    journal_copy_col(st, 3, r->trade_no, sizeof(r->trade_no));
    r->amount = sqlite3_column_int64(st, 4);
    journal_copy_col(st, 5, r->currency, sizeof(r->currency));
    r->created_ms = sqlite3_column_int64(st, 6);
}

int journal_lookup(sqlite3_stmt *st, const char *key, journal_row_fn *row, void *out)
{
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        row(st, out);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* ---- queries ---- */

/* One row by its key, on a borrowed connection (journal_lookup). */
static int read_row(journal *j, const char *what, const char *sql, const char *key,
                    journal_row_fn *row, void *out)
{
    sqlite3 *db = journal_reader_get(j);
    if (!db)
        return -1;
    int found = -1;
    sqlite3_stmt *st = read_prepare(db, sql);
    if (st) {
        found = journal_lookup(st, key, row, out);
        if (found < 0)
            log_line("journal: %s query failed: %s", what, sqlite3_errmsg(db));
        sqlite3_finalize(st);
    }
    journal_reader_put(j, db);
    return found;
}

int journal_get_charge(journal *j, const char *out_trade_no, struct charge *out)
{
    return read_row(j, "charge",
                    "SELECT " JOURNAL_CHARGE_COLUMNS " FROM charges WHERE out_trade_no = ?1 "
                    "UNION ALL SELECT " JOURNAL_CLOSED_COLUMNS " FROM closed_trades "
                    "WHERE out_trade_no = ?1",
                    out_trade_no, journal_charge_row, out);
}

int journal_get_refund(journal *j, const char *out_refund_no, struct refund *out)
{
    return read_row(j, "refund",
                    "SELECT " JOURNAL_REFUND_COLUMNS " FROM refunds WHERE out_refund_no = ?1",
                    out_refund_no, journal_refund_row, out);
}

/* ---- the statement ---- */

struct buf {
    char *data;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->data = xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_add_json_line(struct buf *b, json_t *o)
{
    char *s = model_json_text(o);
    buf_add(b, s, strlen(s));
    buf_add(b, "\n", 1);
    free(s);
}

#define DAY_MS (86400LL * 1000)

/* A read of one UTC day: sql with the day's bounds bound to ?1 and ?2. */
static sqlite3_stmt *prepare_day(sqlite3 *db, const char *sql, int64_t day_start_ms)
{
    sqlite3_stmt *st = read_prepare(db, sql);
    if (st) {
        sqlite3_bind_int64(st, 1, day_start_ms);
        sqlite3_bind_int64(st, 2, day_start_ms + DAY_MS);
    }
    return st;
}

char *journal_statement(journal *j, int64_t day_start_ms, const char *date, size_t *len)
{
    sqlite3 *db = journal_reader_get(j);
    if (!db)
        return NULL;
    struct buf b = {0};
    bool ok = false;
    /* One read transaction: the lines and the summary see the same journal. */
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    sqlite3_stmt *st = prepare_day(
        db,
        "SELECT 'charge', created_ms, seq, out_trade_no, trade_no, NULL, NULL, amount, "
        "currency FROM charges WHERE status = 'succeeded' AND created_ms >= ?1 "
        "AND created_ms < ?2 "
        "UNION ALL "
        "SELECT 'refund', created_ms, seq, out_trade_no, trade_no, out_refund_no, refund_id, "
        "amount, currency FROM refunds WHERE created_ms >= ?1 AND created_ms < ?2 "
        "ORDER BY 2, 1, 3",
        day_start_ms);
    if (!st)
        goto out_end;
    int rc;
    int64_t charges = 0, refunds = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *type = (const char *)sqlite3_column_text(st, 0);
        char when[RFC3339_LEN + 1];
        clock_format_rfc3339(sqlite3_column_int64(st, 1), when);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "type", type, "time", when, "out_trade_no",
                              (const char *)sqlite3_column_text(st, 3), "trade_no",
                              (const char *)sqlite3_column_text(st, 4));
        if (strcmp(type, "refund") == 0) {
            json_object_set_new(o, "out_refund_no",
                                json_string((const char *)sqlite3_column_text(st, 5)));
            json_object_set_new(o, "refund_id",
                                json_string((const char *)sqlite3_column_text(st, 6)));
            refunds++;
        } else {
            charges++;
        }
        json_object_set_new(o, "amount", json_integer(sqlite3_column_int64(st, 7)));
        json_object_set_new(o, "currency", json_string((const char *)sqlite3_column_text(st, 8)));
        json_object_set_new(o, "status", json_string("succeeded"));
        buf_add_json_line(&b, o);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        goto out_end;

    st = prepare_day(db,
                     "SELECT currency, sum(cn), sum(ca), sum(rn), sum(ra) FROM ("
                     "SELECT currency, 1 AS cn, amount AS ca, 0 AS rn, 0 AS ra FROM charges "
                     "WHERE status = 'succeeded' AND created_ms >= ?1 AND created_ms < ?2 "
                     "UNION ALL "
                     "SELECT currency, 0, 0, 1, amount FROM refunds "
                     "WHERE created_ms >= ?1 AND created_ms < ?2) "
                     "GROUP BY currency ORDER BY currency",
                     day_start_ms);
    if (!st)
        goto out_end;
    json_t *totals = json_object();
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t charged = sqlite3_column_int64(st, 2), refunded = sqlite3_column_int64(st, 4);
        json_object_set_new(totals, (const char *)sqlite3_column_text(st, 0),
                            json_pack("{s:I, s:I, s:I, s:I, s:I}", "charge_count",
                                      (json_int_t)sqlite3_column_int64(st, 1), "charge_amount",
                                      (json_int_t)charged, "refund_count",
                                      (json_int_t)sqlite3_column_int64(st, 3), "refund_amount",
                                      (json_int_t)refunded, "net_amount",
                                      (json_int_t)(charged - refunded)));
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        json_decref(totals);
        goto out_end;
    }
    buf_add_json_line(&b, json_pack("{s:s, s:s, s:b, s:I, s:I, s:o}", "type", "summary", "date",
                                    date, "complete", day_start_ms + DAY_MS <= clock_wall_ms(),
                                    "charge_count", (json_int_t)charges, "refund_count",
                                    (json_int_t)refunds, "totals", totals));
    ok = true;
out_end:
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    journal_reader_put(j, db);
    if (!ok) {
        log_line("journal: statement of %s failed", date);
        free(b.data);
        return NULL;
    }
    *len = b.len;
    return b.data;
}

/* ---- dumps: every row, each column under its own name ---- */

static json_t *rows_json(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = read_prepare(db, sql);
    if (!st)
        return NULL;
    json_t *rows = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = json_object();
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            json_t *v;
            switch (sqlite3_column_type(st, i)) {
            case SQLITE_INTEGER:
                v = json_integer(sqlite3_column_int64(st, i));
                break;
            case SQLITE_NULL:
                v = json_null();
                break;
            default:
                v = json_string((const char *)sqlite3_column_text(st, i));
                break;
            }
            json_object_set_new(row, sqlite3_column_name(st, i), v ? v : json_null());
        }
        json_array_append_new(rows, row);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        log_line("journal: dump failed: %s", sqlite3_errmsg(db));
        json_decref(rows);
        return NULL;
    }
    return rows;
}

static json_t *dump(journal *j, bool witness, bool notifications)
{
    static const struct {
        bool witness;
        const char *name, *sql;
    } tables[] = {
        {true, "charges", "SELECT * FROM charges ORDER BY seq"},
        {true, "refunds", "SELECT * FROM refunds ORDER BY seq"},
        {true, "closed_trades", "SELECT * FROM closed_trades ORDER BY created_ms, out_trade_no"},
        {false, "notifications", "SELECT * FROM notifications ORDER BY id"},
        {false, "notification_attempts",
         "SELECT * FROM notification_attempts ORDER BY notification_id, attempt"},
    };
    sqlite3 *db = journal_reader_get(j);
    if (!db)
        return NULL;
    json_t *out = json_object();
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    for (size_t i = 0; i < ARRAY_LEN(tables); i++) {
        if (tables[i].witness ? !witness : !notifications)
            continue;
        json_t *rows = rows_json(db, tables[i].sql);
        if (!rows) {
            json_decref(out);
            out = NULL;
            break;
        }
        json_object_set_new(out, tables[i].name, rows);
    }
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    journal_reader_put(j, db);
    return out;
}

json_t *journal_dump(journal *j, bool notifications)
{
    return dump(j, true, notifications);
}

json_t *journal_dump_notifications(journal *j)
{
    return dump(j, false, true);
}

/* ---- notifications due ---- */

int journal_due_notifications(journal *j, int64_t now_ms, const int64_t *skip, int skip_count,
                              struct notification *out, int max)
{
    sqlite3 *db = journal_reader_get(j);
    if (!db)
        return -1;
    int n = -1;
    sqlite3_stmt *st = read_prepare(db, "SELECT id, notify_id, event, url, body, attempts "
                                        "FROM notifications WHERE state = 'pending' "
                                        "AND next_ms <= ?1 ORDER BY next_ms, id LIMIT ?2");
    if (!st)
        goto out_put;
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int(st, 2, max + skip_count);
    int rc;
    n = 0;
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        bool skipped = false;
        for (int i = 0; i < skip_count; i++)
            skipped = skipped || skip[i] == id;
        if (skipped)
            continue;
        struct notification *no = &out[n++];
        no->id = id;
        journal_copy_col(st, 1, no->notify_id, sizeof(no->notify_id));
        journal_copy_col(st, 2, no->event, sizeof(no->event));
        journal_copy_col(st, 3, no->url, sizeof(no->url));
        no->body = xstrdup((const char *)sqlite3_column_text(st, 4));
        no->attempts = sqlite3_column_int(st, 5);
    }
    sqlite3_finalize(st);
out_put:
    journal_reader_put(j, db);
    return n;
}

void journal_notification_clear(struct notification *n)
{
    free(n->body);
    n->body = NULL;
}
