"""The scoring job end to end: a real broker, Spark's Kafka source, a real MLflow registry."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fraudstream import config, features, lake, objectstore, schemas, storage
from fraudstream.data import produce
from fraudstream.kafka import clients
from fraudstream.ml import training
from fraudstream.scoring import daytables, parse, processor, query, state, verify, viewfiles, views
from jobs import card_states as card_states_job
from jobs import rebuild as rebuild_job
from jobs import score as score_job

from .helpers import (
    assert_features_equal_training,
    job_env,
    publish_sample,
    read_topic,
    register,
    score_args,
    score_config,
    submit,
    wait_for,
)


def test_score_job_end_to_end(spark, kafka_bootstrap, topics, mlflow_store, tmp_path, history):
    version = register(history["dataset"], "fraudstream")
    published = publish_sample(kafka_bootstrap, topics)
    first = history["events"].iloc[0].to_dict()
    late = first | {"transaction_id": "t_late", "event_time": first["event_time"].replace(month=1)}
    # A payment ten days behind its partition (a backfill), then the card's next payment:
    # the late one is set aside and must not count in the next one's card windows.
    card = history["events"].loc[history["events"]["card_id"] == first["card_id"]]
    end = history["events"]["event_time"].max()
    backfill = first | {"transaction_id": "t_backfill", "event_time": end - pd.Timedelta(days=10)}
    after = first | {"transaction_id": "t_after", "event_time": end + pd.Timedelta(minutes=1)}
    assert (card["event_time"] > end - pd.Timedelta(days=30)).any()
    producer = clients.producer(kafka_bootstrap)
    extras = [
        b"{this is not json",
        schemas.encode_payment(first),  # a duplicate delivery
        schemas.encode_payment(late),  # three months behind the stream
        schemas.encode_payment(backfill),
    ]
    for value in [*extras, schemas.encode_payment(after)]:
        producer.send(topics["payments"], key=first["card_id"].encode(), value=value)
    producer.flush()
    producer.close()

    lines = []
    cfg = score_config(kafka_bootstrap, topics, tmp_path)
    score_job.run(spark, cfg, log=lines.append)

    scored = views.read_view(cfg.out, views.SCORED)
    assert len(scored) == published + 1 == len(history["events"]) + 1
    assert_features_equal_training(
        scored.loc[scored["transaction_id"] != "t_after"], history["dataset"]
    )
    with_after = pd.concat([history["events"], pd.DataFrame([after])], ignore_index=True)
    expected = training.build_dataset(with_after[features.EVENT_COLUMNS], history["labels"], 7)
    expected = expected.set_index("transaction_id").loc[["t_after"], features.FEATURE_COLUMNS]
    got = scored.set_index("transaction_id").loc[["t_after"], features.FEATURE_COLUMNS]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)
    assert set(scored["model_version"]) == {version}

    alerts = views.read_view(cfg.out, views.ALERTS)
    assert 0 < len(alerts) < len(scored) and alerts["alert_id"].is_unique
    assert set(alerts["transaction_id"]) == set(scored.loc[scored["alerted"], "transaction_id"])
    assert set(alerts.columns) >= set(schemas.ALERT_COLUMNS)
    on_topic = [
        schemas.decode_alert(r.value) for r in read_topic(kafka_bootstrap, topics["alerts"])
    ]
    assert {a["alert_id"] for a in on_topic} == set(alerts["alert_id"])
    assert all(list(a) == schemas.ALERT_COLUMNS and a["reasons"] for a in on_topic)
    keyed = read_topic(kafka_bootstrap, topics["alerts"])[0]
    assert keyed.key.decode() == json.loads(keyed.value)["card_id"]

    locations = views.read_view(cfg.out, views.CARD_LOCATIONS)
    assert len(locations) == published + 1 and locations["transaction_id"].is_unique

    dead = views.read_view(cfg.out, views.DEAD_LETTERS).sort_values("offset")
    assert sorted(dead["value"]) == sorted(extras)
    reasons = dict(zip(dead["value"], dead["reason"], strict=True))
    assert reasons[extras[0]].startswith("unparseable")
    assert reasons[extras[1]] == parse.REASON_DUPLICATE
    assert reasons[extras[2]].startswith("late:")
    assert reasons[extras[3]].startswith("late:")
    dlq = read_topic(kafka_bootstrap, topics["dlq"])
    assert sorted(r.value for r in dlq) == sorted(extras)
    headers = {dict(r.headers)["fraudstream.reason"].decode() for r in dlq}
    assert headers == set(reasons.values())

    assert any(line.startswith("batch 0:") and "processed" in line for line in lines)
    # Each stage's Spark jobs say what they are, in Spark's UI and event log.
    jobs = spark.sparkContext._jsc.sc().statusStore().jobsList(None)
    described = {jobs.apply(i).description() for i in range(jobs.length())}
    described = {d.get() for d in described if d.isDefined()}
    assert {"fraudstream: batch 0, read", "fraudstream: batch 0, score"} <= described
    assert "fraudstream: batch 0, write" in described
    # The driver keeps no index of payments and no merchant state: the card operator
    # turned the labels into fraud facts on the executors, and the facts and the
    # merchants' counts went to the per-day tables' records in the checkpoint.
    store = state.StateStore(cfg.state_folder)
    after_run = store.load(store.newest_snapshot(10**9))
    assert after_run.batch_id >= 0 and len(after_run.held) == 0
    days = daytables.DayTables(cfg.day_tables_folder, 7, spark)
    _, _, facts = days._records(spark, after_run.batch_id)
    assert facts.count() == history["dataset"]["is_fraud"].sum() > 0
    # Spark wrote the views (the driver never held their rows), one file per micro-batch
    # and date, named by the batch.
    for view in (views.SCORED, views.ALERTS, views.DEAD_LETTERS):
        found = storage.files(cfg.out).find(view, ".parquet")
        assert found and all(viewfiles.batch_range(f.split("/")[-1]) for f in found)
        footer = pq.read_schema(cfg.out / view / found[0]).metadata
        assert b"org.apache.spark.version" in footer, view

    # Run again on the same checkpoint: nothing new, nothing written twice.
    score_job.run(spark, cfg, log=lines.append)
    assert len(views.read_view(cfg.out, views.SCORED)) == published + 1


def test_score_job_starts_from_card_states_built_in_batch(
    spark, kafka_bootstrap, topics, mlflow_store, tmp_path, history
):
    """A history kept in the lake, not on the topic: the card_states job fills the cards'
    windows, and the live payments' card features equal training's over the whole."""
    register(history["dataset"], "fraudstream")
    events, labels = history["events"], history["labels"]
    cut = events["event_time"].min().normalize() + pd.Timedelta(days=14)
    before, live = events.loc[events["event_time"] < cut], events.loc[events["event_time"] >= cut]
    assert len(before) > 1000 and len(live) > 1000
    data = tmp_path / "history"
    lake.write_events(pa.Table.from_pandas(before, schema=schemas.PAYMENT_ARROW_SCHEMA), data)
    reported = labels.loc[labels["reported_time"] < cut]
    lake.write_labels(pa.Table.from_pandas(reported, schema=schemas.LABEL_ARROW_SCHEMA), data)
    states = tmp_path / "states"
    assert card_states_job.main(["--data", str(data), "--out", str(states)]) == 0

    # The live payments in two runs on one checkpoint: the second must not read the
    # states again (the operator refuses a state for a card that holds one).
    middle = live["event_time"].min() + (live["event_time"].max() - live["event_time"].min()) / 2
    cfg = score_config(kafka_bootstrap, topics, tmp_path, initial_card_states=str(states))
    lines = []
    for run, part in enumerate(
        (live.loc[live["event_time"] < middle], live.loc[live["event_time"] >= middle])
    ):
        produce.publish(
            pa.Table.from_pandas(part, schema=schemas.PAYMENT_ARROW_SCHEMA),
            topics["payments"],
            kafka_bootstrap,
        )
        if run == 1:
            # Loaded: a bank may delete the states; the resumed query does not need them.
            shutil.rmtree(states)
        score_job.run(spark, cfg, log=lines.append)

    scored = views.read_view(cfg.out, views.SCORED).set_index("transaction_id")
    assert set(scored.index) == set(live["transaction_id"])
    expected = history["dataset"].set_index("transaction_id").loc[scored.index]
    columns = features.CARD_FEATURE_COLUMNS
    np.testing.assert_allclose(
        scored[columns].to_numpy(), expected[columns].to_numpy(), rtol=0, atol=1e-9
    )
    # The states counted: live payments see their cards' payments from before the cut.
    live_only = live.groupby("card_id").cumcount().to_numpy() + 1
    counts = scored.loc[live["transaction_id"], "card_tx_count_30d"].to_numpy()
    assert (counts > live_only).any()
    assert sum("initial card states from" in line for line in lines) == 1
    assert sum("not read: the checkpoint has the cards' states" in line for line in lines) == 1


def test_score_job_keeps_its_views_and_state_on_s3(
    spark, kafka_bootstrap, topics, mlflow_store, tmp_path, history, s3a_bucket
):
    """Views, the driver's state and Spark's checkpoint on s3a://, across a restart."""
    register(history["dataset"], "fraudstream")
    events = lake.read_events(config.SAMPLE_DIR)
    half = events.num_rows // 2
    first = publish_sample(kafka_bootstrap, topics, events.slice(0, half))
    root = f"s3a://{s3a_bucket}"
    cfg = score_config(
        kafka_bootstrap,
        topics,
        tmp_path,
        out=f"{root}/lake",
        checkpoint=f"{root}/checkpoints",
    )
    lines = []
    score_job.run(spark, cfg, log=lines.append)
    assert len(views.read_view(cfg.out, views.SCORED)) == first

    # The rest of the stream, scored by a new run on the state it finds on S3.
    rest = produce.publish(events.slice(half), topics["payments"], kafka_bootstrap)
    restarted = []
    score_job.run(spark, cfg, log=restarted.append)
    assert any(line.startswith("state: re") for line in restarted), restarted[:5]

    scored = views.read_view(cfg.out, views.SCORED)
    assert len(scored) == first + rest == len(history["events"])
    assert_features_equal_training(scored, history["dataset"])
    alerts = views.read_view(cfg.out, views.ALERTS)
    assert set(alerts["transaction_id"]) == set(scored.loc[scored["alerted"], "transaction_id"])
    assert views.count_rows(cfg.out, views.CARD_LOCATIONS) == len(scored)
    assert "score/feature-state/" in "\n".join(_keys(spark, cfg.checkpoint))
    assert not (tmp_path / "lake").exists() and not (tmp_path / "checkpoints").exists()
    # A new checkpoint over these views is refused, as on a local disk.
    with pytest.raises(query.ScoreSetupError, match="already holds"):
        query.check_outputs(replace(cfg, checkpoint=f"{root}/other"))

    # Verified replay from the bucket into the bucket.
    rebuilt = replace(
        cfg,
        out=f"{root}/rebuilt",
        checkpoint=f"{root}/rebuild-checkpoints",
        kafka_outputs=False,
    )
    compared = tuple(verify.VIEW_NAMES.values())
    diffs = rebuild_job.run(spark, rebuild_job.RebuildConfig(rebuilt, cfg.out, compared), log=print)
    assert all(diff.equal for diff in diffs), [diff.report() for diff in diffs]
    assert {diff.view: diff.compared for diff in diffs}[views.SCORED] == len(scored)


def _keys(spark, uri: str) -> list[str]:
    from fraudstream import storage

    return storage.files(uri, spark).find("", "")


def test_score_job_refuses_to_resume_a_checkpoint_of_another_version(tmp_path):
    cfg = score_config(
        "127.0.0.1:1",
        {k: k for k in ("payments", "labels", "alerts", "dlq", "rules", "rules_log")},
        tmp_path,
    )
    query.check_checkpoint(cfg)
    (cfg.query_checkpoint / "offsets").mkdir(parents=True)
    query.check_checkpoint(cfg)  # resuming its own checkpoint is fine
    # A checkpoint of the job that kept the cards' state in the driver: with the mode
    # recorded, or from before the mode was recorded.
    for mode in ("driver\n", None):
        old = replace(cfg, checkpoint=tmp_path / f"old-{mode is None}")
        (old.query_checkpoint / "offsets").mkdir(parents=True)
        if mode:
            (old.query_checkpoint / query.CARD_STATE_FILE).write_text(mode)
        with pytest.raises(query.ScoreSetupError, match="kept the cards' state in the driver"):
            query.check_checkpoint(old)
    # An operator checkpoint made before the operator read the labels is refused.
    (cfg.query_checkpoint / query.OPERATOR_FORMAT_FILE).unlink()
    with pytest.raises(query.ScoreSetupError, match="earlier card operator"):
        query.check_checkpoint(cfg)


def test_score_job_refuses_a_new_checkpoint_over_old_outputs(tmp_path):
    cfg = score_config(
        "127.0.0.1:1",
        {k: k for k in ("payments", "labels", "alerts", "dlq", "rules", "rules_log")},
        tmp_path,
    )
    (cfg.out / views.SCORED / "date=2018-04-01").mkdir(parents=True)
    (cfg.out / views.SCORED / "date=2018-04-01" / "batch-000000000000.parquet").write_bytes(b"")
    with pytest.raises(query.ScoreSetupError, match="already holds scored"):
        score_job.check_outputs(cfg)


@pytest.mark.spark  # spark-submit.sh, not the spark fixture
def test_score_job_follows_the_champion_and_the_challenger_without_restarting(
    kafka_bootstrap, topics, mlflow_store, tmp_path, history
):
    """The job runs on its own (spark-submit); the aliases move while it runs.

    First the challenger alias points at a version that cannot load: the job says so once
    and scores with the champion alone. Then a new champion and a loadable challenger:
    the challenger scores every payment in shadow, and never decides.
    """
    from mlflow import MlflowClient

    from fraudstream.scoring.model import load_model

    client = MlflowClient()
    first_version = register(history["dataset"], "fraudstream", seed=0)
    broken = client.create_model_version("fraudstream", source=str(tmp_path / "no-model")).version
    client.set_registered_model_alias("fraudstream", "challenger", broken)
    events = lake.read_events(config.SAMPLE_DIR)
    half = events.num_rows // 2
    publish_sample(kafka_bootstrap, topics, events.slice(0, half))
    out = tmp_path / "lake"
    log = tmp_path / "job.log"
    args = [*score_args(kafka_bootstrap, topics, tmp_path), "--trigger-interval", "1 second"]
    job = submit("score", args, job_env(mlflow_store), log)

    def scored_at_least(count):
        return lambda: views.count_rows(out, views.SCORED) >= count or job.poll() is not None

    try:
        wait_for(scored_at_least(half), 240, "the first half to be scored", log)
        second_version = register(history["dataset"], "fraudstream", seed=1, champion=False)
        shadow = register(history["dataset"], "fraudstream", seed=2, champion=False)
        client.set_registered_model_alias("fraudstream", "champion", second_version)
        client.set_registered_model_alias("fraudstream", "challenger", shadow)
        produce.publish(events.slice(half), topics["payments"], kafka_bootstrap)
        wait_for(scored_at_least(events.num_rows), 240, "the second half to be scored", log)
    finally:
        job.send_signal(signal.SIGTERM)
        status = job.wait(timeout=120)
    said = log.read_text()
    assert status == 0, said[-3000:]
    scored = views.read_view(out, views.SCORED).set_index("transaction_id")
    assert len(scored) == events.num_rows
    first_half = events.slice(0, half)["transaction_id"].to_pylist()
    second_half = events.slice(half)["transaction_id"].to_pylist()
    assert set(scored.loc[first_half, "model_version"]) == {first_version}
    assert set(scored.loc[second_half, "model_version"]) == {second_version}
    assert f"moved from version {first_version} to {second_version}" in said
    assert "stopped; restart on the same --checkpoint to resume" in said
    # The challenger that cannot load: said once, in one line; no payment scored by it.
    assert said.count("challenger: Cannot load model models:/fraudstream@challenger") == 1
    assert "Scoring with the champion alone." in said and "Traceback" not in said
    assert scored.loc[first_half, "challenger_score"].isna().all()
    assert scored.loc[first_half, "challenger_version"].isna().all()
    # The loadable one: its own scores of the payments' features, in shadow only.
    later = scored.loc[second_half]
    assert set(later["challenger_version"]) == {shadow}
    challenger = load_model(f"models:/fraudstream/{shadow}")
    expected = challenger.score(later[challenger.feature_columns].reset_index(drop=True))
    np.testing.assert_allclose(later["challenger_score"].to_numpy(), expected, rtol=0, atol=1e-9)
    assert not np.allclose(later["challenger_score"], later["score"])
    assert (later["alerted"] == (later["score"] >= later["threshold"])).all()
    assert f"challenger: models:/fraudstream@challenger is version {shadow}" in said


def _batches_written(out) -> set[str]:
    return {path.name for path in (out / views.SCORED).rglob("batch-*.parquet")}


@pytest.mark.spark  # spark-submit.sh, not the spark fixture
def test_score_job_is_exactly_once_in_parquet_across_crashes(
    kafka_bootstrap, topics, mlflow_store, tmp_path, history
):
    register(history["dataset"], "fraudstream")
    published = publish_sample(kafka_bootstrap, topics)
    out = tmp_path / "lake"
    args = [
        *score_args(kafka_bootstrap, topics, tmp_path),
        *("--max-offsets-per-trigger", "300"),
    ]
    env = job_env(mlflow_store)
    logs = {name: tmp_path / f"{name}.log" for name in ("crash", "kill", "finish", "stop")}

    def tail(name):
        return logs[name].read_text()[-3000:]

    # 1. The driver dies at the worst moment: batch 2's views written, its state not
    # saved and its offsets not committed.
    crashing = submit("score", args, env | {processor.CRASH_AT_BATCH_ENV: "2"}, logs["crash"])
    assert crashing.wait(timeout=300) != 0, tail("crash")
    assert any(n.startswith("batch-000000000002") for n in _batches_written(out)), tail("crash")

    # 2. Restarted, then killed with SIGKILL wherever it happens to be.
    killed = submit("score", args, env, logs["kill"])
    wait_for(lambda: len(_batches_written(out)) >= 6 or killed.poll() is not None, 300, "batches")
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    assert len(views.read_view(out, views.SCORED)["transaction_id"].unique()) < published

    # 3. Restarted to the end of the topic.
    finishing = submit("score", [*args, "--available-now"], env, logs["finish"])
    assert finishing.wait(timeout=300) == 0, tail("finish")

    scored = views.read_view(out, views.SCORED)
    locations = views.read_view(out, views.CARD_LOCATIONS)
    alerts = views.read_view(out, views.ALERTS)
    assert len(scored) == published and scored["transaction_id"].is_unique
    assert len(locations) == published and locations["transaction_id"].is_unique
    assert alerts["transaction_id"].is_unique and alerts["alert_id"].is_unique
    assert set(alerts["transaction_id"]) == set(scored.loc[scored["alerted"], "transaction_id"])
    # The state restored after each crash was the right one: features still equal training's.
    assert_features_equal_training(scored, history["dataset"])
    # Kafka alerts are at least once: every alert is on the topic, duplicates share an id.
    on_topic = {
        schemas.decode_alert(r.value)["alert_id"]
        for r in read_topic(kafka_bootstrap, topics["alerts"])
    }
    assert on_topic == set(alerts["alert_id"])

    # 4. SIGTERM stops the job between micro-batches, with exit status 0.
    running = submit("score", args, env, logs["stop"])
    wait_for(lambda: "model: fraudstream version" in logs["stop"].read_text(), 180, "start")
    time.sleep(5)
    running.send_signal(signal.SIGTERM)
    assert running.wait(timeout=120) == 0, tail("stop")
    assert "stopped; restart on the same --checkpoint to resume" in logs["stop"].read_text()


def test_score_job_without_a_model_stops_at_start_with_one_sentence(
    kafka_bootstrap, topics, mlflow_store, tmp_path, capsys
):
    args = score_args(kafka_bootstrap, topics, tmp_path)
    assert score_job.main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("score: Cannot load model models:/fraudstream@champion")
    assert "\n" not in error and "./spark-submit.sh train" in error
    assert not (tmp_path / "lake").exists()


def test_score_job_on_a_location_it_cannot_use_stops_with_one_sentence(
    spark, kafka_bootstrap, topics, mlflow_store, tmp_path, history, s3a_settings, capsys
):
    register(history["dataset"], "fraudstream")
    args = score_args(kafka_bootstrap, topics, tmp_path)
    # A bucket that does not exist, with the local server's settings.
    missing = "test-no-such-bucket"
    objectstore.configure(spark, objectstore.for_bucket(s3a_settings, missing))
    capsys.readouterr()  # what registering the model printed
    for out, expected in [
        ("nosuch://bucket/lake", "score: Hadoop has no file system for nosuch:// URIs"),
        (f"s3a://{missing}/lake", f"score: Cannot reach s3a://{missing}/lake"),
    ]:
        assert score_job.main([*args, "--out", out]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith(expected) and "\n" not in error, error
