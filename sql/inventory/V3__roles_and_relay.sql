-- Who may do what in the inventory database (sql/bootstrap.sql creates the
-- roles), and what its relay reads.

-- Debezium's second connector upserts here every heartbeat.interval.ms so its
-- slot's confirmed LSN advances while the outbox is idle.
CREATE TABLE debezium_heartbeat (
    id      integer PRIMARY KEY,
    beat_at timestamptz NOT NULL
);

-- The inventory's relay: its own publication and slot (inventory_slot,
-- sql/create_slot.sql), its own connector (debezium/inventory-connector.json).
-- Deletes (outbox retention) are not events.
CREATE PUBLICATION inventory_outbox_publication FOR TABLE outbox, debezium_heartbeat
    WITH (publish = 'insert, update');
GRANT SELECT ON outbox TO debezium;
GRANT SELECT, INSERT, UPDATE ON debezium_heartbeat TO debezium;

-- The service: rows, never the schema; the migration history is the owner's.
GRANT SELECT, INSERT, UPDATE, DELETE ON stock, reservations, stock_movements, outbox,
    inbox, aggregate_versions, parked_events, dead_letters, consumer_positions, consumer_runs
    TO orders_inventory;
GRANT USAGE, SELECT ON SEQUENCE stock_movements_id_seq, dead_letters_id_seq TO orders_inventory;
-- `inventory run` checks that every migration of its build is applied.
GRANT SELECT ON refinery_schema_history TO orders_inventory;
