"""The candidate context features on hand-made histories, values worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudstream.ml import context_features

T0 = pd.Timestamp("2018-04-02 12:00:00", tz="UTC")


def _events(rows: list[dict]) -> pd.DataFrame:
    """Payments from short dicts: t (hours after T0), card, merchant, amount, category."""
    return pd.DataFrame(
        [
            {
                "transaction_id": row["id"],
                "event_time": T0 + pd.Timedelta(hours=row["t"]),
                "card_id": row.get("card", "c1"),
                "merchant_id": row.get("merchant", "m1"),
                "merchant_category": row.get("category", "grocery"),
                "amount": row.get("amount", 10.0),
            }
            for row in rows
        ]
    )


def _compute(rows: list[dict]) -> pd.DataFrame:
    events = _events(rows)
    return context_features.compute(events).set_index(events["transaction_id"])


def test_merchant_novelty_repeat_within_30_days_is_not_new_after_31_it_is():
    result = _compute(
        [
            {"id": "a", "t": 0},
            {"id": "b", "t": 24 * 10},  # 10 days later, same merchant
            {"id": "c", "t": 24 * 41},  # 31 days after b
            {"id": "d", "t": 24 * 41 + 1, "merchant": "m2"},
            {"id": "e", "t": 24 * 10, "card": "c2"},  # another card: its own history
        ]
    )
    assert result["card_merchant_new_30d"].to_dict() == {
        "a": 1.0,
        "b": 0.0,
        "c": 1.0,
        "d": 1.0,
        "e": 1.0,
    }


def test_distinct_merchants_today_counts_this_payment_and_restarts_each_day():
    result = _compute(
        [
            {"id": "a", "t": 0, "merchant": "m1"},
            {"id": "b", "t": 1, "merchant": "m2"},
            {"id": "c", "t": 2, "merchant": "m1"},
            {"id": "d", "t": 3, "merchant": "m3"},
            {"id": "e", "t": 24, "merchant": "m3"},  # the next UTC day
        ]
    )
    assert result["card_distinct_merchants_today"].to_dict() == {
        "a": 1.0,
        "b": 2.0,
        "c": 2.0,
        "d": 3.0,
        "e": 1.0,
    }


def test_amount_zscore_uses_only_earlier_payments():
    result = _compute(
        [
            {"id": "a", "t": 0, "amount": 10.0},
            {"id": "b", "t": 1, "amount": 20.0},
            # Earlier: 10 and 20: mean 15, population std 5.
            {"id": "c", "t": 2, "amount": 40.0},
            # Earlier: 10, 20, 40: mean 70/3, std sqrt((100 + 400 + 1600) / 3 - (70/3)^2).
            {"id": "d", "t": 3, "amount": 25.0},
            # 31 days later the window is empty again.
            {"id": "e", "t": 24 * 31 + 3, "amount": 500.0},
        ]
    )
    std_d = np.sqrt(2100 / 3 - (70 / 3) ** 2)
    assert result["amount_zscore_30d"].to_dict() == pytest.approx(
        {"a": 0.0, "b": 0.0, "c": 5.0, "d": (25.0 - 70 / 3) / std_d, "e": 0.0}, abs=1e-12
    )


def test_amount_zscore_floors_the_spread_of_a_steady_card():
    result = _compute(
        [
            {"id": "a", "t": 0, "amount": 10.0},
            {"id": "b", "t": 1, "amount": 10.0},
            {"id": "c", "t": 2, "amount": 13.0},
        ]
    )
    assert result.loc["c", "amount_zscore_30d"] == pytest.approx(
        3.0 / context_features.ZSCORE_STD_FLOOR
    )


def test_hour_share_counts_earlier_payments_within_two_hours_around_midnight():
    # T0 is 12:00 UTC; t=-11 is 01:00, t=11 is 23:00, t=13 is 01:00 the next day.
    result = _compute(
        [
            {"id": "a", "t": -11},  # 01:00, no history
            {"id": "b", "t": 0},  # 12:00: 01:00 is 11 h away
            {"id": "c", "t": 11},  # 23:00: 01:00 is 2 h away (across midnight), 12:00 is not
            {"id": "d", "t": 13},  # 01:00: 01:00 and 23:00 are near, 12:00 is not
        ]
    )
    assert result["hour_share_30d"].to_dict() == pytest.approx(
        {"a": 1.0, "b": 0.0, "c": 0.5, "d": 2 / 3}
    )


def test_category_share_is_the_share_of_earlier_spend():
    result = _compute(
        [
            {"id": "a", "t": 0, "category": "grocery", "amount": 30.0},
            {"id": "b", "t": 1, "category": "travel", "amount": 10.0},
            {"id": "c", "t": 2, "category": "grocery", "amount": 99.0},
            {"id": "d", "t": 3, "category": "electronics", "amount": 5.0},
        ]
    )
    assert result["category_share_30d"].to_dict() == pytest.approx(
        {"a": 1.0, "b": 0.0, "c": 0.75, "d": 0.0}
    )


def test_compute_is_in_input_order_and_a_repeated_delivery_gets_its_first_copys_values():
    rows = [
        {"id": "b", "t": 1, "merchant": "m1"},
        {"id": "a", "t": 0, "merchant": "m1"},
        {"id": "b", "t": 1, "merchant": "m1"},
    ]
    result = context_features.compute(_events(rows))
    assert result["card_merchant_new_30d"].tolist() == [0.0, 1.0, 0.0]
    assert list(result.columns) == context_features.CONTEXT_COLUMNS
