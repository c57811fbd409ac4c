"""Prometheus metrics: the updates without Spark, and the score job scraped by a real Prometheus."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from fraudstream import config, lake, metrics
from fraudstream.data import produce
from fraudstream.scoring import views
from jobs import score as score_job

from .helpers import (
    busy_port,
    free_port,
    job_env,
    publish_sample,
    register,
    score_args,
    submit,
    wait_for,
)

PROMETHEUS = Path("/usr/bin/prometheus")


def _model(version: str) -> SimpleNamespace:
    return SimpleNamespace(name="fraudstream", version=version)


def _batch(scored: int, alerts: int, **other: int) -> dict[str, int]:
    counts = {"scored": scored, "alerts": alerts, "invalid": 0, "duplicates": 0, "late": 0}
    return counts | {"labels": 0, "held": 0} | other


def test_record_batch_counts_payments_decisions_dead_letters_and_models():
    score = metrics.ScoreMetrics()
    value = score.registry.get_sample_value
    score.record_batch(
        _batch(4, 2, invalid=1, late=2, labels=3, held=5),
        np.array(["approve", "review", "decline", "approve"], dtype=object),
        np.array([0.4, 1.0, 2.5, 3600.0]),
        1.5,
        {"champion": _model("3"), "challenger": None},
    )
    score.record_batch(
        _batch(1, 0, duplicates=1),
        np.array(["approve"], dtype=object),
        np.array([0.2]),
        0.2,
        {"champion": _model("4"), "challenger": _model("5")},
    )
    assert value("fraudstream_payments_scored_total") == 5
    assert value("fraudstream_alerts_total") == 2
    decisions = {d: value("fraudstream_decisions_total", {"decision": d}) for d in
                 ("approve", "review", "decline")}  # fmt: skip
    assert decisions == {"approve": 3, "review": 1, "decline": 1}
    reasons = {r: value("fraudstream_dead_letters_total", {"reason": r}) for r in
               ("invalid", "duplicate", "late")}  # fmt: skip
    assert reasons == {"invalid": 1, "duplicate": 1, "late": 2}
    assert value("fraudstream_labels_read_total") == 3
    assert value("fraudstream_held_payments") == 0
    assert value("fraudstream_batch_duration_seconds_count") == 2
    assert value("fraudstream_batch_duration_seconds_sum") == pytest.approx(1.7)
    assert value("fraudstream_batch_duration_seconds_bucket", {"le": "1.0"}) == 1
    assert value("fraudstream_event_latency_seconds_count") == 5
    assert value("fraudstream_event_latency_seconds_sum") == pytest.approx(3604.1)
    assert value("fraudstream_event_latency_seconds_bucket", {"le": "1"}) == 3
    assert value("fraudstream_event_latency_seconds_bucket", {"le": "3"}) == 4
    assert value("fraudstream_event_latency_seconds_bucket", {"le": "+Inf"}) == 5
    # The champion moved from 3 to 4: only the models scoring now are named.
    info = "fraudstream_model_info"
    assert value(info, {"name": "fraudstream", "version": "3", "role": "champion"}) is None
    assert value(info, {"name": "fraudstream", "version": "4", "role": "champion"}) == 1
    assert value(info, {"name": "fraudstream", "version": "5", "role": "challenger"}) == 1
    score.set_models({"champion": _model("4"), "challenger": None})
    assert value(info, {"name": "fraudstream", "version": "5", "role": "challenger"}) is None


def test_bulk_histogram_equals_prometheus_histogram_observed_one_by_one():
    rng = np.random.default_rng(0)
    bounds = (0.5, 1.0, 2.0, 10.0)
    # Values on the bounds too: Prometheus' buckets are "less than or equal".
    values = np.concatenate([rng.exponential(2.0, 500), np.array(bounds), [np.nan]])
    one_by_one = CollectorRegistry()
    reference = Histogram("latency_seconds", "x", buckets=bounds, registry=one_by_one)
    for v in values[~np.isnan(values)]:
        reference.observe(v)
    bulk = CollectorRegistry()
    metrics.BulkHistogram("latency_seconds", "x", bounds, registry=bulk).observe_many(values)
    for le in ("0.5", "1", "2", "10", "+Inf"):
        reference_le = le if le == "+Inf" else f"{float(le)}"
        assert bulk.get_sample_value("latency_seconds_bucket", {"le": le}) == (
            one_by_one.get_sample_value("latency_seconds_bucket", {"le": reference_le})
        )
    assert bulk.get_sample_value("latency_seconds_sum") == pytest.approx(
        one_by_one.get_sample_value("latency_seconds_sum")
    )


def _progress(name: str, latest: dict, end: dict, operators: list[dict]):
    """A query progress as pyspark's listener gets it (offsets as JSON text)."""
    source = SimpleNamespace(latestOffset=json.dumps(latest), endOffset=json.dumps(end))
    states = [SimpleNamespace(**operator) for operator in operators]
    return SimpleNamespace(name=name, sources=[source], stateOperators=states)


def _operator(name: str, rows: int, updated: int, memory: int, **custom) -> dict:
    return {
        "operatorName": name,
        "numRowsTotal": rows,
        "numRowsUpdated": updated,
        "memoryUsedBytes": memory,
        "customMetrics": custom,
    }


def test_record_progress_sets_consumer_lag_per_partition_and_state_size():
    score = metrics.ScoreMetrics("fraudstream-score")
    value = score.registry.get_sample_value
    latest = {"payments": {"0": 120, "1": 80}, "fraud-labels": {"0": 7}}
    end = {"payments": {"0": 100, "1": 80}, "fraud-labels": {"0": 7}}
    operators = [
        # As Spark 4.2 reports the card operator: no row count, its files' size.
        _operator("transformWithStateExec", 0, 150, 10_008, rocksdbSstFileSize=187_717),
        _operator("stateStoreSave", 5, 2, 24),
    ]
    score.record_progress(_progress("fraudstream-score", latest, end, operators))
    lag = "fraudstream_consumer_lag"
    assert value(lag, {"topic": "payments", "partition": "0"}) == 20
    assert value(lag, {"topic": "payments", "partition": "1"}) == 0
    assert value(lag, {"topic": "fraud-labels", "partition": "0"}) == 0
    assert value("fraudstream_state_rows") == 5
    assert value("fraudstream_state_rows_updated") == 152
    assert value("fraudstream_state_bytes") == 187_717
    assert value("fraudstream_state_memory_bytes") == 10_032
    # Another query's progress (a rebuild in the same session) is not ours.
    other = [_operator("stateStoreSave", 1, 1, 1)]
    score.record_progress(_progress("other", latest, {"payments": {"0": 0}}, other))
    assert value(lag, {"topic": "payments", "partition": "0"}) == 20
    assert value("fraudstream_state_rows") == 5


def test_dashboard_and_producer_metrics_have_their_own_registries():
    window = [1, 2, 3]
    board = metrics.DashboardMetrics(lambda: len(window))
    board.verdicts.labels(label="fraud").inc()
    producer = metrics.ProducerMetrics(target_rate=500)
    producer.watch(SimpleNamespace(failures=["payments: timed out", "payments: timed out"]))
    assert board.registry.get_sample_value("fraudstream_dashboard_window_alerts") == 3
    assert board.registry.get_sample_value(
        "fraudstream_dashboard_verdicts_total", {"label": "fraud"}
    )
    assert producer.registry.get_sample_value("fraudstream_producer_send_errors_total") == 2
    assert (
        producer.registry.get_sample_value("fraudstream_producer_target_payments_per_second") == 500
    )
    assert b"fraudstream_dashboard" not in generate_latest(producer.registry)


def test_serve_answers_on_metrics_and_a_busy_port_is_one_sentence():
    score = metrics.ScoreMetrics()
    score.payments_scored.inc(7)
    port = free_port()
    server = metrics.serve(score.registry, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        assert "fraudstream_payments_scored_total 7.0" in text
    finally:
        server.shutdown()
        server.server_close()
    with busy_port() as taken:
        with pytest.raises(metrics.MetricsError) as error:
            metrics.serve(score.registry, taken)
        assert str(error.value) == (
            f"Port {taken} on 127.0.0.1 is in use; choose another --metrics-port."
        )


def test_commands_refuse_a_busy_metrics_port_at_start(capsys):
    from fraudstream.cli import main as cli

    with busy_port() as taken:
        sentence = f"Port {taken} on 127.0.0.1 is in use; choose another --metrics-port."
        for command in (score_job.main, lambda argv: cli.main(["produce", *argv])):
            assert command(["--metrics-port", str(taken)]) == 2
            err = capsys.readouterr().err.strip()
            assert err.endswith(sentence) and "\n" not in err, err


def test_produce_run_counts_records_sent_by_topic(kafka_bootstrap, fresh_topic):
    events = lake.read_events(config.SAMPLE_DIR).slice(0, 300)
    plan = produce.make_plan("sample", events, None)
    counted = metrics.ProducerMetrics()
    produce.run(plan, kafka_bootstrap, payments_topic=fresh_topic, metrics=counted)
    value = counted.registry.get_sample_value
    assert value("fraudstream_producer_records_sent_total", {"topic": fresh_topic}) == 300
    assert value("fraudstream_producer_send_errors_total") == 0
    assert value("fraudstream_producer_payments_per_second") > 0


def _start_prometheus(folder: Path, target_port: int) -> tuple[subprocess.Popen, str]:
    """Debian's Prometheus, scraping ``127.0.0.1:target_port`` every second."""
    port = free_port()
    (folder / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: fraudstream-score\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
    )
    log = (folder / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, f"http://127.0.0.1:{port}"


def _query(prometheus: str, expression: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expression})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.loads(answer.read())
    except OSError:
        return []
    return body["data"]["result"] if body.get("status") == "success" else []


@pytest.mark.spark  # spark-submit.sh, not the spark fixture
@pytest.mark.skipif(not PROMETHEUS.exists(), reason="Debian's prometheus is not installed")
def test_prometheus_scrapes_what_the_score_job_scored(
    kafka_bootstrap, topics, mlflow_store, tmp_path, history
):
    register(history["dataset"], "fraudstream")
    sent = publish_sample(kafka_bootstrap, topics)
    metrics_port = free_port()
    args = [
        *score_args(kafka_bootstrap, topics, tmp_path),
        "--trigger-interval", "1 second",
        "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    log = tmp_path / "job.log"
    job = submit("score", args, job_env(mlflow_store), log)
    folder = tmp_path / "prometheus"
    folder.mkdir()
    prometheus, api = _start_prometheus(folder, metrics_port)
    out = tmp_path / "lake"
    try:
        wait_for(
            lambda: views.count_rows(out, views.SCORED) >= sent or job.poll() is not None,
            300,
            "the sample to be scored",
            log,
        )
        scored = views.count_rows(out, views.SCORED)
        assert scored == sent, log.read_text()[-3000:]

        def scraped() -> float | None:
            result = _query(api, "fraudstream_payments_scored_total")
            return float(result[0]["value"][1]) if result else None

        wait_for(lambda: scraped() == scored, 60, f"Prometheus to hold {scored:,}", log)
        # The query's progress reaches the listener after the batch has committed: the
        # lag of every payments partition (read to its end) and the state come a little
        # later than the processor's counts.
        lag_query = f'fraudstream_consumer_lag{{topic="{topics["payments"]}"}}'
        wait_for(lambda: len(_query(api, lag_query)) == 3, 60, "the consumer lag", log)
        assert {float(r["value"][1]) for r in _query(api, lag_query)} == {0.0}
        # The card operator's state: the cards of the sample written, and its files.
        for name in ("fraudstream_state_rows_updated", "fraudstream_state_bytes"):
            assert float(_query(api, name)[0]["value"][1]) > 0, name
        model = _query(api, 'fraudstream_model_info{role="champion"}')
        assert [r["metric"]["version"] for r in model] == ["1"]
        # Every payment scored has one decision.
        expression = "sum(fraudstream_decisions_total) - sum(fraudstream_payments_scored_total)"
        left = _query(api, expression)
        assert float(left[0]["value"][1]) == 0
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        job.send_signal(signal.SIGTERM)
        status = job.wait(timeout=120)
    assert status == 0, log.read_text()[-3000:]
