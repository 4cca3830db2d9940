-- 0006_payment_create_plain.sql - payd_payment_create without an EXCEPTION
-- block: each call of the old one opened a subtransaction, the most
-- frequent write of all paying for it. Every refusal is now decided by a
-- plain check while the order's row is locked (no other writer can add a
-- processing payment to it meanwhile); the unique indexes stay as the
-- backstop, and a clash there (a bug) fails the batch, which then runs
-- without it. The same answers as before, in the same cases.

CREATE OR REPLACE FUNCTION payd_payment_create(p_id text, p_order_id text, p_merchant_id text,
                                               p_amount bigint, p_currency text, p_channel text,
                                               p_method text, p_serial_no text,
                                               p_created_ms bigint, p_fence bigint,
                                               p_idem_key text, p_idem_fingerprint text,
                                               p_idem_status int, p_idem_body text)
RETURNS TABLE (rc int, fingerprint text, status int, body text)
LANGUAGE plpgsql AS $$
DECLARE
    stored_fence bigint;
    o_status text;
    o_amount bigint;
    o_currency text;
    k record;
BEGIN
    -- This very payment, written before a lost commit: done.
    IF EXISTS (SELECT 1 FROM payments p WHERE p.id = p_id) THEN
        RETURN QUERY SELECT 0, NULL::text, NULL::int, NULL::text;
        RETURN;
    END IF;
    -- A key already answered is answered again, whatever else changed.
    IF p_idem_key IS NOT NULL THEN
        SELECT i.fingerprint, i.status, i.body INTO k FROM idempotency_keys i
        WHERE i.merchant_id = p_merchant_id AND i.key = p_idem_key;
        IF FOUND THEN
            RETURN QUERY SELECT -7, k.fingerprint, k.status, k.body;
            RETURN;
        END IF;
    END IF;
    -- The order's row, locked: payments for one order are decided one at a time.
    SELECT o.fence, o.status, o.amount, o.currency
    INTO stored_fence, o_status, o_amount, o_currency
    FROM orders o WHERE o.id = p_order_id AND o.merchant_id = p_merchant_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT -1, NULL::text, NULL::int, NULL::text;
        RETURN;
    END IF;
    -- The key, now that the order is locked: a request with the same key
    -- that committed while this one waited is answered from its record.
    IF p_idem_key IS NOT NULL THEN
        SELECT i.fingerprint, i.status, i.body INTO k FROM idempotency_keys i
        WHERE i.merchant_id = p_merchant_id AND i.key = p_idem_key;
        IF FOUND THEN
            RETURN QUERY SELECT -7, k.fingerprint, k.status, k.body;
            RETURN;
        END IF;
    END IF;
    IF stored_fence > p_fence THEN
        RETURN QUERY SELECT -6, NULL::text, NULL::int, NULL::text;
        RETURN;
    END IF;
    IF o_status <> 'pending_payment' THEN
        RETURN QUERY SELECT -4, NULL::text, NULL::int, NULL::text;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM payments p WHERE p.order_id = p_order_id
               AND p.status = 'processing') THEN
        RETURN QUERY SELECT -5, NULL::text, NULL::int, NULL::text;
        RETURN;
    END IF;
    IF o_amount <> p_amount OR o_currency <> p_currency THEN
        RAISE EXCEPTION 'payment % does not match its order''s amount', p_id;
    END IF;
    -- The key first: the same key used at once for another order and
    -- committed by another writer is a reused key, and nothing is written.
    IF p_idem_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body, created_ms)
        VALUES (p_merchant_id, p_idem_key, p_idem_fingerprint, p_idem_status, p_idem_body,
                p_created_ms)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            SELECT i.fingerprint, i.status, i.body INTO k FROM idempotency_keys i
            WHERE i.merchant_id = p_merchant_id AND i.key = p_idem_key;
            RETURN QUERY SELECT -7, k.fingerprint, k.status, k.body;
            RETURN;
        END IF;
    END IF;
    IF stored_fence < p_fence THEN
        UPDATE orders SET fence = p_fence WHERE id = p_order_id;
    END IF;
    INSERT INTO payments (id, order_id, merchant_id, amount, currency, channel, method,
                          status, serial_no, created_ms, updated_ms)
    VALUES (p_id, p_order_id, p_merchant_id, p_amount, p_currency, p_channel, p_method,
            'processing', p_serial_no, p_created_ms, p_created_ms);
    INSERT INTO outbox (payment_id, available_ms, deliveries, created_ms)
    VALUES (p_id, p_created_ms, 0, p_created_ms);
    RETURN QUERY SELECT 0, NULL::text, NULL::int, NULL::text;
END $$;
