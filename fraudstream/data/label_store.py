"""The label store: every label event of ``fraud-labels``, in Parquet, for training.

Chargebacks, analyst verdicts from the dashboard and the simulator's labels all arrive
on ``fraud-labels``. The labels job (``./spark-submit.sh labels``) appends each to
``OUT/labels/date=D/batch-N.parquet`` (``D`` the reported date) in the label contract's
schema, which is the layout ``lake.read_labels(OUT)`` and the training job
(``--labels OUT/labels``) read. Invalid label records go to ``OUT/label_dead_letters``
with their reason and raw bytes. Each micro-batch writes the same file names when it
runs again after a crash, so the store holds each record once.

The scoring job does not read the store: its merchant-risk state reads the same topic
directly, as of each micro-batch, so both see the same labels.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from fraudstream import config, schemas, storage
from fraudstream.features import DAY_MS
from fraudstream.scoring import views

_LOG = logging.getLogger(__name__)

LABELS = "labels"
LABEL_DEAD_LETTERS = "label_dead_letters"
VIEWS = (LABELS, LABEL_DEAD_LETTERS)


def write_history(out, labels: pd.DataFrame) -> int:
    """Write a history's label events as the store ``OUT/labels`` that the job keeps.

    For notebooks and tests that make a scored view without Kafka
    (:func:`fraudstream.scoring.views.score_history`): the labels as one micro-batch,
    by reported date. ``labels`` has the label contract's columns. Returns the rows written.
    """
    from fraudstream import features

    table = pa.Table.from_pandas(
        labels[schemas.LABEL_COLUMNS], schema=schemas.LABEL_ARROW_SCHEMA, preserve_index=False
    )
    days = features._time_ms(labels["reported_time"]) // DAY_MS
    return views.write_tables(out, 0, {LABELS: (table, days)})[LABELS]


def split(
    records: pd.DataFrame, now_ms: int | None = None
) -> dict[str, tuple[pa.Table, np.ndarray]]:
    """Valid label events and dead letters of one micro-batch, each with its rows' days.

    ``records`` has Kafka's columns: ``key, value, topic, partition, offset, timestamp_ms``.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    valid, dead = [], []
    for record in records.itertuples(index=False):
        try:
            valid.append(schemas.decode_label(record.value or b""))
        except ValueError as error:
            dead.append((record, str(error)))
    labels = pa.Table.from_pylist(valid, schema=schemas.LABEL_ARROW_SCHEMA)
    dead_letters = pa.table(
        {
            "topic": pa.array([r.topic for r, _ in dead], pa.string()),
            "partition": pa.array([r.partition for r, _ in dead], pa.int32()),
            "offset": pa.array([r.offset for r, _ in dead], pa.int64()),
            "kafka_timestamp": pa.array([r.timestamp_ms for r, _ in dead], pa.int64()).cast(
                pa.timestamp("ms", tz="UTC")
            ),
            "key": pa.array([r.key for r, _ in dead], pa.binary()),
            "value": pa.array([r.value for r, _ in dead], pa.binary()),
            "reason": pa.array([reason for _, reason in dead], pa.string()),
            "dead_lettered_time": pa.array([now_ms] * len(dead), pa.int64()).cast(
                pa.timestamp("ms", tz="UTC")
            ),
        },
        schema=schemas.DEAD_LETTER_ARROW_SCHEMA,
    )
    days = pa.compute.cast(labels["reported_time"], pa.int64()).to_numpy() // DAY_MS
    dead_days = np.array([r.timestamp_ms for r, _ in dead], dtype=np.int64) // DAY_MS
    return {LABELS: (labels, days), LABEL_DEAD_LETTERS: (dead_letters, dead_days)}


class LabelStore:
    """The ``foreachBatch`` function of the labels job: one micro-batch into the store."""

    def __init__(self, root, log=_LOG.info):
        # A local folder or a Hadoop URI (``fraudstream.storage``).
        self.root = root
        self.log = log

    def __call__(self, batch_df, batch_id: int) -> None:
        """Store one micro-batch of Spark's Kafka rows (on the driver, as pandas)."""
        from fraudstream.kafka.streams import record_columns

        records = record_columns(batch_df).toPandas()
        self.write(records, batch_id)

    def write(self, records: pd.DataFrame, batch_id: int) -> dict[str, int]:
        """Write the labels and dead letters of one micro-batch's Kafka records.

        Parameters
        ----------
        records : pandas.DataFrame
            The batch's records (``fraudstream.kafka.streams.record_columns``).
        batch_id : int
            The micro-batch, which names the files written.

        Returns
        -------
        dict of str to int
            Rows written per table (:data:`LABELS`, :data:`LABEL_DEAD_LETTERS`).
        """
        tables = split(records)
        written = views.write_tables(self.root, batch_id, tables)
        self.log(
            f"batch {batch_id}: {len(records):,} records -> {written[LABELS]:,} labels, "
            f"{written[LABEL_DEAD_LETTERS]:,} dead letters"
        )
        return written


QUERY_NAME = "fraudstream-labels"


@dataclass(frozen=True)
class LabelsConfig:
    """Where the labels job reads label events and where it keeps the store."""

    bootstrap_servers: str
    #: Local folders or Hadoop URIs (``s3a://bucket/lake``).
    out: Path | str
    checkpoint: Path | str
    labels_topic: str = config.TOPIC_LABELS
    available_now: bool = False
    trigger_interval: str = "5 seconds"


def run(spark, cfg: LabelsConfig, stop: threading.Event | None = None, log=_LOG.info) -> None:
    """Run the labels job's query until it ends (``available_now``) or ``stop`` is set."""
    from fraudstream.kafka import streams

    records = streams.read_stream(
        spark, cfg.bootstrap_servers, cfg.labels_topic, starting_offsets="earliest"
    )
    writer = (
        records.writeStream.foreachBatch(LabelStore(cfg.out, log=log))
        .option("checkpointLocation", str(storage.join(cfg.checkpoint, "labels")))
        .queryName(QUERY_NAME)
    )
    if cfg.available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=cfg.trigger_interval)
    query = writer.start()
    stop = stop or threading.Event()
    while query.isActive and not stop.is_set():
        query.awaitTermination(0.5)  # type: ignore[arg-type]  # seconds; a float works
    if query.isActive:
        query.stop()
        log("stopped; restart on the same --checkpoint to resume")
    error = query.exception()
    if error is not None:
        raise error
