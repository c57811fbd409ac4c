"""Verified replay: views rebuilt from the oldest offset equal the live ones, key by key."""

from __future__ import annotations

import threading
import time
from datetime import date

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fraudstream import config, features, lake, schemas
from fraudstream.data import produce
from fraudstream.scoring import query, verify, viewfiles, views
from jobs import rebuild as rebuild_job

from .helpers import (
    job_env,
    long_history,
    publish_sample,
    read_topic,
    register,
    score_config,
    submit,
)


def _rewrite_one_file(root, view, change):
    """Apply ``change(table) -> table`` to the first Parquet file of a view."""
    path = viewfiles.paths(root, view)[0]
    pq.write_table(change(pq.read_table(path)), path)
    return path


def test_rebuild_equals_the_live_views_after_a_restart(
    spark, kafka_bootstrap, topics, mlflow_store, tmp_path, history
):
    register(history["dataset"], "fraudstream")
    events = lake.read_events(config.SAMPLE_DIR)
    half = events.num_rows // 2
    # The live run: half the payments, a stop, then a restart on the same checkpoint,
    # which restores the state: the cards' from Spark's state store, the driver's
    # decisions from its snapshot of the last micro-batch.
    publish_sample(kafka_bootstrap, topics, events.slice(0, half))
    live = score_config(kafka_bootstrap, topics, tmp_path / "live", max_offsets_per_trigger=400)
    lines = []
    query.run(spark, live, log=lines.append)
    # The compact job between the two runs and after them: the restart writes batches
    # to days already merged, and the comparison reads the views through merged files.
    merged = viewfiles.compact(live.out, views.VIEWS, until=date(2100, 1, 1), grace_s=0)
    assert merged["files"] > merged["merged"] > 0
    produce.publish(events.slice(half), topics["payments"], kafka_bootstrap)
    query.run(spark, live, log=lines.append)
    assert any(line.startswith("state: restored from the snapshot") for line in lines), lines
    merged = viewfiles.compact(live.out, views.VIEWS, until=date(2100, 1, 1), grace_s=0)
    assert merged["merged"] > 0 and merged["deleted"] > 0

    # The rebuild, as a user runs it: its own process, other micro-batch sizes.
    log = tmp_path / "rebuild.log"
    args = [
        "--live", str(live.out),
        "--out", str(tmp_path / "rebuilt"),
        "--checkpoint", str(tmp_path / "rebuild-checkpoints"),
        "--brokers", kafka_bootstrap,
        "--payments-topic", topics["payments"],
        "--labels-topic", topics["labels"],
        "--max-offsets-per-trigger", "2500",
    ]  # fmt: skip
    alerts_sent = len(read_topic(kafka_bootstrap, topics["alerts"]))
    job = submit("rebuild", args, job_env(mlflow_store), log)
    status = job.wait(timeout=600)
    said = log.read_text()
    assert status == 0, said[-3000:]
    scored = views.count_rows(live.out, views.SCORED)
    assert f"scored: identical: {scored:,} rows compared, 0 only live" in said
    for view in ("alerts", "card_locations", "dead_letters"):
        assert f"{view}: identical:" in said
    assert "rebuild: identical" in said
    # A replay sends nothing to Kafka: dashboards never see it.
    assert len(read_topic(kafka_bootstrap, topics["alerts"])) == alerts_sent > 0

    # The comparison sees a damaged live view: one leg changed, one alert gone.
    rebuilt = tmp_path / "rebuilt"
    damaged = {}

    def faster(table):
        damaged["transaction_id"] = table["transaction_id"][0].as_py()
        speeds = table["speed_kmh"].to_pylist()
        speeds[0] += 1.0
        return table.set_column(table.schema.get_field_index("speed_kmh"), "speed_kmh", [speeds])

    _rewrite_one_file(live.out, views.CARD_LOCATIONS, faster)
    diff = verify.compare_view(live.out, rebuilt, views.CARD_LOCATIONS, topics["payments"])
    assert not diff.equal and list(diff.changed) == [damaged["transaction_id"]]
    assert list(diff.changed[damaged["transaction_id"]]) == ["speed_kmh"]

    dropped = {}

    def without_first(table):
        dropped["transaction_id"] = table["transaction_id"][0].as_py()
        return table.filter(pc.not_equal(table["transaction_id"], dropped["transaction_id"]))

    _rewrite_one_file(live.out, views.ALERTS, without_first)
    diff = verify.compare_view(live.out, rebuilt, views.ALERTS, topics["payments"])
    assert diff.only_rebuilt == [dropped["transaction_id"]] and not diff.changed
    assert "only rebuilt: " + dropped["transaction_id"] in "\n".join(diff.report())


def test_rebuild_without_live_views_is_one_sentence(tmp_path, capsys):
    status = rebuild_job.main(["--live", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert status == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("rebuild: ") and "holds no scored payments" in error
    assert "\n" not in error


def test_live_after_a_catch_up_equals_training_and_its_rebuild(
    spark, kafka_bootstrap, topics, mlflow_store, tmp_path
):
    """The demo's flow, end to end: a history longer than the card windows published over
    several partitions, caught up by the score job in large micro-batches (partitions
    apart in event time within a batch), then payments published live in small batches
    while the job runs. Every scored feature equals training's, and the rebuild (other
    micro-batch cuts) is identical."""
    history = long_history()
    register(history["dataset"], "fraudstream")
    events = history["tables"]["events"]
    live_from = int(events.num_rows * 0.9)
    cut = events["event_time"][live_from]
    labels = history["tables"]["labels"]
    produce.publish(
        labels.filter(pc.less(labels["reported_time"], cut)),
        topics["labels"],
        kafka_bootstrap,
        encode=schemas.encode_labels,
    )
    produce.publish(events.slice(0, live_from), topics["payments"], kafka_bootstrap)

    lines = []
    live = score_config(
        kafka_bootstrap,
        topics,
        tmp_path / "live",
        max_offsets_per_trigger=live_from // 2 + 1,
        available_now=False,
        trigger_interval="1 second",
    )
    stop = threading.Event()
    job = threading.Thread(target=query.run, args=(spark, live, stop, lines.append))
    job.start()
    try:
        _wait_for_rows(live.out, live_from, job)
        later = labels.filter(pc.greater_equal(labels["reported_time"], cut))
        produce.publish(later, topics["labels"], kafka_bootstrap, encode=schemas.encode_labels)
        for start in range(live_from, events.num_rows, 150):
            produce.publish(events.slice(start, 150), topics["payments"], kafka_bootstrap)
            # Each chunk scored before the next is sent: live traffic in small
            # micro-batches, however long a micro-batch takes on this machine.
            _wait_for_rows(live.out, min(start + 150, events.num_rows), job)
        _wait_for_rows(live.out, events.num_rows, job)
    finally:
        stop.set()
        job.join(timeout=300)
    batches = [line for line in lines if line.startswith("batch ")]
    assert len(batches) >= 2 + 4, lines[-5:]  # two to catch up, then live ones
    # The catch-up held payments of days other partitions had not reached yet.
    held = [int(line.split(" held back")[0].rsplit(" ", 1)[1].replace(",", "")) for line in batches]
    assert max(held) > 0, batches[:3]

    scored = views.read_view(live.out, views.SCORED).set_index("transaction_id")
    expected = history["dataset"].set_index("transaction_id")[features.FEATURE_COLUMNS]
    assert len(scored) == len(expected) and scored.index.is_unique
    got = scored.loc[expected.index, features.FEATURE_COLUMNS].to_numpy()
    np.testing.assert_allclose(got, expected.to_numpy(), rtol=0, atol=1e-9)

    rebuilt = replace_config(live, tmp_path / "rebuilt")
    compared = tuple(verify.VIEW_NAMES.values())
    diffs = rebuild_job.run(spark, rebuild_job.RebuildConfig(rebuilt, live.out, compared))
    # Every view compared, over every scored payment: no diff (or an empty one) is not equal.
    rows = {diff.view: diff.compared for diff in diffs}
    assert sorted(rows) == sorted(compared) and rows[views.SCORED] == len(scored), rows
    assert all(diff.equal for diff in diffs), [line for d in diffs for line in d.report()][:10]


def replace_config(live: query.ScoreConfig, root) -> query.ScoreConfig:
    """The rebuild's configuration: from the oldest offset, into its own root, no Kafka sinks."""
    from dataclasses import replace

    return replace(
        live,
        out=root / "lake",
        checkpoint=root / "checkpoints",
        kafka_outputs=False,
        available_now=True,
        trigger_interval=None,
        max_offsets_per_trigger=2500,
    )


def _wait_for_rows(out, count, job, timeout_s=240):
    deadline = time.time() + timeout_s
    while time.time() < deadline and job.is_alive():
        if views.count_rows(out, views.SCORED) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(
        f"the score job wrote {views.count_rows(out, views.SCORED)} of {count} payments"
    )
