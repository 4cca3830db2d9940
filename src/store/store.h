/*
 * store.h - the storage interface: every durable fact of payd goes through it.
 *
 * A backend (SQLite embedded, PostgreSQL in cluster mode) is a const table of functions,
 * chosen by name when the store is opened; callers use the inline wrappers
 * below and never see SQL.
 *
 * Writes are operations (struct store_op) submitted to the backend, which
 * commits everything that arrived together in one transaction with one flush
 * (group commit) and then calls each operation's done() callback, on the
 * backend's writer thread; done() must be short (wake a thread, resume a
 * connection). Each operation runs in its own savepoint, so one that fails
 * changes nothing and does not disturb the others in its batch. Reads are
 * synchronous, run on per-thread connections and never wait for the writer.
 *
 * Every state change is a conditional update from the expected state, and
 * changes to an order's payments carry the fencing token of the order's lock:
 * the store refuses a token older than the newest it has seen for that order.
 *
 * Return values: 0 (STORE_OK) or a negative enum store_rc.
 */
#ifndef PAYD_STORE_STORE_H
#define PAYD_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/idem.h"
#include "core/model.h"

enum store_rc {
    STORE_OK = 0,
    STORE_E_NOT_FOUND = -1,      /* no such record (or another merchant's) */
    STORE_E_EXISTS = -2,         /* order: same merchant_order_no, same content */
    STORE_E_REUSED = -3,         /* order: same merchant_order_no, other content;
                                    notification: amount or currency differ */
    STORE_E_NOT_PAYABLE = -4,    /* payment: the order is not pending_payment */
    STORE_E_IN_PROGRESS = -5,    /* payment: the order has one processing */
    STORE_E_STALE_FENCE = -6,    /* a newer lock holder wrote this order */
    STORE_E_IDEM_EXISTS = -7,    /* idempotency key already recorded */
    STORE_E_FINAL = -8,          /* payment or refund already succeeded or failed */
    STORE_E_BUSY = -9,           /* write queue full: try again later */
    STORE_E_DUPLICATE = -10,     /* merchant name taken; notification seen (a replay) */
    STORE_E_IO = -11,            /* the database failed; nothing was committed */
    STORE_E_NOT_REFUNDABLE = -12, /* refund: the payment has not succeeded */
    STORE_E_EXCEEDS = -13,       /* refund: more than is left to refund */
    STORE_E_FULL = -14,          /* the disk is full; nothing was committed */
};

const char *store_rc_name(int rc);

#define STORE_CLAIM_MAX 256

/* A queue message in the outbox: "process this payment", with the payment
 * as it stood when the message was claimed. */
struct outbox_msg {
    int64_t id;
    char payment_id[ID_MAX];
    int64_t deliveries; /* 1 on the first delivery */
    bool found;         /* false: the payment is gone (a bug; acknowledged) */
    struct payment payment;
};

/* A stored idempotent response. body is owned by whoever holds the record
 * (free it with free()). */
struct idem_record {
    char fingerprint[IDEM_FINGERPRINT_LEN + 1];
    int status;
    char *body;
};

enum store_op_kind {
    STORE_OP_ORDER_CREATE,
    STORE_OP_PAYMENT_CREATE,
    STORE_OP_PAYMENT_FINISH,
    STORE_OP_OUTBOX_CLAIM,
    STORE_OP_OUTBOX_ACK,
    STORE_OP_OUTBOX_RETRY,
    STORE_OP_OUTBOX_RESET,
    STORE_OP_PAYMENT_REROUTE,
    STORE_OP_IDEM_PURGE,
    STORE_OP_MERCHANT_ADD,
    STORE_OP_MERCHANT_ROTATE,
    STORE_OP_REFUND_CREATE,
    STORE_OP_REFUND_CLAIM,
    STORE_OP_REFUND_FINISH,
    STORE_OP_REFUND_RETRY,
    STORE_OP_NOTIFY_APPLY,
    STORE_OP_ORDER_CLOSE_EXPIRED,
    STORE_OP_WEBHOOK_SET,
    STORE_OP_EVENT_CLAIM,
    STORE_OP_EVENT_FINISH,
    STORE_OP_RECONCILIATION_RECORD,
    /* PostgreSQL only: the relay to a message broker (queue/nats.c) */
    STORE_OP_RELAY_CLAIM,   /* in.outbox_claim: due rows, with payment_id and
                               payment.merchant_id set; each is due again
                               first_lease_ms later when it was never claimed
                               before, else lease_ms later (unless its payment
                               is final by then) */
    STORE_OP_RELAY_RELEASE, /* in.outbox_ack: these claimed rows were not
                               published: due again now */
};

/*
 * One write. The submitter fills kind and the matching member of `in`, sets
 * done and arg, and keeps the op alive until done() runs; the backend fills
 * rc and `out`. Strings in `in` are borrowed for the same time.
 */
struct store_op {
    enum store_op_kind kind;
    union {
        struct order order_create; /* new order, all fields set */
        struct {
            struct payment payment; /* new payment, status processing */
            int64_t fence;
            const char *idem_key; /* NULL when the request had none */
            const char *idem_fingerprint;
            int idem_status;
            const char *idem_body;
        } payment_create;
        /* A payment's outcome. When it succeeded after its order was closed
         * (unpaid past [orders] ttl_s), the charge is recorded and refunded
         * at once: a refund of the whole amount, automatic, with the id and
         * number given here (out.late_refund set). */
        struct {
            struct payment payment; /* as read; status is the outcome */
            int64_t fence;
            char late_refund_id[ID_MAX];
            char late_refund_no[SERIAL_NO_LEN + 1];
        } payment_finish;
        struct {
            int max; /* at most STORE_CLAIM_MAX */
            int64_t lease_ms;
            int64_t first_lease_ms; /* relay_claim only */
            struct outbox_msg *msgs; /* max entries, owned by the submitter */
        } outbox_claim;
        struct {
            int count;
            const int64_t *ids; /* count entries, owned by the submitter */
        } outbox_ack;
        struct {
            int64_t id;
            int64_t delay_ms;
            bool uncount; /* this delivery did not reach the channel: take it back */
            int64_t deliveries; /* uncount: the count this delivery made; a second
                                   run of the same write takes nothing more back */
        } outbox_retry;
        struct {
            const char *payment_id, *order_id, *merchant_id;
            const char *from, *to; /* channel names */
            int64_t fence;
            int64_t updated_ms;
        } payment_reroute; /* a processing payment never sent to `from` moves to `to` */
        struct {
            int64_t older_than_ms; /* wall clock */
        } idem_purge;
        struct {
            struct merchant merchant;
            const char *key_hash;
        } merchant;
        /* A new refund, status processing, due at once; with its
         * idempotency record as for payment_create. Refused unless the
         * payment (refund.payment_id of refund.merchant_id) has succeeded
         * and the refunds of it that succeeded or are still processing
         * leave at least refund.amount_minor (STORE_E_EXCEEDS, with
         * out.refundable = what is left). The other fields of the payment
         * (order_id, currency, channel, payment_serial_no) are the caller's
         * copy and are checked against the payment. */
        struct {
            struct refund refund;
            const char *idem_key;
            const char *idem_fingerprint;
            int idem_status;
            const char *idem_body;
        } refund_create;
        /* Up to max processing refunds that are due, each now leased for
         * lease_ms and its attempts counted. */
        struct {
            int max; /* at most STORE_CLAIM_MAX */
            int64_t lease_ms;
            struct refund *refunds; /* max entries, owned by the submitter */
        } refund_claim;
        /* refund.status: succeeded (channel_refund_id set: the ledger
         * gives the money back and the order becomes partially_refunded or
         * refunded) or failed (failure set: the amount is refundable
         * again). STORE_E_FINAL when it is no longer processing. */
        struct {
            struct refund refund;
        } refund_finish;
        struct {
            const char *id;
            int64_t delay_ms;
        } refund_retry;
        /* A channel's signed notification that a charge (refund false: the
         * payment whose serial_no is `number`) or a refund (refund true:
         * refund_no `number`) succeeded, on channel `channel`. In one
         * transaction: the signature is recorded (seen before: a replay,
         * STORE_E_DUPLICATE, nothing changes); the payment or refund moves
         * from processing to succeeded exactly as a worker's outcome would
         * (with its ledger entries and order status; no fencing token: the
         * channel's word outranks any worker's). STORE_OK also when it had
         * already succeeded (out.notified.changed false). STORE_E_NOT_FOUND
         * when nothing on that channel has that number, STORE_E_REUSED when
         * the amount or currency differ, STORE_E_FINAL when it had failed. */
        struct {
            const char *channel;
            const char *signature;
            const char *notify_id;
            bool refund;
            const char *number;
            const char *txn_id;
            int64_t amount_minor;
            const char *currency;
            int64_t received_ms; /* wall clock */
            char late_refund_id[ID_MAX]; /* as for payment_finish */
            char late_refund_no[SERIAL_NO_LEN + 1];
        } notify;
        /* Closes up to max orders still pending_payment that were created
         * before created_before_ms (out.purged: how many). */
        struct {
            int64_t created_before_ms;
            int64_t updated_ms;
            int max;
        } order_close;
        /* Sets (url non-empty) or removes (url "") a merchant's webhook
         * endpoint. Removing one that is not there: STORE_E_NOT_FOUND. */
        struct webhook webhook_set;
        /* Up to max events due for delivery (pending, next attempt due),
         * each leased for lease_ms and its attempts counted, with the
         * merchant's endpoint as it is now. */
        struct {
            int max; /* at most STORE_CLAIM_MAX */
            int64_t lease_ms;
            struct event *events; /* max entries, owned by the submitter */
        } event_claim;
        /* A delivery's result: delivered; or not, then tried again after
         * retry_in_ms, or (retry_in_ms < 0) given up: failed. status is
         * the HTTP status (0: none), error a short text or NULL. */
        struct {
            const char *id;
            bool delivered;
            int64_t retry_in_ms;
            int status;
            const char *error;
        } event_finish;
        /* A reconciliation's report (payctl reconcile), kept. */
        struct {
            const char *date; /* YYYY-MM-DD */
            const char *channel;
            int64_t run_ms;
            int64_t differences;
            const char *report; /* JSON */
        } reconciliation;
    } in;
    union {
        struct order order;           /* order_create: the existing order */
        struct idem_record idem;      /* payment_create: STORE_E_IDEM_EXISTS */
        int claimed; /* outbox_claim, relay_claim: entries filled in msgs */
        int64_t purged; /* idem_purge, order_close_expired: rows changed */
        int64_t refundable; /* refund_create: STORE_E_EXCEEDS */
        struct {
            char id[ID_MAX]; /* the payment's or the refund's */
            char order_id[ID_MAX];
            char merchant_id[ID_MAX];
            bool changed; /* false: it had succeeded already */
            bool late_refund; /* the charge came after its order closed */
        } notified;
        bool late_refund; /* payment_finish */
    } out;
    int rc;
    void (*done)(struct store_op *op);
    void *arg;
    int64_t submitted_us; /* set by store_submit; for the commit-latency metric */
};

/* Per-currency sums, for balances. */
struct store_amount {
    char currency[4];
    int64_t amount_minor;
};

/* What the monitoring reads of the queue (the outbox). */
struct store_queue_stats {
    int64_t depth;             /* messages */
    int64_t oldest_created_ms; /* wall ms; 0 when empty */
    int64_t dead;              /* messages delivered at least dead_after times */
};

typedef struct store store;

/* 64 MiB of 4 KiB pages: the write-ahead log's size in steady state. */
#define STORE_WAL_RESTART_FRAMES 16384

struct store_options {
    const char *data_dir; /* sqlite */
    const char *url;      /* postgres: a libpq connection string or URI */
    int pool_size;        /* postgres: read connections at most */
    int writers;          /* postgres: write connections (and threads) */
    int max_batch;
    int queue_capacity;
    /* sqlite: the write-ahead log is restarted from its beginning once it
     * holds this many frames (pages); 0: STORE_WAL_RESTART_FRAMES, < 0:
     * never (tests). */
    int wal_restart_frames;
    /* sqlite: the checkpointer copies the log after this many new frames;
     * 0: 1000. */
    int wal_checkpoint_frames;
    /* Called on the writer thread after each commit, with the number of
     * operations and the wait of the oldest one; may be NULL. */
    void (*on_commit)(void *arg, int ops, int64_t latency_us);
    void *on_commit_arg;
};

/* The backend table. Every function is required unless it says otherwise. */
struct store_backend {
    const char *name;
    store *(*open)(const struct store_options *opts, char *err, size_t err_size);
    void (*close)(store *s);
    int (*submit)(store *s, struct store_op *op);
    int (*merchant_by_key_hash)(store *s, const char *key_hash, struct merchant *out);
    int (*merchant_list)(store *s, int (*each)(void *arg, const struct merchant *m),
                         void *arg);
    int64_t (*merchant_count)(store *s);
    int (*order_get)(store *s, const char *merchant_id, const char *id, struct order *out);
    int (*payment_get)(store *s, const char *merchant_id, const char *id,
                       struct payment *out);
    int (*payment_list)(store *s, const char *merchant_id, const char *order_id,
                        int (*each)(void *arg, const struct payment *p), void *arg);
    int (*idem_get)(store *s, const char *merchant_id, const char *key,
                    struct idem_record *out);
    int (*refund_get)(store *s, const char *merchant_id, const char *id, struct refund *out);
    /* The refunds of one payment, oldest first. */
    int (*refund_list)(store *s, const char *merchant_id, const char *payment_id,
                       int (*each)(void *arg, const struct refund *r), void *arg);
    /* Wall ms when the next processing refund is due; INT64_MAX when none. */
    int64_t (*refund_next_due_ms)(store *s);
    int (*webhook_get)(store *s, const char *merchant_id, struct webhook *out);
    /* Reconciliation reads: by the channel's numbers, any merchant; and the
     * payments and refunds of one channel that succeeded, created in
     * [from_ms, to_ms) (wall ms), oldest first. */
    int (*payment_by_serial)(store *s, const char *serial_no, struct payment *out);
    int (*refund_by_no)(store *s, const char *refund_no, struct refund *out);
    int (*payments_succeeded)(store *s, const char *chan, int64_t from_ms, int64_t to_ms,
                              int (*each)(void *arg, const struct payment *p), void *arg);
    int (*refunds_succeeded)(store *s, const char *chan, int64_t from_ms, int64_t to_ms,
                             int (*each)(void *arg, const struct refund *r), void *arg);
    /* Wall ms when the next event is due; INT64_MAX when none. */
    int64_t (*event_next_due_ms)(store *s);
    int (*balance)(store *s, const char *merchant_id, struct store_amount *out, int max);
    int64_t (*max_fence)(store *s);
    int64_t (*outbox_next_due_ms)(store *s); /* wall ms; INT64_MAX when empty */
    int (*ping)(store *s); /* STORE_OK: the store answers and takes writes */
    int (*queue_stats)(store *s, int64_t dead_after, struct store_queue_stats *out);
    /* The sum over currencies of |sum of every ledger entry|: 0 when the
     * ledger balances; -1 when it cannot be read. Reads the whole ledger. */
    int64_t (*ledger_imbalance)(store *s);
    /* Optional (NULL: the backend has no other writers to hear from): calls
     * fn(arg), on a thread of the backend's, whenever another process may
     * have committed new queue messages. fn NULL: stops calling, and has
     * returned once no call is under way. */
    void (*on_outbox)(store *s, void (*fn)(void *arg), void *arg);
};

/* Every store handle begins with this header. */
struct store {
    const struct store_backend *be;
};

/* Returns the backend named name ("sqlite", "postgres"), or NULL. */
const struct store_backend *store_backend_find(const char *name);

store *store_open(const char *backend, const struct store_options *opts, char *err,
                  size_t err_size);
void store_close(store *s);

/* Submits op; STORE_OK means done() will be called. STORE_E_BUSY: the write
 * queue is full and done() will not be called. */
int store_submit(store *s, struct store_op *op);

/* Submits op and waits for its commit; returns op->rc (or STORE_E_BUSY after
 * retrying for up to wait_busy_ms while the queue is full). For threads that
 * may block (workers, the command line); never for a server thread. */
int store_exec(store *s, struct store_op *op, int64_t wait_busy_ms);

static inline int store_merchant_by_key_hash(store *s, const char *h, struct merchant *out)
{
    return s->be->merchant_by_key_hash(s, h, out);
}
static inline int store_merchant_list(store *s, int (*each)(void *, const struct merchant *),
                                      void *arg)
{
    return s->be->merchant_list(s, each, arg);
}
static inline int64_t store_merchant_count(store *s)
{
    return s->be->merchant_count(s);
}
static inline int store_order_get(store *s, const char *mid, const char *id, struct order *out)
{
    return s->be->order_get(s, mid, id, out);
}
static inline int store_payment_get(store *s, const char *mid, const char *id,
                                    struct payment *out)
{
    return s->be->payment_get(s, mid, id, out);
}
static inline int store_payment_list(store *s, const char *mid, const char *order_id,
                                     int (*each)(void *, const struct payment *), void *arg)
{
    return s->be->payment_list(s, mid, order_id, each, arg);
}
static inline int store_idem_get(store *s, const char *mid, const char *key,
                                 struct idem_record *out)
{
    return s->be->idem_get(s, mid, key, out);
}
static inline int store_refund_get(store *s, const char *mid, const char *id,
                                   struct refund *out)
{
    return s->be->refund_get(s, mid, id, out);
}
static inline int store_refund_list(store *s, const char *mid, const char *payment_id,
                                    int (*each)(void *, const struct refund *), void *arg)
{
    return s->be->refund_list(s, mid, payment_id, each, arg);
}
static inline int64_t store_refund_next_due_ms(store *s)
{
    return s->be->refund_next_due_ms(s);
}
static inline int store_webhook_get(store *s, const char *mid, struct webhook *out)
{
    return s->be->webhook_get(s, mid, out);
}
static inline int64_t store_event_next_due_ms(store *s)
{
    return s->be->event_next_due_ms(s);
}
static inline int store_payment_by_serial(store *s, const char *serial_no,
                                          struct payment *out)
{
    return s->be->payment_by_serial(s, serial_no, out);
}
static inline int store_refund_by_no(store *s, const char *refund_no, struct refund *out)
{
    return s->be->refund_by_no(s, refund_no, out);
}
static inline int store_payments_succeeded(store *s, const char *chan, int64_t from_ms,
                                           int64_t to_ms,
                                           int (*each)(void *, const struct payment *),
                                           void *arg)
{
    return s->be->payments_succeeded(s, chan, from_ms, to_ms, each, arg);
}
static inline int store_refunds_succeeded(store *s, const char *chan, int64_t from_ms,
                                          int64_t to_ms,
                                          int (*each)(void *, const struct refund *), void *arg)
{
    return s->be->refunds_succeeded(s, chan, from_ms, to_ms, each, arg);
}
static inline int store_balance(store *s, const char *mid, struct store_amount *out, int max)
{
    return s->be->balance(s, mid, out, max);
}
static inline int64_t store_max_fence(store *s)
{
    return s->be->max_fence(s);
}
static inline int64_t store_outbox_next_due_ms(store *s)
{
    return s->be->outbox_next_due_ms(s);
}
static inline int store_ping(store *s)
{
    return s->be->ping(s);
}
static inline int store_queue_stats(store *s, int64_t dead_after,
                                    struct store_queue_stats *out)
{
    return s->be->queue_stats(s, dead_after, out);
}
static inline int64_t store_ledger_imbalance(store *s)
{
    return s->be->ledger_imbalance(s);
}
static inline void store_on_outbox(store *s, void (*fn)(void *arg), void *arg)
{
    if (s->be->on_outbox)
        s->be->on_outbox(s, fn, arg);
}

#endif
