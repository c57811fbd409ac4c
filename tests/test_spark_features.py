"""The Spark non-card features: equal to ``features.compute`` and right on hand-made rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudstream import features, schemas
from fraudstream.data import simulate
from fraudstream.ml import spark_features as sf

DAY = pd.Timedelta(days=1)
#: A Monday noon (UTC); its UTC day is the "payment day" D of the hand-made cases.
NOW = pd.Timestamp("2018-04-30 12:00:00", tz="UTC")


def _payments(spark, rows: list[dict]):
    """Payments in the contract's schema from short dicts (``id`` and ``time`` needed)."""
    frame = pd.DataFrame(
        [
            {
                "transaction_id": row["id"],
                "event_time": row["time"],
                "card_id": row.get("card", "c1"),
                "customer_id": "u1",
                "merchant_id": row.get("merchant", "m1"),
                "merchant_category": "grocery",
                "amount": row.get("amount", 10.0),
                "currency": "EUR",
                "channel": row.get("channel", "pos"),
                "lat": 48.0,
                "lon": 2.0,
                "country": "FR",
                "schema_version": 1,
            }
            for row in rows
        ],
        columns=schemas.PAYMENT_COLUMNS,
    )
    return spark.createDataFrame(frame, schema=schemas.PAYMENT_SCHEMA)


def _labels(spark, rows: list[dict]):
    """Fraud labels from ``(id, reported)`` dicts; ``label`` defaults to fraud."""
    frame = pd.DataFrame(
        [
            {
                "transaction_id": row["id"],
                "card_id": row.get("card", "c1"),
                "label": row.get("label", "fraud"),
                "source": "chargeback",
                "reported_time": row["reported"],
                "scenario": None,
                "schema_version": 1,
            }
            for row in rows
        ],
        columns=schemas.LABEL_COLUMNS,
    )
    return spark.createDataFrame(frame, schema=schemas.LABEL_SCHEMA)


def _features(spark, payments: list[dict], labels: list[dict] = (), **kwargs) -> pd.DataFrame:
    payments, labels = _payments(spark, payments), _labels(spark, list(labels))
    result = sf.non_card_features(payments, labels, **kwargs)
    return result.toPandas().set_index("transaction_id")


# --- parity with features.compute -----------------------------------------------------


def _messy_history(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A simulated history with what real feeds bring: nulls, repeats, second verdicts."""
    payments, labels = simulate.simulate(
        simulate.SimulationConfig(customers=120, terminals=240, days=45, seed=seed)
    )
    events, labels = payments.to_pandas(), labels.to_pandas()
    rng = np.random.default_rng(seed)
    no_channel = rng.random(len(events)) < 0.05
    events.loc[no_channel, "channel"] = None
    no_place = rng.random(len(events)) < 0.05
    events.loc[no_place, ["lat", "lon"]] = np.nan
    # Some payments delivered twice, frauds among them, the copy later in the feed.
    fraud_ids = set(labels["transaction_id"])
    frauds = events.index[events["transaction_id"].isin(fraud_ids)]
    again = np.concatenate(
        [rng.choice(len(events), size=40, replace=False), rng.choice(frauds, size=10)]
    )
    events = pd.concat([events, events.iloc[again]], ignore_index=True)
    # A fraud reported twice (the earlier report counts) and a genuine verdict.
    twice = labels.iloc[:20].assign(reported_time=lambda f: f["reported_time"] + 3 * DAY)
    genuine = labels.iloc[20:30].assign(label="genuine")
    labels = pd.concat([labels, twice, genuine], ignore_index=True)
    return events, labels


@pytest.mark.parametrize("seed", [0, 1])
def test_non_card_features_equal_compute_on_simulated_histories(spark, seed):
    events, labels = _messy_history(seed)
    facts = features.fraud_facts(events, labels)
    expected = features.compute(events, facts)
    expected = expected.drop_duplicates("transaction_id").set_index("transaction_id")

    got = sf.non_card_features(
        spark.createDataFrame(events, schema=schemas.PAYMENT_SCHEMA),
        spark.createDataFrame(labels, schema=schemas.LABEL_SCHEMA),
    ).toPandas()

    assert list(got.columns) == ["transaction_id", *sf.OUTPUT_COLUMNS]
    assert got["transaction_id"].is_unique
    assert len(got) == events["transaction_id"].nunique()
    got = got.set_index("transaction_id").loc[expected.index]
    assert got.notna().all().all()
    pd.testing.assert_frame_equal(
        got, expected[sf.OUTPUT_COLUMNS], check_exact=False, rtol=0, atol=1e-9
    )
    # The history really exercises the rates, not only zeros.
    assert (expected["merchant_fraud_rate_30d"] > 0).sum() > 100
    assert (expected["card_known_frauds_30d"] > 0).sum() > 10


# --- hand-made cases ------------------------------------------------------------------


def test_non_card_features_merchant_counts_cover_days_delay_plus_w_to_delay_back(spark):
    # Payment day D; with the 7-day delay the windows are [D-8, D-7), [D-14, D-7) and
    # [D-37, D-7), and the recent ones [D-7, D) and [D-30, D).
    rows = [
        {"id": "d38", "time": NOW - 38 * DAY, "card": "a"},  # before every window
        {"id": "d37", "time": NOW - 37 * DAY, "card": "b"},  # 30d
        {"id": "d15", "time": NOW - 15 * DAY, "card": "c"},  # 30d
        {"id": "d14", "time": NOW - 14 * DAY, "card": "d"},  # 7d, 30d
        {"id": "d8", "time": NOW - 8 * DAY, "card": "e"},  # 1d, 7d, 30d
        {"id": "d7", "time": NOW - 7 * DAY, "card": "f"},  # within the delay: none
        {"id": "d0", "time": NOW.normalize(), "card": "g"},  # the same day: none
        {"id": "now", "time": NOW, "card": "h"},
    ]
    got = _features(spark, rows).loc["now"]
    assert got["merchant_tx_count_1d"] == 1
    assert got["merchant_tx_count_7d"] == 2
    assert got["merchant_tx_count_30d"] == 4
    two_days = _features(spark, rows, label_delay_days=2).loc["now"]
    assert two_days["merchant_tx_count_1d"] == 0  # [D-3, D-2): no payment
    assert two_days["merchant_tx_count_7d"] == 2  # [D-9, D-2): d8, d7
    assert two_days["merchant_tx_count_30d"] == 4  # [D-32, D-2): d15, d14, d8, d7


def test_non_card_features_fraud_counts_only_when_reported_before_the_payment_day(spark):
    payments = [
        {"id": "f8", "time": NOW - 8 * DAY, "merchant": "m1", "card": "a"},
        {"id": "g8", "time": NOW - 8 * DAY, "merchant": "m1", "card": "b"},
        {"id": "f9", "time": NOW - 9 * DAY, "merchant": "m1", "card": "c"},
        {"id": "f2", "time": NOW - 2 * DAY, "merchant": "m1", "card": "d"},
        {"id": "now", "time": NOW, "merchant": "m1", "card": "e"},
    ]
    labels = [
        {"id": "f8", "reported": NOW - 1 * DAY},  # known: the day before D
        {"id": "f9", "reported": NOW.normalize()},  # reported on D itself: not yet known
        {"id": "f2", "reported": NOW - 2 * DAY + pd.Timedelta(hours=1)},  # known, recent
        {"id": "g8", "reported": NOW - 3 * DAY, "label": "genuine"},  # not a fraud
    ]
    got = _features(spark, payments, labels).loc["now"]
    assert got["merchant_tx_count_1d"] == 2  # f8, g8
    assert got["merchant_fraud_rate_1d"] == 0.5  # f8 of 2
    assert got["merchant_tx_count_7d"] == 3  # f8, g8, f9
    assert got["merchant_fraud_rate_7d"] == pytest.approx(1 / 3)  # f9 not known yet
    # [D-7, D): only f2, known; [D-30, D): all four, f8 and f2 known.
    assert got["merchant_recent_fraud_rate_7d"] == 1.0
    assert got["merchant_recent_fraud_rate_30d"] == 0.5


def test_non_card_features_card_known_frauds_of_the_30_whole_days_before(spark):
    payments = [
        {"id": "x31", "time": NOW - 31 * DAY, "merchant": "m1"},  # one day too old
        {"id": "x30", "time": NOW - 30 * DAY, "merchant": "m2"},  # first day in
        {"id": "x1", "time": NOW - 1 * DAY, "merchant": "m3"},  # reported on D: unknown
        {"id": "x0", "time": NOW - pd.Timedelta(hours=2), "merchant": "m4"},  # same day
        {"id": "now", "time": NOW, "merchant": "m5"},
        {"id": "other", "time": NOW, "card": "c2", "merchant": "m5"},
    ]
    labels = [
        {"id": "x31", "reported": NOW - 20 * DAY},
        {"id": "x30", "reported": NOW - 20 * DAY},
        {"id": "x1", "reported": NOW.normalize()},
        {"id": "x0", "reported": NOW - pd.Timedelta(hours=1)},
    ]
    got = _features(spark, payments, labels)
    assert got.loc["now", "card_known_frauds_30d"] == 1  # x30 only
    assert got.loc["other", "card_known_frauds_30d"] == 0  # another card
    # On x1's day D-1 both x31 (day D-31) and x30 are in its 30 days, both known.
    assert got.loc["x1", "card_known_frauds_30d"] == 2


def test_non_card_features_payment_delivered_twice_counts_once(spark):
    copy = {"id": "a", "time": NOW - 8 * DAY, "card": "c1"}
    payments = [copy, copy, {"id": "now", "time": NOW, "card": "c2"}]
    got = _features(spark, payments, [{"id": "a", "reported": NOW - 2 * DAY}])
    assert sorted(got.index) == ["a", "now"]
    assert got.loc["now", "merchant_tx_count_1d"] == 1
    assert got.loc["now", "merchant_fraud_rate_1d"] == 1.0


def test_fraud_facts_first_fraud_report_of_each_payment_once(spark):
    copy = {"id": "a", "time": NOW - 8 * DAY, "card": "c1", "merchant": "m9"}
    payments = _payments(spark, [copy, copy, {"id": "b", "time": NOW}])
    labels = _labels(
        spark,
        [
            {"id": "a", "reported": NOW - 2 * DAY},
            {"id": "a", "reported": NOW - 5 * DAY},  # the first report counts
            {"id": "b", "reported": NOW, "label": "genuine"},
            {"id": "unknown", "reported": NOW},  # no such payment
        ],
    )
    got = sf.fraud_facts(payments, labels).toPandas()
    day = NOW.value // 10**6 // features.DAY_MS
    assert got.to_dict("records") == [
        {"card_id": "c1", "merchant_id": "m9", "tx_day": day - 8, "report_day": day - 5}
    ]


def test_non_card_features_time_flags_in_utc_whatever_the_session_time_zone(spark):
    monday = NOW.normalize()
    rows = [
        {"id": "night", "time": monday + pd.Timedelta(hours=6) - pd.Timedelta(milliseconds=1)},
        {"id": "six", "time": monday + pd.Timedelta(hours=6)},
        {"id": "sat", "time": monday - 2 * DAY},
        {"id": "sun_late", "time": monday - pd.Timedelta(milliseconds=1)},
        {"id": "fri_late", "time": monday - 2 * DAY - pd.Timedelta(milliseconds=1)},
    ]
    payments = _payments(spark, rows)
    zone = spark.conf.get("spark.sql.session.timeZone")
    # Los Angeles is 7 or 8 hours behind: F.hour or F.dayofweek would get these wrong.
    spark.conf.set("spark.sql.session.timeZone", "America/Los_Angeles")
    try:
        got = sf.non_card_features(payments, _labels(spark, [])).toPandas()
    finally:
        spark.conf.set("spark.sql.session.timeZone", zone)
    got = got.set_index("transaction_id")[["is_night", "is_weekend"]]
    assert got.to_dict("index") == {
        "night": {"is_night": 1.0, "is_weekend": 0.0},
        "six": {"is_night": 0.0, "is_weekend": 0.0},
        "sat": {"is_night": 1.0, "is_weekend": 1.0},
        "sun_late": {"is_night": 0.0, "is_weekend": 1.0},
        "fri_late": {"is_night": 0.0, "is_weekend": 0.0},
    }


def test_non_card_features_channel_flags_and_null_channel(spark):
    rows = [
        {"id": "web", "time": NOW, "channel": "ecom"},
        {"id": "atm", "time": NOW, "channel": "atm"},
        {"id": "pos", "time": NOW, "channel": "pos"},
        {"id": "unknown", "time": NOW, "channel": None},
    ]
    got = _features(spark, rows)[["is_ecom", "is_atm"]]
    assert got.to_dict("index") == {
        "web": {"is_ecom": 1.0, "is_atm": 0.0},
        "atm": {"is_ecom": 0.0, "is_atm": 1.0},
        "pos": {"is_ecom": 0.0, "is_atm": 0.0},
        "unknown": {"is_ecom": 0.0, "is_atm": 0.0},
    }


def test_non_card_features_amount_rounds_cents_half_to_even_like_numpy(spark):
    # amount, amount * 100 in binary, the feature (np.round(amount * 100) / 100)
    cases = {
        0.125: 0.12,  # 12.5: half, to even (down); F.round would give 0.13
        0.375: 0.38,  # 37.5: half, to even (up)
        0.005: 0.0,  # 0.5 → 0
        0.015: 0.02,  # 1.5 → 2
        0.025: 0.02,  # 2.5 → 2
        1.005: 1.0,  # 100.49999999999999 → 100
        2.675: 2.68,  # 267.5 → 268
        0.285: 0.28,  # 28.499999999999996 → 28
        4.35: 4.35,  # 434.99999999999994 → 435
    }
    rows = [{"id": f"p{i}", "time": NOW, "amount": amount} for i, amount in enumerate(cases)]
    got = _features(spark, rows)["amount"]
    assert [got[f"p{i}"] for i in range(len(cases))] == list(cases.values())
    assert list(cases.values()) == list(np.round(np.array(list(cases)) * 100) / 100)
