"""Land a Kafka topic in Parquet as it is (key, value, offsets), with a streaming query.

The raw landing zone: every record of the topic, once, with the topic, partition and
offset it came from, partitioned by the date of its Kafka timestamp. By default the
query reads what the topic holds now and stops (``Trigger.AvailableNow``); with
``--trigger-interval`` it keeps running. Progress lives in the checkpoint, so a second
run picks up only what arrived since the first.

Usage::

    ./spark-submit.sh ingest [--topic payments] [--out data/lake/raw/payments]
        [--checkpoint data/checkpoints/raw-payments] [--brokers HOST:PORT] [--kafka-properties FILE]
        [--starting-offsets earliest|latest] [--trigger-interval "10 seconds"]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fraudstream import config, logs
from fraudstream.cli import options
from fraudstream.data.ingest import IngestConfig, run, summarise
from fraudstream.errors import reports_errors
from fraudstream.kafka import clients, propfile
from fraudstream.spark import get_session


def parse_args(argv: list[str]) -> IngestConfig:
    parser = argparse.ArgumentParser(
        prog="./spark-submit.sh ingest",
        description="Land a Kafka topic in Parquet as it is, with a streaming query.",
    )
    options.add_kafka(parser, "payments", flag="--topic")
    parser.add_argument("--out", help=f"Parquet folder (default: {config.LAKE_DIR}/raw/TOPIC)")
    parser.add_argument(
        "--checkpoint", help=f"checkpoint folder (default: {config.CHECKPOINT_DIR}/raw-TOPIC)"
    )
    parser.add_argument(
        "--starting-offsets",
        default="earliest",
        help="where a new checkpoint starts: earliest, latest or Spark's JSON form "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--trigger-interval",
        help='keep running, one micro-batch per interval (e.g. "10 seconds"); '
        "without it, land what the topic holds now and stop",
    )
    parser.add_argument(
        "--max-offsets-per-trigger", type=int, help="cap on records per micro-batch"
    )
    args = parser.parse_args(argv)
    propfile.use_properties_file(args.kafka_properties)
    return IngestConfig(
        bootstrap_servers=config.bootstrap_servers(args.brokers),
        topic=args.topic,
        out=args.out or str(config.LAKE_DIR / "raw" / args.topic),
        checkpoint=args.checkpoint or str(config.CHECKPOINT_DIR / f"raw-{args.topic}"),
        starting_offsets=args.starting_offsets,
        trigger_interval=args.trigger_interval,
        max_offsets_per_trigger=args.max_offsets_per_trigger,
    )


@reports_errors("ingest")
def main(argv: list[str] | None = None) -> int:
    logs.configure()
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    clients.require_topics(cfg.bootstrap_servers, [cfg.topic])
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    spark = get_session("fraudstream-ingest")
    run(spark, cfg)
    print(summarise(spark, cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
