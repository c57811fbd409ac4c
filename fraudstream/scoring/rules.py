"""Fraud-ops rules: conditions in Spark SQL, published as events on a compacted topic.

Analysts write a rule as a Spark SQL boolean expression over a payment's fields, the
model's features and its ``score`` (:data:`RULE_COLUMNS`), with an action::

    amount > 2000 AND is_ecom = 1 AND merchant_tx_count_30d = 0   ->   decline

Rule record (topic ``fraud-rules``, compacted, key ``rule_id``, value UTF-8 JSON)::

    {"rule_id": "cnp-large-new-merchant", "version": 2,
     "condition": "amount > 2000 AND is_ecom = 1 AND merchant_tx_count_30d = 0",
     "action": "decline", "description": "Large card-not-present payment ...",
     "author": "analyst-7", "enabled": true,
     "published_time": "2026-11-30T21:04:05.000Z", "schema_version": 1}

Every change is a new version of the rule, published as a whole record; disabling
publishes the rule again with ``enabled`` false. Compaction keeps each rule's newest
version on the topic.

A condition is checked by Spark's own parser and analyser (:func:`check_condition`),
never by Python ``eval``: it must parse, name only :data:`RULE_COLUMNS`, be a boolean,
be deterministic (a replay must decide as the live job did), and call no Java method,
subquery or user function. ``fraudstream rules add`` refuses a rule that fails, with
one sentence; a record on the topic that is not a valid rule is set aside with its
reason (:func:`read_rules`), and the rest are read on.

:func:`backtest` runs a condition over a history: its hits per day, precision and
recall against the labels, and its overlap with the model's alerts.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from fraudstream import features, schemas
from fraudstream.errors import DataError

#: The rule record's schema version.
RULE_SCHEMA_VERSION = 1

#: What a rule does when its condition holds: queue the payment for an analyst, decline
#: it, or approve it whatever the model says.
ACTIONS = ("review", "decline", "allow")

#: A rule id: letters, digits, ``-``, ``_`` and ``.``, at most 64 characters.
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

#: The fields of a rule record: (name, Python type, required).
_RULE_FIELDS: list[tuple[str, type | tuple[type, ...], bool]] = [
    ("rule_id", str, True),
    ("version", int, True),
    ("condition", str, True),
    ("action", str, True),
    ("description", str, False),
    ("author", str, True),
    ("enabled", bool, True),
    ("published_time", str, True),
    ("schema_version", int, True),
]


class RuleError(DataError):
    """A rule cannot be used as written; the message is one sentence for its author."""


class UnknownRuleError(RuleError):
    """The rules topic holds no rule of that id; the message says so in one sentence."""


@dataclass(frozen=True)
class Rule:
    """One version of a rule, as published on the rules topic."""

    rule_id: str
    version: int
    condition: str
    action: str
    description: str
    author: str
    enabled: bool
    published_time: str
    schema_version: int = RULE_SCHEMA_VERSION

    def encode(self) -> bytes:
        """The record's value: UTF-8 JSON with the fields in the contract's order."""
        return json.dumps(asdict(self), ensure_ascii=False).encode("utf-8")


#: The payment's fields a rule may not name: the customer (personal data, not carried
#: to scoring) and the record's schema version.
_NOT_RULE_FIELDS = ("customer_id", "schema_version")


def _payment_columns() -> dict[str, str]:
    """The payment's fields a rule may name, with their Spark SQL types."""
    from fraudstream.schemas import PAYMENT_SCHEMA

    return {
        f.name: f.dataType.simpleString()
        for f in PAYMENT_SCHEMA.fields
        if f.name not in _NOT_RULE_FIELDS
    }


def rule_columns() -> dict[str, str]:
    """Every column a rule may name, with its Spark SQL type.

    The payment's fields (the contract's), the model's features (``features``; all
    doubles) and ``score``, the champion's probability of fraud.
    """
    columns = _payment_columns()
    for name in features.FEATURE_COLUMNS:
        columns.setdefault(name, "double")
    columns["score"] = "double"
    return columns


#: The names of :func:`rule_columns`, for help texts (without building Spark's types).
RULE_COLUMNS = [c for c in schemas.PAYMENT_COLUMNS if c not in _NOT_RULE_FIELDS] + [
    name for name in [*features.FEATURE_COLUMNS, "score"] if name not in schemas.PAYMENT_COLUMNS
]


def rule_input_schema():
    """The Spark schema of the rows a condition is evaluated over (:func:`rule_columns`)."""
    from pyspark.sql import types as T  # noqa: N812

    return T.StructType.fromDDL(", ".join(f"`{n}` {t}" for n, t in rule_columns().items()))


#: Catalyst expressions a rule may not contain, by class name: Java reflection, user
#: functions and subqueries reach beyond the payment's row.
_FORBIDDEN = {
    "CallMethodViaReflection": "calls a Java method",
    "TryReflect": "calls a Java method",
    "ScalaUDF": "calls a user function",
    "PythonUDF": "calls a user function",
    "ScalarSubquery": "holds a subquery",
    "Exists": "holds a subquery",
    "ListQuery": "holds a subquery",
    "InSubquery": "holds a subquery",
    "LateralSubquery": "holds a subquery",
    # Deterministic within one query to Spark, but a replay would read another clock.
    "CurrentTimestamp": "reads the clock",
    "Now": "reads the clock",
    "CurrentDate": "reads the clock",
    "LocalTimestamp": "reads the clock",
    "CurrentTime": "reads the clock",
}


def _walk(expression) -> list:
    """The Catalyst expression and all its descendants (through py4j)."""
    found, stack = [], [expression]
    while stack:
        node = stack.pop()
        found.append(node)
        children = node.children()
        stack.extend(children.apply(i) for i in range(children.size()))
    return found


def _first_line(error: Exception) -> str:
    """An error's message without Spark's context lines, as one clause."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r"^\[[A-Z_.]+\]\s*", "", text)
    text = re.sub(r"\s*SQLSTATE: \w+;?", "", text)
    return re.sub(r"\.\s*\(line", " (line", text).rstrip(".; ")


def check_condition(spark, condition: str) -> set[str]:
    """Refuse a condition that Spark cannot evaluate over a payment, or that is unsafe.

    The condition is parsed and analysed by Spark as the filter of an empty frame of
    :func:`rule_input_schema`: Spark's own errors for syntax, unknown columns, types
    and aggregates. Then it must be deterministic and hold no expression of
    ``_FORBIDDEN``.

    Returns
    -------
    set of str
        The columns the condition names.

    Raises
    ------
    RuleError
        Saying in one sentence why the condition is refused.
    """
    from pyspark.errors import AnalysisException, ParseException
    from pyspark.sql import functions as F  # noqa: N812

    if not condition or not condition.strip():
        raise RuleError("The rule's condition is empty.")
    frame = spark.createDataFrame([], rule_input_schema())
    # PySpark logs each analysis error it raises; here the error is the answer.
    quiet = logging.getLogger("SQLQueryContextLogger")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        filtered = frame.where(F.expr(condition))
        analysed = filtered._jdf.queryExecution().analyzed()
    except ParseException as error:
        raise RuleError(f"The condition does not parse: {_first_line(error)}.") from None
    except AnalysisException as error:
        if (error.getCondition() or "").startswith("UNRESOLVED_COLUMN"):
            name = (error.getMessageParameters() or {}).get("objectName", "?")
            raise RuleError(
                f"The condition names an unknown column {name}; a rule may name a payment's "
                "fields, the model's features and score (fraudstream rules columns)."
            ) from None
        raise RuleError(f"Spark cannot evaluate the condition: {_first_line(error)}.") from None
    finally:
        quiet.setLevel(level)
    expression = analysed.condition()
    named = set()
    for node in _walk(expression):
        kind = node.getClass().getSimpleName()
        why = _FORBIDDEN.get(kind)
        if why:
            raise RuleError(f"The condition {why}, which a rule may not do.")
        if kind == "AttributeReference":
            named.add(node.name())
    if not expression.deterministic():
        raise RuleError(
            "The condition is not deterministic (it calls a random function), so a replay "
            "could not decide as the live job did."
        )
    return named


def new_rule(
    rule_id: str,
    condition: str,
    action: str,
    author: str,
    description: str = "",
    enabled: bool = True,
    previous: Rule | None = None,
    now: datetime | None = None,
) -> Rule:
    """The next version of a rule (version 1 if there is no ``previous``), checked in form.

    The condition's meaning is checked by :func:`check_condition`, which needs Spark.
    """
    _check_form(rule_id, action, author)
    return Rule(
        rule_id=rule_id,
        version=previous.version + 1 if previous else 1,
        condition=condition.strip(),
        action=action,
        description=description,
        author=author,
        enabled=enabled,
        published_time=schemas.format_time(now or datetime.now(UTC)),
    )


def _check_form(rule_id: str, action: str, author: str) -> None:
    """Refuse a rule id, action or author that a rule may not have."""
    if not _RULE_ID.match(rule_id or ""):
        raise RuleError(
            f"Rule id {rule_id!r} is not valid: use up to 64 letters, digits, '-', '_' or '.'."
        )
    if action not in ACTIONS:
        raise RuleError(f"Action {action!r} is not one of {', '.join(ACTIONS)}.")
    if not author:
        raise RuleError("A rule needs an author.")


def decode_rule(key: bytes | None, value: bytes | None) -> Rule:
    """The rule a record of the rules topic holds.

    Raises
    ------
    RuleError
        If the record is not a valid rule, saying why (the dead letter's reason).
    """
    if value is None:
        raise RuleError("The record has no value.")
    try:
        data = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RuleError(f"The record is not UTF-8 JSON ({error}).") from None
    if not isinstance(data, dict):
        raise RuleError("The record is not a JSON object.")
    for name, kind, required in _RULE_FIELDS:
        present = data.get(name) is not None
        if required and not present:
            raise RuleError(f"The record has no {name}.")
        # bool is an int in Python: a version or schema version of true is refused.
        wrong_bool = kind is int and isinstance(data.get(name), bool)
        if present and (wrong_bool or not isinstance(data[name], kind)):
            raise RuleError(f"The record's {name} is not a {getattr(kind, '__name__', kind)}.")
    if data["schema_version"] != RULE_SCHEMA_VERSION:
        raise RuleError(f"The record's schema_version {data['schema_version']} is not supported.")
    fields = {name: data[name] for name, _, needed in _RULE_FIELDS if needed}
    rule = Rule(**fields, description=data.get("description") or "")
    if key is not None and key.decode("utf-8", "replace") != rule.rule_id:
        raise RuleError(f"The record's key is not its rule_id {rule.rule_id}.")
    _check_form(rule.rule_id, rule.action, rule.author)
    return rule


@dataclass
class RuleSet:
    """The rules topic read to its end: each rule's newest version, and what was set aside."""

    rules: dict[str, Rule]
    #: The records that are not valid rules: (record, reason).
    refused: list[tuple[Any, str]]

    def enabled(self) -> list[Rule]:
        """The rules in effect, by id."""
        return [self.rules[k] for k in sorted(self.rules) if self.rules[k].enabled]


def read_rules(bootstrap_servers: str, topic: str, client_properties=None, check=None) -> RuleSet:
    """Read the rules topic from its oldest record to its end.

    Parameters
    ----------
    check : callable, optional
        Called with each rule's condition; a :class:`RuleError` it raises sets the record
        aside (for example :func:`check_condition` with a Spark session).
    """
    from fraudstream.kafka import clients

    consumer = clients.consumer(bootstrap_servers, client_properties)
    try:
        read = _read_to_end(consumer, topic)
    finally:
        consumer.close()
    if read is None:
        raise RuleError(
            f"Topic {topic} does not exist on {bootstrap_servers}; "
            "fraudstream kafka start creates it."
        )
    return rule_set(read, check=check)


def rule_set(records, check: Callable[[str], None] | None = None) -> RuleSet:
    """The :class:`RuleSet` of records (``key``, ``value``, ``partition``, ``offset``) in order.

    A record without a value (a tombstone) deletes its rule. A record that is not a
    valid rule, or whose condition ``check`` refuses, is set aside and leaves the rule's
    earlier version in effect.
    """
    rules: dict[str, Rule] = {}
    refused = []
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if record.value is None and record.key is not None:
            rules.pop(record.key.decode("utf-8", "replace"), None)
            continue
        try:
            rule = decode_rule(record.key, record.value)
            if check is not None:
                check(rule.condition)
        except RuleError as error:
            refused.append((record, str(error)))
            continue
        rules[rule.rule_id] = rule
    return RuleSet(rules=rules, refused=refused)


def publish(bootstrap_servers: str, topic: str, rule: Rule, client_properties=None) -> int:
    """Publish one rule version; return its offset once the brokers have it."""
    from fraudstream.kafka import clients

    producer = clients.producer(bootstrap_servers, client_properties)
    try:
        sent = producer.send(topic, key=rule.rule_id.encode("utf-8"), value=rule.encode())
        return sent.get(timeout=30).offset
    finally:
        producer.close()


def set_enabled(
    bootstrap_servers: str,
    topic: str,
    rule_id: str,
    enabled: bool,
    author: str,
    client_properties=None,
    check: Callable[[str], Any] | None = None,
) -> tuple[Rule, int | None]:
    """Enable or disable a rule: publish its next version with ``enabled``, by ``author``.

    What ``fraudstream rules enable|disable`` and the dashboard's rules page do. A rule
    that already is so is left as it is.

    Parameters
    ----------
    check : callable, optional
        Called with the condition before a rule is enabled (for example
        :func:`check_condition` with a Spark session): a rule written for older columns
        may no longer be valid. Disabling is never refused.

    Returns
    -------
    (Rule, int or None)
        The rule's newest version and its offset, or the current version and None when
        nothing was published.

    Raises
    ------
    UnknownRuleError
        If the topic holds no rule ``rule_id``.
    RuleError
        If ``check`` refuses the condition, or the topic does not exist.
    """
    rule = read_rules(bootstrap_servers, topic, client_properties).rules.get(rule_id)
    if rule is None:
        raise UnknownRuleError(f"No rule {rule_id} on {topic}.")
    if rule.enabled == enabled:
        return rule, None
    if enabled and check is not None:
        check(rule.condition)
    changed = new_rule(
        rule.rule_id,
        rule.condition,
        rule.action,
        author,
        rule.description,
        enabled=enabled,
        previous=rule,
    )
    return changed, publish(bootstrap_servers, topic, changed, client_properties)


def local_session(app_name: str):
    """A local Spark session of one core for :func:`check_condition`: no UI, quiet logs."""
    from fraudstream.spark import get_session

    # A command's output is its answer: no progress bars, no UI.
    quiet = {"spark.ui.showConsoleProgress": "false", "spark.ui.enabled": "false"}
    spark = get_session(app_name, "local[1]", quiet)
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# --- backtest -------------------------------------------------------------------


def rule_rows(payments, labels, label_delay_days: int, model=None):
    """Every payment of a history as a rule sees it: its fields, features and score.

    Parameters
    ----------
    payments, labels : DataFrame
        The history's events in the contract's schemas.
    label_delay_days : int
        The features' label delay (the model's, when a model is given).
    model : LoadedModel, optional
        Adds ``score`` (its probability) and ``model_alert``; without it both are null.

    Returns
    -------
    DataFrame
        :func:`rule_columns` plus ``day`` (UTC date) and ``is_fraud`` (any label says
        fraud), one row per transaction (its first copy).
    """
    from pyspark.sql import functions as F  # noqa: N812

    from fraudstream.ml import dataset

    first = payments.dropDuplicates(["transaction_id"])
    feature_rows = dataset.features_frame(payments, labels, label_delay_days)
    own = [name for name in schemas.PAYMENT_COLUMNS if name not in features.FEATURE_COLUMNS]
    frauds = labels.where(F.col("label") == "fraud").select("transaction_id").distinct()
    rows = (
        first.select(*own)
        .join(feature_rows, "transaction_id")
        .join(frauds.withColumn("is_fraud", F.lit(True)), "transaction_id", "left")
        .withColumn("is_fraud", F.coalesce(F.col("is_fraud"), F.lit(False)))
        .withColumn("day", F.to_date(F.col("event_time")))
    )
    if model is None:
        return rows.withColumn("score", F.lit(None).cast("double")).withColumn(
            "model_alert", F.lit(None).cast("boolean")
        )
    from pyspark.sql import types as T  # noqa: N812

    # A new schema: ``StructType.add`` would change the frame's own, which Spark caches.
    schema = T.StructType(
        [
            *rows.schema.fields,
            T.StructField("score", T.DoubleType()),
            T.StructField("model_alert", T.BooleanType()),
        ]
    )

    def scored(frames):
        for frame in frames:
            probability = model.score(frame[model.feature_columns])
            yield frame.assign(score=probability, model_alert=probability >= model.threshold)

    return rows.mapInPandas(scored, schema)


@dataclass
class Backtest:
    """A condition's results over a history."""

    #: Per UTC day: payments, frauds, hits, hits that are frauds, model alerts, and the
    #: hits the model alerted too (null without a model).
    days: pd.DataFrame
    payments: int
    frauds: int
    hits: int
    hit_frauds: int
    model_alerts: int | None
    overlap: int | None

    @property
    def precision(self) -> float:
        """The share of hits that are frauds (NaN without hits)."""
        return self.hit_frauds / self.hits if self.hits else float("nan")

    @property
    def recall(self) -> float:
        """The share of frauds the rule hits (NaN without frauds)."""
        return self.hit_frauds / self.frauds if self.frauds else float("nan")


def backtest(rows, condition: str) -> Backtest:
    """Evaluate ``condition`` with Spark over :func:`rule_rows` and count by day.

    A condition that is null for a row (a null field) does not hit, as in a filter.
    """
    from pyspark.sql import functions as F  # noqa: N812

    check_condition(rows.sparkSession, condition)
    with _without_ansi(rows.sparkSession):
        hits = rows.withColumn("hit", F.coalesce(F.expr(condition), F.lit(False)))
    alert = F.col("model_alert")
    days = (
        hits.groupBy("day")
        .agg(
            F.count(F.lit(1)).alias("payments"),
            F.sum(F.col("is_fraud").cast("long")).alias("frauds"),
            F.sum(F.col("hit").cast("long")).alias("hits"),
            F.sum((F.col("hit") & F.col("is_fraud")).cast("long")).alias("hit_frauds"),
            F.sum(alert.cast("long")).alias("model_alerts"),
            F.sum((F.col("hit") & alert).cast("long")).alias("overlap"),
        )
        .orderBy("day")
        .toPandas()
    )
    with_model = days["model_alerts"].notna().any()
    totals = {
        name: int(days[name].fillna(0).sum())
        for name in ("payments", "frauds", "hits", "hit_frauds")
    }
    return Backtest(
        days=days,
        **totals,
        model_alerts=int(days["model_alerts"].sum()) if with_model else None,
        overlap=int(days["overlap"].sum()) if with_model else None,
    )


@contextmanager
def _without_ansi(spark):
    """Build expressions in which an error on a row gives null, not a failed job.

    A condition that fails on some payment (a division by zero, a bad cast) must not stop
    the stream or a backtest: it is null there, and a null condition does not fire.
    Spark fixes the mode of an expression when it builds it, so the setting is needed
    only while the rules' columns are made.
    """
    key = "spark.sql.ansi.enabled"
    saved = spark.conf.get(key)
    spark.conf.set(key, "false")
    try:
        yield
    finally:
        spark.conf.set(key, saved)


def _read_to_end(consumer, topic: str) -> list | None:
    """Every record of ``topic`` from its oldest to its end now (None: no such topic)."""
    from kafka import TopicPartition

    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not parts:
        return None
    ends = consumer.end_offsets(parts)
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    records: list = []
    deadline = time.monotonic() + 30
    while any(consumer.position(tp) < ends[tp] for tp in parts):
        if time.monotonic() > deadline:
            raise RuleError(f"Could not read topic {topic} to its end within 30 s.")
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(
                r for r in batch if r.offset < ends[TopicPartition(r.topic, r.partition)]
            )
    return records
