"""Benchmark what a shadow challenger costs the scoring job: the champion alone against
the champion with a challenger scoring every payment beside it.

The same payments are published once to a fresh topic; then the scoring query runs over
them from the oldest offset (``--available-now``, in this process's Spark session),
alternately without and with the challenger, each run into a new output root and
checkpoint. Each run's time is from the query's start to its end, so it includes the
query's fixed costs; the payments are many enough for the scoring to dominate. The
script prints each run, then the median payments a second of each side and their ratio.

The challenger is ``--challenger`` (default: the champion's own version, loaded a second
time: the same kind and size of model as a retrained challenger would be).

Usage::

    .venv/bin/python bench/bench_challenger.py [--data data/generated] [--payments 100000]
        [--repeats 3] [--warmup 1] [--model models:/fraudstream@champion]
        [--challenger models:/fraudstream/3] [--brokers HOST:PORT]
"""

from __future__ import annotations

import argparse
import statistics
import sys
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=config.DATA_DIR / "generated")
    parser.add_argument("--payments", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--warmup", type=int, default=1, help="runs of each side first, not counted (JIT, caches)"
    )
    parser.add_argument("--model", default=config.DEFAULT_MODEL_URI)
    parser.add_argument("--challenger", help="default: the champion's version, loaded again")
    parser.add_argument("--brokers", default=None)
    args = parser.parse_args(argv)
    servers = config.bootstrap_servers(args.brokers)
    model = load_model(args.model)
    challenger = args.challenger or f"models:/{model.name}/{model.version}"
    events = lake.read_events(args.data)
    events = events.sort_by("event_time").slice(0, args.payments)
    suffix = uuid.uuid4().hex[:8]
    topics = {
        "payments": f"bench-shadow-payments-{suffix}",
        "labels": f"bench-shadow-labels-{suffix}",
        "rules": f"bench-shadow-rules-{suffix}",
        "log": f"bench-shadow-log-{suffix}",
    }
    local_broker.create_topics(servers, {name: {} for name in topics.values()}, partitions=2)
    produce.publish(events, topics["payments"], servers)
    spark = get_session("fraudstream-bench-challenger")
    print(machine())
    print(
        f"{events.num_rows:,} payments from {args.data}; champion {model.name} "
        f"v{model.version}, challenger {challenger}"
    )
    sides = {"champion": {"challenger_uri": None}, "challenger": {"challenger_uri": challenger}}

    def shadowed(scored) -> str:
        return f"{int(scored['challenger_score'].notna().sum()):,} scored in shadow"

    base_cfg = {"rules_topic": topics["rules"], "rules_log_topic": topics["log"]}
    rates = side_by_side(spark, servers, topics, model, args, base_cfg, sides, shadowed)
    base, both = (statistics.median(v) for v in rates.values())
    print(
        f"median: champion {base:,.0f}/s, with the challenger {both:,.0f}/s; "
        f"ratio {both / base:.3f} ({100 * (1 - both / base):+.1f}% slower with the challenger)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
