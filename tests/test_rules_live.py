"""Fraud-ops rules in the running scoring job: published while it runs, replayed the same."""

from __future__ import annotations

import signal
from dataclasses import replace

import numpy as np
import pytest

from fraudstream import config, lake
from fraudstream.data import produce
from fraudstream.kafka import clients
from fraudstream.scoring import rulelog, rules, verify, views
from fraudstream.scoring.rebuild import RebuildConfig
from fraudstream.scoring.rebuild import run as rebuild

from .helpers import (
    THRESHOLD,
    job_env,
    publish_sample,
    read_topic,
    register,
    score_args,
    score_config,
    submit,
    wait_for,
)


@pytest.mark.spark  # spark-submit.sh as well as the spark fixture
def test_rules_published_while_the_job_runs_decide_the_next_batches_and_replay_the_same(
    spark, kafka_bootstrap, topics, mlflow_store, tmp_path, history
):
    register(history["dataset"], "fraudstream")
    events = lake.read_events(config.SAMPLE_DIR)
    half = events.num_rows // 2
    publish_sample(kafka_bootstrap, topics, events.slice(0, half))
    out = tmp_path / "lake"
    log = tmp_path / "job.log"
    args = [*score_args(kafka_bootstrap, topics, tmp_path), "--trigger-interval", "1 second"]
    job = submit("score", args, job_env(mlflow_store), log)
    second = events.slice(half).to_pandas()
    card = second["card_id"].iloc[0]
    published = [
        rules.new_rule("big-ecom", "is_ecom = 1 AND amount > 100", "decline", "ops-1"),
        rules.new_rule("trusted-card", f"card_id = '{card}'", "allow", "ops-1"),
        # An error on every row (a division by zero): false, and the stream goes on.
        rules.new_rule("broken", "amount / (is_atm - is_atm) > 1", "review", "ops-2"),
        rules.new_rule("off", "amount > 0", "decline", "ops-2", enabled=False),
    ]

    def scored_at_least(count):
        return lambda: views.count_rows(out, views.SCORED) >= count or job.poll() is not None

    try:
        wait_for(scored_at_least(half), 240, "the first half to be scored", log)
        for rule in published:
            rules.publish(kafka_bootstrap, topics["rules"], rule)
        producer = clients.producer(kafka_bootstrap)
        producer.send(topics["rules"], key=b"bad", value=b"{not json").get(timeout=30)
        producer.close()
        produce.publish(events.slice(half), topics["payments"], kafka_bootstrap)
        wait_for(scored_at_least(events.num_rows), 240, "the second half to be scored", log)
    finally:
        job.send_signal(signal.SIGTERM)
        status = job.wait(timeout=120)
    said = log.read_text()
    assert status == 0, said[-3000:]
    assert "rules: from micro-batch" in said

    scored = views.read_view(out, views.SCORED).set_index("transaction_id")
    assert len(scored) == events.num_rows
    before = scored.loc[events.slice(0, half)["transaction_id"].to_pylist()]
    after = scored.loc[second["transaction_id"].to_list()]
    # The first half was decided before the rules: by the model's band alone.
    assert before["rules_fired"].map(len).eq(0).all()
    assert (before["decision"] == np.where(before["score"] >= THRESHOLD, "review", "approve")).all()
    # The second half by the rules as published, evaluated by Spark.
    big_ecom = (after["is_ecom"] == 1) & (after["amount"] > 100)
    trusted = after["card_id"] == card
    expected_fired = [
        [name for name, hit in (("big-ecom@1", b), ("trusted-card@1", t)) if hit]
        for b, t in zip(big_ecom, trusted, strict=True)
    ]
    assert [sorted(f) for f in after["rules_fired"]] == expected_fired
    assert big_ecom.any() and trusted.any() and (big_ecom & ~trusted).any()
    expected = np.select(
        [trusted, big_ecom, after["score"] >= THRESHOLD],
        ["approve", "decline", "review"],
        "approve",
    )
    assert (after["decision"] == expected).all()
    assert (after["alerted"] == (after["decision"] != "approve")).all()

    alerts = views.read_view(out, views.ALERTS).set_index("transaction_id")
    assert set(alerts.index) == set(scored.index[scored["decision"] != "approve"])
    declined = alerts.loc[after.index[big_ecom & ~trusted]]
    assert (declined["decision"] == "decline").all()
    assert all(r[0].startswith("rule big-ecom v1 (decline): ") for r in declined["reasons"])

    # The record that is no rule went to the dead letters, with its reason.
    dead = [r for r in read_topic(kafka_bootstrap, topics["dlq"]) if r.key == b"bad"]
    assert len(dead) == 1
    reason = dict(dead[0].headers)["fraudstream.reason"].decode()
    assert reason.startswith("The record is not UTF-8 JSON")

    # The job logged the rule set it applied, and from which offsets.
    logged = rulelog.applied_history(
        rulelog.read_log(kafka_bootstrap, topics["rules_log"], rulelog.log_key(out))
    )
    assert [sorted(r.rule_id for r in a.rules) for a in logged] == [
        ["big-ecom", "broken", "trusted-card"]
    ]

    # A rebuild decides every payment as the live job did.
    live = score_config(kafka_bootstrap, topics, tmp_path)
    rebuilt = replace(
        live, out=tmp_path / "rebuilt", checkpoint=tmp_path / "rebuild-cp", kafka_outputs=False
    )
    diffs = rebuild(spark, RebuildConfig(rebuilt, out, tuple(verify.VIEW_NAMES.values())))
    assert all(diff.equal for diff in diffs), [diff.report() for diff in diffs]
