"""A real round trip: kafka-python produces, Spark's Kafka source reads, Parquet lands."""

from __future__ import annotations

import json

from fraudstream.kafka import clients
from jobs.ingest import IngestConfig, run

EVENT_COUNT = 1000


def _events(count: int) -> list[dict]:
    return [
        {
            "transaction_id": f"tx-{i:05d}",
            "card_id": f"card-{i % 37:03d}",
            "amount": round(1.5 + i * 0.37, 2),
            "note": "café ✓",  # non-ASCII survives the trip
        }
        for i in range(count)
    ]


def test_ingest_lands_every_event_once_with_values_intact(
    spark, kafka_bootstrap, fresh_topic, lake
):
    events = _events(EVENT_COUNT)
    producer = clients.producer(kafka_bootstrap)
    for event in events:
        producer.send(
            fresh_topic, key=event["card_id"].encode(), value=json.dumps(event).encode("utf-8")
        )
    producer.flush()
    producer.close()

    cfg = IngestConfig(
        bootstrap_servers=kafka_bootstrap,
        topic=fresh_topic,
        out=str(lake["out"] / "raw"),
        checkpoint=str(lake["checkpoints"] / "raw"),
    )
    assert run(spark, cfg) == EVENT_COUNT

    landed = spark.read.parquet(cfg.out).select("key", "value", "topic", "partition", "offset")
    rows = landed.collect()
    assert sorted(json.loads(row["value"])["transaction_id"] for row in rows) == [
        event["transaction_id"] for event in events
    ]
    assert (
        sorted((json.loads(row["value"]) for row in rows), key=lambda e: e["transaction_id"])
        == events
    )
    assert all(row["key"] == json.loads(row["value"])["card_id"] for row in rows)
    assert {row["topic"] for row in rows} == {fresh_topic}
    # Each (partition, offset) once: nothing read twice.
    assert len({(row["partition"], row["offset"]) for row in rows}) == EVENT_COUNT


def test_ingest_second_run_lands_only_new_events(spark, kafka_bootstrap, fresh_topic, lake):
    cfg = IngestConfig(
        bootstrap_servers=kafka_bootstrap,
        topic=fresh_topic,
        out=str(lake["out"] / "raw"),
        checkpoint=str(lake["checkpoints"] / "raw"),
    )
    producer = clients.producer(kafka_bootstrap)
    for batch, count in [(0, 10), (1, 5)]:
        for i in range(count):
            producer.send(fresh_topic, value=json.dumps({"batch": batch, "i": i}).encode())
        producer.flush()
        assert run(spark, cfg) == 10 + (5 if batch else 0)
    producer.close()
