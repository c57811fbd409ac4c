"""Feature throughput with per-micro-batch state: the streaming job's candidate mechanism.

Usage::

    .venv/bin/python bench/bench_feature_state.py [--data /tmp/bench-train] [--batch 20000]
        [--batches 40]

Replays the simulator's default data (generated into ``--data`` if missing) through
``features.compute`` in micro-batches of ``--batch`` payments in event-time order, each
batch with the state the previous one left and the fraud facts reported by then, as the
streaming job would on its driver. Prints events per second (median over batches, after
the first 5 which warm the state up), state size, and the whole-history time for
comparison.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fraudstream import features, lake, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "bench-train")
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    if not (args.data / "events").is_dir():
        payments, labels = simulate.simulate(simulate.SimulationConfig())
        lake.write_events(payments, args.data)
        lake.write_labels(labels, args.data)
    events = lake.read_events(args.data, features.EVENT_COLUMNS).to_pandas()
    labels = lake.read_labels(args.data).to_pandas()
    facts = features.fraud_facts(events, labels)

    started = time.perf_counter()
    features.compute(events, facts, keep_state=False)
    whole = time.perf_counter() - started

    # Start after 40 days so the state is full (30 days of cards, 37 of merchants).
    offset = int(
        np.searchsorted(
            features._time_ms(events["event_time"]),
            features._time_ms(events["event_time"].iloc[:1])[0] + 40 * features.DAY_MS,
        )
    )
    warm, _ = events.iloc[:offset], None
    _, state = features.compute(warm, facts[facts["report_day"] <= warm_day(warm)])
    given = facts["report_day"].to_numpy() <= warm_day(warm)
    rates, sizes = [], []
    for i in range(args.batches):
        batch = events.iloc[offset + i * args.batch : offset + (i + 1) * args.batch]
        if batch.empty:
            break
        new = ~given & (facts["report_day"].to_numpy() <= warm_day(batch))
        given |= new
        started = time.perf_counter()
        _, state = features.compute(batch, facts[new], state)
        rates.append(len(batch) / (time.perf_counter() - started))
        sizes.append(state.nbytes())
    steady = rates[5:] or rates
    cards = state.cards["card_id"].nunique()
    print(
        f"{len(events):,} payments; whole history at once: {whole:.1f} s "
        f"({len(events) / whole:,.0f} events/s)"
    )
    print(
        f"micro-batches of {args.batch:,}: median {statistics.median(steady):,.0f} events/s "
        f"(min {min(steady):,.0f}, max {max(steady):,.0f}, {len(steady)} batches)"
    )
    print(
        f"state: {sizes[-1] / 1e6:.1f} MB for {cards:,} cards "
        f"({sizes[-1] / max(cards, 1):,.0f} bytes a card, merchants included)"
    )


def warm_day(frame) -> int:
    return int(features._time_ms(frame["event_time"]).max() // features.DAY_MS)


if __name__ == "__main__":
    main()
