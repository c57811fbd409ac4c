"""The scoring job's views: what a row of each holds, their Arrow schemas, how to read them.

Each view is ``ROOT/VIEW/date=D/batch-N.parquet`` (``compact`` merges a finished day
into ``batch-A-B.parquet``; :mod:`fraudstream.scoring.viewfiles` says which files count). The
root is a local folder or any Hadoop file system's URI. The job's executors build the
rows with the frame functions here (:mod:`fraudstream.scoring.batch`) and Spark writes
them (:mod:`fraudstream.scoring.outputs`); :func:`score_history` builds the same views
of a whole history in one process, for notebooks.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from fraudstream import features, schemas, storage
from fraudstream.features import DAY_MS
from fraudstream.scoring import viewfiles
from fraudstream.scoring.reasons import alert_id, explain

#: The views the job writes, one folder each under the output root.
ALERTS = "alerts"


CARD_LOCATIONS = "card_locations"


SCORED = "scored"


DEAD_LETTERS = "dead_letters"


VIEWS = (ALERTS, CARD_LOCATIONS, SCORED, DEAD_LETTERS)


def decisions(scores: np.ndarray, model) -> np.ndarray:
    """Each score's decision by the model's bands: approve, review or decline.

    Review from the model's ``threshold`` (an alert), decline from its
    ``decline_threshold`` (none: the model alone never declines).
    """
    decline = model.decline_threshold
    decline = np.inf if decline is None else max(float(decline), model.threshold)
    scores = np.asarray(scores, dtype=float)
    return np.select(
        [scores >= decline, scores >= model.threshold], ["decline", "review"], "approve"
    ).astype(object)


def alert_frame(
    events, event_ms, computed, scores, decided, model, now_ms, fired=None, rule_reasons=None
) -> pd.DataFrame:
    """The alerts view's rows: one per payment decided review or decline, with the reasons.

    Parameters
    ----------
    events : pandas.DataFrame
        The payments scored, with their Kafka ``partition``, ``offset`` and ``timestamp_ms``.
    event_ms : numpy.ndarray
        Their event times, in ms since the epoch.
    computed : pandas.DataFrame
        Their features (``features.compute``), row for row.
    scores : numpy.ndarray
        Their probabilities of fraud.
    decided : numpy.ndarray
        Their decisions (:data:`fraudstream.schemas.DECISIONS`); ``review`` and
        ``decline`` are alerts.
    model : LoadedModel
        The model that scored them, named in each row.
    now_ms : int
        The time written as ``scored_time``.
    fired : sequence of lists, optional
        The rules that fired for each payment (``rule_id@version``); none by default.
    rule_reasons : dict, optional
        The reason each fired rule gives (``rulelog.rule_reasons``), before the model's.
    """
    alerted = np.asarray(decided != "approve", dtype=bool)
    rows = events.loc[alerted].reset_index(drop=True)
    chosen = computed.loc[alerted].reset_index(drop=True)
    reference = model.reference or computed[model.feature_columns].median().to_dict()
    reasons = explain(model, chosen, scores[alerted], reference)
    fired_rules = _fired(fired, len(events))[alerted]
    if rule_reasons:
        reasons = [
            [rule_reasons.get(name, f"rule {name}") for name in names] + list(own)
            for names, own in zip(fired_rules, reasons, strict=True)
        ]
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
            "schema_version": np.full(len(rows), schemas.ALERT_SCHEMA_VERSION, dtype=np.int32),
            "decision": np.asarray(decided, dtype=object)[alerted],
            "rules_fired": pd.Series(list(fired_rules), dtype=object),
            "kafka_timestamp_ms": rows["timestamp_ms"].to_numpy(dtype=np.int64),
        }
    )


def _fired(fired, n: int) -> np.ndarray:
    """Each payment's fired rules as a list (an object array of ``n`` lists)."""
    out = np.empty(n, dtype=object)
    out[:] = [[] for _ in range(n)] if fired is None else [list(names) for names in fired]
    return out


def location_frame(events, event_ms, computed) -> pd.DataFrame:
    """The card-location view's rows: where each payment was and how fast the card moved.

    The arguments are :func:`alert_frame`'s. ``card_present`` marks point-of-sale and ATM
    payments with a known place.
    """
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


def scored_frame(
    events,
    event_ms,
    computed,
    scores,
    decided,
    model,
    now_ms,
    fired=None,
    challenger_scores=None,
    challenger_version=None,
):
    """The scored view's rows: every payment with its score, decision, Kafka place and features.

    The arguments are :func:`alert_frame`'s, and the shadow challenger's scores and
    version (none by default: null).
    """
    decided = np.asarray(decided, dtype=object)
    head = pd.DataFrame(
        {
            "transaction_id": events["transaction_id"].astype(object).to_numpy(),
            "card_id": events["card_id"].astype(object).to_numpy(),
            "event_time": event_ms,
            "scored_time": np.full(len(events), now_ms, dtype=np.int64),
            "score": scores,
            "threshold": np.full(len(events), model.threshold),
            "alerted": decided != "approve",
            "decision": decided,
            "rules_fired": _fired(fired, len(events)),
            "model_name": model.name,
            "model_version": model.version,
            "partition": events["partition"].to_numpy(dtype=np.int32),
            "offset": events["offset"].to_numpy(dtype=np.int64),
            "kafka_timestamp_ms": events["timestamp_ms"].to_numpy(dtype=np.int64),
            "challenger_score": (
                np.full(len(events), np.nan)
                if challenger_scores is None
                else np.asarray(challenger_scores, dtype=float)
            ),
            "challenger_version": challenger_version,
        }
    )
    return pd.concat([head, computed[features.FEATURE_COLUMNS].reset_index(drop=True)], axis=1)


def _write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")


def _ms_to_timestamp(values) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64), type=pa.int64()).cast(
        pa.timestamp("ms", tz="UTC")
    )


def _dates(ms: np.ndarray) -> np.ndarray:
    """The UTC day of each time, as days since the epoch (named only when written)."""
    return np.asarray(ms, dtype=np.int64) // DAY_MS


def _day_name(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


#: The scored view: every payment scored, with its score, its decision, its Kafka
#: coordinates and the model's features. ``challenger_score`` and ``challenger_version``:
#: the shadow challenger's score, which never raises an alert (null when no challenger
#: scored the payment); ``fraudstream model compare`` reads them.
SCORED_ARROW_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string()),
        pa.field("card_id", pa.string()),
        pa.field("event_time", pa.timestamp("ms", tz="UTC")),
        pa.field("scored_time", pa.timestamp("ms", tz="UTC")),
        pa.field("score", pa.float64()),
        pa.field("threshold", pa.float64()),
        pa.field("alerted", pa.bool_()),
        pa.field("decision", pa.string()),
        pa.field("rules_fired", pa.list_(pa.string())),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("partition", pa.int32()),
        pa.field("offset", pa.int64()),
        pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC")),
        # The shadow challenger's score and version: null when none scored the payment.
        pa.field("challenger_score", pa.float64()),
        pa.field("challenger_version", pa.string()),
        *(pa.field(name, pa.float64()) for name in features.FEATURE_COLUMNS),
    ]
)


def alert_table(alerts: pd.DataFrame) -> pa.Table:
    """The alerts view's rows (:func:`alert_frame`) in its schema."""
    if not len(alerts):
        return schemas.ALERT_ARROW_SCHEMA.empty_table()
    table = pa.table(
        {
            **{
                c: alerts[c].to_numpy()
                for c in schemas.ALERT_COLUMNS
                if c not in ("event_time", "scored_time", "reasons", "rules_fired")
            },
            "event_time": _ms_to_timestamp(alerts["event_time"]),
            "scored_time": _ms_to_timestamp(alerts["scored_time"]),
            "reasons": pa.array(list(alerts["reasons"]), type=pa.list_(pa.string())),
            "rules_fired": pa.array(list(alerts["rules_fired"]), type=pa.list_(pa.string())),
        }
    )
    return table.select(schemas.ALERT_COLUMNS).cast(schemas.ALERT_ARROW_SCHEMA)


def location_table(locations: pd.DataFrame) -> pa.Table:
    """The card-location view's rows (:func:`location_frame`) in its schema."""
    table = pa.Table.from_pandas(
        locations.assign(event_time=_ms_to_timestamp(locations["event_time"]).to_pandas()),
        preserve_index=False,
    )
    return table.cast(schemas.CARD_LOCATION_ARROW_SCHEMA)


def scored_table(scored: pd.DataFrame) -> pa.Table:
    """The scored view's rows (:func:`scored_frame`) in :data:`SCORED_ARROW_SCHEMA`."""
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
    """The dead letters' rows (``parse.dead_letters``) in their schema."""
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


def write_tables(
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
                functools.partial(_write_parquet, rows),
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
        spark = SparkSession.getActiveSession()
        assert spark is not None  # storage.files needed one to find the paths
        return spark.read.parquet(*paths).count()
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
    partitioning = ds.HivePartitioning.discover(infer_dictionary=True)
    base = str(Path(root) / view)
    found = ds.dataset(paths, format="parquet", partitioning=partitioning, partition_base_dir=base)
    # A dataset takes its first file's columns: a column added later (the challenger's
    # score) would be dropped from every file. All files' columns, null where missing,
    # as the Hadoop branch above reads them.
    schema = pa.unify_schemas([*(pq.read_schema(path) for path in paths), found.schema])
    if schema != found.schema:
        found = ds.dataset(
            paths,
            schema=schema,
            format="parquet",
            partitioning=partitioning,
            partition_base_dir=base,
        )
    return found.to_table().to_pandas()


def records_of(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
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


def score_history(
    events: pd.DataFrame, labels: pd.DataFrame, model, out, now_ms: int | None = None
) -> dict[str, int]:
    """Write the views of a whole history into ``out``, as the scoring job writes them.

    For notebooks and experiments on a sample: one process, no Kafka, no Spark. The
    features come from :func:`fraudstream.features.compute` over the whole history,
    training's code, which the tests hold equal to what the job's card operator and day
    tables give every payment; then the model's scores and reasons, and the same rows
    and files as the job's (one micro-batch, ``batch-0``). The payments are taken in
    event-time order as partition 0 of a topic; a second copy of a transaction id is a
    dead letter, as in the job. ``model`` is a
    :class:`~fraudstream.scoring.model.LoadedModel`. Returns the rows written per view.
    """
    import time

    from fraudstream.scoring import parse

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    events = events.sort_values("event_time", kind="stable").reset_index(drop=True)
    records = parse.kafka_records(events, schemas.encode_payment, "payments", now_ms)
    copy = events["transaction_id"].duplicated().to_numpy()
    dead = parse.dead_letters(records.loc[copy], [parse.REASON_DUPLICATE] * int(copy.sum()), now_ms)
    events = events.loc[~copy].assign(
        partition=records["partition"].to_numpy()[~copy],
        offset=records["offset"].to_numpy()[~copy],
        timestamp_ms=records["timestamp_ms"].to_numpy()[~copy],
    )
    events = events.reset_index(drop=True)
    computed = features.compute(
        events,
        features.fraud_facts(events, labels),
        label_delay_days=model.label_delay_days,
        new_only=True,
    )
    event_ms = features._time_ms(events["event_time"])
    scores = model.score(computed[model.feature_columns])
    decided = decisions(scores, model)
    alerts = alert_frame(events, event_ms, computed, scores, decided, model, now_ms)
    tables = {
        ALERTS: (alert_table(alerts), _dates(alerts["event_time"])),
        CARD_LOCATIONS: (
            location_table(location_frame(events, event_ms, computed)),
            _dates(event_ms),
        ),
        SCORED: (
            scored_table(scored_frame(events, event_ms, computed, scores, decided, model, now_ms)),
            _dates(event_ms),
        ),
        DEAD_LETTERS: (dead_letter_table(dead), _dates(dead["kafka_timestamp_ms"])),
    }
    return write_tables(out, 0, tables)
