"""How fast the simulator makes payments: simulate and write, at a scale of the defaults.

Usage::

    .venv/bin/python bench/bench_generate.py [--scale 1] [--repeat 3] [--out /tmp/bench-generate]

``--scale 1`` is the handbook's size (5,000 customers, 10,000 terminals, 183 days,
about 1.7 M payments); ``--scale 12`` gives about 20 M. Prints the median of
``--repeat`` runs for each stage and the rate in payments per second.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fraudstream import lake
from fraudstream.data import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bench-generate")
    args = parser.parse_args()
    cfg = simulate.SimulationConfig(
        customers=round(simulate.HANDBOOK_CUSTOMERS * args.scale),
        terminals=round(simulate.HANDBOOK_TERMINALS * args.scale),
    )
    simulate_s, write_s = [], []
    for _ in range(args.repeat):
        started = time.perf_counter()
        payments, labels = simulate.simulate(cfg)
        simulate_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        lake.write_events(payments, args.out)
        lake.write_labels(labels, args.out)
        write_s.append(time.perf_counter() - started)
        rows = payments.num_rows
        del payments, labels
    sim, write = statistics.median(simulate_s), statistics.median(write_s)
    print(
        f"scale {args.scale:g}: {cfg.customers:,} customers, {cfg.terminals:,} terminals, "
        f"{cfg.days} days -> {rows:,} payments"
    )
    print(f"  simulate  median {sim:7.1f} s  (runs: {', '.join(f'{s:.1f}' for s in simulate_s)})")
    print(f"  write     median {write:7.1f} s  (runs: {', '.join(f'{s:.1f}' for s in write_s)})")
    print(f"  total     median {sim + write:7.1f} s  = {rows / (sim + write):,.0f} payments/s")


if __name__ == "__main__":
    main()
