"""Metrics on hand-computed examples, and folds that respect time."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from fraudstream.ml import evaluate


def test_prequential_folds_train_delay_test_and_step_back():
    folds = evaluate.prequential_folds(date(2018, 7, 25), n_folds=2)
    assert folds[0] == evaluate.Fold(
        date(2018, 7, 25), date(2018, 8, 1), date(2018, 8, 8), date(2018, 8, 15)
    )
    assert folds[1] == evaluate.Fold(
        date(2018, 7, 18), date(2018, 7, 25), date(2018, 8, 1), date(2018, 8, 8)
    )
    assert folds[0].name == "test 2018-08-08..2018-08-14"


def test_validation_folds_end_where_test_training_ends():
    test = evaluate.prequential_folds(date(2018, 7, 25), n_folds=1)
    (valid,) = evaluate.validation_folds(test)
    assert valid == evaluate.Fold(
        date(2018, 7, 11), date(2018, 7, 18), date(2018, 7, 25), date(2018, 8, 1)
    )
    assert valid.test_end <= test[0].train_end


def test_average_precision_step_wise_hand_computed():
    # Ranked: 0.9 (fraud), 0.8 (genuine), 0.7 (fraud), 0.1 (genuine).
    # Precision at each fraud: 1/1 and 2/3; AP = (1 + 2/3) / 2.
    got = evaluate.average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    assert got == pytest.approx((1 + 2 / 3) / 2)


def test_roc_auc_hand_computed():
    # Pairs (fraud, genuine): (0.9, 0.8) ok, (0.9, 0.1) ok, (0.7, 0.8) wrong, (0.7, 0.1) ok.
    assert evaluate.roc_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.75)
    assert pd.isna(evaluate.roc_auc([0, 0], [0.1, 0.2]))


def test_card_precision_at_k_uses_card_max_and_removes_detected_cards():
    frame = pd.DataFrame(
        [
            # day 1: cards A (fraud, 0.9), B (genuine, 0.8 and 0.2), C (fraud, 0.3)
            (1, "A", 1, 0.9),
            (1, "B", 0, 0.8),
            (1, "B", 0, 0.2),
            (1, "C", 1, 0.3),
            # day 2: A again (already detected: removed), C now top, D genuine
            (2, "A", 1, 0.99),
            (2, "C", 1, 0.7),
            (2, "D", 0, 0.6),
        ],
        columns=["day", "card", "y", "score"],
    )
    mean, per_day = evaluate.card_precision_at_k(
        frame["day"], frame["card"], frame["y"], frame["score"], k=2
    )
    # Day 1 top 2: A (fraud), B -> 1/2. Day 2 without A: C (fraud), D -> 1/2.
    assert per_day.to_dict() == {1: 0.5, 2: 0.5}
    assert mean == 0.5


def test_card_precision_at_k_counts_k_even_when_fewer_cards():
    mean, _ = evaluate.card_precision_at_k([1, 1], ["A", "B"], [1, 0], [0.5, 0.4], k=4)
    assert mean == 0.25


def test_card_precision_at_k_ties_broken_by_card_id():
    _, per_day = evaluate.card_precision_at_k([1, 1], ["B", "A"], [0, 1], [0.5, 0.5], k=1)
    assert per_day[1] == 1.0  # A before B


def test_threshold_for_budget_and_alert_stats():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    threshold = evaluate.threshold_for_budget(scores, n_days=2, alerts_per_day=1.5)
    assert threshold == 0.7  # 3 alerts over 2 days
    stats = evaluate.alert_stats([1, 0, 1, 1, 0, 0], scores, threshold, n_days=2)
    assert stats == {
        "alerts_per_day": 1.5,
        "recall_at_threshold": 2 / 3,
        "precision_at_threshold": 2 / 3,
    }


def test_threshold_for_budget_below_counts_only_the_scores_under_it():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    # Under 0.75: 0.7, 0.6, 0.5, 0.4; 3 over 2 days from the top of them.
    assert evaluate.threshold_for_budget(scores, 2, 1.5, below=0.75) == 0.5
    assert evaluate.threshold_for_budget(scores, 2, 1.5, below=0.3) == 0.3  # none under it
    assert evaluate.threshold_for_budget(scores, 2, 0, below=0.75) == 0.75  # no budget


def test_decision_bands_hold_the_review_budget_below_the_decline_band():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    # Precision at or above each score, with 0.9 as the decline target:
    # a: 1, 1, 1, 3/4, ... -> 0.7; b: 1, 1, 2/3, 3/4, ... -> 0.8; c: no fraud -> inf.
    a = ([1, 1, 1, 0, 0, 0, 0, 0, 0], scores)
    b = ([1, 1, 0, 1, 0, 0, 0, 0, 0], scores)
    c = ([0] * 9, scores)
    # The decline band: median(0.7, 0.8, inf) = 0.8. One review a day over 2 days under
    # it: 0.7 and 0.6 in each window, so the review band starts at 0.6 (not at 0.8, the
    # top 2 of all payments, which would leave no review under the decline band).
    assert evaluate.decision_bands([a, b, c], 2, 1, 0.9) == (0.6, 0.8)
    # No decline band: the review band is the budget of all the payments, as before.
    assert evaluate.decision_bands([c, c], 2, 1, 0.9) == (0.8, float("inf"))
    # Every payment declined: no room for reviews, and the bands start together.
    assert evaluate.decision_bands([([1] * 9, scores)], 2, 1, 0.9) == (0.1, 0.1)


def test_threshold_for_precision_takes_whole_ties_and_the_lowest_reaching_score():
    scores = [0.9, 0.8, 0.8, 0.7, 0.6, 0.5]
    truth = [1, 1, 0, 1, 0, 0]
    # At or above 0.9: 1/1; 0.8: 2/3 (both tied scores); 0.7: 3/4; 0.6: 3/5; 0.5: 3/6.
    assert evaluate.threshold_for_precision(truth, scores, 0.7) == 0.7
    assert evaluate.threshold_for_precision(truth, scores, 0.76) == 0.9
    assert evaluate.threshold_for_precision(truth, scores, 0.5) == 0.5
    assert evaluate.threshold_for_precision([0] * 6, scores, 0.1) == float("inf")
    assert evaluate.threshold_for_precision([], [], 0.9) == float("inf")


def test_threshold_for_precision_agrees_with_trying_every_score():
    rng = np.random.default_rng(3)
    for _ in range(20):
        scores = rng.integers(0, 30, 200) / 30  # many ties
        truth = rng.random(200) < scores**2
        target = rng.uniform(0.3, 0.95)
        reaching = [t for t in np.unique(scores) if truth[scores >= t].mean() >= target]
        expected = min(reaching) if reaching else float("inf")
        assert evaluate.threshold_for_precision(truth, scores, target) == expected
        got = evaluate.decline_stats(truth, scores, expected, n_days=4)
        if reaching:
            assert got["decline_precision"] >= target
            assert got["declines_per_day"] == (scores >= expected).sum() / 4


def test_evaluate_scores_gathers_every_metric():
    got = evaluate.evaluate_scores(
        [1, 1, 1, 1], ["a", "b", "c", "d"], [1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], threshold=0.75, k=2
    )
    assert got == {
        "roc_auc": pytest.approx(0.75),
        "average_precision": pytest.approx((1 + 2 / 3) / 2),
        "card_precision_at_2": 0.5,
        "alerts_per_day": 2.0,
        "recall_at_threshold": 0.5,
        "precision_at_threshold": 0.5,
    }


def test_evaluate_scores_counts_reviews_under_the_decline_band():
    day, card, truth = [1, 1, 1, 1], ["a", "b", "c", "d"], [1, 0, 1, 0]
    scores = [0.9, 0.8, 0.7, 0.1]
    got = evaluate.evaluate_scores(day, card, truth, scores, 0.75, 2, decline_threshold=0.85)
    # Alerts 0.9 and 0.8: 0.9 declined (a fraud), 0.8 reviewed.
    assert (got["alerts_per_day"], got["declines_per_day"], got["reviews_per_day"]) == (2, 1, 1)
    assert got["decline_precision"] == 1.0
    # A decline band under the threshold starts at it, as the scoring job decides.
    got = evaluate.evaluate_scores(day, card, truth, scores, 0.75, 2, decline_threshold=0.5)
    assert (got["declines_per_day"], got["reviews_per_day"], got["decline_precision"]) == (
        2,
        0,
        0.5,
    )
