"""The contracts: payment events and label events, in every form the project uses them.

Everything else imports these definitions: the Spark ``StructType`` of each event, its
Arrow schema (Parquet files), pandas dtypes, JSON encoding for Kafka, and the
validation rules with the reason each invalid record is set aside for.

Payment event (topic ``payments``, key ``card_id``, value UTF-8 JSON)::

    {"transaction_id": "t5f0c...", "event_time": "2018-04-01T07:19:05.000Z",
     "card_id": "card_9b1e...", "customer_id": "cust_0c2f...", "merchant_id": "m_4a7d...",
     "merchant_category": "grocery", "amount": 57.16, "currency": "EUR", "channel": "pos",
     "lat": 48.8566, "lon": 2.3522, "country": "FR", "schema_version": 1}

Required: ``transaction_id``, ``event_time``, ``card_id``, ``merchant_id``, ``amount``,
``schema_version``; the rest may be null when a source does not know them. Card
identifiers are tokens, never card numbers. Unknown extra fields are ignored.

Label event (topic ``fraud-labels``, key ``card_id``): ``transaction_id``, ``card_id``,
``label`` (``fraud`` or ``genuine``), ``source`` (``chargeback``, ``analyst``,
``simulator``), ``reported_time``, ``scenario`` (the simulator's fraud scenario, else
null) and ``schema_version``.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})

CHANNELS = ("pos", "ecom", "atm")
LABELS = ("fraud", "genuine")
LABEL_SOURCES = ("chargeback", "analyst", "simulator")

# --- payment events ---------------------------------------------------------------

#: (name, Arrow type, required). The one list every other form is derived from.
_PAYMENT_FIELDS: list[tuple[str, pa.DataType, bool]] = [
    ("transaction_id", pa.string(), True),
    ("event_time", pa.timestamp("ms", tz="UTC"), True),
    ("card_id", pa.string(), True),
    ("customer_id", pa.string(), False),
    ("merchant_id", pa.string(), True),
    ("merchant_category", pa.string(), False),
    ("amount", pa.float64(), True),
    ("currency", pa.string(), False),
    ("channel", pa.string(), False),
    ("lat", pa.float64(), False),
    ("lon", pa.float64(), False),
    ("country", pa.string(), False),
    ("schema_version", pa.int32(), True),
]

PAYMENT_COLUMNS = [name for name, _, _ in _PAYMENT_FIELDS]
PAYMENT_REQUIRED = [name for name, _, required in _PAYMENT_FIELDS if required]

# --- label events -----------------------------------------------------------------

_LABEL_FIELDS: list[tuple[str, pa.DataType, bool]] = [
    ("transaction_id", pa.string(), True),
    ("card_id", pa.string(), True),
    ("label", pa.string(), True),
    ("source", pa.string(), True),
    ("reported_time", pa.timestamp("ms", tz="UTC"), True),
    ("scenario", pa.string(), False),
    ("schema_version", pa.int32(), True),
]

LABEL_COLUMNS = [name for name, _, _ in _LABEL_FIELDS]
LABEL_REQUIRED = [name for name, _, required in _LABEL_FIELDS if required]


def _arrow_schema(fields: list[tuple[str, pa.DataType, bool]]) -> pa.Schema:
    return pa.schema(
        [pa.field(name, dtype, nullable=not required) for name, dtype, required in fields]
    )


#: Arrow schemas of the Parquet files the simulator and importers write.
PAYMENT_ARROW_SCHEMA = _arrow_schema(_PAYMENT_FIELDS)
LABEL_ARROW_SCHEMA = _arrow_schema(_LABEL_FIELDS)

#: The Spark schemas, built on first use (:func:`__getattr__`), so that a command that
#: never starts Spark does not load pyspark:
#:
#: - ``PAYMENT_SCHEMA``, ``LABEL_SCHEMA``: parsed, valid events. Nullable everywhere, as
#:   Spark reads them; the required fields are enforced by validation, not by the schema.
#: - ``PAYMENT_JSON_SCHEMA``, ``LABEL_JSON_SCHEMA``: for parsing the JSON value. Timestamps
#:   arrive as ISO-8601 text and are converted (and checked) after parsing, so a bad
#:   timestamp gets its own reason.
_SPARK_SCHEMAS = ("PAYMENT_SCHEMA", "LABEL_SCHEMA", "PAYMENT_JSON_SCHEMA", "LABEL_JSON_SCHEMA")


def _spark_schemas() -> dict:
    from pyspark.sql import types as T  # noqa: N812

    to_spark = {
        pa.string(): T.StringType(),
        pa.float64(): T.DoubleType(),
        pa.int32(): T.IntegerType(),
        pa.timestamp("ms", tz="UTC"): T.TimestampType(),
    }

    def spark_schema(fields, text_column=None):
        return T.StructType(
            [
                T.StructField(
                    name, T.StringType() if name == text_column else to_spark[dtype], True
                )
                for name, dtype, _ in fields
            ]
        )

    return {
        "PAYMENT_SCHEMA": spark_schema(_PAYMENT_FIELDS),
        "LABEL_SCHEMA": spark_schema(_LABEL_FIELDS),
        "PAYMENT_JSON_SCHEMA": spark_schema(_PAYMENT_FIELDS, "event_time"),
        "LABEL_JSON_SCHEMA": spark_schema(_LABEL_FIELDS, "reported_time"),
    }


def __getattr__(name: str):
    if name in _SPARK_SCHEMAS:
        globals().update(_spark_schemas())
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: pandas dtypes of the events read from Parquet (nullable extension types).
PAYMENT_PANDAS_DTYPES = {
    "transaction_id": "string",
    "event_time": "datetime64[ms, UTC]",
    "card_id": "string",
    "customer_id": "string",
    "merchant_id": "string",
    "merchant_category": "string",
    "amount": "Float64",
    "currency": "string",
    "channel": "string",
    "lat": "Float64",
    "lon": "Float64",
    "country": "string",
    "schema_version": "Int32",
}
LABEL_PANDAS_DTYPES = {
    "transaction_id": "string",
    "card_id": "string",
    "label": "string",
    "source": "string",
    "reported_time": "datetime64[ms, UTC]",
    "scenario": "string",
    "schema_version": "Int32",
}

# --- JSON -------------------------------------------------------------------------


def format_time(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``: ``2018-04-01T07:19:05.000Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 timestamp; one without a zone is taken as UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _to_json(event: dict, columns: list[str], time_column: str) -> bytes:
    record = {}
    for name in columns:
        value = event.get(name)
        if name == time_column and isinstance(value, datetime):
            value = format_time(value)
        elif isinstance(value, float) and math.isnan(value):
            value = None
        record[name] = value
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def encode_payment(event: dict) -> bytes:
    """Encode a payment event as the UTF-8 JSON value of a Kafka record."""
    return _to_json(event, PAYMENT_COLUMNS, "event_time")


def encode_label(event: dict) -> bytes:
    """Encode a label event as the UTF-8 JSON value of a Kafka record."""
    return _to_json(event, LABEL_COLUMNS, "reported_time")


# Vectorised encoding: a whole Arrow table to JSON in Arrow kernels, for producers that
# publish hundreds of thousands of events a second (one ``json.dumps`` per event costs
# more than the send). It decodes to the same values as ``encode_payment``.

_DAY_MS = 86_400_000
# Characters JSON must escape beyond quote and backslash: rows holding one of these
# (never seen in the simulator's or importers' output) go through ``json.dumps``.
_CONTROL_CHARACTERS = "[\\x00-\\x1f]"


def _iso_times_ms(times: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Format UTC timestamps as ``2018-04-01T07:19:05.000Z`` (10x faster than strftime)."""
    ms = pc.cast(times, pa.int64())
    day = pc.divide(ms, _DAY_MS)  # integer division: exact for times after 1970
    rest = pc.subtract(ms, pc.multiply(day, _DAY_MS))
    days = pc.unique(day)
    names = pa.array(np.datetime_as_string(days.to_numpy(zero_copy_only=False).astype("M8[D]")))
    parts = [pc.take(names, pc.index_in(day, days)), "T"]
    for unit_ms, width, after in [(3_600_000, 2, ":"), (60_000, 2, ":"), (1000, 2, ".")]:
        whole = pc.divide(rest, unit_ms)
        rest = pc.subtract(rest, pc.multiply(whole, unit_ms))
        parts += [pc.utf8_lpad(pc.cast(whole, pa.string()), width, "0"), after]
    parts += [pc.utf8_lpad(pc.cast(rest, pa.string()), 3, "0"), "Z"]
    return pc.binary_join_element_wise(*parts, "")


def _json_values(column: pa.ChunkedArray, is_time: bool) -> pa.ChunkedArray:
    if is_time:
        text = _iso_times_ms(column)
    elif pa.types.is_string(column.type):
        text = pc.replace_substring(column, "\\", "\\\\")
        text = pc.replace_substring(text, '"', '\\"')
    elif pa.types.is_floating(column.type):
        # NaN is not JSON: it travels as null, as in ``encode_payment``.
        numbers = pc.if_else(pc.is_nan(column), None, column)
        return pc.fill_null(pc.cast(numbers, pa.string()), "null")
    else:
        return pc.fill_null(pc.cast(column, pa.string()), "null")
    return pc.fill_null(pc.binary_join_element_wise('"', text, '"', ""), "null")


def _encode_table(table: pa.Table, columns: list[str], time_column: str, encode_one) -> pa.Array:
    if table.num_rows == 0:
        return pa.array([], pa.string())
    parts = []
    for position, name in enumerate(columns):
        prefix = ("{" if position == 0 else ",") + json.dumps(name) + ":"
        parts += [prefix, _json_values(table[name], name == time_column)]
    encoded = pc.binary_join_element_wise(*parts, "}", "").combine_chunks()
    # Rows the kernels do not cover (control characters, times before 1970) are
    # encoded one at a time, which is always right.
    awkward = pc.less(pc.cast(table[time_column], pa.int64()), 0)
    for name in columns:
        if pa.types.is_string(table.schema.field(name).type):
            found = pc.match_substring_regex(table[name], _CONTROL_CHARACTERS)
            awkward = pc.or_(awkward, pc.fill_null(found, False))
    awkward = pc.fill_null(awkward, False).combine_chunks()
    if not pc.any(awkward).as_py():
        return encoded
    rows = table.filter(awkward).to_pylist()
    replacements = pa.array([encode_one(row).decode("utf-8") for row in rows], pa.string())
    return pc.replace_with_mask(encoded, awkward, replacements)


def encode_payments(table: pa.Table) -> pa.Array:
    """Encode payment events (a table in the contract's schema) as JSON strings, vectorised.

    Each string decodes to the same event as ``encode_payment`` of the same row.
    """
    return _encode_table(table, PAYMENT_COLUMNS, "event_time", encode_payment)


def encode_labels(table: pa.Table) -> pa.Array:
    """Encode label events as JSON strings, vectorised (see ``encode_payments``)."""
    return _encode_table(table, LABEL_COLUMNS, "reported_time", encode_label)


def _decode_json(value: bytes) -> dict:
    try:
        record = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"unparseable: {error}") from None
    if not isinstance(record, dict):
        raise ValueError("unparseable: not a JSON object")
    return record


def decode_payment(value: bytes) -> dict:
    """Decode and validate a payment event.

    Returns
    -------
    dict
        The contract's fields (``event_time`` as an aware ``datetime``); unknown
        fields dropped, absent optional fields as None.

    Raises
    ------
    ValueError
        With the reason the record is invalid (the dead-letter reason).
    """
    record = _decode_json(value)
    reason = payment_invalid_reason(record)
    if reason is not None:
        raise ValueError(reason)
    event = {name: record.get(name) for name in PAYMENT_COLUMNS}
    event["event_time"] = parse_time(record["event_time"])
    event["amount"] = float(record["amount"])
    return event


def decode_label(value: bytes) -> dict:
    """Decode and validate a label event (``reported_time`` as an aware ``datetime``).

    Raises ``ValueError`` with the dead-letter reason, as ``decode_payment``.
    """
    record = _decode_json(value)
    reason = label_invalid_reason(record)
    if reason is not None:
        raise ValueError(reason)
    event = {name: record.get(name) for name in LABEL_COLUMNS}
    event["reported_time"] = parse_time(record["reported_time"])
    return event


# --- validation -------------------------------------------------------------------

#: Reasons, in the order they are checked; the first that applies is reported.
REASON_UNPARSEABLE = "unparseable"
REASON_MISSING = "missing required field {}"
REASON_BAD_TYPE = "wrong type for field {}"
REASON_SCHEMA_VERSION = "unknown schema_version {}"
REASON_BAD_TIME = "event_time is not an ISO-8601 timestamp"
REASON_AMOUNT = "amount must be > 0"
REASON_LAT = "lat out of range [-90, 90]"
REASON_LON = "lon out of range [-180, 180]"
REASON_CHANNEL = "channel must be one of pos, ecom, atm"


def _is_supported_version(value) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value in SUPPORTED_SCHEMA_VERSIONS
    )


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def payment_invalid_reason(record: dict) -> str | None:
    """Return why a decoded JSON payment record is invalid, or None if it is valid."""
    for name in PAYMENT_REQUIRED:
        if record.get(name) is None or record.get(name) == "":
            return REASON_MISSING.format(name)
    for name in ("transaction_id", "card_id", "merchant_id", "event_time"):
        if not isinstance(record[name], str):
            return REASON_BAD_TYPE.format(name)
    for name in ("amount", "lat", "lon"):
        if record.get(name) is not None and not _is_number(record[name]):
            return REASON_BAD_TYPE.format(name)
    if not _is_supported_version(record["schema_version"]):
        return REASON_SCHEMA_VERSION.format(record["schema_version"])
    try:
        parse_time(record["event_time"])
    except ValueError:
        return REASON_BAD_TIME
    if record["amount"] <= 0:
        return REASON_AMOUNT
    if record.get("lat") is not None and not -90 <= record["lat"] <= 90:
        return REASON_LAT
    if record.get("lon") is not None and not -180 <= record["lon"] <= 180:
        return REASON_LON
    if record.get("channel") is not None and record["channel"] not in CHANNELS:
        return REASON_CHANNEL
    return None


def label_invalid_reason(record: dict) -> str | None:
    """Return why a decoded JSON label record is invalid, or None if it is valid."""
    for name in LABEL_REQUIRED:
        if record.get(name) is None or record.get(name) == "":
            return REASON_MISSING.format(name)
    for name in ("transaction_id", "card_id", "label", "source", "reported_time"):
        if not isinstance(record[name], str):
            return REASON_BAD_TYPE.format(name)
    if record["label"] not in LABELS:
        return "label must be fraud or genuine"
    if record["source"] not in LABEL_SOURCES:
        return "source must be one of chargeback, analyst, simulator"
    if not _is_supported_version(record["schema_version"]):
        return REASON_SCHEMA_VERSION.format(record["schema_version"])
    try:
        parse_time(record["reported_time"])
    except ValueError:
        return "reported_time is not an ISO-8601 timestamp"
    return None


# --- what the scoring job writes --------------------------------------------------
#
# Each view is Parquet partitioned by ``date`` (the event's UTC date; for dead letters,
# the Kafka record's) under the output root, one folder per view.

#: Alert (topic ``fraud-alerts``, key ``card_id``, value UTF-8 JSON; the same rows in
#: Parquet). ``alert_id`` is the same for the same transaction and model version, so a
#: consumer drops the duplicates that at-least-once delivery may bring. Schema version 2
#: added ``decision``: ``review`` (queue it for an analyst) or ``decline``; an alert of
#: version 1 has none and was a review. It also added ``rules_fired``, the fraud-ops
#: rules that decided with the model (``rule_id@version``; empty in version 1). A
#: reader of version 1's fields reads version 2.
ALERT_SCHEMA_VERSION = 2

#: The decisions a scored payment gets: from the model's bands (``threshold`` starts the
#: review band, the model's ``decline_threshold`` the decline band) and the fraud-ops
#: rules (``fraudstream.scoring.rulelog.decide``).
DECISIONS = ("approve", "review", "decline")

ALERT_ARROW_SCHEMA = pa.schema(
    [
        pa.field("alert_id", pa.string(), nullable=False),
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("card_id", pa.string(), nullable=False),
        pa.field("event_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("scored_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("threshold", pa.float64(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("reasons", pa.list_(pa.string()), nullable=False),
        pa.field("amount", pa.float64(), nullable=False),
        pa.field("currency", pa.string()),
        pa.field("merchant_id", pa.string(), nullable=False),
        pa.field("merchant_category", pa.string()),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
        pa.field("country", pa.string()),
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("decision", pa.string(), nullable=False),
        pa.field("rules_fired", pa.list_(pa.string()), nullable=False),
    ]
)
ALERT_COLUMNS = ALERT_ARROW_SCHEMA.names

#: Card-location history: where each valid payment happened, and the leg from the
#: card's previous card-present payment (``card_present``: ``pos`` or ``atm`` with
#: coordinates; an e-commerce payment's coordinates are the shop's, not the card's).
CARD_LOCATION_ARROW_SCHEMA = pa.schema(
    [
        pa.field("card_id", pa.string(), nullable=False),
        pa.field("event_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
        pa.field("country", pa.string()),
        pa.field("merchant_id", pa.string(), nullable=False),
        pa.field("channel", pa.string()),
        pa.field("card_present", pa.bool_(), nullable=False),
        pa.field("km_from_previous", pa.float64(), nullable=False),
        pa.field("seconds_from_previous", pa.float64(), nullable=False),
        pa.field("speed_kmh", pa.float64(), nullable=False),
    ]
)

#: Dead letter: a record set aside, as it came, with where it came from and why.
DEAD_LETTER_ARROW_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC")),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("dead_lettered_time", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)


def encode_alert(alert: dict) -> bytes:
    """Encode an alert as the UTF-8 JSON value of a Kafka record."""
    record = {}
    for name in ALERT_COLUMNS:
        value = alert.get(name)
        if isinstance(value, datetime):
            value = format_time(value)
        elif isinstance(value, float) and math.isnan(value):
            value = None
        elif name == "reasons":
            assert value is not None  # the alert schema's reasons are not nullable
            value = list(value)
        elif name == "rules_fired":
            value = list(value) if value is not None else []
        record[name] = value
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_alert(value: bytes) -> dict:
    """Decode an alert's JSON value; times become aware ``datetime``."""
    record = json.loads(value.decode("utf-8"))
    for name in ("event_time", "scored_time"):
        record[name] = parse_time(record[name])
    return record
