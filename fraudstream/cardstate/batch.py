"""One micro-batch of the card operator's query: the driver decides, the executors score.

The micro-batch (Kafka records with their cards' aggregates, ``records``) is persisted,
so that the card operator runs once, and read by two Spark actions:

1. :func:`summarise`, on the executors: each record in a few columns (its partition,
   offset, event time and merchant; why it is set aside, if it is: not a valid payment
   or label, a duplicate, late; its bytes only then), and the fraud facts the card
   operator made. From these the driver decides which payments to score now
   (``stream.hold_back``), records the batch's merchant counts and facts in the day
   tables and has the values of new days computed.
2. :func:`score`, on the executors: the payments released are parsed again with the
   contract (the same parser, the same decisions), and get their features from the
   operator's aggregates and the day tables, their scores from the model and, if
   alerted, their reasons. The model and the day tables go to the executors as Spark
   broadcasts. Each task returns its views as Arrow IPC bytes, which the driver writes.

Payments held for a later micro-batch (a catch-up whose partitions stand days apart)
are written by Spark, with their aggregates, to the checkpoint (``held/batch-N``);
the next micro-batch reads them back beside its own records. The driver keeps only
their partition, offset, event time and merchant.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import types as T  # noqa: N812

from fraudstream.cardstate.operator import AGGREGATE_COLUMNS, FACT_COLUMNS

#: Marks a payment set aside as late; the driver words the reason (it knows the
#: partition's newest event time).
LATE = "late"

SUMMARY_SCHEMA = T.StructType(
    [
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("timestamp_ms", T.LongType()),
        T.StructField("is_label", T.BooleanType()),
        T.StructField("event_ms", T.LongType()),
        T.StructField("merchant_id", T.StringType()),
        T.StructField("reason", T.StringType()),
        T.StructField("key", T.BinaryType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("card_id", T.StringType()),
        T.StructField("fact_merchant_id", T.StringType()),
        T.StructField("fact_tx_ms", T.LongType()),
        T.StructField("fact_report_ms", T.LongType()),
    ]
)
SUMMARY_COLUMNS = [field.name for field in SUMMARY_SCHEMA.fields]

VIEWS_SCHEMA = T.StructType(
    [T.StructField("view", T.StringType()), T.StructField("data", T.BinaryType())]
)


def classify(payments: pd.DataFrame):
    """Parse payment records with the contract and decide which are set aside.

    Returns ``(events, aggregates, bad, reasons, aside)``: the valid payments (in
    record order) with their aggregates row for row; the positions of the invalid
    records and why; and for each valid payment, why it is set aside (None: scored).
    The same decisions on the driver's summary and on the executors' scoring pass.
    """
    from fraudstream import stream

    events, bad, reasons = stream.parse_payments(payments)
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
    aside = np.where(duplicate, stream.REASON_DUPLICATE, np.where(late, LATE, None))
    return events, aggregates, bad, reasons, aside.astype(object)


def _empty_summary() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=object) for name in SUMMARY_COLUMNS})


def _summary_of(records: pd.DataFrame, labels_topic: str | None) -> pd.DataFrame:
    from fraudstream import features, stream

    keys = ["partition", "offset"]
    columns = ["topic", *keys, "timestamp_ms", "card_id", *FACT_COLUMNS]
    is_label = (records["topic"] == labels_topic).to_numpy()
    payments = records.loc[~is_label].reset_index(drop=True)
    labels = records.loc[is_label].reset_index(drop=True)
    # One row per payment record; a valid one with its time and merchant.
    events, _, bad, reasons, aside = classify(payments)
    decided = pd.DataFrame(
        {
            "partition": events["partition"].to_numpy(),
            "offset": events["offset"].to_numpy(),
            "event_ms": features._time_ms(events["event_time"]),
            "merchant_id": events["merchant_id"].astype(object).to_numpy(),
            "reason": aside,
        }
    )
    out = payments[columns].merge(decided, on=keys, how="left").assign(is_label=False)
    out["reason"] = out["reason"].astype(object)
    out.loc[bad, "reason"] = reasons
    # Labels: only the invalid ones and those that completed a fraud fact.
    _, bad_labels, label_reasons = stream.parse_labels(labels)
    label_out = labels[columns].assign(is_label=True, event_ms=None, merchant_id=None, reason=None)
    label_out.loc[bad_labels, "reason"] = label_reasons
    label_out = label_out.loc[
        label_out["reason"].notna().to_numpy() | label_out["fact_report_ms"].notna().to_numpy()
    ].copy()
    # The bytes only of what goes to the dead letters.
    both = [out, label_out]
    sources = [payments, labels]
    for frame, source in zip(both, sources, strict=True):
        dead = frame["reason"].notna().to_numpy()
        at = frame.index.to_numpy()
        for name in ("key", "value"):
            frame[name] = np.where(dead, source[name].to_numpy(dtype=object)[at], None)
    out = pd.concat(both, ignore_index=True)
    # The card only where it completes a fact.
    out.loc[out["fact_report_ms"].isna().to_numpy(), "card_id"] = None
    for name in ("event_ms", "fact_tx_ms", "fact_report_ms"):
        out[name] = out[name].astype("Int64")
    return out[SUMMARY_COLUMNS]


def summarise(frames: Iterator[pd.DataFrame], labels_topic: str | None) -> Iterator[pd.DataFrame]:
    """``mapInPandas``: each partition's records as :data:`SUMMARY_SCHEMA` rows."""
    for records in frames:
        yield _summary_of(records, labels_topic)


def _ipc(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def read_ipc(data: bytes) -> pd.DataFrame:
    with pa.ipc.open_stream(data) as reader:
        return reader.read_all().to_pandas()


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
    from fraudstream import daytables, features, stream

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
    computed, _ = features.compute(
        events,
        keep_state=False,
        new_only=True,
        label_delay_days=model.label_delay_days,
        card_aggregates=aggregates,
        day_values=day_values,
    )
    scores = model.score(computed[model.feature_columns])
    alerted = scores >= model.threshold
    return {
        stream.ALERTS: stream._alerts(events, event_ms, computed, scores, alerted, model, now_ms),
        stream.CARD_LOCATIONS: stream._card_locations(events, event_ms, computed),
        stream.SCORED: stream._scored(events, event_ms, computed, scores, alerted, model, now_ms),
    }


def score(
    frames: Iterator[pd.DataFrame],
    labels_topic: str | None,
    release_day: int | None,
    model,
    day_tables,
    now_ms: int,
) -> Iterator[pd.DataFrame]:
    """``mapInPandas``: each partition's views as Arrow IPC bytes (:data:`VIEWS_SCHEMA`).

    ``model`` and ``day_tables`` are Spark broadcasts: read once per Python worker."""
    for records in frames:
        views = views_of(records, labels_topic, release_day, model.value, day_tables.value, now_ms)
        yield pd.DataFrame({"view": list(views), "data": [_ipc(frame) for frame in views.values()]})


def summary_job(batch, labels_topic: str | None):
    return batch.mapInPandas(partial(summarise, labels_topic=labels_topic), SUMMARY_SCHEMA)


def score_job(batch, labels_topic, release_day, model, day_tables, now_ms):
    function = partial(
        score,
        labels_topic=labels_topic,
        release_day=release_day,
        model=model,
        day_tables=day_tables,
        now_ms=now_ms,
    )
    return batch.mapInPandas(function, VIEWS_SCHEMA)
