"""The rules a scoring job applies, and when: its rules log, and Spark's decisions.

The rules topic is compacted: it keeps each rule's newest version only, so a replay
could not know which versions decided a payment months ago. The scoring job therefore
logs each rule set it starts to apply, with the payments offsets from which it applies,
on a topic kept forever (``fraud-rules-applied``, key: the job's output root, value
:class:`Applied`). A payment's rules are those of the last record whose offset for the
payment's partition is at or below the payment's offset. The live job decides by this
(:class:`LiveRules`), and a rebuild reads the same records and decides the same
(:class:`ReplayedRules`).

Before each micro-batch the live job reads the rules topic to its end. When the rules
enabled differ from those in effect, it logs them from the batch's first offsets, so the
batch after a rule is published applies it, with no restart. The decisions themselves
are Spark's (:func:`decide`): each condition is a Spark SQL expression over the
payment's row, evaluated by Spark's engine on the executors.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from kafka.errors import KafkaError

from fraudstream import schemas
from fraudstream.scoring.rules import (
    ACTIONS,
    Rule,
    RuleError,
    _read_to_end,
    _without_ansi,
    check_condition,
    rule_set,
)

_LOG = logging.getLogger(__name__)

#: The applied-rules record's schema version.
APPLIED_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Applied:
    """A rule set a scoring job applies from one micro-batch on (a rules-log record)."""

    #: The micro-batch from which the rules apply.
    batch_id: int
    #: Per partition of the payments topic, the first offset the rules decide (none
    #: named: from offset 0).
    from_offsets: dict[int, int]
    #: The rules enabled then, by id.
    rules: tuple[Rule, ...]
    applied_time: str

    def encode(self) -> bytes:
        """The record's value: UTF-8 JSON."""
        return json.dumps(
            {
                "batch_id": self.batch_id,
                "from_offsets": {str(p): o for p, o in sorted(self.from_offsets.items())},
                "rules": [asdict(rule) for rule in self.rules],
                "applied_time": self.applied_time,
                "schema_version": APPLIED_SCHEMA_VERSION,
            },
            ensure_ascii=False,
        ).encode("utf-8")

    @classmethod
    def decode(cls, value: bytes) -> Applied:
        """The record's value back (written by :meth:`encode`)."""
        data = json.loads(value.decode("utf-8"))
        return cls(
            batch_id=int(data["batch_id"]),
            from_offsets={int(p): int(o) for p, o in data["from_offsets"].items()},
            rules=tuple(Rule(**rule) for rule in data["rules"]),
            applied_time=data["applied_time"],
        )


def applied_history(records: list[Applied]) -> list[Applied]:
    """The rule sets in effect, in order, from a job's rules-log records in topic order.

    A record for micro-batch ``b`` replaces every earlier record for ``b`` or later: the
    batch ran again after a crash, or a new checkpoint started over from batch 0.
    """
    kept: list[Applied] = []
    for record in records:
        kept = [k for k in kept if k.batch_id < record.batch_id]
        kept.append(record)
    return kept


def log_key(root) -> bytes:
    """The rules-log key of a job's output root: its absolute path, or its URI."""
    from pathlib import Path

    from fraudstream import storage

    return str(root if storage.is_uri(root) else Path(root).resolve()).encode("utf-8")


def read_log(bootstrap_servers: str, topic: str, key: bytes, client_properties=None):
    """A job's rules-log records (:class:`Applied`) in topic order; none if no topic."""
    from fraudstream.kafka import clients

    consumer = clients.consumer(bootstrap_servers, client_properties)
    try:
        records = _read_to_end(consumer, topic) or []
    finally:
        consumer.close()
    ordered = sorted((r for r in records if r.key == key), key=lambda r: r.offset)
    return [Applied.decode(r.value) for r in ordered]


def fired_name(rule: Rule) -> str:
    """How a fired rule is named in the views and alerts: ``rule_id@version``."""
    return f"{rule.rule_id}@{rule.version}"


def rule_reasons(history: list[Applied]) -> dict[str, str]:
    """Each rule version of ``history``, by :func:`fired_name`: the alert reason it gives."""
    return {
        fired_name(rule): (
            f"rule {rule.rule_id} v{rule.version} ({rule.action}): "
            f"{rule.description or rule.condition}"
        )
        for applied in history
        for rule in applied.rules
    }


def _offset_of(offsets: dict[int, int]):
    """The Spark column: the offset ``offsets`` names for each row's partition (else 0)."""
    from pyspark.sql import functions as F  # noqa: N812

    column = F.lit(0).cast("long")
    for partition, offset in sorted(offsets.items()):
        column = F.when(F.col("partition") == partition, F.lit(offset)).otherwise(column)
    return column


def decide(rows, history: list[Applied], threshold: float, decline_threshold: float | None):
    """``rows`` with ``rules_fired`` and ``decision``, evaluated by Spark.

    ``rows`` hold :func:`rule_columns` and each payment's ``partition`` and ``offset``.
    Each payment is decided by the rules of its record of ``history`` (see above): a
    rule fires where its condition holds (null, or an error such as a division by zero,
    counts as false). Then:

    - an ``allow`` rule that fires approves the payment, whatever the model says;
    - otherwise the strongest of the model's band (``decline`` from
      ``decline_threshold``, ``review`` from ``threshold``) and the fired rules'
      actions decides: decline over review over approve.
    """
    from pyspark.sql import functions as F  # noqa: N812

    # Which records decide each row, for each rule version they hold.
    ranges: dict[str, list] = {}
    versions: dict[str, Rule] = {}
    offset = F.col("offset")
    for i, applied in enumerate(history):
        inside = offset >= _offset_of(applied.from_offsets)
        if i + 1 < len(history):
            inside &= offset < _offset_of(history[i + 1].from_offsets)
        for rule in applied.rules:
            versions[fired_name(rule)] = rule
            ranges.setdefault(fired_name(rule), []).append(inside)
    fired_by_action: dict[str, list] = {action: [] for action in ACTIONS}
    names = []
    with _without_ansi(rows.sparkSession):
        for name, rule in versions.items():
            applies = ranges[name][0]
            for other in ranges[name][1:]:
                applies |= other
            fires = applies & F.coalesce(F.expr(rule.condition), F.lit(False))
            fired_by_action[rule.action].append(fires)
            names.append(F.when(fires, F.lit(name)))
        score = F.col("score")
        decline = float("inf") if decline_threshold is None else max(decline_threshold, threshold)
        model = F.when(score >= decline, "decline").when(score >= threshold, "review")

        def any_of(columns):
            found = F.lit(False)
            for column in columns:
                found |= column
            return found

        decision = (
            F.when(any_of(fired_by_action["allow"]), "approve")
            .when(any_of(fired_by_action["decline"]) | (model == "decline"), "decline")
            .when(any_of(fired_by_action["review"]) | (model == "review"), "review")
            .otherwise("approve")
        )
        fired = (
            F.filter(F.array(*names), lambda x: x.isNotNull())
            if names
            else F.array().cast("array<string>")
        )
        return rows.withColumn("rules_fired", fired).withColumn("decision", decision)


class ReplayedRules:
    """The rules a live job applied, for a replay of its payments (a rebuild)."""

    def __init__(self, history: list[Applied]):
        self.history = history

    def for_batch(self, batch_id: int, next_offsets: dict[int, int]) -> list[Applied]:
        """Every rule set the live job applied: the offsets say which payments each decides."""
        return self.history

    def close(self) -> None:
        """Nothing to close."""


class LiveRules:
    """The rules topic, followed between micro-batches, and the job's rules log.

    Parameters
    ----------
    spark : SparkSession
        Checks each rule's condition once (:func:`check_condition`).
    key : bytes
        The job's rules-log key (:func:`log_key` of its output root).
    dead_letter_topic : str
        Where a record of the rules topic that is not a valid rule goes, with its reason.
    """

    def __init__(
        self,
        spark,
        bootstrap_servers: str,
        rules_topic: str,
        log_topic: str,
        key: bytes,
        dead_letter_topic: str,
        log=_LOG.info,
    ):
        from fraudstream.kafka import clients

        self.spark = spark
        self.bootstrap_servers = bootstrap_servers
        self.rules_topic = rules_topic
        self.log_topic = log_topic
        self.key = key
        self.dead_letter_topic = dead_letter_topic
        self.log = log
        self.records = read_log(bootstrap_servers, log_topic, key)
        self.consumer = clients.consumer(bootstrap_servers)
        self.producer = None
        self._checked: dict[str, str | None] = {}
        self._refused_sent: set[tuple[int, int]] = set()
        self._missing_told = False

    def _check(self, condition: str) -> None:
        if condition not in self._checked:
            try:
                check_condition(self.spark, condition)
                self._checked[condition] = None
            except RuleError as error:
                self._checked[condition] = str(error)
        reason = self._checked[condition]
        if reason is not None:
            raise RuleError(reason)

    def _producer(self):
        from fraudstream.kafka import clients

        if self.producer is None:
            self.producer = clients.producer(self.bootstrap_servers)
        return self.producer

    def current(self) -> tuple[Rule, ...]:
        """The rules enabled on the rules topic now (none if there is no such topic)."""
        found = _read_to_end(self.consumer, self.rules_topic)
        if found is None:
            if not self._missing_told:
                self.log(
                    f"rules: no topic {self.rules_topic}; scoring by the model's bands "
                    "(fraudstream kafka start creates it)"
                )
                self._missing_told = True
            return ()
        rules = rule_set(found, check=self._check)
        for record, reason in rules.refused:
            where = (record.partition, record.offset)
            if where in self._refused_sent:
                continue
            self.log(
                f"rules: record at partition {record.partition} offset {record.offset} of "
                f"{self.rules_topic} set aside: {reason}"
            )
            headers = [
                ("fraudstream.reason", reason.encode("utf-8")),
                ("fraudstream.topic", self.rules_topic.encode("utf-8")),
                ("fraudstream.partition", str(record.partition).encode()),
                ("fraudstream.offset", str(record.offset).encode()),
            ]
            self._producer().send(
                self.dead_letter_topic, key=record.key, value=record.value, headers=headers
            ).get(timeout=30)
            self._refused_sent.add(where)
        return tuple(rules.enabled())

    def for_batch(self, batch_id: int, next_offsets: dict[int, int]) -> list[Applied]:
        """The rule sets that decide micro-batch ``batch_id``'s payments.

        ``next_offsets``: the first payments offset of the batch per partition (the state
        after the batch before). When the rules enabled now differ from those in effect,
        or a run of this batch before a crash logged others, the rules now are logged
        from these offsets before the batch's outputs are written.
        """
        everything = applied_history(self.records)
        history = [a for a in everything if a.batch_id < batch_id]
        in_effect = history[-1].rules if history else ()
        try:
            current = self.current()
        except (RuleError, KafkaError) as error:
            # The rules topic could not be read now: the rules in effect stay, and the
            # stream goes on; the next batch reads the topic again.
            self.log(f"rules: {self.rules_topic} not read ({error}); the rules in effect stay")
            current = in_effect
        if current == in_effect and len(history) == len(everything):
            return history
        record = Applied(
            batch_id=batch_id,
            from_offsets=dict(next_offsets),
            rules=current,
            applied_time=schemas.format_time(datetime.now(UTC)),
        )
        self._publish(record)
        self.records.append(record)
        names = ", ".join(fired_name(rule) for rule in current) or "none"
        self.log(f"rules: from micro-batch {batch_id} on, {len(current)} rules apply: {names}")
        return [*history, record]

    def _publish(self, record: Applied) -> None:
        from fraudstream.ops import broker

        # Kept forever, as kafka start makes it: a replay needs every record.
        broker.create_topics(self.bootstrap_servers, {self.log_topic: broker.KEEP_FOREVER})
        self._producer().send(self.log_topic, key=self.key, value=record.encode()).get(timeout=30)

    def close(self) -> None:
        """Close the Kafka clients."""
        self.consumer.close()
        if self.producer is not None:
            self.producer.close()
