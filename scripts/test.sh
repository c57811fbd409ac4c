#!/usr/bin/env bash
# Quickstart, part 2: set up everything and run the test suite.
# The tests start the local Kafka broker themselves if none is running (and stop it
# again), or use $KAFKA_BOOTSTRAP_SERVERS. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --config-file pyproject.toml
.venv/bin/python -m pytest "$@"
