"""How long the non-card features take in Spark, next to ``features.compute`` in pandas.

Usage::

    .venv/bin/python bench/bench_spark_features.py [--data /tmp/bench-spark-features]
        [--master local[2]] [--shuffle-partitions 2] [--repeat 1] [--check]

Generates the simulator's default data set into ``--data`` if it is not there (all
scenarios, about 1.7 M payments), then, in the same process and on the same data:

- ``features.compute`` (all features, pandas, one core in the driver) from the Parquet
  lake read into pandas;
- ``spark_features.non_card_features`` from the same Parquet lake read by Spark, run to
  the end with the ``noop`` sink (nothing collected, nothing written).

Prints seconds and payments per second of each (median over repeats). ``--check``
also collects the Spark result and reports the largest difference from pandas's
columns on a hashed sample of one payment in 20, so a bench run doubles as a parity
check at full size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from pyspark.sql import functions as F  # noqa: N812

from fraudstream import features, lake, schemas
from fraudstream.data import simulate
from fraudstream.ml import spark_features as sf
from fraudstream.spark import get_session

#: The full-size check compares one payment in this many.
CHECK_SAMPLE = 20


def _timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "bench-spark-features"
    )
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--shuffle-partitions", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--check", action="store_true", help="compare with pandas at full size")
    args = parser.parse_args()
    if not (args.data / "events").is_dir():
        simulate.generate(simulate.SimulationConfig(), args.data)

    events = lake.read_events(args.data).to_pandas()
    labels = lake.read_labels(args.data).to_pandas()
    n = len(events)

    def pandas_run():
        facts = features.fraud_facts(events, labels)
        return features.compute(events, facts)

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = get_session("bench-spark-features", master=args.master)
    spark.conf.set("spark.sql.shuffle.partitions", str(args.shuffle_partitions))
    spark.sparkContext.setLogLevel("ERROR")
    payments = (
        spark.read.schema(schemas.PAYMENT_SCHEMA)
        .parquet(str(args.data / lake.EVENTS))
        .select(*schemas.PAYMENT_COLUMNS)
    )
    label_events = (
        spark.read.schema(schemas.LABEL_SCHEMA)
        .parquet(str(args.data / lake.LABELS))
        .select(*schemas.LABEL_COLUMNS)
    )
    result = sf.non_card_features(payments, label_events)

    def spark_run():
        result.write.format("noop").mode("overwrite").save()

    pandas_name = f"pandas features.compute (all {len(features.FEATURE_COLUMNS)} features)"
    spark_name = f"spark non_card_features ({len(sf.OUTPUT_COLUMNS)} features)"
    seconds = {pandas_name: [], spark_name: []}
    for _ in range(args.repeat):
        seconds[pandas_name].append(_timed(pandas_run))
        seconds[spark_name].append(_timed(spark_run))
    print(f"data {args.data}: {n:,} payments, master {args.master}, {args.repeat} run(s)")
    for name, values in seconds.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {name:<44} {median:7.1f} s  {n / median:10,.0f} payments/s  ({runs})")
    if args.check:
        # One payment in CHECK_SAMPLE, chosen by a hash of its id: collecting all 1.7 M
        # rows through toPandas overflows the driver's default 1 GB heap.
        sample = result.where(F.abs(F.xxhash64("transaction_id")) % CHECK_SAMPLE == 0)
        got = sample.toPandas().set_index("transaction_id")
        expected = pandas_run().set_index("transaction_id").loc[got.index, sf.OUTPUT_COLUMNS]
        worst = (got[sf.OUTPUT_COLUMNS] - expected).abs().max().max()
        print(f"  largest difference from pandas over {len(got):,} payments: {worst:.3g}")
    spark.stop()


if __name__ == "__main__":
    main()
