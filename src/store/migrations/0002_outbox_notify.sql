-- 0002_outbox_notify.sql - new queue messages wake the workers of every
-- instance at once: a statement that adds outbox rows notifies the channel
-- payd_outbox when its transaction commits (PostgreSQL sends one
-- notification per transaction for identical ones), and each instance's
-- store listens on it. Without it, an idle worker on another host would
-- find a new payment only at its next poll.

CREATE FUNCTION payd_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('payd_outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
FOR EACH STATEMENT EXECUTE FUNCTION payd_outbox_notify();
