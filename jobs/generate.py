"""Simulate card payments with labelled fraud and write them as Parquet events and labels.

Writes ``OUT/events/`` (payment events) and ``OUT/labels/`` (one fraud label event per
fraudulent payment, reported after a chargeback delay), both partitioned by date. The
defaults reproduce the scale of the Fraud Detection Handbook's simulator: 5,000
customers, 10,000 terminals, 183 days from 2018-04-01, about 1.7 million payments.
See ``fraudstream/data/simulate.py`` for the model and the fraud scenarios a-e.

Usage::

    ./spark-submit.sh generate --out data/generated [--customers 5000] [--terminals 10000]
        [--days 183] [--start-date 2018-04-01] [--seed 0] [--scenarios a,b,c,d,e]
        [--shift-day N --shift amounts:2.0]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

from fraudstream import config, logs
from fraudstream.data import simulate
from fraudstream.data.simulate import GenerateConfig, run, summary
from fraudstream.errors import reports_errors


def _scenarios(text: str) -> frozenset[str]:
    letters = frozenset(part.strip().lower() for part in text.split(",") if part.strip())
    unknown = letters - set(simulate.SCENARIOS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(sorted(unknown))}; choose from a, b, c, d, e"
        )
    return letters


def _shift(text: str) -> tuple[str, float]:
    kind, _, factor = text.partition(":")
    if kind not in simulate.SHIFT_KINDS:
        raise argparse.ArgumentTypeError(
            f"unknown shift {kind!r}; choose from {', '.join(simulate.SHIFT_KINDS)} (KIND:FACTOR)"
        )
    try:
        return kind, float(factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the factor must be a number") from None


def parse_args(argv: list[str]) -> GenerateConfig:
    defaults = simulate.SimulationConfig()
    parser = argparse.ArgumentParser(
        prog="./spark-submit.sh generate",
        description="Simulate card payments with labelled fraud (Parquet events and labels).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=config.DATA_DIR / "generated",
        help="output folder; events/ and labels/ are replaced (default: %(default)s)",
    )
    parser.add_argument("--customers", type=int, default=defaults.customers, help="cards/customers")
    parser.add_argument(
        "--terminals", type=int, default=defaults.terminals, help="merchants/terminals"
    )
    parser.add_argument("--days", type=int, default=defaults.days, help="days simulated")
    parser.add_argument(
        "--start-date", type=date.fromisoformat, default=defaults.start_date, help="YYYY-MM-DD"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        default=",".join(sorted(simulate.SCENARIOS)),
        help="fraud scenarios to enable, e.g. a,b,c for the handbook's only "
        "(default: all of a,b,c,d,e); see fraudstream/data/simulate.py",
    )
    parser.add_argument(
        "--shift-day",
        type=int,
        help="from this day on (0 is --start-date) apply the --shift(s): drift to monitor",
    )
    parser.add_argument(
        "--shift",
        type=_shift,
        action="append",
        default=[],
        help="a behaviour shift KIND:FACTOR, e.g. amounts:2.0 (genuine amounts doubled); "
        "repeatable",
    )
    args = parser.parse_args(argv)
    try:
        simulation = simulate.SimulationConfig(
            customers=args.customers,
            terminals=args.terminals,
            days=args.days,
            start_date=args.start_date,
            seed=args.seed,
            scenarios=args.scenarios,
            shift_day=args.shift_day,
            shifts=tuple(args.shift),
        )
    except ValueError as error:
        parser.error(str(error))
    return GenerateConfig(simulation=simulation, out=args.out)


@reports_errors("generate")
def main(argv: list[str] | None = None) -> int:
    logs.configure()
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    counts = run(cfg)
    print(summary(cfg, counts, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
