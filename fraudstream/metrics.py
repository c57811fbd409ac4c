"""Prometheus metrics of the score job, the dashboard and the producer, in one place.

Each process has a registry of its own (:class:`ScoreMetrics`, :class:`DashboardMetrics`,
:class:`ProducerMetrics`), served on ``/metrics`` by :func:`serve` when its command is
given ``--metrics-port``. Names follow Prometheus' conventions: ``_total`` counters,
``_seconds`` histograms, base units. What each one means, and how to scrape them:
``docs/operating.md``.

The score job's numbers come from what the driver knows anyway, never from a Spark
action of their own: the micro-batch's counts, decisions and latencies from
:class:`fraudstream.scoring.processor.BatchProcessor` (:meth:`ScoreMetrics.record_batch`),
and the consumer lag and the state store's size from the query's progress, which Spark
hands to a :class:`StreamingQueryListener` after each micro-batch
(:meth:`ScoreMetrics.record_progress`).
"""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from fraudstream.errors import FraudstreamError

PREFIX = "fraudstream"

#: Micro-batch durations, in seconds: sub-second batches up to a catch-up's minutes.
BATCH_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)
#: Produce-to-output latencies, in seconds: live (seconds) to a catch-up's backlog (hours).
LATENCY_BUCKETS = (
    0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0,
    3600.0, 4 * 3600.0, 24 * 3600.0,
)  # fmt: skip

#: The operator name of ``transformWithState`` (the card operator) in a query's progress.
TRANSFORM_WITH_STATE = "transformWithStateExec"
#: RocksDB's custom metric of the state's SST files, in bytes, in a query's progress.
ROCKSDB_FILES_BYTES = "rocksdbSstFileSize"

#: The dead letters' reasons the driver tells apart (the rows carry the full sentence).
DEAD_LETTER_REASONS = {"invalid": "invalid", "duplicates": "duplicate", "late": "late"}


class MetricsError(FraudstreamError):
    """The metrics cannot be served as asked (a port in use)."""


def check_port(port: int, host: str = "127.0.0.1") -> None:
    """Raise :class:`MetricsError` now if ``host:port`` cannot be listened on.

    For a command to refuse a busy port before it starts its work (Spark, Kafka).
    """
    import socket

    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise _port_error(error, port, host) from None


def _port_error(error: OSError, port: int, host: str) -> MetricsError:
    if error.errno == errno.EADDRINUSE:
        return MetricsError(f"Port {port} on {host} is in use; choose another --metrics-port.")
    return MetricsError(f"Cannot serve metrics on {host}:{port} ({error.strerror}).")


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1"):
    """Serve ``registry`` on ``http://HOST:PORT/metrics`` from a daemon thread.

    Returns the server (``shutdown()`` stops it). A port another program holds raises
    :class:`MetricsError`, one sentence for the user.
    """
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise _port_error(error, port, host) from None
    return server


class BulkHistogram(Collector):
    """A histogram that takes a whole array of observations at once.

    ``prometheus_client``'s ``Histogram.observe`` takes one value per call, about a
    microsecond each: 100,000 payments a batch would cost 0.1 s of the driver's time.
    Here the bucket counts of a batch are one NumPy pass.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry=None
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(sorted(buckets), dtype=float)
        # One count per bound, and one for +Inf; not cumulative until collected.
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: Iterable[float] | np.ndarray) -> None:
        """Count every value (NaN ignored) into its bucket, ``le`` as Prometheus has it."""
        array = np.asarray(values, dtype=float)
        array = array[~np.isnan(array)]
        # side="left": a value equal to a bound falls into that bound's bucket (<=).
        counts = np.bincount(
            np.searchsorted(self.bounds, array, side="left"), minlength=len(self._counts)
        )
        with self._lock:
            self._counts += counts
            self._sum += float(array.sum())

    def collect(self):
        """The histogram as Prometheus reads it: cumulative buckets, count and sum."""
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        bounds = [*(f"{bound:g}" for bound in self.bounds), "+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], list(zip(bounds, cumulative.tolist(), strict=True)), total)
        yield family

    def describe(self):
        """The histogram's name, without its values (the registry checks names)."""
        return [HistogramMetricFamily(self.name, self.documentation)]


def _offsets(value: Any) -> dict[str, dict[str, int]]:
    """A Kafka source's offsets in a query progress: ``{topic: {partition: offset}}``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if not isinstance(value, dict):
        return {}
    return {
        topic: {str(p): int(o) for p, o in parts.items()}
        for topic, parts in value.items()
        if isinstance(parts, dict)
    }


class ScoreMetrics:
    """The score job's metrics, in a registry of their own."""

    def __init__(self, query_name: str | None = None) -> None:
        from prometheus_client import ProcessCollector

        self.query_name = query_name
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        self.payments_scored = Counter(
            f"{PREFIX}_payments_scored", "Payments scored.", registry=registry
        )
        self.alerts = Counter(
            f"{PREFIX}_alerts", "Payments alerted (review or decline).", registry=registry
        )
        self.decisions = Counter(
            f"{PREFIX}_decisions",
            "Payments scored, by decision (approve, review, decline).",
            ["decision"],
            registry=registry,
        )
        self.dead_letters = Counter(
            f"{PREFIX}_dead_letters",
            "Records set aside as dead letters, by reason (invalid, duplicate, late).",
            ["reason"],
            registry=registry,
        )
        self.labels = Counter(
            f"{PREFIX}_labels_read", "Label events read from the labels topic.", registry=registry
        )
        self.batch_duration = Histogram(
            f"{PREFIX}_batch_duration_seconds",
            "Micro-batch duration, from the start of foreachBatch to its outputs written.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.event_latency = BulkHistogram(
            f"{PREFIX}_event_latency_seconds",
            "Per payment scored: its Kafka timestamp (produce time) to its outputs written.",
            LATENCY_BUCKETS,
            registry=registry,
        )
        self.held = Gauge(
            f"{PREFIX}_held_payments",
            "Payments read but held for a later micro-batch (catch-up).",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            f"{PREFIX}_consumer_lag",
            "Records in a Kafka partition not yet read by the query: its latest offset "
            "minus the offset the last micro-batch read up to.",
            ["topic", "partition"],
            registry=registry,
        )
        self.state_rows = Gauge(
            f"{PREFIX}_state_rows",
            "Rows in the query's state store, all partitions, where Spark counts them "
            "(it does not for transformWithState, the card operator: see state_rows_updated).",
            registry=registry,
        )
        self.state_rows_updated = Gauge(
            f"{PREFIX}_state_rows_updated",
            "State rows the last micro-batch wrote (the card operator: cards it updated).",
            registry=registry,
        )
        self.state_bytes = Gauge(
            f"{PREFIX}_state_bytes",
            "Size of the query's state store, all partitions: RocksDB's SST files, "
            "or the memory it uses where it reports no files.",
            registry=registry,
        )
        self.state_memory_bytes = Gauge(
            f"{PREFIX}_state_memory_bytes",
            "Memory the query's state store uses, all partitions.",
            registry=registry,
        )
        self.model_info = Gauge(
            f"{PREFIX}_model_info",
            "1 for each model scoring: its name, version and role (champion, challenger).",
            ["name", "version", "role"],
            registry=registry,
        )
        self._models: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def record_batch(
        self,
        counts: dict[str, int],
        decisions: Sequence[str] | np.ndarray,
        latency_s: np.ndarray,
        duration_s: float,
        models: dict[str, Any],
    ) -> None:
        """Count one micro-batch, from what the driver knows of it.

        Parameters
        ----------
        counts : dict
            The batch's counts (``BatchResult.counts``): ``scored``, ``alerts``,
            ``invalid``, ``duplicates``, ``late``, ``labels``, ``held``.
        decisions : array of str
            Each scored payment's decision.
        latency_s : array of float
            Each scored payment's Kafka timestamp to its outputs written, in seconds.
        duration_s : float
            The batch's duration.
        models : dict
            Role (``champion``, ``challenger``) to the model scoring in it, or None.
        """
        self.payments_scored.inc(counts["scored"])
        self.alerts.inc(counts["alerts"])
        kinds, numbers = np.unique(np.asarray(decisions).astype(str), return_counts=True)
        for decision, number in zip(kinds, numbers, strict=True):
            self.decisions.labels(decision=decision).inc(int(number))
        for key, reason in DEAD_LETTER_REASONS.items():
            # Every reason appears from the first batch, at 0, so rate() sees its start.
            self.dead_letters.labels(reason=reason).inc(counts.get(key, 0))
        self.labels.inc(counts.get("labels", 0))
        self.held.set(counts.get("held", 0))
        self.batch_duration.observe(duration_s)
        self.event_latency.observe_many(latency_s)
        self.set_models(models)

    def set_models(self, models: dict[str, Any]) -> None:
        """Name the models scoring now (``model_info``), forgetting those replaced."""
        with self._lock:
            for role, model in models.items():
                now = None if model is None else (str(model.name), str(model.version))
                before = self._models.get(role)
                if now == before:
                    continue
                if before is not None:
                    self.model_info.remove(*before, role)
                if now is not None:
                    self.model_info.labels(*now, role).set(1)
                    self._models[role] = now
                else:
                    self._models.pop(role, None)

    def record_progress(self, progress: Any) -> None:
        """Take the consumer lag and the state's size from a ``StreamingQueryProgress``.

        Each Kafka source reports the offsets its batch read up to (``endOffset``) and
        the newest the topic had when the batch was planned (``latestOffset``); each
        stateful operator its rows and memory.
        """
        if self.query_name is not None and getattr(progress, "name", None) != self.query_name:
            return
        for source in getattr(progress, "sources", None) or ():
            latest = _offsets(getattr(source, "latestOffset", None))
            end = _offsets(getattr(source, "endOffset", None))
            for topic, parts in latest.items():
                for partition, newest in parts.items():
                    read = end.get(topic, {}).get(partition)
                    if read is not None:
                        self.consumer_lag.labels(topic=topic, partition=partition).set(
                            max(newest - read, 0)
                        )
        operators = getattr(progress, "stateOperators", None) or ()
        if operators:
            # transformWithState reports numRowsTotal as 0 (Spark 4.2): its rows are not
            # counted, so the gauge is left out rather than showing an empty state.
            counted = [op for op in operators if op.operatorName != TRANSFORM_WITH_STATE]
            if counted:
                self.state_rows.set(sum(int(op.numRowsTotal) for op in counted))
            self.state_rows_updated.set(sum(int(op.numRowsUpdated) for op in operators))
            memory = sum(int(op.memoryUsedBytes) for op in operators)
            self.state_memory_bytes.set(memory)
            files = [(op.customMetrics or {}).get(ROCKSDB_FILES_BYTES) for op in operators]
            on_disk = sum(int(size) for size in files if size is not None)
            self.state_bytes.set(on_disk if any(f is not None for f in files) else memory)

    def listener(self):
        """A ``StreamingQueryListener`` that feeds :meth:`record_progress`."""
        from pyspark.sql.streaming import StreamingQueryListener

        metrics = self

        class ProgressListener(StreamingQueryListener):
            def onQueryStarted(self, event):  # noqa: N802 (Spark's names)
                pass

            def onQueryProgress(self, event):  # noqa: N802
                metrics.record_progress(event.progress)

            def onQueryIdle(self, event):  # noqa: N802
                pass

            def onQueryTerminated(self, event):  # noqa: N802
                pass

        return ProgressListener()


class DashboardMetrics:
    """The dashboard service's metrics, in a registry of their own."""

    def __init__(self, window_size: Callable[[], float] | None = None) -> None:
        from prometheus_client import ProcessCollector

        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        self.alerts_received = Counter(
            f"{PREFIX}_dashboard_alerts_received",
            "Alerts read from the alerts topic and kept (duplicates dropped).",
            registry=registry,
        )
        self.verdicts = Counter(
            f"{PREFIX}_dashboard_verdicts",
            "Analysts' verdicts sent to the labels topic, by label (fraud, genuine).",
            ["label"],
            registry=registry,
        )
        self.rule_changes = Counter(
            f"{PREFIX}_dashboard_rule_changes",
            "Rules enabled or disabled from the rules page, by change (enabled, disabled).",
            ["change"],
            registry=registry,
        )
        self.open_streams = Gauge(
            f"{PREFIX}_dashboard_open_streams",
            "Pages open on the live alert stream.",
            registry=registry,
        )
        self.window_alerts = Gauge(
            f"{PREFIX}_dashboard_window_alerts",
            "Alerts held in the dashboard's window.",
            registry=registry,
        )
        if window_size is not None:
            self.window_alerts.set_function(window_size)


class ProducerMetrics(Collector):
    """``fraudstream produce``'s metrics, in a registry of their own.

    Send errors are the delivery failures the producers report (collected from them
    when scraped, see :meth:`watch`).
    """

    def __init__(self, target_rate: float | None = None) -> None:
        from prometheus_client import ProcessCollector

        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        self.records_sent = Counter(
            f"{PREFIX}_producer_records_sent",
            "Records queued to Kafka, by topic (payments, labels).",
            ["topic"],
            registry=registry,
        )
        self.rate = Gauge(
            f"{PREFIX}_producer_payments_per_second",
            "Payments sent a second since the run started (the progress line's rate).",
            registry=registry,
        )
        self.target_rate = Gauge(
            f"{PREFIX}_producer_target_payments_per_second",
            "The pace asked for with --rate; 0 when unpaced.",
            registry=registry,
        )
        self.target_rate.set(target_rate or 0)
        self._producers: list = []
        registry.register(self)

    def watch(self, producer) -> None:
        """Count ``producer``'s delivery failures (``BulkProducer.failures``) as send errors."""
        self._producers.append(producer)

    def collect(self):
        """The send errors, counted from the producers when scraped."""
        family = CounterMetricFamily(
            f"{PREFIX}_producer_send_errors",
            "Records Kafka did not acknowledge (delivery failures).",
        )
        family.add_metric([], sum(len(p.failures) for p in self._producers))
        yield family

    def describe(self):
        """The send errors' name, without its value."""
        return [CounterMetricFamily(f"{PREFIX}_producer_send_errors", "")]
