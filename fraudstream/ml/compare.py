"""Champion against shadow challenger on live traffic, once the labels have arrived.

When the registry alias ``challenger`` exists, the scoring job scores every payment with
it too and writes its score to the scored view (``challenger_score``,
``challenger_version``); it never raises an alert. :func:`compare` weighs both models
on the same payments, those of the ``days`` whole UTC days that end ``delay_days``
before ``as_of``: labels take about that long to arrive, so a younger day would count
frauds not yet reported as genuine, and is left out as immature. The truth is what was
known at ``as_of``: a payment is fraud if a fraud label of it was reported by then (a
later "genuine" verdict does not undo it, as in training).

For each model: average precision, Card Precision@k per day (the functions of
:mod:`fraudstream.ml.evaluate`, as training reports them) and the decisions a day by
tier. The champion's decisions are the view's ``decision`` column (what the job did,
fraud-ops rules included); the challenger's are its scores banded by its own
thresholds, as the job would have decided with it alone.

**The rule:** the challenger wins when its CP@k is higher than the champion's and its
average precision is not lower. CP@k is what the investigators' day is made of; AP
guards the rest of the ranking.

:func:`compare` is pure pandas and numpy: the caller reads the view and the labels, and
gives the challenger's thresholds. :func:`live_comparison` does that for an output root
and the registry, for ``fraudstream model compare`` and the dashboard's models page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from fraudstream.errors import FraudstreamError
from fraudstream.ml import evaluate
from fraudstream.schemas import DECISIONS

DEFAULT_DAYS = 7
DEFAULT_DELAY_DAYS = 7


class CompareError(FraudstreamError):
    """The comparison cannot be made; the message says why in one sentence."""


@dataclass(frozen=True)
class ModelMetrics:
    """One model's results on the compared payments."""

    version: str
    average_precision: float
    card_precision: float
    #: Card Precision@k of each day compared (indexed by day).
    card_precision_per_day: pd.Series
    #: Payments a day in each tier (``approve``, ``review``, ``decline``), averaged
    #: over the days compared.
    decisions_per_day: dict[str, float]


@dataclass(frozen=True)
class Comparison:
    """Champion against challenger on the same payments, and the verdict."""

    champion: ModelMetrics
    challenger: ModelMetrics
    #: The UTC days compared, and those left out because their labels have not matured.
    days: list[date]
    immature_days: list[date]
    as_of: pd.Timestamp
    delay_days: int
    k: int
    payments: int
    frauds: int

    @property
    def challenger_wins(self) -> bool:
        """Higher CP@k and an average precision not lower than the champion's."""
        return (
            self.challenger.card_precision > self.champion.card_precision
            and self.challenger.average_precision >= self.champion.average_precision
        )

    @property
    def winner(self) -> str:
        """``challenger`` or ``champion``."""
        return "challenger" if self.challenger_wins else "champion"

    @property
    def reason(self) -> str:
        """The verdict in one sentence, with the numbers it rests on."""
        ch, cp = self.challenger, self.champion
        k = self.k
        numbers = (
            f"CP@{k} {ch.card_precision:.4f} vs {cp.card_precision:.4f}, "
            f"AP {ch.average_precision:.4f} vs {cp.average_precision:.4f}"
        )
        if self.challenger_wins:
            return (
                f"challenger version {ch.version} wins over champion version {cp.version} "
                f"({numbers})"
            )
        why = (
            f"its CP@{k} is not higher"
            if ch.card_precision <= cp.card_precision
            else "its average precision is lower"
        )
        return f"challenger version {ch.version} does not win: {why} ({numbers})"


def _times(column) -> pd.Series:
    """Event times as UTC timestamps, from Arrow's timestamps or from ms since the epoch."""
    if pd.api.types.is_numeric_dtype(column):
        return pd.to_datetime(column, unit="ms", utc=True)
    return pd.to_datetime(column, utc=True)


def _first_and_last(start: pd.Timestamp, end: pd.Timestamp) -> tuple[date, date]:
    """The first and the last day of the days ``[start, end)``."""
    return start.date(), (end - pd.Timedelta(days=1)).date()


def challenger_rows(
    scored: pd.DataFrame,
    as_of=None,
    days: int = DEFAULT_DAYS,
    delay_days: int = DEFAULT_DELAY_DAYS,
) -> tuple[pd.DataFrame, list[date], pd.Timestamp]:
    """The payments both models scored on the matured days, the immature days, and as_of.

    Parameters
    ----------
    scored : pandas.DataFrame
        The scored view (``views.read_view(OUT, views.SCORED)``).
    as_of : time, optional
        When the comparison is made; default: the newest ``event_time`` of the view.
    days, delay_days : int
        The window's days, and the label delay: the window ends ``delay_days`` whole
        days before ``as_of``'s day.

    Returns
    -------
    (pandas.DataFrame, list of date, pandas.Timestamp)
        The rows with a challenger score in the window (a ``day`` column added), the days
        with challenger scores left out as immature, and ``as_of``.

    Raises
    ------
    CompareError
        When no payment of the view has a challenger score, or none of the window does.
    """
    if days < 1 or delay_days < 0:
        raise CompareError(
            "The window needs at least 1 day (--days) and a label delay of at least 0 days "
            "(--delay-days)."
        )
    if scored.empty or "challenger_score" not in scored:
        raise CompareError(
            "No payment of the scored view has a challenger score: set the registry alias "
            "challenger and let the score job run."
        )
    times = _times(scored["event_time"])
    as_of = times.max() if as_of is None else pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    end = as_of.floor("D") - pd.Timedelta(days=delay_days)
    start = end - pd.Timedelta(days=days)
    shadowed = scored["challenger_score"].notna().to_numpy() & (times <= as_of).to_numpy()
    if not shadowed.any():
        raise CompareError(
            f"No payment of the scored view up to {as_of:%Y-%m-%d %H:%M} has a challenger "
            "score: set the registry alias challenger and let the score job run."
        )
    inside = shadowed & (times >= start).to_numpy() & (times < end).to_numpy()
    young = sorted({t.date() for t in times[shadowed & (times >= end).to_numpy()]})
    if not inside.any():
        first, last = _first_and_last(start, end)
        raise CompareError(
            f"No payment of {first}..{last} (the {days} days whose labels have matured "
            f"{delay_days} days before {as_of:%Y-%m-%d}) has a challenger score: wait for "
            "the challenger's days to mature, or lower --delay-days."
        )
    rows = scored.loc[inside].assign(day=[t.date() for t in times[inside]])
    return rows.reset_index(drop=True), young, as_of


def challenger_versions(rows: pd.DataFrame) -> pd.Series:
    """The challenger versions of ``rows`` and their payments, the most common first."""
    return rows["challenger_version"].astype(str).value_counts()


def _fraud(rows: pd.DataFrame, labels: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
    """Whether each payment had a fraud label reported by ``as_of``."""
    known = labels.loc[
        (labels["label"] == "fraud") & (_times(labels["reported_time"]) <= as_of),
        "transaction_id",
    ]
    return rows["transaction_id"].isin(set(known)).to_numpy().astype(np.int64)


def _per_day(day: pd.Series, decided) -> dict[str, float]:
    counts = pd.crosstab(day.to_numpy(), np.asarray(decided, dtype=object))
    counts = counts.reindex(columns=list(DECISIONS), fill_value=0)
    return {tier: float(counts[tier].mean()) for tier in DECISIONS}


def _metrics(version: str, rows: pd.DataFrame, y: np.ndarray, score, decided, k: int):
    score = np.asarray(score, dtype=float)
    cp, per_day = evaluate.card_precision_at_k(rows["day"], rows["card_id"], y, score, k)
    return ModelMetrics(
        version=version,
        average_precision=evaluate.average_precision(y, score),
        card_precision=cp,
        card_precision_per_day=per_day,
        decisions_per_day=_per_day(rows["day"], decided),
    )


@dataclass(frozen=True)
class _Bands:
    """A model's bands, as :func:`fraudstream.scoring.views.decisions` reads them."""

    threshold: float
    decline_threshold: float | None


def compare(
    scored: pd.DataFrame,
    labels: pd.DataFrame,
    challenger_threshold: float,
    challenger_decline_threshold: float | None = None,
    challenger_version: str | None = None,
    as_of=None,
    days: int = DEFAULT_DAYS,
    delay_days: int = DEFAULT_DELAY_DAYS,
    k: int = evaluate.DEFAULT_K,
) -> Comparison:
    """Champion against challenger on the payments both scored, on the matured days.

    Parameters
    ----------
    scored : pandas.DataFrame
        The scored view: ``transaction_id, card_id, event_time, score, decision,
        model_version, challenger_score, challenger_version``.
    labels : pandas.DataFrame
        Label events (``transaction_id, label, reported_time``): the label store.
    challenger_threshold, challenger_decline_threshold : float
        The challenger model's review and decline bands (``LoadedModel.threshold`` and
        ``decline_threshold``; None: it never declines), for its decisions.
    challenger_version : str, optional
        Compare this challenger version, on its rows only; default: the version that
        scored most payments of the window.
    as_of, days, delay_days : see :func:`challenger_rows`.
    k : int
        The investigators' cards a day, for CP@k.

    Returns
    -------
    Comparison
        Both models' metrics and the verdict: the challenger wins when its CP@k is
        higher and its average precision is not lower.

    Raises
    ------
    CompareError
        When no payment of the window has a challenger score (of ``challenger_version``,
        if given), or no fraud label of its payments was reported by ``as_of``.
    """
    from fraudstream.scoring.views import decisions

    rows, young, as_of = challenger_rows(scored, as_of, days, delay_days)
    versions = challenger_versions(rows)
    if challenger_version is None:
        challenger_version = str(versions.index[0])
    elif str(challenger_version) not in versions.index:
        raise CompareError(
            f"Challenger version {challenger_version} scored no payment of the matured days "
            f"(versions there: {', '.join(versions.index)})."
        )
    rows = rows[rows["challenger_version"].astype(str) == str(challenger_version)]
    rows = rows.reset_index(drop=True)
    y = _fraud(rows, labels, as_of)
    first, last = min(rows["day"]), max(rows["day"])
    if not y.any():
        raise CompareError(
            f"No fraud label of the payments of {first}..{last} was reported by "
            f"{as_of:%Y-%m-%d %H:%M}: there is nothing to compare on yet."
        )
    champion_versions = rows["model_version"].astype(str).value_counts().index
    bands = _Bands(challenger_threshold, challenger_decline_threshold)
    challenger_score = rows["challenger_score"].to_numpy(dtype=float)
    return Comparison(
        champion=_metrics(
            ", ".join(champion_versions), rows, y, rows["score"], rows["decision"], k
        ),
        challenger=_metrics(
            str(challenger_version),
            rows,
            y,
            challenger_score,
            decisions(challenger_score, bands),
            k,
        ),
        days=sorted(set(rows["day"])),
        immature_days=young,
        as_of=as_of,
        delay_days=delay_days,
        k=k,
        payments=len(rows),
        frauds=int(y.sum()),
    )


def live_comparison(
    out: Path | str,
    model_name: str,
    days: int = DEFAULT_DAYS,
    delay_days: int = DEFAULT_DELAY_DAYS,
) -> Comparison:
    """Champion against challenger on the scored view and label store of an output root.

    Parameters
    ----------
    out : Path or str
        The score job's output root: ``scored/`` and the label store ``labels/``.
    model_name : str
        The registered model whose challenger's thresholds band its decisions.
    days, delay_days : see :func:`challenger_rows`.

    Returns
    -------
    Comparison
        As :func:`compare` gives it. When several challenger versions scored the
        matured days, the one ``@challenger`` points at now, on its own payments.

    Raises
    ------
    CompareError
        When there is no scored view or label store, nothing to compare (as
        :func:`compare`), or several challenger versions and the alias at none of them.
    fraudstream.scoring.model.ModelLoadError
        When the challenger's version cannot be loaded from the registry.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from fraudstream import lake
    from fraudstream.ml import registry, tracking
    from fraudstream.scoring import views
    from fraudstream.scoring.model import load_model

    out = Path(out)
    if not (out / views.SCORED).is_dir():
        raise CompareError(
            f"No scored view at {out / views.SCORED}: give --out the score job's output root."
        )
    labels_folder = out / "labels"
    if not labels_folder.is_dir():
        raise CompareError(
            f"No label store at {labels_folder}: run ./spark-submit.sh labels --out {out}."
        )
    scored = views.read_view(out, views.SCORED)
    labels = lake.read_label_folder(labels_folder, ["transaction_id", "label", "reported_time"])
    rows, _, _ = challenger_rows(scored, days=days, delay_days=delay_days)
    versions = challenger_versions(rows)
    tracking.use_store()
    client = MlflowClient()
    try:
        alias = str(client.get_model_version_by_alias(model_name, registry.CHALLENGER).version)
    except MlflowException:
        alias = None
    version = str(versions.index[0])
    if len(versions) > 1:
        # Several challengers took turns: the current one, on its own payments.
        if alias is None or alias not in versions.index:
            raise CompareError(
                f"Challenger versions {', '.join(versions.index)} scored the matured days and "
                f"@{registry.CHALLENGER} of {model_name} points at none of them."
            )
        version = alias
    challenger = load_model(f"models:/{model_name}/{version}")
    return compare(
        scored,
        labels.to_pandas(),
        challenger.threshold,
        challenger.decline_threshold,
        challenger_version=version,
        days=days,
        delay_days=delay_days,
    )


def report(result: Comparison) -> str:
    """The comparison as a table of the two models and the verdict, for the terminal."""
    days = result.days
    lines = [
        f"Compared on {result.payments:,} payments of {len(days)} days "
        f"({days[0]}..{days[-1]}), {result.frauds:,} of them fraud as of "
        f"{result.as_of:%Y-%m-%d %H:%M} UTC.",
    ]
    if result.immature_days:
        young = result.immature_days
        span = str(young[0]) if len(young) == 1 else f"{young[0]}..{young[-1]}"
        lines.append(
            f"Left out as immature (labels take {result.delay_days} days): {span} "
            f"({len(young)} day{'s' if len(young) > 1 else ''})."
        )
    header = ["model", "version", "AP", f"CP@{result.k}", *(f"{t}/day" for t in DECISIONS)]
    table = [header]
    for name, metrics in (("champion", result.champion), ("challenger", result.challenger)):
        table.append(
            [
                name,
                metrics.version,
                f"{metrics.average_precision:.4f}",
                f"{metrics.card_precision:.4f}",
                *(f"{metrics.decisions_per_day[t]:,.1f}" for t in DECISIONS),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines.append("")
    for row in table:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    lines.append(f"Verdict: {result.reason}.")
    return "\n".join(lines)
