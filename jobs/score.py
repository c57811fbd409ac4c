"""Score payments from Kafka as they arrive: alerts, card locations, scored log, dead letters.

One Structured Streaming query: Spark's Kafka source on ``payments``, each micro-batch
handed to ``fraudstream.stream.BatchProcessor``, which validates the records, computes
the features with the training job's code and the state of earlier batches, scores
them with the model the registry alias points at (a new champion is picked up between
micro-batches), and writes, per micro-batch:

- ``OUT/alerts``: payments scored at or above the threshold, with reasons (and the same
  alerts as JSON on ``fraud-alerts``, keyed by card);
- ``OUT/card_locations``: where each valid payment happened and the leg from the
  card's previous one;
- ``OUT/scored``: every valid payment with its score, model version and features;
- ``OUT/dead_letters``: invalid, duplicate and late records with their reason (and the
  records themselves on ``payments-dlq``).

Parquet views are exactly once across crashes; Kafka alerts at least once, with a
deterministic ``alert_id``. Progress lives in ``CHECKPOINT/score`` (Spark's offsets and
the feature state): restart on it to resume; a new checkpoint replays the topic from
``--starting-offsets``. SIGTERM or Ctrl-C stops after the micro-batch in flight.

Usage::

    ./spark-submit.sh score [--brokers HOST:PORT] [--model models:/fraudstream@champion]
        [--threshold 0.5] [--out data/lake] [--checkpoint data/checkpoints]
        [--max-offsets-per-trigger 100000] [--trigger-interval "2 seconds"]
        [--available-now] [--starting-offsets earliest|latest]
        [--max-lateness-hours 24] [--payments-topic payments] [--labels-topic fraud-labels]
        [--alerts-topic fraud-alerts] [--dead-letter-topic payments-dlq]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from fraudstream import config, kafka_io, stream
from fraudstream.spark import get_session

DEFAULT_MODEL_URI = "models:/fraudstream@champion"
DEFAULT_MAX_OFFSETS_PER_TRIGGER = 100_000
QUERY_NAME = "fraudstream-score"


@dataclass(frozen=True)
class ScoreConfig:
    bootstrap_servers: str
    out: Path
    checkpoint: Path
    model_uri: str = DEFAULT_MODEL_URI
    threshold: float | None = None
    payments_topic: str = config.TOPIC_PAYMENTS
    labels_topic: str = config.TOPIC_LABELS
    alerts_topic: str = config.TOPIC_ALERTS
    dead_letter_topic: str = config.TOPIC_DEAD_LETTERS
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = DEFAULT_MAX_OFFSETS_PER_TRIGGER
    trigger_interval: str | None = None
    available_now: bool = False
    max_lateness_hours: float = stream.DEFAULT_MAX_LATENESS_HOURS
    snapshot_every: int = stream.DEFAULT_SNAPSHOT_EVERY

    @property
    def query_checkpoint(self) -> Path:
        return self.checkpoint / "score"

    @property
    def state_folder(self) -> Path:
        return self.query_checkpoint / "feature-state"


class ScoreSetupError(RuntimeError):
    """The job cannot start as asked; the message is one sentence for the user."""


def check_outputs(cfg: ScoreConfig) -> None:
    """Refuse to mix a new checkpoint's outputs with those of another run."""
    new_query = not (cfg.query_checkpoint / "offsets").is_dir()
    used = [view for view in stream.VIEWS if any((cfg.out / view).rglob("*.parquet"))]
    if new_query and used:
        raise ScoreSetupError(
            f"{cfg.out} already holds {', '.join(used)} from another run, and the checkpoint "
            f"{cfg.query_checkpoint} is new: pass a new --out (or the old run's --checkpoint)."
        )


def build(spark: SparkSession, cfg: ScoreConfig, log=print, model=None):
    """The processor and the (not yet started) query writer."""
    models = stream.ModelSource(cfg.model_uri, cfg.threshold, log=log, current=model)
    model = models.current
    log(
        f"model: {model.name} version {model.version} from {cfg.model_uri}, "
        f"threshold {model.threshold:.4f}, label delay {model.label_delay_days} days"
    )
    processor = stream.BatchProcessor(
        models=models,
        views=stream.ParquetViews(cfg.out),
        state_store=stream.StateStore(cfg.state_folder),
        labels=stream.TopicReader(cfg.bootstrap_servers, cfg.labels_topic),
        payments=stream.TopicReader(cfg.bootstrap_servers, cfg.payments_topic),
        outputs=stream.KafkaOutputs(cfg.bootstrap_servers, cfg.alerts_topic, cfg.dead_letter_topic),
        settings=stream.Settings(
            max_lateness_hours=cfg.max_lateness_hours,
            label_delay_days=model.label_delay_days,
            snapshot_every=cfg.snapshot_every,
        ),
        log=log,
    )
    payments = kafka_io.read_stream(
        spark,
        cfg.bootstrap_servers,
        cfg.payments_topic,
        starting_offsets=cfg.starting_offsets,
        max_offsets_per_trigger=cfg.max_offsets_per_trigger,
    )
    writer = (
        payments.writeStream.foreachBatch(processor)
        .option("checkpointLocation", str(cfg.query_checkpoint))
        .queryName(QUERY_NAME)
    )
    if cfg.available_now:
        writer = writer.trigger(availableNow=True)
    elif cfg.trigger_interval:
        writer = writer.trigger(processingTime=cfg.trigger_interval)
    return processor, writer


def run(
    spark: SparkSession,
    cfg: ScoreConfig,
    stop: threading.Event | None = None,
    log=print,
    model: stream.LoadedModel | None = None,
):
    """Run the scoring query until it ends (``--available-now``) or ``stop`` is set.

    ``model``: the model ``cfg.model_uri`` points at, if the caller loaded it already.
    """
    check_outputs(cfg)
    processor, writer = build(spark, cfg, log=log, model=model)
    query = writer.start()
    stop = stop or threading.Event()
    try:
        while query.isActive:
            if stop.is_set():
                _stop_between_batches(query, log)
                break
            query.awaitTermination(0.5)
        error = query.exception()
        if error is not None:
            raise error
    finally:
        processor.labels.close()
        processor.payments.close()
        processor.outputs.close()
    return processor


def _stop_between_batches(query, log, patience_s: float = 120.0) -> None:
    """Stop once the micro-batch in flight has finished (a stop mid-batch is safe, only slower)."""
    log("stopping: waiting for the micro-batch in flight")
    deadline = time.time() + patience_s
    while query.isActive and query.status.get("isTriggerActive") and time.time() < deadline:
        time.sleep(0.1)
    query.stop()
    log("stopped; restart on the same --checkpoint to resume")


def summarise(cfg: ScoreConfig, examples: int = 3) -> str:
    """What the output root holds: rows per view, and the newest alerts with their reasons."""
    lines = [f"{cfg.out}:"]
    for view in stream.VIEWS:
        rows = stream.count_rows(cfg.out, view)
        lines.append(f"  {view:<15} {rows:>10,} rows")
    # The newest day's alerts only: the view may hold years of them.
    days = sorted((cfg.out / stream.ALERTS).glob("date=*"))
    alerts = stream.read_view(days[-1].parent, days[-1].name) if days else None
    if alerts is not None and len(alerts):
        lines.append("newest alerts:")
        for alert in alerts.sort_values("event_time").tail(examples).itertuples():
            lines.append(
                f"  {alert.event_time:%Y-%m-%d %H:%M} {alert.card_id} {alert.amount:,.2f} "
                f"{alert.currency or ''} at {alert.merchant_id}: score {alert.score:.2f} "
                f"(model v{alert.model_version})"
            )
            lines.extend(f"      {reason}" for reason in alert.reasons)
    return "\n".join(lines)


def parse_args(argv: list[str]) -> ScoreConfig:
    parser = argparse.ArgumentParser(
        prog="./spark-submit.sh score",
        description="Score payments from Kafka as they arrive; write alerts, card-location "
        "history, scored transactions and dead letters.",
    )
    parser.add_argument(
        "--brokers",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or the local broker)",
    )
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
        "--out", type=Path, default=config.LAKE_DIR, help="output root (default: %(default)s)"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=config.CHECKPOINT_DIR,
        help="checkpoint root; the query's is CHECKPOINT/score (default: %(default)s)",
    )
    parser.add_argument("--payments-topic", default=config.TOPIC_PAYMENTS)
    parser.add_argument("--labels-topic", default=config.TOPIC_LABELS)
    parser.add_argument("--alerts-topic", default=config.TOPIC_ALERTS)
    parser.add_argument("--dead-letter-topic", default=config.TOPIC_DEAD_LETTERS)
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
        default=stream.DEFAULT_MAX_LATENESS_HOURS,
        help="a payment older than the newest event of its partition minus this is a dead letter "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--snapshot-every",
        type=int,
        default=stream.DEFAULT_SNAPSHOT_EVERY,
        help="micro-batches between snapshots of the feature state; a restart reads at most "
        "this many micro-batches from Kafka again (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.snapshot_every < 1:
        parser.error("--snapshot-every must be at least 1")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        parser.error("--threshold must be between 0 and 1")
    if args.max_offsets_per_trigger is not None and args.max_offsets_per_trigger <= 0:
        parser.error("--max-offsets-per-trigger must be positive")
    model = args.model
    if not model.startswith("models:/") and not Path(model).is_absolute():
        model = str(
            (config.PROJECT_ROOT / model) if not Path(model).exists() else Path(model).resolve()
        )
    return ScoreConfig(
        bootstrap_servers=config.bootstrap_servers(args.brokers),
        out=args.out.resolve(),
        checkpoint=args.checkpoint.resolve(),
        model_uri=model,
        threshold=args.threshold,
        payments_topic=args.payments_topic,
        labels_topic=args.labels_topic,
        alerts_topic=args.alerts_topic,
        dead_letter_topic=args.dead_letter_topic,
        starting_offsets=args.starting_offsets,
        max_offsets_per_trigger=args.max_offsets_per_trigger,
        trigger_interval=args.trigger_interval,
        available_now=args.available_now,
        max_lateness_hours=args.max_lateness_hours,
        snapshot_every=args.snapshot_every,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    topics = [cfg.payments_topic, cfg.labels_topic, cfg.alerts_topic, cfg.dead_letter_topic]
    try:
        kafka_io.require_topics(cfg.bootstrap_servers, topics)
        check_outputs(cfg)
        # Fail on a missing model before Spark starts, in one sentence.
        model = stream.load_model(cfg.model_uri, cfg.threshold)
    except (kafka_io.KafkaSetupError, ScoreSetupError, stream.ModelLoadError) as error:
        print(f"score: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def request_stop(signum, _frame):
        print(f"score: {signal.Signals(signum).name} received", flush=True)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    spark = get_session("fraudstream-score")
    run(spark, cfg, stop=stop, log=lambda line: print(line, flush=True), model=model)
    if cfg.available_now:
        print(summarise(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
