#!/bin/sh
# Starts a Kafka Connect worker in distributed mode (the image of debezium/Dockerfile.connect).
#
# The worker file is the one both stacks run, /etc/connect/connect-distributed.properties
# (debezium/connect-distributed.properties), plus the lines that differ per deployment: the same
# keys the local stack appends (WorkerSettings in stack/src/connect.rs). A key is never set in both
# places (stack/tests/versions.rs), so no line here silently overrides the shared file.
#
# BOOTSTRAP_SERVERS (required), ADVERTISED_HOST (the name other workers reach this one's REST API
# by; default connect), REPLICATION_FACTOR of Connect's internal topics (default 1: one broker).
# The connector reads OUTBOX_PG_* through ${env:...}; they only pass through here.
set -eu
: "${BOOTSTRAP_SERVERS:?set BOOTSTRAP_SERVERS to the Kafka brokers}"
worker=/tmp/worker.properties

cat /etc/connect/connect-distributed.properties - > "$worker" <<EOF

# This deployment's own lines (debezium/connect-entrypoint.sh)
bootstrap.servers=${BOOTSTRAP_SERVERS}
listeners=http://0.0.0.0:8083
rest.advertised.host.name=${ADVERTISED_HOST:-connect}
rest.advertised.port=8083
plugin.path=/opt/connect/plugins
config.storage.replication.factor=${REPLICATION_FACTOR:-1}
offset.storage.replication.factor=${REPLICATION_FACTOR:-1}
status.storage.replication.factor=${REPLICATION_FACTOR:-1}
EOF

# The heap of the local stack's workers (stack/src/connect.rs).
exec java -Xmx512m -Dlog4j2.configurationFile=/etc/connect/log4j2.properties -cp '/opt/connect/libs/*' \
  org.apache.kafka.connect.cli.ConnectDistributed "$worker"
