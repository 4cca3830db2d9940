-- 0004_outbox_by_payment.sql - measured under load on the local cluster
-- (pg_stat_activity sampled during bench/cluster.sh):
--
-- * The trigger of 0003 that deletes a final payment's outbox rows looked
--   them up by payment_id with no index: a scan of the outbox per outcome,
--   the most frequent statement seen running.
-- * NOTIFY takes one database-wide lock at commit, so every batch of new
--   payments waited for every other at COMMIT (wait event Lock:object, a
--   fifth of the samples). The store now notifies by itself, outside the
--   batch, at most every few milliseconds (src/store/postgres.c); the
--   trigger of 0002 goes.

CREATE INDEX outbox_by_payment ON outbox (payment_id);

DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION payd_outbox_notify();
