-- The connector's replication slot, created before anything may write.
-- Run as the debezium role (its REPLICATION attribute is what creating a slot
-- takes; no superuser) in orders_write after the write migrations (the
-- publication must exist before the slot starts decoding), by the local stack
-- (`stack` after `writer migrate`) and by compose's `slot-init`.
--
-- Why: the connector streams from this slot. Created here, it keeps the WAL
-- of every command from the first one on, whether or not Connect has run yet.
-- The connector uses snapshot.mode=when_needed: its first start (no stored
-- offset) also snapshots the outbox table before streaming from the slot; a
-- row that both carry is published twice and the projector turns the copy
-- away (event id, aggregate version).
\set ON_ERROR_STOP on
SELECT 'SELECT pg_create_logical_replication_slot(''outbox_slot'', ''pgoutput'')'
WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = 'outbox_slot') \gexec
