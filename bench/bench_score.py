"""Benchmark the scoring job: sustained throughput and event-to-alert latency at fixed rates.

A producer replays generated payments into a fresh ``payments`` topic at a fixed rate
while ``./spark-submit.sh score`` runs; the rate steps up, and after each step the
producer pauses until the job has caught up. Per step the script reports the rate
offered and achieved, the job's throughput, how long it took to catch up, and the
latency from each payment's produce time (its Kafka timestamp) to its alert's arrival
on ``fraud-alerts`` (seen by a consumer here), p50 and p99. A rate is sustained when
the job catches up within 5 s of the step's end and alert p99 is under 5 s. Then the
naive baseline: a kafka-python consumer that decodes, featurises (same feature code,
over its own window of the last 30 days' payments) and scores (same model) one event at
a time.

The load generator is Kafka's own console producer (Java): kafka-python sends about
9,000 records/s on this machine, less than the rates to measure. It runs on the same
two cores as the job, as the broker does.

Usage::

    .venv/bin/python bench/bench_score.py [--data data/generated] [--model models/fraudstream]
        [--rates 5000,10000,20000] [--step-seconds 30] [--warmup-rate 5000]
        [--warmup-seconds 30] [--max-offsets-per-trigger 200000] [--baseline-seconds 20]
        [--initial-card-states DIR] [--spark-conf K=V] [--driver-memory 4g]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fraudstream import config, features, lake, schemas  # noqa: E402
from fraudstream.data import produce  # noqa: E402
from fraudstream.kafka import clients  # noqa: E402
from fraudstream.ops import broker as local_broker  # noqa: E402
from fraudstream.ops import process  # noqa: E402
from fraudstream.scoring import model as scoring_model  # noqa: E402
from fraudstream.scoring import processor, views  # noqa: E402

SUSTAIN_CATCH_UP_S = 5.0
SUSTAIN_P99_S = 5.0


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, {platform.platform()}"


#: A micro-batch's log line: its records and its duration.
BATCH_LINE = re.compile(r"\bbatch \d+: ([\d,]+) records -> .* batch ([\d.]+) s")


class JobOutput(threading.Thread):
    """Reads the job's output; keeps the micro-batch lines with the time they were seen."""

    def __init__(self, process, log_path: Path):
        super().__init__(daemon=True)
        self.process = process
        self.log_path = log_path
        self.batches: list[tuple[float, int, float]] = []  # (seen at, records, duration s)
        self.lines: list[str] = []

    def run(self):
        with self.log_path.open("w") as log:
            for raw in self.process.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log.write(line + "\n")
                self.lines.append(line)
                batch = BATCH_LINE.search(line)
                if batch:
                    records = int(batch.group(1).replace(",", ""))
                    duration = float(batch.group(2))
                    self.batches.append((time.time(), records, duration))

    def processed(self) -> int:
        return sum(records for _, records, _ in self.batches)


class AlertConsumer(threading.Thread):
    """Records when each alert arrives on the alerts topic."""

    def __init__(self, servers: str, topic: str):
        super().__init__(daemon=True)
        self.consumer = clients.consumer(servers)
        self.topic = topic
        self.arrivals: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self):
        from kafka import TopicPartition

        parts = [
            TopicPartition(self.topic, p) for p in self.consumer.partitions_for_topic(self.topic)
        ]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)
        while not self.stop.is_set():
            for records in self.consumer.poll(timeout_ms=200).values():
                now = time.time()
                for record in records:
                    alert = json.loads(record.value)
                    self.arrivals.setdefault(alert["transaction_id"], now)
        self.consumer.close()


class Producer:
    """Kafka's console producer, fed ``key<TAB>value`` lines at a chosen rate."""

    def __init__(self, servers: str, topic: str):
        log_config = config.VAR_DIR / "kafka" / "log4j2.properties"
        self.process = subprocess.Popen(
            [
                process.java(),
                "-Xmx512m",
                "-cp",
                local_broker._classpath(),
                f"-Dlog4j2.configurationFile={log_config}",
                "org.apache.kafka.tools.ConsoleProducer",
                "--bootstrap-server",
                servers,
                "--topic",
                topic,
                "--property",
                "parse.key=true",
                "--property",
                "key.separator=\t",
                "--producer-property",
                "acks=all",
                "--producer-property",
                "linger.ms=5",
                "--producer-property",
                "batch.size=262144",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def send_at_rate(self, lines: list[bytes], rate: float) -> tuple[float, float]:
        """Write ``lines`` at ``rate`` per second; return (start, end) wall times."""
        start = time.time()
        sent = 0
        while sent < len(lines):
            due = min(len(lines), int((time.time() - start) * rate) + 1)
            if due > sent:
                self.process.stdin.write(b"".join(lines[sent:due]))
                self.process.stdin.flush()
                sent = due
            time.sleep(0.01)
        return start, time.time()

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


def _children(pid: int) -> list[int]:
    """Child processes of every thread of ``pid`` (a JVM starts Python from any thread)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def peak_memory(root: int) -> dict[str, float]:
    """Peak resident memory (VmHWM, MB) of the job's JVM and of its Python driver."""
    peaks: dict[str, float] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        todo.extend(_children(pid))
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        kb = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0
        )
        if "jobs/score.py" in command and "java" not in command.split(" ")[0]:
            peaks["driver_python_mb"] = max(peaks.get("driver_python_mb", 0), kb / 1024)
        elif command.split(" ")[0].endswith("java"):
            peaks["jvm_mb"] = max(peaks.get("jvm_mb", 0), kb / 1024)
    return peaks


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def score_command(args, servers, topics, run_dir: Path, driver_memory: str, *extra) -> list:
    """``./spark-submit.sh score`` on the benchmark's topics, into ``run_dir``."""
    confs = [item for conf in getattr(args, "spark_conf", []) for item in ("--conf", conf)]
    return [
        str(ROOT / "spark-submit.sh"),
        "--driver-memory", driver_memory,
        *confs,
        "score",
        "--brokers", servers,
        "--model", str(args.model),
        "--payments-topic", topics["payments"],
        "--labels-topic", topics["labels"],
        "--alerts-topic", topics["alerts"],
        "--dead-letter-topic", topics["dlq"],
        "--out", str(run_dir / "lake"),
        "--checkpoint", str(run_dir / "checkpoints"),
        "--max-offsets-per-trigger", str(args.max_offsets_per_trigger),
        *extra,
    ]  # fmt: skip


def encode_lines(events: pd.DataFrame) -> list[bytes]:
    return [
        row["card_id"].encode() + b"\t" + schemas.encode_payment(row) + b"\n"
        for row in events.to_dict("records")
    ]


def run_job(args, servers, topics, run_dir) -> tuple[list[dict], dict]:
    events = lake.read_events(args.data).to_pandas()
    needed = int(
        args.warmup_rate * args.warmup_seconds + sum(r * args.step_seconds for r in args.rates)
    )
    if needed > len(events):
        raise SystemExit(f"{args.data} holds {len(events):,} payments; the plan needs {needed:,}.")
    events = events.iloc[:needed].reset_index(drop=True)
    print(f"encoding {len(events):,} payments ...", flush=True)
    lines = encode_lines(events)
    # The labels of these payments, all published before the run (as in a replay).
    label_table = lake.read_labels(args.data)
    label_table = label_table.filter(
        pc.is_in(label_table["transaction_id"], value_set=pa.array(events["transaction_id"]))
    )
    produce.publish(label_table, topics["labels"], servers, encode=schemas.encode_labels)
    env = os.environ.copy()
    extra = ["--starting-offsets", "earliest"]
    if args.initial_card_states:
        extra += ["--initial-card-states", str(args.initial_card_states)]
    command = score_command(args, servers, topics, run_dir, args.driver_memory, *extra)
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    output = JobOutput(job, run_dir / "job.log")
    output.start()
    deadline = time.time() + 180
    while not any(line.startswith("model: ") for line in output.lines):
        if job.poll() is not None or time.time() > deadline:
            raise SystemExit(f"the job did not start; see {run_dir / 'job.log'}")
        time.sleep(0.5)
    alerts = AlertConsumer(servers, topics["alerts"])
    alerts.start()
    producer = Producer(servers, topics["payments"])
    time.sleep(3)

    steps = [("warm-up", args.warmup_rate, args.warmup_seconds)] + [
        (f"{rate:,}/s", rate, args.step_seconds) for rate in args.rates
    ]
    plan, offset = [], 0
    for name, rate, seconds in steps:
        count = int(rate * seconds)
        plan.append((name, rate, offset, offset + count))
        offset += count
    results = []
    produced = 0
    for name, rate, first, last in plan:
        print(f"step {name}: {last - first:,} payments at {rate:,}/s", flush=True)
        batches_before = len(output.batches)
        start, end = producer.send_at_rate(lines[first:last], rate)
        produced += last - first
        caught_up = None
        limit = time.time() + max(120, args.step_seconds * 4)
        while time.time() < limit:
            if output.processed() >= produced:
                caught_up = output.batches[-1][0]
                break
            if job.poll() is not None:
                raise SystemExit(f"the job stopped; see {run_dir / 'job.log'}")
            time.sleep(0.2)
        during = [b for b in output.batches[batches_before:] if b[0] <= end]
        results.append(
            {
                "step": name,
                "rate": rate,
                "first": first,
                "last": last,
                "start": start,
                "end": end,
                "produced_rate": (last - first) / (end - start),
                "processed_during": sum(b[1] for b in during),
                "catch_up_s": (caught_up - end) if caught_up else float("inf"),
                "batch_s_median": float(
                    np.median([b[2] for b in output.batches[batches_before:]] or [np.nan])
                ),
                "batch_records_median": float(
                    np.median([b[1] for b in output.batches[batches_before:]] or [np.nan])
                ),
            }
        )
        time.sleep(2)
    time.sleep(3)
    memory = peak_memory(job.pid)
    producer.close()
    alerts.stop.set()
    alerts.join(timeout=30)
    job.send_signal(signal.SIGTERM)
    job.wait(timeout=180)
    output.join(timeout=30)

    scored = views.read_view(run_dir / "lake", views.SCORED)
    # Kafka timestamps are the produce times (CreateTime, set by the producer).
    produced_ms = dict(
        zip(scored["transaction_id"], features._time_ms(scored["kafka_timestamp"]), strict=True)
    )
    scored_ms = dict(
        zip(scored["transaction_id"], features._time_ms(scored["scored_time"]), strict=True)
    )
    ids = events["transaction_id"].to_numpy()
    for result in results:
        step_ids = ids[result["first"] : result["last"]]
        alert_lat = [
            alerts.arrivals[t] - produced_ms[t] / 1000
            for t in step_ids
            if t in alerts.arrivals and t in produced_ms
        ]
        scored_lat = [(scored_ms[t] - produced_ms[t]) / 1000 for t in step_ids if t in scored_ms]
        duration = result["end"] - result["start"]
        result.update(
            {
                "throughput": result["processed_during"] / duration,
                "alerts": len(alert_lat),
                "alert_p50_s": processor.percentile(alert_lat, 50),
                "alert_p99_s": processor.percentile(alert_lat, 99),
                "scored_p50_s": processor.percentile(scored_lat, 50),
                "scored_p99_s": processor.percentile(scored_lat, 99),
            }
        )
        result["sustained"] = bool(
            result["catch_up_s"] <= SUSTAIN_CATCH_UP_S
            and result["alert_p99_s"] <= SUSTAIN_P99_S
            and result["produced_rate"] >= 0.97 * result["rate"]
        )
    checkpoint = run_dir / "checkpoints" / "score"
    totals = {
        "payments": len(events),
        "scored": len(scored),
        "alerts": len(alerts.arrivals),
        "cards": int(events["card_id"].nunique()),
        **memory,
        # The card operator's state store (RocksDB files and changelogs of every version
        # kept) and the driver's newest state snapshot.
        "operator_state_mb": folder_mb(checkpoint / "state"),
        "driver_state_mb": max(
            (folder_mb(d) for d in (checkpoint / "feature-state").glob("batch-*")), default=0.0
        ),
    }
    return results, totals


def run_baseline(args, servers, topics, model) -> dict:
    """One event at a time: decode, features over the consumer's recent payments, score,
    alert. (Its merchant fraud features see no labels: it reads no label topic.)"""
    if args.baseline_seconds <= 0:
        return {"events": 0, "seconds": 0.0, "rate": 0.0, "alerts": 0}
    consumer = clients.consumer(servers)
    from kafka import TopicPartition

    topic = topics["payments"]
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    producer = clients.producer(servers)
    recent = pd.DataFrame()
    done, alerts = 0, 0
    start = time.time()
    while time.time() - start < args.baseline_seconds:
        for records in consumer.poll(timeout_ms=500, max_records=100).values():
            for record in records:
                event = schemas.decode_payment(record.value)
                frame = pd.DataFrame([event])
                frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
                recent = pd.concat([recent, frame], ignore_index=True)
                horizon = recent["event_time"].max() - pd.Timedelta(days=37)
                recent = recent.loc[recent["event_time"] > horizon]
                computed = features.compute(recent).iloc[[-1]]
                score = float(model.score(computed[model.feature_columns])[0])
                if score >= model.threshold:
                    producer.send(topics["baseline-alerts"], value=record.value)
                    alerts += 1
                done += 1
                if time.time() - start >= args.baseline_seconds:
                    break
    elapsed = time.time() - start
    consumer.close()
    producer.close(timeout=5)
    return {"events": done, "seconds": elapsed, "rate": done / elapsed, "alerts": alerts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=config.DATA_DIR / "generated")
    parser.add_argument(
        "--model", type=Path, default=config.PROJECT_ROOT / "models" / "fraudstream"
    )
    parser.add_argument("--rates", default="5000,10000,15000,20000")
    parser.add_argument("--step-seconds", type=float, default=30)
    parser.add_argument("--warmup-rate", type=int, default=5000)
    parser.add_argument("--warmup-seconds", type=float, default=30)
    parser.add_argument("--max-offsets-per-trigger", type=int, default=200_000)
    parser.add_argument("--baseline-seconds", type=float, default=20)
    parser.add_argument("--brokers", default=None)
    parser.add_argument("--driver-memory", default="4g", help="the job's (default: %(default)s)")
    parser.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting for the job (repeatable)",
    )
    parser.add_argument(
        "--initial-card-states",
        type=Path,
        help="the job starts from these card states (bench/bench_bank_scale.py builds them)",
    )
    args = parser.parse_args(argv)
    args.rates = [int(r) for r in args.rates.split(",")]
    if not (args.data / "events").is_dir():
        raise SystemExit(f"No events under {args.data}: run ./spark-submit.sh generate first.")
    try:
        model = scoring_model.load_model(str(args.model))
    except scoring_model.ModelLoadError as error:
        raise SystemExit(
            f"{error} Train one first: ./spark-submit.sh train --data {args.data}"
        ) from None

    servers = config.bootstrap_servers(args.brokers)
    started_broker = None
    if args.brokers is None and not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        broker = local_broker.LocalBroker()
        if not process.port_in_use(broker.host, broker.port):
            local_broker.start(broker)
            started_broker = broker
    suffix = uuid.uuid4().hex[:8]
    names = ("payments", "labels", "alerts", "dlq", "baseline-alerts")
    topics = {k: f"bench-{suffix}-{k}" for k in names}
    local_broker.create_topics(servers, {t: {} for t in topics.values()}, partitions=4)
    run_dir = config.VAR_DIR / "bench" / f"score-{suffix}"
    run_dir.mkdir(parents=True)
    print(f"machine: {machine()}")
    print(
        f"model: {model.name} version {model.version} ({args.model}), "
        f"threshold {model.threshold:.4f}"
    )
    try:
        results, totals = run_job(args, servers, topics, run_dir)
        baseline = run_baseline(args, servers, topics, model)
    finally:
        if started_broker is not None:
            local_broker.stop(started_broker)

    print()
    print(
        f"data: {args.data} (first {totals['payments']:,} payments), {totals['scored']:,} scored, "
        f"{totals['alerts']:,} alerts received; job log {run_dir / 'job.log'}"
    )
    print(
        f"memory: driver Python peak {totals.get('driver_python_mb', float('nan')):,.0f} MB, "
        f"JVM peak {totals.get('jvm_mb', float('nan')):,.0f} MB; state on disk: card operator "
        f"{totals['operator_state_mb']:,.1f} MB ({totals['cards']:,} cards paid live), driver "
        f"snapshot {totals['driver_state_mb']:,.1f} MB"
    )
    header = (
        f"{'step':>10} {'offered/s':>10} {'produced/s':>11} {'job/s':>9} {'catch-up s':>11} "
        f"{'batch s':>8} {'batch rec':>10} {'alert p50':>10} {'alert p99':>10} "
        f"{'scored p99':>11} {'sustained':>10}"
    )
    print(header)
    for r in results:
        print(
            f"{r['step']:>10} {r['rate']:>10,} {r['produced_rate']:>11,.0f} "
            f"{r['throughput']:>9,.0f} {r['catch_up_s']:>11.1f} {r['batch_s_median']:>8.2f} "
            f"{r['batch_records_median']:>10,.0f} "
            f"{r['alert_p50_s']:>10.2f} {r['alert_p99_s']:>10.2f} {r['scored_p99_s']:>11.2f} "
            f"{'yes' if r['sustained'] else 'no':>10}"
        )
    sustained = [r["rate"] for r in results[1:] if r["sustained"]]
    best = max(sustained) if sustained else 0
    print()
    print(
        f"highest rate sustained (catch-up <= {SUSTAIN_CATCH_UP_S:.0f} s, alert p99 <= "
        f"{SUSTAIN_P99_S:.0f} s): {best:,}/s"
    )
    print(
        f"naive baseline (kafka-python, one event at a time, same features and model): "
        f"{baseline['rate']:,.0f} events/s over {baseline['seconds']:.0f} s"
    )
    if baseline["rate"] > 0:
        print(f"ratio, highest sustained / baseline: {best / baseline['rate']:,.0f}x")
    (run_dir / "results.json").write_text(
        json.dumps(
            {"machine": machine(), "steps": results, "baseline": baseline, "totals": totals},
            indent=2,
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
