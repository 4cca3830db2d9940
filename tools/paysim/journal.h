/*
 * journal.h - paysim's durable journal: every charge, refund, closed trade
 * and notification, in SQLite (DIR/paysim.db, WAL, synchronous=FULL).
 *
 * The journal is the external witness: a charge is in it if and only if
 * paysim charged it. Every write goes through one journal thread, which
 * takes the operations waiting at that moment, runs each in its own
 * savepoint inside one transaction, commits once (one fsync for the batch:
 * group commit) and only then hands each operation its result through its
 * done() callback. Writes are therefore serial: the check "refunds of a
 * charge stay within its amount" and the insert that follows it cannot
 * interleave with another refund. The schema repeats each rule as a
 * constraint or trigger (unique keys, refunds within the charge, no charge
 * of a closed trade, journal rows never updated or deleted), so even a bug
 * above it could not journal a double charge.
 *
 * Reads (queries, statements, dumps) use a small pool of read connections
 * and never wait for the journal thread.
 */
#ifndef PAYSIM_JOURNAL_H
#define PAYSIM_JOURNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

#define JOURNAL_FILE "paysim.db"
#define NOTIFY_ERROR_MAX 127
#define EVENT_MAX 23

typedef struct journal journal;

enum jop_kind {
    JOP_CHARGE,        /* charge (or replay): charge.{out_trade_no, amount, currency, method},
                          decline, notify_url */
    JOP_CLOSE,         /* close a trade never charged: charge.out_trade_no */
    JOP_REFUND,        /* refund (or replay): refund.{out_refund_no, out_trade_no, amount},
                          notify_url */
    JOP_NOTIFY_RESULT, /* record one delivery attempt: note */
};

enum jop_result {
    JR_CREATED,        /* new row journaled (CHARGE: charged or declined; CLOSE: closed) */
    JR_EXISTING,       /* the same request before: its first result, nothing new */
    JR_CONFLICT,       /* the key was used before with other parameters */
    JR_CLOSED,         /* CHARGE: the trade was closed; nothing charged */
    JR_NOT_FOUND,      /* REFUND: no charge with that out_trade_no */
    JR_NOT_REFUNDABLE, /* REFUND: the charge was declined */
    JR_EXCEEDS,        /* REFUND: the refunds would exceed the charge's amount */
    JR_ERROR,          /* the journal failed; nothing was written */
};

enum notify_outcome {
    NOTIFY_DELIVERED, /* answered 200 "success" */
    NOTIFY_RETRY,     /* failed; next attempt at note.next_ms */
    NOTIFY_GAVE_UP,   /* failed, and it was the last attempt */
};

/* One write. Lives with its submitter (heap), untouched by the journal
 * after done() has been called. */
struct jop {
    enum jop_kind kind;
    /* in (see enum jop_kind) and out: the journaled charge and refund */
    struct charge charge;
    struct refund refund;
    bool decline;
    char notify_url[URL_MAX + 1]; /* "" = the charge's, then --notify-url */
    struct {
        int64_t id;
        int attempt; /* 1 for the first delivery */
        enum notify_outcome outcome;
        int64_t next_ms; /* NOTIFY_RETRY */
        int http_status; /* 0: no HTTP answer */
        char error[NOTIFY_ERROR_MAX + 1];
        int64_t at_ms;
    } note;
    /* out */
    enum jop_result result;
    int64_t refunded_before; /* REFUND on JR_EXCEEDS: what was refunded already */
    /* Called on the journal thread once the result is durable. */
    void (*done)(struct jop *op);
    void *arg;
    struct jop *next; /* the journal's queue */
};

/* A pending notification due for delivery. */
struct notification {
    int64_t id;
    char notify_id[PAYSIM_ID_MAX + 1];
    char event[EVENT_MAX + 1];
    char url[URL_MAX + 1];
    char *body; /* owned; free with journal_notification_clear() */
    int attempts; /* made so far */
};

/* Opens (creating DIR/paysim.db and its schema when missing) and starts the
 * journal thread. default_notify_url may be NULL. */
journal *journal_open(const char *dir, const char *default_notify_url, int readers, char *err,
                      size_t err_size);
/* Opens an existing journal for reading only (no journal thread). */
journal *journal_open_reader(const char *dir, char *err, size_t err_size);
/* Commits what is queued, stops the thread, closes. NULL does nothing. */
void journal_close(journal *j);

/* Called on the journal thread after a commit that created notifications. */
void journal_set_listener(journal *j, void (*fn)(void *arg), void *arg);

/* Queues a write; op->done(op) is called once it is durable (or failed). */
void journal_submit(journal *j, struct jop *op);

/* ---- reads (journal_read.c) ---- */

/* A charge by out_trade_no (a closed trade reads as status closed): 1 found,
 * 0 none, -1 journal error. */
int journal_get_charge(journal *j, const char *out_trade_no, struct charge *out);
/* A refund by out_refund_no: 1 found, 0 none, -1 journal error. */
int journal_get_refund(journal *j, const char *out_refund_no, struct refund *out);
/* The statement of the UTC day starting at day_start_ms, as JSON lines
 * (docs/paysim.md); NULL on a journal error. date is the day's name. */
char *journal_statement(journal *j, int64_t day_start_ms, const char *date, size_t *len);
/* Every row: {"charges":[…],"refunds":[…],"closed_trades":[…]} and, with
 * notifications, "notifications" and "notification_attempts". NULL on error. */
json_t *journal_dump(journal *j, bool notifications);
/* {"notifications":[…],"notification_attempts":[…]}; NULL on error. */
json_t *journal_dump_notifications(journal *j);
/* Up to max pending notifications due at now_ms, skipping the ids in skip;
 * returns the count, or -1 on error. */
int journal_due_notifications(journal *j, int64_t now_ms, const int64_t *skip, int skip_count,
                              struct notification *out, int max);
void journal_notification_clear(struct notification *n);

#endif
