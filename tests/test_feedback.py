"""The feedback protocol: verdicts only from earlier days, and what they are worth."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from fraudstream import features
from fraudstream.ml import evaluate, feedback, training

from .helpers import read_sample_history

START = date(2018, 4, 1)
#: One fold of 7 training, 7 delay and 7 test days from START.
FOLD = evaluate.prequential_folds(START, 1)[0]
COLUMNS = ["x1", "x2"]
FOREST = {"max_depth": 4, "n_estimators": 20}


def _history(
    signal, cards_a_day: int = 300, frauds_a_day: int = 30, card_days: int = 1, seed: int = 0
):
    """21 days of one payment a day per card, new cards every ``card_days`` days,
    ``frauds_a_day`` of each day's payments fraud.

    ``signal(day_index, is_fraud, rng)`` gives each payment's ``x1, x2``. Each fraud is
    reported a day after it, so the training window's are known to the delayed model.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(21):
        day = START + timedelta(days=d)
        midnight = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        for i in range(cards_a_day):
            fraud = i < frauds_a_day
            x1, x2 = signal(d, fraud, rng)
            event_ms = midnight + 1000 * i
            rows.append(
                {
                    "transaction_id": f"t{d}-{i}",
                    "card_id": f"c{d // card_days}-{i}",
                    "event_ms": event_ms,
                    "day": day,
                    "x1": x1,
                    "x2": x2,
                    "is_fraud": int(fraud),
                    "fraud_reported_ms": float(event_ms + features.DAY_MS) if fraud else np.nan,
                }
            )
    return pd.DataFrame(rows)


def _drift(d, fraud, rng):
    """Frauds stand out by x1 in the training window and by x2 from the delay gap on."""
    if d < 7:
        return rng.normal(3.0 if fraud else 0.0), rng.normal()
    return rng.normal(), rng.normal(3.0 if fraud else 0.0)


def _same_day_code(d, fraud, rng):
    """x2 is a code that marks each day's frauds and no other day's: only that day's
    verdicts could teach it; x1 is noise."""
    others = [c for c in range(21) if c != d]
    return rng.normal(), float(d if fraud else rng.choice(others))


def test_feedback_fold_verdicts_beat_a_delayed_model_that_drifted():
    dataset = _history(_drift)
    result = feedback.feedback_fold(
        dataset, FOLD, "random_forest", FOREST, COLUMNS, feedback.FeedbackConfig(k=20)
    )
    # The delayed model learnt x1, which says nothing after the training window; the
    # verdicts on its (nearly random) alerts teach x2.
    assert result["cp_delayed"] < 0.3
    assert result["cp_feedback"] > result["cp_delayed"] + 0.4


def test_feedback_fold_never_uses_a_days_verdicts_on_that_day():
    dataset = _history(_same_day_code)
    # A weak delayed model, given as its scores, whose alerts hold some frauds every day.
    walked = feedback.walked_rows(dataset, FOLD)
    weak = walked["is_fraud"].to_numpy() + 4.0 * np.random.default_rng(1).random(len(walked))
    result = feedback.feedback_fold(
        dataset,
        FOLD,
        "random_forest",
        FOREST,
        COLUMNS,
        feedback.FeedbackConfig(k=20),
        delayed_scores=weak / 5.0,
    )
    per_day = result["per_day"]
    used = per_day.dropna(subset=["newest_feedback_day"])
    assert (used["newest_feedback_day"] < used.index.to_series()).all()
    assert per_day["feedback_rows"].iloc[0] == 0
    # Earlier days' codes only mislead F (0.29 against 0.44 here); had it seen the day's
    # own verdicts, the day's code would lift its frauds (0.61 when tried).
    assert result["cp_feedback"] <= result["cp_delayed"]


def test_feedback_fold_merchant_verdicts_find_compromised_merchants():
    # Features that say nothing; every payment at five merchants is fraud.
    dataset = _history(lambda d, fraud, rng: (rng.normal(), rng.normal()))
    rng = np.random.default_rng(2)
    dataset["merchant_id"] = np.where(
        dataset["is_fraud"] == 1,
        [f"bad{i % 5}" for i in range(len(dataset))],
        [f"m{m}" for m in rng.integers(0, 200, len(dataset))],
    )
    walked = feedback.walked_rows(dataset, FOLD)
    weak = (walked["is_fraud"].to_numpy() + 4.0 * rng.random(len(walked))) / 5.0
    cp = {}
    for verdict_features in (False, True):
        cfg = feedback.FeedbackConfig(k=20, verdict_features=verdict_features)
        result = feedback.feedback_fold(
            dataset, FOLD, "random_forest", FOREST, COLUMNS, cfg, delayed_scores=weak
        )
        cp[verdict_features] = result["cp_feedback"]
    assert cp[False] <= result["cp_delayed"] + 0.05
    assert cp[True] > result["cp_delayed"] + 0.4


def test_feedback_fold_investigates_the_cards_card_precision_counts():
    # Cards that pay on two days: a card detected on the first is blocked on the second.
    dataset = _history(_drift, card_days=2)
    result = feedback.feedback_fold(
        dataset, FOLD, "random_forest", FOREST, COLUMNS, feedback.FeedbackConfig(k=20)
    )
    test_days = result["per_day"].loc[result["per_day"]["phase"] == "test"]
    assert len(test_days) == 7
    np.testing.assert_allclose(
        test_days["verdict_fraud_cards"] / 20, test_days["cp_feedback"], atol=1e-12
    )


def test_feedback_fold_delayed_scores_are_the_training_jobs():
    dataset = read_sample_history()["dataset"]
    params = {"max_depth": 10, "n_estimators": 20}
    cfg = training.TrainConfig(data=None, k=10)  # type: ignore[arg-type]
    expected = training.evaluate_kind("random_forest", params, 0.5, dataset, [FOLD], cfg)
    result = feedback.feedback_fold(
        dataset,
        FOLD,
        "random_forest",
        params,
        list(features.FEATURE_COLUMNS),
        feedback.FeedbackConfig(k=10, n_estimators=20),
    )
    assert result["cp_delayed"] == pytest.approx(expected["mean"]["card_precision_at_10"])


def test_combine_average_and_rank():
    delayed, fed = np.array([0.1, 0.4, 0.2]), np.array([0.9, 0.0, 0.5])
    cfg = feedback.FeedbackConfig(weight=0.75)
    np.testing.assert_allclose(feedback.combine(delayed, fed, cfg), [0.7, 0.1, 0.425])
    rank = feedback.FeedbackConfig(combination="rank", weight=0.5)
    np.testing.assert_allclose(feedback.combine(delayed, fed, rank), [2 / 3, 2 / 3, 2 / 3])


def test_merchant_verdicts_count_earlier_days_within_the_lookback():
    day = date(2018, 5, 1)
    verdicts = pd.DataFrame(
        {
            "merchant_id": ["m1", "m1", "m1", "m2", "m1"],
            "day": [
                day - timedelta(days=1),
                day - timedelta(days=3),
                day - timedelta(days=feedback.VERDICT_LOOKBACK_DAYS + 1),  # too old
                day - timedelta(days=2),
                day,  # the same day: not known yet
            ],
            "y": [1, 0, 1, 0, 1],
        }
    )
    got = feedback.merchant_verdicts(verdicts, pd.Series(["m1", "m2", "m3"]), day)
    np.testing.assert_array_equal(got["merchant_verdict_frauds"], [1, 0, 0])
    np.testing.assert_array_equal(got["merchant_verdict_checked"], [2, 1, 0])
