-- 0009_plpgsql_only.sql - every function in PL/pgSQL. PostgreSQL parses,
-- analyses and plans a LANGUAGE sql function that it cannot inline again
-- at every call, while PL/pgSQL keeps its plans for the connection. A
-- profile of the cluster under load (bench/RESULTS.md, 2026-11-29) put 16 %
-- of all CPU on the machine in fmgr_sql: payd_payment_finish, called for
-- every payment, and payd_event_add, called by every outcome. The same
-- bodies and answers as before; only the language changes.

CREATE OR REPLACE FUNCTION payd_event_add(p_object_id text, p_merchant_id text, p_type text,
                                          p_now_ms bigint)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (id, merchant_id, type, object_id, state, attempts, next_attempt_ms,
                        created_ms, updated_ms)
    SELECT 'evt_' || p_object_id, w.merchant_id, p_type, p_object_id, 'pending', 0, p_now_ms,
           p_now_ms, p_now_ms
    FROM webhooks w WHERE w.merchant_id = p_merchant_id
    ON CONFLICT DO NOTHING;
END $$;

CREATE OR REPLACE FUNCTION payd_payment_finish(p_id text, p_order_id text, p_merchant_id text,
                                               p_status text, p_txn_id text,
                                               p_failure_code text, p_failure_message text,
                                               p_updated_ms bigint, p_fence bigint,
                                               p_late_refund_id text, p_late_refund_no text,
                                               p_late_reason text,
                                               OUT rc int, OUT late_refund boolean)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT o.rc, o.late INTO rc, late_refund
    FROM payd_payment_outcome(p_id, p_order_id, p_merchant_id, p_status, p_txn_id,
                              p_failure_code, p_failure_message, p_updated_ms, p_fence,
                              p_late_refund_id, p_late_refund_no, p_late_reason,
                              NULL, NULL, NULL) o;
END $$;

CREATE OR REPLACE FUNCTION payd_refund_finish(p_id text, p_status text,
                                              p_channel_refund_id text, p_failure_code text,
                                              p_failure_message text, p_updated_ms bigint)
RETURNS int
LANGUAGE plpgsql AS $$
BEGIN
    RETURN payd_refund_outcome(p_id, p_status, p_channel_refund_id, p_failure_code,
                               p_failure_message, p_updated_ms, NULL, NULL, NULL);
END $$;

-- The claims return columns named like table columns: the queries say
-- which they mean by their aliases, and a bare name is the column.
CREATE OR REPLACE FUNCTION payd_outbox_claim(p_now_ms bigint, p_lease_ms bigint, p_max int)
RETURNS TABLE (msg_id bigint, msg_payment_id text, msg_deliveries bigint, id text,
               order_id text, merchant_id text, amount bigint, currency text, channel text,
               method text, status text, serial_no text, channel_txn_id text,
               failure_code text, failure_message text, created_ms bigint, updated_ms bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH claimed AS (
        UPDATE outbox o SET available_ms = p_now_ms + p_lease_ms, deliveries = o.deliveries + 1
        WHERE o.id IN (SELECT d.id FROM outbox d WHERE d.available_ms <= p_now_ms
                       ORDER BY d.available_ms LIMIT p_max FOR UPDATE SKIP LOCKED)
        RETURNING o.id, o.payment_id, o.deliveries)
    SELECT c.id, c.payment_id, c.deliveries, p.id, p.order_id, p.merchant_id, p.amount,
           p.currency, p.channel, p.method, p.status, p.serial_no, p.channel_txn_id,
           p.failure_code, p.failure_message, p.created_ms, p.updated_ms
    FROM claimed c LEFT JOIN payments p ON p.id = c.payment_id
    ORDER BY c.id;
END $$;

CREATE OR REPLACE FUNCTION payd_refund_claim(p_now_ms bigint, p_lease_ms bigint, p_max int)
RETURNS TABLE (id text, payment_id text, order_id text, merchant_id text, amount bigint,
               currency text, channel text, payment_serial_no text, reason text, status text,
               refund_no text, channel_refund_id text, failure_code text,
               failure_message text, automatic boolean, attempts bigint, created_ms bigint,
               updated_ms bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
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
    ORDER BY c.due_ms, c.id;
END $$;

CREATE OR REPLACE FUNCTION payd_event_claim(p_now_ms bigint, p_lease_ms bigint, p_max int)
RETURNS TABLE (id text, merchant_id text, type text, object_id text, attempts bigint,
               created_ms bigint, has_endpoint boolean, url text, secret text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
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
    ORDER BY c.due_ms, c.id;
END $$;
