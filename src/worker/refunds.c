/*
 * refunds.c - the refund workers; see refunds.h.
 */
#include "worker/refunds.h"

#include <stdio.h>
#include <string.h>

#include "obs/log.h"
#include "util/util.h"
#include "worker/poller.h"
#include "worker/webhooks.h"

#define STORE_WAIT_MS 5000
#define CHANNEL_MISSING_RETRY_MS 60000

struct refunder {
    struct app *app;
    struct refunder_options opts;
    poller *poller;
};

static int64_t backoff_ms(const struct refunder_options *o, int64_t attempts)
{
    int64_t d = o->retry_base_ms;
    for (int64_t i = 1; i < attempts && d < o->retry_max_ms; i++)
        d *= 2;
    return d < o->retry_max_ms ? d : o->retry_max_ms;
}

static void retry(refunder *rf, const struct refund *r, int64_t delay_ms)
{
    struct store_op op = {.kind = STORE_OP_REFUND_RETRY};
    op.in.refund_retry.id = r->id;
    op.in.refund_retry.delay_ms = delay_ms;
    /* On failure the lease runs out and the refund comes back anyway. */
    store_exec(rf->app->store, &op, STORE_WAIT_MS);
}

static void finish(refunder *rf, struct refund *r)
{
    struct app *app = rf->app;
    r->updated_ms = clock_wall_ms();
    struct store_op op = {.kind = STORE_OP_REFUND_FINISH};
    op.in.refund_finish.refund = *r;
    int rc = store_exec(app->store, &op, STORE_WAIT_MS);
    if (rc == STORE_E_FINAL)
        return; /* another worker recorded it first (a lease ran out) */
    if (rc != STORE_OK) {
        /* The lease brings it back; the channel answers the same again. */
        log_error("refund_finish_failed", "refund_id", r->id, "error", store_rc_name(rc), NULL);
        return;
    }
    webhooks_wake(app->webhooks);
    int ch = channel_set_index(app->channels, r->channel);
    if (ch >= 0)
        metrics_inc(app->metrics, M_REFUNDS_FINAL, ch,
                    r->status == PAYMENT_SUCCEEDED ? FINAL_SUCCEEDED : FINAL_FAILED);
    char amount[24];
    snprintf(amount, sizeof(amount), "%lld", (long long)r->amount_minor);
    log_info("refund_finished", "refund_id", r->id, "payment_id", r->payment_id, "order_id",
             r->order_id, "merchant_id", r->merchant_id, "amount", amount, "status",
             payment_status_name(r->status), "failure_code",
             r->status == PAYMENT_FAILED ? r->failure_code : NULL, NULL);
}

static void process(refunder *rf, struct refund *r)
{
    struct app *app = rf->app;
    channel *ch = channel_set_find(app->channels, r->channel);
    if (!ch) {
        log_error("refund_channel_missing", "refund_id", r->id, "channel", r->channel, NULL);
        retry(rf, r, CHANNEL_MISSING_RETRY_MS);
        return;
    }
    int ci = channel_set_index(app->channels, r->channel);
    int64_t now = clock_mono_ns();
    if (breaker_state_at(guards_breaker(app->guards, ci), now) == BREAKER_OPEN) {
        retry(rf, r, guards_open_remaining_s(app->guards, ci, now) * 1000);
        return;
    }
    struct chan_refund_request req = {.serial_no = r->payment_serial_no,
                                      .refund_no = r->refund_no,
                                      .amount_minor = r->amount_minor,
                                      .currency = r->currency};
    struct chan_result res;
    int64_t called_ns = clock_mono_ns();
    channel_refund(ch, &req, &res);
    metrics_inc(app->metrics, M_CHANNEL_CALLS, ci, (int)res.outcome);
    metrics_observe(app->metrics, M_CHANNEL_CALL_DURATION, ci, 0,
                    (clock_mono_ns() - called_ns) / 1000);
    switch (res.outcome) {
    case CHAN_SUCCEEDED:
        r->status = PAYMENT_SUCCEEDED;
        snprintf(r->channel_refund_id, sizeof(r->channel_refund_id), "%s", res.txn_id);
        finish(rf, r);
        return;
    case CHAN_DECLINED:
        r->status = PAYMENT_FAILED;
        snprintf(r->failure_code, sizeof(r->failure_code), "%s", res.code);
        snprintf(r->failure_message, sizeof(r->failure_message), "%s", res.message);
        finish(rf, r);
        return;
    default:
        /* An error refunded nothing and an unknown outcome may have: either
         * way the same refund number goes again, and only the channel's
         * answer ends it. Past max_attempts a person should look. */
        if (r->attempts == rf->opts.max_attempts)
            log_error("refund_unresolved", "refund_id", r->id, "payment_id", r->payment_id,
                      "channel", r->channel, NULL);
        retry(rf, r, backoff_ms(&rf->opts, r->attempts));
    }
}

static int64_t next_due_ms(void *arg)
{
    refunder *rf = arg;
    return store_refund_next_due_ms(rf->app->store);
}

/* Claims one refund at a time: its lease then covers one channel call,
 * never a queue of them. */
static int run(void *arg)
{
    refunder *rf = arg;
    struct refund r;
    struct store_op op = {.kind = STORE_OP_REFUND_CLAIM};
    op.in.refund_claim.max = 1;
    op.in.refund_claim.lease_ms = rf->opts.lease_ms;
    op.in.refund_claim.refunds = &r;
    if (store_exec(rf->app->store, &op, STORE_WAIT_MS) != STORE_OK || op.out.claimed == 0)
        return 0;
    process(rf, &r);
    return 1;
}

static const struct poller_ops refund_ops = {
    .thread_name = "payd-refund",
    .next_due_ms = next_due_ms,
    .run = run,
};

refunder *refunder_start(struct app *app, const struct refunder_options *opts)
{
    refunder *rf = xcalloc(1, sizeof(*rf));
    rf->app = app;
    rf->opts = *opts;
    rf->poller = poller_start(opts->threads, opts->poll_ms, &refund_ops, rf);
    return rf;
}

void refunder_wake(refunder *rf)
{
    if (rf)
        poller_wake(rf->poller);
}

void refunder_stop(refunder *rf)
{
    if (!rf)
        return;
    poller_stop(rf->poller);
    free(rf);
}
