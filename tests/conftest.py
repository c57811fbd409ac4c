"""Shared fixtures: one local SparkSession and a real Kafka broker for the whole run."""

from __future__ import annotations

import os
import uuid

import pytest

from fraudstream import broker as local_broker
from fraudstream import kafka_io

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="session")
def spark():
    """One small local session: two cores, few shuffle partitions, no UI."""
    from pyspark.sql import SparkSession

    from fraudstream.spark import get_session

    session = get_session("fraudstream-tests", master="local[2]")
    session.conf.set("spark.sql.shuffle.partitions", "2")
    yield session
    session.stop()
    SparkSession.builder._options = {}


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of a real broker: the one running, else the project's local one.

    A broker this fixture starts is stopped at the end of the session; one that was
    already running is left as it was.
    """
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        yield servers
        return
    broker = local_broker.LocalBroker()
    if local_broker.port_in_use(broker.host, broker.port):
        # A broker is already serving the default port (the demo's, or one from another
        # checkout): use it, and leave it running.
        kafka_io.require_topics(broker.bootstrap_servers, [])
        yield broker.bootstrap_servers
        return
    pid, started = local_broker.start(broker)
    yield broker.bootstrap_servers
    if started:
        local_broker.stop(broker)


@pytest.fixture()
def fresh_topic(kafka_bootstrap):
    """A new, empty topic for one test, so tests never see each other's records."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    local_broker.create_topics(kafka_bootstrap, {name: {}}, partitions=3)
    return name


@pytest.fixture()
def topics(kafka_bootstrap):
    """Fresh payments, labels, alerts and dead-letter topics for one test."""
    suffix = uuid.uuid4().hex[:8]
    names = {
        "payments": f"payments-{suffix}",
        "labels": f"labels-{suffix}",
        "alerts": f"alerts-{suffix}",
        "dlq": f"dlq-{suffix}",
    }
    local_broker.create_topics(kafka_bootstrap, {name: {} for name in names.values()}, partitions=3)
    return names


@pytest.fixture()
def lake(tmp_path):
    """An output root and a checkpoint root of the test's own."""
    return {"out": tmp_path / "lake", "checkpoints": tmp_path / "checkpoints"}


@pytest.fixture()
def mlflow_store(tmp_path, monkeypatch):
    """A fresh SQLite tracking store and registry, active for this test only.

    MLflow keeps the active experiment in process-wide state; selecting one in this
    store keeps a test from writing to an experiment of another test's store.
    """
    from fraudstream import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.use_experiment("fraudstream-test")
    return uri
