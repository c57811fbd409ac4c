"""The MLflow model registry: register a version, gate the ``champion`` alias, export it.

Models are addressed by alias (``models:/fraudstream@champion``), never by stage or a
hard-coded version. The alias moves only through :func:`promote_if_better`: a candidate
becomes champion when there is none yet, or when its average precision beats the
champion's on the same evaluation window (both scored on payments neither was trained
on, as far as the candidate's training knows).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fraudstream import config
from fraudstream.scoring.model import CHALLENGER_ALIAS

MODEL_NAME = "fraudstream"
CHAMPION = "champion"
#: The shadow challenger: the score job scores with it too, and it never raises an alert;
#: ``fraudstream model promote --live`` moves ``champion`` to it if it wins on live traffic.
CHALLENGER = CHALLENGER_ALIAS


@dataclass(frozen=True)
class Decision:
    """What the promotion gate decided, and why, in one sentence."""

    promoted: bool
    candidate_version: str
    champion_version: str | None
    candidate_score: float
    champion_score: float | None
    reason: str


def champion_version(client: MlflowClient, name: str = MODEL_NAME) -> str | None:
    """The version the ``champion`` alias points at, or None if there is none."""
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def promote_if_better(
    client: MlflowClient,
    candidate_version: str,
    candidate_score: float,
    champion_score: float | None,
    name: str = MODEL_NAME,
    metric: str = "average_precision",
) -> Decision:
    """Move ``champion`` to the candidate if there is no champion or the candidate is better.

    Parameters
    ----------
    candidate_score, champion_score : float
        Both models' ``metric`` on the same evaluation window; ``champion_score`` None
        when there is no champion, or it could not be scored on that window.
    """
    current = champion_version(client, name)
    if current is None:
        client.set_registered_model_alias(name, CHAMPION, candidate_version)
        return Decision(
            True,
            candidate_version,
            None,
            candidate_score,
            None,
            f"version {candidate_version} is the first champion",
        )
    if current == candidate_version:
        return Decision(
            False,
            candidate_version,
            current,
            candidate_score,
            champion_score,
            f"version {candidate_version} is already the champion",
        )
    if champion_score is None:
        return Decision(
            False,
            candidate_version,
            current,
            candidate_score,
            None,
            f"champion version {current} could not be scored on the same window; the alias stays",
        )
    if candidate_score > champion_score:
        client.set_registered_model_alias(name, CHAMPION, candidate_version)
        return Decision(
            True,
            candidate_version,
            current,
            candidate_score,
            champion_score,
            f"version {candidate_version} beats champion version {current} on "
            f"{metric}: {candidate_score:.4f} > {champion_score:.4f}",
        )
    return Decision(
        False,
        candidate_version,
        current,
        candidate_score,
        champion_score,
        f"version {candidate_version} does not beat champion version {current} on "
        f"{metric}: {candidate_score:.4f} <= {champion_score:.4f}",
    )


def export_champion(name: str = MODEL_NAME, models_dir: Path | None = None) -> Path:
    """Copy the champion's model files to ``models/NAME`` for use without a tracking server."""
    import mlflow.artifacts

    target = Path(models_dir or config.PROJECT_ROOT / "models") / name
    staging = target.with_name(f".{target.name}.export")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}@{CHAMPION}", dst_path=str(staging)
    )
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target
