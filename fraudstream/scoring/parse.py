"""Parse and validate Kafka records with the contract; what is set aside, and why.

The executors parse each micro-batch twice with these functions: before the card
operator (:mod:`fraudstream.scoring.records`), for its inputs and the batch's summary
the driver decides on, and again in the scoring pass (:mod:`fraudstream.scoring.batch`),
for the features. One parser, so both passes make the same decisions.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fraudstream import schemas

#: Why a payment is set aside: a copy of one scored already, or too late.
REASON_DUPLICATE = "duplicate transaction_id (already scored)"


#: Marks a payment set aside as late on the executors; the driver words the reason
#: (:data:`REASON_LATE`: it knows the partition's newest event time).
LATE = "late"
REASON_LATE = (
    "late: event_time is more than {hours:g} h before the newest event seen in its "
    "partition ({newest})"
)


def dead_letters(records: pd.DataFrame, reasons: list[str], now_ms: int) -> pd.DataFrame:
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
    slow_valid: list[dict] = []
    slow_good: list[int] = []
    bad: list[int] = []
    reasons: list[str] = []
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
