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
    STORE_E_REUSED = -3,         /* order: same merchant_order_no, other content */
    STORE_E_NOT_PAYABLE = -4,    /* payment: the order is not pending_payment */
    STORE_E_IN_PROGRESS = -5,    /* payment: the order has one processing */
    STORE_E_STALE_FENCE = -6,    /* a newer lock holder wrote this order */
    STORE_E_IDEM_EXISTS = -7,    /* idempotency key already recorded */
    STORE_E_FINAL = -8,          /* payment already succeeded or failed */
    STORE_E_BUSY = -9,           /* write queue full: try again later */
    STORE_E_DUPLICATE = -10,     /* merchant name taken */
    STORE_E_IO = -11,            /* the database failed; nothing was committed */
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
    /* PostgreSQL only: the relay to a message broker (queue/nats.c) */
    STORE_OP_RELAY_CLAIM, /* in.outbox_claim: unsent rows, with payment_id and
                             payment.merchant_id set */
    STORE_OP_RELAY_SENT,  /* in.outbox_ack: these rows were published */
    STORE_OP_RELAY_SWEEP, /* in.relay_sweep: send again what was sent before
                             sent_before_ms and is still not final */
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
        struct {
            struct payment payment; /* as read; status is the outcome */
            int64_t fence;
        } payment_finish;
        struct {
            int max; /* at most STORE_CLAIM_MAX */
            int64_t lease_ms;
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
            int64_t sent_before_ms; /* wall clock */
        } relay_sweep;
        struct {
            struct merchant merchant;
            const char *key_hash;
        } merchant;
    } in;
    union {
        struct order order;           /* order_create: the existing order */
        struct idem_record idem;      /* payment_create: STORE_E_IDEM_EXISTS */
        int claimed; /* outbox_claim, relay_claim: entries filled in msgs */
        int64_t purged; /* idem_purge; relay_sweep: rows to send again */
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

struct store_options {
    const char *data_dir; /* sqlite */
    const char *url;      /* postgres: a libpq connection string or URI */
    int pool_size;        /* postgres: read connections at most */
    int writers;          /* postgres: write connections (and threads) */
    int max_batch;
    int queue_capacity;
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
    int (*balance)(store *s, const char *merchant_id, struct store_amount *out, int max);
    int64_t (*max_fence)(store *s);
    int64_t (*outbox_next_due_ms)(store *s); /* wall ms; INT64_MAX when empty */
    int (*ping)(store *s);
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
