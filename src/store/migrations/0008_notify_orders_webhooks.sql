-- 0008_notify_orders_webhooks.sql - channels' notifications, order timeout,
-- late charges, webhooks and reconciliation: the same tables, indexes and
-- answers as the embedded SQLite store (src/store/sqlite.c).
--
-- * A channel's signed notification moves a processing payment or refund
--   to succeeded exactly as a worker's outcome would, without a fencing
--   token; its signature is recorded so that a replay is refused.
-- * Orders left unpaid past [orders] ttl_s are closed. A charge that
--   succeeds after its order closed (a late charge) is recorded and
--   refunded in full at once, in the same transaction; the order stays
--   closed.
-- * A payment or refund that reaches its final status queues an event for
--   its merchant's webhook endpoint, when the merchant has one.
--
-- Refusals write nothing: every check is made before the first write
-- (a function that returns a refusal keeps what it wrote, unlike SQLite's
-- savepoints). The signature of a notification is recorded after the checks
-- and before the outcome's writes.
--
-- Locks, as in 0007_refunds.sql: the order's row, then the payment's row or
-- the payment's refund totals, then the refund's row.

CREATE TABLE channel_notifications (
    signature    text PRIMARY KEY,
    channel      text NOT NULL,
    notify_id    text NOT NULL,
    received_ms  bigint NOT NULL
);
CREATE INDEX channel_notifications_age ON channel_notifications (received_ms);

CREATE TABLE webhooks (
    merchant_id  text PRIMARY KEY REFERENCES merchants(id),
    url          text NOT NULL,
    secret       text NOT NULL,
    updated_ms   bigint NOT NULL
);

CREATE TABLE events (
    id               text PRIMARY KEY,
    merchant_id      text NOT NULL,
    type             text NOT NULL,
    object_id        text NOT NULL,
    state            text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         bigint NOT NULL DEFAULT 0,
    next_attempt_ms  bigint NOT NULL,
    last_status      int,
    last_error       text,
    created_ms       bigint NOT NULL,
    updated_ms       bigint NOT NULL
);
CREATE INDEX events_due ON events (next_attempt_ms) WHERE state = 'pending';

CREATE TABLE reconciliations (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    date         text NOT NULL,
    channel      text NOT NULL,
    run_ms       bigint NOT NULL,
    differences  bigint NOT NULL,
    report       text NOT NULL
);

CREATE INDEX orders_pending ON orders (created_ms) WHERE status = 'pending_payment';
CREATE INDEX payments_by_channel_created ON payments (channel, created_ms)
    WHERE status = 'succeeded';
CREATE INDEX refunds_by_channel_created ON refunds (channel, created_ms)
    WHERE status = 'succeeded';

-- Records a notification's signature (p_signature NULL: there is none, a
-- worker's outcome). False: a replay of it was recorded meanwhile by
-- another transaction.
CREATE FUNCTION payd_notify_record(p_signature text, p_channel text, p_notify_id text,
                                   p_received_ms bigint)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF p_signature IS NULL THEN
        RETURN true;
    END IF;
    INSERT INTO channel_notifications (signature, channel, notify_id, received_ms)
    VALUES (p_signature, p_channel, p_notify_id, p_received_ms)
    ON CONFLICT DO NOTHING;
    RETURN FOUND;
END $$;

-- The final event of a payment or refund, for its merchant's webhook
-- endpoint (none when the merchant has none).
CREATE FUNCTION payd_event_add(p_object_id text, p_merchant_id text, p_type text,
                               p_now_ms bigint)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO events (id, merchant_id, type, object_id, state, attempts, next_attempt_ms,
                        created_ms, updated_ms)
    SELECT 'evt_' || p_object_id, w.merchant_id, p_type, p_object_id, 'pending', 0, p_now_ms,
           p_now_ms, p_now_ms
    FROM webhooks w WHERE w.merchant_id = p_merchant_id
    ON CONFLICT DO NOTHING
$$;

-- A payment's outcome, from processing. p_fence < 0: no token (a channel's
-- notification), nothing checked or recorded. On success the order turns
-- paid and the ledger gets its two entries; a success whose order is
-- closed is a late charge: recorded the same way, the order stays closed,
-- and a refund of the whole amount (p_late_refund_id, p_late_refund_no,
-- p_late_reason; automatic, processing, due at once) is made with it
-- (late true). Either outcome queues the payment's event. p_signature: the
-- notification that brings the outcome, recorded once every check passed.
-- rc 0; -1 (no such order or payment); -4 (the order was paid by another
-- payment); -6 (a newer lock holder wrote the order); -8 (already final);
-- -10 (p_signature was recorded meanwhile).
CREATE FUNCTION payd_payment_outcome(p_id text, p_order_id text, p_merchant_id text,
                                     p_status text, p_txn_id text, p_failure_code text,
                                     p_failure_message text, p_updated_ms bigint,
                                     p_fence bigint, p_late_refund_id text,
                                     p_late_refund_no text, p_late_reason text,
                                     p_signature text, p_sig_channel text, p_notify_id text,
                                     OUT rc int, OUT late boolean)
LANGUAGE plpgsql AS $$
DECLARE
    stored_fence bigint;
    o_status text;
    pay record;
    ok boolean := p_status = 'succeeded';
BEGIN
    late := false;
    IF p_status NOT IN ('succeeded', 'failed') THEN
        RAISE EXCEPTION 'payment % cannot finish as %', p_id, p_status;
    END IF;
    -- The order's row, then the payment's, locked.
    SELECT o.fence, o.status INTO stored_fence, o_status
    FROM orders o WHERE o.id = p_order_id AND o.merchant_id = p_merchant_id FOR UPDATE;
    IF NOT FOUND THEN
        rc := -1;
        RETURN;
    END IF;
    IF p_fence >= 0 AND stored_fence > p_fence THEN
        rc := -6;
        RETURN;
    END IF;
    SELECT p.status, p.amount, p.currency, p.channel, p.serial_no INTO pay
    FROM payments p WHERE p.id = p_id AND p.order_id = p_order_id FOR UPDATE;
    IF NOT FOUND THEN
        rc := -1;
        RETURN;
    END IF;
    IF pay.status <> 'processing' THEN
        -- This very late charge, recorded before a lost commit: its refund
        -- (the caller's id) is there. Answered as then.
        IF ok AND EXISTS (SELECT 1 FROM refunds r WHERE r.id = p_late_refund_id
                          AND r.payment_id = p_id) THEN
            rc := 0;
            late := true;
            RETURN;
        END IF;
        rc := -8;
        RETURN;
    END IF;
    IF ok AND o_status <> 'pending_payment' THEN
        IF o_status <> 'closed' THEN
            rc := -4;
            RETURN;
        END IF;
        late := true; -- charged after the order closed: recorded, then given back
    END IF;
    IF NOT payd_notify_record(p_signature, p_sig_channel, p_notify_id, p_updated_ms) THEN
        rc := -10;
        late := false;
        RETURN;
    END IF;

    -- Every check passed: the writes.
    IF ok AND NOT late THEN
        UPDATE orders SET fence = greatest(fence, p_fence), status = 'paid',
                          updated_ms = p_updated_ms
        WHERE id = p_order_id;
    ELSIF p_fence > stored_fence THEN
        UPDATE orders SET fence = p_fence WHERE id = p_order_id;
    END IF;
    UPDATE payments SET status = p_status,
                        channel_txn_id = CASE WHEN ok THEN p_txn_id END,
                        failure_code = CASE WHEN ok THEN NULL ELSE p_failure_code END,
                        failure_message = CASE WHEN ok THEN NULL ELSE p_failure_message END,
                        updated_ms = p_updated_ms
    WHERE id = p_id;
    PERFORM payd_event_add(p_id, p_merchant_id, 'payment.' || p_status, p_updated_ms);
    IF NOT ok THEN
        rc := 0;
        RETURN;
    END IF;
    -- Double entry: the channel's clearing account pays the merchant.
    INSERT INTO ledger_entries (transfer_id, account, amount, currency, created_ms)
    VALUES (p_id, 'clearing:' || pay.channel, -pay.amount, pay.currency, p_updated_ms),
           (p_id, 'merchant:' || p_merchant_id, pay.amount, pay.currency, p_updated_ms);
    IF late THEN
        -- Nothing of it was refunded before: the whole amount is reserved.
        INSERT INTO refund_totals AS t (payment_id, captured, reserved)
        VALUES (p_id, pay.amount, pay.amount)
        ON CONFLICT (payment_id) DO UPDATE SET reserved = t.reserved + excluded.reserved;
        INSERT INTO refunds (id, payment_id, order_id, merchant_id, amount, currency, channel,
                             payment_serial_no, reason, status, refund_no, automatic, attempts,
                             next_attempt_ms, created_ms, updated_ms)
        VALUES (p_late_refund_id, p_id, p_order_id, p_merchant_id, pay.amount, pay.currency,
                pay.channel, pay.serial_no, p_late_reason, 'processing', p_late_refund_no,
                true, 0, p_updated_ms, p_updated_ms, p_updated_ms);
    END IF;
    rc := 0;
END $$;

-- A worker's outcome of a payment: payd_payment_outcome without a
-- notification. late_refund: see there.
DROP FUNCTION payd_payment_finish(text, text, text, text, text, text, text, bigint, bigint,
                                  text, bigint, text);
CREATE FUNCTION payd_payment_finish(p_id text, p_order_id text, p_merchant_id text,
                                    p_status text, p_txn_id text, p_failure_code text,
                                    p_failure_message text, p_updated_ms bigint,
                                    p_fence bigint, p_late_refund_id text,
                                    p_late_refund_no text, p_late_reason text,
                                    OUT rc int, OUT late_refund boolean)
LANGUAGE sql AS $$
    SELECT o.rc, o.late
    FROM payd_payment_outcome(p_id, p_order_id, p_merchant_id, p_status, p_txn_id,
                              p_failure_code, p_failure_message, p_updated_ms, p_fence,
                              p_late_refund_id, p_late_refund_no, p_late_reason,
                              NULL, NULL, NULL) o
$$;

-- A refund's outcome, from processing, with the refund's amount, merchant,
-- channel, order and payment as stored. Succeeded: the totals count it as
-- refunded, the ledger moves the money back (the merchant pays the
-- channel's clearing account: a payment's transfer reversed) and a paid or
-- partially refunded order becomes refunded or partially refunded. Failed:
-- its amount is refundable again. Either queues the refund's event.
-- p_signature: as for payd_payment_outcome. rc 0, -8 (no such refund, or
-- no longer processing: a repeated outcome), -10.
CREATE FUNCTION payd_refund_outcome(p_id text, p_status text, p_channel_refund_id text,
                                    p_failure_code text, p_failure_message text,
                                    p_updated_ms bigint, p_signature text,
                                    p_sig_channel text, p_notify_id text)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    home record;
    o_status text;
    t record;
    r record;
    current text;
BEGIN
    IF p_status NOT IN ('succeeded', 'failed') THEN
        RAISE EXCEPTION 'refund % cannot finish as %', p_id, p_status;
    END IF;
    -- Where the refund belongs never changes: read without a lock, then
    -- lock in order (the order, the totals, the refund).
    SELECT f.payment_id, f.order_id INTO home FROM refunds f WHERE f.id = p_id;
    IF NOT FOUND THEN
        RETURN -8;
    END IF;
    SELECT o.status INTO o_status FROM orders o WHERE o.id = home.order_id FOR UPDATE;
    SELECT x.captured, x.refunded INTO t FROM refund_totals x
    WHERE x.payment_id = home.payment_id FOR UPDATE;
    SELECT f.status INTO current FROM refunds f WHERE f.id = p_id FOR UPDATE;
    IF current <> 'processing' THEN
        RETURN -8;
    END IF;
    IF NOT payd_notify_record(p_signature, p_sig_channel, p_notify_id, p_updated_ms) THEN
        RETURN -10;
    END IF;

    -- Every check passed: the writes.
    UPDATE refunds f SET status = p_status,
                         channel_refund_id = CASE WHEN p_status = 'succeeded'
                                                  THEN p_channel_refund_id END,
                         failure_code = CASE WHEN p_status = 'failed' THEN p_failure_code END,
                         failure_message = CASE WHEN p_status = 'failed'
                                                THEN p_failure_message END,
                         updated_ms = p_updated_ms
    WHERE f.id = p_id
    RETURNING f.amount, f.currency, f.merchant_id, f.channel INTO r;
    PERFORM payd_event_add(p_id, r.merchant_id, 'refund.' || p_status, p_updated_ms);
    IF p_status = 'failed' THEN
        UPDATE refund_totals x SET reserved = x.reserved - r.amount
        WHERE x.payment_id = home.payment_id;
        RETURN 0;
    END IF;
    UPDATE refund_totals x SET refunded = x.refunded + r.amount
    WHERE x.payment_id = home.payment_id;
    -- Double entry: the merchant pays the channel's clearing account back.
    INSERT INTO ledger_entries (transfer_id, account, amount, currency, created_ms)
    VALUES (p_id, 'merchant:' || r.merchant_id, -r.amount, r.currency, p_updated_ms),
           (p_id, 'clearing:' || r.channel, r.amount, r.currency, p_updated_ms);
    -- An order in any other status (closed: a charge that came after it
    -- closed, refunded automatically) keeps it.
    IF o_status IN ('paid', 'partially_refunded') THEN
        UPDATE orders SET status = CASE WHEN t.refunded + r.amount = t.captured
                                        THEN 'refunded' ELSE 'partially_refunded' END,
                          updated_ms = p_updated_ms
        WHERE id = home.order_id;
    END IF;
    RETURN 0;
END $$;

-- A refund worker's outcome: payd_refund_outcome without a notification.
CREATE OR REPLACE FUNCTION payd_refund_finish(p_id text, p_status text,
                                              p_channel_refund_id text, p_failure_code text,
                                              p_failure_message text, p_updated_ms bigint)
RETURNS int
LANGUAGE sql AS $$
    SELECT payd_refund_outcome(p_id, p_status, p_channel_refund_id, p_failure_code,
                               p_failure_message, p_updated_ms, NULL, NULL, NULL)
$$;

-- A channel's signed notification that a charge (p_refund false: the
-- payment whose serial_no is p_number) or a refund (p_refund true: the
-- refund whose refund_no is p_number) on channel p_channel succeeded; see
-- store.h. rc 0 (changed false: it had succeeded already; late_refund: as
-- for payd_payment_outcome), -1 (nothing on that channel has that number),
-- -3 (the amount or currency differ), -4, -8 (it had failed), -10 (the
-- signature was seen before: a replay, refused whatever became of its
-- object). obj_id, obj_order_id and obj_merchant_id name the payment or
-- refund once it is found.
CREATE FUNCTION payd_notify_apply(p_channel text, p_signature text, p_notify_id text,
                                  p_refund boolean, p_number text, p_txn_id text,
                                  p_amount bigint, p_currency text, p_received_ms bigint,
                                  p_late_refund_id text, p_late_refund_no text,
                                  p_late_reason text,
                                  OUT rc int, OUT obj_id text, OUT obj_order_id text,
                                  OUT obj_merchant_id text, OUT changed boolean,
                                  OUT late_refund boolean)
LANGUAGE plpgsql AS $$
DECLARE
    seen record;
    own boolean := false;
    obj record;
    res record;
    now_status text;
BEGIN
    changed := false;
    late_refund := false;
    -- The signature first: a replay is refused whatever became of its
    -- object. The same signature with the same receipt is this very
    -- notification, recorded before a lost commit: answered as then below.
    SELECT n.channel, n.notify_id, n.received_ms INTO seen
    FROM channel_notifications n WHERE n.signature = p_signature;
    IF FOUND THEN
        own := seen.channel = p_channel AND seen.notify_id = p_notify_id
               AND seen.received_ms = p_received_ms;
        IF NOT own THEN
            rc := -10;
            RETURN;
        END IF;
    END IF;
    -- A number, amount, currency and channel never change: read without a lock.
    IF p_refund THEN
        SELECT f.id, f.order_id, f.merchant_id, f.channel, f.amount, f.currency, f.status,
               f.channel_refund_id AS txn_id, f.updated_ms INTO obj
        FROM refunds f WHERE f.refund_no = p_number;
    ELSE
        SELECT p.id, p.order_id, p.merchant_id, p.channel, p.amount, p.currency, p.status,
               p.channel_txn_id AS txn_id, p.updated_ms INTO obj
        FROM payments p WHERE p.serial_no = p_number;
    END IF;
    IF NOT FOUND OR obj.channel <> p_channel THEN
        rc := -1;
        RETURN;
    END IF;
    IF obj.amount <> p_amount OR obj.currency <> p_currency THEN
        rc := -3;
        RETURN;
    END IF;
    obj_id := obj.id;
    obj_order_id := obj.order_id;
    obj_merchant_id := obj.merchant_id;
    IF own THEN
        rc := 0;
        changed := obj.status = 'succeeded' AND obj.updated_ms = p_received_ms
                   AND obj.txn_id IS NOT DISTINCT FROM p_txn_id;
        late_refund := NOT p_refund AND EXISTS (SELECT 1 FROM refunds f
                                                WHERE f.id = p_late_refund_id);
        RETURN;
    END IF;
    IF obj.status = 'failed' THEN
        rc := -8;
        RETURN;
    END IF;
    IF obj.status = 'processing' THEN
        IF p_refund THEN
            rc := payd_refund_outcome(obj.id, 'succeeded', p_txn_id, NULL, NULL, p_received_ms,
                                      p_signature, p_channel, p_notify_id);
        ELSE
            SELECT * INTO res
            FROM payd_payment_outcome(obj.id, obj.order_id, obj.merchant_id, 'succeeded',
                                      p_txn_id, NULL, NULL, p_received_ms, -1,
                                      p_late_refund_id, p_late_refund_no, p_late_reason,
                                      p_signature, p_channel, p_notify_id);
            rc := res.rc;
            late_refund := res.late;
        END IF;
        IF rc <> -8 THEN
            changed := rc = 0;
            RETURN;
        END IF;
        -- A worker's outcome committed since the read above; the row is
        -- locked now.
        IF p_refund THEN
            SELECT f.status INTO now_status FROM refunds f WHERE f.id = obj.id;
        ELSE
            SELECT p.status INTO now_status FROM payments p WHERE p.id = obj.id;
        END IF;
        IF now_status <> 'succeeded' THEN
            RETURN; -- -8: it failed
        END IF;
    END IF;
    -- It had succeeded: only the signature is recorded.
    IF NOT payd_notify_record(p_signature, p_channel, p_notify_id, p_received_ms) THEN
        rc := -10;
        RETURN;
    END IF;
    rc := 0;
END $$;

-- Claims up to p_max due pending events for p_lease_ms, counting the
-- attempt, oldest due first, each with its merchant's endpoint as it is now
-- (has_endpoint false: none). Rows another claimer holds are skipped.
CREATE FUNCTION payd_event_claim(p_now_ms bigint, p_lease_ms bigint, p_max int)
RETURNS TABLE (id text, merchant_id text, type text, object_id text, attempts bigint,
               created_ms bigint, has_endpoint boolean, url text, secret text)
LANGUAGE sql AS $$
    WITH due AS (
        SELECT d.id, d.next_attempt_ms AS due_ms FROM events d
        WHERE d.state = 'pending' AND d.next_attempt_ms <= p_now_ms
        ORDER BY d.next_attempt_ms LIMIT p_max FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE events e SET next_attempt_ms = p_now_ms + p_lease_ms, attempts = e.attempts + 1
        FROM due WHERE e.id = due.id
        RETURNING e.id, e.merchant_id, e.type, e.object_id, e.attempts, e.created_ms,
                  due.due_ms)
    SELECT c.id, c.merchant_id, c.type, c.object_id, c.attempts, c.created_ms,
           w.merchant_id IS NOT NULL, w.url, w.secret
    FROM claimed c LEFT JOIN webhooks w ON w.merchant_id = c.merchant_id
    ORDER BY c.due_ms, c.id
$$;
