#!/bin/sh
# Starts a Kafka Connect worker in distributed mode (the image of debezium/Dockerfile.connect).
#
# The worker file is the one both stacks run, /etc/connect/connect-distributed.properties
# (debezium/connect-distributed.properties), plus the lines that differ per deployment: the same
# keys the local stack appends (WorkerSettings in stack/src/connect.rs). A key is never set in both
# places (stack/tests/versions.rs), so no line here silently overrides the shared file.
#
# BOOTSTRAP_SERVERS (required), ADVERTISED_HOST (the name other workers reach this one's REST API
# by; default connect), REPLICATION_FACTOR of Connect's internal topics (default 1: one broker),
# KAFKA_CONNECT_PASSWORD (required: the Kafka user `connect`, SASL/SCRAM-SHA-512, for the worker
# and each of its clients), CONNECT_REST_PASSWORD (required: the REST API's user `admin`).
# The connector reads OUTBOX_PG_* through ${env:...}; they only pass through here.
set -eu
: "${BOOTSTRAP_SERVERS:?set BOOTSTRAP_SERVERS to the Kafka brokers}"
: "${KAFKA_CONNECT_PASSWORD:?set KAFKA_CONNECT_PASSWORD, the Kafka user connect}"
: "${CONNECT_REST_PASSWORD:?set CONNECT_REST_PASSWORD, the REST API user admin}"
# The files below hold passwords: this user's only.
umask 077
worker=/tmp/worker.properties
jaas='org.apache.kafka.common.security.scram.ScramLoginModule required username="connect" password="'"$KAFKA_CONNECT_PASSWORD"'";'

# The REST API's users and the JAAS section naming them (BasicAuthSecurityRestExtension).
printf 'admin: %s\n' "$CONNECT_REST_PASSWORD" > /tmp/rest-users.properties
printf '%s\n' 'KafkaConnect {' \
  '  org.apache.kafka.connect.rest.basic.auth.extension.PropertyFileLoginModule required' \
  '  file="/tmp/rest-users.properties";' '};' > /tmp/rest-jaas.conf

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
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=${jaas}
producer.security.protocol=SASL_PLAINTEXT
producer.sasl.mechanism=SCRAM-SHA-512
producer.sasl.jaas.config=${jaas}
consumer.security.protocol=SASL_PLAINTEXT
consumer.sasl.mechanism=SCRAM-SHA-512
consumer.sasl.jaas.config=${jaas}
admin.security.protocol=SASL_PLAINTEXT
admin.sasl.mechanism=SCRAM-SHA-512
admin.sasl.jaas.config=${jaas}
EOF

# The heap of the local stack's workers (stack/src/connect.rs).
exec java -Xmx512m -Dlog4j2.configurationFile=/etc/connect/log4j2.properties \
  -Djava.security.auth.login.config=/tmp/rest-jaas.conf -cp '/opt/connect/libs/*' \
  org.apache.kafka.connect.cli.ConnectDistributed "$worker"
