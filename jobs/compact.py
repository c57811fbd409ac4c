"""Merge the scoring job's small files of finished days into a few large ones.

The score job writes one file per micro-batch and date in each view
(``OUT/VIEW/date=D/batch-N.parquet``): thousands a day, which every reader lists and
opens. This job merges each day's files before ``--until`` into files of at most
``--max-rows`` rows, named by the batches they hold (``batch-A-B.parquet``), and deletes
the files it merged once they have been superseded for ``--grace-minutes``. Readers that
go through ``fraudstream`` (``views.read_view``, ``viewfiles.paths``, rebuild, the
notebooks) see every row exactly once throughout, and a reader that listed a day before
the merge can still open its files; see ``fraudstream/scoring/viewfiles.py``. Safe to run while
the score job writes to the same root, and again at any time: run it daily.

Usage::

    ./spark-submit.sh compact --out OUT [--until YYYY-MM-DD] [--views alerts,scored]
        [--max-rows 5000000] [--grace-minutes 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, date, datetime, timedelta

from fraudstream import logs, storage
from fraudstream.errors import reports_errors
from fraudstream.scoring import viewfiles, views


def parse_args(argv: list[str]) -> argparse.Namespace:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    parser = argparse.ArgumentParser(
        prog="./spark-submit.sh compact",
        description="Merge the score job's small files of finished days into a few large ones.",
    )
    parser.add_argument(
        "--out", required=True, help="the score job's output root (a folder or a Hadoop URI)"
    )
    parser.add_argument(
        "--until",
        type=date.fromisoformat,
        default=yesterday,
        help="merge the days before this one, YYYY-MM-DD (default: yesterday, UTC)",
    )
    parser.add_argument(
        "--views",
        default=",".join(views.VIEWS),
        help="comma-separated views to compact (default: %(default)s)",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=viewfiles.DEFAULT_MAX_ROWS,
        help="rows of one merged file at most (default: %(default)s)",
    )
    parser.add_argument(
        "--grace-minutes",
        type=float,
        default=60.0,
        help="how long merged files stay for readers that listed them before the merge "
        "(default: %(default)s)",
    )
    args = parser.parse_args(argv)
    args.views = tuple(view for view in args.views.split(",") if view)
    unknown = sorted(set(args.views) - set(views.VIEWS))
    if unknown or not args.views:
        parser.error(
            f"--views: {', '.join(unknown) or 'none given'}; the views are {', '.join(views.VIEWS)}"
        )
    if args.max_rows < 1:
        parser.error("--max-rows must be 1 or more")
    if args.grace_minutes < 0:
        parser.error("--grace-minutes must be 0 or more")
    args.out = storage.location(args.out)
    if not storage.is_uri(args.out) and not args.out.is_dir():
        parser.error(f"--out: no folder {args.out}")
    return args


@reports_errors("compact")
def main(argv: list[str] | None = None) -> int:
    logs.configure()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if storage.is_uri(args.out):
        # Hadoop file systems are reached through Spark's JVM.
        from fraudstream.spark import get_session

        get_session("fraudstream-compact")
    started = time.time()
    totals = viewfiles.compact(
        args.out, args.views, args.until, max_rows=args.max_rows, grace_s=args.grace_minutes * 60
    )
    print(
        f"compact: {totals['files']:,} files merged into {totals['merged']:,} "
        f"({totals['rows']:,} rows), {totals['deleted']:,} superseded files deleted, "
        f"days before {args.until} in {args.out} ({time.time() - started:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
