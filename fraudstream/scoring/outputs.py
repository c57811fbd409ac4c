"""A micro-batch's outputs when the executors score it: written and sent by Spark.

The scoring pass (:func:`fraudstream.scoring.batch.score_job`) returns one row per
payment scored (:data:`OUTPUT_SCHEMA`): its date, its rows of the three views as
structs (the alert's only if alerted) and its alert's Kafka value. The driver never
holds these rows. It has them, persisted once, written and sent by Spark
(:class:`SparkOutputs`):

1. the alerts to ``fraud-alerts`` and the dead letters to ``payments-dlq`` through
   Spark's Kafka sink, first, so that ops see an alert before the Parquet writes (at
   least once, like the driver's producer: ``alert_id`` is deterministic);
2. each view by Spark's DataFrame writer, into ``ROOT/_staging/batch-N/VIEW/date=D/``,
   one file per date (one task per view); then each file is moved to the name the
   views have always had, ``ROOT/VIEW/date=D/batch-N.parquet`` (:mod:`.viewfiles`).
   A move is a rename within one file system: atomic on a local disk and on HDFS, a
   copy on an object store, where an object appears only once whole. A batch run again
   after a crash writes the same names and removes any file of its own the new run no
   longer makes, so each payment is in each view once, as with the driver's writer.

Dead letters are decided on the driver (they are few, and their bytes came with the
summary); they go through the same writer and sink, from a small Spark DataFrame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import types as T  # noqa: N812

from fraudstream import features, schemas, storage
from fraudstream.scoring import viewfiles
from fraudstream.scoring import views as view_rows
from fraudstream.scoring.views import ALERTS, CARD_LOCATIONS, SCORED, VIEWS

#: The folder, under the output root, where Spark writes a batch's files before they
#: are moved into the views (hidden: readers skip names that start with ``_``).
STAGING = "_staging"

_SPARK_TIME = pa.timestamp("us", tz="UTC")


def _spark_struct(schema: pa.Schema) -> T.StructType:
    from pyspark.sql.pandas.types import from_arrow_schema

    return T.StructType(
        [T.StructField(f.name, f.dataType, True) for f in from_arrow_schema(schema).fields]
    )


OUTPUT_SCHEMA = T.StructType(
    [
        T.StructField("date", T.DateType()),
        T.StructField(SCORED, _spark_struct(view_rows.SCORED_ARROW_SCHEMA)),
        T.StructField(CARD_LOCATIONS, _spark_struct(schemas.CARD_LOCATION_ARROW_SCHEMA)),
        T.StructField(ALERTS, _spark_struct(schemas.ALERT_ARROW_SCHEMA)),
        T.StructField("alert_value", T.BinaryType()),
    ]
)


def _for_spark(table: pa.Table) -> pa.Table:
    """A view's rows with their times in microseconds, Spark's Arrow unit."""
    return pa.table(
        [
            column.cast(_SPARK_TIME) if pa.types.is_timestamp(column.type) else column
            for column in table.columns
        ],
        names=table.column_names,
    )


def _struct(table: pa.Table) -> pa.StructArray:
    """A view's rows as one struct column."""
    table = _for_spark(table)
    return pa.StructArray.from_arrays(
        [column.combine_chunks() for column in table.columns], names=table.column_names
    )


def _dates(ms) -> pa.Array:
    return pa.array(np.asarray(ms, dtype=np.int64) // features.DAY_MS, type=pa.int32()).cast(
        pa.date32()
    )


def output_batch(views: dict[str, pd.DataFrame]) -> pa.RecordBatch:
    """The views of a set of payments (``views_of``) as rows of :data:`OUTPUT_SCHEMA`."""
    scored = views[SCORED]
    alerted = scored["alerted"].to_numpy(dtype=bool)
    alerts = views[ALERTS]
    # The alerts are the alerted payments, in order: row i of the alerts is the i-th
    # alerted payment; the others get a null alert.
    where = np.full(len(scored), -1, dtype=np.int64)
    where[alerted] = np.arange(len(alerts))
    where = pa.array(where, mask=~alerted)
    values = pa.array(
        [schemas.encode_alert(r) for r in view_rows.records_of(alerts, schemas.ALERT_COLUMNS)],
        type=pa.binary(),
    )
    return pa.RecordBatch.from_arrays(
        [
            _dates(scored["event_time"]),
            _struct(view_rows.scored_table(scored)),
            _struct(view_rows.location_table(views[CARD_LOCATIONS])),
            pc.take(_struct(view_rows.alert_table(alerts)), where),
            pc.take(values, where),
        ],
        names=OUTPUT_SCHEMA.names,
    )


def batch_stats(output) -> pd.DataFrame:
    """Each payment scored: its Kafka time (ms), whether it was alerted, its decision.

    For the driver's checks, progress line and metrics, a few bytes a payment.
    """
    from pyspark.sql import functions as F  # noqa: N812

    return output.select(
        F.unix_millis(F.col(f"{SCORED}.kafka_timestamp")).alias("kafka_timestamp_ms"),
        F.col(f"{SCORED}.alerted").alias("alerted"),
        F.col(f"{SCORED}.decision").alias("decision"),
    ).toPandas()


class SparkOutputs:
    """The views under one output root, written by Spark.

    Alerts and dead letters are sent by Spark's Kafka sink (none when ``kafka`` is None:
    a rebuild).

    ``kafka``: ``(options, alerts_topic, dead_letter_topic)``, the options those of
    ``streams.spark_options``.
    """

    def __init__(self, root, kafka: tuple[dict, str, str] | None = None):
        self.root = root
        self.files = storage.files(root)
        self.kafka = kafka

    def _location(self, rel: str) -> str:
        return storage.hadoop_path(storage.join(self.root, rel))

    def send_alerts(self, output) -> None:
        """Send the alerts of one micro-batch's ``output`` to the alerts topic, keyed by card."""
        from pyspark.sql import functions as F  # noqa: N812

        if self.kafka is None:
            return
        options, alerts_topic, _ = self.kafka
        output.where(F.col(ALERTS).isNotNull()).select(
            F.col(f"{ALERTS}.card_id").cast("binary").alias("key"),
            F.col("alert_value").alias("value"),
        ).write.format("kafka").options(**options).option("topic", alerts_topic).save()

    def dead_letters(self, spark, dead: pd.DataFrame):
        """The driver's dead letters as a Spark DataFrame (None if there are none)."""
        if not len(dead):
            return None
        table = _for_spark(view_rows.dead_letter_table(dead))
        dates = _dates(dead["kafka_timestamp_ms"])
        return spark.createDataFrame(table.add_column(0, "date", dates))

    def send_dead_letters(self, dead) -> None:
        """Send each dead letter as it came, where it came from and why in headers.

        The headers follow Kafka Connect's dead-letter convention.
        """
        from pyspark.sql import functions as F  # noqa: N812

        if self.kafka is None or dead is None:
            return
        options, _, dead_letter_topic = self.kafka

        def header(key, value):
            text = value.cast("string").cast("binary")
            return F.struct(F.lit(key).alias("key"), text.alias("value"))

        dead.select(
            "key",
            "value",
            F.array(
                header("fraudstream.reason", F.col("reason")),
                header("fraudstream.topic", F.col("topic")),
                header("fraudstream.partition", F.col("partition")),
                header("fraudstream.offset", F.col("offset")),
            ).alias("headers"),
        ).write.format("kafka").options(**options).option("topic", dead_letter_topic).save()

    def write(self, batch_id: int, frames: dict) -> dict[str, int]:
        """Write one micro-batch's views as ``VIEW/date=D/batch-N.parquet``.

        ``frames`` holds each view's Spark rows with a ``date`` column, or None for no
        rows. Returns the files placed per view.
        """
        staging = f"{STAGING}/batch-{batch_id:012d}"
        # Left by a run that died before moving its files: only one batch runs at a time.
        self.files.delete(STAGING)
        placed: dict[str, dict[str, str]] = {}
        for view in VIEWS:
            placed[view] = {}
            frame = frames.get(view)
            if frame is None:
                continue
            frame.coalesce(1).write.mode("overwrite").partitionBy("date").option(
                "compression", "zstd"
            ).parquet(self._location(f"{staging}/{view}"))
            for rel in self.files.find(f"{staging}/{view}", ".parquet"):
                folder, _, _ = rel.rpartition("/")
                if not folder:
                    continue  # an empty write's file, outside every date
                if folder in placed[view]:
                    raise RuntimeError(
                        f"Spark wrote two files of {view} for {folder} in micro-batch {batch_id}."
                    )
                placed[view][folder] = f"{staging}/{view}/{rel}"
        # The dates a run of this batch can write to: those of its rows, the same in
        # every run of the batch (same offsets, same state).
        dates_seen = {folder for found in placed.values() for folder in found}
        name = viewfiles.batch_file(batch_id)
        for view, found in placed.items():
            for folder, source in found.items():
                self.files.move(source, f"{view}/{folder}/{name}")
            for folder in dates_seen - found.keys():
                stale = f"{view}/{folder}/{name}"
                if self.files.exists(stale):
                    self.files.delete(stale)
        self.files.delete(STAGING)
        return {view: len(found) for view, found in placed.items()}
