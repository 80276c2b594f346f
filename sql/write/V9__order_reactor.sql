-- The order reactor (`writer react`, the order service's consumer of the
-- inventory's replies) runs as the writer's role: it is the order service,
-- confirming and rejecting orders through the same rules and outbox. V8 gave
-- this database the consumer core's tables (sql/consumer/core.sql); the
-- writer's role gets what the core does with them, and nothing more.
GRANT SELECT, INSERT, UPDATE, DELETE ON inbox, aggregate_versions, parked_events, dead_letters,
    consumer_positions, consumer_runs TO orders_writer;
GRANT USAGE, SELECT ON SEQUENCE dead_letters_id_seq TO orders_writer;

-- Why the inventory could not serve a rejected order.
ALTER TABLE orders ADD COLUMN reject_reason text;

-- `writer react` checks that every migration of its build is applied.
GRANT SELECT ON refinery_schema_history TO orders_writer;
