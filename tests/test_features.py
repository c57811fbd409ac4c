"""The feature definition on hand-made histories and simulated ones."""

from __future__ import annotations

import pandas as pd
import pytest

from fraudstream import features
from fraudstream.data import simulate

T0 = pd.Timestamp("2018-04-02 12:00:00", tz="UTC")  # a Monday


def _events(rows: list[dict]) -> pd.DataFrame:
    """Payments from short dicts: t (hours after T0), card, amount, and optional others."""
    frame = pd.DataFrame(
        [
            {
                "transaction_id": row["id"],
                "event_time": T0 + pd.Timedelta(hours=row["t"]),
                "card_id": row.get("card", "c1"),
                "merchant_id": row.get("merchant", "m1"),
                "amount": row.get("amount", 10.0),
                "channel": row.get("channel", "pos"),
                "lat": row.get("lat", 48.0),
                "lon": row.get("lon", 2.0),
                "country": row.get("country", "FR"),
            }
            for row in rows
        ]
    )
    return frame


def _compute(rows, frauds=None, **kwargs) -> pd.DataFrame:
    result = features.compute(_events(rows), frauds, **kwargs)
    return result.set_index("transaction_id")


def test_compute_first_payment_of_a_card_has_neutral_history():
    got = _compute([{"id": "a", "t": 0, "amount": 42.5}]).loc["a"]
    assert got["card_tx_count_1d"] == 1 and got["card_tx_count_30d"] == 1
    assert got["card_mean_amount_7d"] == 42.5
    assert got["seconds_since_prev"] == 30 * 86400
    assert got["amount_to_card_mean"] == 1.0
    assert got["km_from_prev"] == 0 and got["speed_kmh_from_prev"] == 0
    assert got["km_from_usual"] == 0 and got["country_changed"] == 0
    assert got["merchant_tx_count_30d"] == 0 and got["merchant_fraud_rate_30d"] == 0


def test_compute_card_windows_include_the_payment_and_exclude_older_than_window():
    got = _compute(
        [
            {"id": "a", "t": -24 * 31, "amount": 1000.0},  # older than 30 days: out
            {"id": "b", "t": -24 * 8, "amount": 30.0},  # in 30d only
            {"id": "c", "t": -24 * 2, "amount": 20.0},  # in 7d and 30d
            {"id": "d", "t": -0.5, "amount": 10.0},  # in 1d, 1h
            {"id": "e", "t": 0, "amount": 40.0},
        ]
    ).loc["e"]
    assert got["card_tx_count_1d"] == 2 and got["card_mean_amount_1d"] == 25.0
    assert got["card_tx_count_7d"] == 3 and got["card_mean_amount_7d"] == pytest.approx(70 / 3)
    assert got["card_tx_count_30d"] == 4 and got["card_mean_amount_30d"] == 25.0
    assert got["card_tx_count_1h"] == 2
    assert got["seconds_since_prev"] == 1800
    # Earlier payments of the last 30 days: b, c, d, mean 20; 40 / 20.
    assert got["amount_to_card_mean"] == 2.0


def test_compute_window_edge_is_exclusive_of_exactly_one_window_ago():
    got = _compute([{"id": "a", "t": -24}, {"id": "b", "t": 0}]).loc["b"]
    assert got["card_tx_count_1d"] == 1  # window (t - 1 day, t]
    assert got["card_tx_count_7d"] == 2


def test_compute_ties_in_time_broken_by_transaction_id():
    got = _compute([{"id": "y", "t": 0, "amount": 30.0}, {"id": "x", "t": 0, "amount": 10.0}])
    assert got.loc["x", "card_tx_count_1d"] == 1  # x < y: x comes first
    assert got.loc["y", "card_tx_count_1d"] == 2
    assert got.loc["y", "card_mean_amount_1d"] == 20.0
    assert got.loc["y", "seconds_since_prev"] == 0


def test_compute_input_order_does_not_matter():
    rows = [
        {"id": f"t{i}", "t": h, "card": f"c{i % 3}", "amount": 5.0 + i}
        for i, h in enumerate([0, 5, 1, 30, 2, 2, 49, 3])
    ]
    forward = _compute(rows)
    backward = _compute(rows[::-1])
    pd.testing.assert_frame_equal(forward.sort_index(), backward.sort_index())
    assert list(_compute(rows).index) == [row["id"] for row in rows]  # output in input order


def test_compute_impossible_travel_and_country_change():
    got = _compute(
        [
            {"id": "a", "t": 0, "lat": 48.8566, "lon": 2.3522, "country": "FR"},  # Paris
            {"id": "b", "t": 1, "lat": 51.5072, "lon": -0.1276, "country": "GB"},  # London
            {"id": "c", "t": 1.05, "channel": "ecom", "lat": 35.68, "lon": 139.65},  # web
        ]
    )
    b = got.loc["b"]
    assert b["km_from_prev"] == pytest.approx(343.9, abs=0.5)
    assert b["speed_kmh_from_prev"] == pytest.approx(343.9, abs=0.5)  # one hour
    assert b["country_changed"] == 1
    assert b["km_from_usual"] == pytest.approx(b["km_from_prev"])
    # A web payment says nothing about where the card is.
    c = got.loc["c"]
    assert c["km_from_prev"] == 0 and c["speed_kmh_from_prev"] == 0 and c["country_changed"] == 0
    assert c["is_ecom"] == 1


def test_compute_speed_uses_a_ten_minute_floor():
    got = _compute([{"id": "a", "t": 0, "lat": 48.0}, {"id": "b", "t": 1 / 60, "lat": 48.1}])
    km = got.loc["b", "km_from_prev"]
    assert got.loc["b", "speed_kmh_from_prev"] == pytest.approx(km / (10 / 60))


def test_compute_merchant_windows_end_delay_days_back_and_use_only_reported_frauds():
    day = 24
    rows = [
        {"id": "p1", "t": -10 * day, "card": "x1"},  # 10 days before: in 7d/30d windows
        {"id": "p2", "t": -8 * day, "card": "x2"},  # 8 days before: in 1d window
        {"id": "p3", "t": -3 * day, "card": "x3"},  # within the delay: never counted
        {"id": "now", "t": 0, "card": "x4"},
    ]
    events = _events(rows)
    tx_day = events["event_time"].astype("int64") // 10**6 // features.DAY_MS  # ns → days
    today = int(tx_day.iloc[-1])
    frauds = pd.DataFrame(
        {
            "merchant_id": ["m1", "m1"],
            "tx_day": [int(tx_day.iloc[0]), int(tx_day.iloc[1])],
            # p1's fraud was reported two days ago; p2's is reported today: not yet known.
            "report_day": [today - 2, today],
        }
    )
    got = _compute(rows, frauds).loc["now"]
    assert got["merchant_tx_count_1d"] == 1  # day -8
    assert got["merchant_tx_count_7d"] == 2  # days -14..-8
    assert got["merchant_tx_count_30d"] == 2
    assert got["merchant_fraud_rate_1d"] == 0.0  # p2's report is not known yet
    assert got["merchant_fraud_rate_7d"] == 0.5  # p1 known, p2 not
    with_delay_2 = _compute(rows, frauds, label_delay_days=2).loc["now"]
    assert with_delay_2["merchant_tx_count_1d"] == 1  # day -3
    assert with_delay_2["merchant_tx_count_7d"] == 2  # days -9..-3: p2 and p3, not p1
    assert with_delay_2["merchant_fraud_rate_7d"] == 0.0  # p2 fraud is not known yet


def test_compute_merchant_without_labels_has_zero_rate():
    got = _compute([{"id": "a", "t": -24 * 9}, {"id": "b", "t": 0}]).loc["b"]
    assert got["merchant_tx_count_7d"] == 1
    assert got["merchant_fraud_rate_7d"] == 0.0


def test_compute_time_flags():
    got = _compute([{"id": "night", "t": -7, "card": "a"}, {"id": "sat", "t": 5 * 24, "card": "b"}])
    assert got.loc["night", "is_night"] == 1 and got.loc["night", "is_weekend"] == 0
    assert got.loc["sat", "is_night"] == 0 and got.loc["sat", "is_weekend"] == 1


def test_compute_duplicate_payment_counts_once():
    got = _compute(
        [
            {"id": "a", "t": 0, "amount": 10.0},
            {"id": "a", "t": 0, "amount": 10.0},
            {"id": "b", "t": 1, "amount": 20.0},
        ]
    )
    assert got.loc["b", "card_tx_count_1d"] == 2
    assert (got.loc["a", "card_tx_count_1d"] == 1).all()


def test_compute_features_never_null_and_columns_as_documented():
    payments, labels = simulate.simulate(
        simulate.SimulationConfig(customers=50, terminals=100, days=20, seed=4)
    )
    events = payments.to_pandas()
    result = features.compute(events, features.fraud_facts(events, labels.to_pandas()))
    assert list(result.columns) == ["transaction_id", *features.FEATURE_COLUMNS]
    assert result[features.FEATURE_COLUMNS].notna().all().all()
    assert set(features.HANDBOOK_FEATURES) <= set(features.FEATURE_COLUMNS)
    assert len(features.HANDBOOK_FEATURES) == 15


def test_compute_recent_known_frauds_of_card_and_merchant():
    day = 24
    rows = [
        {"id": "f1", "t": -5 * day, "card": "c1"},  # fraud, reported 3 days ago
        {"id": "f2", "t": -2 * day, "card": "c1"},  # fraud, reported today: not yet known
        {"id": "g1", "t": -4 * day, "card": "c2"},  # genuine, same merchant
        {"id": "now", "t": 0, "card": "c1"},
    ]
    events = _events(rows)
    days = (events["event_time"].astype("int64") // 10**6 // features.DAY_MS).tolist()
    today = days[-1]
    frauds = pd.DataFrame(
        {
            "card_id": ["c1", "c1"],
            "merchant_id": ["m1", "m1"],
            "tx_day": [days[0], days[1]],
            "report_day": [today - 3, today],
        }
    )
    got = _compute(rows, frauds).loc["now"]
    assert got["card_known_frauds_30d"] == 1
    # The merchant's last 7 whole days: f1, g1, f2; one known fraud among three.
    assert got["merchant_recent_fraud_rate_7d"] == pytest.approx(1 / 3)
    # With the delay shift (7 days), none of them is in the window yet.
    assert got["merchant_tx_count_7d"] == 0


def test_fraud_facts_a_payment_delivered_twice_is_one_fact():
    events = _events([{"id": "t1", "t": 10}, {"id": "t1", "t": 10}])
    labels = pd.DataFrame(
        {
            "transaction_id": ["t1"],
            "label": ["fraud"],
            "reported_time": [T0 + pd.Timedelta(days=2)],
        }
    )
    facts = features.fraud_facts(events, labels)
    assert len(facts) == 1 and facts["report_day"].iloc[0] - facts["tx_day"].iloc[0] == 2
