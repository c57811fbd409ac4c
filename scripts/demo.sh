#!/usr/bin/env bash
# Quickstart, part 1: set up everything and run the pipeline end to end on the sample.
#   1. scripts/setup.sh (Python environment, JVM jars; idempotent)
#   2. start the local Kafka broker and create the topics
#   3. publish data/sample's payment and label events to Kafka (once)
#   4. land the payments topic in Parquet with a Spark streaming job, and print it
# Safe to run again: the broker is reused, the sample is published only into an empty
# topic, and the streaming job's checkpoint makes it land only what is new.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
.venv/bin/fraudstream kafka start
.venv/bin/fraudstream produce --data data/sample --if-empty
./spark-submit.sh ingest --topic payments
echo
echo "Done. The broker keeps running (stop it with: .venv/bin/fraudstream kafka stop)."
