"""Feedback learning, evaluated offline in the feedback protocol.

Analysts give their verdicts on the day's alerts within hours, while chargebacks take
days to weeks: the delayed classifier (``D``), trained on labels older than the delay
as :mod:`fraudstream.ml.training` trains it, never sees the freshest frauds. Dal Pozzolo
et al. (*Credit Card Fraud Detection: A Realistic Modeling and a Novel Learning
Strategy*, IEEE TNNLS 2018) add a feedback classifier (``F``) trained on the recent
analyst verdicts only, and score with the average of both probabilities ("AW").

The protocol of :func:`feedback_fold`, on the training job's dataset and folds:

1. ``D`` is fitted on the fold's training window with the labels known when its test
   window starts (:func:`fraudstream.ml.training.split`, the same rows, sample and seed
   as ``evaluate_kind``), so its test scores are the delayed protocol's own.
2. The days from the start of the delay gap to the end of the test window are walked in
   order. Each day is scored by ``D`` alone while no usable feedback exists, else by the
   combination of ``D`` and an ``F`` fitted on the verdicts of the ``feedback_days``
   days before it. The day's top ``k`` cards (:func:`evaluate.top_k_cards`, the ranking
   of Card Precision@k) are investigated: their payments of the day, with their true
   labels, join the feedback, usable from the next day on, never the same day. With
   ``verdict_features``, ``F`` also sees what the earlier verdicts say of each
   payment's merchant (:func:`merchant_verdicts`).
3. The test window is measured with :func:`evaluate.card_precision_at_k` on the same
   payments as the delayed protocol (``split``'s test rows), once with ``D``'s scores
   and once with the feedback protocol's, so the two numbers compare day by day.

Everything a day's score uses was known before that day: ``D``'s labels were reported
before the test window, and ``F``'s verdicts are of earlier days. On the delay gap's days
``D`` was trained with labels reported up to the test window's start; that only steers
which cards the gap's analysts investigate, and every one of those verdicts is known
before the test window starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier

from fraudstream.ml import evaluate, training

_LOG = logging.getLogger(__name__)

#: How the two probabilities are combined: a weighted average (Dal Pozzolo's "AW" with
#: weight 0.5), or the same average of the day's ranks, which does not depend on how
#: differently calibrated ``F`` (fitted on alerted cards only) and ``D`` are.
COMBINATIONS = ("average", "rank")


@dataclass(frozen=True)
class FeedbackConfig:
    """How the feedback classifier is fitted and combined with the delayed one."""

    #: Cards the analysts investigate a day (the ``k`` of Card Precision@k).
    k: int = evaluate.DEFAULT_K
    #: Days of verdicts ``F`` is fitted on: those of the ``feedback_days`` days before.
    feedback_days: int = 7
    #: One of :data:`COMBINATIONS`.
    combination: str = "average"
    #: ``F``'s weight in the combination; ``D`` gets the rest.
    weight: float = 0.5
    #: ``F``: a random forest small enough to refit every day.
    n_estimators: int = 100
    min_samples_leaf: int = 1
    seed: int = 0
    #: Give ``F`` :data:`VERDICT_FEATURES` too (the dataset needs ``merchant_id``).
    verdict_features: bool = False

    @property
    def name(self) -> str:
        """The setting in reports, e.g. ``average w=0.50 N=7``."""
        extra = " +merchant verdicts" if self.verdict_features else ""
        return f"{self.combination} w={self.weight:.2f} N={self.feedback_days}{extra}"


#: What the verdicts say of a payment's merchant: its payments found fraud and its
#: payments checked by analysts in the :data:`VERDICT_LOOKBACK_DAYS` days before. The
#: 27 features see frauds only once charged back (a median of 6 days); a compromised
#: terminal defrauds every card for weeks, and analysts see it within hours.
VERDICT_FEATURES = ("merchant_verdict_frauds", "merchant_verdict_checked")
VERDICT_LOOKBACK_DAYS = 28


def merchant_verdicts(verdicts: pd.DataFrame, merchant_id: pd.Series, day: date) -> dict:
    """:data:`VERDICT_FEATURES` of payments of ``day``, from the verdicts of earlier days.

    ``verdicts`` holds ``merchant_id``, ``day`` and ``y`` (1: found fraud) per payment
    checked; only those of the :data:`VERDICT_LOOKBACK_DAYS` days before ``day`` count.
    """
    since = day - timedelta(days=VERDICT_LOOKBACK_DAYS)
    past = verdicts.loc[(verdicts["day"] >= since) & (verdicts["day"] < day)]
    by_merchant = past.groupby("merchant_id")["y"].agg(["sum", "count"])
    return {
        "merchant_verdict_frauds": merchant_id.map(by_merchant["sum"]).fillna(0).to_numpy(),
        "merchant_verdict_checked": merchant_id.map(by_merchant["count"]).fillna(0).to_numpy(),
    }


def combine(delayed: np.ndarray, feedback: np.ndarray, cfg: FeedbackConfig) -> np.ndarray:
    """The score of one day's payments from ``D``'s and ``F``'s probabilities.

    ``average``: ``weight * F + (1 - weight) * D``. ``rank``: the same average of each
    model's rank among the day's payments, scaled to (0, 1].
    """
    if cfg.combination == "average":
        return cfg.weight * feedback + (1.0 - cfg.weight) * delayed
    if cfg.combination == "rank":
        ranks_f = pd.Series(feedback).rank(pct=True).to_numpy()
        ranks_d = pd.Series(delayed).rank(pct=True).to_numpy()
        return cfg.weight * ranks_f + (1.0 - cfg.weight) * ranks_d
    raise ValueError(f"Unknown combination {cfg.combination!r}: choose from {COMBINATIONS}.")


def fit_feedback(verdicts: pd.DataFrame, columns: list[str], cfg: FeedbackConfig):
    """``F``: a random forest fitted on analyst verdicts, or None without both classes.

    One thread: it is refitted every day on a few thousand rows, where threads cost more
    than they save on a shared machine.
    """
    if verdicts["y"].nunique() < 2:
        return None
    forest = RandomForestClassifier(
        n_estimators=cfg.n_estimators,
        min_samples_leaf=cfg.min_samples_leaf,
        n_jobs=1,
        random_state=cfg.seed,
    )
    return forest.fit(verdicts[columns].astype(float), verdicts["y"].to_numpy())


def _ms(day: date) -> int:
    return training._ms(day)


def feedback_fold(
    dataset: pd.DataFrame,
    fold: evaluate.Fold,
    kind: str,
    params: dict[str, Any],
    columns: list[str],
    cfg: FeedbackConfig,
    max_train_rows: int | None = training.DEFAULT_MAX_TRAIN_ROWS,
    delayed_seed: int = 0,
    delayed_scores: np.ndarray | None = None,
) -> dict[str, Any]:
    """One fold in the feedback protocol, against the delayed protocol on the same days.

    Parameters
    ----------
    dataset : DataFrame
        :func:`fraudstream.ml.training.build_dataset`'s frame (any ``columns`` of it),
        with ``merchant_id`` when ``cfg.verdict_features``.
    fold : Fold
        The fold; its delay gap and test window are walked day by day.
    kind, params, max_train_rows, delayed_seed
        ``D``, fitted as the training job fits it (``training.fit_predict`` on
        ``training.sample_genuine``'s rows).
    columns : list of str
        The feature columns of both models; ``F`` gets :data:`VERDICT_FEATURES` too
        when ``cfg.verdict_features``.
    cfg : FeedbackConfig
        ``F`` and the combination.
    delayed_scores : numpy.ndarray, optional
        ``D``'s scores of the fold's walked payments (``walked_rows``' order), to reuse
        one fit across settings; fitted here if None.

    Returns
    -------
    dict
        ``cp_delayed`` and ``cp_feedback`` (Card Precision@k over the test window),
        ``per_day`` (a DataFrame by day: ``phase`` gap or test, both models' CP@k on test
        days, the verdict rows and frauds ``F`` was fitted on, the newest verdict day it
        used, the day's verdicts: rows, cards, fraud cards, frauds), ``delayed_scores``
        (to reuse) and ``test`` (the test rows with ``delayed`` and ``feedback`` scores).
    """
    train, test = training.split(dataset, fold)
    walked = walked_rows(dataset, fold)
    if delayed_scores is None:
        fitted, weights = training.sample_genuine(train, max_train_rows, delayed_seed)
        delayed_scores, _ = training.fit_predict(
            kind, params, fitted, walked, columns, delayed_seed, weights
        )
    walked = walked.assign(delayed=delayed_scores, score=np.nan)
    f_columns = [*columns, *VERDICT_FEATURES] if cfg.verdict_features else list(columns)
    kept = [*f_columns, "day", "is_fraud"] + (["merchant_id"] if cfg.verdict_features else [])
    # The verdicts' columns, "is_fraud" named "y" as F is fitted on it.
    no_verdicts = pd.DataFrame(columns=["y" if c == "is_fraud" else c for c in kept])
    verdicts: list[pd.DataFrame] = []
    days: list[dict[str, Any]] = []
    blocked_gap: set = set()
    blocked_test: set = set()
    day = fold.train_end
    while day < fold.test_end:
        in_test = day >= fold.test_start
        rows = walked.loc[walked["day"] == day]
        # The candidates are the payments the delayed protocol would measure on a test
        # day (split's rows); on a gap day, those of cards not known compromised by then.
        if in_test:
            rows = rows.loc[rows.index.isin(test.index)]
        else:
            rows = rows.loc[
                ~rows["card_id"].isin(training.known_compromised(dataset, fold.train_start, day))
            ]
        history = pd.concat(verdicts) if verdicts else no_verdicts
        if cfg.verdict_features:
            rows = rows.assign(**merchant_verdicts(history, rows["merchant_id"], day))
        since = day - timedelta(days=cfg.feedback_days)
        usable = history.loc[(history["day"] >= since) & (history["day"] < day)]
        forest = fit_feedback(usable, f_columns, cfg)
        score = rows["delayed"].to_numpy()
        if forest is not None and len(rows):
            p_f = forest.predict_proba(rows[f_columns].astype(float))[:, 1]
            score = combine(score, p_f, cfg)
        walked.loc[rows.index, "score"] = score
        blocked = blocked_test if in_test else blocked_gap
        top = evaluate.top_k_cards(rows["card_id"], rows["is_fraud"], score, cfg.k, blocked)
        blocked.update(top.loc[top["y"] > 0, "card"])
        verdict = rows.loc[rows["card_id"].isin(top["card"]), kept]
        verdict = verdict.rename(columns={"is_fraud": "y"})
        verdicts.append(verdict)
        days.append(
            {
                "day": day,
                "phase": "test" if in_test else "gap",
                # What F was fitted on, read from the rows themselves.
                "feedback_rows": 0 if forest is None else len(usable),
                "feedback_frauds": 0 if forest is None else int(usable["y"].sum()),
                "newest_feedback_day": None if forest is None else usable["day"].max(),
                "verdict_rows": len(verdict),
                "verdict_cards": len(top),
                "verdict_fraud_cards": int(top["y"].sum()),
                "verdict_frauds": int(verdict["y"].sum()),
            }
        )
        day += timedelta(days=1)
    scored = test.join(walked[["delayed", "score"]], how="left").rename(
        columns={"score": "feedback"}
    )
    cp_d, per_day_d = evaluate.card_precision_at_k(
        scored["day"], scored["card_id"], scored["y"], scored["delayed"], cfg.k
    )
    cp_f, per_day_f = evaluate.card_precision_at_k(
        scored["day"], scored["card_id"], scored["y"], scored["feedback"], cfg.k
    )
    per_day = pd.DataFrame(days).set_index("day")
    per_day["cp_delayed"] = per_day_d
    per_day["cp_feedback"] = per_day_f
    return {
        "fold": fold.name,
        "cp_delayed": cp_d,
        "cp_feedback": cp_f,
        "per_day": per_day,
        "delayed_scores": delayed_scores,
        "test": scored,
    }


def walked_rows(dataset: pd.DataFrame, fold: evaluate.Fold) -> pd.DataFrame:
    """The payments of the fold's delay gap and test window, the days the walk scores."""
    in_walk = (dataset["event_ms"] >= _ms(fold.train_end)) & (
        dataset["event_ms"] < _ms(fold.test_end)
    )
    return dataset.loc[in_walk]


def feedback_folds(
    dataset: pd.DataFrame,
    folds: list[evaluate.Fold],
    kind: str,
    params: dict[str, Any],
    columns: list[str],
    settings: list[FeedbackConfig],
    max_train_rows: int | None = training.DEFAULT_MAX_TRAIN_ROWS,
    delayed_seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`feedback_fold` of every fold for every setting, ``D`` fitted once a fold.

    Returns
    -------
    dict
        Each setting's name mapped to its folds' results, in ``folds``' order.
    """
    results: dict[str, list[dict[str, Any]]] = {s.name: [] for s in settings}
    for fold in folds:
        delayed = None
        for setting in settings:
            result = feedback_fold(
                dataset,
                fold,
                kind,
                params,
                columns,
                setting,
                max_train_rows,
                delayed_seed,
                delayed,
            )
            delayed = result["delayed_scores"]
            results[setting.name].append(result)
            _LOG.info(
                "%s, %s: CP@%d delayed %.3f, feedback %.3f",
                fold.name,
                setting.name,
                setting.k,
                result["cp_delayed"],
                result["cp_feedback"],
            )
    return results


def choose_setting(
    results: dict[str, list[dict[str, Any]]], settings: list[FeedbackConfig]
) -> FeedbackConfig:
    """The setting with the highest mean feedback CP@k over its (validation) folds.

    Ties go to the earlier setting in ``settings``.
    """
    means = {
        name: float(np.nanmean([r["cp_feedback"] for r in runs])) for name, runs in results.items()
    }
    return max(settings, key=lambda s: (means[s.name], -settings.index(s)))
