#!/usr/bin/env bash
# Resolve the JVM jars the project needs from Maven Central into jvm/jars/ (git-ignored):
#   jvm/jars/spark-kafka/   Spark's Kafka connector, passed to spark-submit with --jars
#   jvm/jars/kafka-broker/  an Apache Kafka broker, run by `fraudstream kafka start`
#   jvm/jars/kafka-connect/ Kafka Connect with Debezium's PostgreSQL connector (`fraudstream connect start`)
#   jvm/jars/s3a/           Hadoop's S3A connector with the AWS SDK bundle (s3a:// paths), on the class path
# Each set is described by jvm/<set>/pom.xml. Idempotent: a set whose pom has not
# changed since its last resolution is skipped, so a second run costs well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

if ! command -v mvn >/dev/null 2>&1; then
  echo "fetch-jars: Maven (mvn) is not installed; run scripts/setup.sh, which installs it." >&2
  exit 2
fi

for set in spark-kafka kafka-broker kafka-connect s3a; do
  pom="jvm/$set/pom.xml"
  out="jvm/jars/$set"
  stamp="$out/.pom.sha256"
  want=$(sha256sum "$pom" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    continue
  fi
  echo "fetch-jars: resolving $set from Maven Central ..."
  rm -rf "$out"
  log=$(mktemp)
  if ! mvn -B -f "$pom" "$DEPENDENCY_PLUGIN:copy-dependencies" \
      -DoutputDirectory="$PWD/$out" -DincludeScope=runtime >"$log" 2>&1; then
    grep -E "ERROR|Could not" "$log" | head -20 >&2
    echo "fetch-jars: resolving $set failed (full Maven log: $log)." >&2
    exit 1
  fi
  rm -f "$log"
  echo "$want" > "$stamp"
  echo "fetch-jars: $set: $(ls "$out"/*.jar | wc -l) jars in $out"
done
