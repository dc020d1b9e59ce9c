#!/bin/sh
# Start the compose stack's Kafka broker (KRaft, broker and controller in one process): format
# the storage on the first start, then run it on all interfaces, advertised to clients as
# $KAFKA_ADVERTISED_HOST:9092 (default kafka, the compose service's name).  The controller stays
# on loopback.  The JVM options are the embedded broker's (broker.jvm, tool.jvm).
# shellcheck disable=SC2046  # $(cat *.jvm): one JVM option per line, word splitting intended
set -eu
home=/opt/kafka
data=/var/lib/kafka/data
classpath="$home/libs/*"
if [ ! -f "$data/meta.properties" ]; then
  cluster_id=$(java $(cat "$home/tool.jvm") -cp "$classpath" kafka.tools.StorageTool random-uuid)
  java $(cat "$home/tool.jvm") -cp "$classpath" kafka.tools.StorageTool format \
    --cluster-id "$cluster_id" --config "$home/server.properties" --ignore-formatted
fi
exec java $(cat "$home/broker.jvm") -cp "$classpath" kafka.Kafka "$home/server.properties" \
  --override "listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093" \
  --override "advertised.listeners=PLAINTEXT://${KAFKA_ADVERTISED_HOST:-kafka}:9092"
