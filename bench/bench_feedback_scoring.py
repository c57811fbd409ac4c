"""Benchmark what a ``train --feedback`` model costs the score job: D alone against D + F.

``train --feedback`` registers the average of the delayed classifier D and a feedback
forest F fitted on the analysts' recent verdicts (``model.WeightedAverage``). The score
job then runs both forests on every payment. This script measures that cost where it
arises, the model's ``predict`` on a feature frame, one thread as the score job's tasks
run it:

1. the features of a generated history (``training.build_dataset``, pandas);
2. D: the exported champion given by ``--model`` (``./spark-submit.sh train`` exports it
   to ``models/NAME``);
3. F as ``train --feedback`` fits it: D scores the last ``--feedback-days`` days, the
   simulated analysts investigate the top ``--k`` cards a day
   (``investigators.analyst_labels``), and ``feedback.fit_feedback`` fits F on their
   verdicts;
4. D alone and the average score the same ``--rows`` payments, in turns, ``--repeats``
   times each; the medians and their ratio are printed, with the rate a whole score job
   would keep if the model were its only extra cost (``--job-rate``, the rate the job
   sustains with D alone: 20,000 payments/s in bench/README.md).

Usage::

    .venv/bin/python bench/bench_feedback_scoring.py [--data data/generated]
        [--model models/fraudstream] [--rows 200000] [--repeats 5] [--k 100]
        [--feedback-days 7] [--weight 0.75] [--job-rate 20000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fraudstream import config, features, lake
from fraudstream.data import investigators
from fraudstream.ml import feedback, model, training


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=config.DATA_DIR / "generated")
    parser.add_argument("--model", type=Path, default=Path("models/fraudstream"))
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--feedback-days", type=int, default=7)
    parser.add_argument("--weight", type=float, default=0.75)
    parser.add_argument("--job-rate", type=float, default=20_000)
    args = parser.parse_args()
    scorer_folder = args.model / "data" / "scorer"
    if not (scorer_folder / model.SCORER_FILE).is_file():
        parser.error(f"no exported model at {args.model}: run ./spark-submit.sh train first")

    started = time.perf_counter()
    events = lake.read_events(args.data, features.EVENT_COLUMNS).to_pandas()
    labels = lake.read_labels(args.data).to_pandas()
    dataset = training.build_dataset(events, labels, 7)
    print(f"features of {len(dataset):,} payments in {time.perf_counter() - started:.1f} s")

    delayed = model.load_scorer(scorer_folder)
    columns = delayed.feature_columns
    last = max(dataset["day"])
    recent = dataset[dataset["day"] > last - timedelta(days=args.feedback_days)]
    recent = recent.reset_index(drop=True)
    payments = lake.read_events(args.data, ["transaction_id", "card_id", "event_time"])
    ids = set(recent["transaction_id"])
    mask = np.fromiter((t in ids for t in payments["transaction_id"].to_pylist()), bool)
    payments = payments.filter(mask)
    order = {t: i for i, t in enumerate(recent["transaction_id"])}
    d_scores = delayed.predict(None, recent).to_numpy()
    score = d_scores[[order[t] for t in payments["transaction_id"].to_pylist()]]
    verdicts = investigators.analyst_labels(payments, lake.read_labels(args.data), score, args.k)
    found = dict(
        zip(
            verdicts["transaction_id"].to_pylist(),
            (np.asarray(verdicts["label"].to_pylist()) == "fraud").astype(int),
            strict=True,
        )
    )
    rows = recent[recent["transaction_id"].isin(found.keys())].copy()
    rows["y"] = rows["transaction_id"].map(found)
    cfg = feedback.FeedbackConfig(feedback_days=args.feedback_days, weight=args.weight)
    forest = feedback.fit_feedback(rows, columns, cfg)
    if forest is None:
        parser.error("the verdicts hold one class only: try a larger --k or --feedback-days")
    average = model.FraudScorer(
        model.WeightedAverage(
            [delayed.estimator, forest], [1 - args.weight, args.weight], ["delayed", "feedback"]
        ),
        columns,
    )
    print(
        f"F fitted on {len(rows):,} verdicts ({int(rows['y'].sum())} fraud) of the last "
        f"{args.feedback_days} days, {args.k} cards a day"
    )

    frame = dataset.sample(n=min(args.rows, len(dataset)), random_state=0)[columns]
    times: dict[str, list[float]] = {"D alone": [], "D + F": []}
    for _ in range(args.repeats):
        for name, scorer in (("D alone", delayed), ("D + F", average)):
            started = time.perf_counter()
            scorer.predict(None, frame)
            times[name].append(time.perf_counter() - started)
    print(
        f"\n{platform.processor() or platform.machine()}, {len(frame):,} payments, "
        f"{args.repeats} turns, one thread"
    )
    print(f"{'model':10} {'median s':>9} {'µs/payment':>11}  all runs (s)")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        runs = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"{name:10} {median:9.2f} {median / len(frame) * 1e6:11.1f}  {runs}")
    ratios = [b / a for a, b in zip(times["D alone"], times["D + F"], strict=True)]
    extra = statistics.median(times["D + F"]) - statistics.median(times["D alone"])
    extra_us = extra / len(frame) * 1e6
    # A job at rate R spends 1/R s of wall clock per payment on 2 cores; the extra model
    # time runs on one of them.
    budget_us = 2 * 1e6 / args.job_rate
    rate = 1e6 / ((budget_us + extra_us) / 2)
    print(
        f"\nD + F / D alone: median ratio {statistics.median(ratios):.2f} "
        f"({', '.join(f'{r:.2f}' for r in ratios)}); {extra_us:.1f} µs more a payment"
    )
    print(
        f"a score job at {args.job_rate:,.0f} payments/s on 2 cores spends {budget_us:.0f} "
        f"core-µs a payment: with F it would keep about {rate:,.0f} payments/s "
        f"({1 - rate / args.job_rate:.1%} fewer)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
