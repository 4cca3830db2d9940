/*
 * payments.c - POST /v1/payments, GET /v1/payments/{id}, GET /v1/payments.
 *
 * Accepting a payment: validate -> idempotency (in-flight mark, then the
 * stored answer) -> read the order -> take the order's lock (its fencing
 * token goes into the write) -> write the payment, its queue message and
 * the idempotency record in one transaction -> 202. The request holds no
 * thread while its write waits for the group commit. A payment worker does
 * the rest.
 *
 * The lock and the in-flight mark only spare work and give the right answer
 * fast; the store's constraints (one processing payment per order, one
 * record per idempotency key) decide every race.
 */
#include <string.h>

#include "api/internal.h"
#include "util/util.h"

#define ORDER_LOCK_TTL_MS 10000

static const char *const payment_fields[] = {"order_id", "channel", "method", NULL};

/* Undoes what the request holds: the order lock and the in-flight mark.
 * Also called when the request ends without an answer (the client left),
 * so that neither outlives it. */
void api_payment_let_go(struct api_ctx *c)
{
    if (c->locked) {
        lock_release(c->app->lock, c->lock_key, c->fence);
        c->locked = false;
    }
    if (c->idem_entered) {
        idem_inflight_leave(c->app->inflight, c->merchant.id, c->idem_key);
        c->idem_entered = false;
    }
}

static void payment_written(http_req *r)
{
    struct api_ctx *c = http_user(r);
    api_payment_let_go(c);
    switch (c->op.rc) {
    case STORE_OK: {
        const struct payment *p = &c->op.in.payment_create.payment;
        int ch = channel_set_index(c->app->channels, p->channel);
        if (ch >= 0)
            metrics_inc(c->app->metrics, M_PAYMENTS_ACCEPTED, ch, 0);
        http_note_ids(r, NULL, p->order_id, p->id);
        if (c->app->queue) /* NULL on an api-only instance: the workers poll */
            queue_notify(c->app->queue);
        http_respond_raw(r, 202, c->response_body, strlen(c->response_body));
        c->response_body = NULL; /* the server owns it now */
        break;
    }
    case STORE_E_IDEM_EXISTS:
        api_replay(c, r, &c->op.out.idem);
        free(c->op.out.idem.body);
        break;
    case STORE_E_NOT_FOUND:
        api_not_found(r, "order_id");
        break;
    case STORE_E_NOT_PAYABLE: {
        const struct payment *p = &c->op.in.payment_create.payment;
        struct order o;
        if (store_order_get(c->app->store, p->merchant_id, p->order_id, &o) == STORE_OK &&
            o.status == ORDER_CLOSED)
            http_error(r, 409, "conflict", "order_closed",
                       "This order was closed unpaid; create a new order.", "order_id");
        else
            http_error(r, 409, "conflict", "order_already_paid", "This order is already paid.",
                       "order_id");
        break;
    }
    case STORE_E_IN_PROGRESS:
    case STORE_E_STALE_FENCE:
        http_error(r, 409, "conflict", "payment_in_progress",
                   "A payment of this order is being processed.", "order_id");
        break;
    default:
        api_store_failed(r, c->op.rc);
    }
}

static int channel_index(struct app *app, const channel *ch)
{
    for (int i = 0; i < channel_set_count(app->channels); i++)
        if (channel_set_at(app->channels, i) == ch)
            return i;
    PAYD_ASSERT(!"a channel outside the set");
    return -1;
}

/* The channel to take the payment: ch itself unless its breaker is open,
 * then its fallback when that one is not open and has the method. NULL
 * (answered 503 with Retry-After) when neither can take it. A half-open
 * channel takes payments: they wait in the queue for its probes. */
static channel *route_around_open_breaker(struct api_ctx *c, http_req *r, channel *ch,
                                          const char *method)
{
    struct app *app = c->app;
    int64_t now = clock_mono_ns();
    int i = channel_index(app, ch);
    if (breaker_state_at(guards_breaker(app->guards, i), now) != BREAKER_OPEN)
        return ch;
    int fb = guards_fallback(app->guards, i);
    if (fb >= 0) {
        channel *alt = channel_set_at(app->channels, fb);
        if (channel_method_valid(alt, method) &&
            breaker_state_at(guards_breaker(app->guards, fb), now) != BREAKER_OPEN)
            return alt;
    }
    /* A retry of a payment accepted before the breaker opened gets its
     * first answer, as any retry does. */
    struct idem_record rec;
    if (c->has_idem_key &&
        store_idem_get(app->store, c->merchant.id, c->idem_key, &rec) == STORE_OK) {
        api_replay(c, r, &rec);
        free(rec.body);
        return NULL;
    }
    api_degraded(r, guards_open_remaining_s(app->guards, i, now), API_MSG_CHANNEL_DOWN);
    return NULL;
}

void api_payment_create(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    struct app *app = c->app;
    if (!api_read_idem_key(c, r))
        return;
    json_t *body = api_parse_object(r, payment_fields, NULL, NULL);
    if (!body)
        return;
    const char *order_id = api_string_field(r, body, "order_id", ID_MAX - 1);
    const char *channel_name = order_id ? api_string_field(r, body, "channel", CHANNEL_NAME_MAX)
                                        : NULL;
    const char *method = channel_name ? api_string_field(r, body, "method", METHOD_NAME_MAX)
                                      : NULL;
    if (!method)
        goto out_body;
    channel *ch = channel_set_find(app->channels, channel_name);
    if (!ch) {
        api_invalid(r, "channel_invalid", "unknown channel; see GET /v1/channels", "channel");
        goto out_body;
    }
    if (!channel_method_valid(ch, method)) {
        api_invalid(r, "method_invalid", "this channel has no such method", "method");
        goto out_body;
    }

    struct payment *p = &c->op.in.payment_create.payment;
    snprintf(p->order_id, sizeof(p->order_id), "%s", order_id);
    http_note_ids(r, NULL, order_id, NULL); /* for the log line, whatever the answer */
    snprintf(p->channel, sizeof(p->channel), "%s", channel_name);
    snprintf(p->method, sizeof(p->method), "%s", method);

    if (!api_idem_enter(c, r, "/v1/payments", body))
        goto out_body;

    ch = route_around_open_breaker(c, r, ch, method);
    if (!ch)
        goto out_let_go;
    snprintf(p->channel, sizeof(p->channel), "%s", ch->name);

    /* What the payment takes from its order, from the cache when it can:
     * the order's status is checked by the write itself. */
    struct order_facts order;
    if (!order_cache_get(app->orders, p->order_id, &order)) {
        struct order o;
        int rc = store_order_get(app->store, c->merchant.id, p->order_id, &o);
        if (rc == STORE_E_NOT_FOUND) {
            api_not_found(r, "order_id");
            goto out_let_go;
        }
        if (rc != STORE_OK) {
            api_store_failed(r, rc);
            goto out_let_go;
        }
        api_order_facts(&o, &order);
        order_cache_put(app->orders, &order);
    }
    if (strcmp(order.merchant_id, c->merchant.id) != 0) {
        api_not_found(r, "order_id"); /* another merchant's order */
        goto out_let_go;
    }

    snprintf(c->lock_key, sizeof(c->lock_key), "%s", order.id);
    int rc = lock_acquire(app->lock, c->lock_key, ORDER_LOCK_TTL_MS, 0, &c->fence);
    if (rc == LOCK_E_BUSY) {
        /* Someone works on this order: a worker on this very payment (then
         * a retry with its key gets the first answer again), or another
         * request. */
        struct idem_record rec;
        if (c->has_idem_key &&
            store_idem_get(app->store, c->merchant.id, c->idem_key, &rec) == STORE_OK) {
            api_replay(c, r, &rec);
            free(rec.body);
        } else {
            http_error(r, 409, "conflict", "payment_in_progress",
                       "A payment of this order is being processed.", "order_id");
        }
        goto out_let_go;
    }
    if (rc != LOCK_OK) {
        api_store_failed(r, STORE_E_BUSY);
        goto out_let_go;
    }
    c->locked = true;

    p->created_ms = p->updated_ms = clock_wall_ms();
    id_new("pay_", p->created_ms, p->id);
    serial_no_new(p->created_ms, p->serial_no);
    snprintf(p->merchant_id, sizeof(p->merchant_id), "%s", c->merchant.id);
    p->amount_minor = order.amount_minor;
    memcpy(p->currency, order.currency, sizeof(p->currency));
    p->status = PAYMENT_PROCESSING;
    json_t *shown = api_payment_json(p);
    c->response_body = json_dumps(shown, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(shown);

    c->op.kind = STORE_OP_PAYMENT_CREATE;
    c->op.in.payment_create.fence = c->fence;
    if (c->has_idem_key) {
        c->op.in.payment_create.idem_key = c->idem_key;
        c->op.in.payment_create.idem_fingerprint = c->fingerprint;
        c->op.in.payment_create.idem_status = 202;
        c->op.in.payment_create.idem_body = c->response_body;
    }
    json_decref(body);
    api_write(c, r, payment_written);
    return;

out_let_go:
    api_payment_let_go(c);
out_body:
    json_decref(body);
}

void api_payment_get(struct api_ctx *c, http_req *r, const char *id)
{
    http_note_ids(r, NULL, NULL, id);
    struct payment p;
    int rc = store_payment_get(c->app->store, c->merchant.id, id, &p);
    if (rc == STORE_OK)
        http_respond_json(r, 200, api_payment_json(&p));
    else if (rc == STORE_E_NOT_FOUND)
        api_not_found(r, NULL);
    else
        api_store_failed(r, rc);
}

static int append_payment(void *arg, const struct payment *p)
{
    json_array_append_new(arg, api_payment_json(p));
    return 0;
}

void api_payment_list(struct api_ctx *c, http_req *r, const char *unused)
{
    (void)unused;
    const char *order_id = http_query(r, "order_id");
    if (!order_id || !*order_id) {
        api_invalid(r, "parameter_missing", "order_id is required", "order_id");
        return;
    }
    struct order order;
    int rc = store_order_get(c->app->store, c->merchant.id, order_id, &order);
    if (rc == STORE_E_NOT_FOUND) {
        api_not_found(r, "order_id");
        return;
    }
    json_t *data = json_array();
    if (rc == STORE_OK)
        rc = store_payment_list(c->app->store, c->merchant.id, order_id, append_payment, data);
    if (rc != STORE_OK) {
        json_decref(data);
        api_store_failed(r, rc);
        return;
    }
    http_respond_json(r, 200, json_pack("{s:o}", "data", data));
}
