"""The JVM card operator: its aggregates against a plain reference and ``features.compute``.

The operator (``fraudstream.scoring.operator``) must give, batch or streaming, the same
card features as ``features.compute`` over the same history: that is what lets training
and scoring share it without retraining the model.
"""

from __future__ import annotations

import itertools
import math
import os
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraudstream import features, schemas
from fraudstream.data import simulate
from fraudstream.scoring import operator

DAY_MS = features.DAY_MS
HOUR_MS = features.HOUR_MS
T0_MS = 1_522_584_000_000  # 2018-04-01 12:00 UTC
AGGREGATE_COLUMNS = [
    name for name in operator.AGGREGATE_COLUMNS if name not in ("duplicate", "late")
]


# --- helpers --------------------------------------------------------------------------


def _payments_frame(events: pd.DataFrame, spark):
    """A Spark DataFrame of payment events in the contract's schema."""
    table = pa.Table.from_pandas(
        events[schemas.PAYMENT_ARROW_SCHEMA.names], schema=schemas.PAYMENT_ARROW_SCHEMA
    )
    return spark.createDataFrame(table.to_pandas(), schema=schemas.PAYMENT_SCHEMA)


def _with_copies_and_ties(events: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The history plus payments delivered twice and payments tied in time with another."""
    rng = np.random.default_rng(seed)
    events = events.copy()
    ordered = events.sort_values(["card_id", "event_time"])
    same_card = ordered["card_id"].to_numpy()[1:] == ordered["card_id"].to_numpy()[:-1]
    # Move some payments onto the millisecond of the card's previous payment.
    tie = rng.choice(np.flatnonzero(same_card), size=min(40, same_card.sum()), replace=False)
    moved = ordered.index[tie + 1]
    events.loc[moved, "event_time"] = ordered["event_time"].to_numpy()[tie]
    copies = events.iloc[rng.choice(len(events), size=min(40, len(events)), replace=False)]
    return pd.concat([events, copies], ignore_index=True)


def _operator_features(aggregates: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Card features by transaction_id from the operator's rows (duplicates dropped)."""
    first = aggregates.loc[~aggregates["duplicate"]].set_index("transaction_id")
    own = features._card_rows(events).drop_duplicates("transaction_id").set_index("transaction_id")
    own = own.loc[first.index]
    return features.card_features_from_aggregates(first, own)


def _compute_features(events: pd.DataFrame) -> pd.DataFrame:
    whole = features.compute(events)
    return whole.drop_duplicates("transaction_id").set_index("transaction_id")[
        features.CARD_FEATURE_COLUMNS
    ]


def _assert_same_features(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert sorted(got.index) == sorted(want.index)
    pd.testing.assert_frame_equal(
        got.loc[want.index], want, check_exact=False, rtol=0, atol=1e-9, check_names=False
    )


# --- card_rows ------------------------------------------------------------------------


def test_card_rows_round_like_features(spark):
    amounts = [0.005, 0.015, 2.675, 1.005, 10.005, 0.125, 1.115, 57.16, 1e-9, 123456.785]
    lats = [48.0000005, -33.8688, 0.0000025, 1.0000015, None, 90.0, -0.0000005, 45.5, 1.0, 2.0]
    channels = ["pos", "atm", "pos", "ecom", "pos", "atm", "pos", None, "pos", "pos"]
    countries = ["FR", "AU", None, "DE", "FR", "NO", "GQ", "US", "FR", "FR"]
    events = pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(len(amounts))],
            "event_time": pd.Timestamp("2018-04-01 00:00:00.123", tz="UTC")
            + pd.to_timedelta(np.arange(len(amounts)), unit="h"),
            "card_id": "c1",
            "customer_id": "u1",
            "merchant_id": "m1",
            "merchant_category": "grocery",
            "amount": amounts,
            "currency": "EUR",
            "channel": channels,
            "lat": lats,
            "lon": [2.0000005, 151.2093, -0.0000015, 3.0, 2.0, 180.0, 1e-7, -73.5, None, 2.0],
            "country": countries,
            "schema_version": 1,
        }
    )
    got = operator.card_rows(_payments_frame(events, spark)).toPandas()
    want = features._card_rows(events)
    assert list(got.columns) == operator.INPUT_COLUMNS
    for name in operator.INPUT_COLUMNS:
        assert list(got[name]) == list(want[name]), name
    # The half-cent cases themselves, as numpy rounds them (half to even).
    assert list(got["cents"][:5]) == [0, 2, 268, 100, 1001]


# --- batch ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_card_aggregates_batch_equals_compute(spark, seed):
    payments, _ = simulate.simulate(
        simulate.SimulationConfig(customers=150, terminals=300, days=45, seed=seed)
    )
    events = _with_copies_and_ties(payments.to_pandas(), seed)
    rows = operator.card_rows(_payments_frame(events, spark))
    aggregates = operator.card_aggregates(rows).toPandas()

    assert len(aggregates) == len(events)  # one row per input row, copies included
    assert aggregates["duplicate"].sum() == events["transaction_id"].duplicated().sum()
    _assert_same_features(_operator_features(aggregates, events), _compute_features(events))


def test_card_aggregates_carry_columns_and_pass_non_payments_through(spark):
    payments, _ = simulate.simulate(
        simulate.SimulationConfig(customers=40, terminals=80, days=10, seed=3)
    )
    events = payments.to_pandas()
    rows = operator.card_rows(_payments_frame(events, spark)).toPandas()
    rows["position"] = np.arange(len(rows))
    # Records that are not payments (no transaction id), one with a card id, one without.
    others = rows.iloc[:2].copy()
    others["transaction_id"] = None
    others.loc[others.index[1], "card_id"] = None
    others["position"] = [-1, -2]
    mixed = pd.concat([rows, others], ignore_index=True)
    carried = operator.card_aggregates(
        spark.createDataFrame(mixed), passing=["position"]
    ).toPandas()
    plain = operator.card_aggregates(spark.createDataFrame(rows)).toPandas()

    assert list(carried.columns) == [*plain.columns, "position"]
    assert sorted(carried["position"]) == sorted(mixed["position"])
    passed = carried.loc[carried["position"] < 0]
    assert passed[operator.AGGREGATE_COLUMNS].isna().all().all()
    # The payments' aggregates are those without the other records: they touched no state.
    got = carried.loc[carried["position"] >= 0].sort_values("position")
    want = plain.set_index("transaction_id").loc[got["transaction_id"]]
    for name in AGGREGATE_COLUMNS:
        assert (
            got[name].astype(object).where(got[name].notna(), None).tolist()
            == want[name].astype(object).where(want[name].notna(), None).tolist()
        ), name


def test_card_aggregates_check_late_payments_without_holding_them(spark):
    rows = pd.DataFrame(
        [
            ["c1", transaction_id, T0_MS + days * DAY_MS, 1000, 0, 0, False, None]
            for transaction_id, days in [("a", 0), ("b", 5), ("late", 3), ("c", 6)]
        ],
        columns=operator.INPUT_COLUMNS,
    ).astype({"country": object})
    rows["late"] = [False, False, True, False]
    got = operator.card_aggregates(spark.createDataFrame(rows)).toPandas()
    got = got.set_index("transaction_id")

    assert got["late"].to_dict() == {"a": False, "b": False, "late": True, "c": False}
    assert got.loc["late", "n_30d"] == 1  # checked against the card: a is before it
    assert got.loc["c", "n_30d"] == 2  # a and b; the late payment was not held
    assert not got["duplicate"].any()


_REPORT_SCHEMA = (
    "card_id string, transaction_id string, time_ms long, cents long, lat_e6 long, "
    "lon_e6 long, located boolean, country string, merchant_id string, report_ms long"
)


def test_card_aggregates_turn_fraud_reports_into_the_facts_training_uses(spark):
    payments, labels = simulate.simulate(
        simulate.SimulationConfig(customers=200, terminals=400, days=40, seed=3)
    )
    events, labels = payments.to_pandas(), labels.to_pandas()
    fraud = labels.loc[labels["label"] == "fraud"]
    assert len(fraud) > 10
    # A second, later report of some frauds (counts once, at the first), and a report of
    # a payment the card never made (waits, makes no fact).
    again = fraud.iloc[:5].assign(
        reported_time=fraud["reported_time"].iloc[:5] + pd.Timedelta(days=2)
    )
    ghost = fraud.iloc[:1].assign(transaction_id="t_never_paid")
    reports = pd.concat([again, fraud, ghost], ignore_index=True)
    rows = features._card_rows(events).assign(
        merchant_id=events["merchant_id"].to_numpy(), report_ms=None
    )
    report_rows = pd.DataFrame(
        {
            "card_id": reports["card_id"].to_numpy(),
            "transaction_id": reports["transaction_id"].to_numpy(),
            "report_ms": features._time_ms(reports["reported_time"]),
        }
    )
    both = pd.concat([rows, report_rows], ignore_index=True)[
        [*operator.INPUT_COLUMNS, "merchant_id", "report_ms"]
    ].astype({"country": object, "merchant_id": object, "report_ms": "Int64"})
    frame = spark.createDataFrame(both.astype(object).where(both.notna(), None), _REPORT_SCHEMA)
    got = operator.card_aggregates(frame, keep_days=37).toPandas()

    assert len(got) == len(both)
    made = got.loc[got["fact_report_ms"].notna()]
    facts = pd.DataFrame(
        {
            "card_id": made["card_id"].to_numpy(),
            "merchant_id": made["fact_merchant_id"].to_numpy(),
            "tx_day": made["fact_tx_ms"].to_numpy(dtype=np.int64) // DAY_MS,
            "report_day": made["fact_report_ms"].to_numpy(dtype=np.int64) // DAY_MS,
        }
    )
    want = features.fraud_facts(events, labels)[facts.columns]
    key = list(facts.columns)
    pd.testing.assert_frame_equal(
        facts.sort_values(key).reset_index(drop=True),
        want.sort_values(key).reset_index(drop=True),
        check_dtype=False,
    )
    # Report rows carry no aggregates; payments' aggregates are those without reports.
    is_report = got["transaction_id"].isin(reports["transaction_id"]) & got["n_30d"].isna()
    assert is_report.sum() == len(reports)
    plain = operator.card_aggregates(
        spark.createDataFrame(rows.drop(columns=["merchant_id", "report_ms"]))
    ).toPandas()
    paid = got.loc[~is_report].set_index("transaction_id").sort_index()
    plain = plain.set_index("transaction_id").sort_index()
    pd.testing.assert_frame_equal(
        paid[AGGREGATE_COLUMNS], plain[AGGREGATE_COLUMNS], check_dtype=False
    )


# --- a plain reference, and random small histories ------------------------------------


def _reference_aggregates(payments: list[dict]) -> dict[str, dict]:
    """Aggregates over each payment's earlier payments, the slow and obvious way."""
    unique, seen = [], set()
    for p in payments:
        if p["transaction_id"] not in seen:
            seen.add(p["transaction_id"])
            unique.append(p)
    out = {}
    for p in unique:
        t = p["time_ms"]
        earlier = [
            q
            for q in unique
            if q["card_id"] == p["card_id"]
            and (q["time_ms"], q["transaction_id"]) < (t, p["transaction_id"])
            and q["time_ms"] > t - 30 * DAY_MS
        ]
        earlier.sort(key=lambda q: (q["time_ms"], q["transaction_id"]))
        located = [q for q in earlier if q["located"]]
        agg = {}
        for name, width in [("1h", HOUR_MS), ("1d", DAY_MS), ("7d", 7 * DAY_MS)]:
            inside = [q for q in earlier if q["time_ms"] > t - width]
            agg[f"n_{name}"] = len(inside)
            if name != "1h":
                agg[f"cents_{name}"] = sum(q["cents"] for q in inside)
        agg["n_30d"] = len(earlier)
        agg["cents_30d"] = sum(q["cents"] for q in earlier)
        agg["prev_time_ms"] = earlier[-1]["time_ms"] if earlier else None
        last = located[-1] if located else None
        agg["prev_loc_time_ms"] = last and last["time_ms"]
        agg["prev_loc_lat_e6"] = last and last["lat_e6"]
        agg["prev_loc_lon_e6"] = last and last["lon_e6"]
        agg["prev_loc_country"] = last and last["country"]
        agg["loc_n_30d"] = len(located)
        agg["loc_lat_sum_30d"] = sum(q["lat_e6"] for q in located)
        agg["loc_lon_sum_30d"] = sum(q["lon_e6"] for q in located)
        out[p["transaction_id"]] = agg
    return out


def _plain_card_row(event: dict) -> dict:
    """One event in the operator's input form, with Python's own rounding (half to even)."""
    lat, lon = event["lat"], event["lon"]
    located = (
        event["channel"] in ("pos", "atm")
        and lat is not None
        and lon is not None
        and math.isfinite(lat)
        and math.isfinite(lon)
    )
    return {
        "card_id": event["card_id"],
        "transaction_id": event["transaction_id"],
        "time_ms": event["time_ms"],
        "cents": round(event["amount"] * 100),
        "lat_e6": round(lat * 1e6) if located else 0,
        "lon_e6": round(lon * 1e6) if located else 0,
        "located": located,
        "country": event["country"] if located else None,
    }


_EDGE_TIMES = [0, 1, HOUR_MS, HOUR_MS + 1, DAY_MS, 7 * DAY_MS, 30 * DAY_MS, 30 * DAY_MS + 1]


@st.composite
def _histories(draw) -> list[dict]:
    ids = draw(
        st.lists(
            st.text(alphabet="abyz019AZ_-", min_size=1, max_size=3),
            min_size=1,
            max_size=25,
            unique=True,
        )
    )
    events = []
    for transaction_id in ids:
        base = draw(st.sampled_from([0, 2 * DAY_MS, 29 * DAY_MS, 40 * DAY_MS]))
        offset = draw(st.one_of(st.sampled_from(_EDGE_TIMES), st.integers(0, 45 * DAY_MS)))
        events.append(
            {
                "transaction_id": transaction_id,
                "card_id": draw(st.sampled_from(["c1", "c2", "c3"])),
                "time_ms": T0_MS + base + offset,
                "amount": draw(
                    st.one_of(
                        st.sampled_from([0.005, 0.015, 2.675, 1.005, 10.005, 0.125]),
                        st.floats(0.01, 5000, allow_nan=False),
                    )
                ),
                "channel": draw(st.sampled_from(["pos", "atm", "ecom"])),
                "lat": draw(st.one_of(st.none(), st.floats(-89.9, 89.9))),
                "lon": draw(st.floats(-179.9, 179.9)),
                "country": draw(st.sampled_from(["FR", "DE", None])),
            }
        )
    # Some payments delivered twice, exact copies, anywhere in the input.
    copies = draw(st.lists(st.sampled_from(events), max_size=4))
    order = draw(st.permutations(events + copies))
    return list(order)


def _events_frame(history: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(history)
    frame["event_time"] = pd.to_datetime(frame.pop("time_ms"), unit="ms", utc=True)
    frame["merchant_id"] = "m1"
    return frame


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=_histories())
def test_card_aggregates_equal_plain_reference_and_compute(spark, history):
    rows = [_plain_card_row(event) for event in history]
    frame = spark.createDataFrame(
        pd.DataFrame(rows, columns=operator.INPUT_COLUMNS).astype({"country": object}),
        schema="card_id string, transaction_id string, time_ms long, cents long, "
        "lat_e6 long, lon_e6 long, located boolean, country string",
    )
    got = operator.card_aggregates(frame).toPandas()

    want = _reference_aggregates(rows)
    first = got.loc[~got["duplicate"]].set_index("transaction_id")
    assert sorted(first.index) == sorted(want)
    assert len(got) == len(rows)
    for transaction_id, expected in want.items():
        actual = {
            name: (None if pd.isna(value) else value)
            for name, value in first.loc[transaction_id, AGGREGATE_COLUMNS].items()
        }
        assert actual == expected, transaction_id
    events = _events_frame(history)
    _assert_same_features(_operator_features(got, events), _compute_features(events))


# --- streaming ------------------------------------------------------------------------


def _batches_with_a_lagging_card(events: pd.DataFrame, seed: int) -> list[pd.DataFrame]:
    """The history in event order, cut at random; one card arrives three days behind."""
    rng = np.random.default_rng(seed)
    late_card = events["card_id"].value_counts().index[0]
    # Deliver the late card's payments as if they were three days younger. A card's own
    # payments arrive in (time, id) order: a payment delivered after one it precedes
    # cannot change what was already emitted, in the stream as in features.compute.
    delivery = events.assign(
        delivery=events["event_time"]
        + pd.to_timedelta(np.where(events["card_id"] == late_card, 3, 0), unit="D")
    )
    events = events.loc[
        delivery.sort_values(["delivery", "transaction_id"], kind="stable").index
    ].reset_index(drop=True)
    cuts = [0, *np.sort(rng.choice(np.arange(1, len(events)), size=11, replace=False)), None]
    return [events.iloc[start:end] for start, end in itertools.pairwise(cuts)]


def _write_batches(batches: list[pd.DataFrame], folder, first_index: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for i, batch in enumerate(batches, start=first_index):
        table = pa.Table.from_pandas(
            batch[schemas.PAYMENT_ARROW_SCHEMA.names],
            schema=schemas.PAYMENT_ARROW_SCHEMA,
            preserve_index=False,
        )
        path = folder / f"batch-{i:03d}.parquet"
        pq.write_table(table, path)
        # The file source takes files in modification order, one per trigger.
        os.utime(path, (now + i, now + i))


def _run_stream(spark, source, out, checkpoint, initial_states=None) -> None:
    payments = (
        spark.readStream.schema(schemas.PAYMENT_SCHEMA)
        .option("maxFilesPerTrigger", 1)
        .parquet(str(source))
    )
    aggregates = operator.card_aggregates(
        operator.card_rows(payments), initial_states=initial_states
    )
    query = (
        aggregates.writeStream.format("parquet")
        .option("path", str(out))
        .option("checkpointLocation", str(checkpoint))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(300)
    assert query.exception() is None


def test_card_aggregates_streaming_with_restart_equals_batch(spark, tmp_path):
    payments, _ = simulate.simulate(
        simulate.SimulationConfig(customers=60, terminals=120, days=40, seed=3)
    )
    events = _with_copies_and_ties(payments.to_pandas(), seed=3)
    batches = _batches_with_a_lagging_card(events, seed=3)
    late_card = events["card_id"].value_counts().index[0]
    assert any(  # the lagging card is days behind the others in the same batch
        batch["event_time"].max() - batch.loc[batch["card_id"] == late_card, "event_time"].max()
        > pd.Timedelta(days=2)
        for batch in batches
        if (batch["card_id"] == late_card).any()
    )
    source, out, checkpoint = tmp_path / "in", tmp_path / "out", tmp_path / "checkpoint"
    half = len(batches) // 2
    _write_batches(batches[:half], source, 0)
    _run_stream(spark, source, out, checkpoint)
    # Stopped; more files arrive; the query restarts from its checkpoint.
    _write_batches(batches[half:], source, half)
    _run_stream(spark, source, out, checkpoint)

    assert len(list((checkpoint / "commits").iterdir())) >= len(batches)
    assert spark.conf.get(operator.PROVIDER_CONF) == operator.ROCKSDB_PROVIDER
    aggregates = spark.read.parquet(str(out)).toPandas()
    assert len(aggregates) == len(events)
    assert aggregates["duplicate"].sum() == events["transaction_id"].duplicated().sum()
    _assert_same_features(_operator_features(aggregates, events), _compute_features(events))


def test_card_aggregates_stream_from_states_built_in_batch_equals_batch(spark, tmp_path):
    payments, _ = simulate.simulate(
        simulate.SimulationConfig(customers=80, terminals=160, days=45, seed=5)
    )
    events = _with_copies_and_ties(payments.to_pandas(), seed=5)
    events = events.sort_values(["event_time", "transaction_id"], kind="stable")
    cut = events["event_time"].min() + pd.Timedelta(days=38)
    history, live = events.loc[events["event_time"] < cut], events.loc[events["event_time"] >= cut]
    assert len(history) > 1000 and len(live) > 100
    states = operator.card_states(operator.card_rows(_payments_frame(history, spark)))
    states.write.parquet(str(tmp_path / "states"))
    # One state per card: a card keeps its last 30 days of payments until its next one.
    assert spark.read.parquet(str(tmp_path / "states")).count() == history["card_id"].nunique()
    states = operator.read_card_states(spark, tmp_path / "states")

    # The live payments stream in small batches from those states; a restart from the
    # checkpoint must not hand the states over a second time.
    source, out, checkpoint = tmp_path / "in", tmp_path / "out", tmp_path / "checkpoint"
    cuts = np.linspace(0, len(live), 5).astype(int)
    batches = [live.iloc[a:b] for a, b in itertools.pairwise(cuts)]

    _write_batches(batches[:2], source, 0)
    _run_stream(spark, source, out, checkpoint, initial_states=states)
    _write_batches(batches[2:], source, 2)
    _run_stream(spark, source, out, checkpoint, initial_states=states)

    got = spark.read.parquet(str(out)).toPandas()
    assert len(got) == len(live)
    whole = operator.card_aggregates(operator.card_rows(_payments_frame(events, spark)))
    want = whole.toPandas()
    want = want.loc[want["transaction_id"].isin(live["transaction_id"])]
    key = ["transaction_id", "duplicate"]
    columns = [*AGGREGATE_COLUMNS, "duplicate"]
    got = got.sort_values(key).reset_index(drop=True)[["transaction_id", *columns]]
    want = want.sort_values(key).reset_index(drop=True)[["transaction_id", *columns]]
    # A copy of a history payment delivered live is still a duplicate, by the states.
    assert got["duplicate"].sum() == want["duplicate"].sum()
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def _payment(transaction_id: str, card_id: str, day: float, amount: float = 10.0) -> dict:
    return {
        "transaction_id": transaction_id,
        "event_time": pd.Timestamp("2018-04-01", tz="UTC") + pd.Timedelta(days=day),
        "card_id": card_id,
        "customer_id": None,
        "merchant_id": "m1",
        "merchant_category": None,
        "amount": amount,
        "currency": "EUR",
        "channel": "pos",
        "lat": 48.0,
        "lon": 2.0,
        "country": "FR",
        "schema_version": 1,
    }


def test_card_aggregates_streaming_expires_per_card_and_places_late_ties(spark, tmp_path):
    batches = [
        # Card "slow" is 40 days behind card "fast": a horizon from the newest payment
        # seen anywhere would drop slow's history.
        [_payment("s1", "slow", 0.0), _payment("f1", "fast", 40.0), _payment("t2", "tie", 5.0)],
        [
            _payment("s2", "slow", 10.0),
            # Same millisecond as t2, smaller id: t2 is not before it.
            _payment("t1", "tie", 5.0),
            _payment("t3", "tie", 5.0),
            _payment("t2", "tie", 5.0),  # delivered again
        ],
        [_payment("s3", "slow", 40.5), _payment("s4", "slow", 41.0)],
    ]
    source, out, checkpoint = tmp_path / "in", tmp_path / "out", tmp_path / "checkpoint"
    _write_batches([pd.DataFrame(batch) for batch in batches], source, 0)
    _run_stream(spark, source, out, checkpoint)
    got = spark.read.parquet(str(out)).toPandas().set_index(["transaction_id", "duplicate"])

    assert got.loc[("s2", False), "n_30d"] == 1  # s1, ten days before, is still held
    assert got.loc[("t1", False), "n_30d"] == 0
    assert got.loc[("t3", False), "n_30d"] == 2  # t1 and t2
    assert got.loc[("t2", True), "n_30d"] == 1  # as of its own place: t1 only
    # s3 sees s2 (30.5 days back: out) no more; s4 sees s3 only.
    assert got.loc[("s3", False), "n_30d"] == 0
    assert got.loc[("s4", False), "n_30d"] == 1
    # What each card holds, read back with Spark's state data source: the blob's second
    # byte is its payment count (a varint, one byte below 128).
    state = (
        spark.read.format("statestore")
        .option("stateVarName", "history")
        .load(str(checkpoint))
        .toPandas()
    )
    held = {row["key"]["value"]: row["value"]["value"][1] for _, row in state.iterrows()}
    assert held == {"fast": 1, "tie": 3, "slow": 2}  # slow's s1 and s2 have expired
