"""The scoring query's Kafka records with their cards' aggregates, computed on executors.

Each payment record is parsed and validated on the executors with the contract's one
parser (:func:`fraudstream.scoring.parse.parse_payments`), turned into the
operator's input (:func:`fraudstream.features._card_rows`), and sent through the card
operator, whose state lives in the query's checkpoint. Records that are not valid
payments go through with null aggregates, so the ``foreachBatch`` function receives every
record of its micro-batch once, with the aggregates of those that are payments.

Lateness is decided here, before the operator, with the driver's rule and the driver's
numbers: a payment earlier than its Kafka partition's cutoff (the partition's newest
event time as of the earlier micro-batches, minus the allowed lateness) is marked
``late``, so the operator checks it but does not add it to its card's state. The driver
publishes the cutoffs of each micro-batch as a Spark local property
(:data:`CUTOFFS_PROPERTY`, set around the batch's one action), which every task of that
job reads from its ``TaskContext``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import types as T  # noqa: N812

from fraudstream.kafka.streams import record_columns
from fraudstream.scoring.operator import KEEP_DAYS, card_aggregates

#: The Kafka record columns the micro-batches carry (what ``parse.parse_payments`` reads).
RECORD_COLUMNS = ["key", "value", "topic", "partition", "offset", "timestamp_ms"]

_INPUT_SCHEMA = T.StructType(
    [
        T.StructField("card_id", T.StringType()),
        T.StructField("transaction_id", T.StringType()),
        T.StructField("time_ms", T.LongType()),
        T.StructField("cents", T.LongType()),
        T.StructField("lat_e6", T.LongType()),
        T.StructField("lon_e6", T.LongType()),
        T.StructField("located", T.BooleanType()),
        T.StructField("country", T.StringType()),
        T.StructField("late", T.BooleanType()),
        T.StructField("merchant_id", T.StringType()),
        T.StructField("report_ms", T.LongType()),
    ]
)
_INTEGERS = ["time_ms", "cents", "lat_e6", "lon_e6", "report_ms"]
_INPUTS = [field.name for field in _INPUT_SCHEMA.fields]

#: What the parse found out, carried through the card operator beside each record: why
#: a record is not a valid payment or label (null if it is), which the driver decides
#: on with a valid payment's event time and merchant; and the rest of a valid payment's
#: fields, from which the scoring pass makes its features and views without parsing the
#: record again (the operator gives its ``transaction_id`` and ``card_id``).
CARRIED_SCHEMA = T.StructType(
    [
        T.StructField("reason", T.StringType()),
        T.StructField("event_ms", T.LongType()),
        T.StructField("event_merchant_id", T.StringType()),
        T.StructField("event_merchant_category", T.StringType()),
        T.StructField("event_amount", T.DoubleType()),
        T.StructField("event_currency", T.StringType()),
        T.StructField("event_channel", T.StringType()),
        T.StructField("event_lat", T.DoubleType()),
        T.StructField("event_lon", T.DoubleType()),
        T.StructField("event_country", T.StringType()),
    ]
)
#: The payment fields among :data:`CARRIED_COLUMNS`, by the contract's name.
CARRIED_FIELDS = {
    f"event_{name}": name
    for name in ("merchant_category", "amount", "currency", "channel", "lat", "lon", "country")
}
CARRIED_COLUMNS = [field.name for field in CARRIED_SCHEMA.fields]
_CARRIED_DOUBLES = [f.name for f in CARRIED_SCHEMA.fields if isinstance(f.dataType, T.DoubleType)]


def inputs_schema(records_schema: T.StructType) -> T.StructType:
    """The schema of :func:`operator_inputs`' rows for records of ``records_schema``."""
    return T.StructType(records_schema.fields + _INPUT_SCHEMA.fields + CARRIED_SCHEMA.fields)


#: Spark local property with ``{partition: cutoff_ms}`` of the micro-batch being run.
CUTOFFS_PROPERTY = "fraudstream.lateness.cutoffs"


def cutoffs_property(cutoffs: dict[int, int]) -> str:
    """The :data:`CUTOFFS_PROPERTY` value for per-partition cutoffs (event time, ms)."""
    return json.dumps({str(int(p)): int(ms) for p, ms in cutoffs.items()})


def _cutoffs() -> dict[int, int]:
    """The cutoffs the driver set for this task's job; none outside a scoring batch."""
    from pyspark import TaskContext

    context = TaskContext.get()
    text = context.getLocalProperty(CUTOFFS_PROPERTY) if context is not None else None
    return {int(p): ms for p, ms in json.loads(text).items()} if text else {}


def late(partition: np.ndarray, time_ms: np.ndarray, cutoffs: dict[int, int]) -> np.ndarray:
    """Which payments are earlier than their partition's cutoff (none without one)."""
    cutoff = np.full(len(partition), np.iinfo(np.int64).min, dtype=np.int64)
    for part, ms in cutoffs.items():
        cutoff[partition == part] = ms
    return time_ms < cutoff


def _payment_inputs(records: pd.DataFrame, cutoffs: dict[int, int]) -> pd.DataFrame:
    """Payment records' operator inputs by ``(partition, offset)``.

    That is a valid payment's inputs, or an invalid record's reason.
    """
    from fraudstream import features
    from fraudstream.scoring import parse

    events, bad, reasons = parse.parse_payments(records)
    rows = features._card_rows(events)
    rows["late"] = late(
        events["partition"].to_numpy(), rows["time_ms"].to_numpy(dtype=np.int64), cutoffs
    )
    rows["merchant_id"] = events["merchant_id"].astype(object).to_numpy()
    rows["report_ms"] = None
    rows["partition"] = events["partition"].to_numpy()
    rows["offset"] = events["offset"].to_numpy()
    rows["event_ms"] = rows["time_ms"]
    rows["event_merchant_id"] = rows["merchant_id"]
    for carried, name in CARRIED_FIELDS.items():
        rows[carried] = events[name].to_numpy()
    return pd.concat([rows, _invalid(records, bad, reasons)], ignore_index=True)


def _invalid(records: pd.DataFrame, bad: list[int], reasons: list[str]) -> pd.DataFrame:
    """The invalid records among ``records`` (positions ``bad``) with their reasons."""
    return pd.DataFrame(
        {
            "partition": records["partition"].to_numpy()[bad],
            "offset": records["offset"].to_numpy()[bad],
            "reason": pd.Series(reasons, dtype=object),
        }
    )


def _report_inputs(records: pd.DataFrame) -> pd.DataFrame:
    """Label records' operator inputs by ``(partition, offset)``.

    That is valid fraud reports (a genuine verdict never undoes a report, and passes
    through), and invalid labels' reasons.
    """
    from fraudstream.scoring import parse

    reports, bad, reasons = parse.parse_labels(records)
    at = reports["position"].to_numpy()
    found = pd.DataFrame(
        {
            "card_id": reports["card_id"].to_numpy(),
            "transaction_id": reports["transaction_id"].to_numpy(),
            "report_ms": reports["report_ms"].to_numpy(),
            "partition": records["partition"].to_numpy()[at],
            "offset": records["offset"].to_numpy()[at],
        }
    )
    return pd.concat([found, _invalid(records, bad, reasons)], ignore_index=True)


def operator_inputs(
    frames: Iterator[pd.DataFrame], labels_topic: str | None = None
) -> Iterator[pd.DataFrame]:
    """Kafka records, each with the operator's input columns and :data:`CARRIED_COLUMNS`.

    The input columns are a payment's, a fraud report's (records of ``labels_topic``), or
    nulls for any other record.
    """
    cutoffs = _cutoffs()
    keys = ["partition", "offset"]
    for records in frames:
        is_label = (records["topic"] == labels_topic).to_numpy()
        payments = records.loc[~is_label, RECORD_COLUMNS].reset_index(drop=True)
        joined = [_typed(payments.merge(_payment_inputs(payments, cutoffs), on=keys, how="left"))]
        if is_label.any():
            labels = records.loc[is_label, RECORD_COLUMNS].reset_index(drop=True)
            joined.append(_typed(labels.merge(_report_inputs(labels), on=keys, how="left")))
        # Typed alike first: pandas warns when it has to guess a column's type from parts
        # of which one is all null (a label has no payment fields).
        joined = pd.concat(joined, ignore_index=True) if len(joined) > 1 else joined[0]
        yield joined[[*RECORD_COLUMNS, *_INPUTS, *CARRIED_COLUMNS]]


def _typed(joined: pd.DataFrame) -> pd.DataFrame:
    """Records with every input and carried column, each of its Spark type's pandas type."""
    for name in [*_INPUTS, *CARRIED_COLUMNS]:
        if name not in joined:
            joined[name] = None
    for name in [*_INTEGERS, "event_ms"]:
        joined[name] = joined[name].astype("Int64")
    for name in ("located", "late"):
        joined[name] = joined[name].astype("boolean")
    for name in _CARRIED_DOUBLES:
        joined[name] = joined[name].astype(np.float64)
    return joined


def with_card_aggregates(
    kafka_rows: DataFrame,
    labels_topic: str | None = None,
    keep_days: int = KEEP_DAYS,
    initial_states: DataFrame | None = None,
) -> DataFrame:
    """Spark's Kafka rows (batch or streaming) with the card operator's aggregates.

    The rows are :data:`RECORD_COLUMNS` and :data:`CARRIED_COLUMNS` plus, for each valid
    payment, the card operator's aggregates (``operator.AGGREGATE_COLUMNS``), and on any
    row that completes a fraud fact, that fact (``operator.FACT_COLUMNS``).

    Records of ``labels_topic`` (in the same stream, a union of two Kafka sources) are
    fraud reports for the operator; ``keep_days`` is how long it keeps payments for them.
    ``initial_states``: the cards' states a new checkpoint starts from, as a stream
    (``operator.read_card_states`` of what ``operator.card_states`` wrote).
    """
    records = record_columns(kafka_rows)
    inputs = records.mapInPandas(
        partial(operator_inputs, labels_topic=labels_topic), inputs_schema(records.schema)
    )
    return card_aggregates(
        inputs,
        passing=[*RECORD_COLUMNS, *CARRIED_COLUMNS],
        keep_days=keep_days,
        initial_states=initial_states,
    )
