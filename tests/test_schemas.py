"""The contracts: JSON round trips, validation reasons, and the forms derived from one list."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from fraudstream import schemas

VALID = {
    "transaction_id": "t1",
    "event_time": "2018-04-01T07:19:05.123Z",
    "card_id": "card_0123456789abcdef",
    "customer_id": "cust_1",
    "merchant_id": "m_1",
    "merchant_category": "grocery",
    "amount": 57.16,
    "currency": "EUR",
    "channel": "pos",
    "lat": 48.8566,
    "lon": 2.3522,
    "country": "FR",
    "schema_version": 1,
}


def test_encode_payment_writes_iso_time_with_milliseconds_and_every_field():
    event = {**VALID, "event_time": datetime(2018, 4, 1, 7, 19, 5, 123000, tzinfo=UTC)}
    assert json.loads(schemas.encode_payment(event)) == VALID


def test_decode_payment_round_trips_and_ignores_unknown_fields():
    raw = json.dumps({**VALID, "extra": "ignored"}).encode()
    event = schemas.decode_payment(raw)
    assert event == {**VALID, "event_time": datetime(2018, 4, 1, 7, 19, 5, 123000, tzinfo=UTC)}
    assert schemas.decode_payment(schemas.encode_payment(event)) == event


def test_decode_payment_optional_fields_may_be_absent():
    required = {name: VALID[name] for name in schemas.PAYMENT_REQUIRED}
    event = schemas.decode_payment(json.dumps(required).encode())
    assert event["lat"] is None and event["channel"] is None and event["country"] is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"transaction_id": None}, "missing required field transaction_id"),
        ({"card_id": ""}, "missing required field card_id"),
        ({"amount": "12"}, "wrong type for field amount"),
        ({"amount": True}, "wrong type for field amount"),
        ({"schema_version": 2}, "unknown schema_version 2"),
        ({"event_time": "yesterday"}, "event_time is not an ISO-8601 timestamp"),
        ({"amount": 0}, "amount must be > 0"),
        ({"amount": -3.5}, "amount must be > 0"),
        ({"lat": 91.0}, "lat out of range [-90, 90]"),
        ({"lon": -180.5}, "lon out of range [-180, 180]"),
        ({"channel": "phone"}, "channel must be one of pos, ecom, atm"),
    ],
)
def test_payment_invalid_reason_names_the_rule(change, reason):
    assert schemas.payment_invalid_reason({**VALID, **change}) == reason
    with pytest.raises(ValueError, match=f"^{reason.replace('[', '.').replace(']', '.')}$"):
        schemas.decode_payment(json.dumps({**VALID, **change}).encode())


def test_payment_invalid_reason_accepts_the_valid_event_and_null_coordinates():
    assert schemas.payment_invalid_reason(VALID) is None
    assert schemas.payment_invalid_reason({**VALID, "lat": None, "lon": None}) is None


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"[1, 2]"])
def test_decode_payment_unparseable_is_reported(raw):
    with pytest.raises(ValueError, match=r"^unparseable"):
        schemas.decode_payment(raw)


def test_label_round_trip_and_validation():
    label = {
        "transaction_id": "t1",
        "card_id": "card_1",
        "label": "fraud",
        "source": "chargeback",
        "reported_time": datetime(2018, 4, 9, tzinfo=UTC),
        "scenario": None,
        "schema_version": 1,
    }
    record = json.loads(schemas.encode_label(label))
    assert record["reported_time"] == "2018-04-09T00:00:00.000Z"
    assert schemas.label_invalid_reason(record) is None
    assert schemas.label_invalid_reason({**record, "label": "maybe"}) == (
        "label must be fraud or genuine"
    )
    assert schemas.label_invalid_reason({**record, "source": None}) == (
        "missing required field source"
    )


def test_schemas_agree_on_columns_and_types():
    assert schemas.PAYMENT_ARROW_SCHEMA.names == schemas.PAYMENT_COLUMNS
    assert [f.name for f in schemas.PAYMENT_SCHEMA.fields] == schemas.PAYMENT_COLUMNS
    assert list(schemas.PAYMENT_PANDAS_DTYPES) == schemas.PAYMENT_COLUMNS
    assert [f.name for f in schemas.LABEL_SCHEMA.fields] == schemas.LABEL_COLUMNS
    assert list(schemas.LABEL_PANDAS_DTYPES) == schemas.LABEL_COLUMNS
    assert schemas.PAYMENT_JSON_SCHEMA["event_time"].dataType.simpleString() == "string"
    assert schemas.PAYMENT_SCHEMA["event_time"].dataType.simpleString() == "timestamp"


@pytest.mark.parametrize("version", [[1], {"v": 1}, True, "1", 1.5])
def test_payment_invalid_reason_odd_schema_versions_are_reasons_not_crashes(version):
    assert schemas.payment_invalid_reason({**VALID, "schema_version": version}) == (
        f"unknown schema_version {version}"
    )


def test_label_invalid_reason_odd_types_are_reasons_not_crashes():
    record = {
        "transaction_id": "t1",
        "card_id": "card_1",
        "label": "fraud",
        "source": "analyst",
        "reported_time": "2018-04-09T00:00:00.000Z",
        "schema_version": 1,
    }
    assert schemas.label_invalid_reason({**record, "reported_time": 123}) == (
        "wrong type for field reported_time"
    )
    assert schemas.label_invalid_reason({**record, "schema_version": [1]}) == (
        "unknown schema_version [1]"
    )
    assert schemas.label_invalid_reason({**record, "schema_version": True}) == (
        "unknown schema_version True"
    )
