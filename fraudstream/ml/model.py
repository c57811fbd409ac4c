"""Classifiers and the model that is registered: one pyfunc over any of them.

Every candidate follows scikit-learn's estimator contract (``fit``, ``predict_proba``):
scikit-learn's own, LightGBM's and XGBoost's. What goes to MLflow is a pyfunc that takes
a frame of :data:`fraudstream.features.FEATURE_COLUMNS` and returns the probability of
fraud, so the streaming job scores with ``mlflow.pyfunc`` and never needs to know which
library is inside.

The registered model holds no pickle (:func:`log_model`): the estimator is saved in its
library's own format (LightGBM's text model, XGBoost's JSON, scikit-learn's through
skops, loaded with an explicit list of trusted types), beside a ``scorer.json`` that
names the format and the feature columns, and MLflow loads it with this module's
:func:`_load_pyfunc`. Loading a registered model so runs no code from the registry.
Models registered before this pickled a :class:`FraudScorer`; they still load.
A :class:`WeightedAverage` of classifiers (the delayed and the feedback classifier of
``train --feedback``) is saved part by part, each in its own format.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fraudstream.errors import DataError

#: Hyper-parameter grids, searched on validation folds (never on a test window).
#: Class imbalance: the linear model weights classes; the tree ensembles learn from
#: the imbalanced data, where weighting was measured to cost average precision. The
#: boosted models stop early on the newest part of their training window (:func:`fit`):
#: their number of trees is a ceiling.
GRIDS: dict[str, dict[str, list]] = {
    "logistic": {"C": [0.1, 1.0]},
    "random_forest": {"max_depth": [10, 20], "n_estimators": [100]},
    "hgb": {
        "learning_rate": [0.05, 0.1],
        "max_leaf_nodes": [15, 63],
        "min_samples_leaf": [50],
        "l2_regularization": [1.0],
        "max_iter": [1000],
    },
    "lightgbm": {
        "learning_rate": [0.05],
        "num_leaves": [15, 63],
        "min_child_samples": [20, 100],
        "subsample": [0.8],
        "colsample_bytree": [0.8],
        "n_estimators": [1000],
    },
    "xgboost": {
        "learning_rate": [0.05],
        "max_depth": [4, 8],
        "min_child_weight": [1, 5],
        "subsample": [0.8],
        "colsample_bytree": [0.8],
        "n_estimators": [1000],
    },
    "spark_gbt": {"maxDepth": [5], "maxIter": [50], "stepSize": [0.1]},
}
SKLEARN_KINDS = ("logistic", "random_forest", "hgb")
#: The model types that can be registered (Spark ML's is for comparison only).
REGISTRABLE_KINDS = (*SKLEARN_KINDS, "lightgbm", "xgboost")
ALL_KINDS = (*REGISTRABLE_KINDS, "spark_gbt")
#: The model types that stop adding trees when the early-stopping set stops improving.
EARLY_STOPPING_KINDS = ("hgb", "lightgbm", "xgboost")
#: Rounds without improvement on the early-stopping set before a boosted model stops.
EARLY_STOPPING_ROUNDS = 50


#: What loading a registered model needs, besides the fraudstream package itself (installed
#: wherever the score job runs): pinned to the versions installed here.
MODEL_PACKAGES = (
    "mlflow",
    "numpy",
    "pandas",
    "scikit-learn",
    "skops",
    "lightgbm",
    "xgboost-cpu",
)


def requirements() -> list[str]:
    """The pip requirements logged with a model: :data:`MODEL_PACKAGES` as installed here.

    Given rather than inferred: MLflow infers them by loading the model in a subprocess
    and watching its imports, which costs about 10 s a model and finds the same list.
    """
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in MODEL_PACKAGES]


def param_grid(kind: str, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every combination of ``kind``'s grid; ``overrides`` fix some parameters."""
    grid = {**GRIDS[kind], **{key: [value] for key, value in (overrides or {}).items()}}
    keys = sorted(grid)
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(grid[key] for key in keys))
    ]


def make_estimator(kind: str, params: dict[str, Any], seed: int = 0):
    """A fresh, unfitted estimator of ``kind`` (scikit-learn's contract)."""
    if kind == "logistic":
        return make_pipeline(
            StandardScaler(),
            LogisticRegression(
                C=params["C"], class_weight="balanced", max_iter=2000, random_state=seed
            ),
        )
    if kind == "random_forest":
        return RandomForestClassifier(
            n_estimators=int(params["n_estimators"]),
            max_depth=int(params["max_depth"]),
            min_samples_leaf=2,
            n_jobs=-1,
            random_state=seed,
        )
    if kind == "hgb":
        return HistGradientBoostingClassifier(
            learning_rate=float(params["learning_rate"]),
            max_leaf_nodes=int(params["max_leaf_nodes"]),
            max_iter=int(params["max_iter"]),
            min_samples_leaf=int(params.get("min_samples_leaf", 20)),
            l2_regularization=float(params.get("l2_regularization", 0.0)),
            # Stops on the early-stopping set :func:`fit` gives; without one (too few
            # known frauds in it), on a random tenth of the training rows.
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=EARLY_STOPPING_ROUNDS,
            random_state=seed,
        )
    if kind == "lightgbm":
        from lightgbm import LGBMClassifier

        return LGBMClassifier(
            n_estimators=int(params["n_estimators"]),
            learning_rate=float(params["learning_rate"]),
            num_leaves=int(params["num_leaves"]),
            min_child_samples=int(params["min_child_samples"]),
            subsample=float(params["subsample"]),
            subsample_freq=1,
            colsample_bytree=float(params["colsample_bytree"]),
            n_jobs=-1,
            random_state=seed,
            verbose=-1,
        )
    if kind == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(
            n_estimators=int(params["n_estimators"]),
            learning_rate=float(params["learning_rate"]),
            max_depth=int(params["max_depth"]),
            min_child_weight=float(params["min_child_weight"]),
            subsample=float(params["subsample"]),
            colsample_bytree=float(params["colsample_bytree"]),
            tree_method="hist",
            eval_metric="aucpr",
            n_jobs=-1,
            random_state=seed,
        )
    raise DataError(f"Unknown model type {kind!r}: choose from {', '.join(REGISTRABLE_KINDS)}.")


def fit(
    kind: str,
    params: dict[str, Any],
    x: pd.DataFrame,
    y: np.ndarray,
    seed: int = 0,
    weights: np.ndarray | None = None,
    stop: tuple[pd.DataFrame, np.ndarray, np.ndarray | None] | None = None,
):
    """A fitted estimator of ``kind``, single-threaded for prediction.

    Parameters
    ----------
    kind, params, seed
        As :func:`make_estimator`.
    x, y, weights
        The training rows, their labels and their sample weights (None: equal).
    stop : (frame, labels, weights), optional
        The early-stopping set of a kind in :data:`EARLY_STOPPING_KINDS`: boosting stops
        once its average precision (HistGradientBoosting: its loss) has not improved for
        :data:`EARLY_STOPPING_ROUNDS` rounds, and the model keeps the best round. The
        training job gives the newest payments of the training window
        (``fraudstream.ml.training.early_stopping_slice``); ignored by the other kinds.

    Returns
    -------
    estimator
        Fitted; set to predict on one thread where it has the setting (``n_jobs``: the
        forest, LightGBM, XGBoost), because executors already score partitions in
        parallel (and a forest's votes then add up in the same order in every replay).
    """
    estimator = make_estimator(kind, params, seed)
    fit_params: dict[str, Any] = {}
    if weights is not None:
        # A pipeline takes each step's fit parameters by the step's name.
        last = f"{estimator.steps[-1][0]}__" if hasattr(estimator, "steps") else ""
        fit_params[f"{last}sample_weight"] = weights
    if stop is not None and kind in EARLY_STOPPING_KINDS:
        x_stop, y_stop, w_stop = stop
        if kind == "hgb":
            fit_params.update(X_val=x_stop, y_val=y_stop, sample_weight_val=w_stop)
            estimator.set_params(validation_fraction=None)
        elif kind == "lightgbm":
            from lightgbm import early_stopping

            # The one metric to stop on (LightGBM would otherwise stop on its log loss too).
            estimator.set_params(metric="average_precision")
            fit_params.update(
                eval_X=(x_stop,),
                eval_y=(y_stop,),
                eval_sample_weight=None if w_stop is None else [w_stop],
                callbacks=[early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
            )
        else:
            estimator.set_params(early_stopping_rounds=EARLY_STOPPING_ROUNDS)
            fit_params.update(
                eval_set=[(x_stop, y_stop)],
                sample_weight_eval_set=None if w_stop is None else [w_stop],
                verbose=False,
            )
    estimator.fit(x, y, **fit_params)
    if getattr(estimator, "n_jobs", None) not in (None, 1):
        estimator.set_params(n_jobs=1)
    return estimator


def fraud_probability(estimator, frame: pd.DataFrame) -> np.ndarray:
    """P(fraud) of each row: the column of class 1, whatever the class order."""
    classes = list(estimator.classes_)
    proba = estimator.predict_proba(frame)
    if 1 not in classes:
        return np.zeros(len(frame))
    return proba[:, classes.index(1)]


def feature_importance(estimator, frame: pd.DataFrame, y: np.ndarray, seed: int = 0) -> pd.Series:
    """Importance of each feature: the model's own where it has one, else permutation."""
    columns = list(frame.columns)
    inner = estimator[-1] if hasattr(estimator, "steps") else estimator
    if hasattr(inner, "feature_importances_"):
        values = inner.feature_importances_
    elif hasattr(inner, "coef_"):
        values = np.abs(inner.coef_[0])
    else:
        from sklearn.inspection import permutation_importance

        sample = frame.sample(min(len(frame), 20_000), random_state=seed)
        result = permutation_importance(
            estimator,
            sample,
            y[frame.index.get_indexer(sample.index)],
            scoring="average_precision",
            n_repeats=2,
            random_state=seed,
        )
        values = result.importances_mean
    return pd.Series(values, index=columns).sort_values(ascending=False)


class WeightedAverage:
    """Classifiers combined: the weighted average of their probabilities of fraud.

    What ``train --feedback`` registers: the delayed classifier and the feedback
    classifier fitted on the analysts' recent verdicts, with weights ``1 - w`` and ``w``
    (Dal Pozzolo's "AW", :mod:`fraudstream.ml.feedback`). Saved and loaded part by part
    (:func:`save_estimator`, :func:`load_scorer`), each in its own format.

    Parameters
    ----------
    parts : list of fitted classifiers
        Each with ``predict_proba`` and ``classes_``, trained on the same feature columns.
    weights : list of float
        One per part, non-negative, adding up to 1.
    names : list of str, optional
        One per part (the folders they are saved in); ``part0``, ``part1``... if None.
    """

    classes_ = np.array([0, 1])

    def __init__(self, parts: list, weights: list[float], names: list[str] | None = None):
        names = list(names) if names is not None else [f"part{i}" for i in range(len(parts))]
        if not parts or not len(parts) == len(weights) == len(names):
            raise ValueError("A weighted average needs one weight and one name per part.")
        if min(weights) < 0 or not np.isclose(sum(weights), 1.0):
            raise ValueError(f"The weights {list(weights)} are not non-negative adding up to 1.")
        self.parts = list(parts)
        self.weights = [float(w) for w in weights]
        self.names = names

    @property
    def n_jobs(self) -> int | None:
        """The threads of the part that predicts on most (1 if none has the setting)."""
        jobs = [getattr(part, "n_jobs", None) for part in self.parts]
        return next((j for j in jobs if j not in (None, 1)), 1)

    def set_params(self, **params) -> WeightedAverage:
        """Pass ``n_jobs`` on to every part that has it (the only parameter set so)."""
        for part in self.parts:
            if getattr(part, "n_jobs", None) not in (None, 1):
                part.set_params(**params)
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Columns ``1 - p`` and ``p``, ``p`` the weighted average of the parts' P(fraud)."""
        p = np.zeros(len(frame))
        for part, weight in zip(self.parts, self.weights, strict=True):
            p = p + weight * fraud_probability(part, frame)
        return np.column_stack([1.0 - p, p])

    def part(self, name: str):
        """The part saved as ``name``."""
        return self.parts[self.names.index(name)]


class FraudScorer(PythonModel):
    """The model the score job scores with: feature frame in, probability of fraud out.

    What :func:`load_scorer` rebuilds from a registered model's files, and what models
    registered before :func:`log_model` pickled (a ``PythonModel``, so they still load).

    Parameters
    ----------
    estimator : fitted classifier with ``predict_proba`` and ``classes_``
    feature_columns : list of str
        The columns the estimator was trained on, in order.
    """

    def __init__(self, estimator, feature_columns: list[str]):
        self.estimator = estimator
        self.feature_columns = list(feature_columns)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
        """The probability of fraud of each row of ``model_input``.

        Parameters
        ----------
        context, params
            MLflow's, unused: the signature is ``mlflow.pyfunc.PythonModel.predict``'s.
        model_input : pandas.DataFrame
            At least the feature columns; other columns are ignored.

        Returns
        -------
        pandas.Series
            ``score``, on ``model_input``'s index.
        """
        frame = model_input[self.feature_columns].astype(float)
        # The same payment must get the same score, to the last bit, in any replay: a
        # forest predicting on several threads adds its trees' votes in the order the
        # threads finish, and a reason's rounded contribution then flips between runs.
        if getattr(self.estimator, "n_jobs", 1) not in (None, 1):
            self.estimator.set_params(n_jobs=1)
        return pd.Series(
            fraud_probability(self.estimator, frame), index=model_input.index, name="score"
        )


# --- the registered model, without pickle ---------------------------------------------

#: The file beside the saved estimator that says how to load it: its format, its file
#: and the feature columns.
SCORER_FILE = "scorer.json"
#: The format of a :class:`WeightedAverage` in :data:`SCORER_FILE`.
AVERAGE = "average"

#: The types a scikit-learn model saved with skops may hold beyond the ones skops trusts
#: by default: those the model types here need, nothing else. A file that names any
#: other type is refused (``skops.io.exceptions.UntrustedTypesFoundException``).
SKOPS_TRUSTED = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",  # hgb
    "sklearn.tree._tree.Tree",  # random_forest
]


def save_estimator(estimator, feature_columns: list[str], folder: Path | str) -> Path:
    """Write a fitted estimator to ``folder`` in its library's own format.

    LightGBM's text model (its best round, when it stopped early), XGBoost's JSON (up to
    its best round), anything else with skops; beside it :data:`SCORER_FILE`. No pickle.
    A :class:`WeightedAverage` saves each part so in a subfolder named after it, and its
    :data:`SCORER_FILE` says ``"format": "average"`` with the parts' folders and weights.

    Returns
    -------
    Path
        ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(estimator, WeightedAverage):
        for name, part in zip(estimator.names, estimator.parts, strict=True):
            save_estimator(part, feature_columns, folder / name)
        average = {
            "format": AVERAGE,
            "parts": estimator.names,
            "weights": estimator.weights,
            "feature_columns": list(feature_columns),
        }
        (folder / SCORER_FILE).write_text(json.dumps(average, indent=2))
        return folder
    library = type(estimator).__module__.split(".")[0]
    if library == "lightgbm":
        saved, name = "lightgbm", "model.txt"
        # Saves up to the best round when early stopping found one.
        estimator.booster_.save_model(str(folder / name))
    elif library == "xgboost":
        saved, name = "xgboost", "model.json"
        booster = estimator.get_booster()
        best = booster.attr("best_iteration")
        # The rounds predict_proba uses: up to the best one when it stopped early.
        (booster if best is None else booster[: int(best) + 1]).save_model(str(folder / name))
    else:
        import skops.io

        saved, name = "skops", "model.skops"
        skops.io.dump(estimator, folder / name)
    spec = {"format": saved, "file": name, "feature_columns": list(feature_columns)}
    (folder / SCORER_FILE).write_text(json.dumps(spec, indent=2))
    return folder


class _Booster:
    """A saved LightGBM or XGBoost booster behind ``predict_proba``, on one thread."""

    classes_ = np.array([0, 1])

    def __init__(self, saved: str, path: Path):
        self.saved = saved
        if saved == "lightgbm":
            import lightgbm

            self.booster: Any = lightgbm.Booster(model_file=str(path))
        else:
            import xgboost

            self.booster = xgboost.Booster(params={"nthread": 1}, model_file=str(path))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        x = np.asarray(frame, dtype=float)
        if self.saved == "lightgbm":
            p = self.booster.predict(x, num_threads=1)
        else:
            p = self.booster.inplace_predict(x)
        p = np.asarray(p, dtype=float)
        return np.column_stack([1.0 - p, p])


def load_scorer(folder: Path | str) -> FraudScorer:
    """The scorer :func:`save_estimator` wrote to ``folder``; runs no code from it.

    A saved :class:`WeightedAverage` loads its parts the same way, from its subfolders.

    Raises
    ------
    skops.io.exceptions.UntrustedTypesFoundException
        If a skops file names a type outside skops' defaults and :data:`SKOPS_TRUSTED`.
    """
    folder = Path(folder)
    spec = json.loads((folder / SCORER_FILE).read_text())
    if spec["format"] == AVERAGE:
        # Subfolders of this folder only: a name cannot point anywhere else.
        unsafe = [name for name in spec["parts"] if Path(name).name != name or name in ("", "..")]
        if unsafe:
            raise DataError(f"A saved average in {folder} names a part outside it: {unsafe[0]!r}.")
        parts = [load_scorer(folder / name).estimator for name in spec["parts"]]
        average = WeightedAverage(parts, spec["weights"], spec["parts"])
        return FraudScorer(average, spec["feature_columns"])
    path = folder / spec["file"]
    if spec["format"] in ("lightgbm", "xgboost"):
        estimator: Any = _Booster(spec["format"], path)
    elif spec["format"] == "skops":
        import skops.io

        estimator = skops.io.load(path, trusted=SKOPS_TRUSTED)
    else:
        raise DataError(f"Unknown saved model format {spec['format']!r} in {folder}.")
    return FraudScorer(estimator, spec["feature_columns"])


class _SavedModel:
    """What MLflow's pyfunc holds for a model logged by :func:`log_model`.

    ``python_model`` is the scorer, so ``PyFuncModel.unwrap_python_model()`` gives the
    same object for these models as for the pickled ones registered before.
    """

    def __init__(self, scorer: FraudScorer):
        self.python_model = scorer

    def predict(self, model_input: pd.DataFrame, params=None) -> pd.Series:
        return self.python_model.predict(None, model_input)


def _load_pyfunc(path: str) -> _SavedModel:
    """MLflow's entry point (``loader_module``) for a model logged by :func:`log_model`."""
    return _SavedModel(load_scorer(path))


def log_model(estimator, feature_columns: list[str], **kwargs):
    """Log a fitted estimator to MLflow as a pyfunc that holds no pickle.

    The estimator is saved by :func:`save_estimator`; MLflow loads it with this
    module's :func:`_load_pyfunc`, from the fraudstream package installed where it
    loads (no code travels with the model). The requirements are :func:`requirements`.

    Parameters
    ----------
    estimator : fitted classifier
    feature_columns : list of str
        The columns it was trained on, in order.
    **kwargs
        For ``mlflow.pyfunc.log_model``: ``registered_model_name``, ``signature``,
        ``input_example``, ``metadata``...

    Returns
    -------
    mlflow.models.model.ModelInfo
    """
    import tempfile

    import mlflow.pyfunc

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_estimator(estimator, feature_columns, Path(tmp) / "scorer")
        return mlflow.pyfunc.log_model(
            name="model",
            loader_module=__name__,
            data_path=str(folder),
            pip_requirements=requirements(),
            **kwargs,
        )


#: Where the scorer lived before the package was arranged by role: models registered
#: then pickled it as ``fraudstream.model.FraudScorer``.
_FORMER_MODULE = "fraudstream.model"


def load(model_uri: str):
    """Load a registered or exported model with MLflow, whenever it was registered.

    Parameters
    ----------
    model_uri : str
        ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or a model folder.

    Returns
    -------
    mlflow.pyfunc.PyFuncModel
        The model; models registered before the package was arranged by role load too,
        their scorer's former module name pointing at this one.
    """
    import mlflow.pyfunc

    sys.modules.setdefault(_FORMER_MODULE, sys.modules[__name__])
    return mlflow.pyfunc.load_model(model_uri)
