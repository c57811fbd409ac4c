"""The model the scoring job scores with.

It is loaded from the registry or a folder, and followed between micro-batches when its
alias moves (hot swap).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudstream import features
from fraudstream.errors import FraudstreamError
from fraudstream.ml import model as ml_model

_LOG = logging.getLogger(__name__)


class ModelLoadError(FraudstreamError):
    """The model cannot be loaded; the message is one sentence for the user."""


@dataclass
class LoadedModel:
    """A loaded model version and what the stream needs to know about it."""

    name: str
    version: str
    scorer: Any  # fraudstream.ml.model.FraudScorer
    threshold: float
    feature_columns: list[str]
    reference: dict[str, float] | None
    label_delay_days: int
    #: Where the decline band starts (training's, for its precision target); None: the
    #: model alone never declines.
    decline_threshold: float | None = None

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """The probability of fraud of each row of ``frame`` (the model's feature columns)."""
        if frame.empty:
            return np.zeros(0)
        return np.asarray(self.scorer.predict(None, frame), dtype=float)


def parse_model_uri(uri: str) -> tuple[str, str, str | None]:
    """Split a model URI into ``(kind, name or path, alias or version)``."""
    if uri.startswith("models:/"):
        rest = uri[len("models:/") :]
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return "alias", name, alias
        name, _, version = rest.partition("/")
        return "version", name, version or None
    return "path", uri, None


def load_model(
    uri: str, threshold: float | None = None, version: str | None = None, hint: bool = True
) -> LoadedModel:
    """Load a model by registry alias, registry version, or from a folder.

    ``hint``: end a registry error with how to make a model (for the champion).

    Raises
    ------
    ModelLoadError
        With one sentence saying what is missing.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    kind, name, ref = parse_model_uri(uri)
    try:
        if kind == "path":
            path = Path(name)
            if not (path / "MLmodel").is_file():
                raise ModelLoadError(f"No model at {path} (no MLmodel file there).")
            meta_file = path / "registered_model_meta"
            meta = {}
            if meta_file.is_file():
                for line in meta_file.read_text().splitlines():
                    key, _, value = line.partition(":")
                    meta[key.strip()] = value.strip()
            model_name = meta.get("model_name", path.name)
            version = meta.get("model_version", "local")
            loaded = ml_model.load(str(path))
        else:
            from fraudstream.ml import tracking

            tracking.use_store()
            client = MlflowClient()
            if version is None:
                if kind == "alias":
                    assert ref is not None  # an alias URI names its alias
                    version = str(client.get_model_version_by_alias(name, ref).version)
                else:
                    version = ref
            model_name = name
            loaded = ml_model.load(f"models:/{name}/{version}")
    except ModelLoadError:
        raise
    except MlflowException as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        advice = " (train and register one with ./spark-submit.sh train, or pass --model PATH)"
        raise ModelLoadError(
            f"Cannot load model {uri}: {first.rstrip('.')}{advice if hint else ''}."
        ) from None
    except (OSError, ValueError, ImportError) as error:
        raise ModelLoadError(f"Cannot load model {uri}: {error}.") from None
    metadata = loaded.metadata.metadata or {}
    chosen = threshold if threshold is not None else metadata.get("threshold")
    if chosen is None:
        raise ModelLoadError(f"Model {uri} carries no threshold in its metadata: pass --threshold.")
    scorer = loaded.unwrap_python_model()
    return LoadedModel(
        name=model_name,
        version=str(version),
        scorer=scorer,
        threshold=float(chosen),
        feature_columns=list(metadata.get("feature_columns") or scorer.feature_columns),
        reference=metadata.get("feature_reference"),
        label_delay_days=int(metadata.get("label_delay_days", features.DEFAULT_LABEL_DELAY_DAYS)),
        decline_threshold=metadata.get("decline_threshold"),
    )


#: The stand-in's threshold: low enough that a small sample raises a few dozen alerts.
STAND_IN_THRESHOLD = 0.3


def stand_in(dataset: pd.DataFrame, threshold: float = STAND_IN_THRESHOLD) -> LoadedModel:
    """A small random forest fitted on ``dataset`` that stands in for the champion.

    For notebooks on a fresh checkout, where the registry has no champion: the training
    job's features, a random forest of 30 trees, the features' reference values (for the
    reasons) and the default label delay. It has seen the payments it then scores, so
    its alerts look better than a real champion's would.

    Parameters
    ----------
    dataset : pandas.DataFrame
        ``fraudstream.ml.training.build_dataset``'s rows: the features and ``is_fraud``.
    threshold : float
        Scores at or above it alert.

    Returns
    -------
    LoadedModel
        Version ``stand-in`` of ``fraudstream``.
    """
    from sklearn.ensemble import RandomForestClassifier

    from fraudstream.ml import training

    columns = features.FEATURE_COLUMNS
    forest = RandomForestClassifier(n_estimators=30, max_depth=8, random_state=0, n_jobs=1)
    forest.fit(dataset[columns], dataset["is_fraud"])
    return LoadedModel(
        name="fraudstream",
        version="stand-in",
        scorer=ml_model.FraudScorer(forest, columns),
        threshold=threshold,
        feature_columns=columns,
        reference=training.feature_reference(dataset.assign(y=dataset["is_fraud"]), columns),
        label_delay_days=features.DEFAULT_LABEL_DELAY_DAYS,
    )


class ModelSource:
    """The model a URI points at, followed between micro-batches.

    For an alias URI, :meth:`refresh` asks the registry where the alias points (one
    small query) and loads the new version when it moved; a version that fails to
    load is reported and the current one kept, so a bad promotion never stops the
    stream.
    """

    def __init__(
        self,
        uri: str,
        threshold: float | None = None,
        log: Callable = _LOG.info,
        current: LoadedModel | None = None,
    ):
        self.uri = uri
        self.fixed_threshold = threshold
        self.log = log
        self.kind, self.name, self.alias = parse_model_uri(uri)
        # A caller that already loaded the model (to fail fast) hands it over.
        self.current = current if current is not None else load_model(uri, threshold)

    def refresh(self) -> LoadedModel:
        """The model to score the next micro-batch with.

        A fixed version or folder is never reloaded; an alias is followed as the class says.
        """
        if self.kind != "alias":
            return self.current
        assert self.alias is not None  # an alias URI names its alias
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            version = str(MlflowClient().get_model_version_by_alias(self.name, self.alias).version)
        except MlflowException as error:
            self.log(
                f"model: cannot read alias {self.uri} ({error}); keeping version "
                f"{self.current.version}"
            )
            return self.current
        if version == self.current.version:
            return self.current
        try:
            candidate = load_model(self.uri, self.fixed_threshold, version=version)
        except ModelLoadError as error:
            self.log(f"model: {error} Keeping version {self.current.version}.")
            return self.current
        if candidate.label_delay_days != self.current.label_delay_days:
            self.log(
                f"model: version {version} expects a label delay of "
                f"{candidate.label_delay_days} days, the stream's state uses "
                f"{self.current.label_delay_days}; keeping version {self.current.version} "
                "(restart on a new checkpoint to change the delay)"
            )
            return self.current
        self.log(
            f"model: {self.uri} moved from version {self.current.version} to {version}; "
            f"scoring with version {version} from this micro-batch on"
        )
        self.current = candidate
        return self.current


#: The registry alias of the model scored in shadow beside the champion.
CHALLENGER_ALIAS = "challenger"


def challenger_uri(model_uri: str) -> str | None:
    """The challenger of a champion URI: ``models:/NAME@challenger``; none for a folder."""
    kind, name, _ = parse_model_uri(model_uri)
    return None if kind == "path" else f"models:/{name}@{CHALLENGER_ALIAS}"


class ChallengerSource:
    """The shadow challenger, followed between micro-batches; ``None`` while there is none.

    The challenger scores every payment beside the champion; its score is recorded in
    the scored view and never decides. So nothing about it stops the stream: an alias
    that does not exist means no challenger; a version that fails to load, or that
    expects another label delay than the stream's state, is reported once and the
    current challenger (or none) kept.

    Parameters
    ----------
    uri : str or None
        An alias URI (followed), a version URI (fixed: a rebuild's), or None (none).
    label_delay_days : int
        The stream's: the features the challenger sees are computed with it.
    """

    def __init__(self, uri: str | None, label_delay_days: int, log: Callable = _LOG.info):
        self.uri = uri
        self.label_delay_days = label_delay_days
        self.log = log
        self.current: LoadedModel | None = None
        self._refused: set[str] = set()
        self._told_none = False

    def refresh(self) -> LoadedModel | None:
        """The challenger to score the next micro-batch with, or None."""
        if self.uri is None:
            return None
        kind, name, ref = parse_model_uri(self.uri)
        if kind != "alias":
            version = ref
        else:
            assert ref is not None  # an alias URI names its alias
            version = self._alias_version(name, ref)
            if version is None:
                return self.current
        if version in self._refused or (
            self.current is not None and version == self.current.version
        ):
            return self.current
        try:
            candidate = load_model(self.uri, version=version, hint=False)
        except ModelLoadError as error:
            self._refuse(version, f"{error} {self._keeping()}")
            return self.current
        if candidate.label_delay_days != self.label_delay_days:
            self._refuse(
                version,
                f"version {version} expects a label delay of {candidate.label_delay_days} "
                f"days, the stream's state uses {self.label_delay_days}. {self._keeping()}",
            )
            return self.current
        self.log(
            f"challenger: {self.uri} is version {version}; scoring every payment with it "
            "in shadow from this micro-batch on (never alerts)"
        )
        self.current = candidate
        self._told_none = False
        return self.current

    def _alias_version(self, name: str, alias: str) -> str | None:
        """Where the alias points; None (and the current challenger dropped) if nowhere."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        from fraudstream.ml import tracking

        try:
            tracking.use_store()
            return str(MlflowClient().get_model_version_by_alias(name, alias).version)
        except MlflowException as error:
            if error.error_code not in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
                self.log(f"challenger: cannot read alias {self.uri} ({error}). {self._keeping()}")
                return None
        if self.current is not None:
            self.log(f"challenger: alias {self.uri} removed; scoring with the champion alone")
            self.current = None
        elif not self._told_none:
            self.log(f"challenger: no alias {self.uri}; scoring with the champion alone")
        self._told_none = True
        return None

    def _keeping(self) -> str:
        if self.current is None:
            return "Scoring with the champion alone."
        return f"Keeping challenger version {self.current.version}."

    def _refuse(self, version: str | None, message: str) -> None:
        self.log(f"challenger: {message}")
        self._refused.add(str(version))
