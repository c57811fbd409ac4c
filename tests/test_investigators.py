"""The simulator's investigators: verdicts on each day's top cards, in the label contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from fraudstream import schemas
from fraudstream.data import investigators, simulate
from fraudstream.features import DAY_MS


def _history():
    return simulate.simulate(
        simulate.SimulationConfig(customers=300, terminals=600, days=10, seed=3)
    )


def test_analyst_labels_are_the_truth_of_each_days_top_cards():
    payments, labels = _history()
    # A risk score anyone could compute: the amount.
    score = payments["amount"].to_numpy()
    verdicts = investigators.analyst_labels(payments, labels, score, k=20, seed=0)
    got = verdicts.to_pandas()
    frauds = set(
        labels.filter(pa.compute.equal(labels["label"], "fraud"))["transaction_id"].to_pylist()
    )
    assert len(got) > 0
    assert set(got["source"]) == {"analyst"}
    assert (got["label"] == "fraud").to_numpy().tolist() == [
        t in frauds for t in got["transaction_id"]
    ]
    assert got["scenario"].notna().tolist() == (got["label"] == "fraud").tolist()
    # The first day (nothing blocked yet): its 20 cards with the highest amount, and
    # every payment of theirs that day.
    frame = payments.select(["transaction_id", "card_id", "amount"]).to_pandas()
    frame["day"] = payments["event_time"].cast(pa.int64()).to_numpy() // DAY_MS
    first = frame.loc[frame["day"] == frame["day"].min()]
    best = first.groupby("card_id")["amount"].max()
    cards = set(best.sort_values(ascending=False).index[:20])
    expected = set(first.loc[first["card_id"].isin(cards), "transaction_id"])
    on_first = got.merge(frame[["transaction_id", "day"]], on="transaction_id")
    assert set(on_first.loc[on_first["day"] == frame["day"].min(), "transaction_id"]) == expected
    # At most k cards a day.
    assert on_first.groupby("day")["card_id"].nunique().max() <= 20


def test_analyst_labels_reported_hours_later_within_the_day_and_valid():
    payments, labels = _history()
    verdicts = investigators.analyst_labels(
        payments, labels, payments["amount"].to_numpy(), k=20, seed=0
    )
    event = pd.Series(
        payments["event_time"].cast(pa.int64()).to_numpy(),
        index=payments["transaction_id"].to_pylist(),
    )
    reported = verdicts["reported_time"].cast(pa.int64()).to_numpy()
    paid = event.loc[verdicts["transaction_id"].to_pylist()].to_numpy()
    assert (reported > paid).all()
    assert (reported // DAY_MS == paid // DAY_MS).all()
    assert (reported - paid <= investigators.VERDICT_DELAY_HOURS[1] * investigators.HOUR_MS).all()
    # Each one passes the label contract's checks (decode_label raises on an invalid one).
    decoded = [
        schemas.decode_label(r.encode()) for r in schemas.encode_labels(verdicts).to_pylist()
    ]
    assert [d["transaction_id"] for d in decoded] == verdicts["transaction_id"].to_pylist()
    assert np.all(np.diff(reported) >= 0)
