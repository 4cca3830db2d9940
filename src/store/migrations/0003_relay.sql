-- 0003_relay.sql - the outbox as the source of a message broker (NATS
-- JetStream, src/queue/nats.c). A relay claims rows not yet sent, publishes
-- each with the payment id as its message id (the broker drops a duplicate
-- it still remembers) and marks them sent. A row stays until its payment is
-- final, so that a sweeper can send again what the broker may have lost:
-- the broker is never the record, the database is.

ALTER TABLE outbox ADD COLUMN sent_ms bigint;
CREATE INDEX outbox_unsent ON outbox (available_ms) WHERE sent_ms IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_ms) WHERE sent_ms IS NOT NULL;

-- Claims up to p_max unsent rows for p_lease_ms (another relay skips them
-- meanwhile), with each payment's merchant.
CREATE FUNCTION payd_relay_claim(p_now_ms bigint, p_lease_ms bigint, p_max int)
RETURNS TABLE (msg_id bigint, msg_payment_id text, merchant_id text)
LANGUAGE sql AS $$
    WITH claimed AS (
        UPDATE outbox o SET available_ms = p_now_ms + p_lease_ms
        WHERE o.id IN (SELECT d.id FROM outbox d WHERE d.sent_ms IS NULL
                       AND d.available_ms <= p_now_ms
                       ORDER BY d.available_ms LIMIT p_max FOR UPDATE SKIP LOCKED)
        RETURNING o.id, o.payment_id)
    SELECT c.id, c.payment_id, p.merchant_id
    FROM claimed c JOIN payments p ON p.id = c.payment_id
    ORDER BY c.id
$$;

-- A payment that reaches its outcome needs no message any more.
CREATE FUNCTION payd_outbox_done() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM outbox WHERE payment_id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER payment_final AFTER UPDATE OF status ON payments
FOR EACH ROW WHEN (NEW.status <> 'processing') EXECUTE FUNCTION payd_outbox_done();
