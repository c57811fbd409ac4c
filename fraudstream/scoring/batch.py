"""One micro-batch of the card operator's query: the driver decides, the executors score.

The micro-batch (Kafka records with their cards' aggregates, ``records``) is persisted,
so that the card operator runs once, and read by two Spark actions:

1. :func:`summary_job`, a Spark projection: each record in a few columns (its
   partition, offset, event time and merchant, carried from the parse before the card
   operator; why it is set aside, if it is: not a valid payment or label, a duplicate,
   late; its bytes only then), and the fraud facts the card operator made. From these
   the driver decides which payments to score now (``state.hold_back``), records the
   batch's merchant counts and facts in the day tables and has the values of new days
   computed.
2. :func:`score_job`, on the executors: the payments released, with the fields the
   parse before the card operator carried (the records' bytes are not read, nor parsed
   again), get their features from the operator's aggregates and the day tables, their
   scores from the model and, if alerted, their reasons. The model and the day tables go
   to the executors as Spark broadcasts. Each payment scored becomes one row of its views
   (:data:`fraudstream.scoring.outputs.OUTPUT_SCHEMA`), which Spark writes and sends
   (:mod:`fraudstream.scoring.outputs`): the driver never holds them.

Payments held for a later micro-batch (a catch-up whose partitions stand days apart)
are written by Spark, with their aggregates, to the checkpoint (``held/batch-N``);
the next micro-batch reads them back beside its own records. The driver keeps only
their partition, offset, event time and merchant.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa

from fraudstream.scoring import parse
from fraudstream.scoring.operator import AGGREGATE_COLUMNS, FACT_COLUMNS


def released_events(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The payments :func:`score_job` chose, and their card aggregates, row for row.

    The payments are as the contract's parser gives them.

    The fields come from the parse before the card operator (``records.CARRIED_COLUMNS``,
    and the operator's ``transaction_id`` and ``card_id``): the record is not parsed again.
    Spark chose the rows by the driver's decisions; a row that is not a valid payment to
    score now is a bug, and fails the batch.
    """
    from fraudstream.scoring.records import CARRIED_FIELDS

    refused = (
        rows["reason"].notna().to_numpy()
        | rows["event_ms"].isna().to_numpy()
        | rows["n_30d"].isna().to_numpy()
        | rows["duplicate"].fillna(True).to_numpy(dtype=bool)
        | rows["late"].fillna(True).to_numpy(dtype=bool)
    )
    if refused.any():
        raise RuntimeError(
            f"{int(refused.sum()):,} payments reached the scoring pass that the driver did "
            "not release (invalid, without the card operator's aggregates, a duplicate or late)."
        )
    events = pd.DataFrame(
        {
            "transaction_id": rows["transaction_id"].astype(object).to_numpy(),
            "event_time": pd.to_datetime(
                rows["event_ms"].to_numpy(dtype=np.int64), unit="ms", utc=True
            ),
            "card_id": rows["card_id"].astype(object).to_numpy(),
            "merchant_id": rows["event_merchant_id"].astype(object).to_numpy(),
            **{name: rows[carried].to_numpy() for carried, name in CARRIED_FIELDS.items()},
            "partition": rows["partition"].to_numpy(),
            "offset": rows["offset"].to_numpy(),
            "timestamp_ms": rows["timestamp_ms"].to_numpy(),
        }
    )
    for name in ("amount", "lat", "lon"):
        events[name] = events[name].astype(float)
    return events, rows[AGGREGATE_COLUMNS].reset_index(drop=True)


#: The columns the scoring pass reads, beside the card aggregates: never the record's
#: bytes.
SCORING_COLUMNS = [
    "transaction_id",
    "card_id",
    "partition",
    "offset",
    "timestamp_ms",
    "reason",
    "event_ms",
    "event_merchant_id",
]


def _row_schema():
    """The Spark schema of a scored row (:func:`scored_rows`): what the rules see, and where.

    A rule's columns (the payment's fields, the features and ``score``), then the
    payment's Kafka ``partition``, ``offset`` and ``timestamp_ms``, its ``event_ms`` and
    the shadow challenger's score (null without one), which no rule sees.
    """
    from pyspark.sql import types as T  # noqa: N812

    from fraudstream.scoring.rules import rule_input_schema

    return T.StructType(
        [
            *rule_input_schema().fields,
            T.StructField("partition", T.IntegerType()),
            T.StructField("offset", T.LongType()),
            T.StructField("timestamp_ms", T.LongType()),
            T.StructField("event_ms", T.LongType()),
            T.StructField("challenger_score", T.DoubleType()),
        ]
    )


def with_scores(rows: pd.DataFrame, model, day_tables, challenger=None) -> pd.DataFrame:
    """The payments :func:`score_job` chose (``rows``), each with its features and score.

    ``challenger``: the shadow challenger (a ``LoadedModel``) or None; its score, on the
    same features, is ``challenger_score`` (NaN without one).
    """
    from fraudstream import features
    from fraudstream.scoring import daytables

    events, aggregates = released_events(rows)
    event_ms = features._time_ms(events["event_time"])
    merchants, cards = day_tables
    day_values = daytables.values(
        merchants, cards, events["merchant_id"], events["card_id"], event_ms // features.DAY_MS
    )
    computed = features.compute(
        events,
        new_only=True,
        label_delay_days=model.label_delay_days,
        card_aggregates=aggregates,
        day_values=day_values,
    )
    own = [c for c in events.columns if c not in features.FEATURE_COLUMNS]
    return pd.concat(
        [
            events[own].reset_index(drop=True),
            computed[features.FEATURE_COLUMNS].reset_index(drop=True),
        ],
        axis=1,
    ).assign(
        score=model.score(computed[model.feature_columns]),
        event_ms=event_ms,
        challenger_score=(
            np.full(len(events), np.nan)
            if challenger is None
            else challenger.score(computed[challenger.feature_columns])
        ),
    )


def scored_rows(
    batches: Iterator[pa.RecordBatch], model, day_tables, schema: pa.Schema, challenger=None
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``, first pass: each payment with its features and scores.

    ``model``, ``day_tables`` and ``challenger`` (if any) are Spark broadcasts: read once
    per Python worker.
    """
    shadow = None if challenger is None else challenger.value
    for batch in batches:
        frame = with_scores(batch.to_pandas(), model.value, day_tables.value, shadow)
        if len(frame):
            yield pa.RecordBatch.from_pandas(
                frame[schema.names], schema=schema, preserve_index=False
            )


def views_of(
    rows: pd.DataFrame,
    model,
    rule_reasons: dict[str, str],
    now_ms: int,
    challenger_version: str | None = None,
):
    """The views of scored rows decided by Spark (:func:`score_job`'s second pass)."""
    from fraudstream import features
    from fraudstream.scoring import views

    event_ms = rows["event_ms"].to_numpy(dtype=np.int64)
    events = rows.assign(event_time=pd.to_datetime(event_ms, unit="ms", utc=True))
    computed = rows[features.FEATURE_COLUMNS]
    scores = rows["score"].to_numpy(dtype=float)
    decided = rows["decision"].to_numpy(dtype=object)
    fired = rows["rules_fired"].to_numpy(dtype=object)
    parts = (events, event_ms, computed, scores, decided, model, now_ms, fired)
    return {
        views.ALERTS: views.alert_frame(*parts, rule_reasons),
        views.CARD_LOCATIONS: views.location_frame(events, event_ms, computed),
        views.SCORED: views.scored_frame(
            *parts, rows["challenger_score"].to_numpy(dtype=float), challenger_version
        ),
    }


def view_rows(
    batches: Iterator[pa.RecordBatch],
    model,
    rule_reasons: dict[str, str],
    now_ms: int,
    challenger_version: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``, second pass: the views' rows of each decided payment.

    The rows are of :data:`~fraudstream.scoring.outputs.OUTPUT_SCHEMA`.
    """
    from fraudstream.scoring import outputs

    for batch in batches:
        views = views_of(batch.to_pandas(), model.value, rule_reasons, now_ms, challenger_version)
        if len(views["scored"]):
            yield outputs.output_batch(views)


def _is_label(labels_topic: str | None):
    from pyspark.sql import functions as F  # noqa: N812

    return F.lit(False) if labels_topic is None else F.col("topic") == labels_topic


def summary_job(records, labels_topic: str | None):
    """Each record of the micro-batch in a few columns: a Spark projection, no Python.

    The columns come from what the parse before the card operator carried
    (``records.CARRIED_COLUMNS``) and the operator's flags. A record's bytes only if it
    is set aside.
    """
    from pyspark.sql import functions as F  # noqa: N812

    is_label = _is_label(labels_topic)
    reason = F.coalesce(
        F.col("reason"),
        F.when(F.col("duplicate"), F.lit(parse.REASON_DUPLICATE)).when(
            F.col("late"), F.lit(parse.LATE)
        ),
    )
    aside = reason.isNotNull()
    fact = F.col("fact_report_ms").isNotNull()
    return records.select(
        "topic",
        "partition",
        "offset",
        "timestamp_ms",
        is_label.alias("is_label"),
        "event_ms",
        F.col("event_merchant_id").alias("merchant_id"),
        reason.alias("reason"),
        F.when(aside, F.col("key")).alias("key"),
        F.when(aside, F.col("value")).alias("value"),
        F.when(fact, F.col("card_id")).alias("card_id"),
        *FACT_COLUMNS,
    )


def score_job(
    records,
    labels_topic,
    release_day,
    model,
    model_sent,
    day_tables,
    now_ms,
    history,
    challenger=None,
):
    """The views of the payments released, a row each: Python, then Spark, then Python.

    1. :func:`scored_rows`: each payment's features and score, on the executors;
    2. ``rulelog.decide``: its rules and decision, by Spark's expression engine;
    3. :func:`view_rows`: its rows of the views.

    The rows that are not released are left out before Python sees them. ``model`` is
    the :class:`~fraudstream.scoring.model.LoadedModel` (its bands), ``model_sent`` its
    broadcast, ``history`` the rule sets (``rulelog.Applied``) that decide;
    ``challenger`` the shadow challenger's ``(LoadedModel, broadcast)``, or None.
    """
    from pyspark.sql import functions as F  # noqa: N812
    from pyspark.sql.pandas.types import to_arrow_schema

    from fraudstream import features
    from fraudstream.scoring import outputs, rulelog
    from fraudstream.scoring.records import CARRIED_FIELDS

    chosen = (
        ~_is_label(labels_topic) & F.col("reason").isNull() & ~F.col("duplicate") & ~F.col("late")
    )
    if release_day is not None:
        chosen &= F.col("event_ms") < (release_day + 1) * features.DAY_MS
    columns = [*SCORING_COLUMNS, *CARRIED_FIELDS, *AGGREGATE_COLUMNS]
    schema = _row_schema()
    first = partial(
        scored_rows,
        model=model_sent,
        day_tables=day_tables,
        schema=to_arrow_schema(schema, timezone="UTC"),
        challenger=None if challenger is None else challenger[1],
    )
    scored = records.where(chosen).select(*columns).mapInArrow(first, schema)
    decided = rulelog.decide(scored, history, model.threshold, model.decline_threshold)
    second = partial(
        view_rows,
        model=model_sent,
        rule_reasons=rulelog.rule_reasons(history),
        now_ms=now_ms,
        challenger_version=None if challenger is None else challenger[0].version,
    )
    return decided.mapInArrow(second, outputs.OUTPUT_SCHEMA)
