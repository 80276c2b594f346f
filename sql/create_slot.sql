-- The connector's replication slot, created before anything may write.
-- Run by a superuser in orders_write after the write migrations (the
-- publication must exist before the slot starts decoding), by the local stack
-- (`stack` after `writer migrate`) and by compose's `slot-init`.
--
-- Why: the connector uses snapshot.mode=no_data and streams from its slot. If
-- the slot were created by Connect's first start, a command committed before
-- that start would never be published. With the slot here, WAL is kept from
-- this point, and Debezium, finding the slot and no stored offset, streams
-- from the slot's position: nothing committed after migration is lost.
\set ON_ERROR_STOP on
SELECT 'SELECT pg_create_logical_replication_slot(''outbox_slot'', ''pgoutput'')'
WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = 'outbox_slot') \gexec
