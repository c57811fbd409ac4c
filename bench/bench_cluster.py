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
cores in both cases. ``--executor-cores 1,2`` runs the cluster once per number of
executor cores (``spark.cores.max``).

On the cluster it also reports where the job's CPU time went: the driver (the
spark-submit process tree: its JVM and its Python, as this script's reaped children)
against the executors (the workers' process trees, executors and their Python workers
included), each as the difference over the run.

``--compare-with DIR`` also runs every setup with the code of another checkout of the
project (``DIR/spark-submit.sh``, say a worktree of an earlier commit), on the same
topics and model, taking turns with this one: a change and its baseline side by side,
under the same load.

Usage::

    .venv/bin/python bench/bench_cluster.py [--payments 200000] [--runs 3]
        [--master spark://127.0.0.1:7077] [--max-offsets-per-trigger 100000]
        [--executor-cores 2] [--compare-with DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
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

from fraudstream import config, schemas  # noqa: E402
from fraudstream.data import produce, simulate  # noqa: E402
from fraudstream.ops import broker as local_broker  # noqa: E402
from fraudstream.ops import spark_cluster as local_cluster  # noqa: E402
from fraudstream.scoring import views  # noqa: E402

BATCH_LINE = re.compile(r"\bbatch \d+: ([\d,]+) records .* batch ([\d.]+) s")
_TICKS = os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(root: int) -> float:
    """CPU seconds of a process tree: each live process's own time and that of its
    children it has reaped (a finished executor's time is in its worker's)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, parent = int(entry.name), int(fields[1])
        children.setdefault(parent, []).append(pid)
        times[pid] = sum(int(f) for f in fields[11:15]) / _TICKS  # utime stime cutime cstime
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def _reaped_children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


def run_score(
    master: str,
    topics: dict,
    model: Path,
    root: Path,
    env: dict,
    cap: int,
    cores: int | None = None,
    workers: list[int] = (),
    code: Path = ROOT,
) -> dict:
    """One ``--available-now`` run; returns payments, batch seconds, wall seconds and the
    CPU seconds of the driver and of the ``workers``' process trees."""
    conf = ["--conf", f"spark.cores.max={cores}"] if cores else []
    args = [
        "--master", master, *conf, "score", "--available-now", "--model", str(model),
        "--payments-topic", topics["payments"], "--labels-topic", topics["labels"],
        "--alerts-topic", topics["alerts"], "--dead-letter-topic", topics["dlq"],
        "--out", str(root / "lake"), "--checkpoint", str(root / "checkpoints"),
        "--max-offsets-per-trigger", str(cap),
    ]  # fmt: skip
    driver_before = _reaped_children_cpu()
    workers_before = sum(_tree_cpu_seconds(pid) for pid in workers)
    began = time.monotonic()
    result = subprocess.run(
        ["./spark-submit.sh", *args], cwd=code, env=env, capture_output=True, text=True
    )
    wall = time.monotonic() - began
    # The worker reaps its executor once the application ends: wait for it.
    time.sleep(3 if workers else 0)
    executors_cpu = sum(_tree_cpu_seconds(pid) for pid in workers) - workers_before
    driver_cpu = _reaped_children_cpu() - driver_before
    (root / "job.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"bench_cluster: the score job failed on {master}; see {root / 'job.log'}")
    batches = [
        (int(match.group(1).replace(",", "")), float(match.group(2)))
        for match in map(BATCH_LINE.search, (result.stdout + result.stderr).splitlines())
        if match
    ]
    scored = views.count_rows(root / "lake", views.SCORED)
    # The first micro-batch also pays for the executors' first Kafka reads (connections,
    # JIT); the later ones show the steady rate.
    later = batches[1:] or batches
    return {
        "payments": scored,
        "batch_s": sum(seconds for _, seconds in batches),
        "steady": sum(n for n, _ in later) / max(sum(s for _, s in later), 1e-9),
        "wall_s": wall,
        "driver_cpu": driver_cpu,
        "executors_cpu": executors_cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--master", default=local_cluster.LocalCluster().master_url)
    parser.add_argument("--max-offsets-per-trigger", type=int, default=100_000)
    parser.add_argument("--brokers", default=config.bootstrap_servers())
    parser.add_argument(
        "--executor-cores",
        default="2",
        help="comma-separated numbers of executor cores for the cluster (spark.cores.max)",
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="DIR",
        help="another checkout of the project: each setup also runs with its code",
    )
    args = parser.parse_args(argv)
    if args.compare_with and not (args.compare_with / "spark-submit.sh").is_file():
        parser.error(f"--compare-with: no spark-submit.sh in {args.compare_with}")
    core_counts = [int(n) for n in args.executor_cores.split(",")]

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
    workers = [
        pid
        for name in cluster.names()[1:]
        if (pid := local_cluster.running_pid(cluster, name)) is not None
    ]
    setups = {"local[2]": ("local[2]", None, ROOT)}
    for cores in core_counts:
        setups[f"{args.master} x{cores}"] = (args.master, cores, ROOT)
    if args.compare_with:
        for name, (master, cores, _) in list(setups.items()):
            setups[f"{name} [{args.compare_with.name}]"] = (master, cores, args.compare_with)
    results: dict[str, list[dict]] = {name: [] for name in setups}
    for run in range(args.runs):
        for name, (master, cores, code) in setups.items():
            root = work / f"{re.sub(r'[^a-z0-9]+', '-', name)}-{run}"
            result = run_score(
                master,
                topics,
                model,
                root,
                env,
                args.max_offsets_per_trigger,
                cores=cores,
                workers=workers if cores else [],
                code=code,
            )
            results[name].append(result)
            cpu = ""
            if cores:
                share = result["driver_cpu"] / (result["driver_cpu"] + result["executors_cpu"])
                cpu = (
                    f"; CPU: driver {result['driver_cpu']:.1f} s, executors "
                    f"{result['executors_cpu']:.1f} s, driver share {share:.0%}"
                )
            print(
                f"run {run + 1} {name}: {result['payments']:,} payments scored, "
                f"{result['payments'] / result['batch_s']:,.0f}/s over the batches "
                f"({result['batch_s']:.1f} s), {result['steady']:,.0f}/s after the first batch, "
                f"{result['payments'] / result['wall_s']:,.0f}/s "
                f"wall clock ({result['wall_s']:.1f} s){cpu}",
                flush=True,
            )
    print()
    print(
        f"median of {args.runs} runs, {payments.num_rows:,} payments, --available-now, "
        f"--max-offsets-per-trigger {args.max_offsets_per_trigger} (payments/s; the driver's "
        f"share of the job's CPU on the cluster):"
    )
    print(
        f"{'master':<30} {'all batches':>12} {'after the first':>16} {'wall clock':>11} "
        f"{'driver CPU':>11}"
    )
    for name, runs in results.items():
        batch = statistics.median(r["payments"] / r["batch_s"] for r in runs)
        steady = statistics.median(r["steady"] for r in runs)
        wall = statistics.median(r["payments"] / r["wall_s"] for r in runs)
        share = "-"
        if setups[name][1]:
            share = "{:.0%}".format(
                statistics.median(
                    r["driver_cpu"] / (r["driver_cpu"] + r["executors_cpu"]) for r in runs
                )
            )
        print(f"{name:<30} {batch:>12,.0f} {steady:>16,.0f} {wall:>11,.0f} {share:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
