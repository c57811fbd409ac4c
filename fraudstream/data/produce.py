"""Publish payment and label events to Kafka in time order: ``fraudstream produce``.

Payments go to ``payments`` keyed by ``card_id`` (so a card's events stay in order on
one partition) as the contract's JSON; labels go to ``fraud-labels`` at their reported
time, interleaved with the payments by time, as a bank's chargebacks would arrive. The
producer is idempotent with ``acks=all``: a retried send is written once.

Speed comes from doing per-event work in Arrow: events are encoded to JSON a chunk at a
time (``schemas.encode_payments``) and handed to librdkafka, so Python touches each
event once, to queue it. ``bench/bench_produce.py`` measures the rate.

A run's position (how many payments and labels of its plan are acknowledged) is saved
under ``var/produce/`` every few seconds and when it stops, so a run stopped with
Ctrl-C continues with ``--resume``. After a hard kill, a resumed run re-sends up to the
last few seconds; the scoring job scores a repeated ``transaction_id`` once.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudstream import config, lake, schemas
from fraudstream.features import DAY_MS
from fraudstream.kafka import clients

#: Events encoded in one go: large enough for Arrow's kernels, small for memory.
ENCODE_ROWS = 50_000
#: Payments between two checks of the pace and of the labels due.
PACE_ROWS = 1_000
#: Seconds between two saves of the position (each waits for the broker's acks).
SAVE_SECONDS = 5.0


@dataclass(frozen=True)
class Position:
    """How far a run got: payments and labels of its plan acknowledged, in plan order."""

    payments: int = 0
    labels: int = 0


@dataclass(frozen=True)
class Plan:
    """What a run publishes: payments by event time and labels by reported time.

    ``name`` says where the events come from; it and the topics make the key of the
    saved position.
    """

    name: str
    payments: pa.Table
    labels: pa.Table | None

    @property
    def total(self) -> Position:
        """The position after the last payment and label: how much the plan holds."""
        return Position(self.payments.num_rows, 0 if self.labels is None else self.labels.num_rows)


def _times_ms(column: pa.ChunkedArray) -> np.ndarray:
    return pc.cast(column, pa.int64()).to_numpy()


def _in_window(table: pa.Table, column: str, start: date | None, end: date | None) -> pa.Table:
    def bound(day: date) -> pa.Scalar:
        return pa.scalar(datetime(day.year, day.month, day.day, tzinfo=UTC), table[column].type)

    if start is not None:
        table = table.filter(pc.greater_equal(table[column], bound(start)))
    if end is not None:
        table = table.filter(pc.less(table[column], bound(end)))
    return table


def make_plan(
    name: str,
    payments: pa.Table,
    labels: pa.Table | None,
    start: date | None = None,
    end: date | None = None,
    limit: int | None = None,
) -> Plan:
    """Order and cut the events of one run.

    Parameters
    ----------
    payments, labels : pyarrow.Table
        Events in the contracts' schemas; ``labels`` None publishes payments only.
    start, end : date, optional
        Keep payments whose event time, and labels whose reported time, fall in
        ``[start, end)``: consecutive windows publish each event exactly once.
    limit : int, optional
        Keep only the first ``limit`` payments, and only the labels of those payments.
    """
    # A stable sort on time, then id, so that a resumed run sees the same order.
    payments = payments.sort_by([("event_time", "ascending"), ("transaction_id", "ascending")])
    payments = _in_window(payments, "event_time", start, end)
    if limit is not None:
        payments = payments.slice(0, limit)
    if labels is not None:
        labels = labels.sort_by([("reported_time", "ascending"), ("transaction_id", "ascending")])
        labels = _in_window(labels, "reported_time", start, end)
        if limit is not None:
            labels = labels.filter(pc.is_in(labels["transaction_id"], payments["transaction_id"]))
    window = f"{start or ''}..{end or ''}" + (f" first {limit}" if limit is not None else "")
    return Plan(f"{name} [{window}]", payments, labels)


class Progress:
    """One status line: events sent, rate, ETA; redrawn in place on a terminal.

    Not on a terminal (a log file, CI), it prints a line every ``log_every`` seconds.
    """

    def __init__(self, total: int, stream=None, log_every: float = 10.0):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.5 if self.tty else log_every
        self.started = time.monotonic()
        self.shown = 0.0
        self.first = 0

    def begin(self, position: Position) -> None:
        """Start the clock at ``position``: the rate counts payments sent from here."""
        self.first = position.payments
        self.started = time.monotonic()

    def line(self, position: Position) -> str:
        """The status line at ``position``: payments, labels, rate and ETA."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = (position.payments - self.first) / elapsed
        left = self.total - position.payments
        eta = str(timedelta(seconds=round(left / rate))) if rate > 0 else "?"
        percent = 100.0 * position.payments / self.total if self.total else 100.0
        return (
            f"{position.payments:,}/{self.total:,} payments ({percent:.0f}%), "
            f"{position.labels:,} labels, {rate:,.0f} payments/s, ETA {eta}"
        )

    def update(self, position: Position, force: bool = False) -> None:
        """Show the line at ``position`` if it is time to (always with ``force``)."""
        now = time.monotonic()
        if not force and now - self.shown < self.every:
            return
        self.shown = now
        if self.tty:
            self.stream.write("\r\033[K" + self.line(position))
        else:
            self.stream.write(self.line(position) + "\n")
        self.stream.flush()

    def end(self) -> None:
        """Finish the line redrawn in place, so that what follows starts a line of its own."""
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run(
    plan: Plan,
    bootstrap_servers: str,
    payments_topic: str = config.TOPIC_PAYMENTS,
    labels_topic: str = config.TOPIC_LABELS,
    rate: float | None = None,
    start: Position = Position(),  # frozen, so one shared default is safe
    progress: Progress | None = None,
    save: Callable[[Position], None] | None = None,
    client_properties: dict[str, str] | None = None,
    metrics=None,
) -> Position:
    """Publish ``plan`` from ``start``; return the position reached.

    Labels are sent once the payments reach their reported time. ``rate`` paces the
    payments (per second); None sends as fast as the broker takes them. ``save`` is
    called with the acknowledged position every ``SAVE_SECONDS`` and at the end. A
    ``KeyboardInterrupt`` stops the run after the records already queued are
    acknowledged: the position returned (and saved) is exact, and the interrupt is
    re-raised for the caller to report. ``metrics``: a
    :class:`fraudstream.metrics.ProducerMetrics` to count into.
    """
    producer = clients.BulkProducer(bootstrap_servers, client_properties)
    # Labels go through a producer of their own that sends at once: waiting for its
    # acknowledgements costs one round trip, while the payments in flight keep going.
    label_producer = (
        clients.BulkProducer(bootstrap_servers, client_properties, linger_ms=0)
        if plan.labels is not None
        else None
    )
    event_ms = _times_ms(plan.payments["event_time"])
    label_ms = _times_ms(plan.labels["reported_time"]) if plan.labels is not None else None
    # Labels are few and go out in many small groups: encode them once, not per group.
    label_keys = plan.labels["card_id"].to_pylist() if plan.labels is not None else []
    label_values = schemas.encode_labels(plan.labels).to_pylist() if plan.labels is not None else []
    i, k = start.payments, start.labels
    progress = progress or Progress(plan.payments.num_rows)
    progress.begin(start)
    began, sent_since = time.monotonic(), 0
    saved_at = began
    if metrics is not None:
        metrics.watch(producer)
        if label_producer is not None:
            metrics.watch(label_producer)
        sent_payments = metrics.records_sent.labels(topic=payments_topic)
        sent_labels = metrics.records_sent.labels(topic=labels_topic)

    def send_labels(until: int) -> None:
        nonlocal k
        if label_ms is None or k >= until:
            return
        assert label_producer is not None  # made whenever there are labels
        label_producer.send_all(labels_topic, label_keys[k:until], label_values[k:until])
        if metrics is not None:
            sent_labels.inc(until - k)
        k = until

    unacknowledged_day = None  # the oldest report day of labels sent but not yet flushed

    def until_next_label(offset: int, end: int) -> int:
        """Send the labels reported up to payment ``i``'s time.

        Returns how many payments of ``[offset, end)`` can go before the next label or
        acknowledgement is due.

        Two topics give no order between them: a scoring job that read a payment before
        a label reported earlier would count other frauds live than in a replay. Labels
        count for the payments of the days after they were reported (the feature
        definition works in whole UTC days), so the labels sent are acknowledged before
        the first payment of a later day: one round trip a day, not one a label.
        """
        nonlocal unacknowledged_day
        assert label_ms is not None and label_producer is not None  # called with labels only
        due = int(np.searchsorted(label_ms, event_ms[i], side="right"))
        if due > k:
            if unacknowledged_day is None:
                unacknowledged_day = int(label_ms[k] // DAY_MS)
            send_labels(due)
        if unacknowledged_day is not None and event_ms[i] // DAY_MS > unacknowledged_day:
            label_producer.flush()
            unacknowledged_day = None
        ahead = event_ms[i : i + end - offset]
        count = len(ahead)
        if k < len(label_ms):
            count = min(count, int(np.searchsorted(ahead, label_ms[k], side="left")))
        if unacknowledged_day is not None:
            next_day_ms = (unacknowledged_day + 1) * DAY_MS
            count = min(count, int(np.searchsorted(ahead, next_day_ms, side="left")))
        return max(count, 1)

    def checkpoint() -> None:
        producer.flush()
        if label_producer is not None:
            label_producer.flush()
        if save is not None:
            save(Position(i, k))

    try:
        while i < plan.payments.num_rows:
            chunk = plan.payments.slice(i, ENCODE_ROWS)
            keys = chunk["card_id"].to_pylist()
            values = schemas.encode_payments(chunk).to_pylist()
            offset = 0
            while offset < len(keys):
                end = min(offset + PACE_ROWS, len(keys))
                if label_ms is not None:
                    end = min(end, offset + until_next_label(offset, end))
                producer.send_all(payments_topic, keys[offset:end], values[offset:end])
                sent = end - offset
                offset = end
                i += sent
                sent_since += sent
                if metrics is not None:
                    sent_payments.inc(sent)
                    metrics.rate.set(sent_since / max(time.monotonic() - began, 1e-9))
                if rate:
                    ahead = began + sent_since / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                progress.update(Position(i, k))
                if time.monotonic() - saved_at >= SAVE_SECONDS:
                    checkpoint()
                    saved_at = time.monotonic()
        if label_ms is not None:
            send_labels(len(label_ms))
    except KeyboardInterrupt:
        checkpoint()
        progress.update(Position(i, k), force=True)
        progress.end()
        raise
    checkpoint()
    progress.update(Position(i, k), force=True)
    progress.end()
    return Position(i, k)


def publish(
    table: pa.Table,
    topic: str,
    bootstrap_servers: str,
    encode: Callable[[pa.Table], pa.Array] = schemas.encode_payments,
    client_properties: dict[str, str] | None = None,
) -> int:
    """Send every row of ``table`` to ``topic`` in table order, keyed by ``card_id``.

    ``encode`` is ``schemas.encode_payments`` or ``schemas.encode_labels``. Blocks until
    the broker has acknowledged every record; returns the count sent.
    """
    producer = clients.BulkProducer(bootstrap_servers, client_properties)
    for first in range(0, table.num_rows, ENCODE_ROWS):
        chunk = table.slice(first, ENCODE_ROWS)
        producer.send_all(topic, chunk["card_id"].to_pylist(), encode(chunk).to_pylist())
    producer.flush()
    return table.num_rows


def topic_size(bootstrap_servers: str, topic: str) -> int:
    """Return how many records ``topic`` holds (end minus beginning offsets, all partitions)."""
    from kafka import TopicPartition

    from fraudstream.kafka import clients

    consumer = clients.consumer(bootstrap_servers)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        parts = [TopicPartition(topic, p) for p in partitions]
        ends = consumer.end_offsets(parts)
        starts = consumer.beginning_offsets(parts)
        return sum(ends[p] - starts[p] for p in parts)
    finally:
        consumer.close()


def folder_plan(root: Path, with_labels: bool = True, **cut) -> Plan:
    """The plan of a folder written by the generate or import job (``events/``, ``labels/``)."""
    root = Path(root)
    labels = lake.read_labels(root) if with_labels and (root / lake.LABELS).is_dir() else None
    return make_plan(str(root.resolve()), lake.read_events(root), labels, **cut)


class PositionStore:
    """Saved positions of runs, one JSON file per plan and topics, under ``folder``."""

    def __init__(self, folder: Path = config.VAR_DIR / "produce"):
        self.folder = Path(folder)

    def path(self, plan: Plan, *topics: str) -> Path:
        """The file of ``plan`` sent to ``topics``: named by a hash of the plan and topics."""
        key = json.dumps([plan.name, plan.total.payments, plan.total.labels, *topics])
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"

    def load(self, plan: Plan, *topics: str) -> Position | None:
        """The saved position of ``plan`` sent to ``topics``, or None if none was saved."""
        path = self.path(plan, *topics)
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        return Position(saved["payments"], saved["labels"])

    def save(self, plan: Plan, position: Position, *topics: str) -> None:
        """Save ``position``; written aside and renamed, so a crash leaves the old one whole."""
        path = self.path(plan, *topics)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"plan": plan.name, "topics": list(topics), **asdict(position)}
        staging = path.with_suffix(".writing")
        staging.write_text(json.dumps(record, indent=1))
        staging.replace(path)
