"""Publish payment and label events from Parquet to Kafka, in time order.

Payments go to ``payments`` keyed by ``card_id`` (so a card's events stay in order on
one partition) as the contract's JSON; labels go to ``fraud-labels``. The producer is
idempotent with ``acks=all``: a retried send is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa

from fraudstream import config, kafka_io, lake, schemas

BATCH_ROWS = 10_000


def _rows(table: pa.Table) -> Iterator[dict]:
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        yield from batch.to_pylist()


def publish(
    table: pa.Table,
    topic: str,
    encode: Callable[[dict], bytes],
    bootstrap_servers: str,
    client_properties: dict[str, str] | None = None,
) -> int:
    """Send every row of ``table`` to ``topic``, keyed by ``card_id``; return the count sent.

    Blocks until the broker has acknowledged every record.
    """
    producer = kafka_io.producer(bootstrap_servers, client_properties)
    sent = 0
    try:
        for row in _rows(table):
            producer.send(topic, key=row["card_id"].encode("utf-8"), value=encode(row))
            sent += 1
        producer.flush()
    finally:
        producer.close()
    return sent


def topic_size(bootstrap_servers: str, topic: str) -> int:
    """Return how many records ``topic`` holds (end minus beginning offsets, all partitions)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        parts = [TopicPartition(topic, p) for p in partitions]
        ends = consumer.end_offsets(parts)
        starts = consumer.beginning_offsets(parts)
        return sum(ends[p] - starts[p] for p in parts)
    finally:
        consumer.close()


def publish_folder(
    root: Path,
    bootstrap_servers: str | None = None,
    payments_topic: str = config.TOPIC_PAYMENTS,
    labels_topic: str | None = config.TOPIC_LABELS,
    limit: int | None = None,
) -> dict[str, int]:
    """Publish ``root/events`` (and ``root/labels``) as the simulator and importers write them.

    Parameters
    ----------
    root : Path
        Folder holding ``events/`` and, optionally, ``labels/``.
    labels_topic : str, optional
        Where labels go; None to publish payments only.
    limit : int, optional
        Publish only the first ``limit`` payments (in event-time order), and only the
        labels of those payments.
    """
    servers = config.bootstrap_servers(bootstrap_servers)
    with_labels = bool(labels_topic) and (Path(root) / lake.LABELS).is_dir()
    kafka_io.require_topics(servers, [payments_topic] + ([labels_topic] if with_labels else []))
    events = lake.read_events(root)
    if limit is not None:
        events = events.slice(0, limit)
    counts = {"payments": publish(events, payments_topic, schemas.encode_payment, servers)}
    if with_labels:
        labels = lake.read_labels(root)
        if limit is not None:
            import pyarrow.compute as pc

            labels = labels.filter(pc.is_in(labels["transaction_id"], events["transaction_id"]))
        counts["labels"] = publish(labels, labels_topic, schemas.encode_label, servers)
    return counts
