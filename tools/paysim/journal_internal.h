/*
 * journal_internal.h - what journal.c (writes) and journal_read.c (reads)
 * share: the handle, the pool of read connections, and reading a charge or
 * a refund out of a row. Not for other modules.
 */
#ifndef PAYSIM_JOURNAL_INTERNAL_H
#define PAYSIM_JOURNAL_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>

#include "journal.h"

#define JOURNAL_READERS_MAX 32
#define JOURNAL_BUSY_TIMEOUT_MS 10000

/* The writer's statements, prepared once (their SQL: journal.c). */
enum journal_statement {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_CHARGE_GET,
    ST_CLOSED_GET,
    ST_CHARGE_INSERT,
    ST_CLOSED_INSERT,
    ST_REFUND_GET,
    ST_REFUND_SUM,
    ST_REFUND_INSERT,
    ST_NOTIFY_INSERT,
    ST_NOTIFY_UPDATE,
    ST_ATTEMPT_INSERT,
    ST_COUNT
};

struct journal {
    char path[4096];
    /* writes: the journal thread and its connection */
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    char *default_notify_url; /* NULL: none */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct jop *head, **tail;
    bool stopping;
    void (*listener)(void *arg);
    void *listener_arg;
    /* reads: connections borrowed one at a time */
    pthread_mutex_t readers_mu;
    pthread_cond_t readers_cond;
    sqlite3 *readers_free[JOURNAL_READERS_MAX];
    int readers_free_count, readers_open, readers_max;
};

/* The columns a charge is read from (journal_charge_row), from a row of
 * charges or, as a charge of status closed, of closed_trades; and those of a
 * refund (journal_refund_row). */
#define JOURNAL_CHARGE_COLUMNS \
    "out_trade_no, trade_no, amount, currency, method, status, code, message, created_ms"
#define JOURNAL_CLOSED_COLUMNS "out_trade_no, '', 0, '', '', 'closed', NULL, NULL, created_ms"
#define JOURNAL_REFUND_COLUMNS \
    "out_refund_no, refund_id, out_trade_no, trade_no, amount, currency, created_ms"

/* Reads a row of those columns, from column 0, into a struct charge or a
 * struct refund (out). */
typedef void journal_row_fn(sqlite3_stmt *st, void *out);
void journal_charge_row(sqlite3_stmt *st, void *charge);
void journal_refund_row(sqlite3_stmt *st, void *refund);

/* Binds key to ?1 and steps st once; on a row, row(st, out) reads it.
 * 1 a row, 0 none, -1 an error. st is left on its row: the caller resets
 * or finalizes it. */
int journal_lookup(sqlite3_stmt *st, const char *key, journal_row_fn *row, void *out);
/* Column col as text into out ("" for NULL), truncated at size. */
void journal_copy_col(sqlite3_stmt *st, int col, char *out, size_t size);

/* Opens one connection to the journal (read-write or query-only). */
sqlite3 *journal_connect(const char *path, bool query_only, char *err, size_t err_size);
/* A read connection (waits while all are lent), or NULL on error. */
sqlite3 *journal_reader_get(journal *j);
void journal_reader_put(journal *j, sqlite3 *db);
/* Closes the read connections (all must be back). */
void journal_readers_close(journal *j);

#endif
