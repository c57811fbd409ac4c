"""The training dataset computed by Spark equals the one the pandas definition gives."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from fraudstream import features, lake
from fraudstream.data import simulate
from fraudstream.ml import dataset, training


@pytest.fixture(scope="module")
def lake_history(tmp_path_factory):
    """A simulated history longer than the card windows, written in the lake's layout."""
    root = tmp_path_factory.mktemp("history")
    payments, labels = simulate.simulate(
        simulate.SimulationConfig(customers=150, terminals=300, days=45, seed=11)
    )
    lake.write_events(payments, root)
    lake.write_labels(labels, root)
    return root


def test_build_dataset_with_spark_equals_the_pandas_definition(spark, lake_history):
    events = lake.read_events(lake_history).to_pandas()
    labels = lake.read_labels(lake_history).to_pandas()
    expected = training.build_dataset(events[features.EVENT_COLUMNS], labels, 7)

    got = dataset.build_dataset(
        dataset.read_events(spark, lake_history),
        dataset.read_labels(spark, lake_history / lake.LABELS),
        7,
    )
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected) and got["transaction_id"].is_unique
    got = got.set_index("transaction_id").loc[expected["transaction_id"]]
    expected = expected.set_index("transaction_id")
    np.testing.assert_allclose(
        got[features.FEATURE_COLUMNS].to_numpy(),
        expected[features.FEATURE_COLUMNS].to_numpy(),
        rtol=0,
        atol=1e-9,
    )
    for column in ("card_id", "event_ms", "day", "is_fraud"):
        pd.testing.assert_series_equal(got[column], expected[column], check_dtype=False)
    np.testing.assert_array_equal(got["fraud_reported_ms"], expected["fraud_reported_ms"])
    # Not trivially equal: full windows, frauds known to merchants and cards.
    assert expected["card_tx_count_30d"].max() > 30
    assert (expected["merchant_fraud_rate_30d"] > 0).sum() > 50
    assert (expected["card_known_frauds_30d"] > 0).sum() > 5


def test_read_events_until_keeps_the_days_before(spark, lake_history):
    events = lake.read_events(lake_history).to_pandas()
    cut = events["event_time"].iloc[len(events) // 2].date()
    got = dataset.read_events(spark, lake_history, until=cut).count()
    assert got == int((events["event_time"] < pd.Timestamp(cut, tz="UTC")).sum()) > 0


def test_build_dataset_brings_only_the_days_asked_for_in_parts_under_the_result_limit(
    spark, lake_history
):
    payments = dataset.read_events(spark, lake_history)
    labels = dataset.read_labels(spark, lake_history / lake.LABELS)
    whole = dataset.build_dataset(payments, labels, 7)
    first, last = dataset.day_range(payments)
    assert (first, last) == (min(whole["day"]), max(whole["day"]))

    # The features of the days asked for are those computed over the whole history.
    days = (first + timedelta(days=30), first + timedelta(days=40))
    got = dataset.build_dataset(payments, labels, 7, days=days)
    inside = whole.loc[(whole["day"] >= days[0]) & (whole["day"] < days[1])]
    assert set(got["day"]) == {days[0] + timedelta(days=i) for i in range(10)}
    pd.testing.assert_frame_equal(got.reset_index(drop=True), inside.reset_index(drop=True))

    # Past the driver's result limit the rows come in parts, none lost or repeated.
    frame = dataset.features_frame(payments, labels, 7)
    parts = dataset.to_pandas(frame, row_bytes=300, limit=len(whole) * 300 // 3)
    assert len(parts) == len(whole) and parts["transaction_id"].is_unique
    pd.testing.assert_frame_equal(
        parts.sort_values("transaction_id").reset_index(drop=True),
        frame.toPandas().sort_values("transaction_id").reset_index(drop=True),
    )
