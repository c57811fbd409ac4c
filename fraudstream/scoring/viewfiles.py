"""Which files make up a view, and the ``compact`` job's merge of a day's small files.

The scoring job writes each view as ``ROOT/VIEW/date=D/batch-N.parquet``: one file per
micro-batch and date. A live job makes thousands of them a day, which every reader then
lists and opens. ``compact`` merges a day's batch files into a few large ones, each named
by the range of batches it holds: ``batch-A-B.parquet`` holds the rows of every file of
its folder whose batches lie in ``A..B``.

The rule every reader applies (:func:`current`): **in one folder, a file whose range of
batches lies inside another file's range is superseded**, and its rows are read from the
larger one. Without a table format a swap of many files is not atomic on any file system,
and on object stores there is no rename at all; with this rule

- a merged file is written whole or not at all (:mod:`fraudstream.storage`), and the
  instant it exists the files it covers stop counting: a reader sees each row once, before,
  during and after a compaction;
- the covered files stay for a grace period (``--grace-minutes``), so that a reader that
  listed the folder before the merge can still open them; a later run deletes them;
- a merge takes only batches that are finished: not the newest batch of the root, which
  may be running again after a crash (Spark starts batch N + 1 only once N is committed).
  A batch written to the day later (a late payment) gets a file of its own, outside every
  merged range, and counts as it should.

Readers that list the folders themselves (``spark.read.parquet(view_folder)``, a plain
``pyarrow.dataset``) see a day twice during a grace period; give them :func:`paths`
instead (``spark.read.option("basePath", folder).parquet(*paths)``), as
:func:`fraudstream.scoring.views.read_view` and the notebooks do.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fraudstream import storage

_LOG = logging.getLogger(__name__)

#: ``batch-N.parquet`` (one micro-batch) or ``batch-A-B.parquet`` (batches A..B merged).
BATCH_FILE = re.compile(r"^batch-(\d+)(?:-(\d+))?\.parquet$")

#: Rows of a merged file at most; a day with more is merged into several, each a range.
DEFAULT_MAX_ROWS = 5_000_000

#: Rows buffered before a row group is written: row groups of this size read well.
ROW_GROUP_ROWS = 500_000


def batch_file(first: int, last: int | None = None) -> str:
    """The name of the file of batch ``first``, or of batches ``first..last`` merged."""
    if last is None or last == first:
        return f"batch-{first:012d}.parquet"
    return f"batch-{first:012d}-{last:012d}.parquet"


def batch_range(name: str) -> tuple[int, int] | None:
    """The batches a file's name says it holds, or None for a name of another kind."""
    found = BATCH_FILE.match(name)
    if found is None:
        return None
    first = int(found.group(1))
    last = int(found.group(2)) if found.group(2) is not None else first
    return (first, last) if first <= last else None


def superseded(names: list[str]) -> dict[str, str]:
    """Files of one folder that another file covers, each with a file that covers it."""
    ranges = {name: span for name in names if (span := batch_range(name)) is not None}
    covered = {}
    for name, (first, last) in ranges.items():
        for other, (lo, hi) in ranges.items():
            if other != name and lo <= first and last <= hi and (lo, hi) != (first, last):
                covered[name] = other
                break
    return covered


def current(names: list[str]) -> list[str]:
    """The files of one folder that readers count: all but the superseded ones."""
    covered = superseded(names)
    return [name for name in names if name not in covered]


def _by_folder(relative: list[str]) -> dict[str, list[str]]:
    folders: dict[str, list[str]] = defaultdict(list)
    for path in relative:
        folder, _, name = path.rpartition("/")
        folders[folder].append(name)
    return folders


def files(root, view: str) -> list[str]:
    """Paths, relative to the view's folder, of the Parquet files that make up the view."""
    found = storage.files(root).sub(view).find("", ".parquet")
    return sorted(
        f"{folder}/{name}" if folder else name
        for folder, names in _by_folder(found).items()
        for name in current(names)
    )


def paths(root, view: str) -> list[str]:
    """Full paths (local) or URIs of the files that make up the view, for Spark or Arrow."""
    return [str(storage.join(root, view, *path.split("/"))) for path in files(root, view)]


# --- the compact job --------------------------------------------------------------------


@dataclass
class Merged:
    """One merged file: where, how many batch files it replaced, and its rows."""

    path: str
    files: int
    rows: int


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``: its columns cast, missing ones null."""
    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(table.num_rows, field.type)
        for field in schema
    ]
    return pa.table(columns, schema=schema)


def _footer(path: Path) -> tuple[int, pa.Schema]:
    metadata = pq.read_metadata(path)
    return metadata.num_rows, metadata.schema.to_arrow_schema()


def _merge(folder: storage.Files, names: list[str], schemas: list[pa.Schema]):
    """A writer of the rows of ``names`` (files of ``folder``), in batch order, as one file."""
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    counted = []

    def write(path: Path) -> None:
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            pending, rows = [], 0
            for name in names:
                table = _conform(folder.read(name, pq.read_table), schema)
                counted.append(table.num_rows)
                pending.append(table)
                rows += table.num_rows
                if rows >= ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(pending), row_group_size=rows)
                    pending, rows = [], 0
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=max(rows, 1))

    return write, counted


def _chunks(footers: dict[str, tuple[int, pa.Schema]], max_rows: int) -> list[list[str]]:
    """Consecutive runs of the files of at most ``max_rows`` rows each.

    The files are taken in ``footers``' order, by batch.
    """
    chunks: list[list[str]] = []
    chunk: list[str] = []
    rows = 0
    for name, (count, _) in footers.items():
        if chunk and rows + count > max_rows:
            chunks.append(chunk)
            chunk, rows = [], 0
        chunk.append(name)
        rows += count
    if chunk:
        chunks.append(chunk)
    return chunks


def _newest_batch(root: storage.Files, views: tuple[str, ...]) -> int:
    """The newest batch of any view: the one micro-batch that may not be committed yet."""
    newest = -1
    for view in views:
        for path in root.sub(view).find("", ".parquet"):
            span = batch_range(path.rpartition("/")[2])
            if span is not None:
                newest = max(newest, span[1])
    return newest


def _day(folder_name: str) -> date | None:
    key, _, value = folder_name.partition("=")
    if key != "date":
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def compact(
    root,
    views: tuple[str, ...],
    until: date,
    max_rows: int = DEFAULT_MAX_ROWS,
    grace_s: float = 3600.0,
    now: float | None = None,
    log=_LOG.info,
) -> dict[str, int]:
    """Merge the batch files of every day before ``until``; delete files superseded long ago.

    Parameters
    ----------
    root : str or Path
        The scoring job's output root (a local folder or a Hadoop URI).
    views : tuple of str
        The views to compact.
    until : date
        Days before this one are merged (a day still written to may be merged too: its
        later batches get files of their own; this only saves merging it again).
    max_rows : int
        Rows of one merged file at most.
    grace_s : float
        How long a superseded file stays, for readers that listed it before the merge.
    now : float, optional
        The time (seconds since the epoch) that grace periods are measured to.

    Returns
    -------
    dict
        ``merged`` files written, batch ``files`` they replaced, ``rows`` in them, and
        superseded files ``deleted``.
    """
    now = time.time() if now is None else now
    lake = storage.files(root)
    newest = _newest_batch(lake, views)
    totals = {"merged": 0, "files": 0, "rows": 0, "deleted": 0}
    for view in views:
        for day_folder in lake.sub(view).list():
            day = _day(day_folder)
            if day is None or day >= until:
                continue
            folder = lake.sub(f"{view}/{day_folder}")
            names = folder.list()
            for name, cover in superseded(names).items():
                if now - folder.modified(cover) >= grace_s:
                    folder.delete(name)
                    totals["deleted"] += 1
            spans = {
                name: span
                for name in current(folder.list())
                if (span := batch_range(name)) is not None
            }
            # The newest batch may run again after a crash and rewrite its file.
            ready = sorted(spans, key=spans.__getitem__)
            ready = [name for name in ready if spans[name][1] < newest]
            # Each file's row count and schema from its footer, read once.
            footers = {name: folder.read(name, _footer) for name in ready}
            for chunk in _chunks(footers, max_rows):
                if len(chunk) < 2:
                    continue
                name = batch_file(spans[chunk[0]][0], spans[chunk[-1]][1])
                write, counted = _merge(folder, chunk, [footers[n][1] for n in chunk])
                folder.write(name, write)
                totals["merged"] += 1
                totals["files"] += len(chunk)
                totals["rows"] += sum(counted)
                log(f"{view}/{day_folder}/{name}: {len(chunk):,} files, {sum(counted):,} rows")
    return totals
