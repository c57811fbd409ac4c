"""The scoring query's merchant features, from one table per day computed by Spark.

Every merchant feature of a payment of day D is a function of its merchant and D alone:
counts of whole days before D and frauds reported before D. So is
``card_known_frauds_30d``, of its card and D. The query therefore keeps no merchant state
in the driver. Instead:

1. Each micro-batch records what it adds, under the query's checkpoint, named by its
   batch id: the payments it scored per merchant and day (``counts/batch-N.parquet``),
   and the fraud facts the card operator made (``facts/batch-N.parquet``). A batch run
   again after a crash writes the same files again.
2. The first micro-batch that scores payments of a day D has Spark compute that day's
   values for every merchant and card from those records
   (:func:`spark_features.values_on_days`, beside training's Spark features). The
   values are written to ``days/day-D/`` and kept for the rest of the day: a payment of
   day D takes its merchant's and its card's row (none: 0). In live operation this is
   one Spark job a day; a catch-up computes every day it releases in one job.
3. Every :data:`FOLD_AFTER` record files, Spark folds them into ``folded/upto-N/``
   (its writer) and forgets what no payment still to come can read: days older than the
   watermark's day minus the label delay and the longest window. A day's job reads a
   fold and at most that many small files, whatever the batch rate.

A day's values are final when its first payment is scored: ``state.hold_back`` holds a
catch-up's payments of day D until every partition that still has records to read has
reached D, and live traffic is read to the end of every partition at each micro-batch.
A payment of day D - 1 that comes after the first payment of day D was scored (within
the allowed lateness) counts from day D + 1 on. The driver's own merchant state counted
it for the rest of day D as well.

The folder is local or on any Hadoop file system (:mod:`fraudstream.storage`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudstream import features, storage

COUNT_COLUMNS = ["merchant_id", "day", "tx_count"]
FACT_COLUMNS = ["card_id", "merchant_id", "tx_day", "report_day"]
MERCHANT_COLUMNS = [c for c in features.DAY_COLUMNS if c.startswith("merchant_")]
CARD_COLUMNS = ["card_known_frauds_30d"]
_KINDS = {"counts": COUNT_COLUMNS, "facts": FACT_COLUMNS}
_STRINGS = ("merchant_id", "card_id")
#: Batch records (files) after which Spark folds them into one: what a day's computation
#: reads stays a fold and at most this many small files, whatever the batch rate.
FOLD_AFTER = 64


def _name(batch_id: int) -> str:
    return f"batch-{batch_id:012d}"


def _write_parquet(frame: pd.DataFrame):
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return lambda path: pq.write_table(table, path)


def _read_parquet(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def _spark_schema(kind: str):
    from pyspark.sql import types as T  # noqa: N812

    return T.StructType(
        [T.StructField(c, T.StringType() if c in _STRINGS else T.LongType()) for c in _KINDS[kind]]
    )


class DayTables:
    """The per-day merchant and card values of one scoring query (see the module's doc).

    Parameters
    ----------
    folder : Path or str
        Under the query's checkpoint: local, or a Hadoop URI.
    label_delay_days : int
        The model's label delay: how many whole days back the merchant windows end.
    spark : SparkSession, optional
        The session that computes the tables; by default the active one.
    """

    def __init__(self, folder, label_delay_days: int, spark=None):
        self.folder = folder
        self.files = storage.files(folder)
        self.label_delay_days = label_delay_days
        self.spark = spark
        self.fold_after = FOLD_AFTER
        self._days: dict[int, tuple[pd.DataFrame, pd.DataFrame]] = {}

    # --- 1. what each micro-batch adds ---------------------------------------------

    def record(
        self, batch_id: int, counts: pd.DataFrame, facts: pd.DataFrame, oldest_day: int
    ) -> None:
        """Keep a micro-batch's payment counts and fraud facts.

        Those are :data:`COUNT_COLUMNS` and :data:`FACT_COLUMNS`; empty ones leave no
        file. Every :data:`FOLD_AFTER` batch records, Spark folds them into one. The values
        of days before ``oldest_day`` (no payment still to come is of an earlier one) are
        forgotten.
        """
        for kind, frame in (("counts", counts), ("facts", facts)):
            if len(frame):
                frame = frame[_KINDS[kind]].astype(
                    {c: object if c in _STRINGS else np.int64 for c in _KINDS[kind]}
                )
                self.files.write(f"{kind}/{_name(batch_id)}.parquet", _write_parquet(frame))
        folded = self._newest_fold(batch_id)
        after = folded.split("upto-")[1] if folded else ""
        waiting = sum(
            after < name[: -len(".parquet")] <= _name(batch_id)
            for kind in _KINDS
            for name in self.files.list(kind)
        )
        if waiting >= self.fold_after:
            self._fold(batch_id, oldest_day)
        self._forget_days(oldest_day)

    # --- 2. the values of a day ----------------------------------------------------

    def lookup(
        self, merchant_id, card_id, day: np.ndarray, batch_id: int, oldest_day: int
    ) -> pd.DataFrame:
        """:data:`features.DAY_COLUMNS` of payments, row for row.

        They are :func:`values` of :meth:`tables`.

        Parameters
        ----------
        merchant_id, card_id, day : array-like
            Each payment's merchant, card and UTC day (days since the epoch).
        batch_id, oldest_day : int
            As for :meth:`tables`.
        """
        day = np.asarray(day, dtype=np.int64)
        merchants, cards = self.tables({int(d) for d in day}, batch_id, oldest_day)
        return values(merchants, cards, merchant_id, card_id, day)

    def tables(self, days, batch_id: int, oldest_day: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The merchant and card values of ``days``.

        That is ``merchant_id, day`` with :data:`MERCHANT_COLUMNS`, and ``card_id, day``
        with :data:`CARD_COLUMNS` (only cards with a value).

        Parameters
        ----------
        days : iterable of int
            UTC days (days since the epoch).
        batch_id : int
            The micro-batch asking: a day computed now reads the records of the batches
            up to it.
        oldest_day : int
            No payment still to come is of an earlier day (the stream's watermark).
        """
        days = sorted({int(d) for d in days})
        missing = [d for d in days if not self._known(d)]
        if missing:
            # A day asked now stays known: nothing older than every one of them is forgotten.
            self._compute(missing, batch_id, min(oldest_day, *days))
        merchants = pd.concat([self._days[d][0] for d in days] or [_empty_merchants()])
        cards = pd.concat([self._days[d][1] for d in days] or [_empty_cards()])
        return merchants.reset_index(drop=True), cards.reset_index(drop=True)

    def _known(self, day: int) -> bool:
        if day in self._days:
            return True
        folder = f"days/day-{day}"
        if not self.files.exists(f"{folder}/cards.parquet"):
            return False
        self._days[day] = (
            self.files.read(f"{folder}/merchants.parquet", _read_parquet),
            self.files.read(f"{folder}/cards.parquet", _read_parquet),
        )
        return True

    def _compute(self, days: list[int], batch_id: int, oldest_day: int) -> None:
        from pyspark.sql import SparkSession
        from pyspark.sql import functions as F  # noqa: N812

        from fraudstream.ml import spark_features

        spark = self.spark or SparkSession.active()
        _, counts, facts = self._records(spark, batch_id)
        merchants, cards = spark_features.values_on_days(counts, facts, days, self.label_delay_days)
        # One Spark job for both: the two share every step up to the values.
        both = merchants.withColumn("card_id", F.lit(None).cast("string")).unionByName(
            cards, allowMissingColumns=True
        )
        both = both.toPandas()
        is_card = both["card_id"].notna().to_numpy()
        merchants = both.loc[~is_card, ["merchant_id", "day", *MERCHANT_COLUMNS]]
        cards = both.loc[is_card, ["card_id", "day", *CARD_COLUMNS]]
        for day in days:
            pair = (
                merchants.loc[merchants["day"] == day].reset_index(drop=True),
                cards.loc[cards["day"] == day].reset_index(drop=True),
            )
            folder = f"days/day-{day}"
            self.files.write(f"{folder}/merchants.parquet", _write_parquet(pair[0]))
            # Written last: it marks the day complete.
            self.files.write(f"{folder}/cards.parquet", _write_parquet(pair[1]))
            self._days[day] = pair

    def _fold(self, batch_id: int, oldest_day: int) -> None:
        """Fold every record up to ``batch_id`` into ``folded/upto-batch-N``.

        Spark's writer does it, keeping what a day from ``oldest_day`` on can still read;
        then the records the fold holds are deleted.
        """
        from pyspark.sql import SparkSession
        from pyspark.sql import functions as F  # noqa: N812

        spark = self.spark or SparkSession.active()
        folded, counts, facts = self._records(spark, batch_id)
        keep_from = oldest_day - self.label_delay_days - max(features.MERCHANT_WINDOWS_DAYS)
        target = f"folded/upto-{_name(batch_id)}"
        if folded != target:
            counts = counts.groupBy("merchant_id", "day").agg(
                F.sum("tx_count").cast("long").alias("tx_count")
            )
            for kind, frame, day in (("counts", counts, "day"), ("facts", facts, "tx_day")):
                frame.where(F.col(day) >= keep_from).coalesce(1).write.mode("overwrite").parquet(
                    str(storage.join(self.folder, target, kind))
                )
            # Written last: it marks the fold complete.
            self.files.write(f"{target}/complete", lambda path: path.write_text("1\n"))
        self._forget(batch_id, target)

    def _newest_fold(self, batch_id: int) -> str | None:
        """The newest complete fold at or before ``batch_id``; None if there is none."""
        folds = sorted(
            name
            for name in self.files.list("folded")
            if name.startswith("upto-batch-")
            and name <= f"upto-{_name(batch_id)}"
            and self.files.exists(f"folded/{name}/complete")
        )
        return f"folded/{folds[-1]}" if folds else None

    def _records(self, spark, batch_id: int):
        """The newest complete fold at or before ``batch_id``, and what was recorded since.

        The fold is None if there is none; the records up to the batch are counts and
        facts as Spark frames.
        """
        folded = self._newest_fold(batch_id)
        after = folded.split("upto-")[1] if folded else ""
        frames = []
        for kind in _KINDS:
            schema = _spark_schema(kind)
            paths = [
                str(storage.join(self.folder, kind, name))
                for name in self.files.list(kind)
                if after < name[: -len(".parquet")] <= _name(batch_id)
            ]
            if folded:
                paths.append(str(storage.join(self.folder, folded, kind)))
            frame = (
                spark.read.schema(schema).parquet(*paths)
                if paths
                else spark.createDataFrame([], schema)
            )
            frames.append(frame)
        return folded, frames[0], frames[1]

    def _forget(self, batch_id: int, fold: str) -> None:
        """Delete the records the fold ``fold`` holds, and older folds."""
        for kind in _KINDS:
            for name in self.files.list(kind):
                if name[: -len(".parquet")] <= _name(batch_id):
                    self.files.delete(f"{kind}/{name}")
        for name in self.files.list("folded"):
            if f"folded/{name}" != fold and name < fold.split("/")[1]:
                self.files.delete(f"folded/{name}")

    def _forget_days(self, oldest_day: int) -> None:
        """Forget the values of days no payment still to come can be of."""
        for day in [day for day in self._days if day < oldest_day]:
            del self._days[day]
        for name in self.files.list("days"):
            if int(name.split("-")[1]) < oldest_day:
                self.files.delete(f"days/{name}")


def values(merchants, cards, merchant_id, card_id, day) -> pd.DataFrame:
    """:data:`features.DAY_COLUMNS` of payments, row for row, from their days' tables.

    The tables are those of :meth:`DayTables.tables`; a merchant or card without a row has 0.
    """
    frame = pd.DataFrame(
        {
            "merchant_id": np.asarray(merchant_id, dtype=object),
            "card_id": np.asarray(card_id, dtype=object),
            "day": np.asarray(day, dtype=np.int64),
        }
    )
    found = frame.merge(merchants, on=["merchant_id", "day"], how="left").merge(
        cards, on=["card_id", "day"], how="left"
    )
    return found[features.DAY_COLUMNS].fillna(0.0).astype(np.float64).reset_index(drop=True)


def _empty_merchants() -> pd.DataFrame:
    return pd.DataFrame(
        {"merchant_id": pd.Series(dtype=object), "day": pd.Series(dtype=np.int64)}
        | {c: pd.Series(dtype=np.float64) for c in MERCHANT_COLUMNS}
    )


def _empty_cards() -> pd.DataFrame:
    return pd.DataFrame(
        {"card_id": pd.Series(dtype=object), "day": pd.Series(dtype=np.int64)}
        | {c: pd.Series(dtype=np.float64) for c in CARD_COLUMNS}
    )
