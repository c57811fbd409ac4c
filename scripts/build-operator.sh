#!/usr/bin/env bash
# Compile the JVM per-card operator (jvm/card-operator/src) into
#   jvm/jars/card-operator/fraudstream-card-operator.jar   (git-ignored)
# against the very jars the installed pyspark ships (javac --release 17 -cp pyspark/jars/*),
# so it always matches the Spark it runs on; no Maven download of Spark's dependency tree.
# Idempotent: skipped when the sources and the pyspark version are those of the last build.
# Usage: scripts/build-operator.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
src=jvm/card-operator/src/main/java
out=jvm/jars/card-operator
jar="$out/fraudstream-card-operator.jar"
stamp="$out/.sources.sha256"

if ! command -v javac >/dev/null 2>&1; then
  echo "build-operator: javac is missing: install a JDK 17 (Debian: openjdk-17-jdk-headless)." >&2
  exit 2
fi
pyspark_home=$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
pyspark_version=$("$PYTHON" -c 'import pyspark; print(pyspark.__version__)')

want=$( (find "$src" -name '*.java' -print0 | sort -z | xargs -0 sha256sum; echo "pyspark $pyspark_version") \
  | sha256sum | cut -d' ' -f1)
if [ "${1:-}" != "--force" ] && [ -f "$jar" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "build-operator: compiling the card operator against pyspark $pyspark_version ..."
classes=$(mktemp -d)
trap 'rm -rf "$classes"' EXIT
find "$src" -name '*.java' -print0 | sort -z \
  | xargs -0 javac --release 17 -Xlint:unchecked -nowarn -encoding UTF-8 \
      -cp "$pyspark_home/jars/*" -d "$classes"
mkdir -p "$out"
jar --create --file "$jar.tmp" -C "$classes" .
mv "$jar.tmp" "$jar"
echo "$want" > "$stamp"
echo "build-operator: $jar"
