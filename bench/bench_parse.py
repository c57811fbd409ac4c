"""Where the card operator's inputs are parsed: the contract in Python workers, or the JVM.

Usage::

    .venv/bin/python bench/bench_parse.py [--data data/generated] [--rows 200000]
        [--repeat 3]

Encodes ``--rows`` payments of ``--data`` (the lake layout; generated if missing) as
the producer does, caches them as Kafka-like rows in a ``local[2]`` session, and
times, each to the ``noop`` sink, side by side:

- ``python``: what the scoring query runs: the contract's parser in ``mapInPandas``
  (``scoring.records.operator_inputs``);
- ``jvm``: a JVM parse that could stand in for it only if it never takes a record the
  contract refuses: ``from_json``, plus the checks that make a record certainly valid
  (a flat JSON object with no escapes, each contract field at most once, strings where
  the contract wants strings, a canonical UTC time, a JSON number for the amount,
  schema_version 1, ranges and channel);
- the pieces of ``jvm`` alone: ``from_json``, the flat-object pattern, the per-field
  count of keys, and Spark's ``try_parse_json`` and ``json_object_keys`` for reference.

Prints the median seconds of each over ``--repeat`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F  # noqa: N812
from pyspark.sql import types as T  # noqa: N812

from fraudstream import config, lake, schemas
from fraudstream.data import simulate
from fraudstream.scoring import operator
from fraudstream.scoring import records as card_records
from fraudstream.spark import get_session

WS = "[ \\t\\n\\r]*"
NUMBER = "-?(?:0|[1-9][0-9]*)(?:\\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
STRING = '"[^"\\\\\\x00-\\x1f]*"'
PAIR = f"{STRING}{WS}:{WS}(?:null|true|false|{STRING}|{NUMBER})"
FLAT_OBJECT = f"^\\{{{WS}(?:{PAIR}{WS}(?:,{WS}{PAIR}{WS})*)?\\}}$"
TIME = (
    "[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,3})?Z"
)
_PARSED = T.StructType(
    [
        T.StructField(f.name, T.StringType() if f.name == "event_time" else f.dataType)
        for f in schemas.PAYMENT_SCHEMA.fields
    ]
)


def _records(spark, data: Path, rows: int, folder: Path) -> DataFrame:
    events = lake.read_events(data).slice(0, rows)
    values = schemas.encode_payments(events).cast(pa.binary())
    count = len(values)
    table = pa.table(
        {
            "key": events["card_id"].cast(pa.binary()),
            "value": values,
            "topic": pa.array([config.TOPIC_PAYMENTS] * count),
            "partition": pa.array([i % 4 for i in range(count)], pa.int32()),
            "offset": pa.array(range(count), pa.int64()),
            "timestamp_ms": pa.array([0] * count, pa.int64()),
        }
    )
    pq.write_table(table, folder / "records.parquet")
    records = spark.read.parquet(str(folder / "records.parquet")).repartition(2).cache()
    records.count()
    return records


def _key_counts(text: Column) -> Column:
    once = F.lit(True)
    for name in schemas.PAYMENT_COLUMNS:
        once = once & (F.regexp_count(text, F.lit(f'"{name}"{WS}:')) <= 1)
    return once


def jvm_inputs(records: DataFrame) -> DataFrame:
    """The operator's inputs parsed in the JVM, null where a record is not certainly valid."""
    text = F.col("value").cast("string")
    certain = F.is_valid_utf8(text) & text.rlike(FLAT_OBJECT) & _key_counts(text)
    for name in ("transaction_id", "card_id", "merchant_id"):
        certain = certain & text.rlike(f'"{name}"{WS}:{WS}"[^"]+"')
    certain = (
        certain
        & text.rlike(f'"event_time"{WS}:{WS}"{TIME}"')
        & text.rlike(f'"amount"{WS}:{WS}{NUMBER}{WS}[,}}]')
        & text.rlike(f'"schema_version"{WS}:{WS}1{WS}[,}}]')
    )
    parsed = records.select(
        *card_records.RECORD_COLUMNS, F.from_json(text, _PARSED).alias("p"), certain.alias("ok")
    ).select(*card_records.RECORD_COLUMNS, "ok", "p.*")
    event_time = F.try_to_timestamp(F.col("event_time"))
    amount = F.col("amount")
    valid = F.col("ok") & event_time.isNotNull() & operator._is_finite(amount) & (amount > 0)
    for name, bound in (("lat", 90.0), ("lon", 180.0)):
        value = F.col(name)
        valid = valid & (value.isNull() | (operator._is_finite(value) & (F.abs(value) <= bound)))
    valid = valid & (F.col("channel").isNull() | F.col("channel").isin(*schemas.CHANNELS))
    return operator.card_rows(
        parsed.withColumn("event_time", event_time).where(F.coalesce(valid, F.lit(False)))
    )


def _seconds(frame: DataFrame, repeat: int) -> list[float]:
    runs = []
    for _ in range(repeat + 1):
        started = time.perf_counter()
        frame.write.format("noop").mode("overwrite").save()
        runs.append(time.perf_counter() - started)
    return runs[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=config.DATA_DIR / "generated")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not (args.data / lake.EVENTS).is_dir():
        simulate.generate(simulate.SimulationConfig(), args.data)
    spark = get_session("fraudstream-bench-parse", master="local[2]")
    spark.conf.set("spark.sql.shuffle.partitions", "2")
    with tempfile.TemporaryDirectory() as scratch:
        records = _records(spark, args.data, args.rows, Path(scratch))
        text = F.col("value").cast("string")
        kept = records.select(*card_records.RECORD_COLUMNS)
        schema = card_records.inputs_schema(kept.schema)
        candidates = {
            "python (mapInPandas, the contract)": kept.mapInPandas(
                card_records.operator_inputs, schema
            ),
            "jvm (certainly valid, from_json)": jvm_inputs(records),
            "  from_json alone": kept.select("*", F.from_json(text, _PARSED).alias("p")),
            "  flat-object pattern alone": kept.select("*", text.rlike(FLAT_OBJECT)),
            "  key counts alone": kept.select("*", _key_counts(text)),
            "  try_parse_json alone": kept.select("*", F.try_parse_json(text).isNotNull()),
            "  json_object_keys alone": kept.select("*", F.json_object_keys(text)),
        }
        print(f"{records.count():,} records, local[2], median of {args.repeat} warm runs")
        for name, frame in candidates.items():
            runs = _seconds(frame, args.repeat)
            print(f"{name:<40} {statistics.median(runs):6.2f} s  {[round(r, 2) for r in runs]}")


if __name__ == "__main__":
    main()
