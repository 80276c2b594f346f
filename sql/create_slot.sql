-- A connector's replication slot, created before anything may write. Run as
-- the debezium role (its REPLICATION attribute is what creating a slot takes;
-- no superuser) after the database's migrations (the publication must exist
-- before the slot starts decoding), by the local stack (`stack` after the
-- migrations) and by compose's `slot-init`: in orders_write for the order
-- service's relay (slot outbox_slot, the default) and in orders_inventory
-- with `-v slot=inventory_slot` for the inventory's.
--
-- Why: the connector streams from this slot. Created here, it keeps the WAL
-- of every command from the first one on, whether or not Connect has run yet.
-- The connector uses snapshot.mode=when_needed: its first start (no stored
-- offset) also snapshots the outbox table before streaming from the slot; a
-- row that both carry is published twice and the consumers turn the copy
-- away (event id, aggregate version).
\set ON_ERROR_STOP on
\if :{?slot}
\else
\set slot outbox_slot
\endif
SELECT format('SELECT pg_create_logical_replication_slot(%L, ''pgoutput'')', :'slot')
WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = :'slot') \gexec
