#!/bin/bash
# Starts the compose stack's Kafka node (image apache/kafka) as the local stack starts its nodes
# (stack/src/kafka.rs): server.properties from the KAFKA_* variables, the storage formatted once
# with the cluster's SASL/SCRAM users, then the broker.
#
# Why not the image's own start script: it formats the storage without users, and a KRaft cluster
# takes SCRAM users before its first start only from `kafka-storage format --add-scram`; without
# them no client could log in to create any.
#
# KAFKA_A_B=v becomes a.b=v, as the image does it: `___` stands for `-`, `__` for `_`.
# CLUSTER_ID (required). KAFKA_BROKER_PASSWORD, KAFKA_ADMIN_PASSWORD, KAFKA_CONNECT_PASSWORD,
# KAFKA_PROJECTOR_PASSWORD, KAFKA_INVENTORY_PASSWORD and KAFKA_REACTOR_PASSWORD (required): the
# users broker, admin, connect, projector, inventory and reactor (the only
# KAFKA_*_PASSWORD variables, which are not settings).
set -euo pipefail
: "${CLUSTER_ID:?set CLUSTER_ID}"
# The files below hold passwords: this user's only.
umask 077
config=/tmp/server.properties
home=${KAFKA_HOME:-/opt/kafka}
users=(broker admin connect projector inventory reactor)

: >"$config"
while IFS='=' read -r name value; do
  case "$name" in
    # Not settings: the passwords, and the variables of Kafka's own scripts.
    KAFKA_*_PASSWORD | KAFKA_HOME | KAFKA_VERSION | KAFKA_*_OPTS | KAFKA_JMX_* | KAFKA_LOG4J_* | KAFKA_TOOLS_*) continue ;;
    KAFKA_*) ;;
    *) continue ;;
  esac
  key=${name#KAFKA_}
  key=${key,,}
  key=${key//___/-}
  key=${key//__/$'\x01'}
  key=${key//_/.}
  key=${key//$'\x01'/_}
  printf '%s=%s\n' "$key" "$value" >>"$config"
done < <(env)

log_dirs=$(sed -n 's/^log\.dirs=//p' "$config")
if [ ! -f "${log_dirs%%,*}/meta.properties" ]; then
  # The users' passwords go in a private argument file that java expands, not on a command line.
  args=/tmp/format.args
  {
    echo kafka.tools.StorageTool
    echo format
    echo --ignore-formatted
    echo "--cluster-id=$CLUSTER_ID"
    echo --config
    echo "$config"
    for user in "${users[@]}"; do
      var="KAFKA_${user^^}_PASSWORD"
      : "${!var:?set $var}"
      echo --add-scram
      echo "\"SCRAM-SHA-512=[name=$user,password=${!var}]\""
    done
  } >"$args"
  # Its output lists each user's salted keys: not for the log.
  java -Xmx256m -cp "$home/libs/*" "@$args" >/dev/null
  rm -f "$args"
fi

# The admin's login for the health check and for kafka-init (tools' --command-config).
printf '%s\n' 'security.protocol=SASL_PLAINTEXT' 'sasl.mechanism=SCRAM-SHA-512' \
  "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"${KAFKA_ADMIN_PASSWORD:?set KAFKA_ADMIN_PASSWORD}\";" \
  >/tmp/admin-client.properties

exec "$home/bin/kafka-server-start.sh" "$config"
