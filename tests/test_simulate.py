"""The simulator: deterministic, in the contract, with the fraud and geography it promises."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fraudstream import schemas
from fraudstream.data import simulate
from jobs import generate

SMALL = simulate.SimulationConfig(customers=400, terminals=800, days=60, seed=7)
IMPOSSIBLE_KMH = 1000.0


@pytest.fixture(scope="module")
def small_run():
    return simulate.simulate(SMALL)


@pytest.fixture(scope="module")
def handbook_run():
    """The handbook's scale with its scenarios only (a-c)."""
    return simulate.simulate(simulate.SimulationConfig(scenarios=frozenset("abc")))


def test_simulate_same_seed_gives_identical_output(small_run):
    payments, labels = simulate.simulate(SMALL)
    assert payments.equals(small_run[0])
    assert labels.equals(small_run[1])


def test_simulate_other_seed_gives_other_output(small_run):
    payments, _ = simulate.simulate(
        simulate.SimulationConfig(customers=400, terminals=800, days=60, seed=8)
    )
    assert not payments.equals(small_run[0])
    assert set(payments["transaction_id"].to_pylist()).isdisjoint(
        small_run[0]["transaction_id"].to_pylist()
    )


def test_simulate_writes_the_contract(small_run):
    payments, labels = small_run
    assert payments.schema == schemas.PAYMENT_ARROW_SCHEMA
    assert labels.schema == schemas.LABEL_ARROW_SCHEMA
    frame = payments.to_pandas()
    assert frame["transaction_id"].is_unique
    assert frame["event_time"].is_monotonic_increasing
    assert (frame["amount"] > 0).all()
    assert frame["channel"].isin(schemas.CHANNELS).all()
    assert frame["card_id"].str.fullmatch(r"card_[0-9a-f]{16}").all()
    assert frame[schemas.PAYMENT_COLUMNS].notna().all().all()
    assert frame["lat"].between(-90, 90).all() and frame["lon"].between(-180, 180).all()
    # Every row survives the JSON contract.
    for row in frame.head(200).to_dict("records"):
        assert schemas.payment_invalid_reason(json.loads(schemas.encode_payment(row))) is None


def test_simulate_starts_on_start_date_and_ends_with_last_day(small_run):
    times = small_run[0].column("event_time")
    start = pd.Timestamp(SMALL.start_date, tz="UTC")
    assert pc.min(times).as_py() >= start
    assert pc.max(times).as_py() < start + pd.Timedelta(days=SMALL.days)


def test_simulate_handbook_mode_fraud_rate_and_volume(handbook_run):
    payments, labels = handbook_run
    rate = labels.num_rows / payments.num_rows
    # The handbook: 1,754,155 transactions, 14,681 frauds (0.84%).
    assert 1_600_000 < payments.num_rows < 1_850_000
    assert 0.0075 < rate < 0.0095
    counts = pd.Series(labels["scenario"].to_pylist()).value_counts().to_dict()
    assert set(counts) == {"amount_threshold", "compromised_terminal", "leaked_card"}
    # Shares near the handbook's (about 7%, 62%, 31%).
    assert 0.04 < counts["amount_threshold"] / labels.num_rows < 0.10
    assert 0.55 < counts["compromised_terminal"] / labels.num_rows < 0.70
    assert 0.25 < counts["leaked_card"] / labels.num_rows < 0.38


def test_simulate_every_enabled_scenario_present_and_tagged(small_run):
    payments, labels = small_run
    assert set(labels["scenario"].to_pylist()) == set(simulate.SCENARIOS.values())
    assert set(labels["transaction_id"].to_pylist()) <= set(payments["transaction_id"].to_pylist())
    assert set(labels["label"].to_pylist()) == {"fraud"}
    assert labels["transaction_id"].to_pandas().is_unique


def test_simulate_disabled_scenarios_absent_and_genuine_traffic_unchanged(small_run):
    payments, labels = simulate.simulate(dataclasses.replace(SMALL, scenarios=frozenset("ab")))
    assert set(labels["scenario"].to_pylist()) == {"amount_threshold", "compromised_terminal"}
    # Scenarios a and b only label payments, so this run's payments are the full run's
    # less those the other scenarios added (d, e) or changed (c's amounts).
    full_payments, full_labels = small_run
    other = full_labels.filter(
        pc.is_in(full_labels["scenario"], pa.array(["leaked_card", "cloned_card", "card_testing"]))
    )
    keys = ["card_id", "event_time", "merchant_id", "amount"]
    kept = full_payments.filter(
        pc.invert(pc.is_in(full_payments["transaction_id"], other["transaction_id"]))
    )
    mine = set(payments.select(keys).to_pandas().itertuples(index=False))
    assert set(kept.select(keys).to_pandas().itertuples(index=False)) <= mine
    leaked = full_labels.filter(pc.equal(full_labels["scenario"], "leaked_card")).num_rows
    assert payments.num_rows == kept.num_rows + leaked


def test_simulate_no_payment_before_cards_first_day(small_run):
    streams = simulate._streams(SMALL.seed)
    world = simulate._build_world(SMALL, streams)
    assert (world.first_day > 0).any(), "the test needs late-issued cards"
    first = pd.Series(
        [
            pd.Timestamp(SMALL.start_date, tz="UTC") + pd.Timedelta(days=int(d))
            for d in world.first_day
        ],
        index=world.card_ids.to_pylist(),
    )
    frame = small_run[0].to_pandas()
    assert (frame["event_time"] >= frame["card_id"].map(first)).all()


def _card_present_legs(frame: pd.DataFrame) -> pd.DataFrame:
    """Consecutive card-present payments of each card, with distance and speed."""
    present = frame[frame["channel"] != "ecom"].sort_values(["card_id", "event_time"])
    previous = present.groupby("card_id")[["lat", "lon", "event_time", "fraud"]].shift()
    km = simulate.haversine_km(previous["lat"], previous["lon"], present["lat"], present["lon"])
    hours = (present["event_time"] - previous["event_time"]).dt.total_seconds() / 3600
    legs = pd.DataFrame(
        {
            "card_id": present["card_id"],
            "km": km,
            "kmh": km / np.maximum(hours, 1e-6),
            "both_genuine": ~present["fraud"] & ~previous["fraud"].astype("boolean").fillna(True),
        }
    )
    return legs.dropna(subset=["km"])


def _with_fraud_flag(run) -> tuple[pd.DataFrame, pd.DataFrame]:
    payments, labels = run
    frame = payments.to_pandas()
    label_frame = labels.to_pandas()
    frame["fraud"] = frame["transaction_id"].isin(label_frame["transaction_id"])
    return frame, label_frame


def test_simulate_genuine_travel_is_plausible_and_happens(small_run):
    frame, _ = _with_fraud_flag(small_run)
    legs = _card_present_legs(frame)
    genuine_far = legs[legs["both_genuine"] & (legs["km"] > 100)]
    assert len(genuine_far) > 20, "some customers should travel"
    assert genuine_far["kmh"].max() < IMPOSSIBLE_KMH


def test_simulate_cloned_cards_travel_impossibly(small_run):
    frame, labels = _with_fraud_flag(small_run)
    cloned = set(labels.loc[labels["scenario"] == "cloned_card", "card_id"])
    legs = _card_present_legs(frame)
    impossible = legs[(legs["kmh"] > IMPOSSIBLE_KMH) & (legs["km"] >= 1000)]
    assert cloned, "the small run should clone some cards"
    # Most cloned cards keep being used at home meanwhile, so the trail jumps.
    assert len(set(impossible["card_id"]) & cloned) >= 0.5 * len(cloned)
    assert set(impossible["card_id"]) <= cloned


def test_simulate_card_testing_is_small_web_payments_then_a_large_one(small_run):
    frame, labels = _with_fraud_flag(small_run)
    tested = frame[
        frame["transaction_id"].isin(
            labels.loc[labels["scenario"] == "card_testing", "transaction_id"]
        )
    ]
    assert (tested["channel"] == "ecom").all()
    for _, burst in tested.sort_values("event_time").groupby("card_id"):
        assert burst["amount"].iloc[-1] >= 300
        assert (burst["amount"].iloc[:-1] <= 3).all()


def test_simulate_label_delays_within_bounds(small_run):
    frame, labels = _with_fraud_flag(small_run)
    merged = labels.merge(frame[["transaction_id", "event_time"]], on="transaction_id")
    delay_days = (merged["reported_time"] - merged["event_time"]).dt.total_seconds() / 86400
    low, high = simulate.LABEL_DELAY_RANGE_DAYS
    assert delay_days.between(low, high).all()
    assert delay_days.median() == pytest.approx(simulate.LABEL_DELAY_MEDIAN_DAYS, rel=0.25)
    assert (merged["source"] == "chargeback").all()


def test_generate_writes_events_and_labels_by_date(tmp_path):
    from fraudstream import lake

    cfg = generate.parse_args(
        [
            "--out",
            str(tmp_path),
            "--customers",
            "50",
            "--terminals",
            "100",
            "--days",
            "10",
            "--start-date",
            "2020-02-27",
            "--seed",
            "3",
        ]
    )
    counts = generate.run(cfg)
    dates = sorted(p.name for p in (tmp_path / "events").iterdir())
    assert dates[0] == "date=2020-02-27" and dates[-1] == "date=2020-03-07"
    assert lake.read_events(tmp_path).num_rows == counts["events"]
    assert lake.read_labels(tmp_path).num_rows == counts["labels"]
    assert lake.read_events(tmp_path).equals(
        simulate.simulate(cfg.simulation)[0].sort_by([("event_time", "ascending")])
    )


def test_generate_rejects_an_unknown_scenario(capsys):
    with pytest.raises(SystemExit) as exit_info:
        generate.parse_args(["--scenarios", "a,z"])
    assert exit_info.value.code == 2
    assert "unknown scenario z; choose from a, b, c, d, e" in capsys.readouterr().err


def test_make_tokens_are_distinct_and_deterministic():
    tokens = simulate.make_tokens("card_", 100_000, key=5)
    assert len(set(tokens.to_pylist())) == 100_000
    assert tokens.equals(simulate.make_tokens("card_", 100_000, key=5))
    assert not set(tokens.to_pylist()) & set(
        simulate.make_tokens("card_", 100_000, key=6).to_pylist()
    )
    assert tokens[0].as_py().startswith("card_") and len(tokens[0].as_py()) == 21


def test_haversine_km_known_distance():
    # Paris to London is about 344 km.
    assert simulate.haversine_km(48.8566, 2.3522, 51.5072, -0.1276) == pytest.approx(344, abs=2)


def test_committed_sample_is_what_its_command_generates():
    from fraudstream import config, lake

    cfg = generate.parse_args(
        [
            "--out",
            str(config.SAMPLE_DIR),
            "--customers",
            "150",
            "--terminals",
            "300",
            "--days",
            "21",
            "--seed",
            "42",
        ]
    )
    payments, labels = simulate.simulate(cfg.simulation)
    assert lake.read_events(config.SAMPLE_DIR).equals(payments)
    assert lake.read_labels(config.SAMPLE_DIR).equals(labels)


def test_simulate_shift_multiplies_amounts_from_the_day_and_keeps_the_days_before(small_run):
    shift_day = 30
    shifted, _ = simulate.simulate(
        dataclasses.replace(SMALL, shift_day=shift_day, shifts=(("amounts", 2.0),))
    )
    cut = pd.Timestamp(SMALL.start_date, tz="UTC") + pd.Timedelta(days=shift_day)
    before = pc.less(
        shifted["event_time"], pa.scalar(cut.to_pydatetime(), shifted["event_time"].type)
    )
    plain_before = pc.less(
        small_run[0]["event_time"], pa.scalar(cut.to_pydatetime(), shifted["event_time"].type)
    )
    assert shifted.filter(before).equals(small_run[0].filter(plain_before))
    after = shifted.filter(pc.invert(before)).to_pandas()
    plain_after = small_run[0].filter(pc.invert(plain_before)).to_pandas()
    ratio = after["amount"].median() / plain_after["amount"].median()
    assert 1.8 < ratio < 2.2


def test_simulation_config_rejects_a_shift_without_its_day_or_of_unknown_kind():
    with pytest.raises(ValueError, match="needs the day"):
        simulate.SimulationConfig(shifts=(("amounts", 2.0),))
    with pytest.raises(ValueError, match="Unknown shift"):
        simulate.SimulationConfig(shift_day=3, shifts=(("weather", 2.0),))


def test_generate_parses_shift_options():
    cfg = generate.parse_args(["--shift-day", "90", "--shift", "amounts:1.5"])
    assert (cfg.simulation.shift_day, cfg.simulation.shifts) == (90, (("amounts", 1.5),))
    with pytest.raises(SystemExit):
        generate.parse_args(["--shift-day", "90", "--shift", "amounts:x"])
