"""The monitor (``fraudstream.ml.monitor``, ``jobs/monitor.py``) and the drift it measures
(``fraudstream.ml.drift``): hand-computed PSI and profiles, the thresholds on small frames,
each day's metrics against evaluate's, and simulated history with and without a shift."""

from __future__ import annotations

import json
import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from fraudstream import config, features
from fraudstream.data import label_store, simulate
from fraudstream.ml import drift, evaluate, monitor, training
from fraudstream.scoring import views
from jobs import monitor as monitor_job
from jobs import score as score_job
from jobs import train as train_job

from .helpers import (
    SHADOW_FIRST_DAY,
    fit,
    publish_sample,
    read_topic,
    register,
    score_config,
    synthetic_view,
    write_monitoring,
    write_scored_history,
)

# --- drift: profile and PSI -----------------------------------------------------------


def test_training_profile_quantile_bins_and_null_share():
    values = np.append(np.arange(1.0, 11.0), [np.nan, np.nan])
    train = pd.DataFrame({"amount": values, "is_night": np.append(np.tile([0.0, 1.0], 5), [0, 0])})
    profile = drift.training_profile(train, ["amount", "is_night"], {"amount": 0.7}, bins=5)
    amount = profile["features"]["amount"]
    assert amount["edges"] == [2.0, 4.0, 6.0, 8.0]
    assert amount["shares"] == pytest.approx([0.1, 0.2, 0.2, 0.2, 0.3])
    assert amount["null_share"] == pytest.approx(2 / 12)
    # A yes/no feature: its quantiles repeat, so it cuts at 0 and 1 only.
    night = profile["features"]["is_night"]
    assert night["edges"] == [0.0, 1.0]
    assert night["shares"] == pytest.approx([0.0, 7 / 12, 5 / 12])
    assert profile["rows"] == 12 and profile["importance"] == {"amount": 0.7}
    json.dumps(profile)


def test_feature_psi_hand_computed():
    spec = {"edges": [5.0], "shares": [0.5, 0.5], "null_share": 0.0}
    expected = 0.2 * math.log(0.3 / 0.5) * -1 + 0.2 * math.log(0.7 / 0.5)
    assert drift.feature_psi(spec, np.array([30, 70]), 0) == pytest.approx(expected)
    assert drift.feature_psi(spec, np.array([50, 50]), 0) == pytest.approx(0.0, abs=1e-12)
    # A feature that stops arriving drifts: its nulls are a bin of their own.
    assert drift.feature_psi(spec, np.array([0, 0]), 100) > 1.0


def test_important_features_by_importance_else_all():
    profile = {"features": {"a": {}, "b": {}, "c": {}}, "importance": {"a": 0.1, "b": 0.6}}
    assert drift.important_features(profile, 2) == ["b", "a"]
    assert drift.important_features({**profile, "importance": None}, 2) == ["a", "b", "c"]


# --- thresholds -----------------------------------------------------------------------


def _daily(alerts, precision, mature=None) -> pd.DataFrame:
    n = len(alerts)
    frame = pd.DataFrame(
        {
            "date": [date(2026, 11, 1) + timedelta(days=i) for i in range(n)],
            "alerts": alerts,
            "precision": precision,
            "mature": [True] * n if mature is None else mature,
            "model_version": "3",
        }
    )
    frame["alerts_median_7d"] = monitor._baseline(frame["alerts"].astype(float), 7)
    frame["precision_median_7d"] = monitor._baseline(frame["precision"], 7)
    return frame


def test_health_events_volume_three_times_the_median():
    daily = _daily([50, 52, 48, 50, 151, 149], [0.5] * 6)
    events = monitor.health_events(daily, pd.DataFrame(), "fraudstream")
    assert [(e["day"], e["kind"], e["value"], e["threshold"]) for e in events] == [
        ("2026-11-05", "alert_volume", 151.0, 150.0)
    ]
    assert events[0]["model_version"] == "3"
    assert events[0]["reason"].startswith("On 2026-11-05 fraudstream version 3 raised 151 alerts")


def test_health_events_precision_halved_on_mature_days_only():
    precision = [0.6, 0.6, 0.6, 0.29, 0.31, 0.1]
    daily = _daily([40] * 6, precision, mature=[True] * 5 + [False])
    events = monitor.health_events(daily, pd.DataFrame(), "fraudstream")
    assert [(e["day"], e["kind"], e["value"]) for e in events] == [
        ("2026-11-04", "precision", 0.29)
    ]
    # Too few alerts to weigh: no event.
    few = _daily([10] * 6, precision, mature=[True] * 5 + [False])
    assert monitor.health_events(few, pd.DataFrame(), "fraudstream") == []


def test_health_events_drift_on_important_features_not_calendar_ones():
    drifted = pd.DataFrame(
        {
            "date": [date(2026, 11, 1)] * 4,
            "feature": ["amount", "is_weekend", "km_from_usual", "card_tx_count_1d"],
            "psi": [0.4, 7.5, 0.5, 0.2],
            "important": [True, True, False, True],
            "calendar": [False, True, False, False],
            "profile_version": "3",
        }
    )
    events = monitor.health_events(_daily([], []), drifted, "fraudstream")
    assert [(e["kind"], e["metric"], e["value"]) for e in events] == [("drift", "psi:amount", 0.4)]
    assert events[0]["reason"] == (
        "On 2026-11-01 feature amount drifted from the training data of fraudstream "
        "version 3: PSI 0.400 > 0.25."
    )


# --- reading back what the monitor wrote ---------------------------------------------


def test_read_days_reads_the_newest_days_of_each_dataset(tmp_path):
    assert monitor.read_days(tmp_path, 30).daily.empty
    written = write_monitoring(tmp_path)
    days = written["daily"]["date"].tolist()
    assert (
        monitor.written_days(tmp_path)
        == days
        == [SHADOW_FIRST_DAY + timedelta(days=i) for i in range(10)]
    )

    newest = monitor.read_days(tmp_path, 3)
    assert newest.daily["date"].tolist() == days[-3:]
    assert newest.daily[["alerts", "mature"]].to_dict("list") == {
        "alerts": [41, 40, 39],
        "mature": [True, False, False],
    }
    assert newest.daily["precision"].tolist()[0] == pytest.approx(5 / 41)
    assert newest.daily["precision"].isna().tolist() == [False, True, True]
    assert newest.drift[newest.drift["feature"] == "amount"][["date", "psi"]].to_dict("list") == {
        "date": days[-3:],
        "psi": [0.01, 0.6, 0.8],
    }
    assert newest.events[["date", "kind", "metric"]].values.tolist() == [
        [days[-3], "precision", "precision"],
        [days[-2], "drift", "psi:amount"],
        [days[-1], "drift", "psi:amount"],
    ]
    # The calendar feature never counts: amount is the one that drifted most.
    assert monitor.drifting_features(newest.drift, 5) == ["amount", "card_tx_count_1d"]
    assert monitor.drifting_features(newest.drift, 1) == ["amount"]
    every = monitor.read_days(tmp_path, 366)
    assert len(every.daily) == 10 and len(every.drift) == 30
    assert every.events["kind"].tolist() == ["alert_volume", "precision", "drift", "drift"]


# --- each day's metrics, on Spark -----------------------------------------------------


def test_daily_metrics_equal_evaluate_per_day_and_immature_days_marked(spark):
    scored, labels = synthetic_view(per_day=300)
    as_of = scored["event_time"].max()
    rows = monitor.with_outcomes(
        spark.createDataFrame(
            scored[["transaction_id", "card_id", "event_time", "score"]].assign(
                decision=scored["decision"], model_version="1"
            )
        ),
        spark.createDataFrame(labels[["transaction_id", "label", "reported_time"]]),
        as_of.to_pydatetime(),
    )
    daily = monitor.daily_frame(
        monitor.daily_volumes(rows).toPandas(),
        monitor.daily_score_histogram(rows).toPandas(),
        monitor.daily_card_precision(rows, 100).toPandas(),
        as_of,
        7,
        100,
        monitor.Thresholds(),
    )
    known = labels.loc[labels["reported_time"] <= as_of, "transaction_id"]
    frame = scored.assign(
        day=scored["event_time"].dt.date, y=scored["transaction_id"].isin(known).astype(int)
    )
    # Newest payment on Nov 21: Nov 1..13 are mature, Nov 14..21 are not.
    assert daily["mature"].tolist() == [True] * 13 + [False] * 8
    for row, (day, payments) in zip(daily.itertuples(), frame.groupby("day"), strict=True):
        assert row.date == day
        alerted = payments["decision"] != "approve"
        assert row.alerts == alerted.sum()
        assert (row.review, row.decline) == (
            (payments["decision"] == "review").sum(),
            (payments["decision"] == "decline").sum(),
        )
        assert sum(row.score_histogram) == len(payments)
        if not row.mature:
            assert math.isnan(row.precision) and math.isnan(row.card_precision_at_k)
            continue
        assert row.precision == pytest.approx(payments.loc[alerted, "y"].mean())
        assert row.recall == pytest.approx(payments.loc[alerted, "y"].sum() / payments["y"].sum())
        cp, _ = evaluate.card_precision_at_k(
            payments["day"], payments["card_id"], payments["y"], payments["score"], 100
        )
        assert row.card_precision_at_k == pytest.approx(cp)


# --- simulated history: quiet when unchanged, the shift flagged -----------------------

CUSTOMERS = 2000
TRAIN_DAYS = range(30, 45)
FIRST_SCORED, DAYS = 45, 135
SHIFT_DAY = 100
START = simulate.SimulationConfig().start_date


def _history(shift_day: int | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    cfg = simulate.SimulationConfig(
        customers=CUSTOMERS,
        terminals=2 * CUSTOMERS,
        days=DAYS,
        seed=3,
        shift_day=shift_day,
        shifts=(("amounts", 2.0),) if shift_day is not None else (),
    )
    payments, labels = simulate.simulate(cfg)
    labels = labels.to_pandas()
    dataset = training.build_dataset(payments.to_pandas()[features.EVENT_COLUMNS], labels, 7)
    dataset["day_index"] = (pd.to_datetime(dataset["day"]) - pd.Timestamp(START)).dt.days
    return dataset, labels


@pytest.fixture(scope="module")
def histories():
    """Unchanged and shifted histories (equal before the shift), a model and its profile."""
    unchanged, labels = _history(None)
    shifted, shifted_labels = _history(SHIFT_DAY)
    train = unchanged[unchanged["day_index"].isin(TRAIN_DAYS)].reset_index(drop=True)
    scorer = fit(train)
    columns = features.FEATURE_COLUMNS
    importance = pd.Series(scorer.estimator.feature_importances_, index=columns)
    train_scores = scorer.predict(None, train)
    # About 50 alerts a day.
    threshold = float(np.quantile(train_scores, 1 - 50 * len(TRAIN_DAYS) / len(train)))
    return {
        "unchanged": (unchanged, labels),
        "shifted": (shifted, shifted_labels),
        "train": train,
        "scorer": scorer,
        "threshold": threshold,
        "profile": drift.training_profile(train, columns, importance),
    }


def _champion(histories, mlflow_store) -> str:
    return register(histories["train"], "fraudstream", profile=histories["profile"])


def test_monitor_quiet_on_ninety_unchanged_days(spark, histories, mlflow_store, tmp_path):
    version = _champion(histories, mlflow_store)
    dataset, labels = histories["unchanged"]
    write_scored_history(
        tmp_path, dataset, labels, histories["scorer"], histories["threshold"], FIRST_SCORED
    )
    result = monitor.run(spark, monitor.MonitorConfig(out=tmp_path, publish=False))
    daily, drifted = result["daily"], result["drift"]
    assert len(daily) == DAYS - FIRST_SCORED == 90
    assert result["events"] == []
    # The newest 8 days have not matured (a 7-day delay from the newest payment's day).
    assert daily["mature"].tolist() == [True] * 82 + [False] * 8
    assert daily.loc[daily["mature"], "precision"].notna().all()
    assert daily.loc[~daily["mature"], "precision"].isna().all()
    assert len(drifted) == 90 * len(features.FEATURE_COLUMNS)
    assert (drifted["profile_version"] == version).all()
    written = pd.read_parquet(tmp_path / "monitoring" / "daily")
    assert len(written) == 90 and written["alerts"].sum() == daily["alerts"].sum()
    assert len(pd.read_parquet(tmp_path / "monitoring" / "drift")) == len(drifted)
    # Read back as the dashboard and notebook 04 read it: the newest 30 days as written.
    newest = monitor.read_days(tmp_path, 30)
    assert newest.daily["date"].tolist() == daily["date"].tolist()[-30:]
    assert newest.daily["alerts"].tolist() == daily["alerts"].tolist()[-30:]
    assert len(newest.drift) == 30 * len(features.FEATURE_COLUMNS) and newest.events.empty


def test_monitor_flags_the_amount_shift_and_publishes_it_once(
    spark, histories, mlflow_store, tmp_path, kafka_bootstrap, fresh_topic
):
    version = _champion(histories, mlflow_store)
    dataset, labels = histories["shifted"]
    write_scored_history(
        tmp_path, dataset, labels, histories["scorer"], histories["threshold"], FIRST_SCORED
    )
    args = ["--out", str(tmp_path), "--brokers", kafka_bootstrap, "--health-topic", fresh_topic]
    assert monitor_job.main(args) == 0
    events = [json.loads(record.value) for record in read_topic(kafka_bootstrap, fresh_topic)]
    shift = START + timedelta(days=SHIFT_DAY)
    days = sorted({date.fromisoformat(event["day"]) for event in events})
    assert days and days[0] in (shift, shift + timedelta(days=1))
    drifted = [e for e in events if e["kind"] == "drift" and e["day"] == str(days[0])]
    assert drifted and {e["model_version"] for e in drifted} == {version}
    assert set(drifted[0]) == {
        "event_id",
        "day",
        "kind",
        "metric",
        "value",
        "threshold",
        "model_name",
        "model_version",
        "reason",
        "schema_version",
    }
    daily_files = sorted((tmp_path / "monitoring" / "daily").rglob("*.parquet"))
    # A rerun replaces the days' rows and publishes nothing new.
    assert monitor_job.main(args) == 0
    assert len(read_topic(kafka_bootstrap, fresh_topic)) == len(events)
    assert sorted((tmp_path / "monitoring" / "daily").rglob("*.parquet")) == daily_files
    assert len(pd.read_parquet(tmp_path / "monitoring" / "daily")) == 90


# --- the jobs in an operator's order ----------------------------------------------------


def test_train_score_label_monitor_end_to_end_smoke(
    spark, kafka_bootstrap, topics, mlflow_store, tmp_path, history
):
    """The committed sample through the jobs as an operator runs them: the train job
    registers a champion with its training profile; the score and labels jobs write the
    scored view and the label store from the topics; the monitor reads them back."""
    cfg = train_job.parse_args(
        [
            *("--data", str(config.SAMPLE_DIR), "--models", "logistic", "--folds", "1"),
            # Two 3-day folds (test and validation) fit in the sample's 21 days.
            *("--train-days", "3", "--test-days", "3", "--delay-days", "5", "--k", "5"),
            *("--param", "logistic.C=1.0", "--decline-precision", "0.2"),
            *("--models-dir", str(tmp_path / "models")),
        ]
    )
    version = training.run(cfg, log=lambda line: None)["registered_version"]
    published = publish_sample(kafka_bootstrap, topics)
    scoring = score_config(kafka_bootstrap, topics, tmp_path)
    score_job.run(spark, scoring, log=lambda line: None)
    label_store.run(
        spark,
        label_store.LabelsConfig(
            bootstrap_servers=kafka_bootstrap,
            out=scoring.out,
            checkpoint=tmp_path / "labels-checkpoint",
            labels_topic=topics["labels"],
            available_now=True,
        ),
    )

    result = monitor.run(spark, monitor.MonitorConfig(out=scoring.out, delay_days=5, publish=False))
    scored = views.read_view(scoring.out, views.SCORED)
    assert len(scored) == published
    scored["date"] = scored["event_time"].dt.date
    daily = result["daily"].set_index("date")
    assert result["model_version"] == version
    assert daily.index.tolist() == sorted(set(scored["date"]))
    per_day = scored.groupby("date").agg(payments=("score", "size"), alerts=("alerted", "sum"))
    assert daily["payments"].tolist() == per_day["payments"].tolist()
    assert daily["alerts"].tolist() == per_day["alerts"].tolist()
    # The labels came through the labels job: the matured days know the frauds reported
    # by the newest payment's time.
    labels = history["labels"]
    reported = labels.loc[labels["reported_time"] <= scored["event_time"].max(), "transaction_id"]
    known = scored[scored["transaction_id"].isin(set(reported))].groupby("date").size()
    mature = daily[daily["mature"]]
    assert len(mature) == len(daily) - 6  # the newest 6 days wait for their labels
    assert mature["frauds_known"].tolist() == known.reindex(mature.index, fill_value=0).tolist()
    assert mature["frauds_known"].sum() > 0
    assert mature.loc[mature["alerts"] > 0, "precision"].notna().all()
    # Drift against the profile the train job logged with this very version.
    drifted = result["drift"]
    assert len(drifted) == len(daily) * len(features.FEATURE_COLUMNS)
    assert (drifted["profile_version"] == version).all()
    assert drifted["psi"].notna().all()
