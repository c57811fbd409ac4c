"""Training and evaluation: features once, prequential folds, model selection, MLflow.

The steps of ``./spark-submit.sh train``, each a function a notebook can call:

1. :func:`build_dataset`: the features of every payment (as of its time, from
   :mod:`fraudstream.features`), with its day, card, truth and when it became known.
2. For each model type, :func:`select_params` picks hyper-parameters by mean average
   precision over the validation folds, a threshold above which payments are frauds at
   the decline precision target (the decline band) and one that holds ``k`` payments a
   day below it (the review band: the analysts' budget).
3. :func:`evaluate_kind` trains on each test fold's training window, with the labels
   known when that window's test starts, and scores its test window.
4. With ``--feedback``, ``fraudstream.ml.feedback.train_feedback`` chooses and measures
   a feedback setting and fits the feedback classifier on the analysts' recent verdicts
   (:func:`with_verdicts`).
5. :func:`log_and_register` logs everything to MLflow, registers the chosen model's
   newest fold (averaged with the feedback classifier, if any) as a version of
   ``fraudstream``, and runs the promotion gate.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudstream import features, lake, storage
from fraudstream.errors import DataError
from fraudstream.ml import drift, evaluate, model

_LOG = logging.getLogger(__name__)

MS_PER_DAY = features.DAY_MS
#: The training job's default of ``--max-train-rows``.
DEFAULT_MAX_TRAIN_ROWS = 250_000
#: ``train --feedback``'s settings, chosen on the validation folds
#: (``fraudstream.ml.feedback.train_feedback``): the feedback classifier's weights, and
#: the default of ``--feedback-days``. The offline comparisons (docs/training.md,
#: "Feedback protocol") chose a weight of 0.75 with 7 or 14 days, never 1.0 nor ranks.
FEEDBACK_WEIGHTS = (0.5, 0.75)
FEEDBACK_DAYS = (7, 14)


@dataclass(frozen=True)
class TrainConfig:
    """Options of the training job; see ``jobs/train.py`` for their meaning."""

    data: Path
    models: tuple[str, ...] = ("random_forest",)
    #: Folder of label events; None reads ``data/labels``. The label store
    #: (``data/lake/labels``, kept by the labels job) holds analysts' verdicts too.
    labels: Path | None = None
    #: Train as of this day: payments before it, and only the labels reported before it.
    until: date | None = None
    train_start: date | None = None
    n_folds: int = 4
    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7
    k: int = evaluate.DEFAULT_K
    #: The precision a decline on the score alone must reach on the validation folds.
    decline_precision: float = 0.9
    feature_columns: tuple[str, ...] = tuple(features.FEATURE_COLUMNS)
    params: dict[str, Any] = field(default_factory=dict)
    experiment: str = "fraudstream"
    model_name: str = "fraudstream"
    seed: int = 0
    #: Where the features are computed: "pandas" (one process, ``features.compute``) or
    #: "spark" (executors: the card operator and daily tables, ``fraudstream.ml.dataset``).
    engine: str = "pandas"
    #: Most rows a model is fitted on per training window: above it, every known fraud
    #: and a weighted sample of the genuine payments (:func:`sample_genuine`); None: all.
    max_train_rows: int | None = DEFAULT_MAX_TRAIN_ROWS
    register: bool = True
    export_dir: Path | None = None
    report: Path | None = None
    #: Register the delayed model averaged with a feedback classifier fitted on the
    #: analysts' recent verdicts (``fraudstream.ml.feedback.train_feedback``).
    feedback: bool = False
    #: The days of verdicts the feedback classifier may be fitted on, chosen among.
    feedback_days: tuple[int, ...] = FEEDBACK_DAYS


# --- data -----------------------------------------------------------------------------


def build_dataset(events: pd.DataFrame, labels: pd.DataFrame, delay_days: int) -> pd.DataFrame:
    """Features of every payment, with what evaluation needs beside them.

    Returns
    -------
    DataFrame
        :data:`features.FEATURE_COLUMNS` plus ``transaction_id``, ``card_id``,
        ``event_ms``, ``day`` (UTC date), ``is_fraud`` (the truth: any fraud label,
        whenever reported) and ``fraud_reported_ms`` (when the first fraud label was
        reported; NaN if none).
    """
    facts = features.fraud_facts(events, labels)
    computed = features.compute(events, facts, label_delay_days=delay_days)
    fraud = labels.loc[labels["label"] == "fraud", ["transaction_id", "reported_time"]]
    reported = (
        fraud.assign(ms=features._time_ms(fraud["reported_time"]))
        .groupby("transaction_id")["ms"]
        .min()
    )
    event_ms = features._time_ms(events["event_time"])
    dataset = computed.assign(
        card_id=events["card_id"].astype(object).to_numpy(),
        event_ms=event_ms,
        day=pd.to_datetime(event_ms, unit="ms").date,
    )
    dataset["fraud_reported_ms"] = dataset["transaction_id"].map(reported).astype(float)
    dataset["is_fraud"] = dataset["fraud_reported_ms"].notna().astype(np.int64)
    return dataset


#: The label events that are analysts' verdicts (``source`` of the label contract).
ANALYST = "analyst"


def analyst_verdicts(labels: pd.DataFrame) -> pd.DataFrame:
    """The analysts' verdict on each payment they checked, from label events.

    Parameters
    ----------
    labels : DataFrame
        Label events (``transaction_id``, ``label``, ``source``, ``reported_time``).

    Returns
    -------
    DataFrame
        By ``transaction_id``: ``verdict`` (1 if an analyst found it fraud, else 0) and
        ``verdict_reported_ms`` (when the first verdict on it was reported).
    """
    analyst = labels.loc[labels["source"] == ANALYST]
    return (
        pd.DataFrame(
            {
                "transaction_id": analyst["transaction_id"].to_numpy(),
                "verdict": (analyst["label"] == "fraud").astype(np.int64).to_numpy(),
                "verdict_reported_ms": features._time_ms(analyst["reported_time"]),
            }
        )
        .groupby("transaction_id")
        .agg(verdict=("verdict", "max"), verdict_reported_ms=("verdict_reported_ms", "min"))
    )


def with_verdicts(dataset: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """``dataset`` with each payment's analyst verdict, from :func:`analyst_verdicts`.

    ``verdict`` (1, 0 or NaN) and ``verdict_reported_ms`` (NaN without one), by
    ``transaction_id``. Whatever engine built the dataset; its ``is_fraud`` already
    counts an analyst's fraud verdict as any fraud label.
    """
    ids = dataset["transaction_id"]
    with_columns = dataset.assign(
        verdict=ids.map(verdicts["verdict"]).astype(float),
        verdict_reported_ms=ids.map(verdicts["verdict_reported_ms"]).astype(float),
    )
    with_columns.attrs = dict(dataset.attrs)
    return with_columns


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def split(dataset: pd.DataFrame, fold: evaluate.Fold) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and test payments of a fold.

    The training payments carry ``y``: fraud if its label was reported before the test
    window starts (what the team knew when it trained). The test payments leave out
    cards already known to be compromised then (a fraud in the training or delay
    window, reported before the test window), and carry the truth as ``y``.
    """
    known_by = _ms(fold.test_start)
    in_train = (dataset["event_ms"] >= _ms(fold.train_start)) & (
        dataset["event_ms"] < _ms(fold.train_end)
    )
    train = dataset.loc[in_train]
    train = train.assign(y=(train["fraud_reported_ms"] < known_by).astype(np.int64))
    known_cards = known_compromised(dataset, fold.train_start, fold.test_start)
    in_test = (
        (dataset["event_ms"] >= known_by)
        & (dataset["event_ms"] < _ms(fold.test_end))
        & ~dataset["card_id"].isin(known_cards)
    )
    test = dataset.loc[in_test]
    return train, test.assign(y=test["is_fraud"])


def known_compromised(dataset: pd.DataFrame, since: date, by: date) -> np.ndarray:
    """The cards known compromised at the start of day ``by``, as in the handbook's protocol.

    A card is known compromised when one of its payments from ``since`` on (the
    training window's start) is a fraud made and reported before ``by``.
    """
    by_ms = _ms(by)
    recent = (dataset["event_ms"] >= _ms(since)) & (dataset["event_ms"] < by_ms)
    return dataset.loc[recent & (dataset["fraud_reported_ms"] < by_ms), "card_id"].unique()


def default_train_start(dataset: pd.DataFrame | date, cfg: TrainConfig) -> date:
    """The latest fold 0 that fits: its test window ends on the data's last whole day.

    ``dataset``: the dataset, or the day of its last payment.
    """
    last_day = dataset if isinstance(dataset, date) else max(dataset["day"])
    return (
        last_day
        + timedelta(days=1)
        - timedelta(days=cfg.train_days + cfg.delay_days + cfg.test_days)
    )


# --- fitting --------------------------------------------------------------------------


def sample_genuine(
    train: pd.DataFrame, max_rows: int | None, seed: int
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """At most ``max_rows`` rows of a training window, and their sample weights.

    Every known fraud (``y == 1``) is kept; the genuine payments are a uniform random
    sample of the rest of the budget, each weighted by how many genuine payments it
    stands for, so the weighted sample has the window's class balance (the tree models
    are fitted on that balance on purpose: reweighting classes was measured to cost
    average precision). A window within the budget is returned whole, weights None.
    """
    if max_rows is None or len(train) <= max_rows:
        return train, None
    fraud = train["y"].to_numpy() == 1
    genuine = np.flatnonzero(~fraud)
    keep = min(len(genuine), max(max_rows - int(fraud.sum()), 1))
    chosen = np.random.default_rng(seed).choice(genuine, size=keep, replace=False)
    rows = np.sort(np.concatenate([np.flatnonzero(fraud), chosen]))
    weights = np.where(fraud[rows], 1.0, len(genuine) / keep)
    return train.iloc[rows], weights


#: The share of a training window, its newest payments, that boosted models stop early on.
EARLY_STOPPING_FRACTION = 0.15


def early_stopping_slice(
    train: pd.DataFrame, fraction: float = EARLY_STOPPING_FRACTION
) -> np.ndarray:
    """Which rows of a training window a boosted model stops early on: its newest.

    The payments from the time that leaves ``fraction`` of the rows before it on, ties
    included, so every row held out is at least as new as every row fitted on: the
    boosting rounds are chosen on the payments closest to the test window, never on a
    random sample that would mix in the fitted payments' own days. None are held out
    (all False) when they would hold no known fraud, or every one: then LightGBM and
    XGBoost fit their grid's number of trees, and HistGradientBoosting stops on a random
    tenth of the window.

    Returns
    -------
    numpy.ndarray of bool
        On ``train``'s rows: True for the early-stopping set.
    """
    times = train["event_ms"].to_numpy()
    if len(times) == 0:
        return np.zeros(0, dtype=bool)
    cut = np.sort(times)[int(len(times) * (1.0 - fraction))]
    held = times >= cut
    y = train["y"].to_numpy()
    if y[held].sum() == 0 or y[~held].sum() == 0:
        return np.zeros(len(times), dtype=bool)
    return held


def fit_predict(
    kind: str,
    params: dict,
    train: pd.DataFrame,
    test: pd.DataFrame,
    columns: list[str],
    seed: int,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, Any]:
    """Fit ``kind`` on ``train`` and return P(fraud) for ``test``, and the fitted model.

    ``weights``, if given, are the training rows' sample weights. A boosted model
    (:data:`model.EARLY_STOPPING_KINDS`) is fitted on the older rows and stops early on
    the newest (:func:`early_stopping_slice`).
    """
    if train["y"].nunique() < 2:
        raise DataError(
            f"The training window {train['day'].min()}..{train['day'].max()} has "
            f"{'no' if train['y'].sum() == 0 else 'only'} known frauds: choose other dates."
        )
    if kind == "spark_gbt":
        return _spark_fit_predict(params, train, test, columns, seed, weights), None
    x_train, y_train = train[columns].astype(float), train["y"].to_numpy()
    stop = None
    held = (
        early_stopping_slice(train)
        if kind in model.EARLY_STOPPING_KINDS
        else np.zeros(len(train), dtype=bool)
    )
    if held.any():
        stop = (x_train[held], y_train[held], None if weights is None else weights[held])
        x_train, y_train = x_train[~held], y_train[~held]
        weights = None if weights is None else weights[~held]
    estimator = model.fit(kind, params, x_train, y_train, seed, weights, stop)
    return model.fraud_probability(estimator, test[columns].astype(float)), estimator


def _fit_window(kind, params, train, test, cfg: TrainConfig):
    """:func:`fit_predict` on the window's rows within ``cfg.max_train_rows``.

    Also returns the number of rows fitted on.
    """
    fitted, weights = sample_genuine(train, cfg.max_train_rows, cfg.seed)
    p, estimator = fit_predict(
        kind, params, fitted, test, list(cfg.feature_columns), cfg.seed, weights
    )
    return p, estimator, len(fitted)


def walked_rows(dataset: pd.DataFrame, fold: evaluate.Fold) -> pd.DataFrame:
    """The payments of a fold's delay gap and test window: the days a feedback walk scores."""
    in_walk = (dataset["event_ms"] >= _ms(fold.train_end)) & (
        dataset["event_ms"] < _ms(fold.test_end)
    )
    return dataset.loc[in_walk]


def _walk_scores(estimator, dataset: pd.DataFrame, fold: evaluate.Fold, cfg: TrainConfig):
    """A fold's model's scores of its :func:`walked_rows`."""
    rows = walked_rows(dataset, fold)[list(cfg.feature_columns)].astype(float)
    return model.fraud_probability(estimator, rows)


def _spark_fit_predict(params, train, test, columns, seed, weights=None) -> np.ndarray:
    """Spark ML's gradient-boosted trees, for comparison with the scikit-learn models."""
    from pyspark.ml.classification import GBTClassifier
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F  # noqa: N812

    from fraudstream.spark import get_session

    spark = get_session("fraudstream-train")
    assembler = VectorAssembler(inputCols=columns, outputCol="features")

    def to_spark(frame: pd.DataFrame, with_label: bool):
        pdf = frame[columns].astype(float).assign(_row=np.arange(len(frame)))
        if with_label:
            pdf["label"] = frame["y"].astype(float).to_numpy()
            pdf["weight"] = 1.0 if weights is None else weights
        return assembler.transform(spark.createDataFrame(pdf))

    gbt = GBTClassifier(
        maxDepth=int(params["maxDepth"]),
        maxIter=int(params["maxIter"]),
        stepSize=float(params["stepSize"]),
        weightCol="weight",
        seed=seed,
    )
    fitted = gbt.fit(to_spark(train, True))
    scored = (
        fitted.transform(to_spark(test, False))
        .select("_row", vector_to_array(F.col("probability"))[1].alias("p"))
        .orderBy(F.col("_row"))
        .toPandas()
    )
    return scored["p"].to_numpy()


def select_params(
    kind: str,
    dataset: pd.DataFrame,
    folds: list[evaluate.Fold],
    cfg: TrainConfig,
    walked: dict[str, np.ndarray] | None = None,
) -> tuple[dict, float, float, float]:
    """Hyper-parameters with the best mean validation average precision, and their bands.

    ``walked``, if given (``train --feedback``), is filled with the chosen parameters'
    models' scores of each fold's :func:`walked_rows`, by fold name: the delayed
    classifier's scores that the feedback walks reuse rather than fit it again.

    Returns
    -------
    (dict, float, float, float)
        The parameters, their mean validation average precision, the threshold where the
        review band starts and the one where the decline band starts (``inf``: none), by
        :func:`evaluate.decision_bands` on the validation windows: the decline band the
        lowest score at which payments are frauds at ``decline_precision``, the review
        band about ``k`` payments a day below it (without a decline band, ``k`` alerts a
        day), each the median over the folds.
    """
    best: tuple[dict, float, list, dict] | None = None
    for params in model.param_grid(kind, cfg.params.get(kind)):
        scores, windows, walks = [], [], {}
        for fold in folds:
            train, test = split(dataset, fold)
            p, estimator, _ = _fit_window(kind, params, train, test, cfg)
            scores.append(evaluate.average_precision(test["y"], p))
            windows.append((test["y"].to_numpy(), p))
            if walked is not None and estimator is not None:
                walks[fold.name] = _walk_scores(estimator, dataset, fold, cfg)
        mean = float(np.nanmean(scores))
        if best is None or mean > best[1]:
            best = (params, mean, windows, walks)
    assert best is not None
    params, mean, windows, walks = best
    if walked is not None:
        walked.update(walks)
    review, decline = evaluate.decision_bands(windows, cfg.test_days, cfg.k, cfg.decline_precision)
    return params, mean, review, decline


def evaluate_kind(
    kind: str,
    params: dict,
    threshold: float,
    dataset: pd.DataFrame,
    folds: list[evaluate.Fold],
    cfg: TrainConfig,
    decline_threshold: float | None = None,
    walked: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Train and score each test fold; metrics per fold and their mean.

    ``walked``: as :func:`select_params`'s, of the test folds.
    """
    per_fold, newest = [], None
    for i, fold in enumerate(folds):
        train, test = split(dataset, fold)
        p, estimator, fitted_rows = _fit_window(kind, params, train, test, cfg)
        if walked is not None and estimator is not None:
            walked[fold.name] = _walk_scores(estimator, dataset, fold, cfg)
        metrics = evaluate.evaluate_scores(
            test["day"], test["card_id"], test["y"], p, threshold, cfg.k, decline_threshold
        )
        per_fold.append(
            {
                "fold": fold.name,
                "train_rows": len(train),
                "fitted_rows": fitted_rows,
                "train_frauds_known": int(train["y"].sum()),
                "test_rows": len(test),
                "test_frauds": int(test["y"].sum()),
                **metrics,
            }
        )
        if i == 0:
            newest = {"estimator": estimator, "train": train, "test": test, "scores": p}
    metric_names = [name for name in per_fold[0] if isinstance(per_fold[0][name], float)]
    mean = {name: _mean_of_defined([f[name] for f in per_fold]) for name in metric_names}
    return {
        "params": params,
        "threshold": threshold,
        "decline_threshold": decline_threshold,
        "folds": per_fold,
        "mean": mean,
        "newest": newest,
    }


# --- MLflow ---------------------------------------------------------------------------


def _mean_of_defined(values: list[float]) -> float:
    """The mean of the folds where a metric is defined, NaN where it is in none.

    A fold without a fraud in its test window has no AUC or AP; a tiny window may have
    none in any fold, where numpy's nanmean would warn about an empty slice.
    """
    defined = [value for value in values if not np.isnan(value)]
    return float(np.mean(defined)) if defined else float("nan")


def _importance(result: dict, columns: list[str]) -> pd.Series | None:
    """The newest fold's model's feature importances, on its training window (or None)."""
    newest = result["newest"]
    if newest["estimator"] is None:
        return None
    train = newest["train"]
    return model.feature_importance(
        newest["estimator"],
        train[columns].astype(float).reset_index(drop=True),
        train["y"].to_numpy(),
    )


def _plots(
    result: dict, columns: list[str], k: int, out_dir: Path, importance: pd.Series | None
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    newest = result["newest"]
    test, scores = newest["test"], newest["scores"]
    paths = []
    precision, recall, _ = precision_recall_curve(test["y"], scores)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.step(recall, precision, where="post")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, newest test fold")
    paths.append(out_dir / "precision_recall.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)

    _, per_day = evaluate.card_precision_at_k(test["day"], test["card_id"], test["y"], scores, k)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.bar([str(d) for d in per_day.index], per_day.to_numpy())
    ax.set(ylabel=f"Card Precision@{k}", title="Card Precision@k by day, newest test fold")
    ax.tick_params(axis="x", rotation=45)
    paths.append(out_dir / "card_precision_by_day.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)

    if importance is not None:
        fig, ax = plt.subplots(figsize=(5, 6))
        ax.barh(importance.index[::-1], importance.to_numpy()[::-1])
        ax.set(title="Feature importance")
        paths.append(out_dir / "feature_importance.png")
        fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
        plt.close(fig)
    return paths


def score_on(test: pd.DataFrame, model_uri: str) -> float | None:
    """A registered model's average precision on ``test``, or None if it cannot score it.

    A model of ``train --feedback`` is scored by its delayed classifier alone: its
    feedback classifier was fitted on the analysts' verdicts of the newest days, which
    are ``test``'s own, so it would be judged on payments it has seen.
    """
    try:
        scorer = model.load(model_uri).unwrap_python_model()
        estimator = scorer.estimator
        if isinstance(estimator, model.WeightedAverage) and DELAYED in estimator.names:
            scorer = model.FraudScorer(estimator.part(DELAYED), scorer.feature_columns)
        scores = scorer.predict(None, test)
    except Exception:  # any failure means "not comparable"
        return None
    return evaluate.average_precision(test["y"], np.asarray(scores, dtype=float))


#: The names of the parts of a ``train --feedback`` model (``model.WeightedAverage``).
DELAYED, FEEDBACK = "delayed", "feedback"


def champion_score_on(test: pd.DataFrame, name: str) -> float | None:
    """The current champion's average precision on ``test``, or None if it cannot score it."""
    return score_on(test, f"models:/{name}@champion")


def gate_on_data(
    data: Path,
    version: str,
    name: str = "fraudstream",
    delay_days: int = 7,
    train_start: date | None = None,
    models_dir: Path | None = None,
):
    """The promotion gate as a step of its own.

    Score a version and the champion on the newest test window of ``data`` (as the
    training job would cut it) and move the alias if the version is better.

    Returns
    -------
    fraudstream.ml.registry.Decision
    """
    from mlflow import MlflowClient

    from fraudstream.ml import registry

    events = lake.read_events(data, features.EVENT_COLUMNS).to_pandas()
    dataset = build_dataset(events, lake.read_labels(data).to_pandas(), delay_days)
    cfg = TrainConfig(data=data, delay_days=delay_days)
    start = train_start or default_train_start(dataset, cfg)
    (fold,) = evaluate.prequential_folds(start, 1, cfg.train_days, delay_days, cfg.test_days)
    _, test = split(dataset, fold)
    candidate = score_on(test, f"models:/{name}/{version}")
    if candidate is None:
        raise DataError(f"Version {version} of {name} could not score {fold.name}.")
    client = MlflowClient()
    current = registry.champion_version(client, name)
    champion = champion_score_on(test, name) if current not in (None, version) else None
    decision = registry.promote_if_better(client, version, candidate, champion, name=name)
    if decision.promoted:
        registry.export_champion(name, models_dir)
    return decision


def log_and_register(
    results: dict[str, dict],
    chosen: str,
    cfg: TrainConfig,
    folds: list[evaluate.Fold],
    timings: dict,
    fed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Log parameters, metrics and plots; register ``chosen``'s newest fold; gate the alias.

    ``fed``: what ``fraudstream.ml.feedback.train_feedback`` found (``train --feedback``),
    logged too; with a feedback classifier, the model registered is the average of
    ``chosen``'s newest fold and it (:class:`model.WeightedAverage`), with the decision
    bands of the combined scores.
    """
    import tempfile

    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from fraudstream.ml import registry, tracking

    tracking.use_experiment(cfg.experiment)
    columns = list(cfg.feature_columns)
    outcome: dict[str, Any] = {}
    with mlflow.start_run(run_name=f"train {chosen}") as run:
        mlflow.log_params(
            {
                "models": ",".join(cfg.models),
                "chosen_model": chosen,
                "n_folds": cfg.n_folds,
                "train_days": cfg.train_days,
                "delay_days": cfg.delay_days,
                "test_days": cfg.test_days,
                "k": cfg.k,
                "decline_precision": cfg.decline_precision,
                "seed": cfg.seed,
                "max_train_rows": cfg.max_train_rows,
                "data": str(cfg.data),
                "features": ",".join(columns),
                "evaluation_window": f"{folds[-1].test_start}..{folds[0].test_end}",
            }
        )
        for kind, result in results.items():
            mlflow.log_params({f"{kind}.{key}": value for key, value in result["params"].items()})
            mlflow.log_metrics(
                {f"{kind}.mean.{m}": v for m, v in result["mean"].items() if math.isfinite(v)}
            )
            mlflow.log_metric(f"{kind}.validation_average_precision", result["validation_ap"])
            for step, fold in enumerate(result["folds"]):
                mlflow.log_metrics(
                    {
                        f"{kind}.fold.{m}": v
                        for m, v in fold.items()
                        if isinstance(v, float) and math.isfinite(v)
                    },
                    step=step,
                )
        mlflow.log_metrics({f"seconds.{stage}": s for stage, s in timings.items()})
        if fed is not None:
            _log_feedback(fed, cfg.k)
        best = results[chosen]
        importance = _importance(best, columns)
        # What the monitor measures drift against: the registered model's training
        # window, every payment of it (fraudstream.ml.drift).
        mlflow.log_dict(
            drift.training_profile(best["newest"]["train"], columns, importance),
            drift.PROFILE_ARTIFACT,
        )
        with tempfile.TemporaryDirectory() as tmp:
            for path in _plots(best, columns, cfg.k, Path(tmp), importance):
                mlflow.log_artifact(str(path), artifact_path="plots")
            report = Path(tmp) / "report.json"
            report.write_text(
                json.dumps(_report(results, chosen, folds, timings, fed), indent=2, default=str)
            )
            mlflow.log_artifact(str(report))
        outcome["run_id"] = run.info.run_id
        newest = best["newest"]
        if not cfg.register or newest["estimator"] is None:
            return outcome
        example = newest["test"][columns].head(5).astype(float)
        estimator = newest["estimator"]
        threshold, decline = best["threshold"], best.get("decline_threshold")
        extra: dict[str, Any] = {}
        if fed is not None and fed["estimator"] is not None:
            weight = fed["weight"]
            estimator = model.WeightedAverage(
                [estimator, fed["estimator"]], [1.0 - weight, weight], [DELAYED, FEEDBACK]
            )
            threshold, decline = fed["threshold"], fed["decline_threshold"]
            extra["feedback"] = {
                "weight": weight,
                "feedback_days": fed["feedback_days"],
                "verdicts": fed["verdicts"],
                "verdict_frauds": fed["verdict_frauds"],
            }
        scorer = model.FraudScorer(estimator, columns)
        # In the estimator's own format, loaded by fraudstream.ml.model: no pickle.
        info = model.log_model(
            estimator,
            columns,
            signature=infer_signature(example, scorer.predict(None, example)),
            input_example=example,
            registered_model_name=cfg.model_name,
            metadata={
                "threshold": threshold,
                # The decision bands: review from the threshold, decline from here.
                "decline_threshold": _finite(decline),
                "review_budget_per_day": cfg.k,
                "decline_precision_target": cfg.decline_precision,
                "feature_columns": columns,
                "model_type": chosen,
                "label_delay_days": cfg.delay_days,
                # The typical genuine payment, which alert reasons are measured against.
                "feature_reference": feature_reference(newest["train"], columns),
                **extra,
            },
        )
    client = MlflowClient()
    version = str(info.registered_model_version)
    window = folds[0].name
    client.set_model_version_tag(cfg.model_name, version, "evaluation_window", window)
    client.set_model_version_tag(cfg.model_name, version, "threshold", f"{threshold!r}")
    client.set_model_version_tag(cfg.model_name, version, "model_type", chosen)
    if "feedback" in extra:
        client.set_model_version_tag(
            cfg.model_name, version, "feedback", json.dumps(extra["feedback"])
        )
    # The delayed classifier's, for a feedback model too: score_on judges a champion of
    # train --feedback by its delayed part alone, so the two compare like with like.
    candidate_ap = best["folds"][0]["average_precision"]
    current = registry.champion_version(client, cfg.model_name)
    champion_ap = None
    if current is not None and current != version:
        champion_ap = champion_score_on(newest["test"], cfg.model_name)
    decision = registry.promote_if_better(
        client, version, candidate_ap, champion_ap, name=cfg.model_name
    )
    outcome.update(version=version, decision=decision)
    if decision.promoted:
        outcome["exported_to"] = registry.export_champion(cfg.model_name, cfg.export_dir)
    return outcome


def _finite(value: float | None) -> float | None:
    """``value``, or None for a threshold no score reaches (``inf``)."""
    return value if value is not None and math.isfinite(value) else None


def feature_reference(train: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    """Each feature's median over the genuine training payments: the "typical payment"."""
    genuine = train.loc[train["y"] == 0, columns] if "y" in train else train[columns]
    return {column: float(value) for column, value in genuine.median().items()}


def _log_feedback(fed: dict[str, Any], k: int) -> None:
    """``train --feedback``'s setting, its validation and test CP@k, its table by day."""
    import mlflow

    cp = f"card_precision_at_{k}"
    mlflow.log_metric(f"feedback.validation.delayed.{cp}", fed["validation"]["delayed"])
    for name, key in fed["validation_keys"].items():
        mlflow.log_metric(f"feedback.validation.{key}.{cp}", fed["validation"][name])
    registered = fed["estimator"] is not None
    mlflow.log_params(
        {
            "feedback.setting": fed["chosen"] or "none",
            "feedback.registered": "delayed+feedback" if registered else "delayed alone",
            **(
                {
                    "feedback.weight": fed["weight"],
                    "feedback.days": fed["feedback_days"],
                    "feedback.verdicts": fed["verdicts"],
                    "feedback.verdict_frauds": fed["verdict_frauds"],
                }
                if registered
                else {}
            ),
        }
    )
    if fed["test"] is not None:
        mlflow.log_metrics(
            {
                f"feedback.test.delayed.{cp}": fed["test"]["cp_delayed"],
                f"feedback.test.feedback.{cp}": fed["test"]["cp_feedback"],
            }
        )
        per_day = fed["per_day"].reset_index().astype({"day": str})
        mlflow.log_text(per_day.to_csv(index=False), "feedback/per_day.csv")


def _feedback_report(fed: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``train --feedback`` found, as the report's JSON holds it."""
    if fed is None:
        return None
    kept = {key: value for key, value in fed.items() if key not in ("estimator", "per_day")}
    kept["registered"] = "delayed+feedback" if fed["estimator"] is not None else "delayed alone"
    if fed.get("decline_threshold") is not None:
        kept["decline_threshold"] = _finite(fed["decline_threshold"])
    if fed["per_day"] is not None:
        kept["per_day"] = fed["per_day"].reset_index().astype({"day": str}).to_dict("records")
    return kept


def _report(results, chosen, folds, timings, fed=None) -> dict:
    return {
        "chosen_model": chosen,
        "test_folds": [asdict(f) | {"name": f.name} for f in folds],
        "models": {
            kind: {
                "params": r["params"],
                "validation_average_precision": r["validation_ap"],
                "threshold": r["threshold"],
                "decline_threshold": _finite(r.get("decline_threshold")),
                "folds": r["folds"],
                "mean": r["mean"],
            }
            for kind, r in results.items()
        },
        "seconds": timings,
        **({"feedback": _feedback_report(fed)} if fed is not None else {}),
    }


# --- the whole job --------------------------------------------------------------------


def _spark_dataset(cfg: TrainConfig, labels_folder: Path | str, timings: dict, log) -> pd.DataFrame:
    """The dataset with its features computed by Spark (``fraudstream.ml.dataset``)."""
    from pyspark.sql import functions as F  # noqa: N812

    from fraudstream.ml import dataset
    from fraudstream.spark import get_session

    spark = get_session("fraudstream-train")
    started = time.perf_counter()
    payments = dataset.read_events(spark, cfg.data, cfg.until)
    labels = dataset.read_labels(spark, labels_folder, cfg.until)
    first_day, last_day = dataset.day_range(payments)
    span = fold_span(cfg.train_start or default_train_start(last_day, cfg), cfg)
    frame = dataset.build_dataset(payments, labels, cfg.delay_days, days=span)
    if cfg.feedback:
        # A few hundred verdicts a day: small enough for the driver.
        verdicts = labels.where(F.col("source") == ANALYST)
        frame = with_verdicts(frame, analyst_verdicts(verdicts.toPandas()))
    # The data's own first and last days, for the checks that the folds fit in it.
    frame.attrs["first_day"], frame.attrs["last_day"] = first_day, last_day
    timings["features"] = time.perf_counter() - started
    log(
        f"Computed the features of the payments from {cfg.data} ({first_day} to {last_day}) "
        f"and the labels of {labels_folder}{f' before {cfg.until}' if cfg.until else ''} "
        f"with Spark ({spark.sparkContext.master}); {len(frame):,} payments of the days "
        f"the folds read ({span[0]} to {span[1] - timedelta(days=1)}) came to the learners."
    )
    return frame


def fold_span(train_start: date, cfg: TrainConfig) -> tuple[date, date]:
    """The days ``[first, end)`` that the test and validation folds read."""
    folds = evaluate.prequential_folds(
        train_start, cfg.n_folds, cfg.train_days, cfg.delay_days, cfg.test_days
    )
    every = folds + evaluate.validation_folds(folds, cfg.delay_days)
    return min(f.train_start for f in every), max(f.test_end for f in every)


def run(cfg: TrainConfig, log=_LOG.info) -> dict[str, Any]:
    """Train, evaluate, log and register as ``cfg`` says; return the report as a dict."""
    timings: dict[str, float] = {}
    labels_folder = cfg.labels or storage.join(cfg.data, lake.LABELS)
    if cfg.engine == "spark":
        dataset = _spark_dataset(cfg, labels_folder, timings, log)
    else:
        started = time.perf_counter()
        events = lake.read_events(cfg.data, features.EVENT_COLUMNS).to_pandas()
        labels = lake.read_label_folder(labels_folder).to_pandas()
        if cfg.until is not None:
            cut = pd.Timestamp(cfg.until, tz="UTC")
            events = events[events["event_time"] < cut].reset_index(drop=True)
            labels = labels[labels["reported_time"] < cut].reset_index(drop=True)
        timings["read"] = time.perf_counter() - started
        log(
            f"Read {len(events):,} payments from {cfg.data} and {len(labels):,} labels from "
            f"{labels_folder}{f' before {cfg.until}' if cfg.until else ''} "
            f"in {timings['read']:.1f} s."
        )
        started = time.perf_counter()
        dataset = build_dataset(events, labels, cfg.delay_days)
        if cfg.feedback:
            dataset = with_verdicts(dataset, analyst_verdicts(labels))
        timings["features"] = time.perf_counter() - started
    log(f"Built {len(cfg.feature_columns)} features in {timings['features']:.1f} s.")

    train_start = cfg.train_start or default_train_start(dataset, cfg)
    folds = evaluate.prequential_folds(
        train_start, cfg.n_folds, cfg.train_days, cfg.delay_days, cfg.test_days
    )
    valid = evaluate.validation_folds(folds, cfg.delay_days)
    first_day = dataset.attrs.get("first_day", min(dataset["day"]))
    if valid[-1].train_start < first_day:
        raise DataError(
            f"The folds need data from {valid[-1].train_start}, but it starts on {first_day}: "
            "use fewer folds or a later --train-start."
        )
    last_day = dataset.attrs.get("last_day", max(dataset["day"]))
    if folds[0].test_start > last_day:
        raise DataError(
            f"The newest test window starts on {folds[0].test_start}, after the data's last "
            f"day, {last_day}: use an earlier --train-start."
        )
    results: dict[str, dict] = {}
    for kind in cfg.models:
        started = time.perf_counter()
        # With --feedback, D's scores of the feedback walks' days, from the same fits.
        walked: dict[str, np.ndarray] | None = {} if cfg.feedback else None
        params, valid_ap, threshold, decline = select_params(kind, dataset, valid, cfg, walked)
        result = evaluate_kind(kind, params, threshold, dataset, folds, cfg, decline, walked)
        result["validation_ap"] = valid_ap
        result["walked"] = walked
        timings[f"train_evaluate.{kind}"] = time.perf_counter() - started
        results[kind] = result
        log(
            f"{kind}: {params}, validation AP {valid_ap:.3f}, "
            f"test AP {result['mean']['average_precision']:.3f} "
            f"({timings[f'train_evaluate.{kind}']:.1f} s)."
        )
    note = sampling_note(results, cfg.max_train_rows)
    if note:
        log(note)
    # The default is chosen on validation folds, like the parameters: never on the test.
    registrable = [k for k in cfg.models if k in model.REGISTRABLE_KINDS] or list(cfg.models)
    chosen = max(registrable, key=lambda kind: results[kind]["validation_ap"])
    fed = None
    if cfg.feedback:
        from fraudstream.ml import feedback

        if chosen not in model.REGISTRABLE_KINDS:
            raise DataError(
                f"--feedback needs a model type that can be registered ({chosen} cannot): "
                f"add one of {', '.join(model.REGISTRABLE_KINDS)} to --models."
            )
        started = time.perf_counter()
        best = results[chosen]
        fed = feedback.train_feedback(
            dataset, chosen, best["params"], folds, cfg, log, best["walked"]
        )
        timings["feedback"] = time.perf_counter() - started

    started = time.perf_counter()
    outcome = log_and_register(results, chosen, cfg, folds, timings, fed)
    timings["mlflow"] = time.perf_counter() - started
    report = _report(results, chosen, folds, timings, fed) | {
        "model_name": cfg.model_name,
        "max_train_rows": cfg.max_train_rows,
        "mlflow_run_id": outcome.get("run_id"),
        "registered_version": outcome.get("version"),
        "promotion": asdict(outcome["decision"]) if "decision" in outcome else None,
        "exported_to": str(outcome["exported_to"]) if "exported_to" in outcome else None,
    }
    if cfg.report:
        Path(cfg.report).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.report).write_text(json.dumps(report, indent=2, default=str))
    return report


def sampling_note(results: dict, max_rows: int | None) -> str | None:
    """One sentence if any test fold's model was fitted on a sample (None if none was)."""
    folds = [f for r in results.values() for f in r["folds"]]
    sampled = [f for f in folds if f["fitted_rows"] < f["train_rows"]]
    if not sampled:
        return None
    return (
        f"{len(sampled)} of {len(folds)} test folds had more than {max_rows:,} training rows "
        "(--max-train-rows): their models were fitted on every known fraud and a weighted "
        f"sample of the genuine payments ({min(f['fitted_rows'] for f in sampled):,} to "
        f"{max(f['fitted_rows'] for f in sampled):,} of {min(f['train_rows'] for f in sampled):,} "
        f"to {max(f['train_rows'] for f in sampled):,} rows), and tested on every payment."
    )


def summary(report: dict, k: int) -> str:
    """A readable table of the report: one line per model, then what was registered."""
    lines = [
        f"{'model':<14}{'val AP':>8}{'AUC':>8}{'AP':>8}{f'CP@{k}':>8}{'alerts/d':>10}{'recall':>8}",
    ]
    for kind, r in report["models"].items():
        m = r["mean"]
        lines.append(
            f"{kind:<14}{r['validation_average_precision']:>8.3f}{m['roc_auc']:>8.3f}"
            f"{m['average_precision']:>8.3f}{m[f'card_precision_at_{k}']:>8.3f}"
            f"{m['alerts_per_day']:>10.1f}{m['recall_at_threshold']:>8.3f}"
        )
    folds = report["test_folds"]
    lines.append(
        f"(means over {len(folds)} test folds, {folds[-1]['test_start']} to "
        f"{folds[0]['test_end']}; chosen by validation AP: {report['chosen_model']})"
    )
    note = sampling_note(report["models"], report.get("max_train_rows"))
    if note:
        lines.append(note)
    chosen = report["models"][report["chosen_model"]]
    decline = chosen.get("decline_threshold")
    means = chosen["mean"]
    lines.append(
        f"Decision bands: review from score {chosen['threshold']:.3f} (test: "
        f"{means.get('reviews_per_day', math.nan):.1f} reviews a day), decline "
        + (
            f"from {decline:.3f} (test: {means.get('declines_per_day', math.nan):.1f} "
            f"declines a day at precision {means.get('decline_precision', math.nan):.3f})"
            if decline is not None
            else "never on the score alone (no score reached the precision target)"
        )
        + "."
    )
    fed = report.get("feedback")
    if fed is not None:
        lines.append(_feedback_summary(fed, k))
    if report.get("registered_version"):
        lines.append(
            f"Registered {report['model_name']} version {report['registered_version']}: "
            f"{report['promotion']['reason']}."
        )
    if report.get("exported_to"):
        lines.append(f"Champion exported to {report['exported_to']}.")
    seconds = report["seconds"]
    lines.append("Seconds: " + ", ".join(f"{stage} {s:.1f}" for stage, s in seconds.items()))
    return "\n".join(lines)


def _feedback_summary(fed: dict[str, Any], k: int) -> str:
    """``train --feedback``'s outcome in a sentence or two."""
    if fed["test"] is None or fed["registered"] != "delayed+feedback":
        line = fed.get("note", "")
    else:
        decline = fed.get("decline_threshold")
        line = (
            f"Feedback: registered the delayed model averaged with a feedback forest "
            f"(weight {fed['weight']:g}) fitted on {fed['verdicts']:,} analyst verdicts of "
            f"the last {fed['feedback_days']} days; review from score {fed['threshold']:.3f}, "
            + (f"decline from {decline:.3f}" if decline is not None else "no decline band")
            + "."
        )
    if fed["test"] is not None:
        line += (
            f" In the feedback protocol ({fed['chosen']}), test CP@{k}: delayed "
            f"{fed['test']['cp_delayed']:.3f}, with feedback {fed['test']['cp_feedback']:.3f}."
        )
    return line.strip()
