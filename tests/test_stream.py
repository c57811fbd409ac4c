"""The scoring stream's micro-batch logic, without Spark or Kafka (see test_score_job.py)."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd
import pytest

from fraudstream import features, schemas, stream

from .stream_helpers import (
    label_records,
    long_history,
    payment_records,
    sample_history,
    toy_model,
)

T0_MS = 1_522_540_800_000  # 2018-04-01T00:00:00Z


@pytest.fixture(scope="module")
def history():
    return sample_history()


@pytest.fixture(scope="module")
def model(history):
    return toy_model(history["dataset"])


def _processor(tmp_path, model, labels, payments=None, snapshot_every=1):
    return stream.BatchProcessor(
        models=stream.FixedModel(model),
        views=stream.ParquetViews(tmp_path / "out"),
        state_store=stream.StateStore(tmp_path / "state"),
        labels=labels,
        payments=payments,
        outputs=None,
        settings=stream.Settings(snapshot_every=snapshot_every),
        log=lambda line: None,
    )


def _run_in_batches(processor, records, cuts):
    for batch_id, (start, end) in enumerate(zip(cuts, cuts[1:], strict=False)):
        processor.process(records.iloc[start:end], batch_id)


def test_process_batch_features_equal_training_features_across_batch_cuts(tmp_path, history, model):
    records = payment_records(history["events"])
    rng = np.random.default_rng(3)
    cuts = [0, *sorted(rng.choice(np.arange(1, len(records)), 9, replace=False)), len(records)]
    processor = _processor(tmp_path, model, stream.StaticTopic(label_records(history["labels"])))
    _run_in_batches(processor, records, cuts)

    scored = stream.read_view(tmp_path / "out", stream.SCORED).set_index("transaction_id")
    expected = history["dataset"].set_index("transaction_id")[features.FEATURE_COLUMNS]
    assert len(scored) == len(expected) and scored.index.is_unique
    got = scored.loc[expected.index, features.FEATURE_COLUMNS]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)
    # The merchant fraud features did see the labels: the parity is not trivially 0 = 0.
    assert expected["merchant_fraud_rate_30d"].gt(0).sum() > 100


def _partitioned(records: pd.DataFrame, partitions: int = 3) -> pd.DataFrame:
    """The records on ``partitions`` partitions by card, each in order, as producers key them."""
    part = records["key"].map(lambda key: zlib.crc32(key) % partitions).astype(np.int32)
    return records.assign(
        partition=part.to_numpy(), offset=records.groupby(part).cumcount().to_numpy()
    )


def test_features_equal_training_when_partitions_are_cut_at_other_times(tmp_path, history, model):
    """Micro-batches that take each partition to another point in event time (as Spark's
    per-partition offset limits do in a replay), with a restart in the middle: every
    feature still equals training's, merchant counts across partitions included."""
    records = _partitioned(payment_records(history["events"]))
    labels = stream.StaticTopic(label_records(history["labels"]))
    topic = stream.StaticTopic(records)
    sizes = records.groupby("partition").size().to_dict()
    rng = np.random.default_rng(5)
    # Eight batches; each partition cut at its own random offsets.
    cuts = {
        p: [0, *sorted(rng.choice(np.arange(1, n), 7, replace=False)), n] for p, n in sizes.items()
    }
    held_seen = 0
    for batch_id in range(8):
        chosen = np.zeros(len(records), dtype=bool)
        for p, points in cuts.items():
            offset = records["offset"].to_numpy()
            chosen |= (
                (records["partition"].to_numpy() == p)
                & (offset >= points[batch_id])
                & (offset < points[batch_id + 1])
            )
        # A fresh processor at batch 4: a restart that rebuilds the held records too.
        if batch_id in (0, 4):
            processor = _processor(tmp_path, model, labels, payments=topic, snapshot_every=3)
        processor.process(records.loc[chosen], batch_id)
        held_seen = max(held_seen, len(processor.state.held))
    assert len(processor.state.held) == 0  # the last batch reads every partition to its end
    assert held_seen > 0  # the cuts did make payments wait
    scored = stream.read_view(tmp_path / "out", stream.SCORED).set_index("transaction_id")
    expected = history["dataset"].set_index("transaction_id")[features.FEATURE_COLUMNS]
    assert len(scored) == len(expected) and scored.index.is_unique
    got = scored.loc[expected.index, features.FEATURE_COLUMNS]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)


def _published(records: pd.DataFrame, count: int) -> stream.StaticTopic:
    """The topic as it stands once the first ``count`` records (in event order) are out."""
    return stream.StaticTopic(records.iloc[:count])


def test_features_equal_training_after_a_skewed_catch_up_then_live(tmp_path, model):
    """The demo's flow: a history longer than the card windows on four partitions,
    caught up in two large micro-batches that take the partitions to other points in
    event time, then live payments in small batches. Every feature equals training's:
    no state may expire by an event time that another partition has not reached yet."""
    history = long_history()
    records = _partitioned(payment_records(history["events"]), partitions=4)
    labels = stream.StaticTopic(label_records(history["labels"]))
    history_end = int(len(records) * 0.9)
    topic = _published(records, history_end)
    processor = _processor(tmp_path, model, labels, payments=topic, snapshot_every=5)
    # Catch-up: large batches that take each partition to its own share of the history,
    # past the first 30 days, so that card windows are full and state expires.
    part = records["partition"].to_numpy()
    offset = records["offset"].to_numpy()
    in_history = np.arange(len(records)) < history_end
    shares = [(0.5, 0.6, 0.55, 0.45), (0.78, 0.9, 0.84, 0.8), (1, 1, 1, 1)]
    taken = np.zeros(len(records), dtype=bool)
    held_seen = 0
    for batch_id, share in enumerate(shares):
        upto = np.zeros(len(records), dtype=bool)
        for p, fraction in enumerate(share):
            mine = in_history & (part == p)
            upto |= mine & (offset < int(mine.sum() * fraction))
        processor.process(records.loc[upto & ~taken], batch_id)
        taken |= upto
        held_seen = max(held_seen, len(processor.state.held))
    assert held_seen > 0  # the cuts did make payments wait
    assert len(processor.state.held) == 0
    # Live: small batches, each reading every partition to its end.
    batch_id = len(shares)
    for start in range(history_end, len(records), 150):
        end = min(start + 150, len(records))
        processor.payments = _published(records, end)
        processor.process(records.iloc[start:end], batch_id)
        batch_id += 1

    scored = stream.read_view(tmp_path / "out", stream.SCORED).set_index("transaction_id")
    expected = history["dataset"].set_index("transaction_id")[features.FEATURE_COLUMNS]
    assert len(scored) == len(expected) and scored.index.is_unique
    got = scored.loc[expected.index, features.FEATURE_COLUMNS]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)
    # The history is longer than the windows: the state did shed its oldest payments.
    first_ms = features._time_ms(history["events"]["event_time"]).min()
    assert processor.state.features.cards["time_ms"].min() > first_ms + 10 * features.DAY_MS


def test_batch_processor_rebuilds_its_state_after_a_restart(tmp_path, history, model):
    records = payment_records(history["events"])
    labels = label_records(history["labels"])
    cuts = [0, 700, 1500, 2300, 3100, 4000, 4900, len(records)]
    straight = _processor(tmp_path / "a", model, stream.StaticTopic(labels))
    _run_in_batches(straight, records, cuts)
    # The same batches, with a fresh processor (a restarted driver) for each one and a
    # snapshot every third batch: the state is rebuilt each time from the newest
    # snapshot and the logged batches after it, read again from the topic.
    lines = []
    for batch_id, (start, end) in enumerate(zip(cuts, cuts[1:], strict=False)):
        restarted = _processor(
            tmp_path / "b",
            model,
            stream.StaticTopic(labels),
            payments=stream.StaticTopic(records),
            snapshot_every=3,
        )
        restarted.log = lines.append
        restarted.process(records.iloc[start:end], batch_id)
    assert sum(line.startswith("state: rebuilt from") for line in lines) == 4  # 1, 2, 4, 5
    for view in (stream.SCORED, stream.ALERTS, stream.CARD_LOCATIONS):
        a = stream.read_view(tmp_path / "a" / "out", view).drop(
            columns=["scored_time"], errors="ignore"
        )
        b = stream.read_view(tmp_path / "b" / "out", view).drop(
            columns=["scored_time"], errors="ignore"
        )
        key = "transaction_id"
        pd.testing.assert_frame_equal(
            a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
        )


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


def test_process_batch_sets_aside_invalid_duplicate_and_late_records(model):
    good = _payment("t1", 48)
    values = [
        json.dumps(good).encode(),
        b"{not json",
        json.dumps(_payment("t2", 48, amount=-5)).encode(),
        json.dumps({k: v for k, v in _payment("t3", 48).items() if k != "card_id"}).encode(),
        json.dumps(_payment("t1", 49)).encode(),  # same transaction_id again
        json.dumps(_payment("t4", 0)).encode(),  # 48 h before the newest event
        json.dumps(_payment("t5", 47, extra_field="ignored")).encode(),
    ]
    newest = T0_MS + 48 * 3_600_000
    state = stream.StreamState(newest_event_ms=newest, newest_by_partition={0: newest})
    result, after = stream.process_batch(
        _records(values), stream._empty_records(), state, model, stream.Settings(), 0
    )
    assert sorted(result.scored["transaction_id"]) == ["t1", "t5"]
    dead = result.dead_letters.set_index("offset")
    assert dead.loc[1, "reason"].startswith("unparseable")
    assert dead.loc[2, "reason"] == "amount must be > 0"
    assert dead.loc[3, "reason"] == "missing required field card_id"
    assert dead.loc[4, "reason"] == stream.REASON_DUPLICATE
    assert dead.loc[5, "reason"].startswith("late: event_time is more than 24 h")
    assert sorted(dead.index) == [1, 2, 3, 4, 5]
    # The dead letter keeps the record as it came.
    assert dead.loc[1, "value"] == b"{not json" and dead.loc[1, "topic"] == "payments"
    assert result.counts | {} == result.counts and result.counts["duplicates"] == 1
    assert result.counts["late"] == 1 and result.counts["invalid"] == 3

    # A later batch: the same transaction again is a duplicate across batches too.
    again, _ = stream.process_batch(
        _records([json.dumps(_payment("t1", 50)).encode()]),
        stream._empty_records(),
        after,
        model,
        stream.Settings(),
        1,
    )
    assert again.scored.empty and list(again.dead_letters["reason"]) == [stream.REASON_DUPLICATE]


def test_process_batch_alerts_carry_contract_fields_and_reasons(history, model):
    records = payment_records(history["events"])
    result, _ = stream.process_batch(
        records, label_records(history["labels"]), stream.StreamState(), model, stream.Settings(), 0
    )
    alerts = result.alerts
    scored = result.scored
    assert len(alerts) > 0
    assert set(alerts["transaction_id"]) == set(scored.loc[scored["alerted"], "transaction_id"])
    assert (alerts["score"] >= alerts["threshold"]).all()
    table, _ = stream.to_tables(result)[stream.ALERTS]
    assert table.schema.equals(schemas.ALERT_ARROW_SCHEMA)
    assert all(1 <= len(r) <= stream.TOP_REASONS for r in alerts["reasons"])
    assert alerts["alert_id"].is_unique
    first = alerts.iloc[0]
    assert first["alert_id"] == stream.alert_id(first["transaction_id"], model.name, model.version)
    # No card numbers: the card travels as the token it came with.
    assert alerts["card_id"].str.startswith("card_").all()


def test_explain_names_the_feature_that_drives_the_score():
    class SpeedOnly:
        feature_columns = ["amount", "speed_kmh_from_prev"]

        def predict(self, context, frame, params=None):
            return (frame["speed_kmh_from_prev"] > 1000).astype(float) * 0.9

    model = stream.LoadedModel("m", "1", SpeedOnly(), 0.5, SpeedOnly.feature_columns, None, 7)
    rows = pd.DataFrame({"amount": [20.0], "speed_kmh_from_prev": [8000.0]})
    reasons = stream.explain(
        model, rows, np.array([0.9]), {"amount": 20.0, "speed_kmh_from_prev": 0}
    )
    assert reasons == [["8,000 km/h travel from the card's previous card-present payment (+0.90)"]]


def test_parquet_views_rerun_of_a_batch_replaces_its_own_files(tmp_path, history, model):
    records = payment_records(history["events"]).iloc[:500]
    first, _ = stream.process_batch(
        records, stream._empty_records(), stream.StreamState(), model, stream.Settings(), 0
    )
    views = stream.ParquetViews(tmp_path)
    views.write(0, first)
    # The run again of batch 0 alerts on nothing (say, the model changed in between):
    # its earlier alert files must go, and no row may appear twice.
    quieter = stream.replace(model, threshold=1.01)
    second, _ = stream.process_batch(
        records, stream._empty_records(), stream.StreamState(), quieter, stream.Settings(), 0
    )
    views.write(0, second)
    assert len(stream.read_view(tmp_path, stream.SCORED)) == 500
    assert stream.read_view(tmp_path, stream.ALERTS).empty
    assert not list(tmp_path.rglob(".*.writing"))


def test_state_store_snapshot_of_an_abandoned_run_is_not_mistaken_for_ours(tmp_path):
    store = stream.StateStore(tmp_path)
    store.save(stream.StreamState(batch_id=7, newest_event_ms=5))
    store.save(stream.StreamState(batch_id=0, newest_event_ms=1))
    assert [p.name for p in sorted(tmp_path.glob("batch-*"))] == ["batch-000000000000"]
    assert store.load(0).newest_event_ms == 1
    with pytest.raises(FileNotFoundError, match="checkpoint is incomplete"):
        store.load(3)


def test_load_model_without_a_champion_is_one_sentence(mlflow_store):
    with pytest.raises(stream.ModelLoadError) as error:
        stream.load_model("models:/fraudstream@champion")
    message = str(error.value)
    assert message.startswith("Cannot load model models:/fraudstream@champion")
    assert "\n" not in message and "./spark-submit.sh train" in message


def test_load_model_from_a_missing_folder_is_one_sentence(tmp_path):
    with pytest.raises(stream.ModelLoadError, match="No model at"):
        stream.load_model(str(tmp_path / "nothing"))


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
    events, bad, reasons = stream.parse_payments(_records(values))
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
    events, bad, reasons = stream.parse_payments(_records(values))
    assert list(events.sort_values("offset")["transaction_id"]) == [
        "t0", "t1", "pretty", "t2", "t3",
    ]  # fmt: skip
    assert list(events.sort_values("offset")["offset"]) == [0, 2, 3, 4, 6]
    assert bad == [1, 5] and all(reason.startswith("unparseable") for reason in reasons)


def test_process_batch_measures_lateness_per_partition(model):
    """A replayed history runs partitions hours apart: that is not lateness."""
    newest = T0_MS + 72 * 3_600_000
    state = stream.StreamState(newest_event_ms=newest, newest_by_partition={0: newest, 1: T0_MS})
    values = [json.dumps(_payment("behind", 2)).encode(), json.dumps(_payment("old", 2)).encode()]
    records = _records(values).assign(partition=np.array([1, 0], dtype=np.int32))
    result, after = stream.process_batch(
        records, stream._empty_records(), state, model, stream.Settings(), 0
    )
    assert list(result.scored["transaction_id"]) == ["behind"]
    assert list(result.dead_letters["offset"]) == [1]
    assert after.newest_by_partition == {0: newest, 1: T0_MS + 2 * 3_600_000}
