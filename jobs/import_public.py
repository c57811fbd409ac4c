"""Import a public fraud data set (handbook or Sparkov) as payment and label events in Parquet.

Maps the Fraud Detection Handbook's simulated transactions (a folder of daily ``.pkl``
files) or the Sparkov Kaggle files (``fraudTrain.csv``, ``fraudTest.csv``) into the
event contracts, and writes ``OUT/events`` and ``OUT/labels`` as the simulator does, so
the training job can run on public data. Card numbers become tokens and Sparkov's
personal data is left behind; rows the contract cannot hold are dropped and counted.
These are pandas and pyarrow transforms: no Spark session is started.

``OUT/events`` and ``OUT/labels`` are replaced: import files that belong together (the
Sparkov train and test files) in one run, from one folder.

Usage::

    ./spark-submit.sh import --format handbook|sparkov --input PATH --out DIR
        [--label-delay-days N]

Tokens are salted SHA-256 of the identifiers. The public data sets are synthetic and
use a fixed, public salt; for real card numbers set a secret one in the environment
variable ``FRAUDSTREAM_TOKEN_SALT`` (a card number behind a known salt can be found by
brute force).
"""

from __future__ import annotations

import argparse
import sys

from fraudstream import logs
from fraudstream.data import importers
from fraudstream.data.importers import ImportConfig, run_import
from fraudstream.errors import reports_errors


def _days(text: str) -> float:
    days = float(text)
    if not days >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of days >= 0")
    return days


def parse_args(argv: list[str]) -> ImportConfig:
    parser = argparse.ArgumentParser(
        prog="./spark-submit.sh import",
        description="Import a public fraud data set as payment and label events in Parquet.",
    )
    parser.add_argument(
        "--format",
        required=True,
        choices=importers.FORMATS,
        help="handbook: Fraud Detection Handbook simulated data; sparkov: Kaggle's Sparkov CSVs",
    )
    parser.add_argument(
        "--input",
        required=True,
        help="handbook: folder of daily .pkl (or .parquet) files, or one file; "
        "sparkov: a .csv file or a folder of them",
    )
    parser.add_argument(
        "--out", required=True, help="output root; its events/ and labels/ are replaced"
    )
    parser.add_argument(
        "--label-delay-days",
        type=_days,
        default=ImportConfig.label_delay_days,
        help="days from a fraudulent payment to its label (default: %(default)g)",
    )
    args = parser.parse_args(argv)
    return ImportConfig(
        fmt=args.format,
        input_path=args.input,
        out=args.out,
        label_delay_days=args.label_delay_days,
    )


@reports_errors("import")
def main(argv: list[str] | None = None) -> int:
    logs.configure()
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    counts = run_import(cfg)
    print(
        f"Imported {cfg.fmt} data from {cfg.input_path} into {cfg.out}: "
        f"{counts['events']} payment events, {counts['labels']} fraud labels, "
        f"{counts['dropped']} rows dropped."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
