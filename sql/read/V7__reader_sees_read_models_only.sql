-- People and dashboards (orders_reader) see the read models only: not the
-- inbox, positions, run tallies, version bookkeeping, dead letters or parked
-- events (those hold the raw bytes of records: names, e-mails, addresses).
-- Operators of the dead-letter commands get a role of their own
-- (orders_operator): they list, show, replay and discard dead letters, and a
-- replay applies through the projector's code, so it needs the same DML on
-- the read tables; no DDL, no migration history, and no Kafka access.
-- Granted in the schema being migrated, as V5 (a rebuild's shadow schema too).
DO $$
BEGIN
    EXECUTE format('REVOKE SELECT ON ALL TABLES IN SCHEMA %I FROM orders_reader', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE SELECT ON TABLES FROM orders_reader', current_schema());
    EXECUTE format('GRANT SELECT ON %1$I.order_view, %1$I.customer_summary, %1$I.product_sales_daily TO orders_reader',
                   current_schema());

    EXECUTE format('GRANT USAGE ON SCHEMA %I TO orders_operator', current_schema());
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO orders_operator', current_schema());
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO orders_operator', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO orders_operator', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO orders_operator', current_schema());
END
$$;
REVOKE INSERT, UPDATE, DELETE ON refinery_schema_history FROM orders_operator;
