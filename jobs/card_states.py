"""Build the card operator's states from a history in the lake, for score to start from.

A batch query runs the card operator's own logic over every payment (and fraud report)
of ``DATA/events`` and ``DATA/labels`` and writes, per card, the state the streaming
operator would hold after reading that history: Parquet of ``card_id, state``. Then

    ./spark-submit.sh score --initial-card-states OUT ...

starts a new checkpoint with the cards' 30-day windows already filled, without pushing
the history through Kafka: for a bank whose history lives in its warehouse, not on the
topic. Only the card windows start filled; the merchant counts start from the stream,
so merchant features are complete once the stream holds ``label_delay_days + 30`` days.
A replay of the topic (``rebuild``) cannot reproduce views scored this way.

Usage::

    ./spark-submit.sh card_states --data DATA --out STATES [--label-delay-days 7]
"""

from __future__ import annotations

import argparse
import sys
import time

from fraudstream import features, lake, logs, storage
from fraudstream.errors import reports_errors
from fraudstream.ml.dataset import card_states
from fraudstream.spark import get_session


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="./spark-submit.sh card_states",
        description="Build the card operator's states from a history in the lake.",
    )
    parser.add_argument("--data", required=True, help="the lake root with events/ (and labels/)")
    parser.add_argument("--out", required=True, help="where to write the states (Parquet)")
    parser.add_argument(
        "--label-delay-days",
        type=int,
        default=features.DEFAULT_LABEL_DELAY_DAYS,
        help="the champion's label delay: payments are kept this long beyond the card "
        "windows, for fraud reports (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    args.data = storage.location(args.data)
    args.out = storage.location(args.out)
    if not storage.is_uri(args.data) and not (args.data / lake.EVENTS).is_dir():
        parser.error(f"--data: no {lake.EVENTS}/ folder in {args.data}")
    if args.label_delay_days < 0:
        parser.error("--label-delay-days must be 0 or more")
    return args


@reports_errors("card_states")
def main(argv: list[str] | None = None) -> int:
    logs.configure()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    spark = get_session("fraudstream-card-states")
    started = time.time()
    states = card_states(spark, args.data, args.label_delay_days)
    states.write.mode("overwrite").parquet(str(args.out))
    count = spark.read.parquet(str(args.out)).count()
    print(f"card_states: {count:,} cards' states in {args.out} ({time.time() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
