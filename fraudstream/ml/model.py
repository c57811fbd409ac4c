"""Classifiers and the model that is registered: scikit-learn estimators behind one pyfunc.

Every candidate follows scikit-learn's estimator contract (``fit``, ``predict_proba``).
What goes to MLflow is :class:`FraudScorer`, a pyfunc that takes a frame of
:data:`fraudstream.features.FEATURE_COLUMNS` and returns the probability of fraud, so
the streaming job scores with ``mlflow.pyfunc`` and never needs to know which library
is inside.
"""

from __future__ import annotations

import itertools
import sys
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
#: the imbalanced data, where weighting was measured to cost average precision.
GRIDS: dict[str, dict[str, list]] = {
    "logistic": {"C": [0.1, 1.0]},
    "random_forest": {"max_depth": [10, 20], "n_estimators": [100]},
    "hgb": {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31], "max_iter": [300]},
    "spark_gbt": {"maxDepth": [5], "maxIter": [50], "stepSize": [0.1]},
}
SKLEARN_KINDS = ("logistic", "random_forest", "hgb")
ALL_KINDS = (*SKLEARN_KINDS, "spark_gbt")


#: What loading a registered model needs, besides the fraudstream package that travels
#: with it (``code_paths``): pinned to the versions installed here.
MODEL_PACKAGES = ("mlflow", "cloudpickle", "numpy", "pandas", "scikit-learn")


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
    """A fresh, unfitted scikit-learn estimator of ``kind``."""
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
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=20,
            random_state=seed,
        )
    raise DataError(f"Unknown model type {kind!r}: choose from {', '.join(SKLEARN_KINDS)}.")


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


class FraudScorer(PythonModel):
    """The registered model: feature frame in, probability of fraud out.

    Parameters
    ----------
    estimator : fitted scikit-learn classifier
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
