"""Score payments from Kafka as they arrive: alerts, card locations, scored log, dead letters.

One Structured Streaming query (``fraudstream.scoring``): Spark's Kafka source on
``payments`` and ``fraud-labels``; the executors validate the records and keep every
card's state in the card operator (Spark's state store), the same operator training runs;
each micro-batch's features are computed and scored on the executors with the model the
registry alias points at (a new champion is picked up between micro-batches), and Spark
writes, per micro-batch:

- ``OUT/alerts``: payments scored at or above the threshold, with reasons (and the same
  alerts as JSON on ``fraud-alerts``, keyed by card);
- ``OUT/card_locations``: where each valid payment happened and the leg from the
  card's previous one;
- ``OUT/scored``: every valid payment with its score, model version and features, and
  the shadow challenger's score and version when the alias ``challenger`` exists;
- ``OUT/dead_letters``: invalid, duplicate and late records with their reason (and the
  records themselves on ``payments-dlq``).

Parquet views are exactly once across crashes; Kafka alerts at least once, with a
deterministic ``alert_id``. Progress lives in ``CHECKPOINT/score`` (Spark's offsets and
the cards' state): restart on it to resume; a new checkpoint replays the topic from
``--starting-offsets``. SIGTERM or Ctrl-C stops after the micro-batch in flight.

Usage::

    ./spark-submit.sh score [--brokers HOST:PORT] [--kafka-properties FILE]
        [--model models:/fraudstream@champion]
        [--threshold 0.5] [--challenger auto|none|models:/NAME@ALIAS]
        [--out data/lake] [--checkpoint data/checkpoints]
        [--max-offsets-per-trigger 100000] [--trigger-interval "2 seconds"]
        [--available-now] [--starting-offsets earliest|latest]
        [--max-lateness-hours 24] [--payments-topic payments] [--labels-topic fraud-labels]
        [--alerts-topic fraud-alerts] [--dead-letter-topic payments-dlq]
        [--rules-topic fraud-rules] [--rules-log-topic fraud-rules-applied]
        [--initial-card-states PATH] [--metrics-port PORT] [--metrics-host 127.0.0.1]

``--metrics-port`` serves Prometheus metrics from the driver (``docs/operating.md``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from fraudstream import config, logs, metrics, storage
from fraudstream.cli import options
from fraudstream.errors import reports_errors
from fraudstream.kafka import clients, propfile
from fraudstream.scoring.model import challenger_uri, load_model
from fraudstream.scoring.query import (
    DEFAULT_MAX_OFFSETS_PER_TRIGGER,
    DEFAULT_MODEL_URI,
    ScoreConfig,
    check_checkpoint,
    check_outputs,
    run,
    summarise,
)
from fraudstream.scoring.state import DEFAULT_MAX_LATENESS_HOURS
from fraudstream.spark import get_session

_LOG = logging.getLogger("fraudstream.jobs.score")


def parse_args(argv: list[str]) -> ScoreConfig:
    parser = argparse.ArgumentParser(
        prog="./spark-submit.sh score",
        description="Score payments from Kafka as they arrive; write alerts, card-location "
        "history, scored transactions and dead letters.",
    )
    options.add_kafka(parser, "payments", "labels", "alerts", "dead-letter", "rules", "rules-log")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL_URI,
        help="registry URI (models:/NAME@ALIAS, models:/NAME/VERSION) or a model folder such "
        "as models/fraudstream (default: %(default)s; an alias is followed between batches)",
    )
    parser.add_argument(
        "--threshold", type=float, help="alert threshold (default: the model's, chosen in training)"
    )
    parser.add_argument(
        "--challenger",
        default="auto",
        help="a model scored in shadow beside the champion, recorded in scored/ and never "
        "alerting: auto (the registry alias challenger of --model's name, followed between "
        "batches, if it exists), none, or a registry URI (default: %(default)s)",
    )
    options.add_roots(parser, "score")
    parser.add_argument(
        "--starting-offsets",
        default="earliest",
        help="where a new checkpoint starts in the payments topic: earliest, latest or "
        "Spark's JSON form (default: %(default)s: replay everything)",
    )
    parser.add_argument(
        "--max-offsets-per-trigger",
        type=int,
        default=DEFAULT_MAX_OFFSETS_PER_TRIGGER,
        help="cap on records per micro-batch (default: %(default)s)",
    )
    parser.add_argument(
        "--trigger-interval",
        help='one micro-batch per interval (e.g. "2 seconds"); default: the next starts as '
        "soon as the previous ends",
    )
    parser.add_argument(
        "--available-now",
        action="store_true",
        help="score what the topic holds now, then stop (for replays and tests)",
    )
    parser.add_argument(
        "--max-lateness-hours",
        type=float,
        default=DEFAULT_MAX_LATENESS_HOURS,
        help="a payment older than the newest event of its partition minus this is a dead letter "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--initial-card-states",
        metavar="PATH",
        help="a new checkpoint starts from these card states "
        "(Parquet written by the card_states job from a history that is not on the topic); "
        "ignored when resuming a checkpoint",
    )
    options.add_metrics(parser)
    args = parser.parse_args(argv)
    options.check_metrics_port(parser, args.metrics_port)
    propfile.use_properties_file(args.kafka_properties)
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        parser.error("--threshold must be between 0 and 1")
    if args.max_offsets_per_trigger is not None and args.max_offsets_per_trigger <= 0:
        parser.error("--max-offsets-per-trigger must be positive")
    initial_states = None
    if args.initial_card_states:
        initial_states = storage.location(args.initial_card_states)
        if not storage.is_uri(initial_states) and not Path(initial_states).is_dir():
            parser.error(f"--initial-card-states: no folder {args.initial_card_states}")
        initial_states = str(initial_states)
    model = args.model
    if not model.startswith("models:/") and not Path(model).is_absolute():
        model = str(
            (config.PROJECT_ROOT / model) if not Path(model).exists() else Path(model).resolve()
        )
    if args.challenger == "auto":
        challenger = challenger_uri(model)
    elif args.challenger == "none":
        challenger = None
    elif args.challenger.startswith("models:/"):
        challenger = args.challenger
    else:
        parser.error("--challenger must be auto, none or a registry URI (models:/NAME@ALIAS)")
    return ScoreConfig(
        bootstrap_servers=config.bootstrap_servers(args.brokers),
        out=storage.location(args.out),
        checkpoint=storage.location(args.checkpoint),
        model_uri=model,
        threshold=args.threshold,
        payments_topic=args.payments_topic,
        labels_topic=args.labels_topic,
        alerts_topic=args.alerts_topic,
        dead_letter_topic=args.dead_letter_topic,
        rules_topic=args.rules_topic,
        rules_log_topic=args.rules_log_topic,
        starting_offsets=args.starting_offsets,
        max_offsets_per_trigger=args.max_offsets_per_trigger,
        trigger_interval=args.trigger_interval,
        available_now=args.available_now,
        max_lateness_hours=args.max_lateness_hours,
        initial_card_states=initial_states,
        challenger_uri=challenger,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )


@reports_errors("score")
def main(argv: list[str] | None = None) -> int:
    logs.configure()
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    if cfg.metrics_port:
        # A busy port is said at once, not after Spark has started.
        metrics.check_port(cfg.metrics_port, cfg.metrics_host)
    topics = [cfg.payments_topic, cfg.labels_topic, cfg.alerts_topic, cfg.dead_letter_topic]
    clients.require_topics(cfg.bootstrap_servers, topics)
    # Fail on a missing model before Spark starts, in one sentence.
    model = load_model(cfg.model_uri, cfg.threshold)
    remote = storage.is_uri(cfg.out) or storage.is_uri(cfg.checkpoint)
    if not remote:
        check_outputs(cfg)
        check_checkpoint(cfg)
    stop = threading.Event()

    def request_stop(signum, _frame):
        _LOG.info(f"{signal.Signals(signum).name} received")
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    spark = get_session("fraudstream-score")
    if remote:
        # A Hadoop file system is reached through Spark's JVM.
        check_outputs(cfg)
        check_checkpoint(cfg)
    run(spark, cfg, stop=stop, model=model)
    if cfg.available_now:
        print(summarise(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
