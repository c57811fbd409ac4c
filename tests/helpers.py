"""What several test modules share: the sample history, a small fitted model, the score
job's arguments and process, free ports and waiting for a condition, and a scored view
with a shadow challenger, its label store and registry."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.ensemble import RandomForestClassifier

from fraudstream import config, features, lake, schemas
from fraudstream.data import label_store, simulate
from fraudstream.features import DAY_MS
from fraudstream.ml import drift, model, training
from fraudstream.scoring import parse, query, views
from fraudstream.scoring.model import LoadedModel

#: The toy model's threshold: low enough that the sample raises a few dozen alerts.
THRESHOLD = 0.3

#: The requirements of the models the tests log, as the training job gives them.
MODEL_REQUIREMENTS = model.requirements()


def read_sample_history() -> dict:
    """The committed sample: events, labels (pandas) and the training job's features."""
    events = lake.read_events(config.SAMPLE_DIR).to_pandas()
    labels = lake.read_labels(config.SAMPLE_DIR).to_pandas()
    dataset = training.build_dataset(events[features.EVENT_COLUMNS], labels, 7)
    return {"events": events, "labels": labels, "dataset": dataset}


def long_history(customers: int = 150, days: int = 45, seed: int = 7) -> dict:
    """A simulated history longer than the card windows (30 days), so that state expires.

    The committed sample spans 21 days: in it, no payment ever leaves a card's window.
    """
    payments, labels = simulate.simulate(
        simulate.SimulationConfig(
            customers=customers, terminals=2 * customers, days=days, seed=seed
        )
    )
    events = payments.to_pandas()
    dataset = training.build_dataset(events[features.EVENT_COLUMNS], labels.to_pandas(), 7)
    return {
        "events": events,
        "labels": labels.to_pandas(),
        "dataset": dataset,
        "tables": {"events": payments, "labels": labels},
    }


def fit(dataset: pd.DataFrame, seed: int = 0, n_estimators: int = 30) -> model.FraudScorer:
    columns = features.FEATURE_COLUMNS
    estimator = RandomForestClassifier(
        n_estimators=n_estimators, max_depth=8, random_state=seed, n_jobs=1
    ).fit(dataset[columns], dataset["is_fraud"])
    return model.FraudScorer(estimator, columns)


def toy_model(dataset: pd.DataFrame) -> LoadedModel:
    """A model fitted on the sample itself, in memory (tests of logic, not of quality)."""
    columns = features.FEATURE_COLUMNS
    reference = training.feature_reference(dataset.assign(y=dataset["is_fraud"]), columns)
    return LoadedModel("fraudstream", "1", fit(dataset), THRESHOLD, columns, reference, 7)


def register(
    dataset: pd.DataFrame,
    name: str,
    seed: int = 0,
    champion: bool = True,
    profile: dict | None = None,
) -> str:
    """Log and register a model as the training job does; move ``champion`` to it.

    ``profile``: the training profile logged beside it (``fraudstream.ml.drift``).
    """
    import mlflow
    from mlflow import MlflowClient

    columns = features.FEATURE_COLUMNS
    with mlflow.start_run():
        info = model.log_model(
            fit(dataset, seed=seed).estimator,
            columns,
            registered_model_name=name,
            metadata={
                "threshold": THRESHOLD,
                "feature_columns": columns,
                "label_delay_days": 7,
                "feature_reference": training.feature_reference(
                    dataset.assign(y=dataset["is_fraud"]), columns
                ),
            },
        )
        if profile is not None:
            mlflow.log_dict(profile, drift.PROFILE_ARTIFACT)
    version = str(info.registered_model_version)
    if champion:
        MlflowClient().set_registered_model_alias(name, "champion", version)
    return version


def use_mlflow_copy(source: Path, folder: Path, monkeypatch) -> str:
    """A copy of the SQLite MLflow store ``source`` in ``folder``, the active store until
    ``monkeypatch`` undoes it; return its URI.

    MLflow keeps the active experiment in process-wide state; selecting one in the copy
    keeps a test from writing to an experiment of another test's store.
    """
    from fraudstream.ml import tracking

    db = folder / "mlflow.db"
    shutil.copyfile(source, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.use_experiment("fraudstream-test")
    return uri


def payment_records(events: pd.DataFrame) -> pd.DataFrame:
    """Payments as the Kafka source hands them over: JSON values on one partition."""
    return parse.kafka_records(events, schemas.encode_payment, config.TOPIC_PAYMENTS)


def label_records(labels: pd.DataFrame) -> pd.DataFrame:
    return parse.kafka_records(labels, schemas.encode_label, config.TOPIC_LABELS)


def read_topic(bootstrap_servers: str, topic: str) -> list:
    """Every record a topic holds now, from all partitions."""
    from kafka import TopicPartition

    from fraudstream.kafka import clients

    consumer = clients.consumer(bootstrap_servers)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        records = []
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def publish_sample(kafka_bootstrap: str, topics: dict, events: pa.Table | None = None) -> int:
    """Publish the sample's labels, then its payments (or ``events``); return the payments sent."""
    from fraudstream.data import produce

    labels = lake.read_labels(config.SAMPLE_DIR)
    produce.publish(labels, topics["labels"], kafka_bootstrap, encode=schemas.encode_labels)
    events = lake.read_events(config.SAMPLE_DIR) if events is None else events
    return produce.publish(events, topics["payments"], kafka_bootstrap)


#: The jobs :func:`submit` started; conftest stops those still running when a test ends.
SUBMITTED: list[subprocess.Popen] = []


def submit(
    job: str, args: list[str], env: dict, log_path: Path, spark_options: list[str] = ()
) -> subprocess.Popen:
    """Start ``./spark-submit.sh [SPARK_OPTIONS] JOB ARGS`` in its own process group,
    output to ``log_path``."""
    process = subprocess.Popen(
        ["./spark-submit.sh", *spark_options, job, *args],
        cwd=config.PROJECT_ROOT,
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    SUBMITTED.append(process)
    return process


def stop_submitted(grace_s: float = 20) -> list[int]:
    """Stop the process group of every submitted job still running (SIGTERM, then
    SIGKILL after ``grace_s``); return their pids.

    A job a failed test left behind would hold the cores, the Spark cluster's workers and
    the UI port, and the next tests would time out behind it.
    """
    running = [p for p in SUBMITTED if p.poll() is None]
    SUBMITTED.clear()
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.time() + grace_s
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return [p.pid for p in running]


def score_config(kafka_bootstrap: str, topics: dict, root: Path, **changes):
    """The score job on a test's own topics and folders, scoring what they hold now."""
    settings = dict(
        bootstrap_servers=kafka_bootstrap,
        out=root / "lake",
        checkpoint=root / "checkpoints",
        payments_topic=topics["payments"],
        labels_topic=topics["labels"],
        alerts_topic=topics["alerts"],
        dead_letter_topic=topics["dlq"],
        rules_topic=topics["rules"],
        rules_log_topic=topics["rules_log"],
        max_offsets_per_trigger=2000,
        available_now=True,
    )
    return query.ScoreConfig(**(settings | changes))


def score_args(kafka_bootstrap: str, topics: dict, root: Path, *extra: str) -> list[str]:
    """The score job's command-line arguments for a test's own topics and folders."""
    return [
        "--brokers", kafka_bootstrap,
        "--payments-topic", topics["payments"],
        "--labels-topic", topics["labels"],
        "--alerts-topic", topics["alerts"],
        "--dead-letter-topic", topics["dlq"],
        "--rules-topic", topics["rules"],
        "--rules-log-topic", topics["rules_log"],
        "--out", str(root / "lake"),
        "--checkpoint", str(root / "checkpoints"),
        *extra,
    ]  # fmt: skip


def job_env(mlflow_store: str, **extra: str) -> dict:
    """The test's environment for a job in a subprocess, with the test's MLflow store."""
    return os.environ | {"MLFLOW_TRACKING_URI": mlflow_store, **extra}


def assert_features_equal_training(scored: pd.DataFrame, dataset: pd.DataFrame) -> None:
    """Every payment scored once, and each feature equal to the training job's within 1e-9."""
    scored = scored.set_index("transaction_id")
    expected = dataset.set_index("transaction_id")[features.FEATURE_COLUMNS]
    assert scored.index.is_unique and set(scored.index) == set(expected.index)
    got = scored.loc[expected.index, features.FEATURE_COLUMNS].to_numpy()
    np.testing.assert_allclose(got, expected.to_numpy(), rtol=0, atol=1e-9)


def wait_for(
    predicate: Callable[[], bool], timeout_s: float, what: str, log: Path | None = None
) -> None:
    """Wait until ``predicate()``; on a timeout, fail with the end of the job's log."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    seen = log.read_text()[-3000:] if log is not None else ""
    raise AssertionError(
        f"timed out after {timeout_s:.0f} s waiting for {what}; the job said:\n{seen}"
    )


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now, distinct (all are held until all are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    return free_ports(1)[0]


@contextmanager
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program listens on, while the block runs."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        yield squatter.getsockname()[1]


def run_cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``python -m fraudstream.cli ARGS`` as a user runs it, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "fraudstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def cli(capsys, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``fraudstream ARGS`` run in this process, as :func:`run_cli` reports it.

    No interpreter to start and nothing to import again: a second or more saved per call.
    """
    from fraudstream.cli import main as cli_main

    capsys.readouterr()
    before = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = cli_main.main(list(args))
    finally:
        sys.stdin = before
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def train_args(data: Path | str, *extra: str) -> list[str]:
    """The train job's arguments for a quick run on ``data``: one logistic model, one fold."""
    return ["--data", str(data), "--models", "logistic", "--folds", "1", "--k", "5", *extra]


# --- a scored view with a shadow challenger, its label store and registry -------------


#: The synthetic scored view of :func:`synthetic_view`: its first day, its days, and its
#: champion's review and decline bands.
SHADOW_FIRST_DAY = date(2026, 11, 1)
SHADOW_DAYS = 21
SHADOW_THRESHOLD, SHADOW_DECLINE = 0.5, 0.9


def _ms(day: date) -> int:
    return int(pd.Timestamp(day, tz="UTC").value // 1_000_000)


def synthetic_view(
    seed: int = 0,
    challenger: str = "better",
    per_day: int = 400,
    cards: int = 3000,
    fraud_rate: float = 0.03,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A scored view of ``SHADOW_DAYS`` days scored by champion v1 and challenger v2, and labels.

    ``challenger``: ``better`` (its scores separate fraud more clearly than the
    champion's) or ``worse``. Each fraud is reported 1 to 5 days after its payment.
    """
    rng = np.random.default_rng(seed)
    n = per_day * SHADOW_DAYS
    day_index = np.repeat(np.arange(SHADOW_DAYS), per_day)
    event_ms = _ms(SHADOW_FIRST_DAY) + day_index * DAY_MS + rng.integers(0, DAY_MS, n)
    fraud = rng.random(n) < fraud_rate
    champion = np.clip(0.35 * fraud + rng.normal(0.3, 0.15, n), 0, 1)
    lift = 0.6 if challenger == "better" else 0.1
    noise = 0.08 if challenger == "better" else 0.25
    shadow = np.clip(lift * fraud + rng.normal(0.25, noise, n), 0, 1)
    decision = views.decisions(champion, _Bands(SHADOW_THRESHOLD, SHADOW_DECLINE))
    scored = pd.DataFrame(
        {
            "transaction_id": [f"t{i:06d}" for i in range(n)],
            "card_id": [f"c{c:05d}" for c in rng.integers(0, cards, n)],
            "event_time": pd.to_datetime(event_ms, unit="ms", utc=True),
            "scored_time": pd.to_datetime(event_ms + 50, unit="ms", utc=True),
            "score": champion,
            "threshold": SHADOW_THRESHOLD,
            "alerted": decision != "approve",
            "decision": decision,
            "rules_fired": [[] for _ in range(n)],
            "model_name": "fraudstream",
            "model_version": "1",
            "partition": np.zeros(n, dtype=np.int32),
            "offset": np.arange(n, dtype=np.int64),
            "kafka_timestamp": pd.to_datetime(event_ms + 10, unit="ms", utc=True),
            "challenger_score": shadow,
            "challenger_version": "2",
        }
    ).sort_values("event_time", ignore_index=True)
    frauds = scored.loc[fraud[np.argsort(event_ms, kind="stable")]]
    delay_ms = rng.integers(1 * DAY_MS, 5 * DAY_MS, len(frauds))
    labels = pd.DataFrame(
        {
            "transaction_id": frauds["transaction_id"].to_numpy(),
            "card_id": frauds["card_id"].to_numpy(),
            "label": "fraud",
            "source": "chargeback",
            "reported_time": frauds["event_time"] + pd.to_timedelta(delay_ms, unit="ms"),
            "scenario": None,
            "schema_version": np.int32(1),
        }
    )
    return scored, labels


class _Bands:
    """A model's bands, as ``views.decisions`` reads them."""

    def __init__(self, threshold, decline_threshold):
        self.threshold, self.decline_threshold = threshold, decline_threshold


def _day_numbers(times: pd.Series) -> np.ndarray:
    """UTC days since the epoch, as the views' writer takes them."""
    return ((times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(days=1)).to_numpy(np.int64)


def write_lake(out, scored: pd.DataFrame, labels: pd.DataFrame, old_days: int = 0) -> None:
    """``scored`` and ``labels`` as the score and labels jobs lay them out under ``out``.

    The first ``old_days`` days are written without the challenger's columns, as the
    job wrote them before the shadow challenger existed.
    """
    frame = scored.assign(**{name: 0.0 for name in features.FEATURE_COLUMNS})
    table = pa.Table.from_pandas(
        frame[views.SCORED_ARROW_SCHEMA.names],
        schema=views.SCORED_ARROW_SCHEMA,
        preserve_index=False,
    )
    days = _day_numbers(scored["event_time"])
    old = days < _day_numbers(pd.Series([pd.Timestamp(SHADOW_FIRST_DAY, tz="UTC")]))[0] + old_days
    if old.any():
        before = table.filter(pa.array(old)).drop_columns(
            ["challenger_score", "challenger_version"]
        )
        views.write_tables(out, 0, {views.SCORED: (before, days[old])})
    views.write_tables(out, 1, {views.SCORED: (table.filter(pa.array(~old)), days[~old])})
    label_store.write_history(out, labels)


def register_champion_and_challenger(name: str) -> None:
    """Versions 1 (``champion``) and 2 (``challenger``) of ``name``, small toy models."""
    from mlflow import MlflowClient

    rng = np.random.default_rng(0)
    dataset = pd.DataFrame(rng.random((200, len(features.FEATURE_COLUMNS))))
    dataset.columns = features.FEATURE_COLUMNS
    dataset["is_fraud"] = (rng.random(200) < 0.2).astype(int)
    assert register(dataset, name, seed=0) == "1"
    assert register(dataset, name, seed=1, champion=False) == "2"
    MlflowClient().set_registered_model_alias(name, "challenger", "2")


def write_scored_history(
    out, dataset: pd.DataFrame, labels: pd.DataFrame, scorer, threshold: float, first_day: int = 0
) -> int:
    """A scored view of a simulated history's features, and its label store, under ``out``.

    ``dataset``: ``training.build_dataset``'s rows with a ``day_index`` (days since the
    simulation's start); the days from ``first_day`` on are scored by ``scorer`` (a
    ``FraudScorer``) and decided ``review`` from ``threshold``, as the score job would
    write them from the same features. Returns the payments written.
    """
    rows = dataset[dataset["day_index"] >= first_day].reset_index(drop=True)
    scores = scorer.predict(None, rows).to_numpy()
    decided = np.where(scores >= threshold, "review", "approve").astype(object)
    event_time = pd.to_datetime(rows["event_ms"], unit="ms", utc=True)
    frame = pd.DataFrame(
        {
            "transaction_id": rows["transaction_id"],
            "card_id": rows["card_id"],
            "event_time": event_time,
            "scored_time": event_time,
            "score": scores,
            "threshold": threshold,
            "alerted": decided != "approve",
            "decision": decided,
            "rules_fired": [[] for _ in range(len(rows))],
            "model_name": "fraudstream",
            "model_version": "1",
            "partition": np.int32(0),
            "offset": np.arange(len(rows), dtype=np.int64),
            "kafka_timestamp": event_time,
            "challenger_score": np.nan,
            "challenger_version": None,
            **{name: rows[name].astype(float) for name in features.FEATURE_COLUMNS},
        }
    )
    table = pa.Table.from_pandas(frame, schema=views.SCORED_ARROW_SCHEMA, preserve_index=False)
    views.write_tables(out, 0, {views.SCORED: (table, _day_numbers(event_time))})
    label_store.write_history(out, labels)
    return len(rows)


#: The days of :func:`write_monitoring`'s tree: alerts, and the frauds among them.
MONITORED_ALERTS = [40, 42, 38, 41, 39, 40, 130, 41, 40, 39]
MONITORED_HITS = [20, 21, 19, 20, 20, 20, 65, 5, 20, 20]


def write_monitoring(out) -> dict:
    """``OUT/monitoring`` as the monitor writes it, for 10 days from ``SHADOW_FIRST_DAY``.

    Made by the monitor's own functions from small aggregates: 1,000 payments a day, a
    burst of alerts on day 7, a fall of precision on day 8 (matured: labels as of day 10
    with a 1-day delay, so days 9 and 10 are immature), and feature ``amount`` drifting
    on the last two days (``is_weekend`` drifts too, but is a calendar feature). Returns
    the ``daily``, ``drift`` and ``events`` frames written.
    """
    from fraudstream.ml import monitor

    days = [SHADOW_FIRST_DAY + timedelta(days=i) for i in range(len(MONITORED_ALERTS))]
    n = len(days)
    volumes = pd.DataFrame(
        {
            "day": days,
            "payments": 1000,
            "alerts": MONITORED_ALERTS,
            "approve": [1000 - a for a in MONITORED_ALERTS],
            "review": [a - 5 for a in MONITORED_ALERTS],
            "decline": 5,
            "frauds": [hits + 10 for hits in MONITORED_HITS],
            "alerted_frauds": MONITORED_HITS,
            "score_quantiles": [[0.1, 0.3 + i / 100, 0.6, 0.9] for i in range(n)],
            "model_version": "4",
        }
    )
    histogram = pd.DataFrame({"day": days, "bin": 0, "payments": 1000})
    card_precision = pd.DataFrame({"day": days, "card_precision": 0.2})
    as_of = pd.Timestamp(days[-1], tz="UTC") + pd.Timedelta(hours=12)
    daily = monitor.daily_frame(
        volumes, histogram, card_precision, as_of, 1, 100, monitor.Thresholds()
    )
    psi = {
        "amount": [0.01] * (n - 2) + [0.6, 0.8],
        "card_tx_count_1d": [0.02] * n,
        "is_weekend": [0.3] * n,
    }
    drifted = pd.DataFrame(
        [
            {
                "date": day,
                "feature": name,
                "psi": values[i],
                "null_share": 0.0,
                "training_null_share": 0.0,
                "payments": 1000,
                "important": True,
                "calendar": name in monitor.CALENDAR_FEATURES,
                "profile_version": "4",
            }
            for i, day in enumerate(days)
            for name, values in psi.items()
        ]
    )
    events = pd.DataFrame(monitor.health_events(daily, drifted, "fraudstream"))
    events = events.assign(date=events["day"], published_time=as_of)
    monitor.write_days(out, monitor.DAILY, daily)
    monitor.write_days(out, monitor.DRIFT, drifted)
    monitor.write_days(out, monitor.EVENTS, events)
    return {"daily": daily, "drift": drifted, "events": events}
