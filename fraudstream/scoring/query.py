"""The scoring query: configuration, wiring and the run loop of ``./spark-submit.sh score``.

The job file (``jobs/score.py``) parses options and calls :func:`run`; the rebuild job
(``jobs/rebuild.py``) calls the same :func:`run` into a new output root, which is why
this lives in the library. The micro-batch work itself is
:class:`fraudstream.scoring.processor.BatchProcessor`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from fraudstream import config, storage
from fraudstream.errors import FraudstreamError
from fraudstream.kafka import streams
from fraudstream.scoring import daytables, outputs, views
from fraudstream.scoring import records as card_records
from fraudstream.scoring.model import ChallengerSource, LoadedModel, ModelSource
from fraudstream.scoring.processor import BatchProcessor, EndOffsets
from fraudstream.scoring.state import (
    DEFAULT_MAX_LATENESS_HOURS,
    Settings,
    StateStore,
    payment_horizon_days,
)

_LOG = logging.getLogger(__name__)

DEFAULT_MODEL_URI = config.DEFAULT_MODEL_URI
DEFAULT_MAX_OFFSETS_PER_TRIGGER = 100_000
QUERY_NAME = "fraudstream-score"


@dataclass(frozen=True)
class ScoreConfig:
    """What a scoring query reads, writes and scores with (the score and rebuild jobs).

    The checkpoint root holds the Spark query's checkpoint, and inside that the driver's
    state, the day tables and the held payments.
    """

    bootstrap_servers: str
    #: Output root and checkpoint root: local folders or Hadoop URIs (``s3a://b/lake``).
    out: Path | str
    checkpoint: Path | str
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
    max_lateness_hours: float = DEFAULT_MAX_LATENESS_HOURS
    #: Parquet of the cards' states (``card_id, state``) a new operator checkpoint starts
    #: from, built in batch from a history that is not on the topic (``card_states`` job).
    initial_card_states: str | None = None
    #: Send alerts and dead letters to Kafka; a rebuild writes only its Parquet views.
    kafka_outputs: bool = True
    #: The fraud-ops rules topic, followed between micro-batches, and the topic where
    #: the job logs the rule sets it applies (``fraudstream.scoring.rulelog``).
    rules_topic: str = config.TOPIC_RULES
    rules_log_topic: str = config.TOPIC_RULES_APPLIED
    #: A rebuild: decide by the rules the job writing this output root applied, as its
    #: rules log says, instead of following the rules topic.
    rules_of: Path | str | None = None
    #: The shadow challenger: an alias URI followed between micro-batches
    #: (``models:/NAME@challenger``), a fixed version (a rebuild's), or None.
    challenger_uri: str | None = None
    #: Serve Prometheus metrics on ``http://METRICS_HOST:METRICS_PORT/metrics`` from the
    #: driver (:mod:`fraudstream.metrics`); 0: none.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"

    @property
    def query_checkpoint(self) -> Path | str:
        """The Spark query's checkpoint; what the job keeps of its own lives inside it."""
        return storage.join(self.checkpoint, "score")

    @property
    def state_folder(self) -> Path | str:
        """The driver's state, one snapshot per micro-batch (``scoring.state``)."""
        return storage.join(self.query_checkpoint, "feature-state")

    @property
    def day_tables_folder(self) -> Path | str:
        """The merchant and card day tables' records (``scoring.daytables``)."""
        return storage.join(self.query_checkpoint, "day-tables")

    @property
    def held_folder(self) -> Path | str:
        """Payments read but held for a later micro-batch, with their aggregates."""
        return storage.join(self.query_checkpoint, "held")


class ScoreSetupError(FraudstreamError):
    """The job cannot start as asked; the message is one sentence for the user."""


def check_outputs(cfg: ScoreConfig) -> None:
    """Refuse to mix a new checkpoint's outputs with those of another run.

    Raises :class:`storage.StorageError` if a location cannot be reached.
    """
    checkpoint, out = storage.files(cfg.query_checkpoint), storage.files(cfg.out)
    checkpoint.check()
    out.check()
    new_query = not checkpoint.exists("offsets")
    used = [view for view in views.VIEWS if out.any_file(view, ".parquet")]
    if new_query and used:
        raise ScoreSetupError(
            f"{cfg.out} already holds {', '.join(used)} from another run, and the checkpoint "
            f"{cfg.query_checkpoint} is new: pass a new --out (or the old run's --checkpoint)."
        )


#: The card operator's checkpoint format: 2 since the labels topic is a source of the
#: query and the card state keeps merchants and fraud reports (``CardHistory`` version 2);
#: 3 since the cards' initial states are a third source (:func:`_card_states_source`);
#: 4 since the merchant features come from per-day tables (``daytables``), not the
#: driver's snapshots; 5 since the executors score and held payments wait in the
#: checkpoint (``scoring.batch``), not in the driver's snapshots; 6 since the parse
#: carries the payment's fields through the operator (held rows have them).
OPERATOR_FORMAT = "6"
#: Where, in the query's checkpoint, the initial-states source looks when the query has
#: no initial states (a folder never made: Spark needs the same sources on resume).
NO_INITIAL_STATES = "no-initial-card-states"
OPERATOR_FORMAT_FILE = "card-operator-format"
#: Where the checkpoint says where its cards' state is (always ``operator`` now).
CARD_STATE_FILE = "card-state"


def check_checkpoint(cfg: ScoreConfig) -> None:
    """Refuse to resume a checkpoint this version of the job cannot continue.

    Before the card operator, the job kept the cards' state in the driver's snapshots;
    such a checkpoint (``card-state`` says ``driver``, or it has no such file) has no
    cards' state in Spark's state store. A new checkpoint records its format.
    """
    checkpoint = storage.files(cfg.query_checkpoint)
    mode = (
        checkpoint.read(CARD_STATE_FILE, Path.read_text).strip()
        if checkpoint.exists(CARD_STATE_FILE)
        else None
    )
    made = (
        checkpoint.read(OPERATOR_FORMAT_FILE, Path.read_text).strip()
        if checkpoint.exists(OPERATOR_FORMAT_FILE)
        else None
    )
    if checkpoint.exists("offsets"):
        if mode != "operator":
            raise ScoreSetupError(
                f"The checkpoint {cfg.query_checkpoint} was made by an earlier version of "
                "the job, which kept the cards' state in the driver: pass a new --checkpoint "
                "and --out, or rebuild the views."
            )
        if made != OPERATOR_FORMAT:
            raise ScoreSetupError(
                f"The checkpoint {cfg.query_checkpoint} was made by an earlier card operator, "
                "whose query had other sources: pass a new --checkpoint and --out, or rebuild "
                "the views."
            )
        return
    checkpoint.write(CARD_STATE_FILE, lambda path: path.write_text("operator\n"))
    checkpoint.write(OPERATOR_FORMAT_FILE, lambda path: path.write_text(OPERATOR_FORMAT))


def build(spark: SparkSession, cfg: ScoreConfig, log=_LOG.info, model=None, metrics=None):
    """The processor and the (not yet started) query writer.

    ``metrics``: a :class:`fraudstream.metrics.ScoreMetrics` the processor counts into.
    """
    models = ModelSource(cfg.model_uri, cfg.threshold, log=log, current=model)
    model = models.current
    log(
        f"model: {model.name} version {model.version} from {cfg.model_uri}, "
        f"threshold {model.threshold:.4f}, label delay {model.label_delay_days} days"
    )
    # The views are written by Spark: times in milliseconds, as they have always been.
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MILLIS")
    processor = BatchProcessor(
        models=models,
        views=outputs.SparkOutputs(
            cfg.out,
            kafka=(
                streams.spark_options(cfg.bootstrap_servers),
                cfg.alerts_topic,
                cfg.dead_letter_topic,
            )
            if cfg.kafka_outputs
            else None,
        ),
        state_store=StateStore(cfg.state_folder),
        labels_topic=cfg.labels_topic,
        end_offsets=EndOffsets(cfg.bootstrap_servers, cfg.payments_topic),
        settings=Settings(
            max_lateness_hours=cfg.max_lateness_hours,
            label_delay_days=model.label_delay_days,
        ),
        day_tables=daytables.DayTables(cfg.day_tables_folder, model.label_delay_days, spark),
        held_folder=cfg.held_folder,
        rules=_rules(spark, cfg, log),
        challengers=ChallengerSource(cfg.challenger_uri, model.label_delay_days, log=log),
        metrics=metrics,
        log=log,
    )
    # The cards' state lives in the card operator, on the executors (in the
    # checkpoint); foreachBatch gets each record with its card's aggregates.
    # The labels topic is a second source of the same query, read to its end at
    # each micro-batch (never rate-limited: a report may come early, never late),
    # and its fraud reports go to the card operator, which turns them into facts.
    _size_state(spark, log)
    payments = streams.read_stream(
        spark,
        cfg.bootstrap_servers,
        cfg.payments_topic,
        starting_offsets=cfg.starting_offsets,
        max_offsets_per_trigger=cfg.max_offsets_per_trigger,
    )
    labels = streams.read_stream(
        spark, cfg.bootstrap_servers, cfg.labels_topic, starting_offsets="earliest"
    )
    records = card_records.with_card_aggregates(
        payments.unionByName(labels),
        labels_topic=cfg.labels_topic,
        keep_days=payment_horizon_days(model.label_delay_days),
        initial_states=_card_states_source(spark, cfg, log),
    )
    writer = (
        # Spark ignores what the function returns; the job and the tests read it.
        records.writeStream.foreachBatch(processor)  # type: ignore[arg-type]
        .option("checkpointLocation", str(cfg.query_checkpoint))
        .queryName(QUERY_NAME)
    )
    if cfg.available_now:
        writer = writer.trigger(availableNow=True)
    elif cfg.trigger_interval:
        writer = writer.trigger(processingTime=cfg.trigger_interval)
    return processor, writer


def _rules(spark: SparkSession, cfg: ScoreConfig, log):
    """The rules that decide: the rules topic followed live, or a live job's, replayed."""
    from fraudstream.scoring import rulelog

    if cfg.rules_of is not None:
        key = rulelog.log_key(cfg.rules_of)
        history = rulelog.applied_history(
            rulelog.read_log(cfg.bootstrap_servers, cfg.rules_log_topic, key)
        )
        log(f"rules: {len(history)} rule sets as applied to {cfg.rules_of}")
        return rulelog.ReplayedRules(history)
    return rulelog.LiveRules(
        spark,
        cfg.bootstrap_servers,
        cfg.rules_topic,
        cfg.rules_log_topic,
        rulelog.log_key(cfg.out),
        cfg.dead_letter_topic,
        log=log,
    )


def _card_states_source(spark: SparkSession, cfg: ScoreConfig, log):
    """The query's third source: the cards' initial states, as a file stream.

    A new checkpoint with ``--initial-card-states`` reads the folder's Parquet files (all
    of them, at the first micro-batch). Otherwise, and whenever the checkpoint has started
    already, the source reads a place where no file is: Spark resumes a query only with
    the sources it started with, and the states have been loaded by then (a bank may
    delete them). The path is a glob, for which Spark neither checks that the folder
    exists nor pins the folder the files of earlier batches were listed under.
    """
    from fraudstream.scoring import operator

    started = storage.files(cfg.query_checkpoint).exists("offsets")
    if cfg.initial_card_states and not started:
        log(
            f"card operator: initial card states from {cfg.initial_card_states} "
            "(read at the first micro-batch)"
        )
        return operator.read_card_states(spark, storage.join(cfg.initial_card_states, "*.parquet"))
    if cfg.initial_card_states:
        log(
            f"card operator: --initial-card-states {cfg.initial_card_states} not read: the "
            "checkpoint has the cards' states already (they are read at a new checkpoint)"
        )
    none = storage.join(cfg.query_checkpoint, NO_INITIAL_STATES, "*.parquet")
    return operator.read_card_states(spark, none)


SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"


def _size_state(spark: SparkSession, log) -> None:
    """Give the card operator one state partition per core unless told otherwise.

    Spark's default of 200 shuffle partitions means 200 state-store tasks per
    micro-batch: about 13 s a batch on two cores, whatever its size. The number is
    frozen into the checkpoint at the first batch, so a cluster that will grow should
    set it (``--conf spark.sql.shuffle.partitions=N``) before its first run.
    """
    if spark.sparkContext.getConf().contains(SHUFFLE_PARTITIONS):
        return
    cores = str(spark.sparkContext.defaultParallelism)
    spark.conf.set(SHUFFLE_PARTITIONS, cores)
    log(f"state: {cores} partitions (one per core; --conf {SHUFFLE_PARTITIONS}=N to change)")


def run(
    spark: SparkSession,
    cfg: ScoreConfig,
    stop: threading.Event | None = None,
    log=_LOG.info,
    model: LoadedModel | None = None,
):
    """Run the scoring query until it ends (``--available-now``) or ``stop`` is set.

    ``model``: the model ``cfg.model_uri`` points at, if the caller loaded it already.
    """
    check_outputs(cfg)
    check_checkpoint(cfg)
    metrics = server = listener = processor = None
    if cfg.metrics_port:
        from fraudstream.metrics import ScoreMetrics, serve

        metrics = ScoreMetrics(QUERY_NAME)
        server = serve(metrics.registry, cfg.metrics_port, cfg.metrics_host)
        log(f"metrics: http://{cfg.metrics_host}:{cfg.metrics_port}/metrics")
    try:
        if metrics is not None:
            # The consumer lag and the state's size are in the query's progress, which
            # Spark gives its listeners after each micro-batch: nothing is computed for them.
            listener = metrics.listener()
            spark.streams.addListener(listener)
        processor, writer = build(spark, cfg, log=log, model=model, metrics=metrics)
        query = writer.start()
        stop = stop or threading.Event()
        while query.isActive:
            if stop.is_set():
                _stop_between_batches(query, log)
                break
            query.awaitTermination(0.5)
        error = query.exception()
        if error is not None:
            raise error
    finally:
        if processor is not None:
            processor.end_offsets.close()
            processor.rules.close()
        _stop_metrics(spark, server, listener)
    return processor


def _stop_metrics(spark: SparkSession, server, listener) -> None:
    if listener is not None:
        spark.streams.removeListener(listener)
    if server is not None:
        server.shutdown()
        server.server_close()


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
    for view in views.VIEWS:
        rows = views.count_rows(cfg.out, view)
        lines.append(f"  {view:<15} {rows:>10,} rows")
    # The newest day's alerts only: the view may hold years of them.
    alert_folder = storage.join(cfg.out, views.ALERTS)
    days = [name for name in storage.files(alert_folder).list() if name.startswith("date=")]
    alerts = views.read_view(alert_folder, days[-1]) if days else None
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
