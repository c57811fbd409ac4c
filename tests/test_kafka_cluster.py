"""A three-node Kafka cluster with SASL/SCRAM over TLS: a broker dies, nothing is lost.

Real processes throughout: three KRaft nodes started by ``fraudstream.ops.broker``, the
scoring job under ``./spark-submit.sh``, payments from ``fraudstream produce``; every
client connects through the SASL_SSL listeners with the cluster's properties file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from fraudstream import config, lake
from fraudstream.kafka import clients, propfile
from fraudstream.ops import broker as local_broker
from fraudstream.scoring import views

from .helpers import free_port, job_env, register, score_args, submit, wait_for

#: The cluster and kafka markers come from the kafka_cluster fixture; the jobs run under
#: spark-submit.sh, which no fixture says.
pytestmark = [pytest.mark.spark, pytest.mark.timeout(420)]

#: Ports of the test's own cluster, apart from a development cluster's (19092...).
TEST_PORTS = {"port": 19292, "secure_port": 19295, "controller_port": 19392}
#: Payments per second from the producer: the sample (6,148) takes about 30 s.
RATE = 200


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory):
    """Three nodes of the test's own, stopped at the end of the module."""
    cluster = local_broker.LocalCluster(home=tmp_path_factory.mktemp("cluster"), **TEST_PORTS)
    began = time.monotonic()
    local_broker.start_cluster(cluster)
    print(f"cluster of 3 nodes up in {time.monotonic() - began:.1f} s")
    yield cluster
    local_broker.stop_cluster(cluster)


@pytest.fixture()
def cluster_topics(kafka_cluster):
    """Fresh topics, three replicas each, two of which must acknowledge a write."""
    suffix = uuid.uuid4().hex[:8]
    names = {
        kind: f"{kind.replace('_', '-')}-{suffix}"
        for kind in ("payments", "labels", "alerts", "dlq", "rules", "rules_log")
    }
    local_broker.create_topics(
        kafka_cluster.bootstrap_servers,
        {name: {"min.insync.replicas": "2"} for name in names.values()},
        partitions=3,
        replication_factor=3,
        client_properties={},
    )
    return names


def _password(properties_file) -> str:
    return propfile.sasl_credentials(propfile.read_properties(properties_file))[1]


def _spark_ui(port: int, path: str) -> str:
    """A page of the Spark UI's REST API of the one application on ``port``, as text."""
    base = f"http://127.0.0.1:{port}/api/v1/applications"
    with urllib.request.urlopen(base, timeout=10) as response:
        app = json.load(response)[0]["id"]
    with urllib.request.urlopen(f"{base}/{app}/{path}", timeout=10) as response:
        return response.read().decode()


def _leader_of(cluster, topic: str) -> int:
    """The node leading the topic's partition 0: the one whose loss matters most."""
    admin = clients.admin(cluster.bootstrap_servers, {})
    try:
        return admin.describe_topics([topic])[0]["partitions"][0]["leader_id"]
    finally:
        admin.close()


def test_cluster_scores_every_payment_once_when_a_broker_dies(
    kafka_cluster, cluster_topics, mlflow_store, tmp_path, history
):
    register(history["dataset"], "fraudstream")
    properties = kafka_cluster.properties_file()
    password = _password(properties)
    servers = kafka_cluster.secure_bootstrap_servers
    topics = cluster_topics
    out, log, ui_port = tmp_path / "lake", tmp_path / "score.log", free_port()
    env = job_env(mlflow_store)
    env.pop(propfile.PROPERTIES_ENV, None)
    args = score_args(
        servers, topics, tmp_path,
        "--kafka-properties", str(properties), "--trigger-interval", "1 second",
    )  # fmt: skip
    job = submit("score", args, env, log, ["--conf", f"spark.ui.port={ui_port}"])
    producer = None

    def scored() -> int:
        return views.count_rows(out, views.SCORED)

    try:
        wait_for(lambda: "model: fraudstream" in log.read_text() or job.poll() is not None,
                  180, "the job to start", log)  # fmt: skip
        assert job.poll() is None, log.read_text()[-3000:]
        # The producer reads the same file through the environment variable.
        producer = subprocess.Popen(
            [
                sys.executable, "-m", "fraudstream.cli", "produce",
                "--data", str(config.SAMPLE_DIR), "--rate", str(RATE),
                "--brokers", servers, "--topic", topics["payments"],
                "--labels-topic", topics["labels"], "--state-dir", str(tmp_path / "produce"),
            ],
            cwd=config.PROJECT_ROOT, env=env | {propfile.PROPERTIES_ENV: str(properties)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        wait_for(lambda: scored() >= 1000 or job.poll() is not None, 120,
                  "a thousand payments scored", log)  # fmt: skip
        victim = _leader_of(kafka_cluster, topics["payments"])
        pid = local_broker.running_pid(kafka_cluster.brokers[victim - 1])
        os.kill(pid, signal.SIGKILL)
        killed_at = scored()
        # Meanwhile: the Spark UI shows neither the password nor the JAAS line.
        environment = _spark_ui(ui_port, "environment")
        plans = _spark_ui(ui_port, "sql?details=true&planDescription=true")
        said, _ = producer.communicate(timeout=120)
        assert producer.returncode == 0, said
        published = lake.read_events(config.SAMPLE_DIR).num_rows
        wait_for(lambda: scored() >= published or job.poll() is not None,
                  180, "every payment to be scored", log)  # fmt: skip
        assert job.poll() is None, log.read_text()[-3000:]
    finally:
        for process in (producer, job):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        status = job.wait(timeout=120)
    text = log.read_text()
    assert status == 0, text[-3000:]
    assert 1000 <= killed_at < published, "the broker died mid-stream"
    # The project's redaction setting reached the job (its value is itself redacted).
    assert '"spark.redaction.regex"' in environment
    for page in (environment, plans, text):
        assert password not in page
    expected = set(history["events"]["transaction_id"])
    for view in (views.SCORED, views.CARD_LOCATIONS):
        rows = views.read_view(out, view)
        assert len(rows) == len(expected) and set(rows["transaction_id"]) == expected, view


def test_wrong_password_is_one_sentence(kafka_cluster, tmp_path):
    """A command and a Spark job refuse a wrong password in one line, exit status 2."""
    properties = kafka_cluster.properties_file()
    password = _password(properties)
    wrong = tmp_path / "wrong.properties"
    wrong.write_text(properties.read_text().replace(password, "not-" + password[::-1]))
    servers = kafka_cluster.secure_bootstrap_servers
    env = {k: v for k, v in os.environ.items() if k != propfile.PROPERTIES_ENV}
    commands = {
        "produce": [sys.executable, "-m", "fraudstream.cli", "produce", "--brokers", servers,
                    "--kafka-properties", str(wrong), "--limit", "1"],
        "score": ["./spark-submit.sh", "score", "--brokers", servers,
                  "--kafka-properties", str(wrong), "--out", str(tmp_path / "lake")],
    }  # fmt: skip
    for name, command in commands.items():
        result = subprocess.run(
            command, cwd=config.PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        # spark-submit passes the driver's stderr on its stdout; the JVM adds a warning.
        said = result.stdout + result.stderr
        lines = [line for line in said.splitlines() if not line.startswith("WARNING: Using")]
        assert result.returncode == 2, (name, said)
        assert len(lines) == 1 and "refused the credentials" in lines[0], (name, said)
        assert password not in said
