"""The raw landing zone: a Kafka topic in Parquet as it is, by a streaming query.

Every record of the topic, once, with the topic, partition and offset it came from,
partitioned by the date of its Kafka timestamp (``./spark-submit.sh ingest``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F  # noqa: N812

from fraudstream.kafka import streams


@dataclass(frozen=True)
class IngestConfig:
    """Which topic the ingest job lands, and where."""

    bootstrap_servers: str
    topic: str
    out: str
    checkpoint: str
    starting_offsets: str = "earliest"
    trigger_interval: str | None = None
    max_offsets_per_trigger: int | None = None


def run(spark: SparkSession, cfg: IngestConfig) -> int:
    """Run the landing query; return the number of records the Parquet folder holds."""
    records = streams.read_stream(
        spark,
        cfg.bootstrap_servers,
        cfg.topic,
        starting_offsets=cfg.starting_offsets,
        max_offsets_per_trigger=cfg.max_offsets_per_trigger,
    ).transform(streams.raw_records)
    writer = (
        records.writeStream.format("parquet")
        .option("path", cfg.out)
        .option("checkpointLocation", cfg.checkpoint)
        .partitionBy("date")
        .queryName(f"ingest-{cfg.topic}")
    )
    if cfg.trigger_interval:
        query = writer.trigger(processingTime=cfg.trigger_interval).start()
    else:
        query = writer.trigger(availableNow=True).start()
    query.awaitTermination()
    return spark.read.parquet(cfg.out).count()


def summarise(spark: SparkSession, cfg: IngestConfig) -> str:
    """Describe what the Parquet folder holds: counts per date and partition, and a sample."""
    landed = spark.read.parquet(cfg.out)
    per_date = landed.groupBy("date").count().orderBy("date").collect()
    per_partition = landed.groupBy("partition").agg(
        F.count("*").alias("records"), F.min("offset").alias("first"), F.max("offset").alias("last")
    )
    lines = [f"{cfg.out}: {landed.count()} records of topic {cfg.topic}"]
    lines += [f"  date={row['date']}: {row['count']} records" for row in per_date]
    lines += [
        f"  partition {row['partition']}: offsets {row['first']}..{row['last']} "
        f"({row['records']} records)"
        for row in per_partition.orderBy("partition").collect()
    ]
    sample = landed.orderBy("partition", "offset").select("value").first()
    if sample is not None:
        lines.append(f"  first value: {sample['value'][:160]}")
    return "\n".join(lines)
