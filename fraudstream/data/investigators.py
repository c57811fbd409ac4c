"""The simulator's investigators: analysts' verdicts on each day's top cards, as label events.

Each UTC day the analysts investigate the ``k`` cards with the highest scores (a card's
score is its highest payment score of the day, ranked as Card Precision@k ranks them:
``fraudstream.ml.evaluate.top_k_cards``) and give a verdict on every payment of the
day of each: ``fraud`` if the simulator made it fraud, else ``genuine``. A card found
defrauded is blocked and not investigated again. Each verdict is a label event of the
contract (``source`` ``analyst``) reported a few hours after the payment and before its
day ends: the day's verdicts are known before the next day, as the feedback protocol
(``fraudstream.ml.feedback``) assumes. The chargebacks stay as they are: a fraud gets
both.

:func:`run` (the ``investigate`` job) does this on what the score job scored: the
scored view's scores, the simulator's labels as the truth, the verdicts written as a
label folder and, if asked, published to the labels topic. It needs no Spark.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from fraudstream import config, lake, schemas
from fraudstream.errors import FraudstreamError
from fraudstream.features import DAY_MS
from fraudstream.ml import evaluate

_LOG = logging.getLogger(__name__)

#: How long after a payment its verdict is reported, in hours (uniform), at the latest
#: at the end of its day.
VERDICT_DELAY_HOURS = (1.0, 6.0)
HOUR_MS = 3_600_000


def analyst_labels(
    payments: pa.Table, labels: pa.Table, score, k: int = evaluate.DEFAULT_K, seed: int = 0
) -> pa.Table:
    """The analysts' label events on the payments' top ``k`` cards of each day.

    Parameters
    ----------
    payments : pyarrow.Table
        Payment events (``transaction_id``, ``card_id``, ``event_time``).
    labels : pyarrow.Table
        The simulator's label events: a payment with a ``fraud`` label is fraud.
    score : array-like
        One score per payment, in ``payments``' order (a model's, or any risk score).
    k : int
        Cards investigated a day.
    seed : int
        Seed of the reporting delays.

    Returns
    -------
    pyarrow.Table
        Label events in ``schemas.LABEL_ARROW_SCHEMA``, ``source`` ``analyst``, one per
        payment of each investigated card's day, the fraud scenario on frauds; sorted by
        ``reported_time``.
    """
    fraud = labels.filter(pc.equal(labels["label"], "fraud"))
    scenario = dict(
        zip(
            fraud["transaction_id"].to_pylist(),
            fraud["scenario"].to_pylist(),
            strict=True,
        )
    )
    frame = pd.DataFrame(
        {
            "transaction_id": payments["transaction_id"].to_numpy(),
            "card_id": payments["card_id"].to_numpy(),
            "event_ms": payments["event_time"].cast(pa.int64()).to_numpy(),
            "score": np.asarray(score, dtype=float),
        }
    )
    frame["y"] = frame["transaction_id"].isin(scenario.keys()).astype(np.int64)
    frame["day"] = frame["event_ms"] // DAY_MS
    investigated: list[pd.DataFrame] = []
    blocked: set = set()
    for _, day in frame.groupby("day", sort=True):
        top = evaluate.top_k_cards(day["card_id"], day["y"], day["score"], k, blocked)
        blocked.update(top.loc[top["y"] > 0, "card"])
        investigated.append(day.loc[day["card_id"].isin(top["card"])])
    chosen = pd.concat(investigated) if investigated else frame.iloc[:0]
    delay_ms = np.random.default_rng(seed).uniform(*VERDICT_DELAY_HOURS, len(chosen)) * HOUR_MS
    end_of_day = (chosen["day"].to_numpy() + 1) * DAY_MS - 1
    reported = np.minimum(chosen["event_ms"].to_numpy() + delay_ms.astype(np.int64), end_of_day)
    is_fraud = chosen["y"].to_numpy() == 1
    table = pa.table(
        {
            "transaction_id": pa.array(chosen["transaction_id"], pa.string()),
            "card_id": pa.array(chosen["card_id"], pa.string()),
            "label": pa.array(np.where(is_fraud, "fraud", "genuine"), pa.string()),
            "source": pa.array(np.full(len(chosen), "analyst", dtype=object), pa.string()),
            "reported_time": pa.array(reported, pa.timestamp("ms", tz="UTC")),
            "scenario": pa.array([scenario.get(t) for t in chosen["transaction_id"]], pa.string()),
            "schema_version": pa.array(
                np.full(len(chosen), schemas.SCHEMA_VERSION, dtype=np.int32), pa.int32()
            ),
        },
        schema=schemas.LABEL_ARROW_SCHEMA,
    )
    return table.sort_by([("reported_time", "ascending")])


# --- the investigate job -----------------------------------------------------------------


class InvestigateError(FraudstreamError):
    """The investigators cannot run; the message says why in one sentence."""


@dataclass(frozen=True)
class InvestigateConfig:
    """What the investigate job reads, how many cards a day it investigates, where it writes.

    ``out``: the score job's output root (its ``scored`` view); ``data``: the folder the
    scored payments came from, written by the generate job (``labels/``, the truth, and
    ``events/``); ``verdicts``: the folder whose ``labels/`` the verdicts replace.
    ``publish``: also send them to ``labels_topic`` on ``bootstrap_servers``.
    ``since``: keep only the verdicts of the payments of this UTC day and later (the
    earlier days are still investigated, for the cards they block), so that a daily run
    publishes each day's verdicts once; None keeps them all.
    """

    out: Path
    data: Path
    verdicts: Path
    k: int = evaluate.DEFAULT_K
    seed: int = 0
    publish: bool = False
    bootstrap_servers: str = config.DEFAULT_BOOTSTRAP_SERVERS
    labels_topic: str = config.TOPIC_LABELS
    since: date | None = None


#: The scored view's columns the investigators read: a payment, its card and its score.
SCORE_COLUMNS = ["transaction_id", "card_id", "event_time", "score"]
_MS = pa.timestamp("ms", tz="UTC")


def read_scores(out: Path) -> pa.Table:
    """The scored view of ``out``: each payment's id, card, event time (ms, UTC) and score.

    File by file, so that files written by Spark (times in micro- or nanoseconds) and by
    the driver's writer (milliseconds) read alike. Sorted by event time.

    Raises
    ------
    InvestigateError
        When ``out`` has no scored view, or the view holds no payment.
    """
    from fraudstream.scoring import viewfiles, views

    folder = Path(out) / views.SCORED
    if not folder.is_dir():
        raise InvestigateError(
            f"No scored view at {folder}: give --out the score job's output root."
        )
    tables = []
    for path in viewfiles.paths(out, views.SCORED):
        table = pq.read_table(path, columns=SCORE_COLUMNS)
        tables.append(table.set_column(2, "event_time", table["event_time"].cast(_MS)))
    scored = pa.concat_tables(tables) if tables else None
    if scored is None or scored.num_rows == 0:
        raise InvestigateError(
            f"The scored view at {folder} holds no payment yet: run the score job first."
        )
    return scored.sort_by([("event_time", "ascending"), ("transaction_id", "ascending")])


def _read_truth(data: Path, scored: pa.Table) -> pa.Table:
    """The simulator's label events of ``data``, once the scored payments are known to be its."""
    labels_folder = Path(data) / lake.LABELS
    if not labels_folder.is_dir():
        raise InvestigateError(
            f"No label events at {labels_folder}: give --data the folder written by "
            "./spark-submit.sh generate whose payments the score job scored."
        )
    events_folder = Path(data) / lake.EVENTS
    if events_folder.is_dir():
        known = ds.dataset(events_folder, format="parquet", partitioning="hive").to_table(
            columns=["transaction_id"]
        )
        unknown = pc.sum(
            pc.invert(pc.is_in(scored["transaction_id"], known["transaction_id"]))
        ).as_py()
        if unknown:
            raise InvestigateError(
                f"{unknown:,} of the {scored.num_rows:,} scored payments are not in "
                f"{events_folder}: give --data the folder whose payments the score job scored."
            )
    return lake.read_label_folder(labels_folder)


def _check_target(cfg: InvestigateConfig) -> None:
    target = (Path(cfg.verdicts) / lake.LABELS).resolve()
    for kept in (Path(cfg.data) / lake.LABELS, Path(cfg.out) / lake.LABELS):
        if target == kept.resolve():
            raise InvestigateError(
                f"--verdicts {cfg.verdicts} would replace the label events in {kept}: give "
                "the verdicts a folder of their own."
            )


def run(cfg: InvestigateConfig) -> dict[str, int]:
    """Investigate the scored payments, write the verdicts and publish them if asked.

    Returns
    -------
    dict
        Counts for the summary: ``payments`` scored, ``days``, ``cards`` investigated
        (card-days), ``verdicts``, ``frauds`` among them, ``published``.
    """
    _check_target(cfg)
    scored = read_scores(cfg.out)
    truth = _read_truth(cfg.data, scored)
    verdicts = analyst_labels(scored, truth, scored["score"].to_numpy(), cfg.k, cfg.seed)
    # A verdict is reported on its payment's day, so its day is its payment's.
    reported_day = verdicts["reported_time"].cast(pa.int64()).to_numpy() // DAY_MS
    if cfg.since is not None:
        kept = reported_day >= (cfg.since - date(1970, 1, 1)).days
        verdicts, reported_day = verdicts.filter(pa.array(kept)), reported_day[kept]
    lake.write_labels(verdicts, Path(cfg.verdicts))
    days = np.unique(scored["event_time"].cast(pa.int64()).to_numpy() // DAY_MS)
    card_days = len(set(zip(verdicts["card_id"].to_pylist(), reported_day.tolist(), strict=True)))
    frauds = pc.sum(pc.equal(verdicts["label"], "fraud")).as_py() or 0
    counts = {
        "payments": scored.num_rows,
        "days": len(days),
        "cards": card_days,
        "verdicts": verdicts.num_rows,
        "frauds": frauds,
        "published": 0,
    }
    # Counts only: card tokens stay out of the log.
    _LOG.info(
        "%d payments over %d days; %d card-days investigated, %d verdicts, %d of them fraud",
        counts["payments"],
        counts["days"],
        counts["cards"],
        counts["verdicts"],
        counts["frauds"],
    )
    if cfg.publish:
        from fraudstream.data import produce

        counts["published"] = produce.publish(
            verdicts, cfg.labels_topic, cfg.bootstrap_servers, encode=schemas.encode_labels
        )
        _LOG.info("%d verdicts published", counts["published"])
    return counts


def summary(cfg: InvestigateConfig, counts: dict[str, int], seconds: float) -> str:
    """The investigate job's report: what was investigated, found and written."""
    line = (
        f"Investigated {counts['cards']:,} card-days (k={cfg.k}) of {counts['payments']:,} "
        f"scored payments over {counts['days']:,} days: {counts['verdicts']:,} analyst "
        f"verdicts{f' from {cfg.since}' if cfg.since else ''}, {counts['frauds']:,} of them "
        "fraud, written to "
        f"{Path(cfg.verdicts) / lake.LABELS} in {seconds:.1f} s."
    )
    if cfg.publish:
        line += f"\nPublished {counts['published']:,} label events to {cfg.labels_topic}."
    return line
