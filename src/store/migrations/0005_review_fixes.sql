-- 0005_review_fixes.sql - from a review of the cluster store and queue.
--
-- * A message the sweeper (src/queue/nats.c) sent again arrived as a first
--   delivery (the broker counts deliveries per message, and a resend is a
--   new message), so a worker would have charged without asking the
--   channel first, or moved the payment to a fallback channel although it
--   may have been charged already. The outbox now counts how many times a
--   row was published; the relay puts the count in the message and the
--   consumer adds it to the broker's delivery count.
-- * payd_payment_create: a payment written before a lost commit is
--   recognised first (its id), before its key or fence are looked at; and
--   the same Idempotency-Key used at once for another order, committed by
--   another writer, answers "reused key" (-7) instead of failing.

ALTER TABLE outbox ADD COLUMN publishes int NOT NULL DEFAULT 0;

DROP FUNCTION payd_relay_claim(bigint, bigint, int);
CREATE FUNCTION payd_relay_claim(p_now_ms bigint, p_lease_ms bigint, p_max int)
RETURNS TABLE (msg_id bigint, msg_payment_id text, merchant_id text, publishes int)
LANGUAGE sql AS $$
    WITH claimed AS (
        UPDATE outbox o SET available_ms = p_now_ms + p_lease_ms, publishes = o.publishes + 1
        WHERE o.id IN (SELECT d.id FROM outbox d WHERE d.sent_ms IS NULL
                       AND d.available_ms <= p_now_ms
                       ORDER BY d.available_ms LIMIT p_max FOR UPDATE SKIP LOCKED)
        RETURNING o.id, o.payment_id, o.publishes)
    SELECT c.id, c.payment_id, p.merchant_id, c.publishes
    FROM claimed c JOIN payments p ON p.id = c.payment_id
    ORDER BY c.id
$$;

CREATE OR REPLACE FUNCTION payd_payment_create(p_id text, p_order_id text, p_merchant_id text,
                                    p_amount bigint, p_currency text, p_channel text,
                                    p_method text, p_serial_no text, p_created_ms bigint,
                                    p_fence bigint, p_idem_key text, p_idem_fingerprint text,
                                    p_idem_status int, p_idem_body text)
RETURNS TABLE (rc int, fingerprint text, status int, body text)
LANGUAGE plpgsql AS $$
DECLARE
    f record;
    k record;
BEGIN
    -- This very payment, written before a lost commit: done.
    IF EXISTS (SELECT 1 FROM payments p WHERE p.id = p_id) THEN
        RETURN QUERY SELECT 0, NULL::text, NULL::int, NULL::text;
        RETURN;
    END IF;
    IF p_idem_key IS NOT NULL THEN
        SELECT i.fingerprint, i.status, i.body INTO k FROM idempotency_keys i
        WHERE i.merchant_id = p_merchant_id AND i.key = p_idem_key;
        IF FOUND THEN
            RETURN QUERY SELECT -7, k.fingerprint, k.status, k.body;
            RETURN;
        END IF;
    END IF;
    BEGIN
        SELECT * INTO f FROM payd_fence(p_order_id, p_merchant_id, p_fence);
        IF f.rc <> 0 THEN
            RAISE SQLSTATE 'PD001' USING MESSAGE = f.rc::text;
        END IF;
        -- The key again, now that the order is locked: a request with the
        -- same key that committed while this one waited for the lock is
        -- answered from its record, as if it had been seen first.
        IF p_idem_key IS NOT NULL THEN
            SELECT i.fingerprint, i.status, i.body INTO k FROM idempotency_keys i
            WHERE i.merchant_id = p_merchant_id AND i.key = p_idem_key;
            IF FOUND THEN
                RAISE SQLSTATE 'PD001' USING MESSAGE = '-7';
            END IF;
        END IF;
        IF f.o_status <> 'pending_payment' THEN
            RAISE SQLSTATE 'PD001' USING MESSAGE = '-4';
        END IF;
        IF f.o_amount <> p_amount OR f.o_currency <> p_currency THEN
            RAISE EXCEPTION 'payment % does not match its order''s amount', p_id;
        END IF;
        INSERT INTO payments (id, order_id, merchant_id, amount, currency, channel, method,
                              status, serial_no, created_ms, updated_ms)
        VALUES (p_id, p_order_id, p_merchant_id, p_amount, p_currency, p_channel, p_method,
                'processing', p_serial_no, p_created_ms, p_created_ms);
        INSERT INTO outbox (payment_id, available_ms, deliveries, created_ms)
        VALUES (p_id, p_created_ms, 0, p_created_ms);
        IF p_idem_key IS NOT NULL THEN
            INSERT INTO idempotency_keys (merchant_id, key, fingerprint, status, body, created_ms)
            VALUES (p_merchant_id, p_idem_key, p_idem_fingerprint, p_idem_status, p_idem_body,
                    p_created_ms);
        END IF;
        RETURN QUERY SELECT 0, NULL::text, NULL::int, NULL::text;
    EXCEPTION
        WHEN SQLSTATE 'PD001' THEN
            IF SQLERRM = '-7' THEN
                RETURN QUERY SELECT -7, k.fingerprint, k.status, k.body;
            ELSE
                RETURN QUERY SELECT SQLERRM::int, NULL::text, NULL::int, NULL::text;
            END IF;
        WHEN unique_violation THEN
            DECLARE
                c text;
            BEGIN
                GET STACKED DIAGNOSTICS c = CONSTRAINT_NAME;
                IF c = 'payments_one_processing' THEN
                    RETURN QUERY SELECT -5, NULL::text, NULL::int, NULL::text;
                ELSIF c = 'idempotency_keys_pkey' THEN
                    -- the same key on another order, committed meanwhile by
                    -- another writer: a reused key, answered from its record
                    SELECT i.fingerprint, i.status, i.body INTO k FROM idempotency_keys i
                    WHERE i.merchant_id = p_merchant_id AND i.key = p_idem_key;
                    RETURN QUERY SELECT -7, k.fingerprint, k.status, k.body;
                ELSE
                    RAISE; -- an id or serial number clash is a bug: fail loudly
                END IF;
            END;
    END;
END $$;
