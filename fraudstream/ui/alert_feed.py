"""The alert feed: alerts read from the alert topic, checked, de-duplicated and kept in order.

Shared by ``fraudstream dashboard`` (a web page) and ``fraudstream alerts tail`` (a
terminal). Alerts arrive at least once (a re-run micro-batch sends its alerts again);
``alert_id`` is the same for the same transaction and model version, so both drop the
repeats. A record that is not an alert is skipped with its reason, never fatal: one bad
producer must not blind the fraud-ops team.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fraudstream import schemas

log = logging.getLogger(__name__)

#: Implied travel speed above which a leg between two card-present payments is not
#: physically possible for one card (faster than an airliner, time floored as in the
#: features), so the card was most likely cloned.
IMPOSSIBLE_SPEED_KMH = 1000.0

#: An alert's decisions: its tiers, the lighter first.
DECISIONS = ("review", "decline")

_TEXT_FIELDS = ("alert_id", "transaction_id", "card_id", "merchant_id", "model_name")
_NUMBER_FIELDS = ("score", "threshold", "amount")


class MalformedAlertError(ValueError):
    """A record on the alert topic that is not an alert; the message says why."""


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_alert(value: bytes | None) -> dict:
    """Decode and check one alert record's value.

    Parameters
    ----------
    value : bytes
        The Kafka record's value (UTF-8 JSON, as ``schemas.encode_alert`` writes it).

    Returns
    -------
    dict
        The contract's fields (``schemas.ALERT_COLUMNS``), JSON-ready: times as
        ISO-8601 UTC text, ``model_version`` as text, absent optional fields as None.

    Raises
    ------
    MalformedAlertError
        With the reason the record cannot be shown.
    """
    if value is None:
        raise MalformedAlertError("empty value")
    try:
        record = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedAlertError("not UTF-8 JSON") from None
    if not isinstance(record, dict):
        raise MalformedAlertError("not a JSON object")
    for name in _TEXT_FIELDS:
        if not isinstance(record.get(name), str) or not record[name]:
            raise MalformedAlertError(f"missing or non-text {name}")
    for name in _NUMBER_FIELDS:
        if not _is_number(record.get(name)):
            raise MalformedAlertError(f"missing or non-numeric {name}")
    version = record.get("model_version")
    if not isinstance(version, str | int) or isinstance(version, bool) or version == "":
        raise MalformedAlertError("missing model_version")
    reasons = record.get("reasons")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise MalformedAlertError("reasons is not a list of text")
    alert = {name: record.get(name) for name in schemas.ALERT_COLUMNS}
    for name in ("event_time", "scored_time"):
        try:
            alert[name] = schemas.format_time(schemas.parse_time(record[name]))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MalformedAlertError(f"{name} is not an ISO-8601 timestamp") from None
    alert["model_version"] = str(version)
    # Version 1 alerts carry no decision: each was a review.
    alert["decision"] = record.get("decision") or "review"
    if alert["decision"] not in DECISIONS:
        raise MalformedAlertError(f"decision {alert['decision']!r} is not review or decline")
    # Version 1 alerts name no rules: the model alone decided.
    fired = record.get("rules_fired") or []
    if not isinstance(fired, list) or not all(isinstance(r, str) for r in fired):
        raise MalformedAlertError("rules_fired is not a list of text")
    alert["rules_fired"] = fired
    for name in ("lat", "lon"):
        if not _is_number(alert[name]):
            alert[name] = None
    return alert


def format_line(alert: dict) -> str:
    """One readable terminal line: time, card token, amount, merchant, score, top reason."""
    when = alert["event_time"].replace("T", " ")[:19]
    amount = f"{alert['amount']:,.2f} {alert.get('currency') or ''}".rstrip()
    merchant = alert["merchant_id"]
    if alert.get("merchant_category"):
        merchant += f" ({alert['merchant_category']})"
    reason = alert["reasons"][0] if alert["reasons"] else "no reason given"
    decision = alert.get("decision") or "review"
    return (
        f"{when}Z  {alert['card_id']}  {amount}  {merchant}  score {alert['score']:.2f} "
        f"{decision}  {reason}"
    )


class SeenIds:
    """The alert ids seen lately, bounded: the oldest are forgotten first."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, alert_id: str) -> bool:
        """Remember an id; return False if it was already remembered."""
        if alert_id in self._ids:
            return False
        self._ids[alert_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True


@dataclass
class FeedCounters:
    """What the feed set aside, for the page and the logs."""

    malformed: int = 0
    duplicates: int = 0
    last_malformed_reason: str | None = None
    malformed_reasons: Counter = field(default_factory=Counter)


class AlertWindow:
    """The newest alerts, de-duplicated, ordered by when they reached the topic.

    Thread-safe: the Kafka thread adds, the web handlers read. Bounded to ``capacity``
    alerts (the oldest by Kafka timestamp leave first), so memory does not grow with
    the topic; ``alert_id``s are remembered ten times longer than alerts are kept, so a
    late repeat of an alert that has already left the window is still dropped.

    Each alert gets a ``cursor`` (Kafka timestamp, partition, offset; text that sorts
    in time order) that the page uses to ask for the alerts before it.
    """

    def __init__(self, capacity: int = 5000):
        self.capacity = capacity
        self.counters = FeedCounters()
        self._lock = threading.Lock()
        self._cursors: list[str] = []
        self._by_cursor: dict[str, dict] = {}
        self._by_id: dict[str, dict] = {}
        self._seen = SeenIds(capacity * 10)
        self._by_category: Counter = Counter()
        self._by_version: Counter = Counter()
        self._by_decision: Counter = Counter()
        # By the payment's UTC day (event time), so that "today" needs no pass over
        # the window: (day, decision) and (day, rule id).
        self._decisions_by_day: Counter = Counter()
        self._rule_hits_by_day: Counter = Counter()

    def add(self, alert: dict, timestamp_ms: int, partition: int, offset: int) -> dict | None:
        """Add an alert; return it as kept (with ``cursor`` and ``received_ms``), or None.

        None when it is a repeat of an alert seen before, or older than every alert of a
        full window.
        """
        with self._lock:
            if not self._seen.add(alert["alert_id"]):
                self.counters.duplicates += 1
                return None
            cursor = f"{timestamp_ms:015d}-{partition:06d}-{offset:019d}"
            kept = {**alert, "cursor": cursor, "received_ms": timestamp_ms, "verdict": None}
            bisect.insort(self._cursors, cursor)
            self._by_cursor[cursor] = kept
            self._by_id[kept["alert_id"]] = kept
            self._count(kept, +1)
            evicted = None
            while len(self._cursors) > self.capacity:
                evicted = self._by_cursor.pop(self._cursors.pop(0))
                del self._by_id[evicted["alert_id"]]
                self._count(evicted, -1)
            return None if evicted is kept else kept

    def _count(self, alert: dict, step: int) -> None:
        day = alert["event_time"][:10]
        counts = [
            (self._by_category, alert.get("merchant_category") or "unknown"),
            (self._by_version, f"{alert['model_name']} v{alert['model_version']}"),
            (self._by_decision, alert["decision"]),
            (self._decisions_by_day, (day, alert["decision"])),
        ]
        # A rule counts once per alert, whichever of its versions fired.
        fired = {name.split("@", 1)[0] for name in alert.get("rules_fired") or ()}
        counts.extend((self._rule_hits_by_day, (day, rule_id)) for rule_id in sorted(fired))
        for counter, key in counts:
            counter[key] += step
            if counter[key] <= 0:
                del counter[key]

    def malformed(self, reason: str) -> None:
        """Count a record that was skipped."""
        with self._lock:
            self.counters.malformed += 1
            self.counters.last_malformed_reason = reason
            self.counters.malformed_reasons[reason] += 1

    def newest(self, limit: int, before: str | None = None) -> list[dict]:
        """Up to ``limit`` alerts, newest first; only those older than cursor ``before``."""
        with self._lock:
            end = bisect.bisect_left(self._cursors, before) if before else len(self._cursors)
            chosen = self._cursors[max(0, end - limit) : end]
            return [dict(self._by_cursor[c]) for c in reversed(chosen)]

    def get(self, alert_id: str) -> dict | None:
        """A copy of alert ``alert_id``, or None if the window does not hold it."""
        with self._lock:
            alert = self._by_id.get(alert_id)
            return dict(alert) if alert else None

    def set_verdict(self, alert_id: str, label: str) -> None:
        """Remember an analyst's verdict, so a reloaded page shows it too."""
        with self._lock:
            if alert_id in self._by_id:
                self._by_id[alert_id]["verdict"] = label

    def __len__(self) -> int:
        return len(self._cursors)

    def rule_hits(self, day: str) -> dict[str, int]:
        """Per rule id, the alerts of the window that name it, among payments of ``day``.

        Parameters
        ----------
        day : str
            A UTC day as ``YYYY-MM-DD``, compared with each alert's event time.
        """
        with self._lock:
            return {rule: n for (on, rule), n in self._rule_hits_by_day.items() if on == day}

    def stats(self, now_ms: int | None = None, minutes: int = 30) -> dict:
        """Counters for the page: alerts per minute (newest first), by category and model.

        Per minute counts alerts by when they reached the topic, over the last
        ``minutes`` minutes; the other counts cover the alerts in the window.
        ``decisions_today`` counts those of the window whose payment happened on
        ``today`` (UTC, by event time).
        """
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        today = datetime.fromtimestamp(now_ms / 1000, UTC).date().isoformat()
        with self._lock:
            per_minute = [0] * minutes
            for cursor in reversed(self._cursors):
                age = now_ms - self._by_cursor[cursor]["received_ms"]
                bucket = max(age, 0) // 60_000
                if bucket >= minutes:
                    break
                per_minute[bucket] += 1
            return {
                "in_window": len(self._cursors),
                "capacity": self.capacity,
                "per_minute": per_minute,
                "by_category": dict(self._by_category.most_common()),
                "by_model_version": dict(self._by_version.most_common()),
                "today": today,
                "decisions": {d: self._by_decision[d] for d in DECISIONS},
                "decisions_today": {d: self._decisions_by_day[(today, d)] for d in DECISIONS},
                "duplicates": self.counters.duplicates,
                "malformed": self.counters.malformed,
                "last_malformed_reason": self.counters.last_malformed_reason,
            }


# --- reading the topic ------------------------------------------------------------


def partitions_of(consumer, topic: str) -> list:
    """The topic's partitions, sorted."""
    from kafka import TopicPartition

    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


def accept(record, window: AlertWindow) -> dict | None:
    """Parse one Kafka record into the window; log and count it if it is not an alert."""
    try:
        alert = parse_alert(record.value)
    except MalformedAlertError as error:
        window.malformed(str(error))
        # Where it is, not what it holds: the value may carry anything, card numbers too.
        log.warning(
            "Skipped record %s/%d@%d: %s.", record.topic, record.partition, record.offset, error
        )
        return None
    return window.add(alert, record.timestamp, record.partition, record.offset)


def tail(
    bootstrap_servers: str,
    topic: str,
    from_beginning: bool = False,
    max_alerts: int | None = None,
    client_properties: dict[str, str] | None = None,
    on_skip: Callable[[str], None] | None = None,
) -> Iterator[dict]:
    """Yield the alerts of a topic as they arrive, each once, in no consumer group.

    Parameters
    ----------
    bootstrap_servers : str
        Brokers to read from.
    topic : str
        The alert topic.
    from_beginning : bool
        Start at the oldest alert each partition holds; else at the end (new alerts only).
    max_alerts : int, optional
        Stop after this many alerts.
    on_skip : callable, optional
        Called with one sentence for each record that is not an alert.
    """
    from fraudstream.kafka import clients

    consumer = clients.consumer(bootstrap_servers, client_properties)
    seen = SeenIds(100_000)
    shown = 0
    try:
        parts = partitions_of(consumer, topic)
        consumer.assign(parts)
        if from_beginning:
            consumer.seek_to_beginning(*parts)
        else:
            consumer.seek_to_end(*parts)
        while max_alerts is None or shown < max_alerts:
            batches = consumer.poll(timeout_ms=500)
            records = sorted(
                (r for batch in batches.values() for r in batch),
                key=lambda r: (r.timestamp, r.partition, r.offset),
            )
            for record in records:
                try:
                    alert = parse_alert(record.value)
                except MalformedAlertError as error:
                    if on_skip:
                        where = f"{record.topic}/{record.partition}@{record.offset}"
                        on_skip(f"skipped {where}: {error}")
                    continue
                if not seen.add(alert["alert_id"]):
                    continue
                yield alert
                shown += 1
                if max_alerts is not None and shown >= max_alerts:
                    return
    finally:
        consumer.close()
