"""Compare a view rebuilt by replay with the live one, key by key.

The stream is the system of record: replaying ``payments`` from its oldest offset with
the same code and the same model version must give the same views. This module says
whether it did. Each view has a key (a payment's ``transaction_id``; a dead letter's
topic, partition and offset); rows are matched on it and every column compared, but
the columns that record when a row was written (``scored_time``,
``dead_lettered_time``), which no replay can reproduce.

Only payments both runs have read are compared: the live job may be behind the topic's
end, or ahead of a rebuild started earlier. The range is taken per partition from the
``scored`` and ``dead_letters`` views, which record each payment's Kafka offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fraudstream import config, storage
from fraudstream.scoring import views

#: The view names users type, and the folder each is written to.
VIEW_NAMES = {
    "alerts": views.ALERTS,
    "card-locations": views.CARD_LOCATIONS,
    "scored": views.SCORED,
    "dead-letters": views.DEAD_LETTERS,
}
KEYS = {
    views.ALERTS: ["transaction_id"],
    views.CARD_LOCATIONS: ["transaction_id"],
    views.SCORED: ["transaction_id"],
    views.DEAD_LETTERS: ["topic", "partition", "offset"],
}
#: When a row was written: differs in every replay by nature.
WALL_CLOCK_COLUMNS = {"scored_time", "dead_lettered_time"}
#: The shadow challenger's columns of the scored view, its version first.
SHADOW_COLUMNS = ("challenger_version", "challenger_score")
#: Floats are compared to this absolute tolerance (the parity test's).
FLOAT_TOLERANCE = 1e-9


@dataclass
class ViewDiff:
    """The outcome of comparing one view."""

    view: str
    compared: int = 0
    only_live: list = field(default_factory=list)
    only_rebuilt: list = field(default_factory=list)
    #: key -> {column: (live value, rebuilt value)}
    changed: dict = field(default_factory=dict)
    #: Rows scored by another model version in the two runs: expected to differ.
    other_model: int = 0
    #: Rows whose shadow challenger differs between the runs (another version, or none
    #: in one of them): their challenger columns are not compared.
    other_challenger: int = 0
    outside_range: int = 0

    @property
    def equal(self) -> bool:
        """Whether the two runs wrote the same rows with the same values."""
        return not (self.only_live or self.only_rebuilt or self.changed)

    def report(self, examples: int = 5) -> list[str]:
        """Human-readable lines: counts, then a few examples of each kind of difference."""
        verdict = "identical" if self.equal else "DIFFERENT"
        lines = [
            f"{self.view}: {verdict}: {self.compared:,} rows compared, "
            f"{len(self.only_live):,} only live, {len(self.only_rebuilt):,} only rebuilt, "
            f"{len(self.changed):,} changed"
        ]
        if self.other_model:
            lines.append(
                f"  {self.other_model:,} rows scored by another model version in the live run "
                "were left out (rebuild with that version to compare them)"
            )
        if self.other_challenger:
            lines.append(
                f"  {self.other_challenger:,} rows had another shadow challenger in the live "
                "run; their challenger scores were left out"
            )
        if self.outside_range:
            lines.append(
                f"  {self.outside_range:,} rows of payments only one run has read were left out"
            )
        for title, keys in (("only live", self.only_live), ("only rebuilt", self.only_rebuilt)):
            for key in keys[:examples]:
                lines.append(f"  {title}: {_key_text(key)}")
        for key, columns in list(self.changed.items())[:examples]:
            shown = ", ".join(f"{c}: {a!r} -> {b!r}" for c, (a, b) in list(columns.items())[:4])
            lines.append(f"  changed {_key_text(key)}: {shown}")
        return lines


def _key_text(key) -> str:
    return "/".join(str(part) for part in key) if isinstance(key, tuple) else str(key)


def _offset_ranges(root: Path | str, payments_topic: str) -> dict[int, int]:
    """The highest payments offset read, per partition, from ``scored`` and dead letters."""
    highest: dict[int, int] = {}
    frames = [views.read_view(root, views.SCORED)]
    dead = views.read_view(root, views.DEAD_LETTERS)
    if len(dead):
        frames.append(dead[dead["topic"] == payments_topic])
    for frame in frames:
        if not len(frame):
            continue
        for partition, offset in frame.groupby("partition")["offset"].max().items():
            highest[int(partition)] = max(highest.get(int(partition), -1), int(offset))
    return highest


def _in_range(frame: pd.DataFrame, limits: dict[int, int]) -> np.ndarray:
    partitions = frame["partition"].astype(int).to_numpy()
    limit = np.array([limits.get(p, -1) for p in partitions], dtype=np.int64)
    return frame["offset"].astype(np.int64).to_numpy() <= limit


def _inside(frame: pd.DataFrame, view: str, root: Path | str, limits, payments_topic) -> np.ndarray:
    """Which rows of ``view`` come from payments at or below ``limits``."""
    if view == views.DEAD_LETTERS:
        return (frame["topic"] != payments_topic).to_numpy() | _in_range(frame, limits)
    if view == views.SCORED:
        return _in_range(frame, limits)
    # Alerts and card locations: located through the scored row of the same payment.
    scored = views.read_view(root, views.SCORED)
    where = scored.set_index("transaction_id")[["partition", "offset"]]
    located = where.reindex(frame["transaction_id"]).fillna(-1).reset_index(drop=True)
    return _in_range(located, limits) & (located["partition"] >= 0).to_numpy()


def _differs(live: pd.Series, rebuilt: pd.Series) -> np.ndarray:
    both_missing = (live.isna() & rebuilt.isna()).to_numpy()
    if pd.api.types.is_float_dtype(live) and pd.api.types.is_float_dtype(rebuilt):
        close = ((live - rebuilt).abs() <= FLOAT_TOLERANCE).to_numpy()
        return ~(close | both_missing)
    if live.map(lambda v: isinstance(v, np.ndarray | list)).any():
        as_tuple = lambda v: tuple(v) if isinstance(v, np.ndarray | list) else v  # noqa: E731
        return (live.map(as_tuple) != rebuilt.map(as_tuple)).to_numpy() & ~both_missing
    return ~((live == rebuilt).fillna(False).to_numpy().astype(bool) | both_missing)


def compare_view(
    live_root: Path | str,
    rebuilt_root: Path | str,
    view: str,
    payments_topic: str = config.TOPIC_PAYMENTS,
) -> ViewDiff:
    """Compare ``view`` of two output roots, over the payments both runs have read."""
    diff = ViewDiff(view)
    key = KEYS[view]
    live_limits = _offset_ranges(live_root, payments_topic)
    rebuilt_limits = _offset_ranges(rebuilt_root, payments_topic)
    common = {p: min(o, rebuilt_limits[p]) for p, o in live_limits.items() if p in rebuilt_limits}
    frames = []
    for root in (live_root, rebuilt_root):
        frame = views.read_view(root, view)
        # The hive partition column (``date``) reads back as a categorical whose
        # categories differ between roots: compare plain values.
        frame = frame.astype(
            {c: object for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)}
        )
        if len(frame):
            inside = _inside(frame, view, root, common, payments_topic)
            diff.outside_range += int((~inside).sum())
            frame = frame[inside]
        frames.append(frame)
    live, rebuilt = frames
    if not len(live) and not len(rebuilt):
        return diff
    if not len(live) or not len(rebuilt):
        present = live if len(live) else rebuilt
        keys = [_key(row) for row in present[key].itertuples(index=False)]
        (diff.only_live if len(live) else diff.only_rebuilt).extend(sorted(keys, key=str))
        return diff
    merged = live.merge(
        rebuilt, on=key, how="outer", suffixes=("@live", "@rebuilt"), indicator=True
    )
    for side, target in (("left_only", diff.only_live), ("right_only", diff.only_rebuilt)):
        rows = merged.loc[merged["_merge"] == side, key]
        target.extend(sorted((_key(row) for row in rows.itertuples(index=False)), key=str))
    both = merged[merged["_merge"] == "both"].reset_index(drop=True)
    if "model_version" in live.columns:
        other = (both["model_version@live"] != both["model_version@rebuilt"]).to_numpy()
        diff.other_model = int(other.sum())
        both = both[~other].reset_index(drop=True)
    diff.compared = len(both)
    columns = [c for c in live.columns if c not in key and c not in WALL_CLOCK_COLUMNS]
    flags = {c: _differs(both[f"{c}@live"], both[f"{c}@rebuilt"]) for c in columns}
    if SHADOW_COLUMNS[0] in flags:
        # The challenger is a live experiment beside the decisions: a rebuild replays one
        # version of it (``live_challengers``); rows of another are not compared on it.
        other = flags[SHADOW_COLUMNS[0]]
        diff.other_challenger = int(other.sum())
        for column in SHADOW_COLUMNS:
            flags[column] = flags[column] & ~other
    changed_rows = np.flatnonzero(np.logical_or.reduce(list(flags.values())))
    for row in changed_rows:
        record = both.iloc[row]
        diff.changed[_key(tuple(record[k] for k in key))] = {
            c: (record[f"{c}@live"], record[f"{c}@rebuilt"]) for c in columns if flags[c][row]
        }
    return diff


def _key(values: tuple):
    return values if len(values) > 1 else values[0]


def live_models(root: Path | str) -> list[tuple[str, str, float]]:
    """The (model name, version, threshold) triples that scored the payments of ``root``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ["model_name", "model_version", "threshold"]
    if storage.is_uri(root):
        scored = views.read_view(root, views.SCORED)
        if not len(scored):
            return []
        table = pa.Table.from_pandas(scored[columns], preserve_index=False)
    else:
        folder = Path(root) / views.SCORED
        if not folder.is_dir() or not any(folder.rglob("*.parquet")):
            return []
        table = pq.read_table(folder, columns=columns)
    used = table.group_by(columns).aggregate([])
    return sorted(
        (row["model_name"], row["model_version"], row["threshold"]) for row in used.to_pylist()
    )


def live_challengers(root: Path | str) -> list[str]:
    """The shadow challenger versions that scored payments of ``root``, oldest first."""
    scored = views.read_view(root, views.SCORED)
    if "challenger_version" not in scored.columns:
        return []
    found = scored["challenger_version"].dropna().astype(str).unique()
    return sorted(found, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))
