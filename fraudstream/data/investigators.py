"""The simulator's investigators: analysts' verdicts on each day's top cards, as label events.

Each UTC day the analysts investigate the ``k`` cards with the highest scores (a card's
score is its highest payment score of the day, ranked as Card Precision@k ranks them:
``fraudstream.ml.evaluate.top_k_cards``) and give a verdict on every payment of the
day of each: ``fraud`` if the simulator made it fraud, else ``genuine``. A card found
defrauded is blocked and not investigated again. Each verdict is a label event of the
contract (``source`` ``analyst``) reported a few hours after the payment and before its
day ends: the day's verdicts are known before the next day, as the feedback protocol
(``fraudstream.ml.feedback``) assumes. The chargebacks stay as they are: a fraud gets
both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fraudstream import schemas
from fraudstream.features import DAY_MS
from fraudstream.ml import evaluate

#: How long after a payment its verdict is reported, in hours (uniform), at the latest
#: at the end of its day.
VERDICT_DELAY_HOURS = (1.0, 6.0)
HOUR_MS = 3_600_000


def analyst_labels(
    payments: pa.Table, labels: pa.Table, score, k: int = evaluate.DEFAULT_K, seed: int = 0
) -> pa.Table:
    """The analysts' label events on the payments' top ``k`` cards of each day.

    Parameters
    ----------
    payments : pyarrow.Table
        Payment events (``transaction_id``, ``card_id``, ``event_time``).
    labels : pyarrow.Table
        The simulator's label events: a payment with a ``fraud`` label is fraud.
    score : array-like
        One score per payment, in ``payments``' order (a model's, or any risk score).
    k : int
        Cards investigated a day.
    seed : int
        Seed of the reporting delays.

    Returns
    -------
    pyarrow.Table
        Label events in ``schemas.LABEL_ARROW_SCHEMA``, ``source`` ``analyst``, one per
        payment of each investigated card's day, the fraud scenario on frauds; sorted by
        ``reported_time``.
    """
    fraud = labels.filter(pc.equal(labels["label"], "fraud"))
    scenario = dict(
        zip(
            fraud["transaction_id"].to_pylist(),
            fraud["scenario"].to_pylist(),
            strict=True,
        )
    )
    frame = pd.DataFrame(
        {
            "transaction_id": payments["transaction_id"].to_numpy(),
            "card_id": payments["card_id"].to_numpy(),
            "event_ms": payments["event_time"].cast(pa.int64()).to_numpy(),
            "score": np.asarray(score, dtype=float),
        }
    )
    frame["y"] = frame["transaction_id"].isin(scenario.keys()).astype(np.int64)
    frame["day"] = frame["event_ms"] // DAY_MS
    investigated: list[pd.DataFrame] = []
    blocked: set = set()
    for _, day in frame.groupby("day", sort=True):
        top = evaluate.top_k_cards(day["card_id"], day["y"], day["score"], k, blocked)
        blocked.update(top.loc[top["y"] > 0, "card"])
        investigated.append(day.loc[day["card_id"].isin(top["card"])])
    chosen = pd.concat(investigated) if investigated else frame.iloc[:0]
    delay_ms = np.random.default_rng(seed).uniform(*VERDICT_DELAY_HOURS, len(chosen)) * HOUR_MS
    end_of_day = (chosen["day"].to_numpy() + 1) * DAY_MS - 1
    reported = np.minimum(chosen["event_ms"].to_numpy() + delay_ms.astype(np.int64), end_of_day)
    is_fraud = chosen["y"].to_numpy() == 1
    table = pa.table(
        {
            "transaction_id": pa.array(chosen["transaction_id"], pa.string()),
            "card_id": pa.array(chosen["card_id"], pa.string()),
            "label": pa.array(np.where(is_fraud, "fraud", "genuine"), pa.string()),
            "source": pa.array(np.full(len(chosen), "analyst", dtype=object), pa.string()),
            "reported_time": pa.array(reported, pa.timestamp("ms", tz="UTC")),
            "scenario": pa.array([scenario.get(t) for t in chosen["transaction_id"]], pa.string()),
            "schema_version": pa.array(
                np.full(len(chosen), schemas.SCHEMA_VERSION, dtype=np.int32), pa.int32()
            ),
        },
        schema=schemas.LABEL_ARROW_SCHEMA,
    )
    return table.sort_by([("reported_time", "ascending")])
