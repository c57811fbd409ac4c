"""The scoring query's per-day merchant tables: equal to ``features.compute`` over the
whole history, whatever the micro-batches, a batch run twice, or a restart."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from fraudstream import features
from fraudstream.data import simulate
from fraudstream.scoring import daytables

DAY_MS = features.DAY_MS


@pytest.fixture(scope="module")
def simulated_history():
    payments, labels = simulate.simulate(
        simulate.SimulationConfig(customers=150, terminals=300, days=40, seed=5)
    )
    events = payments.to_pandas()
    events = events.sort_values(["event_time", "transaction_id"]).reset_index(drop=True)
    labels = labels.to_pandas()
    expected = features.compute(events, features.fraud_facts(events, labels))
    return events, labels, expected


def _batches(events, labels, seed: int, n: int):
    """The history as a live stream would bring it: cut at random times, each batch with
    its payments and the fraud facts whose payment and report had both come by then."""
    time_ms = features._time_ms(events["event_time"])
    # The facts of features.fraud_facts, each with the time it can be made: once both
    # its payment and its first fraud report have come.
    fraud = labels.loc[labels["label"] == "fraud"]
    reported = (
        fraud.assign(report_ms=features._time_ms(fraud["reported_time"]))
        .groupby("transaction_id", as_index=False)["report_ms"]
        .min()
    )
    joined = events.drop_duplicates("transaction_id").merge(reported, on="transaction_id")
    tx_ms = features._time_ms(joined["event_time"])
    facts = pd.DataFrame(
        {
            "card_id": joined["card_id"].to_numpy(),
            "merchant_id": joined["merchant_id"].to_numpy(),
            "tx_day": tx_ms // DAY_MS,
            "report_day": joined["report_ms"].to_numpy() // DAY_MS,
            "made_ms": np.maximum(tx_ms, joined["report_ms"].to_numpy()),
        }
    )
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(time_ms[1:-1], size=n - 1, replace=False))
    edges = [time_ms[0], *cuts, time_ms[-1] + 1]
    for first, end in itertools.pairwise(edges):
        rows = (time_ms >= first) & (time_ms < end)
        made_now = (facts["made_ms"] >= first) & (facts["made_ms"] < end)
        yield rows, facts.loc[made_now, daytables.FACT_COLUMNS]


def _counts(batch: pd.DataFrame) -> pd.DataFrame:
    day = features._time_ms(batch["event_time"]) // DAY_MS
    return (
        pd.DataFrame({"merchant_id": batch["merchant_id"].to_numpy(), "day": day})
        .groupby(["merchant_id", "day"], as_index=False)
        .size()
        .rename(columns={"size": "tx_count"})
    )


def _run(tables_of, events, labels, seed, n, rerun=(), restart_at=None):
    """Feed the batches to DayTables; return the features it gave each payment."""
    tables = tables_of()
    got = []
    for batch_id, (rows, facts) in enumerate(_batches(events, labels, seed, n)):
        batch = events.loc[rows]
        if batch_id == restart_at:
            tables = tables_of()  # a new driver: only the folder is left
        for _ in range(2 if batch_id in rerun else 1):
            day = features._time_ms(batch["event_time"]) // DAY_MS
            tables.record(batch_id, _counts(batch), facts, oldest_day=int(day.min()))
            values = tables.lookup(
                batch["merchant_id"], batch["card_id"], day, batch_id, oldest_day=int(day.min())
            )
        got.append(values.set_index(batch.index))
    return pd.concat(got).loc[events.index], int(day.min())


def test_day_tables_equal_compute_over_the_whole_history(spark, tmp_path, simulated_history):
    events, labels, expected = simulated_history

    def tables_of():
        tables = daytables.DayTables(tmp_path / "days", 7, spark)
        tables.fold_after = 6  # a fold every few batches, not every 64 files
        return tables

    got, oldest_day = _run(
        tables_of,
        events,
        labels,
        0,
        n=25,
        rerun={3, 11},
        restart_at=17,
    )
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True),
        expected[features.DAY_COLUMNS].reset_index(drop=True),
        check_exact=False,
        rtol=0,
        atol=1e-9,
    )
    # The history exercises the rates and the cards' known frauds, not only zeros.
    assert (expected["merchant_fraud_rate_30d"] > 0).sum() > 100
    assert (expected["card_known_frauds_30d"] > 0).sum() > 10
    # Folded and forgotten: no batch record older than the newest fold is left.
    folder = tmp_path / "days"
    folds = sorted(p.name for p in (folder / "folded").iterdir())
    assert len(folds) == 1
    newest = folds[0].removeprefix("upto-")
    for kind in ("counts", "facts"):
        assert all(p.stem > newest for p in (folder / kind).glob("*.parquet"))
    # Only the days a payment still to come can be of are kept: the last batch's.
    last_day = features._time_ms(events["event_time"].iloc[-1:])[0] // DAY_MS
    kept = sorted(int(p.name.split("-")[1]) for p in (folder / "days").iterdir())
    assert kept == list(range(oldest_day, last_day + 1))
