"""The scoring job's pieces that need neither Spark nor Kafka: the parser, the model
loader, the reasons, the driver's state and the views of a history (the job itself:
test_score_job.py, test_rebuild.py)."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from fraudstream import features, schemas
from fraudstream.scoring import parse, reasons, state, views
from fraudstream.scoring.model import LoadedModel, ModelLoadError, load_model

from .helpers import toy_model

T0_MS = 1_522_540_800_000  # 2018-04-01T00:00:00Z


@pytest.fixture(scope="module")
def model(history):
    return toy_model(history["dataset"])


def test_score_history_writes_the_views_training_would_score(tmp_path, history, model):
    """The notebooks' views of a history: training's features, the model's scores, the
    job's rows and files; a second copy of a payment is a dead letter."""
    events = history["events"]
    copy = events.iloc[[5]]
    written = views.score_history(pd.concat([events, copy]), history["labels"], model, tmp_path)
    assert written[views.SCORED] == len(events) == written[views.CARD_LOCATIONS]
    scored = views.read_view(tmp_path, views.SCORED).set_index("transaction_id")
    expected = history["dataset"].set_index("transaction_id")
    for column in features.FEATURE_COLUMNS:
        np.testing.assert_allclose(
            scored[column].to_numpy(), expected.loc[scored.index, column].to_numpy(), atol=1e-9
        )
    alerts = views.read_view(tmp_path, views.ALERTS)
    assert set(alerts["transaction_id"]) == set(scored.index[scored["score"] >= model.threshold])
    assert len(alerts) and all(1 <= len(r) <= reasons.TOP_REASONS for r in alerts["reasons"])
    dead = views.read_view(tmp_path, views.DEAD_LETTERS)
    assert list(dead["reason"]) == [parse.REASON_DUPLICATE]
    assert json.loads(dead["value"].iloc[0])["transaction_id"] == copy["transaction_id"].iloc[0]
    assert sorted(p.name for p in tmp_path.rglob("*.parquet"))[0] == "batch-000000000000.parquet"


def test_decisions_follow_the_models_bands(tmp_path, history, model):
    """Approve below the threshold, review from it, decline from the decline band; the
    alerts are the reviews and declines, as alert schema version 2."""
    from dataclasses import replace

    with_bands = replace(model, decline_threshold=0.8)
    scores = np.array([0.0, model.threshold - 1e-9, model.threshold, 0.79, 0.8, 1.0])
    assert list(views.decisions(scores, with_bands)) == [
        "approve", "approve", "review", "review", "decline", "decline",
    ]  # fmt: skip
    assert set(views.decisions(scores, model)) == {"approve", "review"}  # no decline band
    # A decline band below the review band starts at the review band.
    assert list(views.decisions(scores, replace(model, decline_threshold=0.0)))[:2] == [
        "approve", "approve",
    ]  # fmt: skip

    events = history["events"]
    views.score_history(events, history["labels"], with_bands, tmp_path)
    scored = views.read_view(tmp_path, views.SCORED)
    expected = np.where(
        scored["score"] >= 0.8,
        "decline",
        np.where(scored["score"] >= model.threshold, "review", "approve"),
    )
    assert list(scored["decision"]) == list(expected)
    assert {"approve", "review", "decline"} <= set(scored["decision"])
    alerts = views.read_view(tmp_path, views.ALERTS).set_index("transaction_id")
    chosen = scored.set_index("transaction_id").loc[alerts.index]
    assert list(alerts["decision"]) == list(chosen["decision"])
    assert set(alerts["schema_version"]) == {schemas.ALERT_SCHEMA_VERSION}


def test_hold_back_waits_for_the_slowest_partition_still_reading():
    """A catch-up: partition 1 is days behind and has more to read, so partition 0's
    payments of later days wait; a partition at its end offset is not waited for."""
    day = 86_400_000

    def payments(rows):
        return pd.DataFrame(
            {
                "topic": "payments",
                "partition": np.array([p for p, _, _ in rows], dtype=np.int32),
                "offset": np.array([o for _, o, _ in rows], dtype=np.int64),
                "timestamp_ms": np.zeros(len(rows), dtype=np.int64),
                "event_ms": pd.array([t for _, _, t in rows], dtype="Int64"),
                "merchant_id": "m",
            }
        )

    batch = payments([(0, 0, T0_MS), (0, 1, T0_MS + 3 * day), (1, 0, T0_MS + day), (0, 2, None)])
    released, held, release_day, offsets = state.hold_back(
        batch, state.StreamState(), {0: 3, 1: 10}
    )
    assert release_day == (T0_MS + day) // day
    assert sorted(released["offset"].tolist()) == [0, 0, 2]  # the one set aside goes at once
    assert held[["partition", "offset"]].values.tolist() == [[0, 1]]
    assert offsets == {0: 3, 1: 1}
    # Partition 1 has reached its end: nothing waits any more.
    released, held, release_day, _ = state.hold_back(
        payments([]), state.StreamState(held=held, next_offsets=offsets), {0: 3, 1: 1}
    )
    assert release_day is None and len(held) == 0 and released["offset"].tolist() == [1]


def test_state_store_snapshot_of_an_abandoned_run_is_not_mistaken_for_ours(tmp_path):
    store = state.StateStore(tmp_path)
    store.save(state.StreamState(batch_id=7, newest_event_ms=5))
    store.save(state.StreamState(batch_id=0, newest_event_ms=1, newest_by_partition={2: 1}))
    assert [p.name for p in sorted(tmp_path.glob("batch-*"))] == ["batch-000000000000"]
    assert store.load(0).newest_by_partition == {2: 1}
    with pytest.raises(FileNotFoundError, match="checkpoint is incomplete"):
        store.load(3)


def test_explain_names_the_feature_that_drives_the_score():
    class SpeedOnly:
        feature_columns: ClassVar[list[str]] = ["amount", "speed_kmh_from_prev"]

        def predict(self, context, frame, params=None):
            return (frame["speed_kmh_from_prev"] > 1000).astype(float) * 0.9

    model = LoadedModel("m", "1", SpeedOnly(), 0.5, SpeedOnly.feature_columns, None, 7)
    rows = pd.DataFrame({"amount": [20.0], "speed_kmh_from_prev": [8000.0]})
    said = reasons.explain(model, rows, np.array([0.9]), {"amount": 20.0, "speed_kmh_from_prev": 0})
    assert said == [["8,000 km/h travel from the card's previous card-present payment (+0.90)"]]


def test_load_model_without_a_champion_is_one_sentence(mlflow_store):
    with pytest.raises(ModelLoadError) as error:
        load_model("models:/fraudstream@champion")
    message = str(error.value)
    assert message.startswith("Cannot load model models:/fraudstream@champion")
    assert "\n" not in message and "./spark-submit.sh train" in message


def test_load_model_from_a_missing_folder_is_one_sentence(tmp_path):
    with pytest.raises(ModelLoadError, match="No model at"):
        load_model(str(tmp_path / "nothing"))


def _record(value: bytes, offset: int, partition: int = 0) -> dict:
    return {
        "key": b"card_x",
        "value": value,
        "topic": "payments",
        "partition": partition,
        "offset": offset,
        "timestamp_ms": T0_MS,
    }


def _payment(transaction_id: str, hours: float, **changes) -> dict:
    event = {
        "transaction_id": transaction_id,
        "event_time": schemas.format_time(pd.Timestamp(T0_MS + hours * 3_600_000, unit="ms")),
        "card_id": "card_x",
        "customer_id": None,
        "merchant_id": "m_1",
        "merchant_category": "grocery",
        "amount": 10.0,
        "currency": "EUR",
        "channel": "pos",
        "lat": 48.85,
        "lon": 2.35,
        "country": "FR",
        "schema_version": 1,
    }
    event.update(changes)
    return event


def _records(values: list[bytes]) -> pd.DataFrame:
    frame = pd.DataFrame([_record(v, i) for i, v in enumerate(values)])
    return frame.astype({"partition": np.int32, "offset": np.int64, "timestamp_ms": np.int64})


TRICKY = [
    {"lat": float("nan")},
    {"lat": 91.0},
    {"lon": -180.5},
    {"lat": None, "lon": None},
    {"amount": 0},
    {"amount": -3.5},
    {"amount": "12.5"},
    {"transaction_id": ""},
    {"transaction_id": 123},
    {"card_id": None},
    {"schema_version": 2},
    {"schema_version": 1.0},
    {"schema_version": True},
    {"channel": "web"},
    {"channel": None},
    {"event_time": "2018-04-03"},
    {"event_time": "2018-04-03T10:00:00+02:00"},
    {"event_time": "yesterday"},
    {"extra": {"nested": [1, 2]}},
]


@pytest.mark.parametrize("change", TRICKY, ids=[json.dumps(c) for c in TRICKY])
def test_parse_payments_fast_path_agrees_with_the_contract(change):
    """A record among valid ones gets the same verdict as schemas.decode_payment gives it."""
    tricky = json.dumps(_payment("odd", 1) | change, allow_nan=True).encode()
    values = [json.dumps(_payment(f"t{i}", 1)).encode() for i in range(20)] + [tricky]
    events, bad, reasons = parse.parse_payments(_records(values))
    try:
        expected = schemas.decode_payment(tricky)
    except ValueError as error:
        assert bad == [20] and reasons == [str(error)]
        assert len(events) == 20
    else:
        assert bad == [] and len(events) == 21
        row = events.set_index("transaction_id").loc[expected["transaction_id"]]
        assert row["event_time"] == pd.Timestamp(expected["event_time"])
        for name in ("amount", "lat", "lon", "channel", "card_id"):
            want, got = expected[name], row[name]
            assert (want is None and pd.isna(got)) or want == got, name


def test_parse_payments_keeps_records_aligned_around_empty_and_multiline_values():
    good = [json.dumps(_payment(f"t{i}", 1)).encode() for i in range(5)]
    multiline = json.dumps(_payment("pretty", 1), indent=1).encode()  # valid, with newlines
    values = [good[0], b"", good[1], multiline, good[2], b"\n", good[3]]
    events, bad, reasons = parse.parse_payments(_records(values))
    assert list(events.sort_values("offset")["transaction_id"]) == [
        "t0", "t1", "pretty", "t2", "t3",
    ]  # fmt: skip
    assert list(events.sort_values("offset")["offset"]) == [0, 2, 3, 4, 6]
    assert bad == [1, 5] and len(reasons) == len(bad)
    assert all(reason.startswith("unparseable") for reason in reasons)


def test_operator_inputs_of_payments_and_labels_together_are_typed_without_a_warning():
    """A chunk of payments and fraud reports: each row gets its Spark type's pandas type,
    and pandas does not have to guess a column's type from a part that is all null."""
    import warnings

    from fraudstream.scoring import records as card_records

    label = schemas.encode_label(
        {
            "transaction_id": "t0",
            "card_id": "card_x",
            "label": "fraud",
            "source": "chargeback",
            "schema_version": 1,
            "reported_time": schemas.format_time(pd.Timestamp(T0_MS + 7_200_000, unit="ms")),
        }
    )
    frame = _records([json.dumps(_payment("t0", 1)).encode(), label, b"not json"])
    frame.loc[1, "topic"] = "labels"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (rows,) = card_records.operator_inputs(iter([frame]), labels_topic="labels")
    rows = rows.set_index("offset")
    assert rows.loc[0, "event_amount"] == 10.0 and rows.loc[0, "cents"] == 1000
    assert pd.isna(rows.loc[1, "event_amount"]) and rows.loc[1, "report_ms"] == T0_MS + 7_200_000
    assert rows.loc[2, "reason"].startswith(schemas.REASON_UNPARSEABLE)
    assert str(rows["event_amount"].dtype) == "float64" and str(rows["cents"].dtype) == "Int64"
