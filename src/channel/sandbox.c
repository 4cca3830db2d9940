/*
 * sandbox.c - the sandbox channel: an in-process stand-in for a PSP.
 *
 * It behaves as a real PSP would towards payd: it keeps its own durable
 * journal of charges (SQLite, synchronous=FULL, in the data directory) keyed
 * by the merchant's serial number, refuses to charge one serial number twice
 * (a repeated charge returns the first outcome and charges nothing), and
 * answers queries by serial number, and closes a trade never charged so
 * that it never will be (a later charge of it is declined trade_closed).
 * It refunds succeeded charges, partly
 * or fully, deduplicated by the refund number, never past the charge's
 * amount. Its behaviour is chosen by the method:
 *
 *   ok        charged, succeeds
 *   declined  refused: card_declined (journaled, nothing charged)
 *   slow      charged, the answer comes after about 2 s (after timeout_ms,
 *             as a timeout, when that is shorter)
 *   unknown   charged, then no answer: the call times out after timeout_ms
 *   error     system error, nothing charged, nothing journaled
 *
 * Journal writes from concurrent workers are group-committed: the first
 * caller to find no commit under way becomes the leader, writes every
 * request waiting at that moment in one transaction, and wakes the others.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "channel/channel.h"
#include "util/util.h"

#define BUSY_WAIT_NS 200000 /* 0.2 ms */
#define BUSY_TRIES_MAX 50000 /* 10 s of them */

#define SLOW_MS 2000
#define SETUP_WAIT_MS 10000 /* opening a journal that others are setting up */
#define SETUP_RETRY_MS 10

static const char *const sandbox_methods[] = {"ok", "declined", "slow", "unknown", "error",
                                              NULL};

enum journal_kind { J_CHARGE, J_QUERY, J_REFUND, J_CLOSE };

/* One request waiting for the journal; lives on its caller's stack. */
struct pending {
    enum journal_kind kind;
    const char *serial_no;
    const struct chan_request *req; /* J_CHARGE */
    const struct chan_refund_request *refund; /* J_REFUND */
    bool succeed;                   /* J_CHARGE: charged (true) or declined */
    struct chan_result *res;
    bool done;
    struct pending *next;
};

struct sandbox {
    channel base;
    char path[1200];
    sqlite3 *db;
    sqlite3_stmt *insert, *select, *begin, *commit, *rollback;
    sqlite3_stmt *refund_find, *refund_left, *refund_insert;
    sqlite3_stmt *closed_find, *closed_insert;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct pending *head, **tail;
    bool leader_active;
};

static void declined(struct chan_result *res, const char *code, const char *message)
{
    memset(res, 0, sizeof(*res));
    res->outcome = CHAN_DECLINED;
    snprintf(res->code, sizeof(res->code), "%s", code);
    snprintf(res->message, sizeof(res->message), "%s", message);
}

static void result_from_row(sqlite3_stmt *st, struct chan_result *res)
{
    const char *status = (const char *)sqlite3_column_text(st, 0);
    const char *txn = (const char *)sqlite3_column_text(st, 1);
    memset(res, 0, sizeof(*res));
    if (strcmp(status, "succeeded") == 0) {
        res->outcome = CHAN_SUCCEEDED;
        snprintf(res->txn_id, sizeof(res->txn_id), "%s", txn ? txn : "");
    } else {
        declined(res, "card_declined", "The card was declined.");
    }
}

/* Looks up a serial number; true when found (res filled). */
static bool journal_find(struct sandbox *sb, const char *serial_no, struct chan_result *res,
                         bool *failed)
{
    sqlite3_bind_text(sb->select, 1, serial_no, -1, SQLITE_STATIC);
    int rc = sqlite3_step(sb->select);
    if (rc == SQLITE_ROW)
        result_from_row(sb->select, res);
    *failed = rc != SQLITE_ROW && rc != SQLITE_DONE;
    sqlite3_reset(sb->select);
    return rc == SQLITE_ROW;
}

/* A refund, as paysim makes one: the same number again answers the first
 * refund; refused when the charge is missing, declined, or would be
 * refunded past its amount. */
static void run_refund(struct sandbox *sb, struct pending *p)
{
    const struct chan_refund_request *q = p->refund;
    struct chan_result *res = p->res;
    memset(res, 0, sizeof(*res));
    sqlite3_stmt *st = sb->refund_find;
    sqlite3_bind_text(st, 1, q->refund_no, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        bool same = strcmp((const char *)sqlite3_column_text(st, 1), q->serial_no) == 0 &&
                    sqlite3_column_int64(st, 2) == q->amount_minor;
        if (same) {
            res->outcome = CHAN_SUCCEEDED;
            snprintf(res->txn_id, sizeof(res->txn_id), "%s", sqlite3_column_text(st, 0));
        } else {
            /* payd's refund numbers are unique: a person must look */
            res->outcome = CHAN_UNKNOWN;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        if (rc != SQLITE_ROW)
            res->outcome = CHAN_ERROR;
        return;
    }
    /* What the charge has left: NULL when there is no succeeded charge. */
    st = sb->refund_left;
    sqlite3_bind_text(st, 1, q->serial_no, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    bool charged = rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL;
    int64_t left = charged ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW) {
        res->outcome = CHAN_ERROR;
        return;
    }
    if (!charged) {
        declined(res, "charge_not_refundable", "No succeeded charge has this serial number.");
        return;
    }
    if (left < q->amount_minor) {
        declined(res, "refund_exceeds_charge", "The refunds would exceed the charge.");
        return;
    }
    char id[CHANNEL_TXN_ID_MAX + 1] = "sbr_";
    uint8_t rnd[12];
    rand_bytes(rnd, sizeof(rnd));
    hex_encode(rnd, sizeof(rnd), id + 4);
    st = sb->refund_insert;
    sqlite3_bind_text(st, 1, q->refund_no, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, q->serial_no, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, q->amount_minor);
    sqlite3_bind_text(st, 4, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, clock_wall_ms());
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE) {
        res->outcome = CHAN_ERROR;
        return;
    }
    res->outcome = CHAN_SUCCEEDED;
    snprintf(res->txn_id, sizeof(res->txn_id), "%s", id);
}

static void run_one(struct sandbox *sb, struct pending *p)
{
    if (p->kind == J_REFUND) {
        run_refund(sb, p);
        return;
    }
    bool failed = false;
    if (journal_find(sb, p->serial_no, p->res, &failed))
        return; /* known serial: its first outcome, nothing new charged */
    if (failed) {
        memset(p->res, 0, sizeof(*p->res));
        p->res->outcome = CHAN_ERROR;
        return;
    }
    /* Not charged: closed already (then never), or closed now by J_CLOSE. */
    sqlite3_stmt *st = sb->closed_find;
    sqlite3_bind_text(st, 1, p->serial_no, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        memset(p->res, 0, sizeof(*p->res));
        p->res->outcome = CHAN_ERROR;
        return;
    }
    bool closed = rc == SQLITE_ROW;
    if (p->kind == J_CHARGE && closed) {
        declined(p->res, "trade_closed", "The channel closed this trade.");
        return;
    }
    if (p->kind == J_CLOSE && !closed) {
        st = sb->closed_insert;
        sqlite3_bind_text(st, 1, p->serial_no, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, clock_wall_ms());
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            memset(p->res, 0, sizeof(*p->res));
            p->res->outcome = CHAN_ERROR;
            return;
        }
    }
    if (p->kind == J_QUERY || p->kind == J_CLOSE) {
        memset(p->res, 0, sizeof(*p->res));
        p->res->outcome = CHAN_NOT_FOUND;
        return;
    }
    char txn[CHANNEL_TXN_ID_MAX + 1] = "";
    if (p->succeed) {
        uint8_t rnd[12];
        rand_bytes(rnd, sizeof(rnd));
        memcpy(txn, "sbx_", 4);
        hex_encode(rnd, sizeof(rnd), txn + 4);
    }
    st = sb->insert;
    sqlite3_bind_text(st, 1, p->serial_no, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, p->req->amount_minor);
    sqlite3_bind_text(st, 3, p->req->currency, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, p->req->method, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, p->succeed ? "succeeded" : "declined", -1, SQLITE_STATIC);
    if (p->succeed)
        sqlite3_bind_text(st, 6, txn, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 6);
    sqlite3_bind_int64(st, 7, clock_wall_ms());
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    memset(p->res, 0, sizeof(*p->res));
    if (rc != SQLITE_DONE) {
        p->res->outcome = CHAN_ERROR;
    } else if (p->succeed) {
        p->res->outcome = CHAN_SUCCEEDED;
        snprintf(p->res->txn_id, sizeof(p->res->txn_id), "%s", txn);
    } else {
        declined(p->res, "card_declined", "The card was declined.");
    }
}

/* Writes a batch in one transaction. A failed commit turns every charge in
 * it into a system error: nothing of it was journaled, so nothing charged. */
static void run_batch(struct sandbox *sb, struct pending *batch)
{
    bool in_txn = sqlite3_step(sb->begin) == SQLITE_DONE;
    sqlite3_reset(sb->begin);
    for (struct pending *p = batch; p; p = p->next) {
        if (in_txn) {
            run_one(sb, p);
        } else {
            memset(p->res, 0, sizeof(*p->res));
            p->res->outcome = CHAN_ERROR;
        }
    }
    if (!in_txn)
        return;
    int rc = sqlite3_step(sb->commit);
    sqlite3_reset(sb->commit);
    if (rc != SQLITE_DONE) {
        sqlite3_step(sb->rollback);
        sqlite3_reset(sb->rollback);
        for (struct pending *p = batch; p; p = p->next) {
            memset(p->res, 0, sizeof(*p->res));
            p->res->outcome = CHAN_ERROR;
        }
    }
}

static void journal(struct sandbox *sb, struct pending *p)
{
    p->done = false;
    p->next = NULL;
    pthread_mutex_lock(&sb->mu);
    *sb->tail = p;
    sb->tail = &p->next;
    while (!p->done) {
        if (sb->leader_active) {
            pthread_cond_wait(&sb->cond, &sb->mu);
            continue;
        }
        sb->leader_active = true;
        struct pending *batch = sb->head;
        sb->head = NULL;
        sb->tail = &sb->head;
        pthread_mutex_unlock(&sb->mu);
        run_batch(sb, batch);
        pthread_mutex_lock(&sb->mu);
        for (struct pending *q = batch; q;) {
            struct pending *next = q->next; /* read before the owner may leave */
            q->done = true;
            q = next;
        }
        sb->leader_active = false;
        pthread_cond_broadcast(&sb->cond);
    }
    pthread_mutex_unlock(&sb->mu);
}

static void sandbox_charge(channel *ch, const struct chan_request *req, struct chan_result *res)
{
    struct sandbox *sb = (struct sandbox *)ch;
    const char *m = req->method;
    memset(res, 0, sizeof(*res));
    if (strcmp(m, "error") == 0) {
        res->outcome = CHAN_ERROR;
        snprintf(res->code, sizeof(res->code), "system_error");
        snprintf(res->message, sizeof(res->message), "The channel had a system error.");
        return;
    }
    bool slow = strcmp(m, "slow") == 0;
    bool unknown = strcmp(m, "unknown") == 0;
    int64_t answer_after_ms = 0;
    if (slow)
        answer_after_ms = SLOW_MS < ch->timeout_ms ? SLOW_MS : ch->timeout_ms;
    if (unknown)
        answer_after_ms = ch->timeout_ms;
    if (slow)
        sleep_ms(answer_after_ms); /* the PSP takes its time before charging */

    struct pending p = {.kind = J_CHARGE, .serial_no = req->serial_no, .req = req,
                        .succeed = strcmp(m, "declined") != 0, .res = res};
    journal(sb, &p);

    if (unknown) {
        sleep_ms(answer_after_ms); /* charged, but the answer never arrives */
        memset(res, 0, sizeof(*res));
        res->outcome = CHAN_UNKNOWN;
    } else if (slow && SLOW_MS > ch->timeout_ms) {
        memset(res, 0, sizeof(*res));
        res->outcome = CHAN_UNKNOWN; /* the caller's timeout came first */
    }
}

static void sandbox_query(channel *ch, const char *serial_no, struct chan_result *res)
{
    struct pending p = {.kind = J_QUERY, .serial_no = serial_no, .res = res};
    journal((struct sandbox *)ch, &p);
}

static void sandbox_refund(channel *ch, const struct chan_refund_request *req,
                           struct chan_result *res)
{
    struct pending p = {.kind = J_REFUND, .serial_no = req->serial_no, .refund = req,
                        .res = res};
    journal((struct sandbox *)ch, &p);
}

/* The statement, from the journal on a connection of its own (the
 * journal's writer may be in a transaction). Numbers and ids are the
 * sandbox's: serial_no and txn_id, refund_no and refund_id. */
static int sandbox_statement(channel *ch, const char *date, struct chan_statement *out,
                             char *err, size_t err_size)
{
    struct sandbox *sb = (struct sandbox *)ch;
    memset(out, 0, sizeof(*out));
    int64_t from;
    if (date_parse(date, &from) != 0) {
        snprintf(err, err_size, "not a date: %s", date);
        return -1;
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(sb->path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 10000);
        rc = sqlite3_prepare_v2(
            db,
            "SELECT 0, serial_no, serial_no, txn_id, amount, currency, created_ms FROM charges"
            " WHERE status = 'succeeded' AND created_ms >= ?1 AND created_ms < ?2 UNION ALL"
            " SELECT 1, r.refund_no, r.serial_no, r.refund_id, r.amount, c.currency, r.created_ms"
            " FROM refunds r JOIN charges c USING (serial_no) WHERE r.created_ms >= ?1 AND"
            " r.created_ms < ?2 ORDER BY 7, 1",
            -1, &st, NULL);
    }
    int cap = 0;
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, from);
        sqlite3_bind_int64(st, 2, from + DAY_MS);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (out->count == cap) {
                cap = cap ? cap * 2 : 64;
                out->items = xrealloc(out->items, (size_t)cap * sizeof(*out->items));
            }
            struct chan_statement_item *it = &out->items[out->count++];
            memset(it, 0, sizeof(*it));
            it->refund = sqlite3_column_int(st, 0) != 0;
            snprintf(it->number, sizeof(it->number), "%s", sqlite3_column_text(st, 1));
            snprintf(it->charge_number, sizeof(it->charge_number), "%s",
                     sqlite3_column_text(st, 2));
            snprintf(it->channel_id, sizeof(it->channel_id), "%s",
                     sqlite3_column_text(st, 3) ? (const char *)sqlite3_column_text(st, 3) : "");
            it->amount_minor = sqlite3_column_int64(st, 4);
            snprintf(it->currency, sizeof(it->currency), "%s", sqlite3_column_text(st, 5));
            it->time_ms = sqlite3_column_int64(st, 6);
        }
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) {
        snprintf(err, err_size, "sandbox journal %s: %s", sb->path,
                 db ? sqlite3_errmsg(db) : "cannot open");
        chan_statement_free(out);
    }
    out->complete = clock_wall_ms() >= from + DAY_MS;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

static void sandbox_close(channel *ch, const char *serial_no, struct chan_result *res)
{
    struct pending p = {.kind = J_CLOSE, .serial_no = serial_no, .res = res};
    journal((struct sandbox *)ch, &p);
}

static void sandbox_free(channel *ch)
{
    struct sandbox *sb = (struct sandbox *)ch;
    if (!sb)
        return;
    sqlite3_finalize(sb->insert);
    sqlite3_finalize(sb->select);
    sqlite3_finalize(sb->begin);
    sqlite3_finalize(sb->commit);
    sqlite3_finalize(sb->rollback);
    sqlite3_finalize(sb->refund_find);
    sqlite3_finalize(sb->refund_left);
    sqlite3_finalize(sb->refund_insert);
    sqlite3_finalize(sb->closed_find);
    sqlite3_finalize(sb->closed_insert);
    sqlite3_close(sb->db);
    pthread_mutex_destroy(&sb->mu);
    pthread_cond_destroy(&sb->cond);
    free(sb);
}

static const struct channel_backend sandbox_backend = {
    .type = "sandbox",
    .charge = sandbox_charge,
    .query = sandbox_query,
    .refund = sandbox_refund,
    .close = sandbox_close,
    .statement = sandbox_statement,
    .free = sandbox_free,
};

/* The journal is busy: another process (a cluster's workers share one
 * journal) holds its write lock for the moment of one small transaction.
 * SQLite's own busy timeout sleeps up to 100 ms at a time, which with two
 * writers took most of the time measured; this waits 0.2 ms at a time, and
 * gives up after 10 s like the timeout it replaces. */
static int on_busy(void *arg, int count)
{
    (void)arg;
    if (count >= BUSY_TRIES_MAX)
        return 0;
    struct timespec ts = {0, BUSY_WAIT_NS};
    nanosleep(&ts, NULL);
    return 1;
}

channel *channel_sandbox_new(const struct conf_channel *cc, const char *data_dir, char *err,
                             size_t err_size)
{
    struct sandbox *sb = xcalloc(1, sizeof(*sb));
    sb->base.be = &sandbox_backend;
    snprintf(sb->base.name, sizeof(sb->base.name), "%s", cc->name);
    sb->base.timeout_ms = cc->timeout_ms;
    sb->base.methods = sandbox_methods;
    sb->tail = &sb->head;
    pthread_mutex_init(&sb->mu, NULL);
    pthread_cond_init(&sb->cond, NULL);

    char *path = sb->path;
    size_t path_size = sizeof(sb->path);
    if (cc->journal[0])
        snprintf(path, path_size, "%s", cc->journal);
    else if (strcmp(cc->name, "sandbox") == 0)
        snprintf(path, path_size, "%s/sandbox.db", data_dir);
    else
        snprintf(path, path_size, "%s/sandbox-%s.db", data_dir, cc->name);
    if (sqlite3_open_v2(path, &sb->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK)
        goto out_fail;
    sqlite3_busy_handler(sb->db, on_busy, NULL);
    /* Instances that share a new journal set it up at once. Turning on WAL
     * needs the file to itself, and SQLite answers "locked" without calling
     * the busy handler when waiting could deadlock: the set-up is tried
     * again (it is idempotent) until the others are done. */
    int rc;
    int64_t deadline_ms = clock_mono_ms() + SETUP_WAIT_MS;
    while ((rc = sqlite3_exec(sb->db,
                              "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                              "CREATE TABLE IF NOT EXISTS charges(serial_no TEXT PRIMARY KEY,"
                              " amount INTEGER NOT NULL, currency TEXT NOT NULL,"
                              " method TEXT NOT NULL,"
                              " status TEXT NOT NULL CHECK (status IN ('succeeded','declined')),"
                              " txn_id TEXT, created_ms INTEGER NOT NULL) WITHOUT ROWID;"
                              "CREATE TABLE IF NOT EXISTS refunds(refund_no TEXT PRIMARY KEY,"
                              " serial_no TEXT NOT NULL REFERENCES charges(serial_no),"
                              " amount INTEGER NOT NULL CHECK (amount > 0),"
                              " refund_id TEXT NOT NULL, created_ms INTEGER NOT NULL)"
                              " WITHOUT ROWID;"
                              "CREATE INDEX IF NOT EXISTS refunds_by_charge"
                              " ON refunds(serial_no);"
                              "CREATE TABLE IF NOT EXISTS closed_trades("
                              " serial_no TEXT PRIMARY KEY, created_ms INTEGER NOT NULL)"
                              " WITHOUT ROWID;",
                              NULL, NULL, NULL)) == SQLITE_BUSY &&
           clock_mono_ms() < deadline_ms)
        sleep_ms(SETUP_RETRY_MS);
    if (rc != SQLITE_OK)
        goto out_fail;
    if (sqlite3_prepare_v2(sb->db,
                           "INSERT INTO charges(serial_no, amount, currency, method, status,"
                           " txn_id, created_ms) VALUES (?1,?2,?3,?4,?5,?6,?7)",
                           -1, &sb->insert, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(sb->db, "SELECT status, txn_id FROM charges WHERE serial_no = ?1",
                           -1, &sb->select, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(sb->db, "BEGIN IMMEDIATE", -1, &sb->begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(sb->db, "COMMIT", -1, &sb->commit, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(sb->db, "ROLLBACK", -1, &sb->rollback, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(sb->db,
                           "SELECT refund_id, serial_no, amount FROM refunds WHERE"
                           " refund_no = ?1",
                           -1, &sb->refund_find, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(sb->db,
                           "SELECT (SELECT amount FROM charges WHERE serial_no = ?1 AND"
                           " status = 'succeeded') - (SELECT coalesce(sum(amount), 0) FROM"
                           " refunds WHERE serial_no = ?1)",
                           -1, &sb->refund_left, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(sb->db,
                           "INSERT INTO refunds(refund_no, serial_no, amount, refund_id,"
                           " created_ms) VALUES (?1,?2,?3,?4,?5)",
                           -1, &sb->refund_insert, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(sb->db, "SELECT 1 FROM closed_trades WHERE serial_no = ?1", -1,
                           &sb->closed_find, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(sb->db,
                           "INSERT INTO closed_trades(serial_no, created_ms) VALUES (?1, ?2)",
                           -1, &sb->closed_insert, NULL) != SQLITE_OK)
        goto out_fail;
    return &sb->base;

out_fail:
    snprintf(err, err_size, "sandbox channel %s: %s: %s", cc->name, path,
             sb->db ? sqlite3_errmsg(sb->db) : "cannot open");
    sandbox_free(&sb->base);
    return NULL;
}
