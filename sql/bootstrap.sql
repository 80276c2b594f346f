-- Cluster-level bootstrap, run once by a superuser with psql, before any migration:
--   psql -v app_password=... -v debezium_password=... -f sql/bootstrap.sql
-- Roles and databases live outside any one database, so migrations cannot own them.
-- The local stack (stack/) and docker compose (sql/compose-init.sh) both run this file.
\set ON_ERROR_STOP on

-- The services' role: owns both databases and everything the migrations create.
SELECT format('CREATE ROLE orders_app LOGIN PASSWORD %L', :'app_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_app') \gexec

-- Debezium's role: may stream the WAL and read what it publishes, nothing else.
-- The migrations grant it SELECT on the outbox and the heartbeat table.
SELECT format('CREATE ROLE debezium LOGIN REPLICATION PASSWORD %L', :'debezium_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'debezium') \gexec

SELECT 'CREATE DATABASE orders_write OWNER orders_app'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orders_write') \gexec

SELECT 'CREATE DATABASE orders_read OWNER orders_app'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orders_read') \gexec
