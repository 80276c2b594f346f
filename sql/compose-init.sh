#!/usr/bin/env bash
# docker-entrypoint-initdb.d hook of the compose stack: the same bootstrap as the local stack.
set -euo pipefail
# Passwords go to psql through the environment (bootstrap.sql reads them with \getenv), never as arguments.
OUTBOX_OWNER_PASSWORD="$OWNER_DB_PASSWORD" \
OUTBOX_WRITER_PASSWORD="$WRITER_DB_PASSWORD" \
OUTBOX_PROJECTOR_PASSWORD="$PROJECTOR_DB_PASSWORD" \
OUTBOX_READER_PASSWORD="$READER_DB_PASSWORD" \
OUTBOX_OPERATOR_PASSWORD="$OPERATOR_DB_PASSWORD" \
OUTBOX_DEBEZIUM_PASSWORD="$DEBEZIUM_DB_PASSWORD" \
OUTBOX_INVENTORY_PASSWORD="$INVENTORY_DB_PASSWORD" \
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -f /sql/bootstrap.sql
