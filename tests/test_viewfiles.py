"""The files that make up a view, and the compact job's merge of a day's small files:
on a local folder, Hadoop's local file system (renames) and S3 (moto's server, uploads)."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fraudstream import storage
from fraudstream.scoring import viewfiles, views
from jobs import compact as compact_job

DAY_1, DAY_2, DAY_3 = "2026-11-01", "2026-11-02", "2026-11-03"


def _write(files, view: str, day: str, batch: int, rows: int, **extra) -> None:
    table = pa.table(
        {
            "batch": [batch] * rows,
            "row": list(range(rows)),
            **{k: [v] * rows for k, v in extra.items()},
        }
    )
    files.write(
        f"{view}/date={day}/{viewfiles.batch_file(batch)}",
        lambda path: pq.write_table(table, path),
    )


def _rows(files, view: str) -> list[tuple]:
    """Every row the view's current files hold, with its folder, sorted."""
    found = []
    for path in viewfiles.files(files, view):
        table = files.sub(view).read(path, pq.read_table)
        folder = path.rpartition("/")[0]
        found.extend(
            (folder, *row)
            for row in zip(table["batch"].to_pylist(), table["row"].to_pylist(), strict=True)
        )
    return sorted(found)


def test_current_counts_each_batch_once_through_the_widest_range():
    names = [
        "batch-000000000001.parquet",
        "batch-000000000002.parquet",
        "batch-000000000001-000000000002.parquet",
        "batch-000000000003.parquet",
        "notes.parquet",
    ]
    assert viewfiles.current(names) == [
        "batch-000000000001-000000000002.parquet",
        "batch-000000000003.parquet",
        "notes.parquet",
    ]
    # A later merge that takes a merged file in supersedes it and what it covered.
    wider = [*names, "batch-000000000001-000000000003.parquet"]
    assert viewfiles.current(wider) == ["notes.parquet", "batch-000000000001-000000000003.parquet"]
    assert viewfiles.superseded(wider)["batch-000000000002.parquet"] in {
        "batch-000000000001-000000000002.parquet",
        "batch-000000000001-000000000003.parquet",
    }
    assert viewfiles.batch_range("batch-000000000007.parquet") == (7, 7)
    assert viewfiles.batch_range("batch-000000000009-000000000007.parquet") is None


def test_compact_merges_finished_days_and_every_row_counts_once(place):
    lake = place
    for batch in range(5):
        _write(lake, "scored", DAY_1 if batch < 3 else DAY_2, batch, rows=batch + 1)
    _write(lake, "scored", DAY_2, 5, rows=2)  # the newest batch: it may run again
    _write(lake, "scored", DAY_3, 5, rows=2)  # a day not finished
    _write(lake, "alerts", DAY_1, 1, rows=1)
    _write(lake, "alerts", DAY_1, 2, rows=1)
    before = _rows(lake, "scored")

    totals = viewfiles.compact(lake, ("scored", "alerts"), until=date(2026, 11, 3), now=1e12)

    assert totals == {"merged": 3, "files": 7, "rows": 17, "deleted": 0}
    assert _rows(lake, "scored") == before
    assert viewfiles.files(lake, "scored") == [
        f"date={DAY_1}/batch-000000000000-000000000002.parquet",
        f"date={DAY_2}/batch-000000000003-000000000004.parquet",
        f"date={DAY_2}/batch-000000000005.parquet",
        f"date={DAY_3}/batch-000000000005.parquet",
    ]
    assert viewfiles.files(lake, "alerts") == [
        f"date={DAY_1}/batch-000000000001-000000000002.parquet"
    ]
    # The merged files stay for readers that listed the day before the merge.
    assert len(lake.find("scored", ".parquet")) == 9

    # A batch written to a merged day afterwards (a late payment) counts beside it.
    _write(lake, "scored", DAY_1, 6, rows=3)
    _write(lake, "scored", DAY_1, 7, rows=1)
    before = _rows(lake, "scored")
    assert len(before) == 23
    # Once the grace period is over the superseded files go; the day is merged again.
    merged_at = max(
        lake.modified(f"scored/date={DAY_1}/batch-000000000000-000000000002.parquet"),
        lake.modified(f"scored/date={DAY_2}/batch-000000000003-000000000004.parquet"),
    )
    totals = viewfiles.compact(
        lake, ("scored",), until=date(2026, 11, 3), grace_s=60, now=merged_at + 61
    )
    # The second day's newest batch is not the root's newest any more: it is merged too.
    assert totals == {"merged": 2, "files": 4, "rows": 20, "deleted": 5}
    assert _rows(lake, "scored") == before
    assert lake.list(f"scored/date={DAY_1}") == [
        "batch-000000000000-000000000002.parquet",
        "batch-000000000000-000000000006.parquet",
        "batch-000000000006.parquet",
        "batch-000000000007.parquet",
    ]


def test_compact_splits_large_days_and_unifies_schemas(tmp_path):
    files = storage.files(tmp_path / "lake")
    _write(files, "scored", DAY_1, 0, rows=3)
    _write(files, "scored", DAY_1, 1, rows=3, model_version="2")
    _write(files, "scored", DAY_1, 2, rows=3)
    _write(files, "scored", DAY_1, 3, rows=3)
    _write(files, "scored", DAY_1, 4, rows=1)
    before = views.read_view(tmp_path / "lake", "scored")

    totals = viewfiles.compact(
        tmp_path / "lake", ("scored",), until=date(2026, 11, 2), max_rows=6, log=lambda _: None
    )

    assert totals["merged"] == 2 and totals["files"] == 4
    assert viewfiles.files(files, "scored") == [
        f"date={DAY_1}/batch-000000000000-000000000001.parquet",
        f"date={DAY_1}/batch-000000000002-000000000003.parquet",
        f"date={DAY_1}/batch-000000000004.parquet",
    ]
    after = views.read_view(tmp_path / "lake", "scored")
    key = ["batch", "row"]
    pd.testing.assert_frame_equal(
        after.sort_values(key).reset_index(drop=True)[before.columns],
        before.sort_values(key).reset_index(drop=True),
    )
    assert views.count_rows(tmp_path / "lake", "scored") == len(before) == 13
    assert after.loc[after["batch"] == 1, "model_version"].tolist() == ["2"] * 3
    assert after.loc[after["batch"] == 0, "model_version"].isna().all()


def test_compact_job_says_what_it_did_and_refuses_wrong_flags(tmp_path, capsys):
    files = storage.files(tmp_path / "lake")
    for batch in range(3):
        _write(files, "dead_letters", DAY_1, batch, rows=2)

    assert compact_job.main(["--out", str(tmp_path / "lake"), "--until", DAY_2]) == 0
    said = capsys.readouterr().out
    assert "compact: 2 files merged into 1 (4 rows), 0 superseded files deleted" in said
    assert views.count_rows(tmp_path / "lake", "dead_letters") == 6

    for flags, message in (
        (["--views", "scored,alrts"], "--views: alrts; the views are"),
        (["--max-rows", "0"], "--max-rows must be 1 or more"),
    ):
        with pytest.raises(SystemExit):
            compact_job.main(["--out", str(tmp_path / "lake"), *flags])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compact_job.main(["--out", str(tmp_path / "nowhere")])
    assert f"--out: no folder {tmp_path / 'nowhere'}" in capsys.readouterr().err
