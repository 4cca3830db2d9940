/*
 * test_sandbox.c - channel/sandbox: each method's outcome (ok, declined,
 * error, unknown, slow), one charge per serial number (a repeat returns the
 * first outcome and journals nothing new), queries (the journaled outcome,
 * or NOT_FOUND), the journal surviving a close and reopen, and concurrent
 * charges of distinct serial numbers all landing (group commit).
 *
 * The journal is checked with a direct SQLite connection to DIR/sandbox.db.
 */
#include "../testutil.h"

#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>

#include "channel/channel.h"
#include "util/util.h"

#define TIMEOUT_MS 50

struct fixture {
    char dir[TEST_PATH_MAX];
    channel *ch;
    int serial_seq;
};

static channel *open_sandbox(const char *dir, const char *name)
{
    struct conf_channel cc;
    memset(&cc, 0, sizeof(cc));
    snprintf(cc.name, sizeof(cc.name), "%s", name);
    cc.type = CHANNEL_TYPE_SANDBOX;
    cc.timeout_ms = TIMEOUT_MS;
    char err[512] = "";
    channel *ch = channel_sandbox_new(&cc, dir, err, sizeof(err));
    if (!ch)
        fail_msg("channel_sandbox_new: %s", err);
    return ch;
}

static void close_sandbox(channel *ch)
{
    if (ch)
        ch->be->free(ch);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    test_tmpdir(f->dir);
    f->ch = open_sandbox(f->dir, "sandbox");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    close_sandbox(f->ch);
    test_rmtree(f->dir);
    free(f);
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A fresh 28-digit serial number. */
static void next_serial(struct fixture *f, char out[SERIAL_NO_LEN + 1])
{
    snprintf(out, SERIAL_NO_LEN + 1, "20261125090346%014d", ++f->serial_seq);
}

static void charge(channel *ch, const char *serial, const char *method, int64_t amount,
                   struct chan_result *res)
{
    struct chan_request req = {.serial_no = serial, .amount_minor = amount, .currency = "CNY",
                               .method = method};
    /* garbage in, so that a field the channel forgets to set shows */
    memset(res, 0x5a, sizeof(*res));
    channel_charge(ch, &req, res);
}

/* Runs a one-number query on a journal file over its own connection. */
static int64_t journal_int(const char *dir, const char *file, const char *sql,
                           const char *param)
{
    char path[TEST_PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    if (param)
        sqlite3_bind_text(st, 1, param, -1, SQLITE_TRANSIENT);
    int64_t v = -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static int64_t rows_for(const struct fixture *f, const char *serial)
{
    return journal_int(f->dir, "sandbox.db", "SELECT count(*) FROM charges WHERE serial_no = ?1",
                       serial);
}

/* ---- tests ---- */

static void test_identity(void **state)
{
    struct fixture *f = *state;
    assert_string_equal(f->ch->name, "sandbox");
    assert_int_equal(f->ch->timeout_ms, TIMEOUT_MS);
    assert_string_equal(f->ch->be->type, "sandbox");
    static const char *const methods[] = {"ok", "declined", "slow", "unknown", "error"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        assert_true(channel_method_valid(f->ch, methods[i]));
    assert_false(channel_method_valid(f->ch, "card"));
    assert_false(channel_method_valid(f->ch, ""));
    assert_false(channel_method_valid(f->ch, "OK"));
}

static void test_ok_charges(void **state)
{
    struct fixture *f = *state;
    char serial[SERIAL_NO_LEN + 1];
    next_serial(f, serial);
    struct chan_result res;
    charge(f->ch, serial, "ok", 1234, &res);
    assert_int_equal(res.outcome, CHAN_SUCCEEDED);
    assert_true(strlen(res.txn_id) > 0);
    assert_memory_equal(res.txn_id, "sbx_", 4);
    assert_string_equal(res.code, "");
    assert_string_equal(res.message, "");
    assert_int_equal(rows_for(f, serial), 1);
    assert_int_equal(journal_int(f->dir, "sandbox.db",
                                 "SELECT amount FROM charges WHERE serial_no = ?1", serial),
                     1234);

    /* a query gives the same answer */
    struct chan_result q;
    memset(&q, 0x5a, sizeof(q));
    channel_query(f->ch, serial, &q);
    assert_int_equal(q.outcome, CHAN_SUCCEEDED);
    assert_string_equal(q.txn_id, res.txn_id);
}

static void test_repeat_charge_same_txn(void **state)
{
    struct fixture *f = *state;
    char serial[SERIAL_NO_LEN + 1];
    next_serial(f, serial);
    struct chan_result first, again;
    charge(f->ch, serial, "ok", 500, &first);
    assert_int_equal(first.outcome, CHAN_SUCCEEDED);
    charge(f->ch, serial, "ok", 500, &again);
    assert_int_equal(again.outcome, CHAN_SUCCEEDED);
    assert_string_equal(again.txn_id, first.txn_id);
    /* even with another amount or method: the first outcome, nothing new */
    charge(f->ch, serial, "declined", 999, &again);
    assert_int_equal(again.outcome, CHAN_SUCCEEDED);
    assert_string_equal(again.txn_id, first.txn_id);
    assert_int_equal(rows_for(f, serial), 1);
    assert_int_equal(journal_int(f->dir, "sandbox.db", "SELECT count(*) FROM charges", NULL), 1);
    assert_int_equal(journal_int(f->dir, "sandbox.db",
                                 "SELECT amount FROM charges WHERE serial_no = ?1", serial),
                     500);

    /* two different serial numbers get different transactions */
    char other[SERIAL_NO_LEN + 1];
    next_serial(f, other);
    struct chan_result second;
    charge(f->ch, other, "ok", 500, &second);
    assert_int_equal(second.outcome, CHAN_SUCCEEDED);
    assert_string_not_equal(second.txn_id, first.txn_id);
}

static void test_declined(void **state)
{
    struct fixture *f = *state;
    char serial[SERIAL_NO_LEN + 1];
    next_serial(f, serial);
    struct chan_result res;
    charge(f->ch, serial, "declined", 100, &res);
    assert_int_equal(res.outcome, CHAN_DECLINED);
    assert_string_equal(res.code, "card_declined");
    assert_true(strlen(res.message) > 0);
    assert_string_equal(res.txn_id, "");
    /* journaled as declined; a retry with "ok" does not charge */
    assert_int_equal(rows_for(f, serial), 1);
    charge(f->ch, serial, "ok", 100, &res);
    assert_int_equal(res.outcome, CHAN_DECLINED);
    assert_string_equal(res.code, "card_declined");
    struct chan_result q;
    channel_query(f->ch, serial, &q);
    assert_int_equal(q.outcome, CHAN_DECLINED);
    assert_string_equal(q.code, "card_declined");
    assert_int_equal(rows_for(f, serial), 1);
}

static void test_error_journals_nothing(void **state)
{
    struct fixture *f = *state;
    char serial[SERIAL_NO_LEN + 1];
    next_serial(f, serial);
    struct chan_result res;
    charge(f->ch, serial, "error", 100, &res);
    assert_int_equal(res.outcome, CHAN_ERROR);
    assert_string_equal(res.txn_id, "");
    assert_int_equal(rows_for(f, serial), 0);
    struct chan_result q;
    channel_query(f->ch, serial, &q);
    assert_int_equal(q.outcome, CHAN_NOT_FOUND);
    /* nothing was charged, so a later charge goes through */
    charge(f->ch, serial, "ok", 100, &res);
    assert_int_equal(res.outcome, CHAN_SUCCEEDED);
    assert_int_equal(rows_for(f, serial), 1);
}

static void test_unknown_then_query(void **state)
{
    struct fixture *f = *state;
    char serial[SERIAL_NO_LEN + 1];
    next_serial(f, serial);
    struct chan_result res;
    int64_t t0 = mono_ms();
    charge(f->ch, serial, "unknown", 100, &res);
    int64_t took = mono_ms() - t0;
    assert_int_equal(res.outcome, CHAN_UNKNOWN);
    assert_string_equal(res.txn_id, "");
    assert_true(took >= TIMEOUT_MS - 5); /* the caller waited for its timeout */
    /* it was charged: the query says so */
    struct chan_result q;
    channel_query(f->ch, serial, &q);
    assert_int_equal(q.outcome, CHAN_SUCCEEDED);
    assert_true(strlen(q.txn_id) > 0);
    assert_int_equal(rows_for(f, serial), 1);
    /* a second charge does not charge again */
    struct chan_result again;
    charge(f->ch, serial, "ok", 100, &again);
    assert_int_equal(again.outcome, CHAN_SUCCEEDED);
    assert_string_equal(again.txn_id, q.txn_id);
    assert_int_equal(rows_for(f, serial), 1);
}

/* slow answers after 2 s, later than the 50 ms timeout: UNKNOWN, charged. */
static void test_slow_times_out(void **state)
{
    struct fixture *f = *state;
    char serial[SERIAL_NO_LEN + 1];
    next_serial(f, serial);
    struct chan_result res;
    int64_t t0 = mono_ms();
    charge(f->ch, serial, "slow", 100, &res);
    int64_t took = mono_ms() - t0;
    assert_int_equal(res.outcome, CHAN_UNKNOWN);
    assert_true(took >= TIMEOUT_MS - 5 && took < 1500);
    struct chan_result q;
    channel_query(f->ch, serial, &q);
    assert_int_equal(q.outcome, CHAN_SUCCEEDED);
}

static void test_query_unknown_serial(void **state)
{
    struct fixture *f = *state;
    struct chan_result q;
    memset(&q, 0x5a, sizeof(q));
    channel_query(f->ch, "2026112509034600000000000000", &q);
    assert_int_equal(q.outcome, CHAN_NOT_FOUND);
    assert_string_equal(q.txn_id, "");
    assert_string_equal(q.code, "");
    assert_int_equal(journal_int(f->dir, "sandbox.db", "SELECT count(*) FROM charges", NULL), 0);
}

static void test_journal_survives_reopen(void **state)
{
    struct fixture *f = *state;
    char ok_serial[SERIAL_NO_LEN + 1], declined_serial[SERIAL_NO_LEN + 1];
    next_serial(f, ok_serial);
    next_serial(f, declined_serial);
    struct chan_result ok, declined;
    charge(f->ch, ok_serial, "ok", 100, &ok);
    charge(f->ch, declined_serial, "declined", 100, &declined);
    assert_int_equal(ok.outcome, CHAN_SUCCEEDED);

    close_sandbox(f->ch);
    f->ch = open_sandbox(f->dir, "sandbox");

    struct chan_result q;
    channel_query(f->ch, ok_serial, &q);
    assert_int_equal(q.outcome, CHAN_SUCCEEDED);
    assert_string_equal(q.txn_id, ok.txn_id);
    channel_query(f->ch, declined_serial, &q);
    assert_int_equal(q.outcome, CHAN_DECLINED);
    struct chan_result again;
    charge(f->ch, ok_serial, "ok", 100, &again);
    assert_string_equal(again.txn_id, ok.txn_id);
    assert_int_equal(rows_for(f, ok_serial), 1);
}

/* A channel of another name keeps its own journal file. */
static void test_named_channel_own_journal(void **state)
{
    struct fixture *f = *state;
    channel *other = open_sandbox(f->dir, "alipay");
    assert_string_equal(other->name, "alipay");
    char serial[SERIAL_NO_LEN + 1];
    next_serial(f, serial);
    struct chan_result res;
    charge(other, serial, "ok", 100, &res);
    assert_int_equal(res.outcome, CHAN_SUCCEEDED);
    assert_int_equal(journal_int(f->dir, "sandbox-alipay.db",
                                 "SELECT count(*) FROM charges WHERE serial_no = ?1", serial),
                     1);
    /* the default sandbox has never heard of it */
    struct chan_result q;
    channel_query(f->ch, serial, &q);
    assert_int_equal(q.outcome, CHAN_NOT_FOUND);
    close_sandbox(other);
}

static void test_open_fails_cleanly(void **state)
{
    struct fixture *f = *state;
    struct conf_channel cc = {.name = "sandbox", .type = CHANNEL_TYPE_SANDBOX, .timeout_ms = 50};
    char dir[TEST_PATH_MAX + 32];
    snprintf(dir, sizeof(dir), "%s/no/such/dir", f->dir);
    char err[512] = "";
    assert_null(channel_sandbox_new(&cc, dir, err, sizeof(err)));
    assert_non_null(strstr(err, "sandbox"));
}

/* ---- concurrency ---- */

#define CHARGERS 8
#define CHARGES_EACH 50

struct charger {
    channel *ch;
    int index;
    char serials[CHARGES_EACH][SERIAL_NO_LEN + 1];
    char txns[CHARGES_EACH][CHANNEL_TXN_ID_MAX + 1];
    int succeeded, declined, other;
};

static void *charge_many(void *arg)
{
    struct charger *c = arg;
    for (int i = 0; i < CHARGES_EACH; i++) {
        snprintf(c->serials[i], SERIAL_NO_LEN + 1, "2026112509034601%06d%06d", c->index, i);
        const char *method = i % 5 == 4 ? "declined" : "ok";
        struct chan_result res;
        charge(c->ch, c->serials[i], method, 100 + i, &res);
        if (res.outcome == CHAN_SUCCEEDED && strcmp(method, "ok") == 0) {
            c->succeeded++;
            memcpy(c->txns[i], res.txn_id, sizeof(res.txn_id));
        } else if (res.outcome == CHAN_DECLINED && strcmp(method, "declined") == 0) {
            c->declined++;
        } else {
            c->other++;
        }
    }
    return NULL;
}

static void test_concurrent_charges(void **state)
{
    struct fixture *f = *state;
    pthread_t th[CHARGERS];
    struct charger *cs = calloc(CHARGERS, sizeof(*cs));
    assert_non_null(cs);
    for (int i = 0; i < CHARGERS; i++) {
        cs[i].ch = f->ch;
        cs[i].index = i;
        assert_int_equal(pthread_create(&th[i], NULL, charge_many, &cs[i]), 0);
    }
    for (int i = 0; i < CHARGERS; i++)
        pthread_join(th[i], NULL);
    int succeeded = 0, declined = 0, other = 0;
    for (int i = 0; i < CHARGERS; i++) {
        succeeded += cs[i].succeeded;
        declined += cs[i].declined;
        other += cs[i].other;
    }
    assert_int_equal(other, 0);
    assert_int_equal(succeeded, CHARGERS * CHARGES_EACH * 4 / 5);
    assert_int_equal(declined, CHARGERS * CHARGES_EACH / 5);
    assert_int_equal(journal_int(f->dir, "sandbox.db", "SELECT count(*) FROM charges", NULL),
                     CHARGERS * CHARGES_EACH);
    assert_int_equal(journal_int(f->dir, "sandbox.db",
                                 "SELECT count(*) FROM charges WHERE status = 'succeeded'", NULL),
                     succeeded);
    /* every answer went to its own caller: the query by serial agrees */
    for (int i = 0; i < CHARGERS; i++)
        for (int j = 0; j < CHARGES_EACH; j++) {
            struct chan_result q;
            channel_query(f->ch, cs[i].serials[j], &q);
            if (j % 5 == 4) {
                assert_int_equal(q.outcome, CHAN_DECLINED);
            } else {
                assert_int_equal(q.outcome, CHAN_SUCCEEDED);
                assert_string_equal(q.txn_id, cs[i].txns[j]);
            }
        }
    free(cs);
}

/* Threads charging the same serial number at once: one charge, one txn. */
static void *charge_same(void *arg)
{
    struct charger *c = arg;
    struct chan_result res;
    charge(c->ch, "2026112509034699999999999999", "ok", 100, &res);
    if (res.outcome == CHAN_SUCCEEDED)
        memcpy(c->txns[0], res.txn_id, sizeof(res.txn_id));
    else
        c->other++;
    return NULL;
}

static void test_concurrent_same_serial(void **state)
{
    struct fixture *f = *state;
    pthread_t th[CHARGERS];
    struct charger *cs = calloc(CHARGERS, sizeof(*cs));
    assert_non_null(cs);
    for (int i = 0; i < CHARGERS; i++) {
        cs[i].ch = f->ch;
        assert_int_equal(pthread_create(&th[i], NULL, charge_same, &cs[i]), 0);
    }
    for (int i = 0; i < CHARGERS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < CHARGERS; i++) {
        assert_int_equal(cs[i].other, 0);
        assert_string_equal(cs[i].txns[0], cs[0].txns[0]);
    }
    assert_int_equal(journal_int(f->dir, "sandbox.db", "SELECT count(*) FROM charges", NULL), 1);
    free(cs);
}

/* Cluster instances that share a journal open it at the same moment; the
 * first ones switch a new file to WAL while the others read it. Every
 * opener must get a working channel. */
#define OPENERS 6
#define OPEN_ROUNDS 30

struct opener {
    pthread_t thread;
    const char *dir;
    pthread_barrier_t *start;
    channel *ch;
    char err[512];
};

static void *open_at_once(void *arg)
{
    struct opener *o = arg;
    struct conf_channel cc;
    memset(&cc, 0, sizeof(cc));
    snprintf(cc.name, sizeof(cc.name), "sandbox");
    cc.type = CHANNEL_TYPE_SANDBOX;
    cc.timeout_ms = TIMEOUT_MS;
    pthread_barrier_wait(o->start);
    o->ch = channel_sandbox_new(&cc, o->dir, o->err, sizeof(o->err));
    return NULL;
}

static void test_shared_journal_opened_at_once(void **state)
{
    struct fixture *f = *state;
    for (int round = 0; round < OPEN_ROUNDS; round++) {
        char dir[TEST_PATH_MAX + 16];
        snprintf(dir, sizeof(dir), "%s/r%d", f->dir, round);
        assert_int_equal(mkdir(dir, 0700), 0);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, OPENERS);
        struct opener o[OPENERS];
        for (int i = 0; i < OPENERS; i++) {
            o[i] = (struct opener){.dir = dir, .start = &start};
            pthread_create(&o[i].thread, NULL, open_at_once, &o[i]);
        }
        for (int i = 0; i < OPENERS; i++)
            pthread_join(o[i].thread, NULL);
        pthread_barrier_destroy(&start);
        for (int i = 0; i < OPENERS; i++) {
            if (!o[i].ch)
                fail_msg("round %d opener %d: %s", round, i, o[i].err);
            close_sandbox(o[i].ch);
        }
    }
}

static void refund(channel *ch, const char *serial, const char *refund_no, int64_t amount,
                   struct chan_result *res)
{
    struct chan_refund_request req = {.serial_no = serial, .refund_no = refund_no,
                                      .amount_minor = amount, .currency = "CNY"};
    memset(res, 0x5a, sizeof(*res));
    channel_refund(ch, &req, res);
}

/* Refunds: partial then the rest, a repeat answers the first refund and
 * journals nothing, never past the charge, never of a declined or unknown
 * charge, and a number reused for another amount is unknown. */
static void test_refunds(void **state)
{
    struct fixture *f = *state;
    char serial[SERIAL_NO_LEN + 1], declined_serial[SERIAL_NO_LEN + 1];
    struct chan_result res, again;
    next_serial(f, serial);
    charge(f->ch, serial, "ok", 1000, &res);
    assert_int_equal(res.outcome, CHAN_SUCCEEDED);

    refund(f->ch, serial, "R-1", 600, &res);
    assert_int_equal(res.outcome, CHAN_SUCCEEDED);
    assert_true(strncmp(res.txn_id, "sbr_", 4) == 0);
    refund(f->ch, serial, "R-1", 600, &again);
    assert_int_equal(again.outcome, CHAN_SUCCEEDED);
    assert_string_equal(again.txn_id, res.txn_id);
    assert_int_equal(journal_int(f->dir, "sandbox.db", "SELECT count(*) FROM refunds", NULL), 1);

    refund(f->ch, serial, "R-2", 401, &res);
    assert_int_equal(res.outcome, CHAN_DECLINED);
    assert_string_equal(res.code, "refund_exceeds_charge");
    /* A number reused for another amount: payd never does that, so it is
     * left unknown for a person rather than failed (which would free the
     * amount while a refund by that number exists). */
    refund(f->ch, serial, "R-1", 300, &res);
    assert_int_equal(res.outcome, CHAN_UNKNOWN);
    refund(f->ch, serial, "R-2", 400, &res);
    assert_int_equal(res.outcome, CHAN_SUCCEEDED);
    assert_int_equal(journal_int(f->dir, "sandbox.db",
                                 "SELECT sum(amount) FROM refunds WHERE serial_no = ?1", serial),
                     1000);

    next_serial(f, declined_serial);
    charge(f->ch, declined_serial, "declined", 500, &res);
    refund(f->ch, declined_serial, "R-3", 100, &res);
    assert_int_equal(res.outcome, CHAN_DECLINED);
    assert_string_equal(res.code, "charge_not_refundable");
    refund(f->ch, "20991231000000000000000000001", "R-4", 100, &res);
    assert_int_equal(res.outcome, CHAN_DECLINED);
    assert_int_equal(journal_int(f->dir, "sandbox.db", "SELECT count(*) FROM refunds", NULL), 2);
}

/* The statement of today lists the succeeded charges and the refunds (not
 * the declined charge), and is incomplete; yesterday's is empty and
 * complete; a bad date is refused. */
static void test_statement(void **state)
{
    struct fixture *f = *state;
    char ok[SERIAL_NO_LEN + 1], no[SERIAL_NO_LEN + 1];
    struct chan_result res;
    next_serial(f, ok);
    next_serial(f, no);
    charge(f->ch, ok, "ok", 700, &res);
    charge(f->ch, no, "declined", 300, &res);
    refund(f->ch, ok, "R-9", 200, &res);
    assert_int_equal(res.outcome, CHAN_SUCCEEDED);

    char today[DATE_LEN + 1], yesterday[DATE_LEN + 1], err[256];
    date_format(clock_wall_ms(), today);
    date_format(clock_wall_ms() - DAY_MS, yesterday);
    struct chan_statement st;
    assert_int_equal(channel_statement(f->ch, today, &st, err, sizeof(err)), 0);
    assert_int_equal(st.count, 2);
    assert_false(st.complete);
    assert_false(st.items[0].refund);
    assert_string_equal(st.items[0].number, ok);
    assert_int_equal(st.items[0].amount_minor, 700);
    assert_true(st.items[1].refund);
    assert_string_equal(st.items[1].number, "R-9");
    assert_string_equal(st.items[1].charge_number, ok);
    assert_int_equal(st.items[1].amount_minor, 200);
    assert_string_equal(st.items[1].currency, "CNY");
    chan_statement_free(&st);

    assert_int_equal(channel_statement(f->ch, yesterday, &st, err, sizeof(err)), 0);
    assert_int_equal(st.count, 0);
    assert_true(st.complete);
    chan_statement_free(&st);
    assert_int_equal(channel_statement(f->ch, "2026-02-30", &st, err, sizeof(err)), -1);
}

/* Closing: a trade never charged is closed for good (a later charge is
 * declined trade_closed and journals nothing); closing a charged one
 * answers the charge. */
static void test_close(void **state)
{
    struct fixture *f = *state;
    char fresh[SERIAL_NO_LEN + 1], charged[SERIAL_NO_LEN + 1];
    struct chan_result res, first;
    next_serial(f, fresh);
    next_serial(f, charged);
    channel_close(f->ch, fresh, &res);
    assert_int_equal(res.outcome, CHAN_NOT_FOUND);
    channel_close(f->ch, fresh, &res); /* again: the same */
    assert_int_equal(res.outcome, CHAN_NOT_FOUND);
    charge(f->ch, fresh, "ok", 100, &res);
    assert_int_equal(res.outcome, CHAN_DECLINED);
    assert_string_equal(res.code, "trade_closed");
    assert_int_equal(journal_int(f->dir, "sandbox.db",
                                 "SELECT count(*) FROM charges WHERE serial_no = ?1", fresh),
                     0);
    channel_query(f->ch, fresh, &res);
    assert_int_equal(res.outcome, CHAN_NOT_FOUND);

    charge(f->ch, charged, "ok", 100, &first);
    assert_int_equal(first.outcome, CHAN_SUCCEEDED);
    channel_close(f->ch, charged, &res);
    assert_int_equal(res.outcome, CHAN_SUCCEEDED);
    assert_string_equal(res.txn_id, first.txn_id);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_identity),
        T(test_ok_charges),
        T(test_repeat_charge_same_txn),
        T(test_declined),
        T(test_error_journals_nothing),
        T(test_unknown_then_query),
        T(test_slow_times_out),
        T(test_query_unknown_serial),
        T(test_journal_survives_reopen),
        T(test_named_channel_own_journal),
        T(test_open_fails_cleanly),
        T(test_concurrent_charges),
        T(test_concurrent_same_serial),
        T(test_shared_journal_opened_at_once),
        T(test_refunds),
        T(test_statement),
        T(test_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
