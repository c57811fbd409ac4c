"""Spark's Kafka source and sink: the options, the stream, and the record columns."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812

from fraudstream.kafka.propfile import java_settings, resolve_properties


def spark_options(bootstrap_servers: str, client_properties: dict[str, str] | None = None) -> dict:
    """Return the options of Spark's Kafka source or sink.

    Parameters
    ----------
    bootstrap_servers : str
        ``host:port[,host:port...]``.
    client_properties : dict, optional
        Kafka client properties (``security.protocol``, ``sasl.mechanism``, ...),
        passed with the ``kafka.`` prefix Spark expects.
    """
    options = {"kafka.bootstrap.servers": bootstrap_servers}
    for key, value in java_settings(resolve_properties(client_properties)).items():
        options[f"kafka.{key}"] = value
    return options


def read_stream(
    spark: SparkSession,
    bootstrap_servers: str,
    topic: str,
    starting_offsets: str = "earliest",
    max_offsets_per_trigger: int | None = None,
    client_properties: dict[str, str] | None = None,
) -> DataFrame:
    """Open a streaming read of ``topic`` with Spark's Kafka source.

    ``starting_offsets`` applies only to a new checkpoint: a query restarted on its
    checkpoint resumes where it was. Missing offsets (data deleted by retention) fail
    the query rather than skip silently.
    """
    reader = (
        spark.readStream.format("kafka")
        .options(**spark_options(bootstrap_servers, client_properties))
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets)
        .option("failOnDataLoss", "true")
    )
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    return reader.load()


def kafka_timestamp_date() -> Column:
    """The UTC date of a Kafka record's timestamp, for partitioning."""
    return F.to_date(F.col("kafka_timestamp"))


def record_columns(kafka_rows: DataFrame) -> DataFrame:
    """Rows of Spark's Kafka source as the columns the jobs' batch functions take.

    Those are ``key, value`` (bytes), ``topic, partition, offset`` and ``timestamp_ms``.
    """
    return kafka_rows.select(
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        F.unix_millis("timestamp").alias("timestamp_ms"),
    )


def raw_records(kafka_rows: DataFrame) -> DataFrame:
    """Keep a Kafka record as it came: key and value as text, and where it came from.

    Parameters
    ----------
    kafka_rows : DataFrame
        Rows of Spark's Kafka source.

    Returns
    -------
    DataFrame
        ``key``, ``value`` (UTF-8 text), ``topic``, ``partition``, ``offset``,
        ``kafka_timestamp`` and ``date`` (of the timestamp, UTC).
    """
    return (
        kafka_rows.withColumnRenamed("timestamp", "kafka_timestamp")
        .withColumn("date", kafka_timestamp_date())
        .select(
            F.col("key").cast("string").alias("key"),
            F.col("value").cast("string").alias("value"),
            "topic",
            "partition",
            "offset",
            "kafka_timestamp",
            "date",
        )
    )
