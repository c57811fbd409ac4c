"""Model health, day by day: alert volume, live precision once labels are in, scores, drift.

``./spark-submit.sh monitor`` reads the score job's scored view (``OUT/scored``), the
label store (``OUT/labels``) and the champion's training profile
(:mod:`fraudstream.ml.drift`), and writes under ``OUT/monitoring/``, one Parquet file
per day (``date=D/part-0.parquet``), replaced whole when the day is computed again:

- ``daily``: one row per day: payments, alerts and decisions by tier; the precision and
  recall of the day's alerts and its Card Precision@k, once the day's labels have
  matured (``mature``; an immature day's are null, never counted); the score's
  quantiles and a histogram of 20 bins over [0, 1]; the baselines the thresholds
  compare with;
- ``drift``: one row per day and model feature: PSI against the training profile,
  share of nulls there and in training, whether the feature is important;
- ``events``: the ``model-health`` events published for the day, so that a rerun
  publishes only what is new.

Spark does the counting on the executors: one aggregation by day for the volumes,
outcomes and scores, one for each day's top-k cards, one for the features' bins. The
driver gets a few hundred small rows, computes the PSI and the baselines in pandas and
checks the thresholds (:func:`health_events`).

Labels are taken as known at ``as_of`` (default: the newest payment of the view): a
payment is fraud if a fraud label of it was reported by then, as in ``model compare``.
A day is mature when it ends at least ``delay_days`` whole days before ``as_of``'s day.

Card Precision@k here is each day's own: the share of truly defrauded cards among the
day's k highest-scored cards. Unlike training's, cards detected on earlier days are not
removed, so a day's value does not depend on which days the run covers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F  # noqa: N812
from pyspark.sql import types as T  # noqa: N812

from fraudstream import config, features, storage
from fraudstream.errors import FraudstreamError
from fraudstream.ml import drift, evaluate
from fraudstream.schemas import DECISIONS

_LOG = logging.getLogger(__name__)

MONITORING = "monitoring"
DAILY = "daily"
DRIFT = "drift"
EVENTS = "events"

DEFAULT_DELAY_DAYS = 7
#: Bins of the score histogram over [0, 1].
SCORE_BINS = 20
#: The score quantiles written, by column.
SCORE_QUANTILES = {"score_p50": 0.5, "score_p90": 0.9, "score_p99": 0.99, "score_p99_9": 0.999}

#: The thresholds that publish a ``model-health`` event.
PSI_THRESHOLD = 0.25
#: How many of the model's most important features the PSI threshold watches.
IMPORTANT_FEATURES = 10
VOLUME_FACTOR = 3.0
PRECISION_FACTOR = 0.5
#: Days the volume and precision baselines take their median over.
BASELINE_DAYS = 7
#: Fewest earlier days a baseline needs.
BASELINE_MIN_DAYS = 3
#: Fewest alerts a day needs for its precision to be weighed: below, chance alone
#: halves it too often.
MIN_ALERTS_FOR_PRECISION = 20
#: Features that are a function of the calendar day alone: one day's distribution of
#: them is never the training window's (a Saturday is all weekend), so their PSI is
#: written but never alarms.
CALENDAR_FEATURES = ("is_weekend",)

EVENT_SCHEMA_VERSION = 1


class MonitorError(FraudstreamError):
    """The monitor cannot run; the message says why in one sentence."""


@dataclass(frozen=True)
class Thresholds:
    """When a day's numbers make a ``model-health`` event."""

    psi: float = PSI_THRESHOLD
    important_features: int = IMPORTANT_FEATURES
    volume_factor: float = VOLUME_FACTOR
    precision_factor: float = PRECISION_FACTOR
    baseline_days: int = BASELINE_DAYS
    min_alerts_for_precision: int = MIN_ALERTS_FOR_PRECISION


@dataclass(frozen=True)
class MonitorConfig:
    """Options of the monitor job; see ``jobs/monitor.py``."""

    out: Path | str
    model_name: str = "fraudstream"
    delay_days: int = DEFAULT_DELAY_DAYS
    k: int = evaluate.DEFAULT_K
    as_of: datetime | None = None
    bootstrap_servers: str = config.DEFAULT_BOOTSTRAP_SERVERS
    health_topic: str = config.TOPIC_MODEL_HEALTH
    publish: bool = True
    thresholds: Thresholds = field(default_factory=Thresholds)


# --- Spark: the day's numbers ---------------------------------------------------------


def _day(column: str) -> F.Column:
    """The UTC day of a timestamp column, whatever the session's time zone."""
    return F.date_from_unix_date(
        F.floor(F.unix_millis(F.col(column)) / features.DAY_MS).cast("int")
    )


def with_outcomes(scored: DataFrame, labels: DataFrame, as_of: datetime) -> DataFrame:
    """The scored payments with their ``day`` and ``is_fraud`` as known at ``as_of``.

    ``is_fraud`` is 1 when a fraud label of the payment was reported by ``as_of``.
    """
    known = (
        labels.where((F.col("label") == "fraud") & (F.col("reported_time") <= F.lit(as_of)))
        .select("transaction_id")
        .distinct()
        .withColumn("is_fraud", F.lit(1))
    )
    return (
        scored.select(
            "transaction_id",
            "card_id",
            _day("event_time").alias("day"),
            "score",
            "decision",
            "model_version",
        )
        .join(known, on="transaction_id", how="left")
        .withColumn("is_fraud", F.coalesce(F.col("is_fraud"), F.lit(0)))
        .withColumn("alerted", (F.col("decision") != "approve").cast("int"))
    )


def daily_volumes(rows: DataFrame) -> DataFrame:
    """One row per day: payments, alerts, decisions by tier, outcomes, score quantiles."""
    return rows.groupBy("day").agg(
        F.count(F.lit(1)).alias("payments"),
        F.sum("alerted").alias("alerts"),
        *(F.sum((F.col("decision") == tier).cast("int")).alias(tier) for tier in DECISIONS),
        F.sum("is_fraud").alias("frauds"),
        F.sum(F.col("alerted") * F.col("is_fraud")).alias("alerted_frauds"),
        F.percentile_approx("score", list(SCORE_QUANTILES.values()), 10_000).alias(
            "score_quantiles"
        ),
        F.mode("model_version").alias("model_version"),
    )


def daily_score_histogram(rows: DataFrame) -> DataFrame:
    """Payments by day and score bin (:data:`SCORE_BINS` bins of equal width over [0, 1])."""
    score_bin = F.least(F.floor(F.col("score") * SCORE_BINS), F.lit(SCORE_BINS - 1))
    return rows.groupBy("day", score_bin.cast("int").alias("bin")).agg(
        F.count(F.lit(1)).alias("payments")
    )


def daily_card_precision(rows: DataFrame, k: int) -> DataFrame:
    """One row per day: the share of defrauded cards among its ``k`` highest-scored cards."""
    top = Window.partitionBy("day").orderBy(F.desc("score"), F.asc("card_id"))
    return (
        rows.groupBy("day", "card_id")
        .agg(F.max("score").alias("score"), F.max("is_fraud").alias("is_fraud"))
        .withColumn("rank", F.row_number().over(top))
        .where(F.col("rank") <= k)
        .groupBy("day")
        .agg((F.sum("is_fraud") / F.lit(k)).alias("card_precision"))
    )


def _bin(column: str, edges: list[float]) -> F.Column:
    """The profile's bin of a feature's value (-1 for null), as :func:`drift.bin_of`.

    A binary search in nested ``CASE``s: about four comparisons a value instead of one
    per cut point.
    """
    value = F.col(column)

    def search(low: int, high: int) -> F.Column:
        # The bin of a value known to lie in bins low..high.
        if low == high:
            return F.lit(low)
        middle = (low + high + 1) // 2
        return F.when(value < F.lit(edges[middle - 1]), search(low, middle - 1)).otherwise(
            search(middle, high)
        )

    return F.when(value.isNull() | F.isnan(value), F.lit(-1)).otherwise(search(0, len(edges)))


def feature_bin_counts(scored: DataFrame, profile: dict) -> DataFrame:
    """One row per day: for each profiled feature, its payments per bin and its nulls.

    Column ``FEATURE`` holds an array: the counts of bins 0..n, then the nulls. One
    aggregation with a column per feature: exploding a row per payment and feature
    (46 million rows for 183 days) and counting those ran 1.4 times slower.
    """
    profiled = profile["features"]
    binned = scored.select(
        _day("event_time").alias("day"),
        *(_bin(name, spec["edges"]).alias(name) for name, spec in profiled.items()),
    )
    return binned.groupBy("day").agg(
        *(
            F.array(
                *(F.count_if(F.col(name) == i) for i in range(len(spec["edges"]) + 1)),
                F.count_if(F.col(name) == -1),
            ).alias(name)
            for name, spec in profiled.items()
        )
    )


# --- the driver: metrics, drift and thresholds ----------------------------------------


def daily_frame(
    volumes: pd.DataFrame,
    histogram: pd.DataFrame,
    card_precision: pd.DataFrame,
    as_of: datetime,
    delay_days: int,
    k: int,
    thresholds: Thresholds,
) -> pd.DataFrame:
    """The ``daily`` rows from the Spark aggregates, with maturity and baselines."""
    bins = (
        histogram.pivot_table(index="day", columns="bin", values="payments", fill_value=0)
        .reindex(columns=range(SCORE_BINS), fill_value=0)
        .astype(np.int64)
    )
    frame = volumes.merge(card_precision, on="day", how="left").sort_values("day")
    frame = frame.reset_index(drop=True)
    frame["score_histogram"] = [
        bins.loc[day].tolist() if day in bins.index else [0] * SCORE_BINS for day in frame["day"]
    ]
    last_mature = (pd.Timestamp(as_of).floor("D") - pd.Timedelta(days=delay_days + 1)).date()
    mature = frame["day"].map(lambda day: day <= last_mature).astype(bool)
    alerts = frame["alerts"].astype(float)
    precision = np.where(alerts > 0, frame["alerted_frauds"] / alerts.where(alerts > 0), np.nan)
    frauds = frame["frauds"].astype(float)
    recall = np.where(frauds > 0, frame["alerted_frauds"] / frauds.where(frauds > 0), np.nan)
    quantiles = np.vstack(frame["score_quantiles"].map(list).to_numpy()) if len(frame) else None
    out = pd.DataFrame(
        {
            "date": frame["day"],
            "payments": frame["payments"].astype(np.int64),
            "alerts": frame["alerts"].astype(np.int64),
            **{tier: frame[tier].astype(np.int64) for tier in DECISIONS},
            "mature": mature,
            "frauds_known": frame["frauds"].astype(np.int64),
            "alerted_frauds": frame["alerted_frauds"].astype(np.int64),
            "precision": np.where(mature, precision, np.nan),
            "recall": np.where(mature, recall, np.nan),
            "card_precision_at_k": np.where(mature, frame["card_precision"], np.nan),
            "k": np.int32(k),
            **{
                name: quantiles[:, i] if quantiles is not None else []
                for i, name in enumerate(SCORE_QUANTILES)
            },
            "score_histogram": frame["score_histogram"],
            "model_version": frame["model_version"].astype(str),
        }
    )
    out["alerts_median_7d"] = _baseline(out["alerts"].astype(float), thresholds.baseline_days)
    weighed = out["mature"] & (out["alerts"] >= thresholds.min_alerts_for_precision)
    out["precision_median_7d"] = np.nan
    out.loc[weighed, "precision_median_7d"] = _baseline(
        out.loc[weighed, "precision"], thresholds.baseline_days
    ).to_numpy()
    out["as_of"] = pd.Timestamp(as_of)
    return out


def _baseline(values: pd.Series, days: int) -> pd.Series:
    """The median of the ``days`` values before each one (NaN with fewer than 3)."""
    return values.shift(1).rolling(days, min_periods=BASELINE_MIN_DAYS).median()


def drift_frame(counts: pd.DataFrame, profile: dict, version: str, top: int) -> pd.DataFrame:
    """The ``drift`` rows: each day's PSI and share of nulls of each profiled feature.

    ``counts``: :func:`feature_bin_counts`' rows.
    """
    important = set(drift.important_features(profile, top))
    rows = []
    for _, day in counts.sort_values("day").iterrows():
        for name, spec in profile["features"].items():
            values = np.asarray(day[name], dtype=np.int64)
            bins, nulls = values[:-1], int(values[-1])
            total = int(values.sum())
            rows.append(
                {
                    "date": day["day"],
                    "feature": name,
                    "psi": drift.feature_psi(spec, bins, nulls),
                    "null_share": nulls / total if total else math.nan,
                    "training_null_share": float(spec["null_share"]),
                    "payments": total,
                    "important": name in important,
                    "calendar": name in CALENDAR_FEATURES,
                    "profile_version": version,
                }
            )
    return pd.DataFrame(rows)


def _event(day, kind, metric, value, threshold, model_name, version, reason) -> dict:
    key = f"{model_name}|{version}|{day}|{kind}|{metric}"
    return {
        "event_id": hashlib.sha256(key.encode()).hexdigest()[:32],
        "day": str(day),
        "kind": kind,
        "metric": metric,
        "value": float(value),
        "threshold": float(threshold),
        "model_name": model_name,
        "model_version": str(version),
        "reason": reason,
        "schema_version": EVENT_SCHEMA_VERSION,
    }


def health_events(
    daily: pd.DataFrame,
    drifted: pd.DataFrame,
    model_name: str,
    thresholds: Thresholds = Thresholds(),
) -> list[dict]:
    """The ``model-health`` events of the days' numbers, each with its one-sentence reason.

    - ``drift``: an important feature's PSI over ``thresholds.psi`` (calendar
      features never count);
    - ``alert_volume``: a day's alerts over ``volume_factor`` times the median of the
      ``baseline_days`` days before;
    - ``precision``: a mature day with at least ``min_alerts_for_precision`` alerts whose
      precision is under ``precision_factor`` times the median of the mature days before.
    """
    t = thresholds
    events = []
    if len(drifted):
        watched = drifted[drifted["important"] & ~drifted["calendar"]]
        for row in watched[watched["psi"] > t.psi].itertuples():
            events.append(
                _event(
                    row.date,
                    "drift",
                    f"psi:{row.feature}",
                    row.psi,
                    t.psi,
                    model_name,
                    row.profile_version,
                    f"On {row.date} feature {row.feature} drifted from the training data of "
                    f"{model_name} version {row.profile_version}: PSI {row.psi:.3f} > {t.psi}.",
                )
            )
    for row in daily.itertuples():
        limit = t.volume_factor * row.alerts_median_7d
        if row.alerts_median_7d > 0 and row.alerts > limit:
            events.append(
                _event(
                    row.date,
                    "alert_volume",
                    "alerts",
                    row.alerts,
                    limit,
                    model_name,
                    row.model_version,
                    f"On {row.date} {model_name} version {row.model_version} raised "
                    f"{row.alerts:,} alerts, more than {t.volume_factor:g} times the "
                    f"{t.baseline_days}-day median of {row.alerts_median_7d:g}.",
                )
            )
        limit = t.precision_factor * row.precision_median_7d
        if (
            row.mature
            and row.alerts >= t.min_alerts_for_precision
            and row.precision_median_7d > 0
            and row.precision < limit
        ):
            events.append(
                _event(
                    row.date,
                    "precision",
                    "precision",
                    row.precision,
                    limit,
                    model_name,
                    row.model_version,
                    f"On {row.date} the precision of {model_name} version "
                    f"{row.model_version}'s alerts fell to {row.precision:.3f}, under "
                    f"{t.precision_factor:g} times the median {row.precision_median_7d:.3f} "
                    f"of the {t.baseline_days} matured days before.",
                )
            )
    return sorted(events, key=lambda e: (e["day"], e["kind"], e["metric"]))


# --- reading and writing --------------------------------------------------------------

#: The scored view's columns the monitor reads.
_SCORED_FIELDS = [
    T.StructField("transaction_id", T.StringType()),
    T.StructField("card_id", T.StringType()),
    T.StructField("event_time", T.TimestampType()),
    T.StructField("score", T.DoubleType()),
    T.StructField("decision", T.StringType()),
    T.StructField("model_version", T.StringType()),
]
_LABEL_FIELDS = [
    T.StructField("transaction_id", T.StringType()),
    T.StructField("label", T.StringType()),
    T.StructField("reported_time", T.TimestampType()),
]


def read_inputs(spark: SparkSession, out, columns: list[str]) -> tuple[DataFrame, DataFrame]:
    """The scored view (with ``columns`` of features) and the label store of ``out``."""
    from fraudstream.data import label_store
    from fraudstream.scoring import viewfiles, views

    scored_paths = viewfiles.paths(out, views.SCORED)
    if not scored_paths:
        raise MonitorError(
            f"No scored view at {storage.join(out, views.SCORED)}: give --out the score "
            "job's output root."
        )
    label_paths = viewfiles.paths(out, label_store.LABELS)
    schema = T.StructType(
        [*_SCORED_FIELDS, *(T.StructField(name, T.DoubleType()) for name in columns)]
    )
    scored = spark.read.schema(schema).parquet(*(storage.hadoop_path(p) for p in scored_paths))
    label_schema = T.StructType(_LABEL_FIELDS)
    if label_paths:
        labels = spark.read.schema(label_schema).parquet(
            *(storage.hadoop_path(p) for p in label_paths)
        )
    else:
        _LOG.warning("monitor: no label store at %s: no payment counts as fraud", out)
        labels = spark.createDataFrame([], label_schema)
    return scored, labels


def champion_profile(model_name: str) -> tuple[str, dict | None]:
    """The champion's version and its training profile (None if it was logged without).

    Raises
    ------
    MonitorError
        When the registry has no champion of ``model_name``.
    """
    import mlflow.artifacts
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from fraudstream.ml import registry, tracking

    tracking.use_store()
    client = MlflowClient()
    try:
        found = client.get_model_version_by_alias(model_name, registry.CHAMPION)
    except MlflowException:
        raise MonitorError(
            f"The registry has no {model_name}@{registry.CHAMPION}: train one with "
            "./spark-submit.sh train, or give --model-name."
        ) from None
    try:
        profile = mlflow.artifacts.load_dict(f"runs:/{found.run_id}/{drift.PROFILE_ARTIFACT}")
    except (MlflowException, OSError):
        profile = None
    return str(found.version), profile


def _table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def write_days(out, dataset: str, frame: pd.DataFrame) -> int:
    """Write ``frame`` as ``OUT/monitoring/DATASET/date=D/part-0.parquet``, a file per day.

    Each file is written whole and replaces the day's earlier one (storage's atomic
    write): a rerun replaces the day's rows. The day is the folder's ``date``, as in the
    score job's views, not a column of the file. Returns the days written.
    """
    files = storage.files(out)
    days = sorted(set(frame["date"])) if len(frame) else []
    for day in days:
        rows = frame[frame["date"] == day].drop(columns=["date"])
        files.write(
            f"{MONITORING}/{dataset}/date={day}/part-0.parquet",
            functools.partial(pq.write_table, _table(rows), compression="zstd"),
        )
    return len(days)


def written_days(out, dataset: str = DAILY) -> list[date]:
    """The days of ``OUT/monitoring/DATASET`` that have a file, oldest first."""
    files = storage.files(out)
    days = []
    for name in files.list(f"{MONITORING}/{dataset}"):
        key, _, value = name.partition("=")
        if key == "date" and files.exists(f"{MONITORING}/{dataset}/{name}/part-0.parquet"):
            days.append(date.fromisoformat(value))
    return sorted(days)


@dataclass(frozen=True)
class MonitoringDays:
    """What the monitor wrote for some days, as pandas frames with a ``date`` column.

    ``daily``: one row a day, oldest first; ``drift``: one row a day and feature;
    ``events``: the ``model-health`` events published for those days. A frame is empty
    (no columns) when nothing of its kind was written.
    """

    daily: pd.DataFrame
    drift: pd.DataFrame
    events: pd.DataFrame


def _read_small(path) -> pa.Table:
    # One thread: for a file of a few rows, starting pyarrow's pool costs more than it saves.
    with pq.ParquetFile(path) as parquet:
        return parquet.read(use_threads=False)


def _read_dataset(files, dataset: str, days: list[date]) -> pd.DataFrame:
    tables = []
    for day in days:
        rel = f"{MONITORING}/{dataset}/date={day}/part-0.parquet"
        if files.exists(rel):
            table = files.read(rel, _read_small)
            tables.append(table.append_column("date", pa.array([day] * table.num_rows)))
    if not tables:
        return pd.DataFrame()
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    return frame[["date", *(c for c in frame.columns if c != "date")]]


def read_days(out, days: int) -> MonitoringDays:
    """The newest ``days`` days the monitor wrote under ``OUT/monitoring``, without Spark.

    The days are those of ``daily``; ``drift`` and ``events`` are read for the same days.
    One small file per day and dataset, read with pyarrow through :mod:`fraudstream.storage`
    (a local folder or any Hadoop file system).

    Parameters
    ----------
    out : str or Path
        The score job's output root, as given to the monitor's ``--out``.
    days : int
        How many of the newest written days to read.

    Returns
    -------
    MonitoringDays
        Empty frames when the monitor has not run on ``out``.
    """
    files = storage.files(out)
    newest = written_days(files)[-days:] if days > 0 else []
    return MonitoringDays(
        daily=_read_dataset(files, DAILY, newest),
        drift=_read_dataset(files, DRIFT, newest),
        events=_read_dataset(files, EVENTS, newest),
    )


def drifting_features(drifted: pd.DataFrame, top: int) -> list[str]:
    """The ``top`` watched features (important, not calendar) by highest PSI in ``drifted``."""
    if not len(drifted):
        return []
    watched = drifted[drifted["important"] & ~drifted["calendar"]]
    highest = watched.groupby("feature")["psi"].max().fillna(0.0)
    ranked = sorted(highest.index, key=lambda name: (-highest[name], name))
    return ranked[:top]


def published_events(out) -> pd.DataFrame:
    """The events the monitor published before (``OUT/monitoring/events``)."""
    files = storage.files(out)
    found = files.find(f"{MONITORING}/{EVENTS}", ".parquet")
    if not found:
        return pd.DataFrame(columns=["event_id", "date"])
    tables = [files.read(f"{MONITORING}/{EVENTS}/{rel}", pq.read_table) for rel in found]
    events = pa.concat_tables(tables, promote_options="default").to_pandas()
    return events.assign(date=events["day"])


def publish(bootstrap_servers: str, topic: str, events: list[dict]) -> None:
    """Send ``events`` to ``topic`` as JSON (key: the model's name) and wait for the acks."""
    from fraudstream.kafka import clients

    producer = clients.producer(bootstrap_servers)
    try:
        sent = [
            producer.send(
                topic,
                key=event["model_name"].encode(),
                value=json.dumps(event, sort_keys=True).encode(),
            )
            for event in events
        ]
        producer.flush()
        for future in sent:
            future.get(timeout=30)
    finally:
        producer.close()


# --- the job --------------------------------------------------------------------------


def run(
    spark: SparkSession,
    cfg: MonitorConfig,
    log=_LOG.info,
    champion: tuple[str, dict | None] | None = None,
) -> dict:
    """Compute, write and check the monitoring of every day of the scored view.

    ``champion``: the model's version and training profile, for a model that is not the
    registry's champion (a notebook's stand-in); by default the registry's champion's.

    Returns
    -------
    dict
        ``daily`` and ``drift`` (pandas frames as written), ``events`` (all the days'
        crossings) and ``published`` (those sent now), ``model_version``.
    """
    version, profile = champion or champion_profile(cfg.model_name)
    columns = list(profile["features"]) if profile else []
    if profile is None:
        log(
            f"monitor: champion version {version} of {cfg.model_name} has no training "
            "profile (registered before profiles were logged): no drift; retrain to get it"
        )
    scored, labels = read_inputs(spark, cfg.out, columns)
    as_of = cfg.as_of
    if as_of is None:
        newest = scored.agg(F.max("event_time")).first()
        as_of = newest[0] if newest else None
        if as_of is None:
            raise MonitorError(f"The scored view of {cfg.out} holds no payment yet.")
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    rows = with_outcomes(scored, labels, as_of.to_pydatetime()).cache()
    try:
        volumes = daily_volumes(rows).toPandas()
        histogram = daily_score_histogram(rows).toPandas()
        card_precision = daily_card_precision(rows, cfg.k).toPandas()
    finally:
        rows.unpersist()
    daily = daily_frame(
        volumes, histogram, card_precision, as_of, cfg.delay_days, cfg.k, cfg.thresholds
    )
    drifted = pd.DataFrame()
    if profile is not None:
        counts = feature_bin_counts(scored, profile).toPandas()
        drifted = drift_frame(counts, profile, version, cfg.thresholds.important_features)
    events = health_events(daily, drifted, cfg.model_name, cfg.thresholds)
    write_days(cfg.out, DAILY, daily)
    if len(drifted):
        write_days(cfg.out, DRIFT, drifted)
    before = published_events(cfg.out)
    fresh = [e for e in events if e["event_id"] not in set(before["event_id"])]
    for event in events:
        log(f"monitor: {event['kind']}: {event['reason']}")
    if fresh and cfg.publish:
        publish(cfg.bootstrap_servers, cfg.health_topic, fresh)
        log(f"monitor: published {len(fresh)} new model-health event(s) to {cfg.health_topic}")
        sent = pd.DataFrame(fresh).assign(
            date=lambda f: f["day"], published_time=pd.Timestamp(datetime.now(UTC))
        )
        # Each recorded event has its own published_time; an empty frame is left out of
        # the concatenation, whose columns' types it would only blur.
        recorded = sent if before.empty else pd.concat([before, sent], ignore_index=True)
        touched = {e["day"] for e in fresh}
        write_days(cfg.out, EVENTS, recorded[recorded["date"].isin(touched)])
    return {
        "daily": daily,
        "drift": drifted,
        "events": events,
        "published": fresh if cfg.publish else [],
        "model_version": version,
        "as_of": as_of,
    }


def summary(cfg: MonitorConfig, result: dict, seconds: float) -> str:
    """The job's report: days written, immature days, events."""
    daily = result["daily"]
    mature = int(daily["mature"].sum()) if len(daily) else 0
    first, last = (daily["date"].min(), daily["date"].max()) if len(daily) else ("-", "-")
    lines = [
        f"monitor: {len(daily)} days ({first}..{last}) of {cfg.out} written to "
        f"{storage.join(cfg.out, MONITORING)} in {seconds:.1f} s; {mature} mature, "
        f"{len(daily) - mature} immature (labels as of {result['as_of']:%Y-%m-%d %H:%M} UTC, "
        f"delay {cfg.delay_days} days).",
        f"  {len(result['events'])} threshold crossing(s); "
        f"{len(result['published'])} new event(s) published to {cfg.health_topic}"
        + ("" if cfg.publish else " (publishing off)"),
    ]
    return "\n".join(lines)
