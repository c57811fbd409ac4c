"""The scoring query's ``foreachBatch``: one micro-batch, decided on the driver.

Spark does the work.

The query (:mod:`fraudstream.scoring.query`) reads ``payments`` and ``fraud-labels``
with Spark's Kafka source, parses them on the executors and sends them through the
card operator (:mod:`fraudstream.scoring.records`), which keeps every card's state in
Spark's state store. Each micro-batch then reaches :class:`BatchProcessor`:

1. a small Spark job summarises the batch (:func:`fraudstream.scoring.batch.summary_job`):
   per record its partition, offset, event time and merchant, and why it is set aside
   (invalid, a duplicate, late), plus the fraud facts the card operator made;
2. from that summary the driver decides: the dead letters, the payments to score now
   and those to hold for a later batch (:func:`fraudstream.scoring.state.hold_back`),
   the day tables' records (:mod:`fraudstream.scoring.daytables`), the next state;
3. the executors score what was released (:func:`fraudstream.scoring.batch.score_job`:
   features, model, reasons) into the views' rows, which Spark sends (alerts, dead
   letters) and writes (the Parquet views) (:mod:`fraudstream.scoring.outputs`);
4. the driver saves its small state (:class:`fraudstream.scoring.state.StateStore`).

Guarantees. Spark's checkpoint records each batch's Kafka offsets before it runs and
commits it after ``foreachBatch`` returns; after a crash the uncommitted batch runs
again with the same offsets, the card operator's state as of the batch before it, and
the driver's state saved after that batch. Its Parquet files replace those of the first
attempt: the views are exactly once. Kafka sends are at least once; ``alert_id`` is
deterministic so consumers drop duplicates.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fraudstream import schemas, storage
from fraudstream.features import DAY_MS
from fraudstream.scoring import parse
from fraudstream.scoring.model import LoadedModel
from fraudstream.scoring.state import (
    HELD_COLUMNS,
    Settings,
    StreamState,
    _advance,
    _watermark,
    empty_held,
    hold_back,
    lateness_cutoffs,
    operator_facts,
)
from fraudstream.scoring.views import ALERTS, CARD_LOCATIONS, DEAD_LETTERS, SCORED

_LOG = logging.getLogger(__name__)

#: Set to a batch id to kill the driver after that batch's outputs are written (tests).
CRASH_AT_BATCH_ENV = "FRAUDSTREAM_CRASH_AT_BATCH"


@dataclass
class BatchResult:
    """The views of one micro-batch, as pandas frames (times as int ms)."""

    alerts: pd.DataFrame
    card_locations: pd.DataFrame
    scored: pd.DataFrame
    dead_letters: pd.DataFrame
    counts: dict[str, int]
    #: Where the batch's time went, by stage, in seconds.
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _Decided:
    """What the driver decided about a micro-batch of the card operator's query."""

    dead_letters: pd.DataFrame
    #: Event times (ms) of the payments released to be scored now.
    scored_ms: np.ndarray
    #: The payments held for a later micro-batch (partition, offset, time, merchant).
    held: pd.DataFrame
    release_day: int | None
    oldest_day: int
    state: StreamState
    counts: dict[str, int]


#: A micro-batch's stages, in order: the progress line's lap times, and the names its
#: Spark jobs carry in Spark's UI and event log.
STAGES = ("read", "decide", "days", "hold", "score", "kafka", "write", "state")
#: Spark's local property for a job's description (``SparkContext.setJobDescription``).
JOB_DESCRIPTION = "spark.job.description"


class _Clock:
    """Lap times of a micro-batch's stages.

    With ``context``, each stage's Spark jobs are described as
    ``fraudstream: batch N, STAGE`` (Spark's UI, event log).
    """

    def __init__(self, context=None, batch_id: int | None = None):
        self.laps: dict[str, float] = {}
        self.last = time.perf_counter()
        self.context = context
        self.batch_id = batch_id
        self.previous = context.getLocalProperty(JOB_DESCRIPTION) if context else None
        self._describe(STAGES[0])

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = self.laps.get(stage, 0.0) + now - self.last
        self.last = now
        following = STAGES[STAGES.index(stage) + 1 :]
        self._describe(following[0] if following else None)

    def _describe(self, stage: str | None) -> None:
        if self.context is None:
            return
        text = f"fraudstream: batch {self.batch_id}, {stage}" if stage else self.previous
        self.context.setLocalProperty(JOB_DESCRIPTION, text)

    def close(self) -> None:
        """Give the thread's jobs their description from before the batch back."""
        self._describe(None)


def percentile(values: np.ndarray, q: float) -> float:
    """The ``q``-th percentile of ``values``; NaN if there are none."""
    return float(np.percentile(values, q)) if len(values) else math.nan


class EndOffsets:
    """The end offset of each partition of one topic now.

    A consumer in no group asks Kafka (it reads and commits nothing).
    """

    def __init__(self, bootstrap_servers: str, topic: str, client_properties=None):
        from fraudstream.kafka import clients

        self.topic = topic
        self.consumer = clients.consumer(bootstrap_servers, client_properties)

    def __call__(self) -> dict[int, int]:
        """Partition number -> its end offset (the offset the next record will get)."""
        from kafka import TopicPartition

        partitions = sorted(self.consumer.partitions_for_topic(self.topic) or ())
        parts = [TopicPartition(self.topic, p) for p in partitions]
        return {tp.partition: offset for tp, offset in self.consumer.end_offsets(parts).items()}

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()


class BatchProcessor:
    """The ``foreachBatch`` function of the scoring query: one micro-batch, start to end.

    Parameters
    ----------
    models : ModelSource
        Where the model comes from; refreshed before each batch.
    views : SparkOutputs
        Writes the views and sends the alerts and dead letters.
    state_store : StateStore
    labels_topic : str
        The labels topic: its records come through the same query.
    end_offsets : callable
        The payments topic's end offset per partition now (:class:`EndOffsets`), to
        know which partitions a catch-up still waits for.
    settings : Settings
    day_tables : DayTables
    held_folder : path or URI
        Where the rows of held payments wait, by batch id (under the checkpoint).
    rules : LiveRules or ReplayedRules
        The fraud-ops rules that decide each batch (:mod:`fraudstream.scoring.rulelog`).
    challengers : ChallengerSource, optional
        The shadow challenger, refreshed before each batch; none by default.
    metrics : ScoreMetrics, optional
        Counted after each batch, from what the batch computed anyway
        (:mod:`fraudstream.metrics`); none by default.
    log : callable
        Receives one progress line per micro-batch.
    """

    def __init__(
        self,
        models,
        views,
        state_store,
        labels_topic: str,
        end_offsets,
        settings: Settings,
        day_tables,
        held_folder,
        rules,
        challengers=None,
        metrics=None,
        log=_LOG.info,
    ):
        self.models = models
        self.challengers = challengers
        self.views = views
        self.state_store = state_store
        self.labels_topic = labels_topic
        self.end_offsets = end_offsets
        self.settings = settings
        self.day_tables = day_tables
        self.held_folder = held_folder
        self.rules = rules
        self.metrics = metrics
        self.log = log
        self.state: StreamState | None = None
        self.state_bytes = 0
        self._written_ms = 0.0
        #: Each model's broadcast (champion, challenger), made again when it changes.
        self._sent: dict[str, tuple[LoadedModel, Any]] = {}
        self.last_start: float | None = None
        self.batches = 0

    def state_before(self, batch_id: int) -> StreamState:
        """The state after batch ``batch_id - 1``: in memory, or from its snapshot."""
        if self.state is not None and self.state.batch_id == batch_id - 1:
            return self.state
        state = self.state_store.load(self.state_store.newest_snapshot(batch_id - 1))
        if state.batch_id != batch_id - 1:
            # Every batch saves its state; only a checkpoint copied in part, or made by
            # another version of the job, gets here.
            raise RuntimeError(
                f"The checkpoint has no scoring state after micro-batch {batch_id - 1}: "
                "start with a new --checkpoint and --out, or rebuild the views."
            )
        if state.batch_id >= 0:
            self.log(f"state: restored from the snapshot after micro-batch {state.batch_id}")
        return state

    def __call__(self, batch_df, batch_id: int) -> BatchResult:
        """One micro-batch of the card operator's query (:mod:`fraudstream.scoring.records`).

        The result's ``scored`` and ``alerts`` hold only each payment's Kafka time and
        whether it was alerted: the views' rows stay on the executors.
        """
        from pyspark.sql import functions as F  # noqa: N812

        from fraudstream.scoring import batch as on_executors
        from fraudstream.scoring import outputs
        from fraudstream.scoring import records as card_records
        from fraudstream.scoring.operator import AGGREGATE_COLUMNS, FACT_COLUMNS

        started = time.time()
        spark = batch_df.sparkSession
        context = spark.sparkContext
        clock = _Clock(context, batch_id)
        state = self.state_before(batch_id)
        model = self.models.refresh()
        challenger = self.challengers.refresh() if self.challengers is not None else None
        settings = self.settings
        now_ms = int(time.time() * 1000)
        labels_topic = self.labels_topic
        # The executors mark late payments before the card operator, by this batch's
        # cutoffs: published to the batch's tasks as a local property of its jobs.
        cutoffs = lateness_cutoffs(state, settings)
        context.setLocalProperty(
            card_records.CUTOFFS_PROPERTY, card_records.cutoffs_property(cutoffs)
        )
        # Persisted: both actions read the card operator's output of one run.
        columns = [
            *card_records.RECORD_COLUMNS,
            *card_records.CARRIED_COLUMNS,
            "transaction_id",
            "card_id",
            *AGGREGATE_COLUMNS,
            *FACT_COLUMNS,
        ]
        records = batch_df.select(*columns).persist()
        tables = output = None
        try:
            summary = on_executors.summary_job(records, labels_topic).toPandas()
            clock.lap("read")
            decided = self._decide(summary, state, batch_id, now_ms)
            clock.lap("decide")
            released_days = {int(d) for d in decided.scored_ms // DAY_MS}
            merchants_cards = self.day_tables.tables(released_days, batch_id, decided.oldest_day)
            clock.lap("days")
            to_score = records
            if len(state.held):
                earlier = spark.read.schema(records.schema).parquet(
                    str(self._held_path(state.batch_id))
                )
                to_score = records.unionByName(earlier)
            if len(decided.held):
                self._hold(spark, to_score, decided.held, batch_id)
            clock.lap("hold")
            tables = context.broadcast(merchants_cards)
            # The rules of the batch's first offsets on; logged before any output.
            history = self.rules.for_batch(batch_id, state.next_offsets)
            output = on_executors.score_job(
                to_score,
                labels_topic,
                decided.release_day,
                model,
                self._model_broadcast(context, model),
                tables,
                now_ms,
                history,
                challenger=(
                    None
                    if challenger is None
                    else (challenger, self._model_broadcast(context, challenger, "challenger"))
                ),
            ).persist()
            stats = outputs.batch_stats(output)
            clock.lap("score")
            # The executors scored what the driver released: the same decisions, twice made.
            if len(stats) != len(decided.scored_ms):
                raise RuntimeError(
                    f"micro-batch {batch_id}: the executors scored {len(stats):,} payments, "
                    f"the driver released {len(decided.scored_ms):,}"
                )
            alerted = stats["alerted"].to_numpy(dtype=bool)
            # Alerts first: ops see them before the Parquet writes.
            if alerted.any():
                self.views.send_alerts(output)
            dead = self.views.dead_letters(spark, decided.dead_letters)
            self.views.send_dead_letters(dead)
            clock.lap("kafka")
            self.views.write(
                batch_id,
                {
                    SCORED: output.select("date", f"{SCORED}.*"),
                    CARD_LOCATIONS: output.select("date", f"{CARD_LOCATIONS}.*"),
                    ALERTS: (
                        output.where(F.col(ALERTS).isNotNull()).select("date", f"{ALERTS}.*")
                        if alerted.any()
                        else None
                    ),
                    DEAD_LETTERS: dead,
                },
            )
            clock.lap("write")
        finally:
            context.setLocalProperty(card_records.CUTOFFS_PROPERTY, None)
            clock.close()
            records.unpersist()
            if output is not None:
                output.unpersist()
            if tables is not None:
                tables.destroy()
        counts = dict(decided.counts)
        counts["scored"] = len(stats)
        counts["alerts"] = int(alerted.sum())
        result = BatchResult(
            alerts=stats.loc[alerted],
            card_locations=pd.DataFrame(),
            scored=stats,
            dead_letters=decided.dead_letters,
            counts=counts,
            seconds=clock.laps,
        )
        self._commit(batch_id, result, decided.state)
        finished = time.time()
        latency_s = (self._written_ms - stats["kafka_timestamp_ms"].to_numpy()) / 1000
        if self.metrics is not None:
            self.metrics.record_batch(
                counts,
                stats["decision"].to_numpy(),
                latency_s,
                finished - started,
                {"champion": model, "challenger": challenger},
            )
        self.log(self._progress(batch_id, result, model, started, finished, latency_s, challenger))
        self.last_start = started
        self.batches += 1
        return result

    def _decide(self, summary: pd.DataFrame, state: StreamState, batch_id: int, now_ms: int):
        """What the driver decides from a micro-batch's summary (``scoring.batch``).

        That is the dead letters, the payments to score now and to hold, the day tables'
        new records, and the next state.
        """
        settings = self.settings
        is_label = summary["is_label"].to_numpy(dtype=bool)
        reason = summary["reason"].to_numpy(dtype=object)
        aside = pd.notna(reason)
        late = reason == parse.LATE
        duplicate = reason == parse.REASON_DUPLICATE
        words = reason.copy()
        partition = summary["partition"].to_numpy()
        for part, newest_ms in state.newest_by_partition.items():
            newest = schemas.format_time(pd.Timestamp(newest_ms, unit="ms", tz="UTC"))
            words[late & (partition == part)] = parse.REASON_LATE.format(
                hours=settings.max_lateness_hours, newest=newest
            )
        dead_letters = parse.dead_letters(summary.loc[aside], list(words[aside]), now_ms)
        facts = operator_facts(summary)
        # The payments, held ones first; one set aside has no time: released at once
        # (it is a dead letter already) and not scored.
        payments = summary.loc[~is_label, HELD_COLUMNS].copy()
        payments.loc[aside[~is_label], "event_ms"] = None
        released, held, release_day, offsets = hold_back(payments, state, self.end_offsets())
        released = released.loc[released["event_ms"].notna()].reset_index(drop=True)
        scored_ms = released["event_ms"].to_numpy(dtype=np.int64)
        newest_ms, newest_by_partition = _advance(
            state, scored_ms, released["partition"].to_numpy()
        )
        watermark_ms = _watermark(newest_by_partition, newest_ms, settings)
        day = scored_ms // DAY_MS
        counts = (
            pd.DataFrame({"merchant_id": released["merchant_id"].astype(object), "day": day})
            .groupby(["merchant_id", "day"], as_index=False, sort=False)
            .size()
            .rename(columns={"size": "tx_count"})
        )
        # No payment still to come is older than the watermark; this batch's may be.
        oldest_day = int(min(watermark_ms // DAY_MS, day.min(initial=watermark_ms // DAY_MS)))
        self.day_tables.record(batch_id, counts, facts, oldest_day)
        next_state = StreamState(
            newest_event_ms=newest_ms,
            newest_by_partition=newest_by_partition,
            batch_id=batch_id,
            held=held.astype({"event_ms": np.int64}) if len(held) else empty_held(),
            next_offsets=offsets,
        )
        return _Decided(
            dead_letters=dead_letters,
            scored_ms=scored_ms,
            held=held,
            release_day=release_day,
            oldest_day=oldest_day,
            state=next_state,
            counts={
                "records": int((~is_label).sum()),
                "labels": int(is_label.sum()),
                "invalid": int((aside & ~late & ~duplicate).sum()),
                "duplicates": int(duplicate.sum()),
                "late": int(late.sum()),
                "fraud_facts": len(facts),
                "held": len(held),
            },
        )

    def _held_path(self, batch_id: int):
        return storage.join(self.held_folder, f"batch-{batch_id:012d}")

    def _hold(self, spark, rows, held: pd.DataFrame, batch_id: int) -> None:
        """Write the held payments' rows to the checkpoint, by batch id.

        The rows are from the batch and the earlier held ones; the held rows no state can
        still name are forgotten.
        """
        from pyspark.sql import functions as F  # noqa: N812
        from pyspark.sql import types as T  # noqa: N812

        keys = spark.createDataFrame(
            held[["topic", "partition", "offset"]].astype(
                {"topic": object, "partition": np.int32, "offset": np.int64}
            ),
            T.StructType(
                [
                    T.StructField("topic", T.StringType()),
                    T.StructField("partition", T.IntegerType()),
                    T.StructField("offset", T.LongType()),
                ]
            ),
        )
        rows.join(F.broadcast(keys), ["topic", "partition", "offset"], "left_semi").write.mode(
            "overwrite"
        ).parquet(str(self._held_path(batch_id)))

    def _forget_held(self, batch_id: int) -> None:
        """Delete held rows no restart can need.

        Those are the rows of batches before the one whose state a rerun of ``batch_id``
        starts from, and of batches after it (a run abandoned with its checkpoint).
        """
        files = storage.files(self.held_folder)
        for name in files.list():
            if name.startswith("batch-") and int(name.split("-")[1]) not in (
                batch_id - 1,
                batch_id,
            ):
                files.delete(name)

    def _model_broadcast(self, context, model: LoadedModel, role: str = "champion"):
        """The model as a Spark broadcast, made again only when the role's model changes."""
        sent = self._sent.get(role)
        if sent is None or sent[0] is not model:
            if sent is not None:
                sent[1].unpersist()
            sent = self._sent[role] = (model, context.broadcast(model))
        return sent[1]

    def _commit(self, batch_id, result, next_state) -> None:
        """Save the state after a micro-batch whose outputs are written and sent."""
        clock = _Clock()
        self._written_ms = time.time() * 1000
        if os.environ.get(CRASH_AT_BATCH_ENV) == str(batch_id):
            # Fault injection for the crash test: die at the worst moment, with the
            # batch's outputs written but its offsets not committed.
            os.kill(os.getpid(), 9)
        # A batch run again starts from the card operator's state as of the batch before
        # it, so the driver's state is saved after every batch (a few hundred bytes).
        self.state_bytes = self.state_store.save(next_state)
        self._forget_held(batch_id)
        self.state = next_state
        clock.lap("state")
        result.seconds.update(clock.laps)

    def _progress(self, batch_id, result, model, started, finished, lag, shadow=None) -> str:
        """The batch's progress line; ``lag``: each payment's Kafka time to output, in s."""
        counts = result.counts
        duration = finished - started
        since = (started - self.last_start) if self.last_start else duration
        alert_lag = lag[result.scored["alerted"].to_numpy(dtype=bool)]
        # The size of the driver's snapshot: the payments it holds, and a few numbers.
        state_kb = self.state_bytes / 1e3
        return (
            f"batch {batch_id}: {counts['records']:,} records -> {counts['scored']:,} scored, "
            f"{counts['alerts']:,} alerts, {counts['invalid']:,} invalid, "
            f"{counts['duplicates']:,} duplicates, {counts['late']:,} late, "
            f"{counts['held']:,} held back; "
            f"{counts['labels']:,} labels ({counts['fraud_facts']:,} fraud facts) | "
            f"input {counts['records'] / max(since, 1e-3):,.0f}/s, "
            f"processed {counts['records'] / max(duration, 1e-3):,.0f}/s, "
            f"batch {duration:.2f} s | driver state {state_kb:,.1f} KB | "
            f"event-to-output p50 {percentile(lag, 50):.2f} s p99 {percentile(lag, 99):.2f} s, "
            f"to alert p99 {percentile(alert_lag, 99):.2f} s | "
            f"model {model.name} v{model.version}"
            f"{'' if shadow is None else f', challenger v{shadow.version}'} | "
            + " ".join(f"{stage} {seconds:.2f}" for stage, seconds in result.seconds.items())
        )
