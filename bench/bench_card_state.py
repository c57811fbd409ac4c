"""The score job's memory and the state it leaves, with the cards' state in the card
operator, on one simulated population.

The simulator makes ``--customers`` customers (one card each) over ``--days`` days; the
labels and then the payments go into fresh 4-partition topics of the local broker; then
``./spark-submit.sh score --available-now`` scores the topic from the start on a fresh
checkpoint. While the job runs, the script samples the peak resident memory (VmHWM) of
the job's Python driver and of its JVM; at the end it reports those, the rate over the
whole run (start-up included) and the state the job leaves on disk: the card operator's
state store, the driver's newest snapshot and the day tables. The producer and the broker
share the machine with the job.

It used to run the job once per ``--card-state`` mode (``driver``, ``operator``) and
compare the driver's memory side by side; that comparison ended when the driver mode was
removed (the job keeps the cards' state in the card operator only). Its figures stay in
``bench/README.md``.

Usage::

    .venv/bin/python bench/bench_card_state.py [--customers 50000] [--days 40]
        [--max-offsets-per-trigger 200000] [--model models/fraudstream]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_score import folder_mb, machine, peak_memory, score_command  # noqa: E402

from fraudstream import config, schemas  # noqa: E402
from fraudstream.data import produce, simulate  # noqa: E402
from fraudstream.ops import broker as local_broker  # noqa: E402
from fraudstream.ops import process  # noqa: E402


def run_score(args, servers: str, topics: dict, run_dir: Path) -> dict:
    """One ``--available-now`` run into ``run_dir``; its peaks, seconds and state on disk."""
    command = score_command(args, servers, topics, run_dir, "8g", "--available-now")
    log = run_dir / "job.log"
    run_dir.mkdir(parents=True)
    started = time.time()
    with log.open("w") as sink:
        job = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        peaks: dict[str, float] = {}
        while job.poll() is None:
            for name, value in peak_memory(job.pid).items():
                peaks[name] = max(peaks.get(name, 0.0), value)
            time.sleep(1.0)
    seconds = time.time() - started
    if job.returncode != 0:
        raise SystemExit(f"score failed; see {log}")
    checkpoint = run_dir / "checkpoints" / "score"
    snapshots = sorted((checkpoint / "feature-state").glob("batch-*/"))
    return {
        "seconds": seconds,
        **peaks,
        "operator_state_mb": folder_mb(checkpoint / "state"),
        "driver_snapshot_mb": folder_mb(snapshots[-1]) if snapshots else 0.0,
        "day_tables_mb": folder_mb(checkpoint / "day-tables"),
        "batches": sum(
            1
            for line in log.read_text().splitlines()
            if " batch " in f" {line}" and " records -> " in line
        ),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=40)
    parser.add_argument("--max-offsets-per-trigger", type=int, default=200_000)
    parser.add_argument(
        "--model", type=Path, default=config.PROJECT_ROOT / "models" / "fraudstream"
    )
    args = parser.parse_args(argv)
    print(f"machine: {machine()}", flush=True)
    started = time.time()
    events, labels = simulate.simulate(
        simulate.SimulationConfig(
            customers=args.customers, terminals=max(10, args.customers * 2), days=args.days
        )
    )
    cards = len(set(events["card_id"].to_pylist()))
    print(
        f"simulated {events.num_rows:,} payments of {cards:,} cards over {args.days} days "
        f"in {time.time() - started:.0f} s",
        flush=True,
    )
    servers = config.bootstrap_servers(None)
    started_broker = None
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        broker = local_broker.LocalBroker()
        if not process.port_in_use(broker.host, broker.port):
            local_broker.start(broker)
            started_broker = broker
    try:
        suffix = uuid.uuid4().hex[:8]
        topics = {k: f"bench-{suffix}-{k}" for k in ("payments", "labels", "alerts", "dlq")}
        local_broker.create_topics(servers, {t: {} for t in topics.values()}, partitions=4)
        produce.publish(labels, topics["labels"], servers, encode=schemas.encode_labels)
        produce.publish(events, topics["payments"], servers)
        run_dir = config.VAR_DIR / "bench" / f"card-state-{suffix}"
        result = run_score(args, servers, topics, run_dir)
    finally:
        if started_broker is not None:
            local_broker.stop(started_broker)
    print()
    print(f"{events.num_rows:,} payments, {cards:,} cards; log {run_dir / 'job.log'}")
    print(
        f"{'payments/s':>11} {'seconds':>8} {'batches':>8} "
        f"{'driver Python peak MB':>22} {'JVM peak MB':>12} {'operator state MB':>18} "
        f"{'driver snapshot MB':>19} {'day tables MB':>14}"
    )
    print(
        f"{events.num_rows / result['seconds']:>11,.0f} {result['seconds']:>8.0f} "
        f"{result['batches']:>8} {result.get('driver_python_mb', float('nan')):>22,.0f} "
        f"{result.get('jvm_mb', float('nan')):>12,.0f} {result['operator_state_mb']:>18,.1f} "
        f"{result['driver_snapshot_mb']:>19,.1f} {result['day_tables_mb']:>14,.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
