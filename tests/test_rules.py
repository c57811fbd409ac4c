"""Fraud-ops rules: their record, Spark's checks of a condition, the commands, the backtest."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from fraudstream import config
from fraudstream.scoring import rulelog, rules

from .helpers import run_cli, toy_model


def _record(rule_or_value, partition=0, offset=0, key=None):
    value = rule_or_value.encode() if isinstance(rule_or_value, rules.Rule) else rule_or_value
    if key is None and isinstance(rule_or_value, rules.Rule):
        key = rule_or_value.rule_id.encode()
    return SimpleNamespace(key=key, value=value, partition=partition, offset=offset)


def test_a_rule_record_decodes_as_it_was_encoded():
    rule = rules.new_rule("big-cnp", " amount > 2000 ", "decline", "alice", "Large CNP")
    assert rule.version == 1 and rule.condition == "amount > 2000"
    assert rules.decode_rule(b"big-cnp", rule.encode()) == rule
    following = rules.new_rule("big-cnp", "amount > 3000", "review", "bob", previous=rule)
    assert following.version == 2


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"action": "block"}, "Action 'block' is not one of review, decline, allow."),
        ({"version": True}, "The record's version is not a int."),
        ({"version": "2"}, "The record's version is not a int."),
        ({"enabled": "yes"}, "The record's enabled is not a bool."),
        ({"condition": None}, "The record has no condition."),
        ({"rule_id": "no spaces"}, "Rule id 'no spaces' is not valid"),
        ({"schema_version": 9}, "The record's schema_version 9 is not supported."),
    ],
)
def test_a_record_that_is_not_a_valid_rule_says_why(change, reason):
    fields = json.loads(rules.new_rule("r1", "amount > 1", "review", "alice").encode())
    fields.update(change)
    with pytest.raises(rules.RuleError) as refused:
        rules.decode_rule(None, json.dumps(fields).encode())
    assert str(refused.value).startswith(reason)


def test_the_rule_set_keeps_each_rules_newest_valid_version():
    first = rules.new_rule("r1", "amount > 1", "review", "alice")
    second = rules.new_rule("r1", "amount > 2", "review", "alice", previous=first)
    other = rules.new_rule("r2", "is_atm = 1", "decline", "bob")
    gone = rules.new_rule("r3", "amount > 5", "allow", "bob")
    records = [
        _record(first, 0, 0),
        _record(other, 1, 0),
        _record(gone, 1, 1),
        _record(second, 0, 1),
        _record(b"not json", 0, 2, key=b"r1"),  # set aside: r1 v2 stays in effect
        _record(None, 1, 2, key=b"r3"),  # a tombstone deletes r3
        _record(rules.new_rule("r2", "x", "review", "eve", previous=other), 1, 3),
    ]

    def refuse_x(condition):
        if condition == "x":
            raise rules.RuleError("unknown column x")

    found = rules.rule_set(records, check=refuse_x)
    assert found.rules == {"r1": second, "r2": other}
    assert [r.rule_id for r in found.enabled()] == ["r1", "r2"]
    assert [(r.partition, r.offset) for r, _ in found.refused] == [(0, 2), (1, 3)]
    assert found.refused[0][1].startswith("The record is not UTF-8 JSON")
    assert found.refused[1][1] == "unknown column x"


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ("", "The rule's condition is empty."),
        ("amount >", "The condition does not parse: Syntax error"),
        ("amout > 3", "The condition names an unknown column `amout`"),
        ("amount + 1", "Spark cannot evaluate the condition"),
        ("sum(amount) > 3", "Spark cannot evaluate the condition"),
        ("rand() > 0.5", "The condition is not deterministic"),
        ("current_timestamp() > event_time", "The condition reads the clock"),
        ("reflect('java.util.UUID', 'randomUUID') = 'x'", "The condition calls a Java method"),
        ("java_method('java.lang.Math', 'abs', -1) = 1", "The condition calls a Java method"),
        ("amount > (SELECT 1)", "The condition holds a subquery"),
    ],
)
def test_spark_refuses_a_condition_with_one_sentence(spark, condition, reason):
    with pytest.raises(rules.RuleError) as refused:
        rules.check_condition(spark, condition)
    message = str(refused.value)
    assert message.startswith(reason)
    assert "\n" not in message and "SQLSTATE" not in message


def test_spark_accepts_a_condition_over_fields_features_and_score(spark):
    named = rules.check_condition(
        spark,
        "amount > 2000 AND is_ecom = 1 AND merchant_tx_count_30d = 0 "
        "AND channel = 'ecom' AND score > 0.5",
    )
    assert named == {"amount", "is_ecom", "merchant_tx_count_30d", "channel", "score"}


def test_backtest_counts_what_training_features_say(spark, history):
    from fraudstream import schemas
    from fraudstream.ml import dataset

    payments = spark.createDataFrame(
        history["events"][schemas.PAYMENT_COLUMNS], schemas.PAYMENT_SCHEMA
    )
    labels = spark.createDataFrame(history["labels"][schemas.LABEL_COLUMNS], schemas.LABEL_SCHEMA)
    model = toy_model(history["dataset"])
    condition = "amount > 100 AND is_ecom = 1 AND card_tx_count_7d >= 3"
    rows = rules.rule_rows(payments, labels, model.label_delay_days, model)
    result = rules.backtest(rows, condition)

    # The same counts from training's features (features.compute over the history).
    data = history["dataset"]
    hit = (data["amount"] > 100) & (data["is_ecom"] == 1) & (data["card_tx_count_7d"] >= 3)
    alert = model.score(data[model.feature_columns]) >= model.threshold
    expected = (
        pd.DataFrame(
            {
                "day": data["day"],
                "payments": 1,
                "frauds": data["is_fraud"],
                "hits": hit.astype(int),
                "hit_frauds": (hit & (data["is_fraud"] == 1)).astype(int),
                "model_alerts": alert.astype(int),
                "overlap": (hit & alert).astype(int),
            }
        )
        .groupby("day", as_index=False)
        .sum()
    )
    got = result.days.astype({c: "int64" for c in expected.columns if c != "day"})
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert result.hits == int(hit.sum()) > 0
    assert result.precision == pytest.approx((hit & (data["is_fraud"] == 1)).sum() / hit.sum())
    assert result.recall == pytest.approx(
        (hit & (data["is_fraud"] == 1)).sum() / data["is_fraud"].sum()
    )
    assert result.overlap == int((hit & alert).sum())
    assert len(dataset.day_range(payments)) == 2


def test_backtest_without_an_events_folder_is_one_sentence(tmp_path, capsys):
    from fraudstream.cli import main as cli

    # In this process (python -m fraudstream.cli runs the same main): a subprocess would
    # spend most of its time importing.
    assert cli.main(["rules", "backtest", "--data", str(tmp_path), "--no-model", "x > 1"]) == 2
    assert capsys.readouterr().err == f"fraudstream: No events folder at {tmp_path / 'events'}.\n"


def test_rules_commands_publish_versions_and_set_bad_records_aside(kafka_bootstrap, fresh_topic):
    from fraudstream.kafka import clients

    topic = ["--topic", fresh_topic]
    added = run_cli(
        "rules", "add", "big-cnp", "--condition", "amount > 2000 AND is_ecom = 1",
        "--action", "decline", "--author", "alice", "--description", "Large CNP", *topic,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert f"Published big-cnp v1 to {fresh_topic}" in added.stdout

    refused = run_cli(
        "rules", "add", "typo", "--condition", "amout > 2000", "--action", "review", *topic
    )
    assert refused.returncode == 2
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .startswith("fraudstream: The condition names an unknown column `amout`")
    )

    # Records that reach the topic without the command: set aside, the rest read on.
    producer = clients.producer(kafka_bootstrap)
    producer.send(fresh_topic, key=b"big-cnp", value=b"{not json").get(timeout=30)
    producer.close()

    disabled = run_cli("rules", "disable", "big-cnp", "--author", "bob", *topic)
    assert disabled.returncode == 0, disabled.stderr
    listed = run_cli("rules", "list", *topic)
    assert listed.returncode == 0, listed.stderr
    assert f"No enabled rules on {fresh_topic}." in listed.stdout
    assert "set aside: partition" in listed.stdout and "is not UTF-8 JSON" in listed.stdout
    every = run_cli("rules", "list", "--all", *topic)
    assert "big-cnp v2 [disabled] decline: amount > 2000 AND is_ecom = 1  (bob," in every.stdout

    enabled = run_cli("rules", "enable", "big-cnp", "--author", "carol", *topic)
    assert enabled.returncode == 0, enabled.stderr
    shown = run_cli("rules", "show", "big-cnp", *topic)
    lines = dict(line.split(": ", 1) for line in shown.stdout.strip().splitlines())
    assert lines["version"] == "3" and lines["enabled"] == "True" and lines["author"] == "carol"
    assert lines["description"] == "Large CNP"
    missing = run_cli("rules", "show", "nope", *topic)
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        == f"fraudstream: No rule nope on {fresh_topic} (fraudstream rules list)."
    )


def test_the_rules_topic_is_one_of_the_design_topics():
    from fraudstream.ops import broker

    assert broker.DESIGN_TOPICS[config.TOPIC_RULES] == {"cleanup.policy": "compact"}


def _applied(batch_id: int, offsets: dict[int, int], *rule_list) -> rulelog.Applied:
    return rulelog.Applied(batch_id, offsets, tuple(rule_list), "2026-12-01T00:00:00.000Z")


def test_a_rules_log_record_for_a_batch_replaces_those_for_it_and_later_batches():
    one = rules.new_rule("r1", "amount > 1", "review", "ann")
    two = rules.new_rule("r2", "is_atm = 1", "decline", "bob")
    first, crashed, rerun = _applied(0, {}), _applied(5, {0: 9}, one), _applied(5, {0: 9}, two)
    later = _applied(8, {0: 20, 1: 4}, one, two)
    assert rulelog.applied_history([first, crashed, rerun, later]) == [first, rerun, later]
    # A new checkpoint on the same output root starts the log over from batch 0.
    again = _applied(0, {})
    assert rulelog.applied_history([first, rerun, later, again]) == [again]
    assert rulelog.Applied.decode(later.encode()) == later


def test_the_rules_in_effect_stay_when_the_rules_topic_cannot_be_read():
    """A fault not caused for real here (a topic that cannot be read within 30 s)."""
    in_effect = _applied(0, {0: 0}, rules.new_rule("r1", "amount > 1", "review", "ann"))
    live = object.__new__(rulelog.LiveRules)
    said: list[str] = []
    live.records, live.rules_topic, live.log = [in_effect], "fraud-rules", said.append

    def unreadable():
        raise rules.RuleError("Could not read topic fraud-rules to its end within 30 s.")

    live.current = unreadable  # type: ignore[method-assign]
    assert live.for_batch(7, {0: 120}) == [in_effect]
    assert live.records == [in_effect]  # nothing logged anew: a replay decides the same
    assert said == [
        "rules: fraud-rules not read (Could not read topic fraud-rules to its end within "
        "30 s.); the rules in effect stay"
    ]
