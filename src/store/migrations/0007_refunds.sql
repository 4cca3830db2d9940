-- 0007_refunds.sql - refunds: the same tables and invariants as the embedded
-- SQLite store (src/store/sqlite.c).
--
-- A refund gives back part or all of a succeeded payment. It is created
-- processing and due at once; the refund worker claims it, asks the
-- channel, and records the outcome. refund_totals holds, per payment, what
-- was captured, what the refunds in progress or succeeded take from it
-- (reserved) and what has gone back (refunded): its CHECK makes refunding
-- more than was captured impossible, whatever the code above does.
--
-- Every refund write of a payment locks, in this order, the order's row,
-- the payment's totals and then the refund's row: the order's row first, as
-- the order's payment writes do, so that the refunds of one payment are
-- decided one at a time and two batches never hold these locks crosswise
-- (the store sorts a batch's writes by order id). A write that took the
-- totals before the order would deadlock with one that takes the order
-- first, when both are in flight.
--
-- As in 0001_init.sql, every write is one function call, idempotent by the
-- ids its caller chose, and answers with the codes of enum store_rc.

CREATE TABLE refunds (
    id                 text PRIMARY KEY,
    payment_id         text NOT NULL REFERENCES payments(id),
    order_id           text NOT NULL,
    merchant_id        text NOT NULL,
    amount             bigint NOT NULL CHECK (amount > 0),
    currency           text NOT NULL,
    channel            text NOT NULL,
    payment_serial_no  text NOT NULL,
    reason             text,
    status             text NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed')),
    refund_no          text NOT NULL UNIQUE,
    channel_refund_id  text,
    failure_code       text,
    failure_message    text,
    automatic          boolean NOT NULL DEFAULT false,
    attempts           bigint NOT NULL DEFAULT 0,
    next_attempt_ms    bigint NOT NULL,
    created_ms         bigint NOT NULL,
    updated_ms         bigint NOT NULL
);
CREATE INDEX refunds_by_payment ON refunds (payment_id, created_ms);
CREATE INDEX refunds_due ON refunds (next_attempt_ms) WHERE status = 'processing';

CREATE TABLE refund_totals (
    payment_id  text PRIMARY KEY REFERENCES payments(id),
    captured    bigint NOT NULL,
    reserved    bigint NOT NULL DEFAULT 0, -- refunds processing + succeeded
    refunded    bigint NOT NULL DEFAULT 0, -- refunds succeeded
    CHECK (0 <= refunded AND refunded <= reserved AND reserved <= captured)
);

-- New refund, with its idempotency record. rc 0 (or this same refund,
-- written before a lost commit), -1 (no such payment of this merchant, or
-- the caller's copy of it differs), -7 (the key is recorded: its
-- fingerprint, status and body come back), -12 (the payment has not
-- succeeded), -13 (more than is left: refundable says how much is).
CREATE FUNCTION payd_refund_create(p_id text, p_payment_id text, p_order_id text,
                                   p_merchant_id text, p_amount bigint, p_currency text,
                                   p_channel text, p_payment_serial_no text, p_reason text,
                                   p_refund_no text, p_automatic boolean, p_created_ms bigint,
                                   p_idem_key text, p_idem_fingerprint text,
                                   p_idem_status int, p_idem_body text)
RETURNS TABLE (rc int, refundable bigint, fingerprint text, status int, body text)
LANGUAGE plpgsql AS $$
DECLARE
    pay record;
    left_minor bigint;
    k record;
BEGIN
    -- This very refund, written before a lost commit: done.
    IF EXISTS (SELECT 1 FROM refunds r WHERE r.id = p_id) THEN
        RETURN QUERY SELECT 0, NULL::bigint, NULL::text, NULL::int, NULL::text;
        RETURN;
    END IF;
    -- A key already answered is answered again, whatever else changed.
    IF p_idem_key IS NOT NULL THEN
        SELECT i.fingerprint, i.status, i.body INTO k FROM idempotency_keys i
        WHERE i.merchant_id = p_merchant_id AND i.key = p_idem_key;
        IF FOUND THEN
            RETURN QUERY SELECT -7, NULL::bigint, k.fingerprint, k.status, k.body;
            RETURN;
        END IF;
    END IF;
    -- A succeeded payment is final: read without a lock.
    SELECT p.order_id, p.amount, p.currency, p.channel, p.serial_no, p.status INTO pay
    FROM payments p WHERE p.id = p_payment_id AND p.merchant_id = p_merchant_id;
    IF NOT FOUND OR pay.order_id <> p_order_id OR pay.currency <> p_currency
       OR pay.channel <> p_channel OR pay.serial_no <> p_payment_serial_no THEN
        RETURN QUERY SELECT -1, NULL::bigint, NULL::text, NULL::int, NULL::text;
        RETURN;
    END IF;
    IF pay.status <> 'succeeded' THEN
        RETURN QUERY SELECT -12, NULL::bigint, NULL::text, NULL::int, NULL::text;
        RETURN;
    END IF;
    -- The order, then the payment's totals, locked: the payment's refunds
    -- are decided one at a time. A payment never refunded has no totals
    -- yet: all of it is left. (A refusal writes nothing, not even them.)
    PERFORM 1 FROM orders o WHERE o.id = pay.order_id FOR UPDATE;
    SELECT t.captured - t.reserved INTO left_minor FROM refund_totals t
    WHERE t.payment_id = p_payment_id FOR UPDATE;
    IF NOT FOUND THEN
        left_minor := pay.amount;
    END IF;
    -- The key, now that the payment's refunds are locked: a request with the
    -- same key that committed while this one waited is answered from its
    -- record.
    IF p_idem_key IS NOT NULL THEN
        SELECT i.fingerprint, i.status, i.body INTO k FROM idempotency_keys i
        WHERE i.merchant_id = p_merchant_id AND i.key = p_idem_key;
        IF FOUND THEN
            RETURN QUERY SELECT -7, NULL::bigint, k.fingerprint, k.status, k.body;
            RETURN;
        END IF;
    END IF;
    IF left_minor < p_amount THEN
        RETURN QUERY SELECT -13, left_minor, NULL::text, NULL::int, NULL::text;
        RETURN;
    END IF;
    -- The key first: the same key used at once for another payment and
    -- committed by another writer is a reused key, and nothing is written.
    IF p_idem_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body, created_ms)
        VALUES (p_merchant_id, p_idem_key, p_idem_fingerprint, p_idem_status, p_idem_body,
                p_created_ms)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            SELECT i.fingerprint, i.status, i.body INTO k FROM idempotency_keys i
            WHERE i.merchant_id = p_merchant_id AND i.key = p_idem_key;
            RETURN QUERY SELECT -7, NULL::bigint, k.fingerprint, k.status, k.body;
            RETURN;
        END IF;
    END IF;
    -- The CHECK on refund_totals stands behind the test above.
    INSERT INTO refund_totals AS t (payment_id, captured, reserved)
    VALUES (p_payment_id, pay.amount, p_amount)
    ON CONFLICT (payment_id) DO UPDATE SET reserved = t.reserved + excluded.reserved;
    INSERT INTO refunds (id, payment_id, order_id, merchant_id, amount, currency, channel,
                         payment_serial_no, reason, status, refund_no, automatic, attempts,
                         next_attempt_ms, created_ms, updated_ms)
    VALUES (p_id, p_payment_id, p_order_id, p_merchant_id, p_amount, p_currency, p_channel,
            p_payment_serial_no, p_reason, 'processing', p_refund_no, p_automatic, 0,
            p_created_ms, p_created_ms, p_created_ms);
    RETURN QUERY SELECT 0, NULL::bigint, NULL::text, NULL::int, NULL::text;
END $$;

-- Claims up to p_max due processing refunds for p_lease_ms, counting the
-- attempt, oldest due first. Rows another claimer holds are skipped, so
-- any number of workers on any hosts claim disjoint refunds.
CREATE FUNCTION payd_refund_claim(p_now_ms bigint, p_lease_ms bigint, p_max int)
RETURNS TABLE (id text, payment_id text, order_id text, merchant_id text, amount bigint,
               currency text, channel text, payment_serial_no text, reason text, status text,
               refund_no text, channel_refund_id text, failure_code text,
               failure_message text, automatic boolean, attempts bigint, created_ms bigint,
               updated_ms bigint)
LANGUAGE sql AS $$
    WITH due AS (
        SELECT d.id, d.next_attempt_ms AS due_ms FROM refunds d
        WHERE d.status = 'processing' AND d.next_attempt_ms <= p_now_ms
        ORDER BY d.next_attempt_ms LIMIT p_max FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE refunds r SET next_attempt_ms = p_now_ms + p_lease_ms, attempts = r.attempts + 1
        FROM due WHERE r.id = due.id
        RETURNING r.*, due.due_ms)
    SELECT c.id, c.payment_id, c.order_id, c.merchant_id, c.amount, c.currency, c.channel,
           c.payment_serial_no, c.reason, c.status, c.refund_no, c.channel_refund_id,
           c.failure_code, c.failure_message, c.automatic, c.attempts, c.created_ms,
           c.updated_ms
    FROM claimed c
    ORDER BY c.due_ms, c.id
$$;

-- A refund's outcome, with the refund's amount, merchant, channel, order
-- and payment as stored. Succeeded: the totals count it as refunded, the
-- ledger moves the money back (the merchant pays the channel's clearing
-- account: a payment's transfer reversed) and a paid or partially refunded
-- order becomes refunded or partially refunded. Failed: its amount is
-- refundable again. rc 0, -8 (no such refund, or no longer processing: a
-- repeated outcome).
CREATE FUNCTION payd_refund_finish(p_id text, p_status text, p_channel_refund_id text,
                                   p_failure_code text, p_failure_message text,
                                   p_updated_ms bigint)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    home record;
    o_status text;
    t record;
    r record;
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
    UPDATE refunds f SET status = p_status,
                         channel_refund_id = CASE WHEN p_status = 'succeeded'
                                                  THEN p_channel_refund_id END,
                         failure_code = CASE WHEN p_status = 'failed' THEN p_failure_code END,
                         failure_message = CASE WHEN p_status = 'failed'
                                                THEN p_failure_message END,
                         updated_ms = p_updated_ms
    WHERE f.id = p_id AND f.status = 'processing'
    RETURNING f.amount, f.currency, f.merchant_id, f.channel INTO r;
    IF NOT FOUND THEN
        RETURN -8;
    END IF;
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
