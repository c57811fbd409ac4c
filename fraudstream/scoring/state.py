"""What the driver carries from one micro-batch to the next, and the rules it decides by.

The cards' state is the card operator's, in Spark's state store, on the executors. The
driver keeps only each partition's newest event time (for lateness and for when state
expires), the payments it holds for a later micro-batch in a catch-up, and the next
offsets: a few hundred bytes whatever the number of cards, saved after every micro-batch
under the query's checkpoint (:class:`StateStore`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather

from fraudstream import features, storage
from fraudstream.features import DAY_MS

#: Default allowed lateness: a payment older than the newest event time seen minus
#: this is set aside, because the state has moved past it.
DEFAULT_MAX_LATENESS_HOURS = 24
#: State snapshots kept; the job needs only the newest committed one.
SNAPSHOTS_KEPT = 3


@dataclass(frozen=True)
class Settings:
    """What does not change between micro-batches."""

    max_lateness_hours: float = DEFAULT_MAX_LATENESS_HOURS
    label_delay_days: int = features.DEFAULT_LABEL_DELAY_DAYS


@dataclass
class StreamState:
    """Everything the driver carries from one micro-batch to the next.

    Attributes
    ----------
    newest_event_ms : int
        The newest event time scored, in ms (-1 before the first payment).
    newest_by_partition : dict
        The newest event time scored per partition of the payments topic; lateness is
        measured against it. Producers key payments by card, so a partition holds each
        of its cards' payments in order, while partitions may run hours apart when a
        history is replayed fast.
    batch_id : int
        The micro-batch this state is the result of (-1: none yet).
    held : DataFrame
        Payments read but not yet scored, because another partition has not reached
        their day yet (:func:`hold_back`): their ``topic, partition, offset,
        timestamp_ms, event_ms, merchant_id``. The rows themselves wait in the
        checkpoint, with their card aggregates.
    next_offsets : dict
        The next payments offset per partition, after the records read so far.
    """

    newest_event_ms: int = -1
    newest_by_partition: dict[int, int] = field(default_factory=dict)
    batch_id: int = -1
    held: pd.DataFrame = field(default_factory=lambda: empty_held())
    next_offsets: dict[int, int] = field(default_factory=dict)


#: The columns the driver keeps of a payment it holds.
HELD_COLUMNS = ["topic", "partition", "offset", "timestamp_ms", "event_ms", "merchant_id"]


def empty_held() -> pd.DataFrame:
    """No held payments, in the dtypes of :data:`HELD_COLUMNS`."""
    return pd.DataFrame(
        {
            "topic": pd.Series(dtype=object),
            "partition": pd.Series(dtype=np.int32),
            "offset": pd.Series(dtype=np.int64),
            "timestamp_ms": pd.Series(dtype=np.int64),
            "event_ms": pd.Series(dtype=np.int64),
            "merchant_id": pd.Series(dtype=object),
        }
    )


class StateStore:
    """The driver's state under the query's checkpoint: one snapshot per micro-batch.

    A snapshot is one folder: the held payments (an Arrow IPC file) and ``meta.json``,
    written last, which marks it complete; a crash while writing leaves a folder without
    it, which is ignored and written again. A restart takes the snapshot of the batch
    before the one Spark runs (again). The folder is local or on any Hadoop file system
    (:mod:`fraudstream.storage`).
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
        table = pa.Table.from_pandas(state.held[HELD_COLUMNS], preserve_index=False)
        size = self.files.write(
            f"{target}/held.arrow",
            lambda path: feather.write_feather(table, path, compression="uncompressed"),
        )
        meta = {
            "batch_id": state.batch_id,
            "newest_event_ms": state.newest_event_ms,
            "newest_by_partition": {str(p): t for p, t in state.newest_by_partition.items()},
            "next_offsets": {str(p): o for p, o in state.next_offsets.items()},
        }
        size += self.files.write(
            f"{target}/meta.json", lambda path: path.write_text(json.dumps(meta))
        )
        # Keep the newest few; a snapshot of a later batch than this one belongs to a run
        # whose checkpoint was abandoned, and must not be mistaken for ours.
        snapshots = self._snapshots()
        mine = [s for s in snapshots if s <= target]
        for old in mine[:-SNAPSHOTS_KEPT] + [s for s in snapshots if s > target]:
            self.files.delete(old)
        return size

    def newest_snapshot(self, at_most: int) -> int:
        """The id of the newest snapshot of a batch ``<= at_most``; -1 if there is none."""
        for name in reversed(self._snapshots()):
            batch_id = int(name.split("-")[1])
            if batch_id <= at_most and self.files.exists(f"{name}/meta.json"):
                return batch_id
        return -1

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
                f"The scoring state after micro-batch {batch_id} is missing from "
                f"{self.files}: the checkpoint is incomplete; restore it whole, or start "
                "a new checkpoint to replay from the topic."
            )
        held = self.files.read(f"{folder}/held.arrow", feather.read_table).to_pandas()
        held["topic"] = held["topic"].astype(object)
        held["merchant_id"] = held["merchant_id"].astype(object)
        meta = json.loads(self.files.read(f"{folder}/meta.json", Path.read_text))
        return StreamState(
            newest_event_ms=int(meta["newest_event_ms"]),
            newest_by_partition={int(p): int(t) for p, t in meta["newest_by_partition"].items()},
            batch_id=int(meta["batch_id"]),
            held=held.astype(
                {
                    "partition": np.int32,
                    "offset": np.int64,
                    "timestamp_ms": np.int64,
                    "event_ms": np.int64,
                }
            ),
            next_offsets={int(p): int(o) for p, o in meta["next_offsets"].items()},
        )


def hold_back(
    records: pd.DataFrame,
    state: StreamState,
    ends: dict[int, int] | None,
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
        The micro-batch's payments: :data:`HELD_COLUMNS`, ``event_ms`` null for one
        set aside (released at once: it is a dead letter).
    state : StreamState
        The state before the batch: its held payments come first.
    ends : dict
        End offset per partition now (None: nothing is waited for).

    Returns
    -------
    (DataFrame, DataFrame, int or None, dict)
        Payments to score (held ones first, those set aside included), payments to
        hold, the release day (the last day scored, days since the epoch; None: all),
        the next offsets.
    """
    next_offsets = dict(state.next_offsets)
    if len(records):
        for part, last in records.groupby("partition")["offset"].max().items():
            next_offsets[int(part)] = max(next_offsets.get(int(part), 0), int(last) + 1)
    combined = pd.concat([state.held, records], ignore_index=True) if len(state.held) else records
    day = np.floor(pd.to_numeric(combined["event_ms"]).to_numpy(dtype=float) / DAY_MS)
    waiting = [p for p, n in next_offsets.items() if n < (ends or {}).get(p, n)]
    release_day = None
    if waiting and len(combined):
        frontier = {p: t // DAY_MS for p, t in state.newest_by_partition.items()}
        known = ~np.isnan(day)
        newest = pd.Series(day[known]).groupby(combined["partition"].to_numpy()[known]).max()
        for part, last in newest.items():
            frontier[int(part)] = max(frontier.get(int(part), -1), int(last))
        # A partition not seen yet has no frontier: nothing of it can be waited for.
        seen = [frontier[p] for p in waiting if p in frontier]
        release_day = min(seen) if seen else None
    if release_day is None or not len(combined):
        return combined.reset_index(drop=True), empty_held(), release_day, next_offsets
    # Payments set aside have no time: released, they become dead letters at once.
    hold = np.nan_to_num(day, nan=-np.inf) > release_day
    return (
        combined.loc[~hold].reset_index(drop=True),
        combined.loc[hold].reset_index(drop=True),
        release_day,
        next_offsets,
    )


def payment_horizon_days(label_delay_days: int) -> int:
    """How long a payment can still take a fraud label that a feature reads, in days.

    That is the label delay plus the longest merchant window.
    """
    return label_delay_days + max(features.MERCHANT_WINDOWS_DAYS)


def operator_facts(records: pd.DataFrame) -> pd.DataFrame:
    """The fraud facts the card operator made in a micro-batch.

    They are ``operator.FACT_COLUMNS`` on payment and label rows, in the form
    :func:`features.fraud_facts` makes them.
    """
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
    """Per partition, the event time (ms) before which a payment of the next batch is late.

    That is the partition's newest event time so far minus the allowed lateness.
    """
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
