-- The Event Router routes each outbox row to `outbox.event.<aggregate_type>`:
-- a row of an unknown type (a bug) would route to a topic that does not exist
-- (auto-creation is off) and stall the relay for every event behind it. Only
-- the known aggregate types may be written (outbox_events::AGGREGATES; a test
-- compares the two).
ALTER TABLE outbox
    ADD CONSTRAINT outbox_aggregate_type_known CHECK (aggregate_type IN ('order', 'customer'));
