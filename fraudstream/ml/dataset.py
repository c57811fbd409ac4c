"""The training dataset, computed by Spark on executors with the scoring path's operators.

:func:`features_frame` turns payment and label events (Spark DataFrames) into the model's
features, as of each payment, without bringing the history to the driver:

- the card windows come from the per-card operator (``fraudstream.scoring.operator``), the Java
  ``StatefulProcessor`` that keeps each card's state in Spark's state store, run here as
  a batch query over the whole history; its integer aggregates become features through
  ``features.card_features_from_aggregates`` in a pandas UDF;
- merchant and known-fraud counts come from per-key daily tables
  (``fraudstream.ml.spark_features``), joined back to the payments;
- the time and channel flags are column expressions.

The values equal ``features.compute`` over the same history within 1e-9 (the parity
tests), so a model trained on this dataset sees what the scoring job computes.
:func:`build_dataset` adds what evaluation needs and hands a pandas frame to the
learners, which fit in one process.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812
from pyspark.sql import types as T  # noqa: N812

from fraudstream import features, lake, schemas, storage
from fraudstream.errors import DataError
from fraudstream.ml import spark_features
from fraudstream.scoring import operator, state

_CARD_FEATURES_SCHEMA = T.StructType(
    [T.StructField("transaction_id", T.StringType(), False)]
    + [T.StructField(name, T.DoubleType(), False) for name in features.CARD_FEATURE_COLUMNS]
)


def read_events(spark: SparkSession, root: Path | str, until: date | None = None) -> DataFrame:
    """Payment events of ``root/events`` (the lake layout) before ``until``, if given."""
    payments = spark.read.schema(_with_date(schemas.PAYMENT_SCHEMA)).parquet(
        str(storage.join(root, lake.EVENTS))
    )
    payments = payments.select(*schemas.PAYMENT_SCHEMA.fieldNames())
    if until is not None:
        payments = payments.where(F.col("event_time") < F.lit(_midnight(until)))
    return payments


def read_labels(spark: SparkSession, folder: Path | str, until: date | None = None) -> DataFrame:
    """Label events of ``folder`` (``DATA/labels`` or the label store) reported before ``until``."""
    labels = spark.read.schema(_with_date(schemas.LABEL_SCHEMA)).parquet(str(folder))
    labels = labels.select(*schemas.LABEL_SCHEMA.fieldNames())
    if until is not None:
        labels = labels.where(F.col("reported_time") < F.lit(_midnight(until)))
    return labels


def _with_date(schema: T.StructType) -> T.StructType:
    return T.StructType([*schema.fields, T.StructField("date", T.StringType(), True)])


def _midnight(day: date) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC").to_pydatetime()


def _card_features(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Aggregates and own columns of payments -> their card features (on executors)."""
    for frame in frames:
        card = features.card_features_from_aggregates(frame, frame)
        card.insert(0, "transaction_id", frame["transaction_id"].to_numpy())
        yield card


def card_features(payments: DataFrame) -> DataFrame:
    """``transaction_id`` and the card-window features of each payment, by the card operator.

    A payment delivered twice counts once: the operator marks the later copies, which
    are left out here (the features of the first copy stand for it).
    """
    # The payment's own columns come through the operator beside its aggregates: no
    # second read of the payments and no join back (two shuffles of every payment).
    own = [name for name in operator.INPUT_COLUMNS if name not in ("card_id", "transaction_id")]
    aggregates = operator.card_aggregates(operator.card_rows(payments), passing=own)
    return aggregates.where(~F.col("duplicate")).mapInPandas(_card_features, _CARD_FEATURES_SCHEMA)


def features_frame(payments: DataFrame, labels: DataFrame, label_delay_days: int) -> DataFrame:
    """Every payment's features as of its time: ``transaction_id`` and the feature columns.

    Parameters
    ----------
    payments, labels : DataFrame
        Payment and label events in the contract's schemas.
    label_delay_days : int
        How many whole days back the merchant windows end.
    """
    others = spark_features.non_card_features(payments, labels, label_delay_days)
    return (
        card_features(payments)
        .join(others, on="transaction_id", how="inner")
        .select("transaction_id", *features.FEATURE_COLUMNS)
    )


def truth(payments: DataFrame, labels: DataFrame) -> DataFrame:
    """``transaction_id, card_id, event_ms, fraud_reported_ms`` of each payment (first copy)."""
    reported = (
        labels.where(F.col("label") == "fraud")
        .groupBy("transaction_id")
        .agg(F.min(F.unix_millis("reported_time")).alias("fraud_reported_ms"))
    )
    return (
        payments.groupBy("transaction_id")
        .agg(
            F.first("card_id").alias("card_id"),
            F.min(F.unix_millis("event_time")).alias("event_ms"),
        )
        .join(reported, on="transaction_id", how="left")
    )


def day_range(payments: DataFrame) -> tuple[date, date]:
    """The first and last UTC day of the payments (one small aggregate)."""
    row = payments.select(
        F.min(F.unix_millis("event_time")).alias("first"),
        F.max(F.unix_millis("event_time")).alias("last"),
    ).first()
    if row is None or row["first"] is None:
        raise DataError("The data holds no payments.")
    return tuple(pd.Timestamp(row[name], unit="ms").date() for name in ("first", "last"))


def _result_limit(spark: SparkSession) -> int:
    """``spark.driver.maxResultSize`` in bytes (0: no limit)."""
    text = spark.sparkContext.getConf().get("spark.driver.maxResultSize", "1g")
    jvm = spark._jvm
    assert jvm is not None  # a classic (not Spark Connect) session
    return int(jvm.org.apache.spark.network.util.JavaUtils.byteStringAsBytes(text))


def to_pandas(frame: DataFrame, row_bytes: int, limit: int | None = None) -> pd.DataFrame:
    """``frame.toPandas()``, in parts when the whole would pass the driver's result limit.

    ``row_bytes``: about how many bytes a row takes; ``limit``: the limit in bytes
    (default ``spark.driver.maxResultSize``, 1 GB unless set). The parts are read from
    the frame cached on the executors, so its plan runs once.
    """
    limit = _result_limit(frame.sparkSession) if limit is None else limit
    cached = frame.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        rows = cached.count()
        # Half the limit a part: Arrow's batches and Spark's framing add to the bytes.
        parts = 1 if limit <= 0 else max(1, -(-rows * row_bytes // (limit // 2)))
        if parts == 1:
            return cached.toPandas()
        bucket = F.pmod(F.xxhash64("transaction_id"), F.lit(parts))
        return pd.concat(
            [cached.where(bucket == part).toPandas() for part in range(parts)],
            ignore_index=True,
        )
    finally:
        cached.unpersist()


def build_dataset(
    payments: DataFrame,
    labels: DataFrame,
    delay_days: int,
    days: tuple[date, date] | None = None,
) -> pd.DataFrame:
    """The training dataset of ``training.build_dataset``, with the features computed by Spark.

    Parameters
    ----------
    payments, labels : DataFrame
        Payment and label events in the contract's schemas.
    delay_days : int
        The label delay.
    days : (date, date), optional
        Only the payments of days ``[first, end)`` come to the driver, their features
        computed over the whole history: the days the evaluation folds read (see
        ``training.fold_span``). None: every payment.

    Returns
    -------
    DataFrame
        :data:`features.FEATURE_COLUMNS` plus ``transaction_id``, ``card_id``,
        ``event_ms``, ``day``, ``is_fraud`` and ``fraud_reported_ms``, one row per
        payment, in event-time order (ties by ``transaction_id``).
    """
    spark = payments.sparkSession
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    joined = features_frame(payments, labels, delay_days).join(
        truth(payments, labels), on="transaction_id", how="inner"
    )
    if days is not None:
        start, end = (int(pd.Timestamp(day, tz="UTC").value // 1_000_000) for day in days)
        joined = joined.where((F.col("event_ms") >= start) & (F.col("event_ms") < end))
    # Doubles, the two ids and the times: about this many bytes a row through Arrow.
    row_bytes = 8 * (len(features.FEATURE_COLUMNS) + 2) + 2 * 24
    dataset = to_pandas(joined, row_bytes).sort_values(
        ["event_ms", "transaction_id"], kind="stable"
    )
    dataset = dataset.reset_index(drop=True)
    dataset["transaction_id"] = dataset["transaction_id"].astype(object)
    dataset["card_id"] = dataset["card_id"].astype(object)
    dataset["event_ms"] = dataset["event_ms"].astype(np.int64)
    dataset["day"] = pd.to_datetime(dataset["event_ms"], unit="ms").dt.date
    dataset["fraud_reported_ms"] = dataset["fraud_reported_ms"].astype(float)
    dataset["is_fraud"] = dataset["fraud_reported_ms"].notna().astype(np.int64)
    dataset = dataset[
        [
            "transaction_id",
            *features.FEATURE_COLUMNS,
            "card_id",
            "event_ms",
            "day",
            "fraud_reported_ms",
            "is_fraud",
        ]
    ]
    return dataset


def card_states(spark: SparkSession, data, label_delay_days: int) -> DataFrame:
    """The cards' states (``card_id, state``) after the payments and reports of ``data``.

    What the ``card_states`` job writes for ``score --initial-card-states``: the card
    operator run in batch over a history that is not on the topic.
    """
    rows = operator.card_rows(read_events(spark, data), keep=["merchant_id"])
    rows = rows.withColumn("report_ms", F.lit(None).cast("long"))
    labels_folder = storage.join(data, lake.LABELS)
    if storage.is_uri(labels_folder) or Path(labels_folder).is_dir():
        reports = (
            read_labels(spark, labels_folder)
            .where(F.col("label") == "fraud")
            .select(
                "card_id",
                "transaction_id",
                F.unix_millis("reported_time").alias("report_ms"),
            )
        )
        rows = rows.unionByName(reports, allowMissingColumns=True)
    return operator.card_states(rows, keep_days=state.payment_horizon_days(label_delay_days))
