"""Event files: payment and label events as Parquet, partitioned by date.

The simulator and the importers write this layout, and the jobs read it::

    DIR/events/date=2018-04-01/part-0.parquet   (payment events, by event_time's date)
    DIR/labels/date=2018-04-09/part-0.parquet   (label events, by reported_time's date)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from fraudstream import schemas

EVENTS = "events"
LABELS = "labels"

#: Rows per Parquet row group: large enough for fast scans, small enough for memory.
ROW_GROUP_ROWS = 256 * 1024


def _write(table: pa.Table, schema: pa.Schema, time_column: str, folder: Path) -> int:
    """Write ``table`` as ``folder``, replacing it only once the new files are complete."""
    table = table.select(schema.names).cast(schema)
    table = table.sort_by([(time_column, "ascending")])
    dates = pc.strftime(table[time_column], format="%Y-%m-%d")
    staging = folder.with_name(f".{folder.name}.writing")
    if staging.exists():
        shutil.rmtree(staging)
    ds.write_dataset(
        table.append_column("date", dates),
        staging,
        format="parquet",
        file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
        partitioning=ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive"),
        basename_template="part-{i}.parquet",
        max_rows_per_group=ROW_GROUP_ROWS,
        min_rows_per_group=min(ROW_GROUP_ROWS, max(table.num_rows, 1)),
        existing_data_behavior="overwrite_or_ignore",
    )
    # An empty table writes no file: keep an empty folder, so that "no rows" reads back
    # as an empty table rather than as a folder that was never written.
    staging.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        retired = folder.with_name(f".{folder.name}.old")
        if retired.exists():
            shutil.rmtree(retired)
        folder.rename(retired)
        staging.rename(folder)
        shutil.rmtree(retired)
    else:
        staging.rename(folder)
    return table.num_rows


def write_events(payments: pa.Table, out: Path) -> int:
    """Write payment events to ``out/events``, replacing what was there; return the row count."""
    return _write(payments, schemas.PAYMENT_ARROW_SCHEMA, "event_time", Path(out) / EVENTS)


def write_labels(labels: pa.Table, out: Path) -> int:
    """Write label events to ``out/labels``, replacing what was there; return the row count."""
    return _write(labels, schemas.LABEL_ARROW_SCHEMA, "reported_time", Path(out) / LABELS)


def read_events(root: Path, columns: list[str] | None = None) -> pa.Table:
    """Read ``root/events`` as one Arrow table in the contract's schema, sorted by event_time."""
    return _read(Path(root) / EVENTS, schemas.PAYMENT_ARROW_SCHEMA, "event_time", columns)


def read_labels(root: Path, columns: list[str] | None = None) -> pa.Table:
    """Read ``root/labels`` as one Arrow table in the contract's schema, sorted by reported_time."""
    return read_label_folder(Path(root) / LABELS, columns)


def read_label_folder(folder: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read label events from ``folder`` (``DATA/labels``, or the label store ``OUT/labels``)."""
    return _read(Path(folder), schemas.LABEL_ARROW_SCHEMA, "reported_time", columns)


def _read(folder: Path, schema: pa.Schema, time_column: str, columns) -> pa.Table:
    if not folder.is_dir():
        raise FileNotFoundError(f"No event folder at {folder}.")
    if not any(folder.rglob("*.parquet")):
        table = schema.empty_table()
        return table.select(columns) if columns else table
    table = pq.read_table(folder, schema=schema.append(pa.field("date", pa.string())))
    table = table.drop_columns(["date"]).sort_by([(time_column, "ascending")])
    return table.select(columns) if columns else table
