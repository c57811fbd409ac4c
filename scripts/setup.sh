#!/usr/bin/env bash
# Set up everything fraudstream needs on a fresh machine, idempotently:
#   1. Java 17, Maven and PostgreSQL (Debian packages) if they are missing;
#   2. a virtual environment in .venv with the pinned Python packages (requirements.lock)
#      and fraudstream itself, editable, with its development tools;
#   3. the JVM jars (Spark's Kafka connector, the Kafka broker, Kafka Connect with Debezium,
#      Hadoop's S3A connector) from Maven Central, and the per-card operator compiled
#      against pyspark's own jars;
#   4. Chromium (Debian package) for the dashboard's browser tests, and Prometheus
#      (Debian package) for the metrics test, if missing and root.
# A second run only checks, and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# The JDK (not only the JRE): scripts/build-operator.sh compiles the per-card operator.
command -v javac >/dev/null 2>&1 || need_apt+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
# Debian's initdb is not on PATH: look where the package puts each version's programs.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: please install ${need_apt[*]} (a Java 17 JDK, Maven, PostgreSQL); this script installs them only as root on Debian." >&2
    exit 2
  fi
  echo "setup: installing ${need_apt[*]} ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The dashboard's tests drive Debian's chromium with Playwright; Playwright's own browser
# download is not used. Without it only those tests fail, so a non-root user is told, not stopped.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium (for the dashboard's browser tests) ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium is missing; install it for the dashboard's browser tests." >&2
  fi
fi

# The metrics test scrapes the score job with Debian's Prometheus server (/usr/bin/prometheus).
if [ ! -x /usr/bin/prometheus ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing prometheus (for the metrics test) ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
  else
    echo "setup: prometheus is missing; install Debian's prometheus for the metrics test." >&2
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv ..."
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.fraudstream-installed
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages (the first time builds pyspark; a few minutes) ..."
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c requirements.lock -e '.[dev]'
  echo "$want" > "$stamp"
fi

scripts/fetch-jars.sh
scripts/build-operator.sh
echo "setup: ready (Python $(.venv/bin/python -c 'import sys; print(sys.version.split()[0])'), pyspark $(.venv/bin/python -c 'import pyspark; print(pyspark.__version__)'))."
