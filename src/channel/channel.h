/*
 * channel.h - payment channels (PSPs), and the set configured.
 *
 * A channel charges a payment and answers queries about it, both keyed by
 * the payment's serial number, which the channel uses to refuse a second
 * charge, and refunds it, keyed by the refund's number. Calls are synchronous and made from payment worker threads, never
 * from a server thread. Every answer is one of five outcomes; UNKNOWN (a
 * timeout, a lost answer) means the charge may or may not have happened and
 * must be resolved by query, never by charging again.
 *
 * Backends: sandbox (in process, with its own durable journal) and http (a
 * remote PSP speaking paysim's contract, docs/paysim.md), behind the same
 * table.
 */
#ifndef PAYD_CHANNEL_CHANNEL_H
#define PAYD_CHANNEL_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "core/model.h"

enum chan_outcome {
    CHAN_SUCCEEDED,  /* charged; txn_id set */
    CHAN_DECLINED,   /* refused for a business reason; code and message set */
    CHAN_ERROR,      /* system error; nothing charged */
    CHAN_UNKNOWN,    /* no answer; query to find out */
    CHAN_NOT_FOUND,  /* query: the channel has no charge with this serial number */
};

struct chan_request {
    const char *serial_no;
    int64_t amount_minor;
    const char *currency;
    const char *method;
};

/* A refund of (part of) a charge, deduplicated by refund_no. */
struct chan_refund_request {
    const char *serial_no; /* the charge's */
    const char *refund_no;
    int64_t amount_minor;
    const char *currency;
};

struct chan_result {
    enum chan_outcome outcome;
    char txn_id[CHANNEL_TXN_ID_MAX + 1];
    char code[FAILURE_CODE_MAX + 1];
    char message[FAILURE_MESSAGE_MAX + 1];
};

/* One line of a channel's daily statement (对账单): money that moved. */
#define CHAN_NUMBER_MAX 64
struct chan_statement_item {
    bool refund;                          /* else a charge */
    char number[CHAN_NUMBER_MAX + 1];     /* serial_no of a charge, refund_no of a refund */
    char charge_number[CHAN_NUMBER_MAX + 1]; /* a refund's charge */
    char channel_id[CHANNEL_TXN_ID_MAX + 1]; /* the channel's trade or refund id */
    int64_t amount_minor;
    char currency[4];
    int64_t time_ms;
};

/* Everything a channel charged (succeeded) and refunded on one UTC day. */
struct chan_statement {
    struct chan_statement_item *items;
    int count;
    bool complete; /* false while the day is not over */
};

void chan_statement_free(struct chan_statement *st);

typedef struct channel channel;

struct channel_backend {
    const char *type;
    void (*charge)(channel *ch, const struct chan_request *req, struct chan_result *res);
    void (*query)(channel *ch, const char *serial_no, struct chan_result *res);
    /* SUCCEEDED (txn_id: the channel's refund id), DECLINED (refused: no
     * such charge, not refundable, more than is left; nothing refunded),
     * ERROR (nothing refunded) or UNKNOWN. The same refund_no again is
     * safe: the channel answers the first refund's outcome. */
    void (*refund)(channel *ch, const struct chan_refund_request *req, struct chan_result *res);
    /* Closes the trade of serial_no so that it is never charged: NOT_FOUND
     * (closed: never charged, and never will be), or, when it was charged
     * already, SUCCEEDED / DECLINED as a query answers; ERROR, UNKNOWN. */
    void (*close)(channel *ch, const char *serial_no, struct chan_result *res);
    /* The statement of date (YYYY-MM-DD, UTC) into *out; 0, or -1 with a
     * message in err. */
    int (*statement)(channel *ch, const char *date, struct chan_statement *out, char *err,
                     size_t err_size);
    void (*free)(channel *ch);
};

struct channel {
    const struct channel_backend *be;
    char name[CHANNEL_NAME_MAX + 1];
    int64_t timeout_ms;
    const char *const *methods; /* NULL-terminated */
};

/* The sandbox channel, journaling to DIR/sandbox.db (DIR/sandbox-NAME.db for
 * a channel of another name). NULL with a message in err on failure. */
channel *channel_sandbox_new(const struct conf_channel *cc, const char *data_dir, char *err,
                             size_t err_size);

/* A remote channel: [channel.NAME] type = http, url, secret, timeout_ms.
 * NULL with a message in err when its client cannot be started. */
channel *channel_http_new(const struct conf_channel *cc, char *err, size_t err_size);

static inline void channel_charge(channel *ch, const struct chan_request *req,
                                  struct chan_result *res)
{
    ch->be->charge(ch, req, res);
}
static inline void channel_query(channel *ch, const char *serial_no, struct chan_result *res)
{
    ch->be->query(ch, serial_no, res);
}

static inline void channel_refund(channel *ch, const struct chan_refund_request *req,
                                  struct chan_result *res)
{
    ch->be->refund(ch, req, res);
}

static inline void channel_close(channel *ch, const char *serial_no, struct chan_result *res)
{
    ch->be->close(ch, serial_no, res);
}

static inline int channel_statement(channel *ch, const char *date, struct chan_statement *out,
                                    char *err, size_t err_size)
{
    return ch->be->statement(ch, date, out, err, err_size);
}

bool channel_method_valid(const channel *ch, const char *method);

/* The configured channels. */
typedef struct channel_set channel_set;

channel_set *channel_set_new(const struct conf *conf, char *err, size_t err_size);
void channel_set_free(channel_set *set);
channel *channel_set_find(channel_set *set, const char *name);
/* The position of the channel named name in the set (the metrics' and
 * guards' channel index), or -1. */
int channel_set_index(const channel_set *set, const char *name);
int channel_set_count(const channel_set *set);
channel *channel_set_at(channel_set *set, int i);

#endif
