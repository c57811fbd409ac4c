"""The producer: vectorised JSON, time order, labels at their time, Ctrl-C and --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from fraudstream import config, lake, schemas
from fraudstream.data import produce
from fraudstream.ops import broker

from .helpers import read_topic


def _odd_payments() -> pa.Table:
    rows = lake.read_events(config.SAMPLE_DIR).slice(0, 4).to_pylist()
    rows[1].update(
        merchant_id='m "quoted" \\ back\nslash\t\x01 café',
        amount=1e-7,
        lat=None,
        customer_id=None,
        event_time=datetime(1969, 12, 31, 23, 59, 59, 1000, tzinfo=UTC),
    )
    rows[2].update(amount=float("nan"), merchant_category="ünïcödé ✓", lon=-179.99999)
    # Quotes and backslashes without control characters: the vectorised path escapes them.
    rows[3].update(merchant_id='m "quoted" C:\\shop\\', country=None)
    return pa.Table.from_pylist(rows, schema=schemas.PAYMENT_ARROW_SCHEMA)


def test_encode_payments_decodes_as_encode_payment():
    sample = lake.read_events(config.SAMPLE_DIR)
    for table in (sample, _odd_payments()):
        got = [json.loads(text) for text in schemas.encode_payments(table).to_pylist()]
        want = [json.loads(schemas.encode_payment(row)) for row in table.to_pylist()]
        assert got == want
    # Every encoded sample payment passes the contract's own decoder.
    for text in schemas.encode_payments(sample).to_pylist()[:500]:
        schemas.decode_payment(text.encode())


def test_encode_labels_decodes_as_encode_label():
    labels = lake.read_labels(config.SAMPLE_DIR)
    got = [json.loads(text) for text in schemas.encode_labels(labels).to_pylist()]
    assert got == [json.loads(schemas.encode_label(row)) for row in labels.to_pylist()]


def test_make_plan_windows_publish_each_event_once():
    events, labels = lake.read_events(config.SAMPLE_DIR), lake.read_labels(config.SAMPLE_DIR)
    cut = datetime.fromisoformat(str(events["event_time"][events.num_rows // 2]))
    first = produce.make_plan("s", events, labels, end=cut.date())
    second = produce.make_plan("s", events, labels, start=cut.date())
    assert first.total.payments + second.total.payments == events.num_rows
    assert first.total.labels + second.total.labels == labels.num_rows
    assert 0 < first.total.payments < events.num_rows


def test_run_keeps_card_order_and_sends_labels_at_their_time(kafka_bootstrap, monkeypatch):
    """Payments and labels into one single-partition topic, so its order is the arrival
    order: payments and labels have producers of their own, so only the acknowledgement
    the producer waits for orders them."""
    monkeypatch.setattr(produce, "PACE_ROWS", 50)
    topic = f"test-produce-{os.getpid()}-{time.monotonic_ns()}"
    broker.create_topics(kafka_bootstrap, {topic: {}}, partitions=1)
    plan = produce.folder_plan(config.SAMPLE_DIR)
    reached = produce.run(plan, kafka_bootstrap, payments_topic=topic, labels_topic=topic)
    assert reached == plan.total

    records = read_topic(kafka_bootstrap, topic)
    values = [json.loads(record.value) for record in records]
    payments = [v for v in values if "event_time" in v]
    assert len(records) == plan.total.payments + plan.total.labels
    assert [p["transaction_id"] for p in payments] == plan.payments["transaction_id"].to_pylist()
    assert all(r.key.decode() == v["card_id"] for r, v in zip(records, values, strict=True))
    # (position in the topic, time) of every payment, and of every label.
    payment_times = [(i, v["event_time"]) for i, v in enumerate(values) if "event_time" in v]
    label_times = [(i, v["reported_time"]) for i, v in enumerate(values) if "event_time" not in v]
    assert len(label_times) == plan.total.labels
    for position, reported in label_times:
        # Never late for a payment it counts for: every payment of a later day than its
        # report comes after it (labels count from the day after they are reported).
        assert all(i > position for i, t in payment_times if t[:10] > reported[:10])


def _produce_command(topics, state_dir, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fraudstream.cli",
        "produce",
        "--data",
        str(config.SAMPLE_DIR),
        "--topic",
        topics[0],
        "--labels-topic",
        topics[1],
        "--state-dir",
        str(state_dir),
        *extra,
    ]


def test_produce_stops_on_ctrl_c_and_resumes_exactly(kafka_bootstrap, tmp_path):
    topics = [f"test-pay-{time.monotonic_ns()}", f"test-lab-{time.monotonic_ns()}"]
    broker.create_topics(kafka_bootstrap, {name: {} for name in topics}, partitions=3)
    command = _produce_command(topics, tmp_path / "state", "--rate", "2000")
    env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Interrupt it mid-run: once payments arrive (a loaded machine may take seconds to
    # start Python), not at a fixed time that might fall in its imports.
    deadline = time.monotonic() + 60
    while not read_topic(kafka_bootstrap, topics[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    job.send_signal(signal.SIGINT)
    out, err = job.communicate(timeout=60)
    assert job.returncode == 130, err.decode()
    assert "Stopped after" in out.decode() and "--resume" in out.decode()
    # Progress lines (not a terminal: a line every few seconds, and the last one).
    assert "payments/s" in err.decode() and "ETA" in err.decode()
    first = read_topic(kafka_bootstrap, topics[0])
    assert 0 < len(first) < 6148

    resumed = subprocess.run([*command[:-2], "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming after {len(first):,} payments" in resumed.stdout

    payment_ids = [
        json.loads(r.value)["transaction_id"] for r in read_topic(kafka_bootstrap, topics[0])
    ]
    label_ids = [
        json.loads(r.value)["transaction_id"] for r in read_topic(kafka_bootstrap, topics[1])
    ]
    expected = lake.read_events(config.SAMPLE_DIR)["transaction_id"].to_pylist()
    assert sorted(payment_ids) == sorted(expected)  # all of them, none twice
    assert sorted(label_ids) == sorted(
        lake.read_labels(config.SAMPLE_DIR)["transaction_id"].to_pylist()
    )


def test_produce_simulates_live(kafka_bootstrap, fresh_topic, tmp_path, capsys):
    from fraudstream.cli import main as cli
    from fraudstream.data import simulate

    labels_topic = f"{fresh_topic}-labels"
    broker.create_topics(kafka_bootstrap, {labels_topic: {}}, partitions=1)
    args = ["--customers", "40", "--terminals", "50", "--days", "5", "--seed", "3"]
    topics = ["--brokers", kafka_bootstrap, "--topic", fresh_topic, "--labels-topic", labels_topic]
    status = cli.main(["produce", "--simulate", *args, *topics, "--state-dir", str(tmp_path)])
    assert status == 0
    payments, labels = simulate.simulate(
        simulate.SimulationConfig(customers=40, terminals=50, days=5, seed=3)
    )
    assert f"Published {payments.num_rows:,} payment events" in capsys.readouterr().out
    assert len(read_topic(kafka_bootstrap, fresh_topic)) == payments.num_rows
    assert len(read_topic(kafka_bootstrap, labels_topic)) == labels.num_rows


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (["--data", "/nonexistent"], "No events folder at /nonexistent/events"),
        (["--rate", "0"], "--rate must be a positive number"),
        (["--topic", "no-such-topic-here"], "Topic(s) no-such-topic-here do not exist"),
    ],
)
def test_produce_wrong_input_is_one_sentence(kafka_bootstrap, fresh_topic, capsys, argv, sentence):
    from fraudstream.cli import main as cli

    topics = ["--topic", fresh_topic, "--labels-topic", fresh_topic]
    assert cli.main(["produce", "--brokers", kafka_bootstrap, *topics, *argv]) == 2
    err = capsys.readouterr().err
    assert sentence in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_publish_partitions_cards_as_java_clients_do(kafka_bootstrap, fresh_topic):
    """Murmur2, as Java clients, kafka-python and Kafka Connect: one card, one partition."""
    from kafka.partitioner.default import murmur2

    events = lake.read_events(config.SAMPLE_DIR).slice(0, 300)
    produce.publish(events, fresh_topic, kafka_bootstrap)
    records = read_topic(kafka_bootstrap, fresh_topic)
    assert len(records) == 300
    for record in records:
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % 3
