"""Benchmark what fraud-ops rules cost the scoring job: no rules against 50 rules.

The same payments are published once to a fresh topic; then the scoring query runs over
them from the oldest offset (``--available-now``, in this process's Spark session),
alternately with an empty rules topic and with one holding ``--rules`` enabled rules,
each run into a new output root and checkpoint. Each run's time is from the query's
start to its end, so it includes the query's fixed costs; the payments are many enough
for the scoring to dominate. The script prints each run, then the median payments a
second of each side and their ratio.

The rules are of the kind analysts write: thresholds on the amount and the card's and
merchant's windows, the channel, the country and the score, with mixed actions.

Usage::

    .venv/bin/python bench/bench_rules.py [--data data/generated] [--payments 100000]
        [--rules 50] [--repeats 3] [--warmup 1] [--model models:/fraudstream@champion]
        [--brokers HOST:PORT]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_score import machine  # noqa: E402
from fraudstream import config, lake  # noqa: E402
from fraudstream.data import produce  # noqa: E402
from fraudstream.ops import broker as local_broker  # noqa: E402
from fraudstream.scoring import query, rules, views  # noqa: E402
from fraudstream.scoring.model import load_model  # noqa: E402
from fraudstream.spark import get_session  # noqa: E402


def analyst_rules(count: int) -> list[rules.Rule]:
    """``count`` rules of the kinds analysts write, with mixed actions."""
    shapes = [
        "amount > {a} AND is_ecom = 1 AND merchant_tx_count_30d < {m}",
        "card_tx_count_1d > {c} AND amount > {a}",
        "country <> 'XX' AND km_from_prev > {k} AND seconds_since_prev < 3600",
        "channel = 'atm' AND amount > {a} AND is_night = 1",
        "score > 0.{s} AND amount > {a}",
        "merchant_fraud_rate_30d > 0.0{s} AND card_tx_count_7d > {c}",
    ]
    actions = ["review", "review", "decline", "review", "allow"]
    made = []
    for i in range(count):
        condition = shapes[i % len(shapes)].format(
            a=200 + 37 * i, m=5 + i % 20, c=3 + i % 7, k=300 + 50 * i, s=1 + i % 9
        )
        made.append(rules.new_rule(f"bench-{i}", condition, actions[i % len(actions)], "bench"))
    return made


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=config.DATA_DIR / "generated")
    parser.add_argument("--payments", type=int, default=100_000)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--warmup", type=int, default=1, help="runs of each side first, not counted (JIT, caches)"
    )
    parser.add_argument("--model", default=config.DEFAULT_MODEL_URI)
    parser.add_argument("--brokers", default=None)
    args = parser.parse_args(argv)
    servers = config.bootstrap_servers(args.brokers)
    model = load_model(args.model)
    events = lake.read_events(args.data)
    events = events.sort_by("event_time").slice(0, args.payments)
    suffix = uuid.uuid4().hex[:8]
    topics = {
        "payments": f"bench-rules-payments-{suffix}",
        "labels": f"bench-rules-labels-{suffix}",
        "none": f"bench-rules-none-{suffix}",
        "some": f"bench-rules-some-{suffix}",
        "log": f"bench-rules-log-{suffix}",
    }
    local_broker.create_topics(servers, {name: {} for name in topics.values()}, partitions=2)
    produce.publish(events, topics["payments"], servers)
    spark = get_session("fraudstream-bench-rules")
    for rule in analyst_rules(args.rules):
        rules.publish(servers, topics["some"], rule)
    print(machine())
    print(f"{events.num_rows:,} payments from {args.data}; model {model.name} v{model.version}")
    sides = {
        "no rules": {"rules_topic": topics["none"]},
        f"{args.rules} rules": {"rules_topic": topics["some"]},
    }

    def fired(scored) -> str:
        count = int(scored["rules_fired"].map(len).gt(0).sum())
        return f"{count:,} with a rule fired, {int(scored['alerted'].sum()):,} alerts"

    base_cfg = {"rules_log_topic": topics["log"]}
    rates = side_by_side(spark, servers, topics, model, args, base_cfg, sides, fired)
    base, ruled = (statistics.median(v) for v in rates.values())
    print(
        f"median: no rules {base:,.0f}/s, {args.rules} rules {ruled:,.0f}/s; "
        f"ratio {ruled / base:.3f} ({100 * (1 - ruled / base):+.1f}% slower with rules)"
    )
    return 0


def side_by_side(spark, servers, topics, model, args, base_cfg, sides, describe):
    """Score ``topics["payments"]`` from its oldest offset once per side and repeat.

    Each run goes into a new output root and checkpoint, in this process's session,
    with ``base_cfg`` and the side's own ``ScoreConfig`` fields; ``args.warmup`` rounds
    first are not counted. Prints each run (``describe(scored)`` says what it did) and
    returns each side's payments a second.
    """
    work = Path(tempfile.mkdtemp(prefix="bench-score-"))
    rates: dict[str, list[float]] = {side: [] for side in sides}
    width = max(map(len, sides))
    try:
        for repeat in range(-args.warmup, args.repeats):
            for number, (side, changes) in enumerate(sides.items()):
                # Plain folder names: a path with a '+' gave views that read back empty.
                run = work / f"run{repeat + args.warmup}-side{number}"
                cfg = query.ScoreConfig(
                    bootstrap_servers=servers,
                    out=run / "lake",
                    checkpoint=run / "checkpoints",
                    payments_topic=topics["payments"],
                    labels_topic=topics["labels"],
                    # One micro-batch unless the script asks for smaller ones.
                    max_offsets_per_trigger=getattr(args, "max_offsets_per_trigger", None)
                    or args.payments,
                    available_now=True,
                    kafka_outputs=False,
                    **base_cfg,
                    **changes,
                )
                started = time.perf_counter()
                query.run(spark, cfg, log=lambda _line: None, model=model)
                seconds = time.perf_counter() - started
                scored = views.read_view(cfg.out, views.SCORED)
                if repeat >= 0:
                    rates[side].append(len(scored) / seconds)
                name = f"run {repeat + 1}" if repeat >= 0 else "warm-up"
                print(
                    f"{name} {side:>{width}}: {len(scored):,} scored in {seconds:6.1f} s "
                    f"= {len(scored) / seconds:8,.0f}/s; {describe(scored)}"
                )
                shutil.rmtree(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rates


if __name__ == "__main__":
    sys.exit(main())
