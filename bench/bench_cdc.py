"""Change data capture: start-up times, capture latency, throughput, unclean-stop duplicates.

Usage::

    .venv/bin/python bench/bench_cdc.py [--brokers 127.0.0.1:9092] [--payments 20000]
        [--batch 500] [--latency-samples 60]

Starts a PostgreSQL cluster and a Connect worker of its own (under a temporary folder,
on free ports), captures into a fresh topic, and prints: PostgreSQL's first start and
restart; Connect's time from launch to streaming; the latency from a commit to a
consumer, one payment per transaction; the time until ``--payments`` payments booked
in transactions of ``--batch`` are all on the topic; and how many payments come twice
when the worker is killed (SIGKILL) while payments are being booked. Everything it
started is stopped and deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from fraudstream import config
from fraudstream.data import bank
from fraudstream.ops import broker
from fraudstream.ops import connect as local_connect
from fraudstream.ops import postgres as local_postgres


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timed(action) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


class _Arrivals:
    """Consume the topic in a thread: first arrival time per transaction, and repeats."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer

        self.first_seen: dict[str, float] = {}
        self.repeats = 0
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            consumer_timeout_ms=200,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for record in self._consumer:
                transaction_id = json.loads(record.value)["transaction_id"]
                if transaction_id in self.first_seen:
                    self.repeats += 1
                else:
                    self.first_seen[transaction_id] = time.time()

    def wait_for(self, transaction_ids: list[str], timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(tid in self.first_seen for tid in transaction_ids):
                return
            time.sleep(0.1)
        raise TimeoutError(f"not all {len(transaction_ids)} payments arrived in {timeout_s} s")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default=config.bootstrap_servers())
    parser.add_argument("--payments", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--latency-samples", type=int, default=60)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="fraudstream-bench-cdc-"))
    # As root the server runs as the postgres user, which must reach its folder.
    home.chmod(0o755)
    postgres = local_postgres.LocalPostgres(home=home / "postgres", port=_free_port())
    topic = f"bench-cdc-{uuid.uuid4().hex[:8]}"
    broker.create_topics(args.brokers, {topic: {}}, partitions=4)
    worker = local_connect.LocalConnect(
        home=home / "connect",
        rest_port=_free_port(),
        bootstrap_servers=args.brokers,
        topic=topic,
        postgres=postgres,
    )
    arrivals = None
    try:
        print(f"PostgreSQL first start: {_timed(lambda: local_postgres.start(postgres)):.1f} s")
        local_postgres.stop(postgres)
        print(f"PostgreSQL restart: {_timed(lambda: local_postgres.start(postgres)):.1f} s")
        print(f"Connect first start: {_timed(lambda: local_connect.start(worker)):.1f} s")
        arrivals = _Arrivals(args.brokers, topic)

        committed_at = {}
        for payment in bank.generate_payments(args.latency_samples):
            bank.book_payments(postgres, [payment])
            committed_at[payment["transaction_id"]] = time.time()
            time.sleep(0.2)
        arrivals.wait_for(list(committed_at))
        latencies = sorted(
            (arrivals.first_seen[tid] - at) * 1000 for tid, at in committed_at.items()
        )
        print(
            f"latency, commit to consumer ({len(latencies)} single-payment transactions): "
            f"p50 {statistics.median(latencies):.0f} ms, "
            f"p95 {latencies[int(0.95 * len(latencies)) - 1]:.0f} ms, max {latencies[-1]:.0f} ms"
        )

        payments = bank.generate_payments(args.payments, cards=1000)
        started = time.time()
        for first in range(0, len(payments), args.batch):
            bank.book_payments(postgres, payments[first : first + args.batch])
        booked_s = time.time() - started
        arrivals.wait_for([p["transaction_id"] for p in payments])
        last = max(arrivals.first_seen[p["transaction_id"]] for p in payments)
        print(
            f"throughput: {len(payments):,} payments booked in {booked_s:.1f} s, all on the "
            f"topic after {last - started:.1f} s ({len(payments) / (last - started):,.0f}/s)"
        )

        payments = bank.generate_payments(3000, cards=1000)

        def book_steadily() -> None:
            for first in range(0, len(payments), 50):
                bank.book_payments(postgres, payments[first : first + 50])
                time.sleep(0.02)

        booking = threading.Thread(target=book_steadily)
        repeats_before = arrivals.repeats
        booking.start()
        time.sleep(1.5)
        os.kill(local_connect.running_pid(worker), signal.SIGKILL)
        booking.join()
        print(f"Connect restart after SIGKILL: {_timed(lambda: local_connect.start(worker)):.1f} s")
        arrivals.wait_for([p["transaction_id"] for p in payments])
        time.sleep(3)
        print(
            f"unclean stop: {len(payments):,} payments booked while killed, "
            f"{arrivals.repeats - repeats_before:,} published twice"
        )
        repeats_before = arrivals.repeats
        local_connect.stop(worker)
        print(f"Connect clean restart: {_timed(lambda: local_connect.start(worker)):.1f} s")
        time.sleep(3)
        print(f"clean restart: {arrivals.repeats - repeats_before} published twice")
    finally:
        if arrivals is not None:
            arrivals.close()
        local_connect.stop(worker)
        local_postgres.stop(postgres)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
