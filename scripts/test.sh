#!/usr/bin/env bash
# Quickstart, part 2: set up everything and run the test suite.
# The tests start a Kafka broker of their own (in a temporary folder, on free ports) and
# stop it again, or use $KAFKA_BOOTSTRAP_SERVERS. Extra arguments go to pytest, e.g.
# -m "not kafka and not spark" for the tests that need neither a broker nor a JVM: the fast
# lane. Those tests share no service, so they run in two processes (pytest-xdist); every
# other selection runs in one, where the session's broker and Spark are started once.
set -euo pipefail
cd "$(dirname "$0")/.."

workers=()
previous=""
for arg in "$@"; do
  if [[ $previous == -m && $arg == *"not kafka"* && $arg == *"not spark"* ]]; then
    workers=(-n 2)
  fi
  previous=$arg
done

scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --config-file pyproject.toml
.venv/bin/python -m pytest "${workers[@]}" "$@"
