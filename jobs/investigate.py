"""Give each day's top-k scored cards the simulated analysts' verdicts, as label events.

The simulator's investigators (``fraudstream/data/investigators.py``) on what the score
job scored: each UTC day of the scored view (``OUT/scored``) the ``k`` cards with the
highest scores, not blocked on an earlier day, are investigated, and each of their
payments of the day gets a verdict from the simulator's truth (``DATA/labels``, as the
generate job wrote it): a label event with ``source`` ``analyst``, reported 1 to 6 hours
after the payment, within its day. The verdicts replace ``VERDICTS/labels/`` (by
reported date, the generate job's layout); ``--publish`` also sends them to the labels
topic, where the labels job stores them for ``train --feedback``. Frauds keep their
chargebacks. No Spark session is started. See docs/data.md.

Usage::

    ./spark-submit.sh investigate [--out data/lake] [--data data/sample]
        [--verdicts data/investigated] [--k 100] [--seed 0] [--from YYYY-MM-DD]
        [--publish [--brokers HOST:PORT] [--kafka-properties FILE] [--labels-topic fraud-labels]]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

from fraudstream import config, logs
from fraudstream.cli import options
from fraudstream.data import investigators
from fraudstream.errors import reports_errors
from fraudstream.kafka import propfile
from fraudstream.ml import evaluate


def parse_args(argv: list[str]) -> investigators.InvestigateConfig:
    parser = argparse.ArgumentParser(
        prog="./spark-submit.sh investigate",
        description="Give each day's top-k scored cards the simulator's analysts' verdicts, "
        "as label events in VERDICTS/labels (and on the labels topic with --publish).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=config.LAKE_DIR,
        help="the score job's output root, with scored/ (default: %(default)s)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=config.SAMPLE_DIR,
        help="the folder the scored payments came from, written by generate: its labels/ "
        "are the truth (default: %(default)s)",
    )
    parser.add_argument(
        "--verdicts",
        type=Path,
        default=config.DATA_DIR / "investigated",
        help="folder whose labels/ the verdicts replace (default: %(default)s)",
    )
    parser.add_argument(
        "--k",
        type=int,
        default=evaluate.DEFAULT_K,
        help="cards the analysts investigate a day (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the reporting delays (default: %(default)s)"
    )
    parser.add_argument(
        "--from",
        dest="since",
        type=date.fromisoformat,
        help="write (and publish) only the verdicts of payments of this UTC day and later, "
        "YYYY-MM-DD; earlier days are still investigated (default: all days)",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also publish the verdicts to the labels topic, for the labels job",
    )
    options.add_kafka(parser, "labels")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be 1 or more")
    propfile.use_properties_file(args.kafka_properties)
    return investigators.InvestigateConfig(
        out=args.out,
        data=args.data,
        verdicts=args.verdicts,
        k=args.k,
        seed=args.seed,
        publish=args.publish,
        bootstrap_servers=config.bootstrap_servers(args.brokers),
        labels_topic=args.labels_topic,
        since=args.since,
    )


@reports_errors("investigate")
def main(argv: list[str] | None = None) -> int:
    logs.configure()
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    if cfg.publish:
        from fraudstream.kafka import clients

        clients.require_topics(cfg.bootstrap_servers, [cfg.labels_topic])
    started = time.perf_counter()
    counts = investigators.run(cfg)
    print(investigators.summary(cfg, counts, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
