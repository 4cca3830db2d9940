-- 0010_relay_claim_is_the_mark.sql - the relay writes each outbox row once.
-- Before, a claim leased rows for a few seconds and a second statement
-- marked them sent after the broker acknowledged them; that mark waited
-- for the row locks of the workers' outcomes, which delete the same rows,
-- and held its own against them (150 ms a statement under load). Now the
-- claim itself makes the row due again: after p_first_lease_ms the first
-- time (a relay that died between claim and publish delays the payment no
-- longer than that), after p_lease_ms (the sweep) later on. A row the
-- broker did not take is released by the relay: due at once.

DROP INDEX outbox_unsent;
DROP INDEX outbox_sent;
ALTER TABLE outbox DROP COLUMN sent_ms;

DROP FUNCTION payd_relay_claim(bigint, bigint, int);
CREATE FUNCTION payd_relay_claim(p_now_ms bigint, p_first_lease_ms bigint, p_lease_ms bigint,
                                 p_max int)
RETURNS TABLE (msg_id bigint, msg_payment_id text, merchant_id text, publishes int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH claimed AS (
        UPDATE outbox o
        SET available_ms = p_now_ms + CASE WHEN o.publishes = 0 THEN p_first_lease_ms
                                          ELSE p_lease_ms END,
            publishes = o.publishes + 1
        WHERE o.id IN (SELECT d.id FROM outbox d WHERE d.available_ms <= p_now_ms
                       ORDER BY d.available_ms LIMIT p_max FOR UPDATE SKIP LOCKED)
        RETURNING o.id, o.payment_id, o.publishes)
    SELECT c.id, c.payment_id, p.merchant_id, c.publishes
    FROM claimed c JOIN payments p ON p.id = c.payment_id
    ORDER BY c.id;
END $$;
