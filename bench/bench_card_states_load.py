"""How long the card operator takes to load millions of cards' initial states.

The states are those of ``bench/bench_bank_scale.py`` (built by the ``card_states`` job's
code from a synthetic history, kept under ``var/bench-bank/``). A streaming query reads
them as the score job does (``operator.read_card_states``, a file stream: every state
goes into the operator as an input row at the first micro-batch) beside a file stream of
a few payments, and writes the operator's output to Spark's ``noop`` sink: the load
alone, without Kafka, the model or the views. Prints the first micro-batch's time, the
checkpoint's size per card and the driver JVM's peak RSS.

Usage::

    .venv/bin/python bench/bench_card_states_load.py [--cards 1000000]
        [--history-per-card 3] [--driver-memory 4g] [--partitions 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fraudstream import config  # noqa: E402

PAYMENTS = 2_000


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _peak_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    """Sample a process's resident set (VmHWM is the kernel's own peak) until stopped."""
    status = Path(f"/proc/{pid}/status")
    while not stop.wait(1.0):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        except OSError:
            return


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=1_000_000)
    parser.add_argument("--history-per-card", type=int, default=3)
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--partitions", type=int, default=2, help="state partitions")
    args = parser.parse_args(argv)

    import os

    import bench_bank_scale
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F  # noqa: N812

    states = bench_bank_scale.states_folder(args.cards, args.history_per_card)
    if not (states / "_SUCCESS").exists():
        print(f"building the states of {args.cards:,} cards ...", flush=True)
        bench_bank_scale.build_states(states, args.cards, args.history_per_card)
        SparkSession.getActiveSession().stop()
    os.environ.setdefault("SPARK_CONF_DIR", str(config.PROJECT_ROOT / "conf" / "spark"))
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("fraudstream-bench-card-states-load")
        .config("spark.driver.memory", args.driver_memory)
        .config("spark.jars", str(config.CARD_OPERATOR_JAR))
        .config("spark.sql.shuffle.partitions", str(args.partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    from fraudstream.scoring import operator

    work = config.VAR_DIR / "bench-card-states-load"
    shutil.rmtree(work, ignore_errors=True)
    start_ms = int(bench_bank_scale.START.timestamp() * 1000)
    cards = F.col("id") * (args.cards // PAYMENTS)
    spark.range(PAYMENTS).select(
        F.format_string("c%09d", cards).alias("card_id"),
        F.format_string("l%012d", F.col("id")).alias("transaction_id"),
        (F.lit(start_ms) + F.col("id") * 1000).alias("time_ms"),
        F.lit(1_000).cast("long").alias("cents"),
        F.lit(0).cast("long").alias("lat_e6"),
        F.lit(0).cast("long").alias("lon_e6"),
        F.lit(False).alias("located"),
        F.lit(None).cast("string").alias("country"),
    ).write.parquet(str(work / "payments"))
    payments = spark.readStream.schema(spark.read.parquet(str(work / "payments")).schema).parquet(
        str(work / "payments")
    )
    out = operator.card_aggregates(
        payments, initial_states=operator.read_card_states(spark, states)
    )
    jvm = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    stop, peak = threading.Event(), [0]
    threading.Thread(target=_peak_rss, args=(jvm, stop, peak), daemon=True).start()
    started = time.perf_counter()
    query = (
        out.writeStream.format("noop")
        .option("checkpointLocation", str(work / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    seconds = time.perf_counter() - started
    stop.set()
    state_bytes = _folder_bytes(work / "checkpoint" / "state")
    print(
        f"cards {args.cards:,}: first micro-batch (load + {PAYMENTS:,} payments) {seconds:.1f} s "
        f"({args.cards / seconds:,.0f} cards/s), {args.partitions} state partitions, driver "
        f"memory {args.driver_memory}; state in the checkpoint {state_bytes / 2**20:,.0f} MB "
        f"({state_bytes / args.cards:.0f} bytes a card); JVM peak RSS {peak[0] / 2**20:,.0f} MB",
        flush=True,
    )
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
