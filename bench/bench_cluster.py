"""Benchmark the score job on the local standalone cluster against ``local[2]``, same data.

Simulates N payments (and their labels) once, publishes them to fresh topics, trains a
small random forest on the committed sample (exported to a folder, so no registry is
needed), then runs ``./spark-submit.sh --master M score --available-now`` over the whole
topic several times per master, each run on a fresh output root and checkpoint, taking
turns. Per run it reports the processing rate (payments over the sum of micro-batch
durations, from the job's batch lines) and the wall-clock rate (payments over the whole
run, with Spark's start-up, the executors' start and the packed environment's
unpacking). Prints the medians side by side.

The cluster (``fraudstream spark start``: two workers of one core) and ``local[2]`` get
the same two task slots; the driver, the broker and this script share the same two
cores in both cases.

Usage::

    .venv/bin/python bench/bench_cluster.py [--payments 200000] [--runs 3]
        [--master spark://127.0.0.1:7077] [--max-offsets-per-trigger 100000]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fraudstream import broker as local_broker  # noqa: E402
from fraudstream import config, produce, schemas, simulate, stream  # noqa: E402
from fraudstream import spark_cluster as local_cluster  # noqa: E402

BATCH_LINE = re.compile(r"^batch \d+: ([\d,]+) records .* batch ([\d.]+) s")


def simulate_payments(count: int):
    """At least ``count`` simulated payments (about 9,000 a day for 5,000 customers)."""
    days = max(count // 8000 + 2, 8)
    settings = simulate.SimulationConfig(
        customers=5000, terminals=10000, days=days, start_date=date(2018, 4, 1), seed=0
    )
    payments, labels = simulate.simulate(settings)
    if payments.num_rows < count:
        raise SystemExit(f"bench_cluster: the simulation gave only {payments.num_rows:,} payments")
    payments = payments.slice(0, count)
    last = payments["event_time"][-1]
    import pyarrow.compute as pc

    return payments, labels.filter(pc.less_equal(labels["reported_time"], last))


def export_model(work: Path, env: dict) -> Path:
    """Train a random forest on the committed sample and export it to a folder."""
    args = [
        "--data", str(config.SAMPLE_DIR), "--models", "random_forest",
        "--folds", "1", "--train-days", "4", "--delay-days", "2", "--test-days", "4",
        "--k", "5", "--param", "random_forest.max_depth=10",
        "--param", "random_forest.n_estimators=100", "--models-dir", str(work / "models"),
    ]  # fmt: skip
    mlflow = env | {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    subprocess.run(
        ["./spark-submit.sh", "train", *args],
        cwd=ROOT,
        env=mlflow,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return work / "models" / "fraudstream"


def run_score(master: str, topics: dict, model: Path, root: Path, env: dict, cap: int) -> dict:
    """One ``--available-now`` run; returns payments, batch seconds and wall seconds."""
    args = [
        "--master", master, "score", "--available-now", "--model", str(model),
        "--payments-topic", topics["payments"], "--labels-topic", topics["labels"],
        "--alerts-topic", topics["alerts"], "--dead-letter-topic", topics["dlq"],
        "--out", str(root / "lake"), "--checkpoint", str(root / "checkpoints"),
        "--max-offsets-per-trigger", str(cap),
    ]  # fmt: skip
    began = time.monotonic()
    result = subprocess.run(
        ["./spark-submit.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall = time.monotonic() - began
    (root / "job.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"bench_cluster: the score job failed on {master}; see {root / 'job.log'}")
    batches = [
        (int(match.group(1).replace(",", "")), float(match.group(2)))
        for match in map(BATCH_LINE.match, result.stdout.splitlines())
        if match
    ]
    scored = stream.count_rows(root / "lake", stream.SCORED)
    # The first micro-batch also pays for the executors' first Kafka reads (connections,
    # JIT); the later ones show the steady rate.
    later = batches[1:] or batches
    return {
        "payments": scored,
        "batch_s": sum(seconds for _, seconds in batches),
        "steady": sum(n for n, _ in later) / max(sum(s for _, s in later), 1e-9),
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--master", default=local_cluster.LocalCluster().master_url)
    parser.add_argument("--max-offsets-per-trigger", type=int, default=100_000)
    parser.add_argument("--brokers", default=config.bootstrap_servers())
    args = parser.parse_args(argv)

    cluster = local_cluster.LocalCluster()
    if args.master == cluster.master_url and len(local_cluster.registered_workers(cluster)) < 2:
        raise SystemExit("bench_cluster: start the cluster first: fraudstream spark start")
    env = os.environ | {"SPARK_LOCAL_IP": "127.0.0.1"}
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    suffix = uuid.uuid4().hex[:8]
    topics = {name: f"bench-{name}-{suffix}" for name in ("payments", "labels", "alerts", "dlq")}
    local_broker.create_topics(args.brokers, {t: {} for t in topics.values()}, partitions=4)

    began = time.monotonic()
    payments, labels = simulate_payments(args.payments)
    produce.publish(labels, topics["labels"], args.brokers, encode=schemas.encode_labels)
    produce.publish(payments, topics["payments"], args.brokers)
    print(
        f"{payments.num_rows:,} payments and {labels.num_rows:,} labels simulated and published "
        f"to 4 partitions in {time.monotonic() - began:.0f} s; work folder {work}",
        flush=True,
    )
    model = export_model(work, env)
    results: dict[str, list[dict]] = {"local[2]": [], args.master: []}
    for run in range(args.runs):
        for master in results:
            root = work / f"{re.sub(r'[^a-z0-9]+', '-', master)}-{run}"
            result = run_score(master, topics, model, root, env, args.max_offsets_per_trigger)
            results[master].append(result)
            print(
                f"run {run + 1} {master}: {result['payments']:,} payments scored, "
                f"{result['payments'] / result['batch_s']:,.0f}/s over the batches "
                f"({result['batch_s']:.1f} s), {result['steady']:,.0f}/s after the first batch, "
                f"{result['payments'] / result['wall_s']:,.0f}/s "
                f"wall clock ({result['wall_s']:.1f} s)",
                flush=True,
            )
    print()
    print(
        f"median of {args.runs} runs, {payments.num_rows:,} payments, --available-now, "
        f"--max-offsets-per-trigger {args.max_offsets_per_trigger} (payments/s):"
    )
    print(f"{'master':<26} {'all batches':>12} {'after the first':>16} {'wall clock':>11}")
    for master, runs in results.items():
        batch = statistics.median(r["payments"] / r["batch_s"] for r in runs)
        steady = statistics.median(r["steady"] for r in runs)
        wall = statistics.median(r["payments"] / r["wall_s"] for r in runs)
        print(f"{master:<26} {batch:>12,.0f} {steady:>16,.0f} {wall:>11,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
