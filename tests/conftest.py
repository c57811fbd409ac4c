"""Shared fixtures: one local SparkSession, a real Kafka broker and a local S3 server;
the markers they give the tests that use them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from fraudstream import objectstore, storage
from fraudstream.ops import broker as local_broker

from .helpers import (
    free_port,
    free_ports,
    read_sample_history,
    stop_submitted,
    use_mlflow_copy,
)

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

#: The markers a test gets from a fixture it uses, directly or through another fixture,
#: so that ``-m "not kafka and not spark"`` leaves out every test that needs a broker or
#: a JVM. A test that starts such a service itself (a subprocess, no fixture) carries
#: the marker explicitly; ``services_only_when_marked`` catches one that does not.
FIXTURE_MARKERS = {
    "spark": ("spark",),
    "kafka_bootstrap": ("kafka",),
    "s3_endpoint": ("s3",),
    "browser": ("browser",),
    "kafka_cluster": ("cluster", "kafka"),
    "spark_cluster": ("cluster", "spark"),
}

#: The markers under which a test may start a JVM (Spark, a broker, Connect) or reach
#: a broker.
SERVICE_MARKERS = {"kafka", "spark", "cluster"}

#: JAVA_HOME and the default broker for every other test: a JVM it starts, in the test
#: process or in a subprocess, fails at once naming the cause, and so does a client of
#: the default broker (rather than passing in the full suite, where a broker runs, and
#: failing or hanging in the fast lane).
NO_JAVA_HOME = "/nonexistent/java-of-a-test-not-marked-spark-or-kafka"
NO_BROKER = "127.0.0.1:1"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Mark each test with the markers of its fixtures, and a test named ``..._smoke``
    with ``smoke``, before ``-m`` selects by them."""
    for item in items:
        if item.originalname.endswith("_smoke"):
            item.add_marker("smoke")
        for fixture in item.fixturenames:
            for name in FIXTURE_MARKERS.get(fixture, ()):
                if item.get_closest_marker(name) is None:
                    item.add_marker(name)


@pytest.fixture(scope="session", autouse=True)
def one_openmp_thread():
    """One OpenMP thread for the native code of the test process (scikit-learn's
    histogram gradient boosting, for one).

    On two cores with other work running, OpenMP's threads wait on each other at every
    step: the train job's tests took up to twice as long with two as with one.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(autouse=True)
def no_job_outlives_its_test():
    """Stop the jobs a test started with ``helpers.submit`` and left running (it failed)."""
    yield
    left = stop_submitted()
    if left:
        print(f"stopped {len(left)} job(s) the test left running: pids {left}")


@pytest.fixture(autouse=True)
def services_only_when_marked(request, monkeypatch):
    """A test without a service marker cannot start Java or Spark, nor reach the default broker."""
    if SERVICE_MARKERS & {marker.name for marker in request.node.iter_markers()}:
        return
    monkeypatch.setenv("JAVA_HOME", NO_JAVA_HOME)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", NO_BROKER)
    if "pyspark.sql" in sys.modules:
        # A session of an earlier test would otherwise serve this one in the full suite.
        from pyspark.sql import SparkSession

        def refuse(*args, **kwargs):
            raise RuntimeError(
                f"{request.node.nodeid} starts Spark but is not marked spark: "
                "use the spark fixture, or mark it @pytest.mark.spark."
            )

        monkeypatch.setattr(SparkSession.Builder, "getOrCreate", refuse)
        monkeypatch.setattr(SparkSession, "getActiveSession", classmethod(lambda cls: None))


#: Credentials for the local S3 server, which accepts any.
S3_ACCESS_KEY = S3_SECRET_KEY = "testing"

#: One attempt per S3 call instead of S3A's default retries, under which a wrong endpoint
#: or a stopped server costs about five minutes per call before the error shows.
S3A_FAIL_FAST = {"fs.s3a.attempts.maximum": "1", "fs.s3a.retry.limit": "1"}

#: moto's server answers the "Expect: 100-continue" of S3A's asynchronous uploads (its
#: optimised copyFromLocalFile, which Spark's RocksDB state store uses for its files)
#: with a status S3A takes for an error; the plain stream copy goes through.
S3A_FOR_MOTO = {"fs.s3a.optimized.copy.from.local.enabled": "false"}

S3_SERVER_START_SECONDS = 30


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
def kafka_bootstrap(tmp_path_factory) -> str:
    """Bootstrap servers of a real broker: $KAFKA_BOOTSTRAP_SERVERS, else one of the session's own.

    The session's broker lives in a temporary folder and listens on free ports, so the
    project's local broker (``var/kafka``, port 9092), running or not, keeps its topics,
    groups and data as they were. Its address is exported as $KAFKA_BOOTSTRAP_SERVERS for
    the commands tests run in subprocesses; it is stopped at the end of the session.
    """
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        yield servers
        return
    port, controller_port = free_ports(2)
    broker = local_broker.LocalBroker(
        home=tmp_path_factory.mktemp("kafka"), port=port, controller_port=controller_port
    )
    local_broker.start(broker)
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
    try:
        yield broker.bootstrap_servers
    finally:
        os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        local_broker.stop(broker)


@pytest.fixture()
def fresh_topic(kafka_bootstrap):
    """A new, empty topic for one test, so tests never see each other's records."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    local_broker.create_topics(kafka_bootstrap, {name: {}}, partitions=3)
    return name


@pytest.fixture()
def topics(kafka_bootstrap):
    """Fresh payments, labels, alerts, dead-letter and rules topics for one test."""
    suffix = uuid.uuid4().hex[:8]
    names = {
        "payments": f"payments-{suffix}",
        "labels": f"labels-{suffix}",
        "alerts": f"alerts-{suffix}",
        "dlq": f"dlq-{suffix}",
        "rules": f"rules-{suffix}",
        "rules_log": f"rules-log-{suffix}",
    }
    local_broker.create_topics(kafka_bootstrap, {name: {} for name in names.values()}, partitions=3)
    return names


@pytest.fixture(scope="session")
def history() -> dict:
    """The committed sample: events, labels (pandas) and the training job's features."""
    return read_sample_history()


@pytest.fixture()
def lake(tmp_path):
    """An output root and a checkpoint root of the test's own."""
    return {"out": tmp_path / "lake", "checkpoints": tmp_path / "checkpoints"}


@pytest.fixture(scope="session")
def empty_mlflow_db(request, tmp_path_factory) -> Path:
    """An MLflow SQLite database with its tables and nothing else, made once.

    MLflow makes a new database's tables by running all its schema migrations, about
    2 s (up to 10 s on a busy machine); a copy of this one is a new store at once. With
    pytest's cache (CI turns it off: ``-p no:cacheprovider``) it is kept between runs,
    one per MLflow version, as the schema is MLflow's.
    """
    import mlflow
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-empty") / "mlflow.db"
    cache = getattr(request.config, "cache", None)
    kept = cache.mkdir("mlflow-empty") / f"mlflow-{mlflow.__version__}.db" if cache else None
    if kept is not None and kept.is_file():
        shutil.copyfile(kept, path)
        return path
    uri = f"sqlite:///{path}"
    # Opening the store creates its tables (and MLflow's Default experiment), as a
    # job's first call does.
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
    if kept is not None:
        # Whole or not at all, should another run read it meanwhile.
        partial = kept.with_name(f"{kept.name}.{os.getpid()}.partial")
        shutil.copyfile(path, partial)
        os.replace(partial, kept)
    return path


@pytest.fixture()
def mlflow_store(tmp_path, monkeypatch, empty_mlflow_db):
    """A fresh SQLite tracking store and registry, active for this test only."""
    return use_mlflow_copy(empty_mlflow_db, tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> str:
    """URL of a local S3 server (moto's ``moto_server``), started for the session.

    Its request log goes to a file (a pipe nobody reads would fill and stall it).
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("s3") / "moto_server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + S3_SERVER_START_SECONDS
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"moto_server exited at start: {log_path.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"moto_server did not answer at {endpoint}") from None
            time.sleep(0.2)
    yield endpoint
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@pytest.fixture(scope="session")
def s3_client(s3_endpoint):
    """A boto3 S3 client of the local server, to make buckets and look at what Spark wrote."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name=objectstore.DEFAULT_REGION,
    )


@pytest.fixture(scope="session")
def s3a_settings(s3_endpoint) -> dict[str, str]:
    """The library's S3A settings for the local server, failing fast on a wrong endpoint."""
    settings = objectstore.s3a_settings(
        s3_endpoint, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY
    )
    return {**settings, **S3A_FAIL_FAST, **S3A_FOR_MOTO}


@pytest.fixture()
def s3a_bucket(spark, s3_client, s3a_settings) -> str:
    """A new bucket on the local server, which the session's s3a:// paths reach.

    The settings are the bucket's own (``fs.s3a.bucket.NAME.*``), so nothing else that
    the shared session reads or writes is affected.
    """
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    objectstore.configure(spark, objectstore.for_bucket(s3a_settings, name))
    return name


@pytest.fixture(
    params=[
        "local",
        # Requested below with getfixturevalue, which the markers' hook does not see.
        pytest.param("hadoop-file", marks=pytest.mark.spark),
        pytest.param("s3a", marks=[pytest.mark.spark, pytest.mark.s3]),
    ]
)
def place(request, tmp_path):
    """One empty folder of each kind, as ``storage.files`` gives it: a local folder,
    Hadoop's own local file system (the rename path that HDFS takes too), and S3."""
    if request.param == "local":
        return storage.files(tmp_path / "root")
    spark = request.getfixturevalue("spark")
    if request.param == "hadoop-file":
        return storage.HadoopFiles((tmp_path / "root").as_uri(), spark)
    bucket = request.getfixturevalue("s3a_bucket")
    return storage.files(f"s3a://{bucket}/root", spark)
