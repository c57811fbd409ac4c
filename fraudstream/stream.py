"""The streaming scorer: what each micro-batch of payment records becomes.

The scoring job (``jobs/score.py``) runs one Structured Streaming query: Spark's Kafka
source on ``payments``, and a ``foreachBatch`` function that hands each micro-batch to
:class:`BatchProcessor`. Per batch, on the driver and vectorised:

1. parse and validate each record with the contract (:mod:`fraudstream.schemas`);
   invalid, duplicate and late records become dead letters with their reason;
2. read the label events that arrived on ``fraud-labels`` since the last batch and
   turn fraud reports into fraud facts (label joined to its payment);
3. compute the features with :func:`fraudstream.features.compute` and the state the
   previous batch left: the same code as training, so the same values;
4. score with the model the registry alias points at now;
5. write every view for the batch (alerts, card-location history, scored
   transactions, dead letters) as Parquet files named by the batch id, so that a
   batch run again after a crash replaces its own files; then send alerts and dead
   letters to Kafka; then save the state as of the end of the batch.

Why this shape. Per-card state in Spark's Python stateful operators pays a fixed cost
per key and micro-batch (about 2,000 events/s on two cores); one vectorised pass per
micro-batch over all cards costs per event instead (see ``bench/README.md``). The
price: the state lives in the driver, so one driver holds every card's last 30 days
(about 4 KB a card; sized in the README).

With ``--card-state operator`` the cards' state is the card operator's, on the
executors (:mod:`fraudstream.cardstate`), and so is the per-payment work: the driver
decides from a summary of each micro-batch and writes what the executors scored
(:meth:`BatchProcessor.process_on_executors`, :mod:`fraudstream.cardstate.batch`).

Guarantees. Spark's checkpoint records each batch's Kafka offsets before it runs and
commits it after ``foreachBatch`` returns; after a crash the uncommitted batch runs
again with the same offsets and the state saved after the batch before it. Its
Parquet files overwrite those of the first attempt: Parquet views are exactly once.
Kafka sends are at least once; ``alert_id`` is deterministic so consumers drop
duplicates.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.feather as feather
import pyarrow.parquet as pq

from fraudstream import features, schemas, storage, viewfiles
from fraudstream.features import DAY_MS, FeatureState

#: The views the job writes, one folder each under the output root.
ALERTS = "alerts"
CARD_LOCATIONS = "card_locations"
SCORED = "scored"
DEAD_LETTERS = "dead_letters"
VIEWS = (ALERTS, CARD_LOCATIONS, SCORED, DEAD_LETTERS)

#: How many reasons an alert carries.
TOP_REASONS = 3
#: Default allowed lateness: a payment older than the newest event time seen minus
#: this is set aside, because the state has moved past it.
DEFAULT_MAX_LATENESS_HOURS = 24
#: State snapshots kept; the job needs only the newest committed one.
SNAPSHOTS_KEPT = 3
#: Micro-batches between state snapshots: fewer snapshots cost less per batch, more
#: re-reading from Kafka after a crash (at most this many batches).
DEFAULT_SNAPSHOT_EVERY = 10

#: How long a micro-batch waits on Kafka (labels read, alerts acknowledged) before failing.
KAFKA_TIMEOUT_S = 120

#: Set to a batch id to kill the driver after that batch's outputs are written (tests).
CRASH_AT_BATCH_ENV = "FRAUDSTREAM_CRASH_AT_BATCH"

REASON_DUPLICATE = "duplicate transaction_id (already scored)"
REASON_LATE = (
    "late: event_time is more than {hours:g} h before the newest event seen in its "
    "partition ({newest})"
)


# --- the state ------------------------------------------------------------------------


def _empty_transactions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": pd.Series(dtype=object),
            "card_id": pd.Series(dtype=object),
            "merchant_id": pd.Series(dtype=object),
            "tx_day": pd.Series(dtype=np.int64),
            "reported": pd.Series(dtype=bool),
        }
    )


def _empty_pending() -> pd.DataFrame:
    return pd.DataFrame(
        {"transaction_id": pd.Series(dtype=object), "report_ms": pd.Series(dtype=np.int64)}
    )


@dataclass
class StreamState:
    """Everything the job carries from one micro-batch to the next.

    Attributes
    ----------
    features : FeatureState
        Per-card and per-merchant state of the feature definition.
    transactions : DataFrame
        ``transaction_id, card_id, merchant_id, tx_day, reported``: the payments of the
        last ``label_delay_days + 30`` days, to join fraud labels to (a label names
        only the transaction and card) and to recognise duplicates.
    pending : DataFrame
        ``transaction_id, report_ms``: fraud reports whose payment has not been seen
        yet; dropped once the stream's event time has passed them by the lateness.
    label_offsets : dict
        Next offset to read, per partition of the labels topic.
    newest_event_ms : int
        The newest event time seen, in ms (-1 before the first payment); state
        expires by it.
    newest_by_partition : dict
        The newest event time seen per partition of the payments topic; lateness is
        measured against it. Producers key payments by card, so a partition holds each
        of its cards' payments in order, while partitions may run hours apart when a
        history is replayed fast.
    batch_id : int
        The micro-batch this state is the result of (-1: none yet).
    held : DataFrame
        Payment records read but not yet scored, because another partition has not
        reached their day yet (:func:`hold_back`). With the card operator, only their
        ``topic, partition, offset, timestamp_ms, event_ms, merchant_id``: the rows
        themselves wait in the checkpoint.
    next_offsets : dict
        The next payments offset per partition, after the records read so far.
    """

    features: FeatureState = field(default_factory=FeatureState)
    transactions: pd.DataFrame = field(default_factory=_empty_transactions)
    pending: pd.DataFrame = field(default_factory=_empty_pending)
    label_offsets: dict[int, int] = field(default_factory=dict)
    newest_event_ms: int = -1
    newest_by_partition: dict[int, int] = field(default_factory=dict)
    batch_id: int = -1
    #: Payments read but held back until every partition has reached their day (see
    #: :func:`hold_back`), as Kafka records; and the next payments offset per partition.
    held: pd.DataFrame = field(default_factory=lambda: _empty_records())
    next_offsets: dict[int, int] = field(default_factory=dict)

    #: The ids of ``transactions`` as a set, for duplicate checks; built when first
    #: needed and handed on to the next batch's state (see :meth:`take_ids`).
    _ids: set | None = field(default=None, repr=False, compare=False)

    def take_ids(self) -> set:
        """The set of known transaction ids, handed over: this state forgets its copy.

        Probing a set costs per id of the batch; probing the index frame cost per id
        of the state (hundreds of thousands), every batch.
        """
        ids = self._ids if self._ids is not None else set(self.transactions["transaction_id"])
        self._ids = None
        return ids


_FRAMES = {
    "cards": lambda s: s.features.cards,
    "merchant_days": lambda s: s.features.merchant_days,
    "frauds": lambda s: s.features.frauds,
    "transactions": lambda s: s.transactions,
    "pending": lambda s: s.pending,
    "held": lambda s: s.held,
}


class StateStore:
    """The stream's state under the query's checkpoint: snapshots, and a log of batches.

    A snapshot (one folder, Arrow IPC files) holds the whole state after a micro-batch.
    Its ``meta.json`` is written last and marks it complete: a crash while writing
    leaves a folder without it, which is ignored and written again. Converting the
    state's strings for a snapshot costs about as much as the features of a micro-batch,
    so the job takes one every few batches, and logs for every batch what it read
    (Kafka offsets of its payments and labels: a few bytes). A restart takes the newest
    snapshot and reads the logged batches after it from Kafka again to rebuild the state.

    The folder is local or on any Hadoop file system (:mod:`fraudstream.storage`).
    """

    def __init__(self, folder):
        self.files = storage.files(folder)

    @staticmethod
    def _name(batch_id: int) -> str:
        return f"batch-{batch_id:012d}"

    def _snapshots(self) -> list[str]:
        return [name for name in self.files.list() if name.startswith("batch-")]

    def save(self, state: StreamState) -> int:
        """Write the snapshot of ``state``; return its size in bytes."""
        target = self._name(state.batch_id)
        # An older snapshot of the same batch (a batch run again) stops counting at once.
        self.files.delete(target)
        size = 0
        for name, frame_of in _FRAMES.items():
            table = pa.Table.from_pandas(frame_of(state), preserve_index=False)
            size += self.files.write(
                f"{target}/{name}.arrow",
                lambda path, table=table: feather.write_feather(
                    table, path, compression="uncompressed"
                ),
            )
        meta = {
            "batch_id": state.batch_id,
            "newest_event_ms": state.newest_event_ms,
            "newest_by_partition": {str(p): t for p, t in state.newest_by_partition.items()},
            "label_offsets": {str(p): o for p, o in state.label_offsets.items()},
            "next_offsets": {str(p): o for p, o in state.next_offsets.items()},
        }
        size += self.files.write(f"{target}/meta.json", _text_writer(json.dumps(meta)))
        # Keep the newest few; a snapshot of a later batch than this one belongs to a run
        # whose checkpoint was abandoned, and must not be mistaken for ours.
        snapshots = self._snapshots()
        mine = [s for s in snapshots if s <= target]
        for old in mine[:-SNAPSHOTS_KEPT] + [s for s in snapshots if s > target]:
            self.files.delete(old)
        # A restart starts from a snapshot and needs the log of the batches after it.
        kept = mine[-SNAPSHOTS_KEPT:]
        self.prune_log(before=int(kept[0].split("-")[1]) + 1)
        return size

    def write_log(
        self,
        batch_id: int,
        payments: dict,
        labels_from: dict,
        labels_to: dict,
        release_day: int | None = None,
    ) -> None:
        """Record what micro-batch ``batch_id`` read, so that it can be read again.

        ``payments``: ``{partition: [first offset, last offset]}`` of the batch's
        records; ``labels_from``/``labels_to``: the label offsets it read between;
        ``release_day``: the last day it scored payments of (None: all it held).
        """
        entry = {
            "payments": {str(p): [int(a), int(b)] for p, (a, b) in payments.items()},
            "labels_from": {str(p): int(o) for p, o in labels_from.items()},
            "labels_to": {str(p): int(o) for p, o in labels_to.items()},
            "release_day": release_day,
        }
        self.files.write(f"log/{self._name(batch_id)}.json", _text_writer(json.dumps(entry)))

    def read_log(self, batch_id: int) -> dict:
        rel = f"log/{self._name(batch_id)}.json"
        if not self.files.exists(rel):
            raise FileNotFoundError(
                f"The record of micro-batch {batch_id} is missing from {self.files}: the "
                "checkpoint is incomplete; restore it whole, or start a new checkpoint to "
                "replay from the topic."
            )
        entry = json.loads(self.files.read(rel, Path.read_text))
        return {
            "payments": {int(p): (a, b) for p, (a, b) in entry["payments"].items()},
            "labels_from": {int(p): o for p, o in entry["labels_from"].items()},
            "labels_to": {int(p): o for p, o in entry["labels_to"].items()},
            "release_day": entry.get("release_day"),
        }

    def newest_snapshot(self, at_most: int) -> int:
        """The id of the newest snapshot of a batch ``<= at_most``; -1 if there is none."""
        for name in reversed(self._snapshots()):
            batch_id = int(name.split("-")[1])
            if batch_id <= at_most and self.files.exists(f"{name}/meta.json"):
                return batch_id
        return -1

    def prune_log(self, before: int) -> None:
        """Forget the records of batches older than ``before`` (a snapshot covers them)."""
        for name in self.files.list("log"):
            if name.startswith("batch-") and int(name[len("batch-") : -len(".json")]) < before:
                self.files.delete(f"log/{name}")

    def load(self, batch_id: int) -> StreamState:
        """The state after ``batch_id``; an empty state for ``batch_id`` -1.

        Raises
        ------
        FileNotFoundError
            If the snapshot is missing (the checkpoint was copied in part).
        """
        if batch_id < 0:
            return StreamState()
        folder = self._name(batch_id)
        if not self.files.exists(f"{folder}/meta.json"):
            raise FileNotFoundError(
                f"The feature state after micro-batch {batch_id} is missing from "
                f"{self.files}: the checkpoint is incomplete; restore it whole, or start "
                "a new checkpoint to replay from the topic."
            )
        present = set(self.files.list(folder))
        frames = {
            name: self.files.read(f"{folder}/{name}.arrow", feather.read_table).to_pandas()
            for name in _FRAMES
            if f"{name}.arrow" in present
        }
        # Snapshots written before payments could be held back have no "held" frame.
        frames.setdefault("held", _empty_records())
        for name in ("cards", "merchant_days", "frauds", "transactions", "pending"):
            frame = frames[name]
            for column in frame.columns:
                if frame[column].dtype != object and pd.api.types.is_string_dtype(frame[column]):
                    frame[column] = frame[column].astype(object)
        meta = json.loads(self.files.read(f"{folder}/meta.json", Path.read_text))
        return StreamState(
            features=FeatureState(
                cards=frames["cards"],
                merchant_days=frames["merchant_days"],
                frauds=frames["frauds"],
            ),
            transactions=frames["transactions"],
            pending=frames["pending"],
            label_offsets={int(p): int(o) for p, o in meta["label_offsets"].items()},
            newest_event_ms=int(meta["newest_event_ms"]),
            newest_by_partition={int(p): int(t) for p, t in meta["newest_by_partition"].items()},
            held=frames["held"].astype(
                {"partition": np.int32, "offset": np.int64, "timestamp_ms": np.int64}
            ),
            next_offsets={int(p): int(o) for p, o in meta.get("next_offsets", {}).items()},
            batch_id=int(meta["batch_id"]),
        )


def _text_writer(text: str) -> Callable[[Path], object]:
    return lambda path: path.write_text(text)


# --- parsing --------------------------------------------------------------------------


def _dead_letters(records: pd.DataFrame, reasons: list[str], now_ms: int) -> pd.DataFrame:
    """Dead-letter rows for ``records`` (Kafka rows) with one reason each."""
    return pd.DataFrame(
        {
            "topic": records["topic"].astype(object).to_numpy(),
            "partition": records["partition"].to_numpy(dtype=np.int32),
            "offset": records["offset"].to_numpy(dtype=np.int64),
            "kafka_timestamp_ms": records["timestamp_ms"].to_numpy(dtype=np.int64),
            "key": records["key"].to_numpy(dtype=object),
            "value": records["value"].to_numpy(dtype=object),
            "reason": np.asarray(reasons, dtype=object),
            "dead_lettered_ms": np.full(len(records), now_ms, dtype=np.int64),
        }
    )


#: Records parsed together on the fast path; a chunk with a record it cannot take goes
#: record by record.
PARSE_CHUNK = 5_000

_FAST_JSON_SCHEMA = pa.schema(
    [
        pa.field(
            field.name,
            {"event_time": pa.string(), "schema_version": pa.int64()}.get(field.name, field.type),
        )
        for field in schemas.PAYMENT_ARROW_SCHEMA
    ]
)


def _parse_fast(values: list) -> tuple[pd.DataFrame, np.ndarray] | None:
    """Parse a chunk of JSON values at once with Arrow's JSON reader.

    Returns the parsed rows and a mask of those that certainly pass the contract's
    checks; the others go through :func:`schemas.decode_payment` for their reason, so
    the contract has one definition of validity. Arrow's reader is strict (a number
    where a string belongs fails the chunk), and any chunk it cannot take whole returns
    None and is decoded record by record.
    """
    import pyarrow.json as pajson

    try:
        joined = b"\n".join(values)  # a None value fails here, and goes the slow way
    except TypeError:
        return None
    if joined.count(b"\n") != len(values) - 1:
        return None  # a value holding a line break: one record would read as two
    try:
        table = pajson.read_json(
            pa.BufferReader(joined),
            read_options=pajson.ReadOptions(block_size=1 << 24),
            parse_options=pajson.ParseOptions(
                explicit_schema=_FAST_JSON_SCHEMA, unexpected_field_behavior="ignore"
            ),
        )
        if table.num_rows != len(values):
            return None
        times = pc.cast(table["event_time"], pa.timestamp("ms", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    # The checks run on the Arrow columns, where a null and a NaN are still different.
    clean = np.ones(table.num_rows, dtype=bool)
    for name in schemas.PAYMENT_REQUIRED:
        column = table[name]
        clean &= column.is_valid().to_numpy(zero_copy_only=False)
        if pa.types.is_string(column.type):
            clean &= pc.fill_null(pc.not_equal(column, ""), False).to_numpy(zero_copy_only=False)
    amount = pc.fill_null(table["amount"], -1.0)
    clean &= pc.and_(pc.is_finite(amount), pc.greater(amount, 0)).to_numpy(zero_copy_only=False)
    for name, bound in (("lat", 90.0), ("lon", 180.0)):
        column = table[name]
        inside = pc.and_(pc.is_finite(column), pc.less_equal(pc.abs(column), bound))
        clean &= pc.or_kleene(column.is_null(), inside).to_numpy(zero_copy_only=False)
    supported = pa.array(sorted(schemas.SUPPORTED_SCHEMA_VERSIONS), pa.int64())
    clean &= pc.is_in(table["schema_version"], value_set=supported).to_numpy(zero_copy_only=False)
    channel = table["channel"]
    known = pc.is_in(channel, value_set=pa.array(schemas.CHANNELS))
    clean &= pc.or_kleene(channel.is_null(), known).to_numpy(zero_copy_only=False)
    frame = table.drop_columns(["event_time"]).to_pandas()
    frame.insert(1, "event_time", times.to_pandas())
    return frame, clean


def _parse_slow(values, positions, valid, good, bad, reasons) -> None:
    for position in positions:
        value = values[position]
        try:
            valid.append(schemas.decode_payment(value if value is not None else b""))
            good.append(position)
        except ValueError as error:
            bad.append(position)
            reasons.append(str(error))


def parse_payments(records: pd.DataFrame) -> tuple[pd.DataFrame, list[int], list[str]]:
    """Decode and validate each record's value with the payment contract.

    Parameters
    ----------
    records : DataFrame
        Kafka rows: ``key, value`` (bytes), ``topic, partition, offset, timestamp_ms``.

    Returns
    -------
    (DataFrame, list, list)
        The valid payments (contract columns, ``event_time`` as UTC timestamps, plus
        ``partition, offset, timestamp_ms`` of their record); and the row positions of
        the invalid records with their reasons.
    """
    values = records["value"].to_numpy(dtype=object)
    pieces, piece_positions = [], []
    slow_valid, slow_good, bad, reasons = [], [], [], []
    for start in range(0, len(values), PARSE_CHUNK):
        chunk = list(values[start : start + PARSE_CHUNK])
        positions = np.arange(start, start + len(chunk))
        fast = _parse_fast(chunk)
        if fast is None:
            _parse_slow(values, positions, slow_valid, slow_good, bad, reasons)
            continue
        frame, clean = fast
        pieces.append(frame.loc[clean])
        piece_positions.append(positions[clean])
        _parse_slow(values, positions[~clean], slow_valid, slow_good, bad, reasons)
    if slow_valid:
        slow = pd.DataFrame.from_records(slow_valid, columns=schemas.PAYMENT_COLUMNS)
        slow["event_time"] = pd.to_datetime(slow["event_time"], utc=True).astype(
            "datetime64[ms, UTC]"
        )
        pieces.append(slow)
        piece_positions.append(np.asarray(slow_good, dtype=np.int64))
    if pieces:
        events = pd.concat([piece[schemas.PAYMENT_COLUMNS] for piece in pieces], ignore_index=True)
    else:
        events = pd.DataFrame({name: pd.Series(dtype=object) for name in schemas.PAYMENT_COLUMNS})
    positions = np.concatenate(piece_positions) if piece_positions else np.zeros(0, np.int64)
    events["event_time"] = pd.to_datetime(events["event_time"], utc=True)
    for name in ("amount", "lat", "lon"):
        events[name] = pd.to_numeric(events[name], errors="coerce").astype(float)
    for name in (
        "transaction_id",
        "card_id",
        "merchant_id",
        "customer_id",
        "merchant_category",
        "currency",
        "channel",
        "country",
    ):
        events[name] = events[name].astype(object).where(events[name].notna(), None)
    for name in ("partition", "offset", "timestamp_ms"):
        events[name] = records[name].to_numpy()[positions]
    return events, bad, reasons


def parse_labels(records: pd.DataFrame) -> tuple[pd.DataFrame, list[int], list[str]]:
    """Decode and validate label records: the fraud reports.

    Returns the reports (``transaction_id, card_id, report_ms`` and ``position``, the
    record's row in ``records``), the rows of invalid records and their reasons.
    """
    frauds, bad, reasons = [], [], []
    for position, value in enumerate(records["value"].to_numpy(dtype=object)):
        try:
            record = json.loads((value or b"").decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (UnicodeDecodeError, ValueError) as error:
            bad.append(position)
            reasons.append(f"unparseable: {error}")
            continue
        reason = schemas.label_invalid_reason(record)
        if reason is not None:
            bad.append(position)
            reasons.append(reason)
        elif record["label"] == "fraud":
            report_ms = int(schemas.parse_time(record["reported_time"]).timestamp() * 1000)
            frauds.append((record["transaction_id"], record["card_id"], report_ms, position))
    reports = pd.DataFrame(frauds, columns=["transaction_id", "card_id", "report_ms", "position"])
    for name in ("transaction_id", "card_id"):
        reports[name] = reports[name].astype(object)
    for name in ("report_ms", "position"):
        reports[name] = reports[name].astype(np.int64)
    return reports, bad, reasons


# --- the model ------------------------------------------------------------------------


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; the message is one sentence for the user."""


@dataclass
class LoadedModel:
    """A loaded model version and what the stream needs to know about it."""

    name: str
    version: str
    scorer: object  # fraudstream.model.FraudScorer
    threshold: float
    feature_columns: list[str]
    reference: dict[str, float] | None
    label_delay_days: int

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        if frame.empty:
            return np.zeros(0)
        return np.asarray(self.scorer.predict(None, frame), dtype=float)


def parse_model_uri(uri: str) -> tuple[str, str, str | None]:
    """Split a model URI into ``(kind, name or path, alias or version)``."""
    if uri.startswith("models:/"):
        rest = uri[len("models:/") :]
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return "alias", name, alias
        name, _, version = rest.partition("/")
        return "version", name, version or None
    return "path", uri, None


def load_model(uri: str, threshold: float | None = None, version: str | None = None) -> LoadedModel:
    """Load a model by registry alias, registry version, or from a folder.

    Raises
    ------
    ModelLoadError
        With one sentence saying what is missing.
    """
    import mlflow.pyfunc
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    kind, name, ref = parse_model_uri(uri)
    try:
        if kind == "path":
            path = Path(name)
            if not (path / "MLmodel").is_file():
                raise ModelLoadError(f"No model at {path} (no MLmodel file there).")
            meta_file = path / "registered_model_meta"
            meta = {}
            if meta_file.is_file():
                for line in meta_file.read_text().splitlines():
                    key, _, value = line.partition(":")
                    meta[key.strip()] = value.strip()
            model_name = meta.get("model_name", path.name)
            version = meta.get("model_version", "local")
            loaded = mlflow.pyfunc.load_model(str(path))
        else:
            from fraudstream import tracking

            tracking.use_store()
            client = MlflowClient()
            if version is None:
                if kind == "alias":
                    version = str(client.get_model_version_by_alias(name, ref).version)
                else:
                    version = ref
            model_name = name
            loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    except ModelLoadError:
        raise
    except MlflowException as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(
            f"Cannot load model {uri}: {first.rstrip('.')} (train and register one with "
            "./spark-submit.sh train, or pass --model PATH)."
        ) from None
    except (OSError, ValueError, ImportError) as error:
        raise ModelLoadError(f"Cannot load model {uri}: {error}.") from None
    metadata = loaded.metadata.metadata or {}
    chosen = threshold if threshold is not None else metadata.get("threshold")
    if chosen is None:
        raise ModelLoadError(f"Model {uri} carries no threshold in its metadata: pass --threshold.")
    scorer = loaded.unwrap_python_model()
    return LoadedModel(
        name=model_name,
        version=str(version),
        scorer=scorer,
        threshold=float(chosen),
        feature_columns=list(metadata.get("feature_columns") or scorer.feature_columns),
        reference=metadata.get("feature_reference"),
        label_delay_days=int(metadata.get("label_delay_days", features.DEFAULT_LABEL_DELAY_DAYS)),
    )


class ModelSource:
    """The model a URI points at, followed between micro-batches.

    For an alias URI, :meth:`refresh` asks the registry where the alias points (one
    small query) and loads the new version when it moved; a version that fails to
    load is reported and the current one kept, so a bad promotion never stops the
    stream.
    """

    def __init__(
        self,
        uri: str,
        threshold: float | None = None,
        log: Callable = print,
        current: LoadedModel | None = None,
    ):
        self.uri = uri
        self.fixed_threshold = threshold
        self.log = log
        self.kind, self.name, self.alias = parse_model_uri(uri)
        # A caller that already loaded the model (to fail fast) hands it over.
        self.current = current if current is not None else load_model(uri, threshold)

    def refresh(self) -> LoadedModel:
        if self.kind != "alias":
            return self.current
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            version = str(MlflowClient().get_model_version_by_alias(self.name, self.alias).version)
        except MlflowException as error:
            self.log(
                f"model: cannot read alias {self.uri} ({error}); keeping version "
                f"{self.current.version}"
            )
            return self.current
        if version == self.current.version:
            return self.current
        try:
            candidate = load_model(self.uri, self.fixed_threshold, version=version)
        except ModelLoadError as error:
            self.log(f"model: {error} Keeping version {self.current.version}.")
            return self.current
        if candidate.label_delay_days != self.current.label_delay_days:
            self.log(
                f"model: version {version} expects a label delay of "
                f"{candidate.label_delay_days} days, the stream's state uses "
                f"{self.current.label_delay_days}; keeping version {self.current.version} "
                "(restart on a new checkpoint to change the delay)"
            )
            return self.current
        self.log(
            f"model: {self.uri} moved from version {self.current.version} to {version}; "
            f"scoring with version {version} from this micro-batch on"
        )
        self.current = candidate
        return self.current


# --- reasons --------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def describe(
    feature: str, value: float, delay_days: int = features.DEFAULT_LABEL_DELAY_DAYS
) -> str:
    """One feature's value in plain words, for an analyst."""
    parts = feature.rsplit("_", 1)
    window = parts[1] if len(parts) == 2 and parts[1].endswith(("d", "h")) else ""
    span = {"1h": "hour", "1d": "day"}.get(window, f"{window[:-1]} days" if window else "")
    if feature == "speed_kmh_from_prev":
        return f"{value:,.0f} km/h travel from the card's previous card-present payment"
    if feature == "km_from_prev":
        return f"{value:,.0f} km from the card's previous card-present payment"
    if feature == "km_from_usual":
        return f"{value:,.0f} km from where the card is usually used"
    if feature == "country_changed":
        return "country differs from the card's previous payment" if value else "same country"
    if feature == "seconds_since_prev":
        return f"{_duration(value)} since the card's previous payment"
    if feature == "amount_to_card_mean":
        return f"amount is {value:,.1f}x the card's usual amount"
    if feature == "amount":
        return f"amount {value:,.2f}"
    if feature.startswith("card_tx_count_"):
        return f"{value:,.0f} payments on the card in the last {span}"
    if feature.startswith("card_mean_amount_"):
        return f"card's mean amount {value:,.2f} over the last {span}"
    if feature.startswith("merchant_tx_count_"):
        return f"merchant had {value:,.0f} payments over {span} ending {delay_days} days ago"
    if feature.startswith("merchant_recent_fraud_rate_"):
        return f"{value:.1%} of the merchant's payments of the last {span} reported as fraud so far"
    if feature.startswith("merchant_fraud_rate_"):
        return f"merchant fraud rate {value:.1%} over {span} ending {delay_days} days ago"
    if feature == "card_known_frauds_30d":
        return f"{value:,.0f} of the card's payments of the last 30 days reported as fraud"
    if feature == "is_night":
        return "at night (before 06:00 UTC)" if value else "in the daytime"
    if feature == "is_weekend":
        return "at the weekend" if value else "on a weekday"
    if feature == "is_ecom":
        return "online payment" if value else "not an online payment"
    if feature == "is_atm":
        return "cash withdrawal" if value else "not a cash withdrawal"
    return f"{feature} = {value:g}"


def explain(
    model: LoadedModel, rows: pd.DataFrame, scores: np.ndarray, reference: dict[str, float]
) -> list[list[str]]:
    """The top contributing features of each row, in words.

    A feature's contribution is how much the score drops when that feature alone is
    set to its reference value (the typical genuine payment's, from training): the
    model is asked, not guessed at, whatever kind of model it is.
    """
    if rows.empty:
        return []
    columns = model.feature_columns
    n, m = len(rows), len(columns)
    base = rows[columns].to_numpy(dtype=float)
    ref = np.array([reference.get(c, 0.0) for c in columns], dtype=float)
    # A feature already at its reference value contributes nothing: ask the model only
    # about the others, all in one call.
    rows_i, cols_j = np.nonzero(base != ref)
    variants = base[rows_i]
    variants[np.arange(len(rows_i)), cols_j] = ref[cols_j]
    occluded = np.repeat(scores[:, None].astype(float), m, axis=1)
    occluded[rows_i, cols_j] = model.score(pd.DataFrame(variants, columns=columns))
    contribution = scores[:, None] - occluded
    order = np.argsort(-contribution, axis=1, kind="stable")[:, :TOP_REASONS]
    reasons = []
    for i in range(n):
        top = [j for j in order[i] if contribution[i, j] > 0] or [order[i, 0]]
        reasons.append(
            [
                f"{describe(columns[j], base[i, j], model.label_delay_days)} "
                f"(+{max(contribution[i, j], 0):.2f})"
                for j in top
            ]
        )
    return reasons


def alert_id(transaction_id: str, model_name: str, model_version: str) -> str:
    """The same id for the same transaction scored by the same model version."""
    text = f"{transaction_id}\x1f{model_name}\x1f{model_version}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


# --- one micro-batch ------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What does not change between micro-batches."""

    max_lateness_hours: float = DEFAULT_MAX_LATENESS_HOURS
    label_delay_days: int = features.DEFAULT_LABEL_DELAY_DAYS
    #: Take a state snapshot after every this many micro-batches (1: after each).
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY


@dataclass
class BatchResult:
    """The views of one micro-batch, as pandas frames (times as int ms)."""

    alerts: pd.DataFrame
    card_locations: pd.DataFrame
    scored: pd.DataFrame
    dead_letters: pd.DataFrame
    counts: dict[str, int]
    #: Where the batch's time went, by stage, in seconds.
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _Decided:
    """What the driver decided about a micro-batch of the card operator's query."""

    dead_letters: pd.DataFrame
    #: Event times (ms) of the payments released to be scored now.
    scored_ms: np.ndarray
    #: The payments held for a later micro-batch (partition, offset, time, merchant).
    held: pd.DataFrame
    release_day: int | None
    oldest_day: int
    state: StreamState
    counts: dict[str, int]


class _Clock:
    """Lap times of a micro-batch's stages."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = self.laps.get(stage, 0.0) + now - self.last
        self.last = now


def _resolve_labels(
    state: StreamState, reports: pd.DataFrame, new_payments: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn fraud reports into fraud facts where the payment is known.

    Reports waiting from earlier batches were already looked up in the index; only this
    batch's payments can be theirs. This batch's reports are looked up in the whole
    index. Returns the new facts (``card_id, merchant_id, tx_day, report_day``) and the
    reports still waiting. A payment reported twice counts once, at its earliest
    report among those seen together.
    """
    index = state.transactions
    reports = reports.groupby("transaction_id", sort=False, as_index=False)["report_ms"].min()
    fresh = reports.merge(
        index.loc[index["transaction_id"].isin(reports["transaction_id"])],
        on="transaction_id",
        how="left",
    )
    waiting = state.pending.merge(new_payments, on="transaction_id", how="left")
    joined = pd.concat([fresh, waiting], ignore_index=True)
    if joined.empty:
        return features._empty_frauds(), _empty_pending()
    known = joined["card_id"].notna().to_numpy()
    new = known & ~joined["reported"].eq(True).to_numpy()
    # Earliest report first, so that a payment reported twice keeps that one.
    facts_rows = joined.loc[new].sort_values("report_ms", kind="stable")
    facts_rows = facts_rows.drop_duplicates("transaction_id", keep="first")
    facts = pd.DataFrame(
        {
            "card_id": facts_rows["card_id"].astype(object).to_numpy(),
            "merchant_id": facts_rows["merchant_id"].astype(object).to_numpy(),
            "tx_day": facts_rows["tx_day"].to_numpy(dtype=np.int64),
            "report_day": facts_rows["report_ms"].to_numpy(dtype=np.int64) // DAY_MS,
        }
    )
    if len(facts_rows):
        done = index["transaction_id"].isin(facts_rows["transaction_id"]).to_numpy()
        index.loc[done, "reported"] = True
    pending = joined.loc[~known, ["transaction_id", "report_ms"]]
    pending = pending.groupby("transaction_id", sort=False, as_index=False)["report_ms"].min()
    return facts, pending.reset_index(drop=True)


_EVENT_TIME = re.compile(rb'"event_time"\s*:\s*"([^"]{10,40})"')


def _event_days(records: pd.DataFrame) -> np.ndarray:
    """Each record's event day (days since the epoch) read off its raw JSON; NaN if unreadable.

    Much cheaper than parsing the batch twice: the batch is parsed and validated once,
    after the split, by :func:`parse_payments`. The contract's UTC text (``...Z``) gives
    its day from its first ten characters; other forms go through pandas.
    """
    key = b'"event_time":"'
    texts = []
    for value in records["value"].to_numpy(dtype=object):
        if not isinstance(value, bytes):
            texts.append(None)
            continue
        start = value.find(key)
        if start >= 0:
            end = value.find(b'"', start + len(key))
            texts.append(value[start + len(key) : end].decode("ascii", "replace"))
            continue
        found = _EVENT_TIME.search(value)
        texts.append(found.group(1).decode("ascii", "replace") if found else None)
    text = pa.array(texts, pa.string())
    utc = pc.fill_null(pc.ends_with(text, "Z"), False)
    dates = pc.strptime(pc.utf8_slice_codeunits(text, 0, 10), "%Y-%m-%d", "s", error_is_null=True)
    days = pc.divide(pc.cast(dates, pa.int64()), 86_400).to_numpy(zero_copy_only=False)
    days = np.where(utc.to_numpy(zero_copy_only=False), days, np.nan).astype(float)
    other = np.flatnonzero(
        ~utc.to_numpy(zero_copy_only=False) & pc.is_valid(text).to_numpy(zero_copy_only=False)
    )
    if len(other):
        times = pd.to_datetime(
            pd.Series([texts[i] for i in other], dtype=object),
            utc=True,
            format="ISO8601",
            errors="coerce",
        )
        ms = times.to_numpy(dtype="datetime64[ms]").astype(np.int64).astype(float)
        ms[times.isna().to_numpy()] = np.nan
        days[other] = np.floor(ms / DAY_MS)
    return days


def _days_of(records: pd.DataFrame) -> np.ndarray:
    """Each record's event day: from its parsed ``event_ms`` where the records carry one
    (the card operator's summaries; null: not a payment to score), else off its JSON."""
    if "event_ms" in records.columns:
        ms = pd.to_numeric(records["event_ms"], errors="coerce").to_numpy(dtype=float)
        return np.floor(ms / DAY_MS)
    return _event_days(records)


def hold_back(
    records: pd.DataFrame,
    state: StreamState,
    ends: dict[int, int] | None,
    release_day: int | None | str = "compute",
) -> tuple[pd.DataFrame, pd.DataFrame, int | None, dict[int, int]]:
    """Split the held and the new payment records into those to score now and those to hold.

    Card features need only a card's own payments, which one partition holds in order.
    Merchant features count every card's payments of the days before a payment's day,
    from all partitions; so a payment of day D is scored only once every partition that
    still has records to read has reached day D. Otherwise a replay, whose micro-batches
    cut the partitions at other points in event time, would count other payments than the
    live run did (and than training does). A partition at its end offset is not waited
    for: in live operation each micro-batch reads every partition to its end, so nothing
    is held, while a replay or a catch-up holds at most the skew between partitions.

    Parameters
    ----------
    records : DataFrame
        The micro-batch's payment records (Kafka rows).
    state : StreamState
        The state before the batch: its held records come first.
    ends : dict
        End offset per partition now; None with a given ``release_day``.
    release_day : int, None or "compute"
        The last day to score (days since the epoch), None for all, or "compute" to
        derive it from ``ends``; a restart passes the day its log recorded.

    Returns
    -------
    (DataFrame, DataFrame, int or None, dict)
        Records to score (held ones first, invalid ones included: they go to the dead
        letters at once), records to hold, the release day, the next offsets.
    """
    next_offsets = dict(state.next_offsets)
    if len(records):
        for part, last in records.groupby("partition")["offset"].max().items():
            next_offsets[int(part)] = max(next_offsets.get(int(part), 0), int(last) + 1)
    combined = pd.concat([state.held, records], ignore_index=True) if len(state.held) else records
    # Event days are read only when something may wait: live, every partition is read
    # to its end and this costs nothing.
    day = None
    if release_day == "compute":
        waiting = [p for p, n in next_offsets.items() if n < (ends or {}).get(p, n)]
        release_day = None
        if waiting and len(combined):
            day = _days_of(combined)
            frontier = {p: t // DAY_MS for p, t in state.newest_by_partition.items()}
            known = ~np.isnan(day)
            newest = pd.Series(day[known]).groupby(combined["partition"].to_numpy()[known]).max()
            for part, last in newest.items():
                frontier[int(part)] = max(frontier.get(int(part), -1), int(last))
            # A partition not seen yet has no frontier: nothing of it can be waited for.
            seen = [frontier[p] for p in waiting if p in frontier]
            release_day = min(seen) if seen else None
    if release_day is None or not len(combined):
        return combined.reset_index(drop=True), _empty_records(), release_day, next_offsets
    day = _days_of(combined) if day is None else day
    # Records whose time cannot be read are released: they become dead letters at once.
    hold = np.nan_to_num(day, nan=-np.inf) > release_day
    return (
        combined.loc[~hold].reset_index(drop=True),
        combined.loc[hold].reset_index(drop=True),
        release_day,
        next_offsets,
    )


def payment_horizon_days(label_delay_days: int) -> int:
    """How long a payment can still take a fraud label that a feature reads: the label
    delay plus the longest merchant window, in days."""
    return label_delay_days + max(features.MERCHANT_WINDOWS_DAYS)


def operator_facts(records: pd.DataFrame) -> pd.DataFrame:
    """The fraud facts the card operator made in a micro-batch (``operator.FACT_COLUMNS``
    on payment and label rows), as :func:`features.fraud_facts` makes them."""
    made = records.loc[records["fact_report_ms"].notna()]
    return pd.DataFrame(
        {
            "card_id": made["card_id"].astype(object).to_numpy(),
            "merchant_id": made["fact_merchant_id"].astype(object).to_numpy(),
            "tx_day": made["fact_tx_ms"].to_numpy(dtype=np.int64) // DAY_MS,
            "report_day": made["fact_report_ms"].to_numpy(dtype=np.int64) // DAY_MS,
        }
    )


def lateness_cutoffs(state: StreamState, settings: Settings) -> dict[int, int]:
    """Per partition, the event time (ms) before which a payment of the next batch is late:
    the partition's newest event time so far minus the allowed lateness."""
    lateness_ms = int(settings.max_lateness_hours * 3_600_000)
    return {int(p): int(ms) - lateness_ms for p, ms in state.newest_by_partition.items()}


def _advance(state: StreamState, event_ms: np.ndarray, partition: np.ndarray):
    """The newest event time, overall and per partition, once ``event_ms`` are scored."""
    newest_ms = int(max(state.newest_event_ms, event_ms.max(initial=-1)))
    newest_by_partition = dict(state.newest_by_partition)
    for part, latest in pd.Series(event_ms).groupby(partition).max().items():
        newest_by_partition[int(part)] = max(newest_by_partition.get(int(part), -1), int(latest))
    return newest_ms, newest_by_partition


def _watermark(newest_by_partition: dict[int, int], newest_ms: int, settings: Settings) -> int:
    """The event time that no payment of a later micro-batch can precede.

    A partition holds its cards' payments in order, and a payment more than the allowed
    lateness behind its partition's newest is set aside as late; so every payment still
    to come is at least the slowest partition's newest event time minus the lateness.
    Every kind of state (card payments, merchant days, fraud facts, known ids, reports
    waiting for their payment) expires by this time, never by the newest event seen:
    in a catch-up, partitions stand hours apart within one micro-batch, and a card of a
    lagging partition still needs payments that the newest time has left behind.
    A partition not read yet is not counted: its payments are bounded by nothing known.
    """
    lateness_ms = int(settings.max_lateness_hours * 3_600_000)
    return int(min(newest_by_partition.values(), default=newest_ms)) - lateness_ms


def _carry_aggregates(records: pd.DataFrame) -> bool:
    """Whether Kafka records come with the card operator's aggregates."""
    return "n_30d" in records.columns


def process_batch(
    records: pd.DataFrame,
    label_records: pd.DataFrame,
    state: StreamState,
    model: LoadedModel,
    settings: Settings,
    batch_id: int,
    now_ms: int | None = None,
) -> tuple[BatchResult, StreamState]:
    """Turn one micro-batch of Kafka records into the job's views and the next state.

    Parameters
    ----------
    records, label_records : DataFrame
        Kafka rows of the payments and labels topics: ``key, value`` (bytes),
        ``topic, partition, offset, timestamp_ms``.
    state : StreamState
        The state after the previous batch; not modified.

    The card operator's query decides and scores otherwise
    (:meth:`BatchProcessor.process_on_executors`).
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    clock = _Clock()
    events, bad, reasons = parse_payments(records)
    label_reports, bad_labels, label_reasons = parse_labels(label_records)
    dead = [_dead_letters(records.iloc[bad], reasons, now_ms)]
    dead.append(_dead_letters(label_records.iloc[bad_labels], label_reasons, now_ms))

    # Order within the batch: by (event_time, transaction_id) per the feature definition;
    # by offset for which copy of a duplicate counts (the first delivered).
    events = events.sort_values(["partition", "offset"], kind="stable").reset_index(drop=True)
    event_ms = features._time_ms(events["event_time"])
    # A copy of a payment already scored says so, however late it comes.
    ids = events["transaction_id"]
    known_ids = state.take_ids()
    known = np.fromiter((i in known_ids for i in ids), dtype=bool, count=len(ids))
    duplicate = ids.duplicated().to_numpy() | known
    set_aside = np.where(duplicate, REASON_DUPLICATE, None).astype(object)
    partition = events["partition"].to_numpy()
    cutoffs = lateness_cutoffs(state, settings)
    for part, newest_ms in state.newest_by_partition.items():
        late = (partition == part) & (event_ms < cutoffs[part])
        newest = schemas.format_time(pd.Timestamp(newest_ms, unit="ms", tz="UTC"))
        set_aside[late & ~duplicate] = REASON_LATE.format(
            hours=settings.max_lateness_hours, newest=newest
        )
    aside = set_aside != None  # noqa: E711
    if aside.any():
        rejected = events.loc[aside, ["partition", "offset"]]
        rows = (
            records.set_index(["partition", "offset"])
            .loc[list(zip(rejected["partition"], rejected["offset"], strict=True))]
            .reset_index()
        )
        dead.append(_dead_letters(rows, list(set_aside[aside]), now_ms))
    events = events.loc[~aside].reset_index(drop=True)
    event_ms = event_ms[~aside]

    horizon_days = payment_horizon_days(settings.label_delay_days)
    # The payments index first, so that a label may name a payment of this batch.
    new_payments = pd.DataFrame(
        {
            "transaction_id": events["transaction_id"].astype(object).to_numpy(),
            "card_id": events["card_id"].astype(object).to_numpy(),
            "merchant_id": events["merchant_id"].astype(object).to_numpy(),
            "tx_day": event_ms // DAY_MS,
            "reported": np.zeros(len(events), dtype=bool),
        }
    )
    transactions = pd.concat([state.transactions, new_payments], ignore_index=True)
    working = replace(state, transactions=transactions)
    facts, pending = _resolve_labels(working, label_reports, new_payments)
    newest_ms, newest_by_partition = _advance(state, event_ms, events["partition"].to_numpy())
    watermark_ms = _watermark(newest_by_partition, newest_ms, settings)
    clock.lap("parse")
    computed, feature_state = features.compute(
        events,
        facts,
        state.features,
        label_delay_days=settings.label_delay_days,
        new_only=True,
        watermark_ms=watermark_ms,
    )
    clock.lap("features")
    scores = model.score(computed[model.feature_columns])
    alerted = scores >= model.threshold
    clock.lap("score")

    current = (transactions["tx_day"] >= watermark_ms // DAY_MS - horizon_days).to_numpy()
    known_ids.update(new_payments["transaction_id"])
    known_ids.difference_update(transactions["transaction_id"].to_numpy()[~current])
    next_state = StreamState(
        features=feature_state,
        transactions=transactions.loc[current].reset_index(drop=True),
        pending=pending.loc[pending["report_ms"] >= watermark_ms].reset_index(drop=True),
        label_offsets=state.label_offsets,
        newest_event_ms=newest_ms,
        newest_by_partition=newest_by_partition,
        batch_id=batch_id,
        _ids=known_ids,
    )

    alerts = _alerts(events, event_ms, computed, scores, alerted, model, now_ms)
    clock.lap("explain")
    result = BatchResult(
        alerts=alerts,
        card_locations=_card_locations(events, event_ms, computed),
        scored=_scored(events, event_ms, computed, scores, alerted, model, now_ms),
        dead_letters=pd.concat(dead, ignore_index=True),
        counts={
            "records": len(records),
            "labels": len(label_records),
            "scored": len(events),
            "alerts": int(alerted.sum()),
            "invalid": len(bad) + len(bad_labels),
            "duplicates": int((set_aside == REASON_DUPLICATE).sum()),
            "late": int(aside.sum() - (set_aside == REASON_DUPLICATE).sum()),
            "fraud_facts": len(facts),
        },
        seconds=clock.laps,
    )
    return result, next_state


def _alerts(events, event_ms, computed, scores, alerted, model, now_ms) -> pd.DataFrame:
    rows = events.loc[alerted].reset_index(drop=True)
    chosen = computed.loc[alerted].reset_index(drop=True)
    reference = model.reference or computed[model.feature_columns].median().to_dict()
    reasons = explain(model, chosen, scores[alerted], reference)
    ids = rows["transaction_id"].astype(object).to_numpy()
    return pd.DataFrame(
        {
            "alert_id": [alert_id(t, model.name, model.version) for t in ids],
            "transaction_id": ids,
            "card_id": rows["card_id"].astype(object).to_numpy(),
            "event_time": event_ms[alerted],
            "scored_time": np.full(len(rows), now_ms, dtype=np.int64),
            "score": scores[alerted],
            "threshold": np.full(len(rows), model.threshold),
            "model_name": model.name,
            "model_version": model.version,
            "reasons": pd.Series(reasons, dtype=object),
            "amount": rows["amount"].to_numpy(dtype=float),
            "currency": rows["currency"].astype(object).to_numpy(),
            "merchant_id": rows["merchant_id"].astype(object).to_numpy(),
            "merchant_category": rows["merchant_category"].astype(object).to_numpy(),
            "lat": rows["lat"].to_numpy(dtype=float),
            "lon": rows["lon"].to_numpy(dtype=float),
            "country": rows["country"].astype(object).to_numpy(),
            "schema_version": np.full(len(rows), schemas.SCHEMA_VERSION, dtype=np.int32),
            "kafka_timestamp_ms": rows["timestamp_ms"].to_numpy(dtype=np.int64),
        }
    )


def _card_locations(events, event_ms, computed) -> pd.DataFrame:
    channel = events["channel"].astype(object).to_numpy()
    lat, lon = events["lat"].to_numpy(dtype=float), events["lon"].to_numpy(dtype=float)
    present = np.isin(channel, ["pos", "atm"]) & np.isfinite(lat) & np.isfinite(lon)
    return pd.DataFrame(
        {
            "card_id": events["card_id"].astype(object).to_numpy(),
            "event_time": event_ms,
            "transaction_id": events["transaction_id"].astype(object).to_numpy(),
            "lat": lat,
            "lon": lon,
            "country": events["country"].astype(object).to_numpy(),
            "merchant_id": events["merchant_id"].astype(object).to_numpy(),
            "channel": channel,
            "card_present": present,
            "km_from_previous": computed["km_from_prev"].to_numpy(),
            "seconds_from_previous": computed["seconds_since_prev"].to_numpy(),
            "speed_kmh": computed["speed_kmh_from_prev"].to_numpy(),
        }
    )


def _scored(events, event_ms, computed, scores, alerted, model, now_ms) -> pd.DataFrame:
    head = pd.DataFrame(
        {
            "transaction_id": events["transaction_id"].astype(object).to_numpy(),
            "card_id": events["card_id"].astype(object).to_numpy(),
            "event_time": event_ms,
            "scored_time": np.full(len(events), now_ms, dtype=np.int64),
            "score": scores,
            "threshold": np.full(len(events), model.threshold),
            "alerted": alerted,
            "model_name": model.name,
            "model_version": model.version,
            "partition": events["partition"].to_numpy(dtype=np.int32),
            "offset": events["offset"].to_numpy(dtype=np.int64),
            "kafka_timestamp_ms": events["timestamp_ms"].to_numpy(dtype=np.int64),
        }
    )
    return pd.concat([head, computed[features.FEATURE_COLUMNS].reset_index(drop=True)], axis=1)


# --- writing ----------------------------------------------------------------------------


def _ms_to_timestamp(values) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64), type=pa.int64()).cast(
        pa.timestamp("ms", tz="UTC")
    )


def _dates(ms: np.ndarray) -> np.ndarray:
    """The UTC day of each time, as days since the epoch (named only when written)."""
    return np.asarray(ms, dtype=np.int64) // DAY_MS


def _day_name(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


#: The scored view: every payment scored, with its score, its Kafka coordinates and
#: the model's features.
SCORED_ARROW_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string()),
        pa.field("card_id", pa.string()),
        pa.field("event_time", pa.timestamp("ms", tz="UTC")),
        pa.field("scored_time", pa.timestamp("ms", tz="UTC")),
        pa.field("score", pa.float64()),
        pa.field("threshold", pa.float64()),
        pa.field("alerted", pa.bool_()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("partition", pa.int32()),
        pa.field("offset", pa.int64()),
        pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC")),
        *(pa.field(name, pa.float64()) for name in features.FEATURE_COLUMNS),
    ]
)


def alert_table(alerts: pd.DataFrame) -> pa.Table:
    """The alerts view's rows (``_alerts``) in its schema."""
    if not len(alerts):
        return schemas.ALERT_ARROW_SCHEMA.empty_table()
    table = pa.table(
        {
            **{
                c: alerts[c].to_numpy()
                for c in schemas.ALERT_COLUMNS
                if c not in ("event_time", "scored_time", "reasons")
            },
            "event_time": _ms_to_timestamp(alerts["event_time"]),
            "scored_time": _ms_to_timestamp(alerts["scored_time"]),
            "reasons": pa.array(list(alerts["reasons"]), type=pa.list_(pa.string())),
        }
    )
    return table.select(schemas.ALERT_COLUMNS).cast(schemas.ALERT_ARROW_SCHEMA)


def location_table(locations: pd.DataFrame) -> pa.Table:
    """The card-location view's rows (``_card_locations``) in its schema."""
    table = pa.Table.from_pandas(
        locations.assign(event_time=_ms_to_timestamp(locations["event_time"]).to_pandas()),
        preserve_index=False,
    )
    return table.cast(schemas.CARD_LOCATION_ARROW_SCHEMA)


def scored_table(scored: pd.DataFrame) -> pa.Table:
    """The scored view's rows (``_scored``) in :data:`SCORED_ARROW_SCHEMA`."""
    columns = {
        name: (
            _ms_to_timestamp(scored["kafka_timestamp_ms" if name == "kafka_timestamp" else name])
            if pa.types.is_timestamp(field.type)
            else pa.array(scored[name].to_numpy(), type=field.type, from_pandas=True)
        )
        for name, field in zip(SCORED_ARROW_SCHEMA.names, SCORED_ARROW_SCHEMA, strict=True)
    }
    return pa.table(columns, schema=SCORED_ARROW_SCHEMA)


def dead_letter_table(dead: pd.DataFrame) -> pa.Table:
    """The dead letters' rows (``_dead_letters``) in their schema."""
    return pa.table(
        {
            "topic": pa.array(dead["topic"], pa.string()),
            "partition": pa.array(dead["partition"], pa.int32()),
            "offset": pa.array(dead["offset"], pa.int64()),
            "kafka_timestamp": _ms_to_timestamp(dead["kafka_timestamp_ms"]),
            "key": pa.array(dead["key"], pa.binary()),
            "value": pa.array(dead["value"], pa.binary()),
            "reason": pa.array(dead["reason"], pa.string()),
            "dead_lettered_time": _ms_to_timestamp(dead["dead_lettered_ms"]),
        },
        schema=schemas.DEAD_LETTER_ARROW_SCHEMA,
    )


def to_tables(result: BatchResult) -> dict[str, tuple[pa.Table, np.ndarray]]:
    """Each view as an Arrow table in its schema, with the date of each row."""
    return {
        ALERTS: (alert_table(result.alerts), _dates(result.alerts["event_time"])),
        CARD_LOCATIONS: (
            location_table(result.card_locations),
            _dates(result.card_locations["event_time"]),
        ),
        SCORED: (scored_table(result.scored), _dates(result.scored["event_time"])),
        DEAD_LETTERS: (
            dead_letter_table(result.dead_letters),
            _dates(result.dead_letters["kafka_timestamp_ms"]),
        ),
    }


class ParquetViews:
    """The Parquet views under one output root, written idempotently per micro-batch.

    Batch ``N`` writes ``ROOT/VIEW/date=D/batch-N.parquet`` for each date it has rows
    of, each file whole or not at all (:mod:`fraudstream.storage`). A batch run again
    after a crash writes the same names, and removes any file of its own that the new
    run no longer produces, so each payment is in each view once. The root is a local
    folder or a URI of any Hadoop file system (``s3a://bucket/lake``).
    """

    def __init__(self, root):
        self.files = storage.files(root)

    def write(self, batch_id: int, result: BatchResult) -> dict[str, int]:
        return write_batch(self.files, batch_id, to_tables(result))


def write_batch(
    root, batch_id: int, tables: dict[str, tuple[pa.Table, np.ndarray]]
) -> dict[str, int]:
    """Write one micro-batch's tables as ``root/VIEW/date=D/batch-N.parquet``, idempotently.

    ``root``: a local folder, a Hadoop URI, or ``storage`` files. ``tables`` maps each
    view to its rows and each row's day (days since the epoch). Each file is written
    whole or not at all; a batch run again writes the same names and removes any file
    of its own it no longer produces. Returns the rows written per view.
    """
    files = storage.files(root)
    written = {}
    name = f"batch-{batch_id:012d}.parquet"
    # The dates a run of this batch can write to: those of its rows, the same in every
    # run of the batch (same offsets, same state).
    dates_seen = {int(day) for _, dates in tables.values() for day in np.unique(dates)}
    for view, (table, dates) in tables.items():
        keep = set()
        for day in np.unique(dates).tolist():
            rows = table.filter(pa.array(dates == day))
            files.write(
                f"{view}/date={_day_name(day)}/{name}",
                lambda path, rows=rows: pq.write_table(rows, path, compression="zstd"),
            )
            keep.add(day)
        for day in dates_seen - keep:
            stale = f"{view}/date={_day_name(day)}/{name}"
            if files.exists(stale):
                files.delete(stale)
        written[view] = table.num_rows
    return written


def count_rows(root, view: str) -> int:
    """Rows of one view, from the Parquet footers (no data read)."""
    paths = viewfiles.paths(root, view)
    if storage.is_uri(root):
        from pyspark.sql import SparkSession

        if not paths:
            return 0
        return SparkSession.getActiveSession().read.parquet(*paths).count()
    return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)


def read_view(root, view: str) -> pd.DataFrame:
    """Read one view of an output root into pandas (empty if nothing was written yet).

    On a Hadoop file system the view's files are copied to local disk first: for tests
    and small views; read large ones with Spark.
    """
    if storage.is_uri(root):
        files = storage.files(root).sub(view)
        paths = viewfiles.files(root, view)
        if not paths:
            return pd.DataFrame()
        tables = []
        for path in paths:
            table = files.read(path, pq.read_table)
            # The date folder is a column, as Arrow's reader of a local view gives it.
            for part in path.split("/")[:-1]:
                key, _, value = part.partition("=")
                if value:
                    table = table.append_column(key, pa.array([value] * table.num_rows))
            tables.append(table)
        return pa.concat_tables(tables, promote_options="default").to_pandas()
    paths = viewfiles.paths(root, view)
    if not paths:
        return pd.DataFrame()
    # The date folders become a column, as pq.read_table gives it for the view's folder.
    found = ds.dataset(
        paths,
        format="parquet",
        partitioning=ds.HivePartitioning.discover(infer_dictionary=True),
        partition_base_dir=str(Path(root) / view),
    )
    return found.to_table().to_pandas()


def percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


# --- Kafka around the batch -------------------------------------------------------------


class TopicReader:
    """Reads offset ranges of one topic with a Kafka consumer in no group (commits nothing).

    The scoring job reads the labels topic with it at each micro-batch (the offsets
    live in the job's own log, beside the state they built), and re-reads payments of
    earlier micro-batches with it when the state is rebuilt after a restart.
    """

    def __init__(self, bootstrap_servers: str, topic: str, client_properties=None):
        from fraudstream import kafka_io

        self.topic = topic
        self.consumer = kafka_io.consumer(bootstrap_servers, client_properties)

    def read(
        self, starts: dict[int, int], ends: dict[int, int] | None = None
    ) -> tuple[pd.DataFrame, dict[int, int]]:
        """Records with ``starts[p] <= offset < ends[p]`` per partition.

        ``ends`` None means each partition's end now, over all its partitions;
        otherwise only the partitions in ``ends`` are read. Returns the records
        (``key, value, topic, partition, offset, timestamp_ms``) and the offsets to
        start from next time.
        """
        from kafka import TopicPartition

        if ends is None:
            partitions = sorted(self.consumer.partitions_for_topic(self.topic) or ())
            parts = [TopicPartition(self.topic, p) for p in partitions]
            ends = {tp.partition: offset for tp, offset in self.consumer.end_offsets(parts).items()}
        parts = [TopicPartition(self.topic, p) for p in sorted(ends)]
        self.consumer.assign(parts)
        firsts = self.consumer.beginning_offsets(parts) if parts else {}
        waiting = []
        for tp in parts:
            start = max(starts.get(tp.partition, 0), firsts[tp])
            if start < ends[tp.partition]:
                self.consumer.seek(tp, start)
                waiting.append(tp)
        rows = []
        deadline = time.time() + KAFKA_TIMEOUT_S
        while waiting:
            if time.time() > deadline:
                raise TimeoutError(
                    f"Could not read {self.topic} up to offsets {ends} within "
                    f"{KAFKA_TIMEOUT_S} s; is the broker reachable?"
                )
            for tp, messages in self.consumer.poll(timeout_ms=1000, max_records=100_000).items():
                rows.extend(
                    (m.key, m.value, tp.topic, tp.partition, m.offset, m.timestamp)
                    for m in messages
                    if m.offset < ends[tp.partition]
                )
            # The position, not the last offset seen: it also steps over control records.
            waiting = [tp for tp in waiting if self.consumer.position(tp) < ends[tp.partition]]
        frame = pd.DataFrame(
            rows, columns=["key", "value", "topic", "partition", "offset", "timestamp_ms"]
        )
        frame = frame.astype({"partition": np.int32, "offset": np.int64, "timestamp_ms": np.int64})
        return frame, {**starts, **ends}

    def end_offsets(self) -> dict[int, int]:
        """The end offset of each partition now."""
        from kafka import TopicPartition

        partitions = sorted(self.consumer.partitions_for_topic(self.topic) or ())
        parts = [TopicPartition(self.topic, p) for p in partitions]
        return {tp.partition: offset for tp, offset in self.consumer.end_offsets(parts).items()}

    def close(self) -> None:
        self.consumer.close()


def _records_of(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    """Rows as dicts of plain Python values, times (int ms) as the contract's ISO text.

    Column by column: ``DataFrame.to_dict("records")`` boxes every value on its own and
    cost more than sending the alerts.
    """
    if frame.empty:
        return []
    values = {}
    for name in columns:
        column = frame[name].to_numpy()
        if name in ("event_time", "scored_time"):
            text = np.datetime_as_string(column.astype("datetime64[ms]"), unit="ms")
            values[name] = [f"{t}Z" for t in text]
        else:
            values[name] = column.tolist()
    return [dict(zip(columns, row, strict=True)) for row in zip(*values.values(), strict=True)]


class KafkaOutputs:
    """Sends alerts (JSON, keyed by card) and dead letters (the record as it came).

    Dead letters follow Kafka Connect's dead-letter convention: the original key and
    value, and where they came from and why in headers.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        alerts_topic: str,
        dead_letter_topic: str,
        client_properties=None,
    ):
        from fraudstream import kafka_io

        self.alerts_topic = alerts_topic
        self.dead_letter_topic = dead_letter_topic
        self.producer = kafka_io.producer(bootstrap_servers, client_properties, linger_ms=5)

    def send(self, result: BatchResult) -> int:
        """Send the batch's alerts and dead letters; return when the broker has them all."""
        sent = 0
        for record in _records_of(result.alerts, schemas.ALERT_COLUMNS):
            self.producer.send(
                self.alerts_topic,
                key=record["card_id"].encode("utf-8"),
                value=schemas.encode_alert(record),
            )
            sent += 1
        for record in _records_of(result.dead_letters, list(result.dead_letters.columns)):
            headers = [
                ("fraudstream.reason", record["reason"].encode("utf-8")),
                ("fraudstream.topic", str(record["topic"]).encode("utf-8")),
                ("fraudstream.partition", str(record["partition"]).encode("utf-8")),
                ("fraudstream.offset", str(record["offset"]).encode("utf-8")),
            ]
            self.producer.send(
                self.dead_letter_topic, key=record["key"], value=record["value"], headers=headers
            )
            sent += 1
        # Bounded: a broker that stops answering fails the batch (to run again on
        # restart) rather than hanging the query.
        self.producer.flush(timeout=KAFKA_TIMEOUT_S)
        return sent

    def close(self) -> None:
        self.producer.close()


# --- the foreachBatch function ----------------------------------------------------------


class BatchProcessor:
    """The ``foreachBatch`` function of the scoring query: one micro-batch, start to end.

    Parameters
    ----------
    models : ModelSource
        Where the model comes from; refreshed before each batch.
    views : ParquetViews, or cardstate.outputs.SparkOutputs with the card operator
        (which also sends the alerts and dead letters)
    state_store : StateStore
    labels : TopicReader or StaticTopic
        The labels topic, read from where the previous batch stopped.
    payments : TopicReader or StaticTopic
        The payments topic, to read logged batches again when the state is rebuilt.
    outputs : KafkaOutputs, optional
        The driver's producer of alerts and dead letters; None with the card operator.
    settings : Settings
    log : callable
        Receives one progress line per micro-batch.
    """

    def __init__(
        self,
        models,
        views,
        state_store,
        labels,
        payments,
        outputs,
        settings,
        log=print,
        card_operator: bool = False,
        day_tables=None,
        held_folder=None,
    ):
        self.card_operator = card_operator
        self.day_tables = day_tables
        self.models = models
        self.views = views
        self.state_store = state_store
        self.labels = labels
        self.payments = payments
        self.outputs = outputs
        self.settings = settings
        self.log = log
        self.held_folder = held_folder
        self.state: StreamState | None = None
        self.state_bytes = 0
        self._written_ms = 0.0
        self._model_sent = None
        self.last_start: float | None = None
        self.batches = 0

    def state_before(self, batch_id: int) -> StreamState:
        """The state after batch ``batch_id - 1``: in memory, or rebuilt from the checkpoint.

        Rebuilt from the newest snapshot at or before that batch, then the logged
        batches after it, each read again from Kafka (the same offsets, hence the same
        records) and run through :func:`process_batch` without writing anything.
        """
        if self.state is not None and self.state.batch_id == batch_id - 1:
            return self.state
        base = self.state_store.newest_snapshot(batch_id - 1)
        state = self.state_store.load(base)
        if base == batch_id - 1:
            if base >= 0:
                self.log(f"state: restored from the snapshot after micro-batch {base}")
            return state
        if self.card_operator:
            # Logged batches cannot be run again here: their card aggregates came from
            # Spark's state, which has moved on. Every batch saves its state, so only a
            # checkpoint made by another version of the job gets here.
            raise RuntimeError(
                f"The checkpoint has no state after micro-batch {batch_id - 1} (made by a "
                "job without the card operator?): start with a new --checkpoint and --out, "
                "or rebuild the views."
            )
        started = time.time()
        model = self.models.current
        for replayed in range(base + 1, batch_id):
            entry = self.state_store.read_log(replayed)
            records, _ = self.payments.read(
                {p: first for p, (first, _) in entry["payments"].items()},
                {p: last + 1 for p, (_, last) in entry["payments"].items()},
            )
            labels, _ = self.labels.read(entry["labels_from"], entry["labels_to"])
            state = replace(state, label_offsets={**entry["labels_from"], **entry["labels_to"]})
            released, held, _, offsets = hold_back(records, state, None, entry["release_day"])
            _, state = process_batch(released, labels, state, model, self.settings, replayed)
            state = replace(state, held=held, next_offsets=offsets)
        origin = "an empty state" if base < 0 else f"the snapshot after micro-batch {base}"
        self.log(
            f"state: rebuilt from {origin} and {batch_id - 1 - base} logged micro-batches "
            f"read again from Kafka in {time.time() - started:.1f} s"
        )
        return state

    def __call__(self, batch_df, batch_id: int) -> None:
        started = time.time()
        if _carry_aggregates(batch_df):
            self.process_on_executors(batch_df, batch_id, started)
            return
        from fraudstream.kafka_io import record_columns

        read_started = time.perf_counter()
        records = record_columns(batch_df).toPandas()
        self.process(records, batch_id, started, read_s=time.perf_counter() - read_started)

    def process(
        self,
        records: pd.DataFrame,
        batch_id: int,
        started: float | None = None,
        read_s: float = 0.0,
    ) -> BatchResult:
        """One micro-batch of Kafka records (pandas), with the cards' state in the driver."""
        started = time.time() if started is None else started
        clock = _Clock()
        state = self.state_before(batch_id)
        model = self.models.refresh()
        labels_from = state.label_offsets
        label_records, label_offsets = self.labels.read(labels_from)
        state = replace(state, label_offsets=label_offsets)
        clock.lap("labels")
        # Without a payments reader (tests of one batch) nothing is waited for.
        ends = self.payments.end_offsets() if self.payments is not None else None
        released, held, release_day, offsets = hold_back(records, state, ends)
        result, next_state = process_batch(
            released, label_records, state, model, self.settings, batch_id
        )
        next_state = replace(next_state, held=held, next_offsets=offsets)
        result.counts["held"] = len(held)
        result.seconds = {"read": read_s, **clock.laps, **result.seconds}
        self._commit(batch_id, result, next_state, records, labels_from, release_day)
        self.log(self._progress(batch_id, result, model, started, time.time(), self._written_ms))
        self.last_start = started
        self.batches += 1
        return result

    def process_on_executors(self, batch_df, batch_id: int, started: float) -> BatchResult:
        """One micro-batch of the card operator's query (``cardstate.records``): the
        driver decides, the executors score (:mod:`fraudstream.cardstate.batch`), Spark
        writes and sends (``self.views``, :mod:`fraudstream.cardstate.outputs`).

        The result's ``scored`` and ``alerts`` hold only each payment's Kafka time and
        whether it was alerted: the views' rows stay on the executors."""
        from pyspark.sql import functions as F  # noqa: N812

        from fraudstream.cardstate import batch as on_executors
        from fraudstream.cardstate import outputs
        from fraudstream.cardstate import records as card_records
        from fraudstream.cardstate.operator import AGGREGATE_COLUMNS, FACT_COLUMNS

        clock = _Clock()
        state = self.state_before(batch_id)
        model = self.models.refresh()
        settings = self.settings
        now_ms = int(time.time() * 1000)
        spark = batch_df.sparkSession
        context = spark.sparkContext
        labels_topic = self.labels.topic
        # The executors mark late payments before the card operator, by this batch's
        # cutoffs: published to the batch's tasks as a local property of its jobs.
        cutoffs = lateness_cutoffs(state, settings)
        context.setLocalProperty(
            card_records.CUTOFFS_PROPERTY, card_records.cutoffs_property(cutoffs)
        )
        # Persisted: both actions read the card operator's output of one run.
        columns = [
            *card_records.RECORD_COLUMNS,
            *card_records.CARRIED_COLUMNS,
            "card_id",
            *AGGREGATE_COLUMNS,
            *FACT_COLUMNS,
        ]
        records = batch_df.select(*columns).persist()
        tables = output = None
        try:
            summary = on_executors.summary_job(records, labels_topic).toPandas()
            clock.lap("read")
            decided = self._decide(summary, state, batch_id, now_ms)
            clock.lap("decide")
            released_days = {int(d) for d in decided.scored_ms // DAY_MS}
            merchants_cards = self.day_tables.tables(released_days, batch_id, decided.oldest_day)
            clock.lap("days")
            to_score = records
            if len(state.held):
                earlier = spark.read.schema(records.schema).parquet(
                    str(self._held_path(state.batch_id))
                )
                to_score = records.unionByName(earlier)
            if len(decided.held):
                self._hold(spark, to_score, decided.held, batch_id)
            clock.lap("hold")
            tables = context.broadcast(merchants_cards)
            output = on_executors.score_job(
                to_score,
                labels_topic,
                decided.release_day,
                self._model_broadcast(context, model),
                tables,
                now_ms,
            ).persist()
            stats = outputs.batch_stats(output)
            clock.lap("score")
            # The executors scored what the driver released: the same decisions, twice made.
            if len(stats) != len(decided.scored_ms):
                raise RuntimeError(
                    f"micro-batch {batch_id}: the executors scored {len(stats):,} payments, "
                    f"the driver released {len(decided.scored_ms):,}"
                )
            alerted = stats["alerted"].to_numpy(dtype=bool)
            # Alerts first: ops see them before the Parquet writes.
            if alerted.any():
                self.views.send_alerts(output)
            dead = self.views.dead_letters(spark, decided.dead_letters)
            self.views.send_dead_letters(dead)
            clock.lap("kafka")
            self.views.write(
                batch_id,
                {
                    SCORED: output.select("date", f"{SCORED}.*"),
                    CARD_LOCATIONS: output.select("date", f"{CARD_LOCATIONS}.*"),
                    ALERTS: (
                        output.where(F.col(ALERTS).isNotNull()).select("date", f"{ALERTS}.*")
                        if alerted.any()
                        else None
                    ),
                    DEAD_LETTERS: dead,
                },
            )
            clock.lap("write")
        finally:
            context.setLocalProperty(card_records.CUTOFFS_PROPERTY, None)
            records.unpersist()
            if output is not None:
                output.unpersist()
            if tables is not None:
                tables.destroy()
        counts = dict(decided.counts)
        counts["scored"] = len(stats)
        counts["alerts"] = int(alerted.sum())
        result = BatchResult(
            alerts=stats.loc[alerted],
            card_locations=pd.DataFrame(),
            scored=stats,
            dead_letters=decided.dead_letters,
            counts=counts,
            seconds=clock.laps,
        )
        payments = summary.loc[~summary["is_label"].to_numpy(dtype=bool)]
        self._commit(
            batch_id,
            result,
            decided.state,
            payments,
            state.label_offsets,
            decided.release_day,
            written=True,
        )
        self.log(self._progress(batch_id, result, model, started, time.time(), self._written_ms))
        self.last_start = started
        self.batches += 1
        return result

    def _decide(self, summary: pd.DataFrame, state: StreamState, batch_id: int, now_ms: int):
        """What the driver decides from a micro-batch's summary (``cardstate.batch``):
        the dead letters, the payments to score now and to hold, the day tables' new
        records, and the next state."""
        from fraudstream.cardstate import batch as on_executors

        settings = self.settings
        is_label = summary["is_label"].to_numpy(dtype=bool)
        reason = summary["reason"].to_numpy(dtype=object)
        aside = pd.notna(reason)
        late = reason == on_executors.LATE
        duplicate = reason == REASON_DUPLICATE
        words = reason.copy()
        partition = summary["partition"].to_numpy()
        for part, newest_ms in state.newest_by_partition.items():
            newest = schemas.format_time(pd.Timestamp(newest_ms, unit="ms", tz="UTC"))
            words[late & (partition == part)] = REASON_LATE.format(
                hours=settings.max_lateness_hours, newest=newest
            )
        dead_letters = _dead_letters(summary.loc[aside], list(words[aside]), now_ms)
        facts = operator_facts(summary)
        # The payments, held ones first; one set aside has no time: released at once
        # (it is a dead letter already) and not scored.
        kept = ["topic", "partition", "offset", "timestamp_ms", "event_ms", "merchant_id"]
        payments = summary.loc[~is_label, kept].copy()
        payments.loc[aside[~is_label], "event_ms"] = None
        earlier = state.held if "event_ms" in state.held.columns else payments.iloc[:0]
        ends = self.payments.end_offsets() if self.payments is not None else None
        released, held, release_day, offsets = hold_back(
            payments, replace(state, held=earlier[kept]), ends
        )
        released = released.loc[released["event_ms"].notna()].reset_index(drop=True)
        scored_ms = released["event_ms"].to_numpy(dtype=np.int64)
        newest_ms, newest_by_partition = _advance(
            state, scored_ms, released["partition"].to_numpy()
        )
        watermark_ms = _watermark(newest_by_partition, newest_ms, settings)
        day = scored_ms // DAY_MS
        counts = (
            pd.DataFrame({"merchant_id": released["merchant_id"].astype(object), "day": day})
            .groupby(["merchant_id", "day"], as_index=False, sort=False)
            .size()
            .rename(columns={"size": "tx_count"})
        )
        # No payment still to come is older than the watermark; this batch's may be.
        oldest_day = int(min(watermark_ms // DAY_MS, day.min(initial=watermark_ms // DAY_MS)))
        self.day_tables.record(batch_id, counts, facts, oldest_day)
        next_state = StreamState(
            label_offsets=state.label_offsets,
            newest_event_ms=newest_ms,
            newest_by_partition=newest_by_partition,
            batch_id=batch_id,
            held=held.astype({"event_ms": np.int64}) if len(held) else payments.iloc[:0],
            next_offsets=offsets,
        )
        return _Decided(
            dead_letters=dead_letters,
            scored_ms=scored_ms,
            held=held,
            release_day=release_day,
            oldest_day=oldest_day,
            state=next_state,
            counts={
                "records": int((~is_label).sum()),
                "labels": int(is_label.sum()),
                "invalid": int((aside & ~late & ~duplicate).sum()),
                "duplicates": int(duplicate.sum()),
                "late": int(late.sum()),
                "fraud_facts": len(facts),
                "held": len(held),
            },
        )

    def _held_path(self, batch_id: int):
        return storage.join(self.held_folder, f"batch-{batch_id:012d}")

    def _hold(self, spark, rows, held: pd.DataFrame, batch_id: int) -> None:
        """Write the held payments' rows (from the batch and the earlier held ones) to
        the checkpoint, by batch id; forget the held rows no state can still name."""
        from pyspark.sql import functions as F  # noqa: N812
        from pyspark.sql import types as T  # noqa: N812

        keys = spark.createDataFrame(
            held[["topic", "partition", "offset"]].astype(
                {"topic": object, "partition": np.int32, "offset": np.int64}
            ),
            T.StructType(
                [
                    T.StructField("topic", T.StringType()),
                    T.StructField("partition", T.IntegerType()),
                    T.StructField("offset", T.LongType()),
                ]
            ),
        )
        rows.join(F.broadcast(keys), ["topic", "partition", "offset"], "left_semi").write.mode(
            "overwrite"
        ).parquet(str(self._held_path(batch_id)))

    def _forget_held(self, batch_id: int) -> None:
        """Delete held rows no restart can need: those of batches before the one whose
        state a rerun of ``batch_id`` starts from, and of batches after it (a run
        abandoned with its checkpoint)."""
        files = storage.files(self.held_folder)
        for name in files.list():
            if name.startswith("batch-") and int(name.split("-")[1]) not in (
                batch_id - 1,
                batch_id,
            ):
                files.delete(name)

    def _model_broadcast(self, context, model: LoadedModel):
        """The model as a Spark broadcast, made again only when the model changes."""
        if self._model_sent is None or self._model_sent[0] is not model:
            if self._model_sent is not None:
                self._model_sent[1].unpersist()
            self._model_sent = (model, context.broadcast(model))
        return self._model_sent[1]

    def _commit(
        self, batch_id, result, next_state, payments, labels_from, release_day, written=False
    ) -> None:
        """Send and write a micro-batch's outputs (unless ``written`` already), then
        record it and its state."""
        clock = _Clock()
        if not written:
            # Alerts first: ops see them one Parquet write sooner. Both happen before
            # the batch commits, so neither guarantee changes.
            if self.outputs is not None:
                self.outputs.send(result)
            clock.lap("kafka")
            self.views.write(batch_id, result)
            clock.lap("write")
        self._written_ms = time.time() * 1000
        if os.environ.get(CRASH_AT_BATCH_ENV) == str(batch_id):
            # Fault injection for the crash test: die at the worst moment, with the
            # batch's outputs written but its offsets not committed.
            os.kill(os.getpid(), 9)
        ranges = payments.groupby("partition")["offset"].agg(["min", "max"])
        self.state_store.write_log(
            batch_id,
            {int(p): (row["min"], row["max"]) for p, row in ranges.iterrows()},
            labels_from,
            next_state.label_offsets,
            release_day,
        )
        # With the card operator, a logged batch cannot be run again on the driver (its
        # aggregates are gone from Spark's state): save the state after every batch.
        if self.card_operator or (batch_id + 1) % max(self.settings.snapshot_every, 1) == 0:
            self.state_bytes = self.state_store.save(next_state)
        if self.card_operator:
            self._forget_held(batch_id)
        self.state = next_state
        clock.lap("state")
        result.seconds.update(clock.laps)

    def _progress(self, batch_id, result, model, started, finished, written_ms) -> str:
        counts = result.counts
        duration = finished - started
        since = (started - self.last_start) if self.last_start else duration
        scored = result.scored
        lag = (written_ms - scored["kafka_timestamp_ms"].to_numpy()) / 1000
        alert_lag = (written_ms - result.alerts["kafka_timestamp_ms"].to_numpy()) / 1000
        # The snapshot's size: what the state costs to keep (measuring the frames' deep
        # memory use would cost more than the batch's features).
        state_mb = self.state_bytes / 1e6
        return (
            f"batch {batch_id}: {counts['records']:,} records -> {counts['scored']:,} scored, "
            f"{counts['alerts']:,} alerts, {counts['invalid']:,} invalid, "
            f"{counts['duplicates']:,} duplicates, {counts['late']:,} late, "
            f"{counts['held']:,} held back; "
            f"{counts['labels']:,} labels ({counts['fraud_facts']:,} fraud facts) | "
            f"input {counts['records'] / max(since, 1e-3):,.0f}/s, "
            f"processed {counts['records'] / max(duration, 1e-3):,.0f}/s, "
            f"batch {duration:.2f} s | state {state_mb:,.1f} MB, "
            f"{len(self.state.transactions) if self.state is not None else 0:,} payments | "
            f"event-to-output p50 {percentile(lag, 50):.2f} s p99 {percentile(lag, 99):.2f} s, "
            f"to alert p99 {percentile(alert_lag, 99):.2f} s | "
            f"model {model.name} v{model.version} | "
            + " ".join(f"{stage} {seconds:.2f}" for stage, seconds in result.seconds.items())
        )


def _empty_records() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "key": pd.Series(dtype=object),
            "value": pd.Series(dtype=object),
            "topic": pd.Series(dtype=object),
            "partition": pd.Series(dtype=np.int32),
            "offset": pd.Series(dtype=np.int64),
            "timestamp_ms": pd.Series(dtype=np.int64),
        }
    )


# --- offline replay -----------------------------------------------------------------------


def kafka_records(events: pd.DataFrame, encode, topic: str, timestamp_ms: int | None = None):
    """Events as the Kafka source hands them over: JSON values, one partition, in order."""
    rows = events.to_dict("records")
    stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    return pd.DataFrame(
        {
            "key": [str(r["card_id"]).encode("utf-8") for r in rows],
            "value": [encode(r) for r in rows],
            "topic": topic,
            "partition": np.zeros(len(rows), dtype=np.int32),
            "offset": np.arange(len(rows), dtype=np.int64),
            "timestamp_ms": np.full(len(rows), stamp, dtype=np.int64),
        }
    )


class StaticTopic:
    """A topic held in memory (records as :func:`kafka_records` makes them): replays, tests."""

    def __init__(self, records: pd.DataFrame):
        self.records = records

    def read(
        self, starts: dict[int, int], ends: dict[int, int] | None = None
    ) -> tuple[pd.DataFrame, dict[int, int]]:
        if ends is None:
            ends = (self.records.groupby("partition")["offset"].max() + 1).to_dict()
        keep = np.zeros(len(self.records), dtype=bool)
        for partition, end in ends.items():
            keep |= (
                (self.records["partition"] == partition)
                & (self.records["offset"] >= starts.get(partition, 0))
                & (self.records["offset"] < end)
            ).to_numpy()
        return self.records.loc[keep], {**starts, **{int(p): int(e) for p, e in ends.items()}}

    def end_offsets(self) -> dict[int, int]:
        return {
            int(p): int(o)
            for p, o in (self.records.groupby("partition")["offset"].max() + 1).items()
        }

    def close(self) -> None:
        pass


class FixedModel:
    """A model source that never changes (offline replays, tests)."""

    def __init__(self, model: LoadedModel):
        self.current = model

    def refresh(self) -> LoadedModel:
        return self.current


def replay(
    events: pd.DataFrame,
    labels: pd.DataFrame,
    out: Path,
    model: LoadedModel,
    batch_rows: int = 20_000,
    settings: Settings | None = None,
    log: Callable = print,
) -> BatchProcessor:
    """Run a history through the stream's batch code without Kafka or Spark, into ``out``.

    The same :class:`BatchProcessor` as the scoring job, fed from a table instead of a
    topic: for notebooks and experiments that want the job's views of a history. The
    state snapshots go to ``out/_state``.
    """
    from fraudstream import schemas as contracts

    events = events.sort_values("event_time", kind="stable").reset_index(drop=True)
    records = kafka_records(events, contracts.encode_payment, "payments")
    label_rows = kafka_records(labels, contracts.encode_label, "fraud-labels")
    processor = BatchProcessor(
        models=FixedModel(model),
        views=ParquetViews(out),
        state_store=StateStore(Path(out) / "_state"),
        labels=StaticTopic(label_rows),
        payments=StaticTopic(records),
        outputs=None,
        settings=settings or Settings(label_delay_days=model.label_delay_days),
        log=log,
    )
    for batch_id, start in enumerate(range(0, len(records), batch_rows)):
        processor.process(records.iloc[start : start + batch_rows], batch_id)
    return processor
