"""How fast the JVM card operator makes card features, batch and streaming, and its state size.

Usage::

    .venv/bin/python bench/bench_operator.py [--data /tmp/bench-operator] [--repeat 3]
        [--files-per-trigger 7] [--driver-memory 4g]

Generates the simulator's default data set into ``--data`` if it is not there (all
scenarios, about 1.68 M payments, Parquet by date), then, in one run on ``local[2]``:

1. batch: events → ``card_rows`` → ``card_aggregates`` into Spark's ``noop`` sink (the
   operator alone), and the same collected to pandas with
   ``features.card_features_from_aggregates`` (the card features training would use);
2. ``features.compute`` over the same events in pandas (all 27 features: the card part
   cannot be run alone; it is most of the time);
3. streaming: the same events as a Parquet file stream, ``--files-per-trigger`` days per
   micro-batch, RocksDB with changelog checkpointing, then the state each card holds at
   the end, read back with Spark's state data source (bytes of the card's value).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fraudstream import features, lake, schemas
from fraudstream.data import simulate
from fraudstream.scoring import operator


def _timed(step) -> tuple[float, object]:
    started = time.perf_counter()
    result = step()
    return time.perf_counter() - started, result


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _payments_held(blob: bytes) -> int:
    """The payment count of a card's state (``CardHistory``: version byte, then a varint)."""
    value, shift = 0, 0
    for byte in blob[1:]:
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
        shift += 7
    raise ValueError("truncated card state")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "bench-operator")
    # The first run includes the JVM's warm-up (JIT, code generation): the median of 3.
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--files-per-trigger", type=int, default=7)
    parser.add_argument("--driver-memory", default="4g")
    args = parser.parse_args()
    if not (args.data / "events").is_dir():
        payments, labels = simulate.simulate(simulate.SimulationConfig())
        lake.write_events(payments, args.data)
        lake.write_labels(labels, args.data)

    from fraudstream.spark import get_session

    # The launcher reads it before the driver's JVM starts (collecting 1.7 M rows of
    # aggregates to pandas needs more than the default 1 GB).
    os.environ.setdefault("SPARK_DRIVER_MEMORY", args.driver_memory)
    spark = get_session("bench-operator", master="local[2]")
    spark.conf.set("spark.sql.shuffle.partitions", "2")
    events_path = str(args.data / "events")
    events_frame = spark.read.schema(schemas.PAYMENT_SCHEMA).parquet(events_path)
    n = events_frame.count()
    pandas_events = lake.read_events(args.data, features.EVENT_COLUMNS).to_pandas()
    print(f"{n:,} payments, {pandas_events['card_id'].nunique():,} cards, local[2]")

    rows = operator.card_rows(events_frame)
    runs: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        seconds, _ = _timed(
            lambda: operator.card_aggregates(rows).write.format("noop").mode("overwrite").save()
        )
        runs.setdefault("operator → noop sink", []).append(seconds)

        def card_features():
            aggregates = operator.card_aggregates(rows).toPandas()
            own = features._card_rows(pandas_events).drop_duplicates("transaction_id")
            first = aggregates.loc[~aggregates["duplicate"]].set_index("transaction_id")
            own = own.set_index("transaction_id").loc[first.index]
            return features.card_features_from_aggregates(first, own)

        seconds, _ = _timed(card_features)
        runs.setdefault("operator → pandas → card features", []).append(seconds)
        seconds, _ = _timed(lambda: features.compute(pandas_events))
        runs.setdefault("features.compute (pandas, all features)", []).append(seconds)

    with tempfile.TemporaryDirectory() as scratch:
        checkpoint, out = Path(scratch) / "checkpoint", Path(scratch) / "out"
        stream = (
            spark.readStream.schema(schemas.PAYMENT_SCHEMA)
            .option("maxFilesPerTrigger", args.files_per_trigger)
            .parquet(events_path)
        )
        query = (
            operator.card_aggregates(operator.card_rows(stream))
            .writeStream.format("parquet")
            .option("path", str(out))
            .option("checkpointLocation", str(checkpoint))
            .trigger(availableNow=True)
        )
        seconds, started = _timed(lambda: query.start())
        stream_seconds, _ = _timed(started.awaitTermination)
        stream_seconds += seconds
        batches = [p["numInputRows"] for p in started.recentProgress]
        state = (
            spark.read.format("statestore")
            .option("stateVarName", "history")
            .load(str(checkpoint))
            .selectExpr("value.value AS blob")
            .toPandas()
        )
        state["bytes"] = state["blob"].map(len)
        state["held"] = state["blob"].map(_payments_held)
        checkpoint_bytes = _folder_bytes(checkpoint)
    print(f"  {'step':<42} {'seconds':>8} {'payments/s':>11}  (median; runs)")
    for step, values in runs.items():
        median = statistics.median(values)
        each = " / ".join(f"{value:.1f}" for value in values)
        print(f"  {step:<42} {median:8.1f} {n / median:11,.0f}  ({each})")
    print(
        f"  {'streaming, ' + str(len(batches)) + ' micro-batches (first included)':<42} "
        f"{stream_seconds:8.1f} {n / stream_seconds:11,.0f}"
    )
    bytes_per_card = state["bytes"].to_numpy()
    held = state["held"].to_numpy()
    print(
        f"state after the stream: {len(state):,} cards, bytes per card mean "
        f"{bytes_per_card.mean():.0f}, median {np.median(bytes_per_card):.0f}, p99 "
        f"{np.percentile(bytes_per_card, 99):.0f}; payments held per card mean {held.mean():.1f}"
        f" ({bytes_per_card.sum() / max(held.sum(), 1):.1f} bytes a payment); checkpoint "
        f"{checkpoint_bytes / 1e6:.1f} MB"
    )
    spark.stop()


if __name__ == "__main__":
    main()
