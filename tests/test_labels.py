"""The label store: label events from Kafka to Parquet, once each, read back by training."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from pyspark.sql import functions as F  # noqa: N812

from fraudstream import config, features, lake, schemas
from fraudstream.data import label_store, produce
from fraudstream.kafka import clients
from fraudstream.ml import dataset, training
from jobs import labels as labels_job


def _rows(table) -> set[tuple]:
    frame = table.to_pandas()
    return set(frame[schemas.LABEL_COLUMNS].itertuples(index=False, name=None))


def test_labels_round_trip_through_kafka_into_the_store(
    spark, kafka_bootstrap, fresh_topic, tmp_path
):
    sample = lake.read_labels(config.SAMPLE_DIR)
    produce.publish(sample, fresh_topic, kafka_bootstrap, encode=schemas.encode_labels)
    verdict = {
        "transaction_id": sample["transaction_id"][0].as_py(),
        "card_id": sample["card_id"][0].as_py(),
        "label": "genuine",
        "source": "analyst",
        "reported_time": datetime(2018, 5, 2, 9, 30, tzinfo=UTC),
        "scenario": None,
        "schema_version": 1,
    }
    producer = clients.producer(kafka_bootstrap)
    producer.send(fresh_topic, key=b"card", value=schemas.encode_label(verdict))
    producer.send(fresh_topic, key=b"card", value=b'{"transaction_id": "t1", "label": "maybe"}')
    producer.flush()
    producer.close()

    cfg = labels_job.LabelsConfig(
        bootstrap_servers=kafka_bootstrap,
        out=tmp_path / "lake",
        checkpoint=tmp_path / "checkpoints",
        labels_topic=fresh_topic,
        available_now=True,
    )
    lines = []
    labels_job.run(spark, cfg, log=lines.append)

    stored = lake.read_labels(cfg.out)
    assert stored.num_rows == sample.num_rows + 1
    assert _rows(stored) == _rows(sample) | {tuple(verdict[c] for c in schemas.LABEL_COLUMNS)}
    dead = pd.read_parquet(cfg.out / label_store.LABEL_DEAD_LETTERS)
    assert list(dead["reason"]) == ["missing required field card_id"]
    assert list(dead["value"]) == [b'{"transaction_id": "t1", "label": "maybe"}']

    # A rerun on the same checkpoint stores nothing twice; a new label is appended once.
    labels_job.run(spark, cfg, log=lines.append)
    assert lake.read_labels(cfg.out).num_rows == stored.num_rows
    producer = clients.producer(kafka_bootstrap)
    later = verdict | {"label": "fraud", "reported_time": datetime(2018, 5, 3, tzinfo=UTC)}
    producer.send(fresh_topic, key=b"card", value=schemas.encode_label(later))
    producer.flush()
    producer.close()
    labels_job.run(spark, cfg, log=lines.append)
    assert lake.read_labels(cfg.out).num_rows == stored.num_rows + 1
    assert any("dead letters" in line for line in lines)


def test_labels_job_keeps_the_store_on_s3(spark, kafka_bootstrap, fresh_topic, s3a_bucket):
    sample = lake.read_labels(config.SAMPLE_DIR)
    produce.publish(sample, fresh_topic, kafka_bootstrap, encode=schemas.encode_labels)
    root = f"s3a://{s3a_bucket}"
    cfg = labels_job.LabelsConfig(
        bootstrap_servers=kafka_bootstrap,
        out=f"{root}/lake",
        checkpoint=f"{root}/checkpoints",
        labels_topic=fresh_topic,
        available_now=True,
    )
    labels_job.run(spark, cfg, log=print)
    labels_job.run(spark, cfg, log=print)  # nothing new: nothing twice

    # Where training's Spark engine reads it from (``train --labels URI``).
    stored = dataset.read_labels(spark, f"{root}/lake/{label_store.LABELS}")
    stored = stored.withColumn("reported_time", F.unix_millis("reported_time")).toPandas()
    expected = sample.to_pandas()
    expected["reported_time"] = (
        expected["reported_time"].astype("datetime64[ms, UTC]").astype("int64")
    )
    assert len(stored) == sample.num_rows
    columns = schemas.LABEL_COLUMNS
    assert set(stored[columns].itertuples(index=False, name=None)) == set(
        expected[columns].itertuples(index=False, name=None)
    )


def test_training_reads_the_label_store(tmp_path):
    """The store's layout is what training reads: the same dataset as from the source."""
    sample = lake.read_labels(config.SAMPLE_DIR)
    records = pd.DataFrame(
        {
            "key": [None] * sample.num_rows,
            "value": [text.encode() for text in schemas.encode_labels(sample).to_pylist()],
            "topic": "fraud-labels",
            "partition": 0,
            "offset": range(sample.num_rows),
            "timestamp_ms": 0,
        }
    )
    label_store.LabelStore(tmp_path, log=lambda line: None).write(records, batch_id=0)
    events = lake.read_events(config.SAMPLE_DIR, features.EVENT_COLUMNS).to_pandas()
    from_store = lake.read_label_folder(tmp_path / label_store.LABELS).to_pandas()
    from_source = lake.read_labels(config.SAMPLE_DIR).to_pandas()
    pd.testing.assert_frame_equal(
        training.build_dataset(events, from_store, 7),
        training.build_dataset(events, from_source, 7),
    )
