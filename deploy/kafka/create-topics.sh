#!/usr/bin/env bash
# Creates every limitstream topic with its partition count and configs. Idempotent
# (--if-not-exists): the one-shot `kafka-init` service of docker-compose.kafka.yml runs it on
# every `up`. On an existing topic it changes nothing; alter configs with kafka-configs.sh.
#
# Partitions: the inputs and outputs are co-partitioned (same count, keyed by user_id) so one
# worker owns all of a user's events; changing PARTITIONS later re-maps users to partitions and
# needs a planned migration. The labels topic has ONE partition: a single trainer learns every
# label in order. model-snapshots has one partition and is compacted: the latest snapshot per
# key is what a starting worker reads.
#
# Durability: replication factor 3, min.insync.replicas 2 (with acks=all a write survives the
# loss of any one broker and is refused rather than kept on a single copy), and no unclean leader
# election (an out-of-sync replica never becomes leader and silently drops acknowledged writes).
set -euo pipefail

BOOTSTRAP="${BOOTSTRAP:-kafka-1:19092,kafka-2:19092,kafka-3:19092}"
PARTITIONS="${PARTITIONS:-12}"
REPLICATION_FACTOR="${REPLICATION_FACTOR:-3}"
MIN_INSYNC_REPLICAS="${MIN_INSYNC_REPLICAS:-2}"
KAFKA_TOPICS="${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}"

DAY_MS=86400000

create() {
  local name="$1" partitions="$2"
  shift 2
  "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$name" \
    --partitions "$partitions" \
    --replication-factor "$REPLICATION_FACTOR" \
    --config min.insync.replicas="$MIN_INSYNC_REPLICAS" \
    --config unclean.leader.election.enable=false \
    "$@"
}

# Inputs (core banking, operators) and the internal re-keying topic: co-partitioned.
create transactions "$PARTITIONS" --config retention.ms=$((7 * DAY_MS))
create repayments "$PARTITIONS" --config retention.ms=$((7 * DAY_MS))
create account-events "$PARTITIONS" --config retention.ms=$((7 * DAY_MS))
create limit-commands "$PARTITIONS" --config retention.ms=$((30 * DAY_MS))
create limitstream-rekeyed "$PARTITIONS" --config retention.ms=$((7 * DAY_MS))

# Outputs: same partitioning as the inputs, so downstream consumers keep per-user order.
create limit-changes "$PARTITIONS" --config retention.ms=$((30 * DAY_MS))
create account-status "$PARTITIONS" --config retention.ms=$((30 * DAY_MS))
# The audit log of every decision: kept longer (archive it downstream for the legal period).
create decisions "$PARTITIONS" --config retention.ms=$((90 * DAY_MS))
create dead-letter "$PARTITIONS" --config retention.ms=$((30 * DAY_MS))

# Internal: one partition, one trainer.
create limitstream-labels 1 --config retention.ms=$((30 * DAY_MS))
# Internal, compacted: HMAC-signed model snapshots; a snapshot can exceed the 1 MiB default.
create model-snapshots 1 \
  --config cleanup.policy=compact \
  --config min.compaction.lag.ms=$((1 * DAY_MS)) \
  --config max.message.bytes=16777216

"$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --describe \
  --topics-with-overrides
