"""``./spark-submit.sh``, run as a user runs it: the job list, a real job, a clear error."""

from __future__ import annotations

import json
import subprocess

import pytest

from fraudstream import config
from fraudstream.kafka import clients

from .helpers import job_env, train_args

SCRIPT = str(config.PROJECT_ROOT / "spark-submit.sh")


def _submit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=300, cwd="/", env=env
    )


def test_spark_submit_without_a_job_lists_the_jobs():
    result = _submit()
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "usage: ./spark-submit.sh [spark-submit options] JOB [job options]"
    jobs = {line.split()[0] for line in lines if line.startswith("  ")}
    assert jobs == {
        "card_states",
        "compact",
        "generate",
        "import",
        "ingest",
        "investigate",
        "labels",
        "monitor",
        "rebuild",
        "score",
        "train",
    }


def test_spark_submit_unknown_job_says_so():
    result = _submit("--master", "local[1]", "scroe")
    assert result.returncode != 0
    assert "no job named 'scroe' in jobs/." in result.stderr


@pytest.mark.spark  # the driver runs under spark-submit's JVM
def test_spark_submit_jobs_resolve_default_paths_in_the_checkout():
    # Under spark-submit the package is imported from a zip; defaults must still point
    # into the checkout, whatever the working directory.
    result = _submit("ingest", "--help")
    assert result.returncode == 0
    # argparse wraps help lines at spaces and hyphens: compare without white space.
    expected = f"(default: {config.PROJECT_ROOT}/data/lake/raw/TOPIC)"
    assert "".join(expected.split()) in "".join(result.stdout.split())


@pytest.mark.spark  # the driver runs under spark-submit's JVM
def test_spark_submit_runs_ingest_from_anywhere(kafka_bootstrap, fresh_topic, tmp_path):
    producer = clients.producer(kafka_bootstrap)
    for i in range(20):
        producer.send(fresh_topic, value=json.dumps({"i": i}).encode())
    producer.flush()
    producer.close()
    out, checkpoint = tmp_path / "out", tmp_path / "checkpoint"
    result = _submit(
        "--driver-memory",
        "1g",
        "ingest",
        "--brokers",
        kafka_bootstrap,
        "--topic",
        fresh_topic,
        "--out",
        str(out),
        "--checkpoint",
        str(checkpoint),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{out}: 20 records of topic {fresh_topic}" in result.stdout


@pytest.mark.spark  # the driver runs under spark-submit's JVM
def test_spark_submit_ingest_of_a_missing_topic_is_one_sentence(kafka_bootstrap, tmp_path):
    result = _submit("ingest", "--brokers", kafka_bootstrap, "--topic", "no-such-topic")
    # spark-submit runs the Python driver with its stderr merged into stdout.
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert (
        f"ingest: Topic(s) no-such-topic do not exist on {kafka_bootstrap}; create them "
        "(fraudstream kafka start creates the design's topics)." in output
    )
    assert "Traceback" not in output


@pytest.mark.spark  # the driver runs under spark-submit's JVM
def test_spark_submit_runs_train_smoke(tmp_path):
    from fraudstream import lake
    from fraudstream.data import simulate

    payments, labels = simulate.simulate(
        simulate.SimulationConfig(customers=200, terminals=400, days=50, seed=2)
    )
    lake.write_events(payments, tmp_path / "data")
    lake.write_labels(labels, tmp_path / "data")
    env = job_env(f"sqlite:///{tmp_path / 'mlflow.db'}")
    args = train_args(tmp_path / "data", "--param", "logistic.C=1.0", "--model-name", "submitted")
    result = _submit("train", *args, "--models-dir", str(tmp_path / "models"), env=env)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Registered submitted version 1: version 1 is the first champion." in result.stdout
    assert (tmp_path / "models" / "submitted" / "MLmodel").is_file()
