"""Evaluation that respects time and label delay, as a fraud team lives it.

The protocol is the delay-aware one of the fraud-detection literature (Le Borgne et
al., *Reproducible Machine Learning for Credit Card Fraud Detection*): a training
window, then a delay window as long as the label delay (its labels are not known yet
when the model is trained, so it is not used), then a test window; repeated over
consecutive folds shifted back by the test window's length (prequential). Folds
never shuffle time. Cards already known to be compromised when the test window starts
(a fraud in the training or delay window, reported before the test window starts) are
left out of the test window: they would be blocked already.

Metrics, each returned as a plain float:

- ROC AUC and average precision (step-wise, as scikit-learn computes it);
- Card Precision@k: per day, the share of truly defrauded cards among the k cards with
  the highest score (a card's score is its highest payment score of the day), cards
  detected on earlier days of the window removed; averaged over the days;
- at a threshold: alerts per day, and the recall and precision of those alerts;
- at a decline band: declines per day and their precision, and reviews per day (the
  alerts below the decline band).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

DEFAULT_K = 100


@dataclass(frozen=True)
class Fold:
    """One train / delay / test split, by UTC dates (start inclusive, end exclusive)."""

    train_start: date
    train_end: date
    test_start: date
    test_end: date

    @property
    def name(self) -> str:
        """The fold's name in reports: its test days, first and last."""
        return f"test {self.test_start:%Y-%m-%d}..{self.test_end - timedelta(days=1):%Y-%m-%d}"


def prequential_folds(
    train_start: date,
    n_folds: int = 4,
    train_days: int = 7,
    delay_days: int = 7,
    test_days: int = 7,
) -> list[Fold]:
    """Folds whose training windows start at ``train_start`` and go back ``test_days`` each.

    Fold 0 is the latest; fold ``i`` is fold 0 moved ``i * test_days`` days earlier.
    """
    folds = []
    for i in range(n_folds):
        start = train_start - timedelta(days=i * test_days)
        train_end = start + timedelta(days=train_days)
        test_start = train_end + timedelta(days=delay_days)
        folds.append(Fold(start, train_end, test_start, test_start + timedelta(days=test_days)))
    return folds


def validation_folds(test_folds: list[Fold], delay_days: int = 7) -> list[Fold]:
    """The folds for choosing hyper-parameters: the test folds moved back by delay + test.

    A validation fold's test window ends where its test fold's training window ends,
    so nothing of a test window is used to choose a model.
    """
    shift = [timedelta(days=delay_days) + (fold.test_end - fold.test_start) for fold in test_folds]
    return [
        Fold(f.train_start - s, f.train_end - s, f.test_start - s, f.test_end - s)
        for f, s in zip(test_folds, shift, strict=True)
    ]


def roc_auc(y_true, score) -> float:
    """ROC AUC; NaN when the test has one class only."""
    y_true = np.asarray(y_true)
    if y_true.min(initial=0) == y_true.max(initial=0):
        return float("nan")
    return float(roc_auc_score(y_true, score))


def average_precision(y_true, score) -> float:
    """Average precision, step-wise (scikit-learn's ``average_precision_score``)."""
    y_true = np.asarray(y_true)
    if y_true.sum() == 0:
        return float("nan")
    return float(average_precision_score(y_true, score))


def top_k_cards(card_id, y_true, score, k: int = DEFAULT_K, blocked=()) -> pd.DataFrame:
    """The ``k`` cards of one day that an investigator checks: those scored highest.

    Parameters
    ----------
    card_id, y_true, score : array-like
        One entry per payment of the day: its card, whether it is fraud, its score.
    k : int
        Cards an investigator can check per day.
    blocked : collection
        Cards left out (detected earlier, so blocked already).

    Returns
    -------
    DataFrame
        Columns ``card``, ``score`` (the card's highest payment score) and ``y`` (1 if
        any of its payments is fraud), at most ``k`` rows, highest score first; ties
        broken by card id, so the choice does not depend on input order.
    """
    frame = pd.DataFrame(
        {
            "card": np.asarray(card_id),
            "y": np.asarray(y_true),
            "score": np.asarray(score, dtype=float),
        }
    )
    frame = frame[~frame["card"].isin(blocked)]
    cards = frame.groupby("card").agg(score=("score", "max"), y=("y", "max")).reset_index()
    return cards.sort_values(["score", "card"], ascending=[False, True]).head(k)


def card_precision_at_k(day, card_id, y_true, score, k: int = DEFAULT_K) -> tuple[float, pd.Series]:
    """Card Precision@k averaged over days, and per day.

    Parameters
    ----------
    day, card_id, y_true, score : array-like
        One entry per payment: its day, its card, whether it is fraud, its score.
    k : int
        Cards an investigator can check per day.

    Returns
    -------
    (float, pandas.Series)
        The mean over days, and the precision of each day (indexed by day).

    Notes
    -----
    A card detected (among a day's top k and truly defrauded) is left out of the
    following days, as it would be blocked. Ties in score are broken by card id, so
    the result does not depend on input order.
    """
    frame = pd.DataFrame(
        {
            "day": np.asarray(day),
            "card": np.asarray(card_id),
            "y": np.asarray(y_true),
            "score": np.asarray(score, dtype=float),
        }
    )
    detected: set = set()
    per_day = {}
    for current, payments in frame.groupby("day", sort=True):
        top = top_k_cards(payments["card"], payments["y"], payments["score"], k, detected)
        hits = top.loc[top["y"] > 0, "card"]
        per_day[current] = len(hits) / k
        detected.update(hits)
    series = pd.Series(per_day, dtype=float).rename_axis("day")
    return (float(series.mean()) if len(series) else float("nan")), series


def threshold_for_budget(
    score, n_days: int, alerts_per_day: float, below: float = float("inf")
) -> float:
    """The score threshold that raises about ``alerts_per_day`` alerts a day on these scores.

    With ``below`` (where the decline band starts), only the scores under it count: the
    threshold then holds about ``alerts_per_day`` a day in ``[threshold, below)``, and is
    ``below`` itself when no score is under it (or the budget is nothing).
    """
    score = np.asarray(score, dtype=float)
    score = np.sort(score[score < below])[::-1]
    alerts = round(alerts_per_day * n_days)
    if alerts <= 0 or score.size == 0:
        return float(below)
    return float(score[min(alerts, score.size) - 1])


def threshold_for_precision(y_true, score, target: float) -> float:
    """The lowest score threshold whose payments above it are frauds at ``target`` precision.

    Precision is that of every payment scored at or above the threshold; only thresholds
    at a score that occurs are tried, so tied scores fall on the same side. None reaches
    ``target``: ``inf`` (nothing is declined on the score alone).
    """
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    ranked = np.asarray(score, dtype=float)[order]
    if ranked.size == 0:
        return float("inf")
    hits = np.cumsum(np.asarray(y_true)[order].astype(bool))
    precision = hits / np.arange(1, ranked.size + 1)
    # The last row of each run of tied scores: a threshold takes the whole run.
    last_of_tie = np.append(ranked[1:] != ranked[:-1], True)
    reached = np.flatnonzero(last_of_tie & (precision >= target))
    return float(ranked[reached[-1]]) if reached.size else float("inf")


def decision_bands(
    windows, n_days: int, reviews_per_day: float, decline_precision: float
) -> tuple[float, float]:
    """Where the review and the decline bands start, chosen on validation windows.

    Parameters
    ----------
    windows : list of (y_true, score)
        The truth and scores of each validation window.
    n_days : int
        Days in each window.
    reviews_per_day : float
        The analysts' budget: payments a day the review band should hold.
    decline_precision : float
        The precision the payments at or above the decline band must reach.

    Returns
    -------
    (float, float)
        The review band's start and the decline band's (``inf``: no decline band). The
        decline band is the median over the windows of :func:`threshold_for_precision`;
        the review band is the median over the windows of the threshold that holds about
        ``reviews_per_day`` a day below that decline band (without one: of all the
        payments), so declines do not use up the budget. The decline band never starts
        below the review band.
    """
    decline = float(
        np.median([threshold_for_precision(y, s, decline_precision) for y, s in windows])
    )
    review = float(
        np.median(
            [threshold_for_budget(s, n_days, reviews_per_day, below=decline) for _, s in windows]
        )
    )
    return review, max(review, decline)


def decline_stats(y_true, score, threshold: float, n_days: int) -> dict[str, float]:
    """Declines a day at ``threshold`` and their precision (NaN without declines)."""
    y_true = np.asarray(y_true).astype(bool)
    declined = np.asarray(score, dtype=float) >= threshold
    return {
        "declines_per_day": float(declined.sum() / n_days) if n_days else float("nan"),
        "decline_precision": (
            float((declined & y_true).sum() / declined.sum()) if declined.sum() else float("nan")
        ),
    }


def alert_stats(y_true, score, threshold: float, n_days: int) -> dict[str, float]:
    """Alerts a day at ``threshold``, and the recall and precision of those alerts."""
    y_true = np.asarray(y_true).astype(bool)
    alert = np.asarray(score, dtype=float) >= threshold
    caught = int((alert & y_true).sum())
    return {
        "alerts_per_day": float(alert.sum() / n_days) if n_days else float("nan"),
        "recall_at_threshold": caught / y_true.sum() if y_true.sum() else float("nan"),
        "precision_at_threshold": caught / alert.sum() if alert.sum() else float("nan"),
    }


def evaluate_scores(
    day,
    card_id,
    y_true,
    score,
    threshold: float | None = None,
    k: int = DEFAULT_K,
    decline_threshold: float | None = None,
) -> dict[str, float]:
    """All metrics of one test window, as a plain dict."""
    cp_k, _ = card_precision_at_k(day, card_id, y_true, score, k)
    metrics = {
        "roc_auc": roc_auc(y_true, score),
        "average_precision": average_precision(y_true, score),
        f"card_precision_at_{k}": cp_k,
    }
    if threshold is not None:
        metrics.update(alert_stats(y_true, score, threshold, len(np.unique(np.asarray(day)))))
    if decline_threshold is not None:
        n_days = len(np.unique(np.asarray(day)))
        # As the scoring job decides: a decline band below the threshold starts at it.
        decline = decline_threshold if threshold is None else max(decline_threshold, threshold)
        metrics.update(decline_stats(y_true, score, decline, n_days))
        if threshold is not None:
            score = np.asarray(score, dtype=float)
            reviewed = (score >= threshold) & (score < decline)
            metrics["reviews_per_day"] = float(reviewed.sum() / n_days) if n_days else float("nan")
    return metrics
