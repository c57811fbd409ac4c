"""The jobs on a real Spark standalone cluster (a master and two 1-core workers on 127.0.0.1).

The module's fixture starts the cluster with ``fraudstream.ops.spark_cluster`` unless one
runs already, and stops what it started. The jobs go through ``./spark-submit.sh
--master spark://...``, which ships the packed Python environment to the executors.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fraudstream import config
from fraudstream.ops import spark_cluster as local_cluster
from fraudstream.scoring import views

from .helpers import (
    assert_features_equal_training,
    job_env,
    publish_sample,
    register,
    run_cli,
    score_args,
    submit,
    wait_for,
)

#: The executors' Python comes from the archive unpacked in the worker's scratch folder.
FROM_ARCHIVE = "/environment/bin/python"


@pytest.fixture(scope="module")
def spark_cluster():
    cluster = local_cluster.LocalCluster()
    started = local_cluster.start(cluster)
    yield cluster
    if any(new for _, new in started.values()):
        local_cluster.stop(cluster)


def _env(mlflow_store: str) -> dict:
    return job_env(mlflow_store, SPARK_LOCAL_IP="127.0.0.1")


def _finish(job: subprocess.Popen, log, timeout: float = 300) -> str:
    status = job.wait(timeout=max(1.0, timeout))
    said = log.read_text()
    assert status == 0, said[-3000:]
    return said


def test_spark_cluster_start_twice_is_harmless_and_a_busy_port_is_one_sentence(
    spark_cluster, tmp_path
):
    again = local_cluster.start(spark_cluster)
    assert list(again) == ["master", "worker-1", "worker-2"]
    assert not any(new for _, new in again.values())
    assert len(local_cluster.registered_workers(spark_cluster)) == 2

    status = run_cli("spark", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"{spark_cluster.master_url}: 2 workers alive, 2 cores." in status.stdout
    # Another cluster (its own home) on the same master port: refused, nothing started.
    other = run_cli("spark", "start", "--home", str(tmp_path / "other"))
    assert other.returncode == 2
    assert other.stderr == (
        f"fraudstream: Port {spark_cluster.master_port} on 127.0.0.1 is already in use by another "
        "program; stop it or choose other ports with --master-port, --master-ui-port and "
        "--worker-ui-port.\n"
    )
    assert not list((tmp_path / "other").glob("*.pid"))


def _train_args(report) -> list[str]:
    # The sample holds 21 days: one short fold, fixed parameters, as the training tests do.
    return [
        "--data", str(config.SAMPLE_DIR),
        "--models", "logistic,spark_gbt",
        "--folds", "1", "--train-days", "4", "--delay-days", "2", "--test-days", "4",
        "--k", "5",
        "--param", "logistic.C=1.0",
        "--param", "spark_gbt.maxDepth=3",
        "--param", "spark_gbt.maxIter=5",
        "--param", "spark_gbt.stepSize=0.3",
        "--no-register", "--report", str(report),
    ]  # fmt: skip


def test_train_on_the_cluster_equals_local(spark_cluster, mlflow_store, tmp_path):
    """Spark ML's GBT fits on the executors; its metrics equal a local run's."""
    jobs = {}
    for name, master in [("local", "local[2]"), ("cluster", spark_cluster.master_url)]:
        args = [*_train_args(tmp_path / f"{name}.json"), "--models-dir", str(tmp_path / name)]
        log = tmp_path / f"train-{name}.log"
        # Both at once: most of a short GBT fit is scheduling latency, not CPU.
        jobs[name] = (submit("train", args, _env(mlflow_store), log, ["--master", master]), log)
    said = {name: _finish(job, log) for name, (job, log) in jobs.items()}
    assert f"executors: Python {sys.version.split()[0]} from " in said["cluster"]
    assert FROM_ARCHIVE in said["cluster"] and "executors:" not in said["local"]
    local, remote = (json.loads((tmp_path / f"{n}.json").read_text()) for n in jobs)
    assert set(remote["models"]) == {"logistic", "spark_gbt"}
    for kind in remote["models"]:
        for metric, value in local["models"][kind]["mean"].items():
            assert remote["models"][kind]["mean"][metric] == pytest.approx(
                value, abs=1e-9, nan_ok=True
            )


@pytest.mark.timeout(900)
def test_score_on_the_cluster_equals_local(
    spark_cluster, kafka_bootstrap, topics, mlflow_store, tmp_path, history
):
    register(history["dataset"], "fraudstream")
    published = publish_sample(kafka_bootstrap, topics)
    jobs = {}
    for name, master in [("local", "local[2]"), ("cluster", spark_cluster.master_url)]:
        args = [
            *score_args(
                kafka_bootstrap, topics, tmp_path / name, "--max-offsets-per-trigger", "2000"
            ),
            "--available-now",
        ]
        log = tmp_path / f"score-{name}.log"
        jobs[name] = (submit("score", args, _env(mlflow_store), log, ["--master", master]), log)
    # Both at once on two cores, each starting cold: about 5 minutes on a loaded machine.
    deadline = time.time() + 720
    said = {name: _finish(job, log, deadline - time.time()) for name, (job, log) in jobs.items()}
    assert FROM_ARCHIVE in said["cluster"]

    frames = {
        name: {
            view: views.read_view(tmp_path / name / "lake", view)
            .sort_values("transaction_id")
            .reset_index(drop=True)
            for view in (views.SCORED, views.ALERTS)
        }
        for name in jobs
    }
    local, remote = frames["local"][views.SCORED], frames["cluster"][views.SCORED]
    assert len(remote) == published and remote["transaction_id"].is_unique
    assert remote["transaction_id"].tolist() == local["transaction_id"].tolist()
    assert_features_equal_training(remote, history["dataset"])
    np.testing.assert_allclose(remote["score"], local["score"], rtol=0, atol=1e-9)
    assert remote["alerted"].tolist() == local["alerted"].tolist()
    local_alerts, remote_alerts = frames["local"][views.ALERTS], frames["cluster"][views.ALERTS]
    assert len(remote_alerts) > 0
    assert remote_alerts["alert_id"].tolist() == local_alerts["alert_id"].tolist()
    reasons = [[list(r) for r in alerts["reasons"]] for alerts in (remote_alerts, local_alerts)]
    assert reasons[0] == reasons[1]


@pytest.mark.timeout(1200)
def test_score_on_the_cluster_keeps_scoring_when_a_worker_dies(
    spark_cluster, kafka_bootstrap, topics, mlflow_store, tmp_path, history
):
    """SIGKILL one worker mid-stream: the job goes on with the other; each payment once."""
    register(history["dataset"], "fraudstream")
    published = publish_sample(kafka_bootstrap, topics)
    out = tmp_path / "lake"
    args = score_args(kafka_bootstrap, topics, tmp_path, "--max-offsets-per-trigger", "300")
    args += ["--trigger-interval", "1 second"]
    log = tmp_path / "score.log"
    job = submit("score", args, _env(mlflow_store), log, ["--master", spark_cluster.master_url])
    victim = local_cluster.running_pid(spark_cluster, "worker-2")
    try:
        wait_for(
            lambda: views.count_rows(out, views.SCORED) >= 1500 or job.poll() is not None,
            # A cold job on a shared 2-core machine: its first micro-batch can take minutes.
            420,
            "the first micro-batches",
            log,
        )
        scored_before = views.count_rows(out, views.SCORED)
        assert scored_before < published, "the stream ended before the worker was killed"
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: len(local_cluster.registered_workers(spark_cluster)) == 1, 60, "the master", log
        )
        wait_for(
            lambda: views.count_rows(out, views.SCORED) >= published or job.poll() is not None,
            420,
            "the rest of the payments to be scored",
            log,
        )
    finally:
        job.send_signal(signal.SIGTERM)
        status = job.wait(timeout=120)
        # The next test (or the user) gets a whole cluster again: start restarts the dead one.
        restarted = local_cluster.start(spark_cluster)
    assert [name for name, (_, new) in restarted.items() if new] == ["worker-2"]
    assert len(local_cluster.registered_workers(spark_cluster)) == 2
    said = log.read_text()
    assert status == 0, said[-3000:]
    # Spark saw the executor go, and micro-batches went on after it.
    assert "Lost executor" in said and said.rindex("batch ") > said.index("Lost executor")
    assert "stopped; restart on the same --checkpoint to resume" in said
    scored = views.read_view(out, views.SCORED)
    assert len(scored) == published and scored["transaction_id"].is_unique
    assert_features_equal_training(scored, history["dataset"])
