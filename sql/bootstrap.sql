-- Cluster-level bootstrap, run once by a superuser with psql (15 or newer), before any migration:
--   OUTBOX_OWNER_PASSWORD=... OUTBOX_WRITER_PASSWORD=... OUTBOX_PROJECTOR_PASSWORD=... \
--   OUTBOX_READER_PASSWORD=... OUTBOX_OPERATOR_PASSWORD=... OUTBOX_DEBEZIUM_PASSWORD=... \
--   OUTBOX_INVENTORY_PASSWORD=... psql -f sql/bootstrap.sql
-- The passwords come from the environment (\getenv), never from psql's arguments: a
-- process's arguments are visible to every local user (ps), its environment is not.
-- Roles and databases live outside any one database, so migrations cannot own them.
-- The local stack (stack/) and docker compose (sql/compose-init.sh) both run this file.
--
-- One role per job (least privilege; the grants on tables are in the migrations):
--   orders_owner      owns the three databases and every object; runs the migrations. No service uses it.
--   orders_writer     the writer: DML on the write model, the outbox and idempotency keys; no read database.
--   orders_projector  the projector: DML on the read tables; no write database (it consumes whatever is
--                     on the topics, so it must not be able to touch the source of truth).
--   orders_reader     people and dashboards: SELECT on the read models only (not the inbox, positions,
--                     dead letters or parked events, which hold raw records).
--   orders_operator   people running the dead-letter commands (list, show, replay, discard): the
--                     projector's DML on the read database, under a login of their own.
--   orders_inventory  the inventory service: DML on the inventory database (stock, reservations, its
--                     outbox, its inbox); no other database.
--   debezium          REPLICATION, SELECT on both outboxes (plus their heartbeat tables); nothing else.
\set ON_ERROR_STOP on

\getenv owner_password OUTBOX_OWNER_PASSWORD
\getenv writer_password OUTBOX_WRITER_PASSWORD
\getenv projector_password OUTBOX_PROJECTOR_PASSWORD
\getenv reader_password OUTBOX_READER_PASSWORD
\getenv operator_password OUTBOX_OPERATOR_PASSWORD
\getenv debezium_password OUTBOX_DEBEZIUM_PASSWORD
\getenv inventory_password OUTBOX_INVENTORY_PASSWORD
-- An unset variable would leave :'name' unexpanded (a syntax error): stop with a clear message instead.
\if :{?owner_password} \else
DO $$BEGIN RAISE EXCEPTION 'OUTBOX_OWNER_PASSWORD is not set: see the head of sql/bootstrap.sql'; END$$;
\endif
\if :{?writer_password} \else
DO $$BEGIN RAISE EXCEPTION 'OUTBOX_WRITER_PASSWORD is not set: see the head of sql/bootstrap.sql'; END$$;
\endif
\if :{?projector_password} \else
DO $$BEGIN RAISE EXCEPTION 'OUTBOX_PROJECTOR_PASSWORD is not set: see the head of sql/bootstrap.sql'; END$$;
\endif
\if :{?reader_password} \else
DO $$BEGIN RAISE EXCEPTION 'OUTBOX_READER_PASSWORD is not set: see the head of sql/bootstrap.sql'; END$$;
\endif
\if :{?operator_password} \else
DO $$BEGIN RAISE EXCEPTION 'OUTBOX_OPERATOR_PASSWORD is not set: see the head of sql/bootstrap.sql'; END$$;
\endif
\if :{?debezium_password} \else
DO $$BEGIN RAISE EXCEPTION 'OUTBOX_DEBEZIUM_PASSWORD is not set: see the head of sql/bootstrap.sql'; END$$;
\endif
\if :{?inventory_password} \else
DO $$BEGIN RAISE EXCEPTION 'OUTBOX_INVENTORY_PASSWORD is not set: see the head of sql/bootstrap.sql'; END$$;
\endif

SELECT format('CREATE ROLE orders_owner LOGIN PASSWORD %L', :'owner_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_owner') \gexec
SELECT format('CREATE ROLE orders_writer LOGIN PASSWORD %L', :'writer_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_writer') \gexec
SELECT format('CREATE ROLE orders_projector LOGIN PASSWORD %L', :'projector_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_projector') \gexec
SELECT format('CREATE ROLE orders_reader LOGIN PASSWORD %L', :'reader_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_reader') \gexec
SELECT format('CREATE ROLE orders_operator LOGIN PASSWORD %L', :'operator_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_operator') \gexec
SELECT format('CREATE ROLE debezium LOGIN REPLICATION PASSWORD %L', :'debezium_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'debezium') \gexec
SELECT format('CREATE ROLE orders_inventory LOGIN PASSWORD %L', :'inventory_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_inventory') \gexec

SELECT 'CREATE DATABASE orders_write OWNER orders_owner'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orders_write') \gexec
SELECT 'CREATE DATABASE orders_read OWNER orders_owner'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orders_read') \gexec
SELECT 'CREATE DATABASE orders_inventory OWNER orders_owner'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orders_inventory') \gexec

-- Who may connect where: nobody by default (PUBLIC), then each role its database.
REVOKE ALL ON DATABASE orders_write FROM PUBLIC;
REVOKE ALL ON DATABASE orders_read FROM PUBLIC;
REVOKE ALL ON DATABASE orders_inventory FROM PUBLIC;
GRANT CONNECT ON DATABASE orders_write TO orders_writer, debezium;
GRANT CONNECT ON DATABASE orders_read TO orders_projector, orders_reader, orders_operator;
GRANT CONNECT ON DATABASE orders_inventory TO orders_inventory, debezium;
