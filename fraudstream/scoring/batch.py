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
2. :func:`score_job`, on the executors: the payments released are parsed again with the
   contract (the same parser, the same decisions, checked), and get their features from
   the operator's aggregates and the day tables, their scores from the model and, if
   alerted, their reasons. The model and the day tables go to the executors as Spark
   broadcasts. Each payment scored becomes one row of its views
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


def classify(payments: pd.DataFrame):
    """Parse payment records with the contract and decide which are set aside.

    Returns ``(events, aggregates, bad, reasons, aside)``: the valid payments (in
    record order) with their aggregates row for row; the positions of the invalid
    records and why; and for each valid payment, why it is set aside (None: scored):
    the decisions :func:`summary_job` reports, made again in the scoring pass.
    """
    events, bad, reasons = parse.parse_payments(payments)
    keys = ["partition", "offset"]
    aggregates = events[keys].merge(payments[[*keys, *AGGREGATE_COLUMNS]], on=keys, how="left")[
        AGGREGATE_COLUMNS
    ]
    missing = aggregates["n_30d"].isna().to_numpy()
    if missing.any():
        raise RuntimeError(
            f"{int(missing.sum()):,} valid payments came without the card operator's "
            "aggregates; the executors' parser disagrees with itself."
        )
    # The operator flags a copy of a payment its card holds or one earlier in the batch
    # (an older copy is late), and marked late payments by the driver's cutoffs.
    duplicate = aggregates["duplicate"].to_numpy(dtype=bool)
    late = aggregates["late"].to_numpy(dtype=bool)
    aside = np.where(duplicate, parse.REASON_DUPLICATE, np.where(late, parse.LATE, None))
    return events, aggregates, bad, reasons, aside.astype(object)


def views_of(
    records: pd.DataFrame,
    labels_topic: str | None,
    release_day: int | None,
    model,
    day_tables: tuple[pd.DataFrame, pd.DataFrame],
    now_ms: int,
) -> dict[str, pd.DataFrame]:
    """The views of the payments among ``records`` that are scored now: valid, neither
    a duplicate nor late, and of a day up to ``release_day`` (None: any day)."""
    from fraudstream import features
    from fraudstream.scoring import daytables, views

    payments = records.loc[(records["topic"] != labels_topic).to_numpy()].reset_index(drop=True)
    events, aggregates, _, _, aside = classify(payments)
    event_ms = features._time_ms(events["event_time"])
    chosen = aside == None  # noqa: E711
    if release_day is not None:
        chosen &= event_ms // features.DAY_MS <= release_day
    events = events.loc[chosen].reset_index(drop=True)
    aggregates = aggregates.loc[chosen].reset_index(drop=True)
    event_ms = event_ms[chosen]
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
    scores = model.score(computed[model.feature_columns])
    alerted = scores >= model.threshold
    rows = (events, event_ms, computed)
    return {
        views.ALERTS: views.alert_frame(*rows, scores, alerted, model, now_ms),
        views.CARD_LOCATIONS: views.location_frame(*rows),
        views.SCORED: views.scored_frame(*rows, scores, alerted, model, now_ms),
    }


def score(
    batches: Iterator[pa.RecordBatch],
    labels_topic: str | None,
    release_day: int | None,
    model,
    day_tables,
    now_ms: int,
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``: the views of each chunk's payments, a row per payment
    (:data:`~fraudstream.scoring.outputs.OUTPUT_SCHEMA`).

    ``model`` and ``day_tables`` are Spark broadcasts: read once per Python worker."""
    from fraudstream.scoring import outputs

    for batch in batches:
        views = views_of(
            batch.to_pandas(), labels_topic, release_day, model.value, day_tables.value, now_ms
        )
        if len(views["scored"]):
            yield outputs.output_batch(views)


def _is_label(labels_topic: str | None):
    from pyspark.sql import functions as F  # noqa: N812

    return F.lit(False) if labels_topic is None else F.col("topic") == labels_topic


def summary_job(records, labels_topic: str | None):
    """Each record of the micro-batch in a few columns, from what the parse before the
    card operator carried (``records.CARRIED_COLUMNS``) and the operator's
    flags: a Spark projection, no Python. A record's bytes only if it is set aside."""
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


def score_job(records, labels_topic, release_day, model, day_tables, now_ms):
    """The views of the payments released (:func:`score` on the executors), a row per
    payment; the rows that are not released are left out before Python sees them."""
    from pyspark.sql import functions as F  # noqa: N812

    from fraudstream import features
    from fraudstream.scoring import outputs

    chosen = (
        ~_is_label(labels_topic) & F.col("reason").isNull() & ~F.col("duplicate") & ~F.col("late")
    )
    if release_day is not None:
        chosen &= F.col("event_ms") < (release_day + 1) * features.DAY_MS
    function = partial(
        score,
        labels_topic=labels_topic,
        release_day=release_day,
        model=model,
        day_tables=day_tables,
        now_ms=now_ms,
    )
    return records.where(chosen).mapInArrow(function, outputs.OUTPUT_SCHEMA)
