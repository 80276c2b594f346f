-- The projector's role: DML on every read table; the reader role: SELECT only.
-- Neither may change the schema; the migration history is the owner's.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO orders_projector;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO orders_projector;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO orders_reader;
REVOKE INSERT, UPDATE, DELETE ON refinery_schema_history FROM orders_projector;
-- Tables later migrations create get the same grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO orders_projector;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO orders_projector;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO orders_reader;
