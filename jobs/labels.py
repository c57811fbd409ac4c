"""Append label events from Kafka to the label store, which training reads.

One Structured Streaming query: Spark's Kafka source on ``fraud-labels`` (chargebacks,
analyst verdicts, simulated labels), each micro-batch validated against the label
contract and appended to ``OUT/labels/date=D/`` (by reported date; the layout
``./spark-submit.sh train --labels OUT/labels`` reads). Invalid records go to
``OUT/label_dead_letters`` with their reason. Exactly once in Parquet across restarts;
progress lives in ``CHECKPOINT/labels``. SIGTERM or Ctrl-C stops between micro-batches.

Usage::

    ./spark-submit.sh labels [--brokers HOST:PORT] [--kafka-properties FILE]
        [--labels-topic fraud-labels]
        [--out data/lake] [--checkpoint data/checkpoints] [--available-now]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from fraudstream import config, logs, storage
from fraudstream.cli import options
from fraudstream.data import label_store
from fraudstream.data.label_store import LabelsConfig, run
from fraudstream.errors import reports_errors
from fraudstream.kafka import clients, propfile
from fraudstream.scoring import views
from fraudstream.spark import get_session


def parse_args(argv: list[str]) -> LabelsConfig:
    parser = argparse.ArgumentParser(
        prog="./spark-submit.sh labels",
        description="Append label events from Kafka to the label store (Parquet).",
    )
    options.add_kafka(parser, "labels")
    options.add_roots(parser, "labels")
    parser.add_argument(
        "--available-now", action="store_true", help="store what the topic holds now, then stop"
    )
    args = parser.parse_args(argv)
    propfile.use_properties_file(args.kafka_properties)
    return LabelsConfig(
        bootstrap_servers=config.bootstrap_servers(args.brokers),
        out=storage.location(args.out),
        checkpoint=storage.location(args.checkpoint),
        labels_topic=args.labels_topic,
        available_now=args.available_now,
    )


@reports_errors("labels")
def main(argv: list[str] | None = None) -> int:
    logs.configure()
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    clients.require_topics(cfg.bootstrap_servers, [cfg.labels_topic])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    spark = get_session("fraudstream-labels")
    storage.files(cfg.out).check()
    storage.files(cfg.checkpoint).check()
    run(spark, cfg, stop=stop)
    stored = views.count_rows(cfg.out, label_store.LABELS)
    print(f"{storage.join(cfg.out, label_store.LABELS)}: {stored:,} label events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
