"""Candidate per-card context features, in pandas, for the ablation of issue #19.

Not part of the feature spec (:mod:`fraudstream.features`): neither the training job
nor the score job reads them. ``bench/context_ablation.py`` adds them to the training
dataset to measure which, if any, is worth building into the JVM card operator.

Each is computed as of its payment, from the same card's payments ordered as
:mod:`fraudstream.features` orders them, ``(event_time, transaction_id)``; a payment
delivered twice is one payment (its first copy). "Earlier" means strictly before the
payment in that order; "the last 30 days" is the window ``(t - 30 d, t)`` of earlier
payments, as ``amount_to_card_mean`` uses it.

=============================  ========================================================
card_merchant_new_30d          1 if the card paid at this merchant in none of its
                               earlier payments of the last 30 days (group a)
card_distinct_merchants_today  distinct merchants of the card's payments of this UTC
                               day so far, this payment included (group b)
amount_zscore_30d              (amount - mean) / std of the card's earlier payments of
                               the last 30 days (population std, floored at
                               :data:`ZSCORE_STD_FLOOR`); 0 with fewer than 2 (group c)
hour_share_30d                 share of the card's earlier payments of the last 30
                               days whose UTC hour is within ±:data:`HOUR_RADIUS` hours
                               of this payment's (circular); 1 with none (group d)
category_share_30d             share of the card's earlier spend of the last 30 days at
                               merchants of this payment's ``merchant_category``; 1
                               with none (group e)
=============================  ========================================================

The neutral values for a card without history (0, 1) say "nothing unusual"; the model
also sees ``card_tx_count_30d``, so it can tell them from a real match.

State each would need per card in the operator. Its state (``CardHistory``'s binary
form, version 2) already holds the card's payments of the last 30 days with their time,
cents, location and merchant (a per-card table of distinct merchants, a varint index a
payment). So (a) and (b) need no new state, only new aggregates over the held payments
(their merchants, and today's); (c) none either (sums of cents and of squared cents over
the held payments); (d) none (the hour comes from the held time); (e) is the only one
that adds state: each payment's ``merchant_category`` (a per-card table of the
categories seen, at most 13 in the simulator, and about one byte a payment: some 55
bytes for the simulator's ~55 payments a card in 30 days, and a new version of the
binary form).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraudstream import features

WINDOW_MS = 30 * features.DAY_MS
#: The smallest standard deviation (EUR) a z-score divides by: a card that always pays
#: the same amount would otherwise turn a one-cent change into a huge score.
ZSCORE_STD_FLOOR = 1.0
#: Hours either side of the payment's hour that count as "its usual time".
HOUR_RADIUS = 2

GROUPS: dict[str, list[str]] = {
    "merchant_novelty": ["card_merchant_new_30d"],
    "distinct_merchants_today": ["card_distinct_merchants_today"],
    "amount_zscore": ["amount_zscore_30d"],
    "hour_unusualness": ["hour_share_30d"],
    "category_share": ["category_share_30d"],
}
CONTEXT_COLUMNS = [column for columns in GROUPS.values() for column in columns]
#: Columns of the payment events these features read.
EVENT_COLUMNS = [
    "transaction_id",
    "event_time",
    "card_id",
    "merchant_id",
    "merchant_category",
    "amount",
]


def _ordered(events: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The unique payments sorted by card, then time and id; and how to map them back.

    Returns the sorted frame (with ``card`` codes, ``time_ms``, ``day``), the row of
    the sorted frame for each input row, and the index of each row's window start
    (the first of the card's payments after ``t - 30 d``).
    """
    unique = events.drop_duplicates("transaction_id", keep="first")
    codes = pd.factorize(unique["card_id"], sort=False)[0].astype(np.int64)
    time_ms = features._time_ms(unique["event_time"])
    order = features._event_order(codes, time_ms, unique["transaction_id"].to_numpy())
    rows = pd.DataFrame(
        {
            "card": codes[order],
            "time_ms": time_ms[order],
            "transaction_id": unique["transaction_id"].to_numpy()[order],
            "merchant_id": unique["merchant_id"].astype(object).to_numpy()[order],
            "category": unique["merchant_category"].astype(object).to_numpy()[order],
            "amount": pd.to_numeric(unique["amount"]).to_numpy(dtype=float)[order],
        }
    )
    rows["day"] = rows["time_ms"] // features.DAY_MS
    position = pd.Series(np.arange(len(rows)), index=rows["transaction_id"].to_numpy())
    back = position.reindex(events["transaction_id"].to_numpy()).to_numpy()
    # One sorted key across cards, as features._card_features builds it.
    time = rows["time_ms"].to_numpy()
    base = time.min() if len(time) else 0
    span = np.int64(time.max(initial=0) - base + 2 * WINDOW_MS + 1)
    key = rows["card"].to_numpy() * span + (time - base)
    start = np.searchsorted(key, key - WINDOW_MS, side="right")
    return rows, back, start


def _window_sums(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Per row, the sum of ``values`` over its earlier payments of the window.

    ``values`` has one row per sorted payment (and optionally columns); the window of
    row ``i`` is rows ``start[i]`` to ``i - 1``.
    """
    cumulative = np.concatenate(
        [np.zeros((1, *values.shape[1:]), dtype=values.dtype), np.cumsum(values, axis=0)]
    )
    at = np.arange(len(values))
    return cumulative[at] - cumulative[start]


def merchant_novelty(rows: pd.DataFrame) -> np.ndarray:
    """``card_merchant_new_30d`` of sorted payments (see the module's table)."""
    previous = rows.groupby(["card", "merchant_id"], sort=False)["time_ms"].shift(1)
    return (previous.isna() | (previous <= rows["time_ms"] - WINDOW_MS)).to_numpy(dtype=float)


def distinct_merchants_today(rows: pd.DataFrame) -> np.ndarray:
    """``card_distinct_merchants_today`` of sorted payments, this one included."""
    first_today = ~rows.duplicated(["card", "day", "merchant_id"], keep="first")
    return (
        first_today.astype(np.int64).groupby([rows["card"], rows["day"]], sort=False).cumsum()
    ).to_numpy(dtype=float)


def amount_zscore(rows: pd.DataFrame, start: np.ndarray) -> np.ndarray:
    """``amount_zscore_30d`` of sorted payments, from their earlier payments only."""
    amount = rows["amount"].to_numpy()
    count = np.arange(len(rows)) - start
    total = _window_sums(amount, start)
    squares = _window_sums(amount**2, start)
    mean = np.divide(total, count, out=np.zeros(len(rows)), where=count > 0)
    variance = np.divide(squares, count, out=np.zeros(len(rows)), where=count > 0) - mean**2
    std = np.maximum(np.sqrt(np.clip(variance, 0.0, None)), ZSCORE_STD_FLOOR)
    return np.where(count >= 2, (amount - mean) / std, 0.0)


def hour_share(rows: pd.DataFrame, start: np.ndarray) -> np.ndarray:
    """``hour_share_30d`` of sorted payments, from their earlier payments only."""
    hour = (rows["time_ms"].to_numpy() % features.DAY_MS) // features.HOUR_MS
    per_hour = np.zeros((len(rows), 24), dtype=np.int32)
    per_hour[np.arange(len(rows)), hour] = 1
    earlier = _window_sums(per_hour, start)
    near = (hour[:, None] + np.arange(-HOUR_RADIUS, HOUR_RADIUS + 1)[None, :]) % 24
    matched = np.take_along_axis(earlier, near, axis=1).sum(axis=1)
    count = np.arange(len(rows)) - start
    return np.divide(matched, count, out=np.ones(len(rows)), where=count > 0)


def category_share(rows: pd.DataFrame, start: np.ndarray) -> np.ndarray:
    """``category_share_30d`` of sorted payments, from their earlier spend only."""
    codes, _ = pd.factorize(rows["category"].fillna("unknown"), sort=False)
    amount = rows["amount"].to_numpy()
    spend = np.zeros((len(rows), codes.max(initial=0) + 1))
    spend[np.arange(len(rows)), codes] = amount
    earlier = _window_sums(spend, start)
    same = earlier[np.arange(len(rows)), codes]
    total = earlier.sum(axis=1)
    return np.divide(same, total, out=np.ones(len(rows)), where=total > 0)


def compute(events: pd.DataFrame) -> pd.DataFrame:
    """The candidate context features of ``events``, as of each payment.

    Parameters
    ----------
    events : DataFrame
        Payment events with at least :data:`EVENT_COLUMNS`.

    Returns
    -------
    DataFrame
        :data:`CONTEXT_COLUMNS` as float64, one row per event in the input order (a
        repeated delivery gets its first copy's values), on ``events``' index.
    """
    if len(events) == 0:
        return pd.DataFrame({name: pd.Series(dtype=np.float64) for name in CONTEXT_COLUMNS})
    rows, back, start = _ordered(events)
    values = {
        "card_merchant_new_30d": merchant_novelty(rows),
        "card_distinct_merchants_today": distinct_merchants_today(rows),
        "amount_zscore_30d": amount_zscore(rows, start),
        "hour_share_30d": hour_share(rows, start),
        "category_share_30d": category_share(rows, start),
    }
    return pd.DataFrame(
        {name: np.asarray(values[name], dtype=np.float64)[back] for name in CONTEXT_COLUMNS},
        index=events.index,
    )
