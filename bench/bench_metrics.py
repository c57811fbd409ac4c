"""Benchmark what Prometheus metrics cost the scoring job: the job without metrics against
the job serving them (``--metrics-port``), side by side in one run.

The same payments are published once to a fresh topic; then the scoring query runs over
them from the oldest offset (``--available-now``, in this process's Spark session),
alternately without and with metrics, each run into a new output root and checkpoint
(``side_by_side`` of ``bench/bench_rules.py``). With metrics, the processor counts every
micro-batch, a ``StreamingQueryListener`` takes each batch's progress, and a scraper
thread reads ``/metrics`` every ``--scrape-interval`` seconds, as Prometheus would. The
micro-batches are ``--max-offsets-per-trigger`` payments, so that a run has many. The
script prints each run, then the median payments a second of each side and their ratio.

Usage::

    .venv/bin/python bench/bench_metrics.py [--data data/generated] [--payments 100000]
        [--max-offsets-per-trigger 10000] [--repeats 3] [--warmup 1]
        [--scrape-interval 1] [--model models:/fraudstream@champion] [--brokers HOST:PORT]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_rules import side_by_side  # noqa: E402
from bench.bench_score import machine  # noqa: E402
from fraudstream import config, lake  # noqa: E402
from fraudstream.data import produce  # noqa: E402
from fraudstream.ops import broker as local_broker  # noqa: E402
from fraudstream.scoring.model import load_model  # noqa: E402
from fraudstream.spark import get_session  # noqa: E402


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Scraper(threading.Thread):
    """Reads ``url`` every ``interval`` seconds, as a Prometheus server would; counts scrapes."""

    def __init__(self, url: str, interval: float):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.scrapes = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as answer:
                    answer.read()
                self.scrapes += 1
            except OSError:
                pass  # between runs nothing listens


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=config.DATA_DIR / "generated")
    parser.add_argument("--payments", type=int, default=100_000)
    parser.add_argument("--max-offsets-per-trigger", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--warmup", type=int, default=1, help="runs of each side first, not counted (JIT, caches)"
    )
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    parser.add_argument("--model", default=config.DEFAULT_MODEL_URI)
    parser.add_argument("--brokers", default=None)
    args = parser.parse_args(argv)
    servers = config.bootstrap_servers(args.brokers)
    model = load_model(args.model)
    events = lake.read_events(args.data)
    events = events.sort_by("event_time").slice(0, args.payments)
    suffix = uuid.uuid4().hex[:8]
    topics = {
        "payments": f"bench-metrics-payments-{suffix}",
        "labels": f"bench-metrics-labels-{suffix}",
        "rules": f"bench-metrics-rules-{suffix}",
        "log": f"bench-metrics-log-{suffix}",
    }
    local_broker.create_topics(servers, {name: {} for name in topics.values()}, partitions=2)
    produce.publish(events, topics["payments"], servers)
    spark = get_session("fraudstream-bench-metrics")
    port = free_port()
    scraper = Scraper(f"http://127.0.0.1:{port}/metrics", args.scrape_interval)
    scraper.start()
    print(machine())
    print(
        f"{events.num_rows:,} payments from {args.data} in micro-batches of "
        f"{args.max_offsets_per_trigger:,}; model {model.name} v{model.version}; "
        f"metrics scraped every {args.scrape_interval:g} s"
    )
    sides = {"no metrics": {"metrics_port": 0}, "metrics": {"metrics_port": port}}
    scrapes = [0]

    def scraped(_scored) -> str:
        done, scrapes[0] = scraper.scrapes - scrapes[0], scraper.scrapes
        return f"{done} scrapes"

    base_cfg = {
        "rules_topic": topics["rules"],
        "rules_log_topic": topics["log"],
        "challenger_uri": None,
    }
    try:
        rates = side_by_side(spark, servers, topics, model, args, base_cfg, sides, scraped)
    finally:
        scraper.stopping.set()
    base, measured = (statistics.median(v) for v in rates.values())
    print(
        f"median: no metrics {base:,.0f}/s, metrics {measured:,.0f}/s; ratio "
        f"{measured / base:.3f} ({100 * (1 - measured / base):+.1f}% slower with metrics)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
