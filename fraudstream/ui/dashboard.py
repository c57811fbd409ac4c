"""The ops dashboard: the alert topic on a web page, live, with the card's trail and verdicts.

``fraudstream dashboard`` runs it. One process holds:

- a Kafka thread that reads the alert topic into a bounded :class:`AlertWindow`
  and commits how far it got under its own consumer group;
- a small Starlette app (served by uvicorn) with the page, a server-sent-event stream
  that pushes new alerts and counters, a paged list of older alerts, the card-location
  trail of an alert's card (read from the lake's ``card_locations`` view) and the
  analyst's verdict, published as a label event to the labels topic;
- a rules page: the fraud-ops rules of the rules topic with their hits today in the
  window, each enabled or disabled by publishing its next version, as
  ``fraudstream rules enable|disable`` does (:func:`rules.set_enabled`);
- a models page: the champion against the shadow challenger on the matured days, as
  ``fraudstream model compare`` weighs them (:func:`compare.live_comparison`);
- a model-health page: what ``./spark-submit.sh monitor`` wrote day by day (alert
  volume, matured precision, scores, drift) and its events (:func:`monitor.read_days`);
- a door (:class:`auth.Gate`): every page and API call names a user with a role
  (viewer, analyst, admin), by login, by a trusted proxy's header, or ``local`` on a
  dashboard for this machine alone; verdicts and rule changes record who made them.

Every dashboard reads every partition (manual assignment, not the group's share): each
open dashboard must show all alerts. The group only records how far the service got,
so that a restarted service resumes from there; on start it also reads back the newest
alerts of each partition, so its page is full at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

from fraudstream import config, schemas
from fraudstream.metrics import DashboardMetrics
from fraudstream.metrics import serve as serve_metrics
from fraudstream.scoring import rules
from fraudstream.ui import alert_feed, auth
from fraudstream.ui.alert_feed import IMPOSSIBLE_SPEED_KMH, AlertWindow

log = logging.getLogger(__name__)

DEFAULT_GROUP = "fraudstream-dashboard"
#: Alerts the page gets at once and per "older" page.
PAGE_SIZE = 100
#: Newest card locations shown in an alert's trail.
TRAIL_POINTS = 50
#: Days of card-location history read for a trail, before the alert's day.
TRAIL_DAYS = 30
#: How long a verdict waits for the labels topic before the page is told it failed.
VERDICT_TIMEOUT_S = 10
#: How long the models page's comparison is kept before it is made again.
COMPARISON_MAX_AGE_S = 60.0
#: Days the model-health page shows unless asked for others, and the most it may ask.
HEALTH_DAYS = 90
HEALTH_MAX_DAYS = 366
#: Features drawn in the model-health page's drift chart: the watched ones that drifted most.
HEALTH_DRIFT_FEATURES = 5
#: The Kafka header of a verdict's label event that names the user who gave it.
AUTHOR_HEADER = "author"


@dataclass(frozen=True)
class Settings:
    """How one dashboard runs; built by ``fraudstream dashboard``'s options."""

    bootstrap_servers: str
    alerts_topic: str
    labels_topic: str
    lake: Path
    rules_topic: str = config.TOPIC_RULES
    group: str = DEFAULT_GROUP
    host: str = "127.0.0.1"
    port: int = 8050
    #: Alerts kept in memory; the page can page back through all of them.
    window: int = 5000
    #: Alerts read back from the end of each partition at start.
    refill_per_partition: int = 500
    client_properties: tuple[tuple[str, str], ...] = ()
    #: Who may do what (--auth); the default is this machine's user alone, as admin.
    access: auth.Access = field(default_factory=auth.Access)
    #: Serve HTTPS with this certificate and key (PEM files).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: The registered model whose champion and shadow challenger the models page compares.
    model_name: str = "fraudstream"
    #: Serve Prometheus metrics on http://METRICS_HOST:METRICS_PORT/metrics; 0: none.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"


# --- pushing to open pages ------------------------------------------------------------


class Hub:
    """The open pages' event queues; the Kafka thread notifies them through their loop."""

    def __init__(self):
        self._lock = threading.Lock()
        self._queues: dict[asyncio.Queue, asyncio.AbstractEventLoop] = {}

    def subscribe(self) -> asyncio.Queue:
        """A new page's queue, fed through the running event loop (call it from the loop)."""
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            self._queues[queue] = asyncio.get_running_loop()
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        """Forget a closed page's queue."""
        with self._lock:
            self._queues.pop(queue, None)

    def publish(self, message: tuple[str, dict] | None) -> None:
        """Hand a message (kind, data) to every open page; None ends their streams."""
        with self._lock:
            targets = list(self._queues.items())
        for queue, loop in targets:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, message)
            except RuntimeError:
                # That page's loop has closed (the server is stopping): nothing to tell it.
                self.unsubscribe(queue)


# --- reading the alert topic ------------------------------------------------------------


def start_positions(consumer, parts: list, refill: int) -> tuple[dict, dict]:
    """Where to start each partition, and the group's committed offsets.

    Start at the committed offset (resume), or earlier to read back the newest
    ``refill`` alerts of the partition, whichever is earlier; a partition the group
    never committed starts ``refill`` alerts before its end.
    """
    begin = consumer.beginning_offsets(parts)
    end = consumer.end_offsets(parts)
    positions, committed = {}, {}
    for tp in parts:
        done = consumer.committed(tp)
        refill_from = max(begin[tp], end[tp] - refill)
        start = refill_from if done is None else min(done, refill_from)
        positions[tp] = max(start, begin[tp])
        committed[tp] = done if done is not None else refill_from
    return positions, committed


class AlertReader(threading.Thread):
    """Reads the alert topic into the window, tells the hub, commits how far it got.

    A broker that goes away is waited for: the Kafka client reconnects by itself, a
    failed commit is tried again with the next one, and any other error rebuilds the
    consumer after a pause (resuming from the offsets reached, not the committed ones).
    """

    COMMIT_EVERY_S = 1.0

    def __init__(self, settings: Settings, window: AlertWindow, hub: Hub, metrics=None):
        super().__init__(name="alert-reader", daemon=True)
        self.settings = settings
        self.window = window
        self.hub = hub
        self.metrics = metrics
        self.ready = threading.Event()
        self._stopping = threading.Event()
        self._positions: dict | None = None
        self._committed: dict = {}

    def stop(self) -> None:
        """Ask the thread to stop; it ends after its current poll."""
        self._stopping.set()

    def run(self) -> None:
        """Read until stopped; an error rebuilds the consumer after a pause."""
        while not self._stopping.is_set():
            try:
                self._consume()
            except Exception as error:  # the dashboard must outlive any of them
                log.warning("Alert reader failed (%s: %s); retrying.", type(error).__name__, error)
                self._stopping.wait(2.0)

    def _consume(self) -> None:
        from kafka.errors import KafkaError

        from fraudstream.kafka import clients

        consumer = clients.consumer(
            self.settings.bootstrap_servers,
            dict(self.settings.client_properties),
            group_id=self.settings.group,
            # Try a restarted broker again within seconds, not the client's 30 s.
            reconnect_backoff_max_ms=2000,
        )
        try:
            parts = alert_feed.partitions_of(consumer, self.settings.alerts_topic)
            consumer.assign(parts)
            if self._positions is None:
                self._positions, self._committed = start_positions(
                    consumer, parts, self.settings.refill_per_partition
                )
                log.info(
                    "Reading %s from %s (group %s).",
                    self.settings.alerts_topic,
                    {tp.partition: offset for tp, offset in self._positions.items()},
                    self.settings.group,
                )
            for tp in parts:
                consumer.seek(tp, self._positions.get(tp, 0))
            self.ready.set()
            last_commit = 0.0
            while not self._stopping.is_set():
                batches = consumer.poll(timeout_ms=200, max_records=2000)
                added = []
                for tp, records in batches.items():
                    for record in records:
                        kept = alert_feed.accept(record, self.window)
                        if kept is not None:
                            added.append(kept)
                    self._positions[tp] = records[-1].offset + 1
                if added:
                    self.hub.publish(("alerts", {"alerts": added}))
                    if self.metrics is not None:
                        self.metrics.alerts_received.inc(len(added))
                if time.monotonic() - last_commit >= self.COMMIT_EVERY_S:
                    try:
                        self._commit(consumer)
                    except KafkaError as error:
                        log.warning("Commit failed (%s); will retry.", type(error).__name__)
                    last_commit = time.monotonic()
            self._commit(consumer)
        finally:
            consumer.close(autocommit=False)

    def _commit(self, consumer) -> None:
        from kafka.structs import OffsetAndMetadata

        assert self._positions is not None  # set before anything is read
        # Never move the group back: the refill reads alerts the group already had.
        ahead = {
            tp: OffsetAndMetadata(offset, "", -1)
            for tp, offset in self._positions.items()
            if offset > self._committed.get(tp, -1)
        }
        if ahead:
            consumer.commit(ahead)
            self._committed.update({tp: meta.offset for tp, meta in ahead.items()})


# --- the card's trail -------------------------------------------------------------------


def card_trail(
    lake: Path, card_id: str, until: datetime | None = None, points: int = TRAIL_POINTS
) -> list[dict]:
    """The card's newest locations up to ``until``, oldest first, from the lake.

    Parameters
    ----------
    lake : Path
        The scoring job's output root (the ``card_locations`` view under it).
    card_id : str
        The card token.
    until : datetime, optional
        Only locations at or before this time (the alert's event time), read from
        the ``TRAIL_DAYS`` days of partitions before it.
    points : int
        At most this many, the newest.

    Returns
    -------
    list of dict
        ``event_time`` (ISO text), ``lat``, ``lon``, ``country``, ``merchant_id``,
        ``channel``, ``card_present``, ``km_from_previous``, ``speed_kmh`` and
        ``impossible`` (the leg from the previous card-present payment is faster than
        ``IMPOSSIBLE_SPEED_KMH``).
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    from fraudstream.scoring import viewfiles

    folder = Path(lake) / "card_locations"
    # The files that count: a day merged by the compact job is read once.
    paths = viewfiles.paths(lake, "card_locations") if folder.is_dir() else []
    if not paths:
        return []
    # The date folders are text (date=2018-04-01); read them as text, not guessed types.
    dataset = ds.dataset(
        paths,
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive"),
        partition_base_dir=str(folder),
    )
    wanted = ds.field("card_id") == card_id
    if until is not None:
        first_day = (until - timedelta(days=TRAIL_DAYS)).date().isoformat()
        wanted = (
            wanted
            & (ds.field("date") >= first_day)
            & (ds.field("date") <= until.date().isoformat())
            & (ds.field("event_time") <= pa.scalar(until, pa.timestamp("ms", tz="UTC")))
        )
    columns = [
        "event_time",
        "lat",
        "lon",
        "country",
        "merchant_id",
        "channel",
        "card_present",
        "km_from_previous",
        "speed_kmh",
    ]
    table = dataset.to_table(columns=columns, filter=wanted).sort_by("event_time")
    rows = table.slice(max(0, table.num_rows - points)).to_pylist()
    for row in rows:
        row["event_time"] = schemas.format_time(row["event_time"])
        for name in ("lat", "lon", "km_from_previous", "speed_kmh"):
            value = row[name]
            row[name] = None if value is None or not math.isfinite(value) else value
        row["impossible"] = bool(row["speed_kmh"] and row["speed_kmh"] > IMPOSSIBLE_SPEED_KMH)
    return rows


# --- verdicts ---------------------------------------------------------------------------


def label_event(alert: dict, label: str, now: datetime | None = None) -> dict:
    """The label event of an analyst's verdict on an alert (the labels topic's contract)."""
    if label not in schemas.LABELS:
        raise ValueError(f"label must be one of {', '.join(schemas.LABELS)}")
    return {
        "transaction_id": alert["transaction_id"],
        "card_id": alert["card_id"],
        "label": label,
        "source": "analyst",
        "reported_time": now or datetime.now(UTC),
        "scenario": None,
        "schema_version": schemas.SCHEMA_VERSION,
    }


# --- the web app ------------------------------------------------------------------------


def _static_dir() -> Path:
    return Path(str(resources.files("fraudstream.resources") / "dashboard"))


def _sentence(error: Exception) -> str:
    """One sentence for the page: a rule error's own, or which Kafka error it was."""
    if isinstance(error, rules.RuleError):
        return str(error)
    return f"The rules topic did not answer ({type(error).__name__})."


def _number(value):
    """A value as JSON takes it: numpy's scalars as Python's, NaN and NaT as None."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _sse(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class Dashboard:
    """The dashboard's parts: the window, the hub, the Kafka reader, the producer, the app."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.window = AlertWindow(settings.window)
        self.hub = Hub()
        # Counted always; served only with --metrics-port (:func:`serve`).
        self.metrics = DashboardMetrics(lambda: len(self.window))
        self.reader = AlertReader(settings, self.window, self.hub, self.metrics)
        self._producer = None
        self._producer_lock = threading.Lock()
        self._spark = None
        self._spark_lock = threading.Lock()
        self.gate = auth.Gate(settings.access)
        # The models page's comparison, when it was made (or why there is none).
        self._comparison: tuple[float, dict | Exception] | None = None
        self._comparison_lock = threading.Lock()
        self.app = self._build_app()

    def producer(self):
        """The producer of analysts' verdicts, made on first use and kept."""
        from fraudstream.kafka import clients

        with self._producer_lock:
            if self._producer is None:
                self._producer = clients.producer(
                    self.settings.bootstrap_servers,
                    dict(self.settings.client_properties),
                    # A verdict the page reports as not sent must not arrive later: the
                    # record expires (delivery timeout) before the page is told.
                    max_block_ms=5000,
                    request_timeout_ms=5000,
                    delivery_timeout_ms=VERDICT_TIMEOUT_S * 1000 - 2000,
                    linger_ms=0,
                    reconnect_backoff_max_ms=2000,
                )
            return self._producer

    def start(self) -> None:
        """Start the reader and connect the producer; a broker not there yet is not fatal."""
        from kafka.errors import KafkaError

        self.reader.start()
        try:
            # Connected now, while the broker is known to be there, so that a verdict
            # sent while it is away fails in seconds instead of hanging on first use.
            self.producer()
        except KafkaError as error:
            log.warning("No producer for verdicts yet (%s).", type(error).__name__)

    def stop(self) -> None:
        """End the open streams, stop the reader (it commits) and the producer."""
        self.hub.publish(None)
        self.reader.stop()
        self.reader.join(timeout=10)
        if self._producer is not None:
            self._producer.close(timeout=5)

    def publish_verdict(self, alert_id: str, label: str, author: str) -> dict:
        """Send the label event of a verdict, wait for the broker to have it, and remember it.

        The record's ``author`` header names the user who gave it.

        Raises
        ------
        KeyError
            If the alert is not in the window.
        ValueError
            If ``label`` is not ``fraud`` or ``genuine``.
        kafka.errors.KafkaError
            If the broker did not take it.
        """
        alert = self.window.get(alert_id)
        if alert is None:
            raise KeyError(alert_id)
        event = label_event(alert, label)
        future = self.producer().send(
            self.settings.labels_topic,
            key=alert["card_id"].encode("utf-8"),
            value=schemas.encode_label(event),
            headers=[(AUTHOR_HEADER, author.encode("utf-8"))],
        )
        metadata = future.get(timeout=VERDICT_TIMEOUT_S)
        self.window.set_verdict(alert_id, label)
        self.metrics.verdicts.labels(label=label).inc()
        self.hub.publish(("verdict", {"alert_id": alert_id, "label": label}))
        log.info(
            "Verdict %s on alert %s (card %s) by %s sent to %s/%d@%d.",
            label,
            alert_id,
            alert["card_id"],
            author,
            metadata.topic,
            metadata.partition,
            metadata.offset,
        )
        return {"alert_id": alert_id, "label": label, "offset": metadata.offset}

    def rule_list(self, now: datetime | None = None) -> dict:
        """The rules topic's rules, newest version of each, with their hits today.

        Raises
        ------
        RuleError
            If the rules topic does not exist.
        """
        found = rules.read_rules(
            self.settings.bootstrap_servers,
            self.settings.rules_topic,
            dict(self.settings.client_properties),
        )
        today = (now or datetime.now(UTC)).date().isoformat()
        hits = self.window.rule_hits(today)
        listed = []
        for rule_id in sorted(found.rules):
            rule = found.rules[rule_id]
            listed.append(
                {
                    "rule_id": rule.rule_id,
                    "version": rule.version,
                    "condition": rule.condition,
                    "action": rule.action,
                    "enabled": rule.enabled,
                    "description": rule.description,
                    "author": rule.author,
                    "published_time": rule.published_time,
                    "hits_today": hits.get(rule.rule_id, 0),
                }
            )
        return {
            "topic": self.settings.rules_topic,
            "today": today,
            "rules": listed,
            "set_aside": len(found.refused),
        }

    def check_condition(self, condition: str) -> None:
        """Check a condition with Spark before its rule is enabled, as the CLI does.

        The local session is made on the first enable and kept: a dashboard that never
        enables a rule never starts Spark.
        """
        with self._spark_lock:
            if self._spark is None:
                self._spark = rules.local_session("fraudstream-dashboard")
            rules.check_condition(self._spark, condition)

    def set_rule_enabled(self, rule_id: str, enabled: bool, author: str) -> dict:
        """Enable or disable a rule by publishing its next version, by ``author``.

        Raises
        ------
        UnknownRuleError
            If the rules topic holds no such rule.
        RuleError
            If the condition no longer checks (enabling), or there is no rules topic.
        """
        rule, offset = rules.set_enabled(
            self.settings.bootstrap_servers,
            self.settings.rules_topic,
            rule_id,
            enabled,
            author,
            dict(self.settings.client_properties),
            check=self.check_condition,
        )
        if offset is not None:
            self.metrics.rule_changes.labels(change="enabled" if enabled else "disabled").inc()
            log.info(
                "Rule %s v%d %s by %s, published to %s@%d.",
                rule.rule_id,
                rule.version,
                "enabled" if enabled else "disabled",
                author,
                self.settings.rules_topic,
                offset,
            )
        return {
            "rule_id": rule.rule_id,
            "version": rule.version,
            "enabled": rule.enabled,
            "changed": offset is not None,
        }

    def model_comparison(self, max_age_s: float = COMPARISON_MAX_AGE_S) -> dict:
        """Champion against shadow challenger on the lake's matured days, for the models page.

        Computed as ``fraudstream model compare`` does
        (:func:`fraudstream.ml.compare.live_comparison`), at most once every
        ``max_age_s`` seconds: reading the scored view and loading the challenger take
        seconds, and the numbers move once a day. The answer, or why there is none, is
        kept that long; a page asking while it is computed waits for it rather than
        computing it again.

        Returns
        -------
        dict
            ``model_name``; ``champion`` and ``challenger``, each with its ``version``,
            ``average_precision``, ``card_precision`` and ``decisions_per_day`` by tier;
            ``k``; ``card_precision_per_day``, a list of ``{day, champion, challenger}``;
            ``days`` and ``immature_days`` (ISO dates), ``delay_days``, ``payments``,
            ``frauds``, ``winner``, ``reason`` and ``as_of`` (ISO time).

        Raises
        ------
        CompareError
            When there is nothing to compare: no scored view or label store, no
            challenger score in the matured days, or no fraud label of them yet.
        FraudstreamError
            When the challenger's version cannot be loaded from the registry.
        """
        from fraudstream.errors import FraudstreamError

        with self._comparison_lock:
            kept = self._comparison
            if kept is None or time.monotonic() - kept[0] >= max_age_s:
                answer: dict | FraudstreamError
                try:
                    answer = self._compare_models()
                except FraudstreamError as error:
                    answer = error
                kept = self._comparison = (time.monotonic(), answer)
        if isinstance(kept[1], Exception):
            raise kept[1]
        return kept[1]

    def _compare_models(self) -> dict:
        """The comparison of :meth:`model_comparison`, computed now."""
        from fraudstream.ml import compare
        from fraudstream.scoring import views

        scored = self.settings.lake / views.SCORED
        if not scored.is_dir():
            # The library's sentence names the CLI's --out; the dashboard's is --lake.
            raise compare.CompareError(
                f"No scored view at {scored}: give --lake the score job's output root."
            )
        result = compare.live_comparison(self.settings.lake, self.settings.model_name)

        def metrics(model: compare.ModelMetrics) -> dict:
            return {
                "version": model.version,
                "average_precision": model.average_precision,
                "card_precision": model.card_precision,
                "decisions_per_day": dict(model.decisions_per_day),
            }

        champion = result.champion.card_precision_per_day
        challenger = result.challenger.card_precision_per_day
        return {
            "model_name": self.settings.model_name,
            "champion": metrics(result.champion),
            "challenger": metrics(result.challenger),
            "k": result.k,
            "card_precision_per_day": [
                {
                    "day": day.isoformat(),
                    "champion": float(champion[day]),
                    "challenger": float(challenger[day]),
                }
                for day in result.days
            ],
            "days": [day.isoformat() for day in result.days],
            "immature_days": [day.isoformat() for day in result.immature_days],
            "delay_days": result.delay_days,
            "payments": result.payments,
            "frauds": result.frauds,
            "winner": result.winner,
            "reason": result.reason,
            "as_of": schemas.format_time(result.as_of),
        }

    def model_health(self, days: int = HEALTH_DAYS) -> dict:
        """The monitor's newest ``days`` days in the lake, for the model-health page.

        Read from ``LAKE/monitoring`` (:func:`fraudstream.ml.monitor.read_days`): small
        files, one a day, so it is read again on every request.

        Returns
        -------
        dict
            ``lake`` and ``days_asked``; ``days``: one object a day, oldest first,
            with the ``daily`` columns
            (``date``, ``payments``, ``alerts``, decisions by tier, ``mature``,
            ``precision``, ``recall``, ``card_precision_at_k``, the score quantiles,
            ``model_version``, the baselines); ``k`` (of CP@k) and ``as_of`` (when
            the newest day's labels were taken as known);
            ``drift``: ``features`` (the watched features that drifted most),
            ``psi`` (each one's PSI a day, aligned with ``days``) and ``threshold``;
            ``thresholds``: the monitor's; ``events``: the model-health events of
            those days, newest first;
            ``message``: why there is nothing to show, else None. Missing numbers
            (an immature day's precision) are null.
        """
        from fraudstream.ml import monitor

        found = monitor.read_days(self.settings.lake, days)
        daily, drifted, events = found.daily, found.drift, found.events
        dates = [day.isoformat() for day in daily["date"]] if len(daily) else []
        shown = monitor.drifting_features(drifted, HEALTH_DRIFT_FEATURES)
        psi = {}
        if shown:
            table = drifted.pivot_table(index="date", columns="feature", values="psi")
            table = table.reindex(index=list(daily["date"]), columns=shown)
            psi = {name: [_number(v) for v in table[name]] for name in shown}
        columns = [
            "payments",
            "alerts",
            *schemas.DECISIONS,
            "mature",
            "frauds_known",
            "alerted_frauds",
            "precision",
            "recall",
            "card_precision_at_k",
            *monitor.SCORE_QUANTILES,
            "model_version",
            "alerts_median_7d",
            "precision_median_7d",
        ]
        rows = [
            {"date": day, **{name: _number(row[name]) for name in columns}}
            for day, row in zip(dates, daily.to_dict("records"), strict=True)
        ]
        listed = []
        if len(events):
            for event in events.sort_values(["date", "kind", "metric"], ascending=False).to_dict(
                "records"
            ):
                listed.append(
                    {
                        name: _number(event.get(name))
                        for name in ("day", "kind", "metric", "value", "threshold")
                    }
                    | {"model_version": str(event["model_version"]), "reason": event["reason"]}
                )
        message = None
        if not rows:
            message = (
                f"No monitor run yet: run ./spark-submit.sh monitor --out {self.settings.lake}."
            )
        return {
            "lake": str(self.settings.lake),
            "days_asked": days,
            "days": rows,
            "k": int(daily["k"].iloc[-1]) if len(daily) else None,
            "as_of": schemas.format_time(daily["as_of"].iloc[-1]) if len(daily) else None,
            "drift": {"features": shown, "psi": psi, "threshold": monitor.PSI_THRESHOLD},
            "thresholds": {
                "psi": monitor.PSI_THRESHOLD,
                "volume_factor": monitor.VOLUME_FACTOR,
                "precision_factor": monitor.PRECISION_FACTOR,
            },
            "events": listed,
            "message": message,
        }

    def _build_app(self):
        from kafka.errors import KafkaError
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import FileResponse, JSONResponse, StreamingResponse
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        static = _static_dir()

        async def index(request):
            return FileResponse(static / "index.html", headers={"Cache-Control": "no-cache"})

        async def rules_page(request):
            return FileResponse(static / "rules.html", headers={"Cache-Control": "no-cache"})

        async def login_page(request):
            return FileResponse(static / "login.html", headers={"Cache-Control": "no-cache"})

        async def rule_list(request):
            try:
                listed = await run_in_threadpool(self.rule_list)
            except (rules.RuleError, KafkaError) as error:
                return JSONResponse({"error": _sentence(error)}, status_code=503)
            return JSONResponse(listed)

        async def rule_enabled(request):
            # JSON only, as for verdicts: a cross-site form cannot post it unasked.
            if request.headers.get("content-type", "").split(";")[0] != "application/json":
                return JSONResponse({"error": "send JSON"}, status_code=415)
            try:
                enabled = (await request.json())["enabled"]
            except (ValueError, KeyError, TypeError):
                enabled = None
            if not isinstance(enabled, bool):
                return JSONResponse({"error": 'send {"enabled": true|false}'}, status_code=400)
            try:
                changed = await run_in_threadpool(
                    self.set_rule_enabled,
                    request.path_params["rule_id"],
                    enabled,
                    request.state.identity.name,
                )
            except rules.UnknownRuleError as error:
                return JSONResponse({"error": str(error)}, status_code=404)
            except rules.RuleError as error:
                return JSONResponse({"error": str(error)}, status_code=400)
            except KafkaError as error:
                log.warning("Rule change not published: %s.", type(error).__name__)
                return JSONResponse({"error": _sentence(error)}, status_code=503)
            return JSONResponse(changed)

        async def models_page(request):
            return FileResponse(static / "models.html", headers={"Cache-Control": "no-cache"})

        async def model_comparison(request):
            from fraudstream.errors import FraudstreamError
            from fraudstream.ml.compare import CompareError

            try:
                compared = await run_in_threadpool(self.model_comparison)
            except CompareError as error:
                return JSONResponse({"error": str(error)}, status_code=404)
            except FraudstreamError as error:
                return JSONResponse({"error": str(error)}, status_code=503)
            return JSONResponse(compared)

        async def health_page(request):
            return FileResponse(static / "health.html", headers={"Cache-Control": "no-cache"})

        async def model_health(request):
            asked = request.query_params.get("days", str(HEALTH_DAYS))
            if not asked.isdigit() or not 1 <= int(asked) <= HEALTH_MAX_DAYS:
                return JSONResponse(
                    {"error": f"days must be a whole number from 1 to {HEALTH_MAX_DAYS}."},
                    status_code=400,
                )
            return JSONResponse(await run_in_threadpool(self.model_health, int(asked)))

        async def alerts(request):
            try:
                limit = min(max(int(request.query_params.get("limit", PAGE_SIZE)), 1), 1000)
            except ValueError:
                return JSONResponse({"error": "limit must be a whole number"}, status_code=400)
            before = request.query_params.get("before") or None
            page = self.window.newest(limit, before)
            return JSONResponse({"alerts": page, "more": bool(page) and len(page) == limit})

        async def stats(request):
            return JSONResponse(self.window.stats())

        async def stream(request):
            queue = self.hub.subscribe()
            self.metrics.open_streams.inc()

            async def events():
                try:
                    # The newest alerts first: a page that (re)connects starts complete,
                    # and nothing that arrived before it subscribed is missed.
                    yield _sse("snapshot", {"alerts": self.window.newest(PAGE_SIZE)})
                    yield _sse("stats", self.window.stats())
                    last_stats, stats_due = time.monotonic(), False
                    while True:
                        try:
                            message = await asyncio.wait_for(queue.get(), timeout=1.0)
                        except TimeoutError:
                            message = ("idle", {})
                        if message is None:
                            return
                        added = []
                        while message is not None:
                            kind, data = message
                            if kind == "alerts":
                                added.extend(data["alerts"])
                            elif kind == "verdict":
                                yield _sse("verdict", data)
                            message = queue.get_nowait() if not queue.empty() else None
                        if len(added) > PAGE_SIZE:
                            # A burst: one snapshot is cheaper for the page than a flood.
                            yield _sse("snapshot", {"alerts": self.window.newest(PAGE_SIZE)})
                        elif added:
                            yield _sse("alerts", {"alerts": added})
                        # Counters at most twice a second in a burst (they cost a pass
                        # over the window), and every 5 s to keep the connection alive.
                        stats_due = stats_due or bool(added)
                        since = time.monotonic() - last_stats
                        if (stats_due and since >= 0.5) or since >= 5:
                            yield _sse("stats", self.window.stats())
                            last_stats, stats_due = time.monotonic(), False
                finally:
                    self.hub.unsubscribe(queue)
                    self.metrics.open_streams.dec()

            return StreamingResponse(
                events(),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )

        async def trail(request):
            alert = self.window.get(request.path_params["alert_id"])
            if alert is None:
                return JSONResponse({"error": "alert not in the window"}, status_code=404)
            until = schemas.parse_time(alert["event_time"])
            points = await run_in_threadpool(
                card_trail, self.settings.lake, alert["card_id"], until
            )
            return JSONResponse(
                {
                    "card_id": alert["card_id"],
                    "points": points,
                    "impossible_speed_kmh": IMPOSSIBLE_SPEED_KMH,
                }
            )

        async def verdict(request):
            # JSON only: a cross-site form cannot post it without the browser asking first.
            if request.headers.get("content-type", "").split(";")[0] != "application/json":
                return JSONResponse({"error": "send JSON"}, status_code=415)
            try:
                body = await request.json()
                label = body["label"]
            except (ValueError, KeyError, TypeError):
                return JSONResponse({"error": 'send {"label": "fraud"|"genuine"}'}, 400)
            try:
                sent = await run_in_threadpool(
                    self.publish_verdict,
                    request.path_params["alert_id"],
                    label,
                    request.state.identity.name,
                )
            except KeyError:
                return JSONResponse({"error": "alert not in the window"}, status_code=404)
            except ValueError as error:
                return JSONResponse({"error": str(error)}, status_code=400)
            except KafkaError as error:
                log.warning("Verdict not sent: %s.", type(error).__name__)
                return JSONResponse(
                    {"error": f"the labels topic did not take it ({type(error).__name__})"},
                    status_code=503,
                )
            return JSONResponse(sent)

        gate = self.gate
        viewer, analyst, admin = auth.ROLES

        def see(handler, page=False):
            return gate.guard(viewer, handler, page)

        return Starlette(
            routes=[
                # Open: the login page, its API, and the static files (no data in them).
                Route("/login", login_page),
                Route("/api/login", gate.login, methods=["POST"]),
                Mount("/static", StaticFiles(directory=static), name="static"),
                # Everything else names a user; changes need the role that may make them.
                Route("/", see(index, page=True)),
                Route("/rules", see(rules_page, page=True)),
                Route("/api/me", see(gate.me)),
                Route("/api/logout", see(gate.logout), methods=["POST"]),
                Route("/api/rules", see(rule_list)),
                Route("/models", see(models_page, page=True)),
                Route("/api/models", see(model_comparison)),
                Route("/health", see(health_page, page=True)),
                Route("/api/model-health", see(model_health)),
                Route(
                    "/api/rules/{rule_id}/enabled",
                    gate.guard(admin, rule_enabled),
                    methods=["POST"],
                ),
                Route("/api/alerts", see(alerts)),
                Route("/api/stats", see(stats)),
                Route("/api/stream", see(stream)),
                Route("/api/alerts/{alert_id}/trail", see(trail)),
                Route(
                    "/api/alerts/{alert_id}/verdict",
                    gate.guard(analyst, verdict),
                    methods=["POST"],
                ),
            ]
        )


def server(dashboard: Dashboard):
    """A uvicorn server for the dashboard's app (run it with ``.run()``)."""
    import uvicorn

    settings = dashboard.settings
    config = uvicorn.Config(
        dashboard.app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_level="warning",
        # Open event streams never end by themselves; do not wait for them at shutdown.
        timeout_graceful_shutdown=1,
    )
    return uvicorn.Server(config)


def serve(settings: Settings) -> None:
    """Run the dashboard until interrupted (Ctrl-C), then commit and stop."""
    dashboard = Dashboard(settings)
    if settings.metrics_port:
        serve_metrics(dashboard.metrics.registry, settings.metrics_port, settings.metrics_host)
    dashboard.start()
    web = server(dashboard)
    scheme = "https" if settings.tls_cert else "http"
    log.info("Dashboard on %s://%s:%d/", scheme, settings.host, settings.port)
    try:
        web.run()
    except KeyboardInterrupt:
        # uvicorn stops gracefully on Ctrl-C, then raises it again for the caller: done.
        pass
    finally:
        dashboard.stop()
