"""Locations of the scoring job's files: a local folder, a Hadoop file system through Spark's
JVM (its local one, which renames into place), and S3 (moto's local server, uploaded whole)."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fraudstream import storage


def test_location_keeps_uris_and_resolves_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.location("s3a://bucket/lake/") == "s3a://bucket/lake"
    assert storage.location("hdfs://namenode:8020/lake") == "hdfs://namenode:8020/lake"
    assert storage.location("data/lake") == tmp_path / "data" / "lake"
    assert storage.location("file:///srv/lake") == storage.Path("/srv/lake")
    assert storage.join("s3a://bucket/lake", "scored", "date=2018-04-01") == (
        "s3a://bucket/lake/scored/date=2018-04-01"
    )
    assert storage.join(tmp_path, "scored") == tmp_path / "scored"


def test_files_write_read_list_find_and_delete(place):
    assert not place.exists() and place.list() == [] and place.find("", ".parquet") == []
    table = pa.table({"card_id": ["c1", "c2"], "amount": [1.5, 2.5]})
    size = place.write("view/date=2018-04-01/batch-1.parquet", lambda p: pq.write_table(table, p))
    place.write("view/date=2018-04-02/batch-2.parquet", lambda p: pq.write_table(table, p))
    place.write("log/batch-1.json", lambda p: p.write_text(json.dumps({"a": 1})))

    assert size > 0
    assert place.list() == ["log", "view"]
    assert place.list("view") == ["date=2018-04-01", "date=2018-04-02"]
    assert place.find("view", ".parquet") == [
        "date=2018-04-01/batch-1.parquet",
        "date=2018-04-02/batch-2.parquet",
    ]
    assert place.any_file("view", ".parquet") and not place.any_file("log", ".parquet")
    assert place.read("view/date=2018-04-01/batch-1.parquet", pq.read_table).equals(table)
    assert json.loads(place.read("log/batch-1.json", storage.Path.read_text)) == {"a": 1}
    # Nothing half-written or hidden is left beside the files.
    assert place.list("view/date=2018-04-01") == ["batch-1.parquet"]

    # Writing a name again replaces the file.
    place.write("log/batch-1.json", lambda p: p.write_text(json.dumps({"a": 2})))
    assert json.loads(place.read("log/batch-1.json", storage.Path.read_text)) == {"a": 2}

    # A move into a new folder, and over a file, leaves one file under the new name.
    place.write("_staging/date=2018-04-03/part-0.parquet", lambda p: pq.write_table(table, p))
    place.move("_staging/date=2018-04-03/part-0.parquet", "view/date=2018-04-03/batch-3.parquet")
    place.write("_staging/part-1.parquet", lambda p: pq.write_table(table.slice(1), p))
    place.move("_staging/part-1.parquet", "view/date=2018-04-03/batch-3.parquet")
    assert place.list("view/date=2018-04-03") == ["batch-3.parquet"]
    assert place.read("view/date=2018-04-03/batch-3.parquet", pq.read_table).num_rows == 1
    assert place.find("_staging", ".parquet") == []
    place.delete("view/date=2018-04-03")

    place.delete("view/date=2018-04-01")
    place.delete("log/batch-9.json")  # missing: nothing happens
    assert place.find("view", ".parquet") == ["date=2018-04-02/batch-2.parquet"]
    assert place.sub("view").list() == ["date=2018-04-02"]


def test_spark_outputs_write_a_batch_idempotently(spark, tmp_path):
    """The executors' views: Spark writes each view's rows of a batch, one file per date
    whatever the number of tasks, under the names the views have always had; a rerun of
    the batch replaces its files and removes those it no longer makes."""
    from datetime import date

    from fraudstream.scoring import outputs, views

    def rows(days, tag):
        frame = pd.DataFrame(
            {"date": [date(2018, 4, d) for d in days], "tag": tag, "n": range(len(days))}
        )
        return spark.createDataFrame(frame).repartition(3)

    # A "+" and a space in the root: a percent-encoded URI of it would name another
    # folder for Spark, and the views would read back empty.
    root = tmp_path / "lake +1"
    sink = outputs.SparkOutputs(root)
    written = sink.write(
        7,
        {
            views.SCORED: rows([1, 2, 2, 1, 2], "first"),
            views.ALERTS: rows([2], "alert"),
            views.CARD_LOCATIONS: rows([1, 2], "x"),
        },
    )
    assert written == {
        views.ALERTS: 1,
        views.CARD_LOCATIONS: 2,
        views.SCORED: 2,
        views.DEAD_LETTERS: 0,
    }
    files = storage.files(root)
    assert files.find(views.SCORED, ".parquet") == [
        "date=2018-04-01/batch-000000000007.parquet",
        "date=2018-04-02/batch-000000000007.parquet",
    ]
    assert sorted(views.read_view(root, views.SCORED)["n"]) == [0, 1, 2, 3, 4]
    # Left by a run that died before moving its files; then the batch run again (the
    # same payments, so the same dates) by a new champion that alerts on none of them.
    (root / outputs.STAGING / "batch-000000000007").mkdir(parents=True)
    sink.write(
        7,
        {
            views.SCORED: rows([1, 2, 2, 1, 2], "second"),
            views.CARD_LOCATIONS: rows([1, 2], "x"),
        },
    )
    scored = views.read_view(root, views.SCORED)
    assert sorted(scored["n"]) == [0, 1, 2, 3, 4] and set(scored["tag"]) == {"second"}
    assert len(views.read_view(root, views.CARD_LOCATIONS)) == 2
    assert views.read_view(root, views.ALERTS).empty
    assert not (root / outputs.STAGING).exists()


def test_files_writer_failure_leaves_no_file(place):
    def broken(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        place.write("log/batch-1.json", broken)
    assert place.list("log") == []


def test_files_of_an_unknown_scheme_say_so_in_one_sentence(spark):
    with pytest.raises(storage.StorageError, match=r"no file system for nosuch:// URIs"):
        storage.files("nosuch://bucket/lake", spark)
