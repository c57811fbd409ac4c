"""The champion's training profile, and how far a day's features have drifted from it.

Training logs a profile of the data the registered model was fitted on (the newest
fold's training window, every payment of it) beside the model, as the MLflow artifact
``training_profile.json`` of its run: for each feature the cut points of its deciles,
the share of the training payments in each bin, the share of nulls, and the model's
feature importances. ``./spark-submit.sh monitor`` counts each day's scored payments in
the same bins and measures the drift as the population stability index (PSI):

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

over the bins plus one bin for nulls, so a feature that stops arriving drifts too.
Shares are floored at :data:`SHARE_FLOOR` so an empty bin does not make the index
infinite. The usual reading: under 0.1 stable, 0.1 to 0.25 a moderate shift, over
0.25 a significant one.

A value's bin is the number of cut points at or below it: bin 0 holds the values
under the first cut point, the last bin those at or above the last. Cut points are
values of the training data, deduplicated: a yes/no feature has three bins (the third,
under 0, stays empty), not ten.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

#: The profile's format, written into it.
PROFILE_VERSION = 1
#: The MLflow artifact of the training run that holds the profile.
PROFILE_ARTIFACT = "training_profile.json"
#: Quantile bins per feature (fewer where values repeat).
DEFAULT_BINS = 10
#: The smallest share a bin counts with in the PSI.
SHARE_FLOOR = 1e-4


def cut_points(values: np.ndarray, bins: int = DEFAULT_BINS) -> list[float]:
    """The inner quantile cut points of the non-null ``values``, without repeats."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return []
    # Values of the data, not points between them: a yes/no feature cuts at 0 and 1.
    quantiles = np.quantile(values, np.arange(1, bins) / bins, method="inverted_cdf")
    return [float(q) for q in np.unique(quantiles)]


def bin_of(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Each value's bin: how many cut points are at or below it (nulls: -1)."""
    values = np.asarray(values, dtype=float)
    bins = np.searchsorted(np.asarray(edges, dtype=float), values, side="right")
    return np.where(np.isfinite(values), bins, -1)


def bin_shares(values: np.ndarray, edges: list[float]) -> tuple[list[float], float]:
    """The share of the non-null values in each bin, and the share of nulls."""
    bins = bin_of(values, edges)
    present = bins[bins >= 0]
    counts = np.bincount(present, minlength=len(edges) + 1)
    shares = counts / max(present.size, 1)
    return [float(s) for s in shares], float((bins < 0).mean()) if bins.size else 0.0


def training_profile(
    train: pd.DataFrame,
    columns: list[str],
    importance: Mapping[str, float] | None = None,
    bins: int = DEFAULT_BINS,
) -> dict:
    """The profile of the training payments ``train`` for the features ``columns``.

    Parameters
    ----------
    train : pandas.DataFrame
        The payments the model was fitted on, one row each, with the feature columns.
    columns : list of str
        The model's features.
    importance : mapping, optional
        Each feature's importance to the model (``model.feature_importance``).
    bins : int
        Quantile bins per feature.

    Returns
    -------
    dict
        JSON-ready: ``version``, ``rows``, ``features`` (per feature ``edges``,
        ``shares``, ``null_share``) and ``importance`` (None when not given).
    """
    profile_features = {}
    for column in columns:
        values = train[column].to_numpy(dtype=float)
        edges = cut_points(values, bins)
        shares, null_share = bin_shares(values, edges)
        profile_features[column] = {"edges": edges, "shares": shares, "null_share": null_share}
    return {
        "version": PROFILE_VERSION,
        "rows": len(train),
        "features": profile_features,
        "importance": (
            None
            if importance is None
            else {str(name): float(value) for name, value in importance.items()}
        ),
    }


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """The population stability index of shares ``actual`` against ``expected``."""
    expected = np.maximum(np.asarray(expected, dtype=float), SHARE_FLOOR)
    actual = np.maximum(np.asarray(actual, dtype=float), SHARE_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def feature_psi(profile_feature: Mapping, counts: np.ndarray, nulls: int) -> float:
    """A day's PSI of one feature, from its payments' counts per bin and its nulls.

    The distribution compared is over the bins and the nulls together: the training
    shares scaled by the non-null share, and the nulls' share beside them.
    """
    counts = np.asarray(counts, dtype=float)
    total = counts.sum() + nulls
    if total == 0:
        return math.nan
    null_share = float(profile_feature["null_share"])
    expected = np.append(np.asarray(profile_feature["shares"]) * (1 - null_share), null_share)
    actual = np.append(counts, nulls) / total
    return psi(expected, actual)


def important_features(profile: Mapping, top: int) -> list[str]:
    """The ``top`` features by the model's importance; all of them when it has none."""
    names = list(profile["features"])
    importance = profile.get("importance")
    if not importance:
        return names
    ranked = sorted(names, key=lambda name: (-float(importance.get(name, 0.0)), name))
    return ranked[:top]
