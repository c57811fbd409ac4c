"""The features that need no per-card window, computed by Spark, equal to :mod:`features`.

:func:`features.compute` is the one definition; this module computes, on executors,
the columns of it that are not card windows: the merchant's payment counts and fraud
rates over whole UTC days shifted back by the label delay, the merchant's recent fraud
rates, the card's known frauds of the last 30 days, the time and channel flags and
the amount (:data:`OUTPUT_COLUMNS`). The values equal ``features.compute``'s for the
same payments and labels (``tests/test_spark_features.py`` checks it within 1e-9).

All of them are functions of a key (merchant or card) and a UTC day only, so they are
computed in two steps that a stream can later reuse as a stream-static join:

1. :func:`daily_tables`: one row per key and day, holding the day's payment count and
   the fraud "deltas": a fraud of day ``x`` reported on day ``r`` counts for the
   payment days ``D`` with ``x + shift < D <= x + shift + w`` and ``r < D``, that is a
   +1 from ``max(x + shift, r) + 1`` and a -1 after ``x + shift + w``.
2. :func:`lookup`: window functions over days per key (a ``rangeBetween`` frame for
   counts, a running sum of the deltas for fraud counts), joined back to the payments.

Days are days since the epoch in UTC, computed from epoch milliseconds, never from
the session time zone. A payment delivered twice (same ``transaction_id``) is one
payment: it counts once and gets one output row. Copies of a delivery are the same
payment, so which copy survives does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from operator import or_

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F  # noqa: N812

from fraudstream.features import (
    CARD_FEATURE_COLUMNS,
    DAY_MS,
    DEFAULT_LABEL_DELAY_DAYS,
    FEATURE_COLUMNS,
    HISTORY_DAYS,
    HOUR_MS,
    MERCHANT_WINDOWS_DAYS,
    NIGHT_END_HOUR,
    RECENT_WINDOWS_DAYS,
)
from fraudstream.scoring import operator

#: 1970-01-01 was a Thursday: Monday-based weekday = (epoch day + 3) mod 7, as pandas counts.
_EPOCH_WEEKDAY = 3
_SATURDAY = 5
_DAYS_PER_WEEK = 7
_CENTS_PER_UNIT = 100

#: The columns of a payment event the features read.
READ_COLUMNS = ["transaction_id", "event_time", "card_id", "merchant_id", "amount", "channel"]

#: The columns of ``features.compute`` this module produces, in its order.
OUTPUT_COLUMNS = [c for c in FEATURE_COLUMNS if c not in CARD_FEATURE_COLUMNS]

#: Fraud-count windows of a merchant: (delta column, shift, width). The delayed ones
#: cover the same days as the delayed payment counts; the recent ones no shift.
_MERCHANT_FRAUD_WINDOWS = [
    *((f"fraud_delta_{w}d", "delayed", w) for w in MERCHANT_WINDOWS_DAYS),
    *((f"recent_fraud_delta_{w}d", "recent", w) for w in RECENT_WINDOWS_DAYS),
]
_CARD_FRAUD_DELTA = "known_fraud_delta_30d"


@dataclass(frozen=True)
class DailyTables:
    """The per-key-per-day tables :func:`lookup` reads.

    Attributes
    ----------
    merchant_days : DataFrame
        ``merchant_id, day, tx_count`` and one fraud-delta column per merchant fraud
        window (``fraud_delta_{1,7,30}d``, ``recent_fraud_delta_{7,30}d``); one row
        per merchant and day that has payments or deltas.
    card_days : DataFrame
        ``card_id, day, known_fraud_delta_30d``; one row per card and day with a delta.
    """

    merchant_days: DataFrame
    card_days: DataFrame


# --- small columns --------------------------------------------------------------------


def _epoch_ms(timestamp: str) -> Column:
    return F.unix_millis(F.col(timestamp))


def _epoch_day(timestamp: str) -> Column:
    # Floor, not truncation, so a time before 1970 still falls in its own UTC day.
    return F.floor(_epoch_ms(timestamp) / F.lit(DAY_MS)).cast("long")


def _flag(condition: Column) -> Column:
    # A null channel (or time) is "not that": 0.0, as the pandas comparison gives.
    return F.when(condition, F.lit(1.0)).otherwise(F.lit(0.0))


def _rate(frauds: Column, count: Column) -> Column:
    return F.when(count > 0, frauds.cast("double") / count.cast("double")).otherwise(0.0)


def unique_payments(payments: DataFrame) -> DataFrame:
    """The columns the features read, one row per payment however often it was delivered.

    A repeated delivery (a producer retry, a replay) is the same payment, identical in
    every column: dropping identical rows is a hash aggregate, where
    ``dropDuplicates(["transaction_id"])`` needs a sort-based one (its ``first()`` of
    string columns cannot live in a hash map) that cost far more here. And since no
    column of a ``distinct`` can be pruned, every consumer of this frame has the same
    plan, so Spark computes it once and reuses the exchange.

    Parameters
    ----------
    payments : DataFrame
        Payment events in the contract's schema (``schemas.PAYMENT_SCHEMA``).

    Returns
    -------
    DataFrame
        :data:`READ_COLUMNS`, one row per distinct payment. Two deliveries of one
        ``transaction_id`` that differ in one of these columns stay two rows: that is
        a correction, not a copy, and the contract does not define it.
    """
    return payments.select(*READ_COLUMNS).distinct()


def _with_day(payments: DataFrame) -> DataFrame:
    return payments.withColumn("day", _epoch_day("event_time"))


# --- 1. fraud facts -------------------------------------------------------------------


def fraud_facts(payments: DataFrame, labels: DataFrame) -> DataFrame:
    """Join fraud labels to their payments: ``card_id, merchant_id, tx_day, report_day``.

    The Spark form of :func:`features.fraud_facts`: only ``label == 'fraud'``, a payment
    labelled more than once counts at its first fraud report, labels of payments not
    in ``payments`` are left out. Unlike the pandas join, a payment delivered twice
    gives one fact, not two.

    Parameters
    ----------
    payments : DataFrame
        Payment events in the contract's schema.
    labels : DataFrame
        Label events in the contract's schema (``schemas.LABEL_SCHEMA``).

    Returns
    -------
    DataFrame
        One row per fraudulent payment; days are UTC days since the epoch (long).
    """
    first_reports = (
        labels.where(F.col("label") == "fraud")
        .groupBy("transaction_id")
        .agg(F.min("reported_time").alias("reported_time"))
    )
    return (
        unique_payments(payments)
        .select("transaction_id", "card_id", "merchant_id", "event_time")
        .join(first_reports, on="transaction_id", how="inner")
        .select(
            "card_id",
            "merchant_id",
            _epoch_day("event_time").alias("tx_day"),
            _epoch_day("reported_time").alias("report_day"),
        )
    )


# --- 2. daily tables ------------------------------------------------------------------


def _deltas(facts: DataFrame, key: str, windows: list[tuple[str, int, int]]) -> DataFrame:
    """``key, day, <delta columns>``: +1/-1 steps of each fraud window, summed per day.

    Each fact gives, per window, +1 on the first payment day it counts for and -1 on
    the day after the last; a fact reported too late for any day of a window gives
    nothing for it (the +1 would come after the -1).
    """
    steps = []
    for name, shift, width in windows:
        first = F.greatest(F.col("tx_day") + shift, F.col("report_day")) + 1
        last = F.col("tx_day") + shift + width
        counts = first <= last
        steps.append(
            F.array(
                F.struct(
                    F.lit(name).alias("window"),
                    first.alias("day"),
                    F.lit(1).alias("d"),
                    counts.alias("counts"),
                ),
                F.struct(
                    F.lit(name).alias("window"),
                    (last + 1).alias("day"),
                    F.lit(-1).alias("d"),
                    counts.alias("counts"),
                ),
            )
        )
    return (
        facts.select(F.col(key), F.explode(F.flatten(F.array(*steps))).alias("step"))
        .where(F.col("step.counts"))
        .groupBy(key, F.col("step.day").alias("day"))
        .agg(
            *(
                F.sum(F.when(F.col("step.window") == name, F.col("step.d")).otherwise(0))
                .cast("long")
                .alias(name)
                for name, _, _ in windows
            )
        )
    )


def daily_tables(
    payments: DataFrame,
    facts: DataFrame,
    label_delay_days: int = DEFAULT_LABEL_DELAY_DAYS,
) -> DailyTables:
    """Per-merchant-per-day and per-card-per-day counts and fraud deltas.

    Parameters
    ----------
    payments : DataFrame
        Payment events in the contract's schema; copies of a payment count once.
    facts : DataFrame
        Fraud facts (:func:`fraud_facts`): ``card_id, merchant_id, tx_day, report_day``.
    label_delay_days : int
        How many whole days back the merchant windows end.

    Returns
    -------
    DailyTables
        Small tables, one row per key and day (see :class:`DailyTables`).
    """
    merchant_windows = [
        (name, label_delay_days if kind == "delayed" else 0, width)
        for name, kind, width in _MERCHANT_FRAUD_WINDOWS
    ]
    delta_names = [name for name, _, _ in merchant_windows]
    counts = (
        unique_payments(payments)
        .transform(_with_day)
        .groupBy("merchant_id", "day")
        .agg(F.count(F.lit(1)).alias("tx_count"))
    )
    merchant_deltas = _deltas(facts, "merchant_id", merchant_windows)
    # Days with payments and days with deltas are different sets: an outer join keeps
    # both, one row per merchant and day.
    merchant_days = counts.join(merchant_deltas, on=["merchant_id", "day"], how="full").select(
        "merchant_id",
        "day",
        F.coalesce("tx_count", F.lit(0)).cast("long").alias("tx_count"),
        *(F.coalesce(name, F.lit(0)).cast("long").alias(name) for name in delta_names),
    )
    card_days = _deltas(facts, "card_id", [(_CARD_FRAUD_DELTA, 0, HISTORY_DAYS)]).select(
        "card_id", "day", _CARD_FRAUD_DELTA
    )
    return DailyTables(merchant_days=merchant_days, card_days=card_days)


# --- 3. lookup ------------------------------------------------------------------------


def _on_payment_days(table: DataFrame, keys: DataFrame, key: str) -> DataFrame:
    """The table with a zero row added for every (key, day) a payment falls on.

    A running sum read on a day with no row of its own would be missed by the join
    back; the added rows carry the window values to every payment day.
    """
    value_names = [name for name in table.columns if name not in (key, "day")]
    zeros = keys.select(key, "day", *(F.lit(0).cast("long").alias(n) for n in value_names))
    return (
        table.unionByName(zeros)
        .groupBy(key, "day")
        .agg(*(F.sum(name).cast("long").alias(name) for name in value_names))
    )


def _merchant_values(merchant_days: DataFrame, label_delay_days: int) -> DataFrame:
    by_day = Window.partitionBy("merchant_id").orderBy("day")
    running = by_day.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    count_columns = []
    for w in MERCHANT_WINDOWS_DAYS:
        # Whole days [D - delay - w, D - delay): a range frame over the day numbers, so
        # days without payments (no row) are simply absent from the sum.
        frame = by_day.rangeBetween(-label_delay_days - w, -label_delay_days - 1)
        count_columns.append(F.sum("tx_count").over(frame).alias(f"merchant_tx_count_{w}d"))
    for w in RECENT_WINDOWS_DAYS:
        frame = by_day.rangeBetween(-w, -1)
        count_columns.append(F.sum("tx_count").over(frame).alias(f"recent_tx_count_{w}d"))
    # One row per merchant and day: a running sum over rows is the sum of all deltas up
    # to and including the day, the number of frauds the window holds that day.
    fraud_columns = [
        F.sum(name).over(running).alias(name.replace("_delta_", "_count_"))
        for name, _, _ in _MERCHANT_FRAUD_WINDOWS
    ]
    windowed = merchant_days.select("merchant_id", "day", *count_columns, *fraud_columns)
    counts = {w: F.coalesce(f"merchant_tx_count_{w}d", F.lit(0)) for w in MERCHANT_WINDOWS_DAYS}
    recent = {w: F.coalesce(f"recent_tx_count_{w}d", F.lit(0)) for w in RECENT_WINDOWS_DAYS}
    return windowed.select(
        "merchant_id",
        "day",
        *(counts[w].cast("double").alias(f"merchant_tx_count_{w}d") for w in counts),
        *(
            _rate(F.col(f"fraud_count_{w}d"), counts[w]).alias(f"merchant_fraud_rate_{w}d")
            for w in counts
        ),
        *(
            _rate(F.col(f"recent_fraud_count_{w}d"), recent[w]).alias(
                f"merchant_recent_fraud_rate_{w}d"
            )
            for w in recent
        ),
    )


def _card_values(card_days: DataFrame) -> DataFrame:
    running = (
        Window.partitionBy("card_id")
        .orderBy("day")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    return card_days.select(
        "card_id",
        "day",
        F.sum(_CARD_FRAUD_DELTA).over(running).cast("double").alias("card_known_frauds_30d"),
    )


def _payment_flags(payments: DataFrame) -> DataFrame:
    """Time, channel and amount columns of each payment (no window needed)."""
    ms = _epoch_ms("event_time")
    # Hour and weekday from epoch arithmetic: F.hour and F.dayofweek follow the session
    # time zone, the feature definition is UTC.
    ms_of_day = F.pmod(ms, F.lit(DAY_MS))
    weekday = F.pmod(F.col("day") + _EPOCH_WEEKDAY, F.lit(_DAYS_PER_WEEK))
    # Integer cents as the card operator's input has them (half to even, as np.round).
    cents = operator.cents(F.col("amount"))
    return payments.select(
        "transaction_id",
        "merchant_id",
        "card_id",
        "day",
        _flag(ms_of_day < NIGHT_END_HOUR * HOUR_MS).alias("is_night"),
        _flag(weekday >= _SATURDAY).alias("is_weekend"),
        _flag(F.col("channel") == "ecom").alias("is_ecom"),
        _flag(F.col("channel") == "atm").alias("is_atm"),
        (cents / F.lit(float(_CENTS_PER_UNIT))).alias("amount"),
    )


def lookup(
    payments: DataFrame,
    tables: DailyTables,
    label_delay_days: int = DEFAULT_LABEL_DELAY_DAYS,
) -> DataFrame:
    """The features of each payment, read from the daily tables.

    Parameters
    ----------
    payments : DataFrame
        Payment events in the contract's schema; one output row per ``transaction_id``.
    tables : DailyTables
        From :func:`daily_tables` with the same ``label_delay_days``.
    label_delay_days : int
        How many whole days back the merchant windows end.

    Returns
    -------
    DataFrame
        ``transaction_id`` and :data:`OUTPUT_COLUMNS`, all double, never null.
    """
    flags = unique_payments(payments).transform(_with_day).transform(_payment_flags)
    merchant_keys = flags.select("merchant_id", "day").distinct()
    card_keys = flags.select("card_id", "day").distinct()
    merchant_values = _merchant_values(
        _on_payment_days(tables.merchant_days, merchant_keys, "merchant_id"), label_delay_days
    )
    card_values = _card_values(_on_payment_days(tables.card_days, card_keys, "card_id"))
    return (
        flags.join(merchant_values, on=["merchant_id", "day"], how="left")
        .join(card_values, on=["card_id", "day"], how="left")
        # Every payment day has a row on both sides; the coalesce only guards the
        # "never null" promise.
        .select("transaction_id", *(F.coalesce(c, F.lit(0.0)).alias(c) for c in OUTPUT_COLUMNS))
    )


def values_on_days(
    counts: DataFrame,
    facts: DataFrame,
    days: list[int],
    label_delay_days: int = DEFAULT_LABEL_DELAY_DAYS,
) -> tuple[DataFrame, DataFrame]:
    """What :func:`lookup` gives a payment of any merchant or card on each of ``days``.

    The per-day form, for a stream that scores each day's payments as they come (every
    feature here but the flags is a function of a merchant, or a card, and the day
    alone): for a few days, sums over each window's days are cheaper than
    :func:`daily_tables`' running sums over every day, and count the same payments and
    facts (``tests/test_daytables.py`` checks them against ``features.compute``).

    Parameters
    ----------
    counts : DataFrame
        ``merchant_id, day, tx_count``: payments per merchant and day (several rows of
        one merchant and day add up).
    facts : DataFrame
        Fraud facts: ``card_id, merchant_id, tx_day, report_day``, one per payment.
    days : list of int
        UTC days since the epoch.

    Returns
    -------
    (DataFrame, DataFrame)
        ``merchant_id, day`` and the merchant columns of :data:`OUTPUT_COLUMNS`; and
        ``card_id, day, card_known_frauds_30d``. Keys whose values are all 0 on a day
        are left out: a payment that finds no row takes 0.
    """
    delay = label_delay_days
    target = F.col("target")
    on_days = F.explode(F.array(*(F.lit(int(day)) for day in days))).alias("target")
    first = min(days) - delay - max(MERCHANT_WINDOWS_DAYS)

    def within(column: str, start: Column, end: Column) -> Column:
        return (F.col(column) >= start) & (F.col(column) < end)

    def total(condition: Column, value: Column | None = None) -> Column:
        value = F.lit(1) if value is None else value
        return F.sum(F.when(condition, value).otherwise(0)).cast("long")

    delayed = {w: (target - delay - w, target - delay) for w in MERCHANT_WINDOWS_DAYS}
    recent = {w: (target - w, target) for w in RECENT_WINDOWS_DAYS}
    paid = (
        counts.where(within("day", F.lit(first), F.lit(max(days))))
        .select("merchant_id", "day", "tx_count", on_days)
        .groupBy("merchant_id", "target")
        .agg(
            *(total(within("day", *delayed[w]), F.col("tx_count")).alias(f"n{w}") for w in delayed),
            *(total(within("day", *recent[w]), F.col("tx_count")).alias(f"r{w}") for w in recent),
        )
    )
    # A fact counts for a day only once reported before it.
    known = (
        facts.where(within("tx_day", F.lit(first), F.lit(max(days))))
        .select("card_id", "merchant_id", "tx_day", "report_day", on_days)
        .where(F.col("report_day") < target)
    )
    frauds = known.groupBy("merchant_id", "target").agg(
        *(total(within("tx_day", *delayed[w])).alias(f"f{w}") for w in delayed),
        *(total(within("tx_day", *recent[w])).alias(f"g{w}") for w in recent),
    )
    both = paid.join(frauds, on=["merchant_id", "target"], how="full").na.fill(0)
    merchant_values = both.select(
        "merchant_id",
        target.alias("day"),
        *(F.col(f"n{w}").cast("double").alias(f"merchant_tx_count_{w}d") for w in delayed),
        *(
            _rate(F.col(f"f{w}"), F.col(f"n{w}")).alias(f"merchant_fraud_rate_{w}d")
            for w in delayed
        ),
        *(
            _rate(F.col(f"g{w}"), F.col(f"r{w}")).alias(f"merchant_recent_fraud_rate_{w}d")
            for w in recent
        ),
    )
    names = [c for c in merchant_values.columns if c not in ("merchant_id", "day")]
    merchant_values = merchant_values.where(reduce(or_, (F.col(c) != 0 for c in names)))
    card_values = (
        known.where(within("tx_day", target - HISTORY_DAYS, target))
        .groupBy("card_id", target.alias("day"))
        .agg(F.count(F.lit(1)).cast("double").alias("card_known_frauds_30d"))
    )
    return merchant_values, card_values


# --- 4. the entry ---------------------------------------------------------------------


def non_card_features(
    payments: DataFrame,
    labels: DataFrame,
    label_delay_days: int = DEFAULT_LABEL_DELAY_DAYS,
) -> DataFrame:
    """The non-card-window features of every payment, equal to ``features.compute``'s.

    Parameters
    ----------
    payments : DataFrame
        Payment events in the contract's schema (``event_time`` a timestamp).
    labels : DataFrame
        Label events in the contract's schema.
    label_delay_days : int
        How many whole days back the merchant windows end (7 by default).

    Returns
    -------
    DataFrame
        ``transaction_id`` and :data:`OUTPUT_COLUMNS`, one row per distinct
        ``transaction_id``.
    """
    facts = fraud_facts(payments, labels)
    tables = daily_tables(payments, facts, label_delay_days)
    return lookup(payments, tables, label_delay_days).select("transaction_id", *OUTPUT_COLUMNS)
