-- The projector's role: DML on every read table; the reader role: SELECT only.
-- Neither may change the schema; the migration history is the owner's.
-- Granted in the schema being migrated (public; `rebuild` while `projector
-- rebuild` builds a shadow copy): privileges move with a table to another schema.
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO orders_projector, orders_reader', current_schema());
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO orders_projector', current_schema());
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO orders_projector', current_schema());
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO orders_reader', current_schema());
    -- Tables later migrations create get the same grants.
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO orders_projector', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO orders_projector', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO orders_reader', current_schema());
END
$$;
REVOKE INSERT, UPDATE, DELETE ON refinery_schema_history FROM orders_projector;
