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
    return training.walked_rows(dataset, fold)


def feedback_folds(
    dataset: pd.DataFrame,
    folds: list[evaluate.Fold],
    kind: str,
    params: dict[str, Any],
    columns: list[str],
    settings: list[FeedbackConfig],
    max_train_rows: int | None = training.DEFAULT_MAX_TRAIN_ROWS,
    delayed_seed: int = 0,
    delayed: dict[str, np.ndarray] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`feedback_fold` of every fold for every setting, ``D`` fitted once a fold.

    ``delayed``: ``D``'s scores of each fold's walked rows by fold name, where the
    training job has them already (``training.select_params``' ``walked``); ``D`` is
    fitted for the folds it lacks.

    Returns
    -------
    dict
        Each setting's name mapped to its folds' results, in ``folds``' order.
    """
    results: dict[str, list[dict[str, Any]]] = {s.name: [] for s in settings}
    for fold in folds:
        scores = (delayed or {}).get(fold.name)
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
                scores,
            )
            scores = result["delayed_scores"]
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


# --- the live path: ``train --feedback`` ----------------------------------------------

#: How much more validation CP@k than the delayed model's a setting needs to count as
#: better: none but rounding.
TIE = 1e-9


def setting_key(setting: FeedbackConfig) -> str:
    """A setting's name in MLflow metric names, e.g. ``w0.5_n7`` (no ``=`` allowed there)."""
    return f"w{setting.weight:g}_n{setting.feedback_days}"


def recent_verdicts(
    dataset: pd.DataFrame, end_ms: int, days: int, columns: list[str]
) -> pd.DataFrame:
    """The payments with an analyst verdict reported in the ``days`` days before ``end_ms``.

    ``dataset`` carries ``verdict`` and ``verdict_reported_ms``
    (:func:`fraudstream.ml.training.with_verdicts`); the rows returned hold ``columns``
    and the verdict as ``y``, as :func:`fit_feedback` takes them.
    """
    since_ms = end_ms - days * training.MS_PER_DAY
    reported = dataset["verdict_reported_ms"]
    recent = dataset.loc[dataset["verdict"].notna() & (reported >= since_ms) & (reported < end_ms)]
    return recent[columns].assign(y=recent["verdict"].astype(np.int64))


def _alone(cfg) -> str:
    """What the job does with the delayed model when no feedback model joins it."""
    if cfg.register:
        return "registered the delayed model alone"
    return "the delayed model alone is the outcome (not registered: --no-register)"


def train_feedback(
    dataset: pd.DataFrame,
    kind: str,
    params: dict[str, Any],
    folds: list[evaluate.Fold],
    cfg: training.TrainConfig,
    log=_LOG.info,
    delayed: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """``train --feedback``: choose a setting, measure it, fit ``F`` on the real verdicts.

    1. Each setting of :data:`fraudstream.ml.training.FEEDBACK_WEIGHTS` x
       ``cfg.feedback_days`` is walked on the validation folds (:func:`feedback_folds`,
       the protocol's simulated analysts); the best by mean CP@k is chosen if it beats
       ``D`` alone there, else ``D`` is registered alone.
    2. The chosen setting is walked once on the test folds: ``D`` against ``D`` with ``F``.
    3. ``F`` is fitted (:func:`fit_feedback`, on ``D``'s feature columns only, as the
       stream computes no others) on the analysts' verdicts of the label store reported
       in the setting's days before the data's end (``cfg.until``, else the midnight
       after the newest payment); without verdicts of both classes, ``D`` goes alone.

    Parameters
    ----------
    dataset : DataFrame
        The training job's dataset with ``verdict`` and ``verdict_reported_ms``.
    kind, params : str, dict
        ``D``'s model type and hyper-parameters, as chosen by the training job.
    folds : list of Fold
        The test folds (their validation folds are derived as the job derives them).
    cfg : TrainConfig
    log : callable
        Where the progress and the decision go, one sentence each.
    delayed : dict, optional
        ``D``'s scores of the folds' walked rows, by fold name, from the training job's
        own fits (:func:`feedback_folds`).

    Returns
    -------
    dict
        ``validation`` (mean CP@k per setting name, ``delayed`` for ``D`` alone),
        ``chosen`` (the setting's name, or None), ``weight``, ``feedback_days``,
        ``test`` (``D``'s and the combination's CP@k per test fold and their means),
        ``per_day`` (the test days' table, a DataFrame), ``threshold`` and
        ``decline_threshold`` (the combined scores' decision bands on the validation
        walks), ``verdicts`` and ``verdict_frauds`` (what ``F`` was fitted on),
        ``estimator`` (``F``, or None to register ``D`` alone) and ``note`` (why not).
    """
    columns = list(cfg.feature_columns)
    valid = evaluate.validation_folds(folds, cfg.delay_days)
    settings = [
        FeedbackConfig(k=cfg.k, feedback_days=days, weight=weight, seed=cfg.seed)
        for weight in training.FEEDBACK_WEIGHTS
        for days in cfg.feedback_days
    ]
    on_valid = feedback_folds(
        dataset, valid, kind, params, columns, settings, cfg.max_train_rows, cfg.seed, delayed
    )
    means = {
        s.name: float(np.nanmean([r["cp_feedback"] for r in on_valid[s.name]])) for s in settings
    }
    alone = float(np.nanmean([r["cp_delayed"] for r in on_valid[settings[0].name]]))
    outcome: dict[str, Any] = {
        "validation": {"delayed": alone, **means},
        "validation_keys": {s.name: setting_key(s) for s in settings},
        "chosen": None,
        "estimator": None,
        "test": None,
        "per_day": None,
    }
    chosen = choose_setting(on_valid, settings)
    # Means of the same per-day fractions, summed in another order, differ in their last
    # bits: a tie is not a win.
    if not means[chosen.name] > alone + TIE:
        outcome["note"] = (
            f"No feedback setting beat the delayed model alone on the validation folds "
            f"(CP@{cfg.k} {alone:.3f}, the best {means[chosen.name]:.3f}): {_alone(cfg)}."
        )
        log(outcome["note"])
        return outcome
    windows = [
        (r["test"]["y"].to_numpy(), r["test"]["feedback"].to_numpy()) for r in on_valid[chosen.name]
    ]
    review, decline = evaluate.decision_bands(windows, cfg.test_days, cfg.k, cfg.decline_precision)
    (on_test,) = feedback_folds(
        dataset, folds, kind, params, columns, [chosen], cfg.max_train_rows, cfg.seed, delayed
    ).values()
    per_day = pd.concat(
        [r["per_day"].loc[r["per_day"]["phase"] == "test"].assign(fold=r["fold"]) for r in on_test]
    ).sort_index()
    test = {
        "folds": [
            {"fold": r["fold"], "cp_delayed": r["cp_delayed"], "cp_feedback": r["cp_feedback"]}
            for r in on_test
        ],
        "cp_delayed": float(np.nanmean([r["cp_delayed"] for r in on_test])),
        "cp_feedback": float(np.nanmean([r["cp_feedback"] for r in on_test])),
    }
    outcome.update(
        chosen=chosen.name,
        weight=chosen.weight,
        feedback_days=chosen.feedback_days,
        threshold=review,
        decline_threshold=decline,
        test=test,
        per_day=per_day,
    )
    log(
        f"Feedback: {chosen.name} chosen on the validation folds (CP@{cfg.k} "
        f"{means[chosen.name]:.3f}, the delayed model alone {alone:.3f}); on the test "
        f"folds {test['cp_feedback']:.3f} against {test['cp_delayed']:.3f}."
    )
    end = cfg.until or max(dataset["day"]) + timedelta(days=1)
    verdicts = recent_verdicts(dataset, _ms(end), chosen.feedback_days, columns)
    outcome.update(verdicts=len(verdicts), verdict_frauds=int(verdicts["y"].sum()))
    forest = fit_feedback(verdicts, columns, chosen) if len(verdicts) else None
    if forest is None:
        found = "no analyst verdicts" if verdicts.empty else "analyst verdicts of one class only"
        outcome["note"] = (
            f"There are {found} in the last {chosen.feedback_days} days before {end}: "
            f"{_alone(cfg)}."
        )
        log(outcome["note"])
        return outcome
    outcome["estimator"] = forest
    log(
        f"Fitted the feedback forest on {len(verdicts):,} analyst verdicts "
        f"({outcome['verdict_frauds']:,} fraud) of the {chosen.feedback_days} days before {end}."
    )
    return outcome
