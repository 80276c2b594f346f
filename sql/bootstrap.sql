-- Cluster-level bootstrap, run once by a superuser with psql, before any migration:
--   psql -v owner_password=... -v writer_password=... -v projector_password=... \
--        -v reader_password=... -v debezium_password=... -f sql/bootstrap.sql
-- Roles and databases live outside any one database, so migrations cannot own them.
-- The local stack (stack/) and docker compose (sql/compose-init.sh) both run this file.
--
-- One role per job (least privilege; the grants on tables are in the migrations):
--   orders_owner      owns both databases and every object; runs the migrations. No service uses it.
--   orders_writer     the writer: DML on the write model, the outbox and idempotency keys; no read database.
--   orders_projector  the projector: DML on the read tables; no write database (it consumes whatever is
--                     on the topics, so it must not be able to touch the source of truth).
--   orders_reader     people and dashboards: SELECT on the read database only.
--   debezium          REPLICATION, SELECT on the outbox (plus its heartbeat table); nothing else.
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE orders_owner LOGIN PASSWORD %L', :'owner_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_owner') \gexec
SELECT format('CREATE ROLE orders_writer LOGIN PASSWORD %L', :'writer_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_writer') \gexec
SELECT format('CREATE ROLE orders_projector LOGIN PASSWORD %L', :'projector_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_projector') \gexec
SELECT format('CREATE ROLE orders_reader LOGIN PASSWORD %L', :'reader_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_reader') \gexec
SELECT format('CREATE ROLE debezium LOGIN REPLICATION PASSWORD %L', :'debezium_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'debezium') \gexec

SELECT 'CREATE DATABASE orders_write OWNER orders_owner'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orders_write') \gexec
SELECT 'CREATE DATABASE orders_read OWNER orders_owner'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orders_read') \gexec

-- Who may connect where: nobody by default (PUBLIC), then each role its database.
REVOKE ALL ON DATABASE orders_write FROM PUBLIC;
REVOKE ALL ON DATABASE orders_read FROM PUBLIC;
GRANT CONNECT ON DATABASE orders_write TO orders_writer, debezium;
GRANT CONNECT ON DATABASE orders_read TO orders_projector, orders_reader;
