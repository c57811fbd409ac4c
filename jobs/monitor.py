"""Watch the champion's health by day: alert volume, live precision, scores, feature drift.

A Spark batch job, run daily or on demand. It reads the score job's scored view
(``OUT/scored``), the label store (``OUT/labels``) and the training profile the champion
was registered with, and writes ``OUT/monitoring/daily`` (alerts and decisions by tier;
precision, recall and CP@k of each day's alerts once its labels have matured; the score
distribution) and ``OUT/monitoring/drift`` (each feature's PSI and share of nulls against
the training data), Parquet by ``date=D``, each day's file replaced on a rerun. When a
threshold is crossed (PSI over 0.25 on an important feature, alerts three times the
7-day median, precision halved against the 7-day median of matured days) it publishes a
``model-health`` event (JSON) to ``--health-topic`` and logs why in one sentence; an
event already published for the day is not sent again. See docs/monitoring.md.

Usage::

    ./spark-submit.sh monitor [--out data/lake] [--model-name fraudstream]
        [--delay-days 7] [--k 100] [--as-of YYYY-MM-DDTHH:MM]
        [--brokers HOST:PORT] [--kafka-properties FILE] [--health-topic model-health]
        [--no-publish]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime

from fraudstream import config, logs, storage
from fraudstream.cli import options
from fraudstream.errors import reports_errors
from fraudstream.kafka import propfile
from fraudstream.ml import evaluate, monitor
from fraudstream.spark import get_session


def parse_args(argv: list[str]) -> monitor.MonitorConfig:
    parser = argparse.ArgumentParser(
        prog="./spark-submit.sh monitor",
        description="Write the champion's health by day (volumes, live precision, scores, "
        "drift) under OUT/monitoring and publish model-health events.",
    )
    parser.add_argument(
        "--out",
        type=storage.location,
        default=config.LAKE_DIR,
        help="the score job's output root, with scored/ and labels/ (default: %(default)s)",
    )
    parser.add_argument(
        "--model-name",
        default="fraudstream",
        help="registered model whose champion's training profile drift is measured "
        "against (default: %(default)s)",
    )
    parser.add_argument(
        "--delay-days",
        type=int,
        default=monitor.DEFAULT_DELAY_DAYS,
        help="label delay: a day's precision counts once it ended this many whole days "
        "before --as-of (default: %(default)s)",
    )
    parser.add_argument(
        "--k",
        type=int,
        default=evaluate.DEFAULT_K,
        help="cards an investigator checks a day, for CP@k (default: %(default)s)",
    )
    parser.add_argument(
        "--as-of",
        type=datetime.fromisoformat,
        help="labels as known at this UTC time (default: the newest payment of the view)",
    )
    options.add_kafka(parser, "health")
    parser.add_argument(
        "--no-publish",
        action="store_true",
        help="log the threshold crossings, publish no event",
    )
    args = parser.parse_args(argv)
    if args.delay_days < 0 or args.k < 1:
        parser.error("--delay-days must be 0 or more and --k 1 or more")
    propfile.use_properties_file(args.kafka_properties)
    return monitor.MonitorConfig(
        out=args.out,
        model_name=args.model_name,
        delay_days=args.delay_days,
        k=args.k,
        as_of=args.as_of,
        bootstrap_servers=config.bootstrap_servers(args.brokers),
        health_topic=args.health_topic,
        publish=not args.no_publish,
    )


@reports_errors("monitor")
def main(argv: list[str] | None = None) -> int:
    logs.configure()
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    if cfg.publish:
        from fraudstream.kafka import clients

        clients.require_topics(cfg.bootstrap_servers, [cfg.health_topic])
    started = time.perf_counter()
    spark = get_session("fraudstream-monitor")
    result = monitor.run(spark, cfg)
    print(monitor.summary(cfg, result, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
