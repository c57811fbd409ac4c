"""Event files: written by date, read back whole, replaced only when complete."""

from __future__ import annotations

import pyarrow as pa

from fraudstream import lake, schemas
from fraudstream.data import simulate


def test_write_events_then_read_events_round_trips(tmp_path):
    payments, labels = simulate.simulate(
        simulate.SimulationConfig(customers=30, terminals=60, days=5, seed=1)
    )
    assert lake.write_events(payments, tmp_path) == payments.num_rows
    assert lake.write_labels(labels, tmp_path) == labels.num_rows
    assert lake.read_events(tmp_path).equals(payments)
    assert lake.read_labels(tmp_path).equals(labels)
    assert len(list((tmp_path / "events").glob("date=*"))) == 5


def test_write_labels_without_rows_reads_back_empty(tmp_path):
    lake.write_labels(schemas.LABEL_ARROW_SCHEMA.empty_table(), tmp_path)
    table = lake.read_labels(tmp_path)
    assert table.num_rows == 0
    assert table.schema == schemas.LABEL_ARROW_SCHEMA


def test_write_events_replaces_previous_files(tmp_path):
    first, _ = simulate.simulate(simulate.SimulationConfig(customers=30, terminals=60, days=5))
    second = first.slice(0, 10)
    lake.write_events(first, tmp_path)
    lake.write_events(second, tmp_path)
    assert lake.read_events(tmp_path).equals(second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events"]


def test_read_events_selects_columns(tmp_path):
    table = pa.table(
        {
            **{name: [None] for name in schemas.PAYMENT_COLUMNS},
            "transaction_id": ["t1"],
            "event_time": pa.array([0], pa.timestamp("ms", tz="UTC")),
            "card_id": ["c"],
            "merchant_id": ["m"],
            "amount": [1.0],
            "schema_version": pa.array([1], pa.int32()),
        }
    )
    lake.write_events(table, tmp_path)
    assert lake.read_events(tmp_path, ["transaction_id", "amount"]).to_pylist() == [
        {"transaction_id": "t1", "amount": 1.0}
    ]
