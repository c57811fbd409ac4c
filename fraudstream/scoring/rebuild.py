"""Rebuild the views by replaying payments from the oldest offset, and compare them.

The ``rebuild`` job runs the scoring job's own code over ``payments`` from its oldest
offset into a new output root, with the model version that scored the live views, then
compares each view with the live one key by key (:mod:`.verify`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from fraudstream.errors import FraudstreamError
from fraudstream.scoring import query, verify

_LOG = logging.getLogger(__name__)

AS_LIVE = "as-live"


@dataclass(frozen=True)
class RebuildConfig:
    """The replay's scoring settings, the live views' root, and the views to compare."""

    score: query.ScoreConfig
    live: Path | str
    views: tuple[str, ...]


class RebuildError(FraudstreamError):
    """The rebuild cannot run as asked; the message is one sentence for the user."""


def resolve_model(
    live: Path, model: str, threshold: float | None, log=_LOG.info
) -> tuple[str, float | None]:
    """The model URI and threshold that scored the live views (``as-live``), or the given one."""
    if model != AS_LIVE:
        return model, threshold
    used = verify.live_models(live)
    if not used:
        raise RebuildError(
            f"{live} holds no scored payments to rebuild and compare: give --live the "
            "output root of a scoring run (its --out)."
        )
    name, version, live_threshold = used[-1] if len(used) == 1 else max(used, key=_version)
    if len(used) > 1:
        log(
            f"rebuild: the live views were scored by {len(used)} model versions; rebuilding "
            f"with the newest ({name} v{version}); rows of the others are left out of the "
            "comparison."
        )
    return f"models:/{name}/{version}", live_threshold if threshold is None else threshold


def resolve_challenger(live: Path | str, log=_LOG.info) -> str | None:
    """The shadow challenger that scored the live views (its newest version), or None.

    The replay scores in shadow with it, so that the challenger's scores are rebuilt too;
    rows a different challenger scored live are not compared on it (``verify``).
    """
    shadow = verify.live_challengers(live)
    used = verify.live_models(live)
    if not shadow or not used:
        return None
    name = used[-1][0]
    if len(shadow) > 1:
        log(
            f"rebuild: the live views had {len(shadow)} challenger versions; replaying the "
            f"newest ({name} v{shadow[-1]}) in shadow"
        )
    return f"models:/{name}/{shadow[-1]}"


def _version(used: tuple[str, str, float]) -> int:
    return int(used[1]) if str(used[1]).isdigit() else -1


def run(spark, cfg: RebuildConfig, log=_LOG.info, model=None) -> list[verify.ViewDiff]:
    """Replay into ``cfg.score.out``, then compare each view of ``cfg.views`` with the live one."""
    started = time.time()
    # The payments are decided by the rules the live job applied, as its rules log says.
    score = cfg.score if cfg.score.rules_of is not None else replace(cfg.score, rules_of=cfg.live)
    query.run(spark, score, log=log, model=model)
    log(f"rebuild: replay done in {time.time() - started:.1f} s; comparing with {cfg.live}")
    return [
        verify.compare_view(cfg.live, cfg.score.out, view, cfg.score.payments_topic)
        for view in cfg.views
    ]
