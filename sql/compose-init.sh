#!/usr/bin/env bash
# docker-entrypoint-initdb.d hook of the compose stack: the same bootstrap as the local stack.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_password="$OWNER_DB_PASSWORD" \
  -v writer_password="$WRITER_DB_PASSWORD" \
  -v projector_password="$PROJECTOR_DB_PASSWORD" \
  -v reader_password="$READER_DB_PASSWORD" \
  -v debezium_password="$DEBEZIUM_DB_PASSWORD" \
  -f /sql/bootstrap.sql
