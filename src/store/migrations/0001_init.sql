-- 0001_init.sql - payd's schema on PostgreSQL: the same tables, constraints
-- and invariants as the embedded SQLite store (src/store/sqlite.c).
--
-- Every write is one call of a function below, so that a whole batch of
-- writes travels to the server in one round trip (libpq pipeline mode) and
-- each write is undone alone when it refuses (a function's EXCEPTION block
-- is a subtransaction). Each function is idempotent by the ids its caller
-- chose: run again after a connection was lost in the middle of a commit,
-- it finds its own earlier write and answers as if it had just made it, so
-- a retried batch neither loses nor doubles anything.
--
-- Return codes are those of enum store_rc in src/store/store.h.

CREATE TABLE merchants (
    id          text PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    key_hash    text NOT NULL UNIQUE,
    created_ms  bigint NOT NULL
);

CREATE TABLE orders (
    id                 text PRIMARY KEY,
    merchant_id        text NOT NULL REFERENCES merchants(id),
    merchant_order_no  text NOT NULL,
    amount             bigint NOT NULL CHECK (amount BETWEEN 1 AND 1000000000000000),
    currency           text NOT NULL CHECK (length(currency) = 3),
    description        text,
    status             text NOT NULL CHECK (status IN ('pending_payment', 'paid', 'closed',
                                                        'partially_refunded', 'refunded')),
    fence              bigint NOT NULL DEFAULT 0,
    created_ms         bigint NOT NULL,
    updated_ms         bigint NOT NULL,
    UNIQUE (merchant_id, merchant_order_no)
);

CREATE TABLE payments (
    id               text PRIMARY KEY,
    order_id         text NOT NULL REFERENCES orders(id),
    merchant_id      text NOT NULL,
    amount           bigint NOT NULL CHECK (amount > 0),
    currency         text NOT NULL,
    channel          text NOT NULL,
    method           text NOT NULL,
    status           text NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed')),
    serial_no        text NOT NULL UNIQUE,
    channel_txn_id   text,
    failure_code     text,
    failure_message  text,
    created_ms       bigint NOT NULL,
    updated_ms       bigint NOT NULL
);
CREATE INDEX payments_by_order ON payments (order_id, created_ms);
-- What must never happen, whatever the code above does: two succeeded
-- payments for one order (a double charge), or two in progress.
CREATE UNIQUE INDEX payments_one_succeeded ON payments (order_id) WHERE status = 'succeeded';
CREATE UNIQUE INDEX payments_one_processing ON payments (order_id) WHERE status = 'processing';

CREATE TABLE outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id    text NOT NULL REFERENCES payments(id),
    available_ms  bigint NOT NULL,
    deliveries    bigint NOT NULL DEFAULT 0,
    created_ms    bigint NOT NULL
);
CREATE INDEX outbox_due ON outbox (available_ms);

CREATE TABLE idempotency_keys (
    merchant_id  text NOT NULL,
    key          text NOT NULL,
    fingerprint  text NOT NULL,
    status       integer NOT NULL,
    body         text NOT NULL,
    created_ms   bigint NOT NULL,
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_ms);

CREATE TABLE ledger_entries (
    transfer_id  text NOT NULL,
    account      text NOT NULL,
    amount       bigint NOT NULL,
    currency     text NOT NULL,
    created_ms   bigint NOT NULL,
    PRIMARY KEY (transfer_id, account)
);
CREATE INDEX ledger_by_account ON ledger_entries (account, currency);

-- New order. rc 0: created (or created by this same call before a lost
-- commit: the id is ours); 1: the merchant order number exists under
-- another id, whose row comes back for the caller to compare.
CREATE FUNCTION payd_order_create(p_id text, p_merchant_id text, p_no text, p_amount bigint,
                                  p_currency text, p_description text, p_created_ms bigint)
RETURNS TABLE (rc int, id text, merchant_id text, merchant_order_no text, amount bigint,
               currency text, description text, status text, created_ms bigint)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO orders AS o (id, merchant_id, merchant_order_no, amount, currency, description,
                             status, fence, created_ms, updated_ms)
    VALUES (p_id, p_merchant_id, p_no, p_amount, p_currency, p_description, 'pending_payment',
            0, p_created_ms, p_created_ms)
    ON CONFLICT DO NOTHING;
    RETURN QUERY
        SELECT CASE WHEN o.id = p_id THEN 0 ELSE 1 END, o.id, o.merchant_id,
               o.merchant_order_no, o.amount, o.currency, o.description, o.status, o.created_ms
        FROM orders o WHERE o.merchant_id = p_merchant_id AND o.merchant_order_no = p_no;
END $$;

-- Locks the order's row, checks the caller's fencing token against the
-- newest one the order has seen, and records it. rc 0, -1 (no such order),
-- -6 (a newer holder wrote it).
CREATE FUNCTION payd_fence(p_order_id text, p_merchant_id text, p_fence bigint,
                           OUT rc int, OUT o_status text, OUT o_amount bigint,
                           OUT o_currency text)
LANGUAGE plpgsql AS $$
DECLARE
    stored bigint;
BEGIN
    SELECT o.fence, o.status, o.amount, o.currency INTO stored, o_status, o_amount, o_currency
    FROM orders o WHERE o.id = p_order_id AND o.merchant_id = p_merchant_id FOR UPDATE;
    IF NOT FOUND THEN
        rc := -1;
    ELSIF stored > p_fence THEN
        rc := -6;
    ELSE
        IF stored < p_fence THEN
            UPDATE orders SET fence = p_fence WHERE id = p_order_id;
        END IF;
        rc := 0;
    END IF;
END $$;

-- New payment, its queue message and its idempotency record, together.
-- rc 0, -1, -4 (order not payable), -5 (one in progress), -6, -7 (the key
-- is recorded: its fingerprint, status and body come back).
CREATE FUNCTION payd_payment_create(p_id text, p_order_id text, p_merchant_id text,
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
        IF EXISTS (SELECT 1 FROM payments p WHERE p.id = p_id) THEN
            RETURN QUERY SELECT 0, NULL::text, NULL::int, NULL::text; -- ours, before a lost commit
            RETURN;
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
                ELSE
                    RAISE; -- an id or serial number clash is a bug: fail loudly
                END IF;
            END;
    END;
END $$;

-- A payment's outcome. On success the order turns paid and the ledger gets
-- its two entries, in the same transaction. rc 0, -1, -4 (the order was
-- paid by another payment), -6, -8 (this payment is already final: a
-- repeated outcome).
CREATE FUNCTION payd_payment_finish(p_id text, p_order_id text, p_merchant_id text,
                                    p_status text, p_txn_id text, p_failure_code text,
                                    p_failure_message text, p_updated_ms bigint,
                                    p_fence bigint, p_channel text, p_amount bigint,
                                    p_currency text)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    f record;
    current text;
BEGIN
    SELECT * INTO f FROM payd_fence(p_order_id, p_merchant_id, p_fence);
    IF f.rc <> 0 THEN
        RETURN f.rc;
    END IF;
    SELECT p.status INTO current FROM payments p WHERE p.id = p_id AND p.order_id = p_order_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    IF current <> 'processing' THEN
        RETURN -8;
    END IF;
    IF p_status = 'succeeded' THEN
        IF f.o_status <> 'pending_payment' THEN
            RETURN -4;
        END IF;
        UPDATE payments SET status = 'succeeded', channel_txn_id = p_txn_id,
                            updated_ms = p_updated_ms
        WHERE id = p_id;
        UPDATE orders SET status = 'paid', updated_ms = p_updated_ms WHERE id = p_order_id;
        -- Double entry: the channel's clearing account pays the merchant.
        INSERT INTO ledger_entries (transfer_id, account, amount, currency, created_ms)
        VALUES (p_id, 'clearing:' || p_channel, -p_amount, p_currency, p_updated_ms),
               (p_id, 'merchant:' || p_merchant_id, p_amount, p_currency, p_updated_ms);
    ELSE
        UPDATE payments SET status = 'failed', failure_code = p_failure_code,
                            failure_message = p_failure_message, updated_ms = p_updated_ms
        WHERE id = p_id;
    END IF;
    RETURN 0;
END $$;

-- A processing payment never sent to p_from moves to p_to (its breaker was
-- open). rc 0, -1, -6, -8 (final, or no longer on p_from).
CREATE FUNCTION payd_payment_reroute(p_id text, p_order_id text, p_merchant_id text,
                                     p_from text, p_to text, p_fence bigint, p_updated_ms bigint)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    f record;
BEGIN
    SELECT * INTO f FROM payd_fence(p_order_id, p_merchant_id, p_fence);
    IF f.rc <> 0 THEN
        RETURN f.rc;
    END IF;
    UPDATE payments SET channel = p_to, updated_ms = p_updated_ms
    WHERE id = p_id AND channel = p_from AND status = 'processing';
    IF NOT FOUND THEN
        RETURN -8;
    END IF;
    RETURN 0;
END $$;

-- Claims up to p_max due queue messages for p_lease_ms, counting the
-- delivery, with each message's payment. Rows another claimer holds are
-- skipped, so any number of workers on any hosts claim disjoint messages.
CREATE FUNCTION payd_outbox_claim(p_now_ms bigint, p_lease_ms bigint, p_max int)
RETURNS TABLE (msg_id bigint, msg_payment_id text, msg_deliveries bigint, id text,
               order_id text, merchant_id text, amount bigint, currency text, channel text,
               method text, status text, serial_no text, channel_txn_id text,
               failure_code text, failure_message text, created_ms bigint, updated_ms bigint)
LANGUAGE sql AS $$
    WITH claimed AS (
        UPDATE outbox o SET available_ms = p_now_ms + p_lease_ms, deliveries = o.deliveries + 1
        WHERE o.id IN (SELECT d.id FROM outbox d WHERE d.available_ms <= p_now_ms
                       ORDER BY d.available_ms LIMIT p_max FOR UPDATE SKIP LOCKED)
        RETURNING o.id, o.payment_id, o.deliveries)
    SELECT c.id, c.payment_id, c.deliveries, p.id, p.order_id, p.merchant_id, p.amount,
           p.currency, p.channel, p.method, p.status, p.serial_no, p.channel_txn_id,
           p.failure_code, p.failure_message, p.created_ms, p.updated_ms
    FROM claimed c LEFT JOIN payments p ON p.id = c.payment_id
    ORDER BY c.id
$$;

-- New merchant. rc 0 (or this same merchant, added before a lost commit),
-- -10 (the name or key is taken).
CREATE FUNCTION payd_merchant_add(p_id text, p_name text, p_key_hash text, p_created_ms bigint)
RETURNS int
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO merchants (id, name, key_hash, created_ms)
    VALUES (p_id, p_name, p_key_hash, p_created_ms)
    ON CONFLICT DO NOTHING;
    IF FOUND OR EXISTS (SELECT 1 FROM merchants m WHERE m.id = p_id AND m.name = p_name) THEN
        RETURN 0;
    END IF;
    RETURN -10;
END $$;
