"""Benchmark the scoring job against the state of millions of cards.

The cards' 30-day state is built by a batch query (the ``card_states`` job's code,
``operator.card_states``) from a synthetic history: ``--history-per-card`` payments per
card over the 30 days before the live stream starts, with random merchants, amounts and
card-present locations. Then ``bench/bench_score.py`` runs as usual (the real score job,
the cards' state in the card operator, Kafka in, model, views and alerts out, the
producer and the broker on the same machine) with ``--initial-card-states``, on live
payments of random cards of that population. Both data sets are kept under
``var/bench-bank/`` and reused.

What it shows: whether the driver's memory and the job's rate depend on the number of
cards once their state lives in the card operator. It does not model a real bank's
merchants: the live payments' merchants are 50,000 random ids with no history, so the
merchant features are those of a fresh start (the score job says why in
``docs/scoring-on-executors.md``).

Usage::

    .venv/bin/python bench/bench_bank_scale.py [--cards 1000000] [--history-per-card 3]
        [--model var/bench-model/fraudstream] [bench_score.py options, e.g. --rates 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fraudstream import config, features, lake, schemas  # noqa: E402
from fraudstream.scoring import state  # noqa: E402

DAY_MS = features.DAY_MS
START = pd.Timestamp("2026-01-01", tz="UTC")  # the live stream's first day
MERCHANTS = 50_000
CATEGORIES = ["grocery", "fuel", "restaurant", "travel", "electronics", "fashion"]


def _home(card):
    """A card's home (micro-degrees, in France) from its index: its payments stay near it,
    as a real card's do (random places would make every card travel impossibly fast)."""
    return 43_000_000 + card * 7_919 % 8_000_000, -1_000_000 + card * 104_729 % 9_000_000


def _mean_amount(card):
    """A card's usual amount, 5 to 100, from its index (amounts vary around it by half)."""
    return 5 + card * 37 % 96


def states_folder(cards: int, per_card: int) -> Path:
    """Where the states of ``cards`` cards with ``per_card`` payments each are kept."""
    return config.VAR_DIR / "bench-bank" / f"states-v3-{cards}x{per_card}"


def build_states(folder: Path, cards: int, per_card: int) -> float:
    """Write the cards' states after a synthetic 30-day history; return the seconds taken."""
    from pyspark.sql import functions as F  # noqa: N812

    from fraudstream.scoring import operator
    from fraudstream.spark import get_session

    spark = get_session("fraudstream-bench-bank-states")
    started = time.time()
    start_ms = int(START.timestamp() * 1000)
    located = F.rand(3) < 0.7
    card = F.col("id") % cards
    home_lat, home_lon = _home(card)
    rows = spark.range(cards * per_card).select(
        F.format_string("c%09d", card).alias("card_id"),
        F.format_string("h%012d", F.col("id")).alias("transaction_id"),
        (F.lit(start_ms) - 1 - (F.rand(1) * 30 * DAY_MS).cast("long")).alias("time_ms"),
        (F.abs(_mean_amount(card) * (1 + F.randn(2) / 2)) * 100).cast("long").alias("cents"),
        F.when(located, home_lat + (F.rand(4) * 50_000).cast("long")).otherwise(0).alias("lat_e6"),
        F.when(located, home_lon + (F.rand(5) * 50_000).cast("long")).otherwise(0).alias("lon_e6"),
        located.alias("located"),
        F.when(located, F.lit("FR")).alias("country"),
        F.format_string("m%06d", (F.rand(6) * MERCHANTS).cast("int")).alias("merchant_id"),
        F.lit(None).cast("long").alias("report_ms"),
    )
    horizon = state.payment_horizon_days(features.DEFAULT_LABEL_DELAY_DAYS)
    operator.card_states(rows, keep_days=horizon).write.mode("overwrite").parquet(str(folder))
    return time.time() - started


def write_live(folder: Path, cards: int, payments: int, seed: int = 0) -> None:
    """Live payments of random cards of the population, over two days from START."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.integers(0, 2 * DAY_MS, size=payments))
    present = rng.random(payments) < 0.7
    channel = np.where(present, np.where(rng.random(payments) < 0.9, "pos", "atm"), "ecom")
    card = rng.integers(0, cards, size=payments)
    home_lat, home_lon = _home(card)
    events = pd.DataFrame(
        {
            "transaction_id": [f"l{i:012d}" for i in range(payments)],
            "event_time": START + pd.to_timedelta(offsets, unit="ms"),
            "card_id": [f"c{c:09d}" for c in card],
            "customer_id": [f"u{c:09d}" for c in card],
            "merchant_id": [f"m{m:06d}" for m in rng.integers(0, MERCHANTS, size=payments)],
            "merchant_category": rng.choice(CATEGORIES, size=payments),
            "amount": np.maximum(
                np.round(np.abs(_mean_amount(card) * (1 + rng.normal(0, 0.5, payments))), 2),
                0.01,
            ),
            "currency": "EUR",
            "channel": channel,
            "lat": np.where(present, (home_lat + rng.integers(0, 50_000, payments)) / 1e6, np.nan),
            "lon": np.where(present, (home_lon + rng.integers(0, 50_000, payments)) / 1e6, np.nan),
            "country": np.where(present, "FR", None),
            "schema_version": 1,
        }
    )
    table = pa.Table.from_pandas(events, schema=schemas.PAYMENT_ARROW_SCHEMA, preserve_index=False)
    lake.write_events(table, folder)
    empty = pa.Table.from_pylist([], schema=schemas.LABEL_ARROW_SCHEMA)
    lake.write_labels(empty, folder)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=1_000_000)
    parser.add_argument("--history-per-card", type=int, default=3)
    parser.add_argument("--live-payments", type=int, default=3_000_000)
    parser.add_argument(
        "--model", type=Path, default=config.VAR_DIR / "bench-model" / "fraudstream"
    )
    args, rest = parser.parse_known_args(argv)
    root = config.VAR_DIR / "bench-bank"
    states = states_folder(args.cards, args.history_per_card)
    live = root / f"live-v4-{args.cards}-{args.live_payments}"
    if not (states / "_SUCCESS").exists():
        print(f"building the states of {args.cards:,} cards ...", flush=True)
        seconds = build_states(states, args.cards, args.history_per_card)
        size = sum(p.stat().st_size for p in states.rglob("*.parquet")) / 2**20
        print(
            f"states: {args.cards:,} cards x {args.history_per_card} payments in {seconds:.0f} s, "
            f"{size:,.1f} MB of Parquet ({size * 2**20 / args.cards:.0f} bytes a card)",
            flush=True,
        )
    if not (live / lake.EVENTS).is_dir():
        print(f"writing {args.live_payments:,} live payments ...", flush=True)
        write_live(live, args.cards, args.live_payments)

    import bench_score

    return bench_score.main(
        [
            "--data", str(live),
            "--model", str(args.model),
            "--initial-card-states", str(states),
            "--baseline-seconds", "0",
            *rest,
        ]
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
