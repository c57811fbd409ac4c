"""Card Precision@k in the feedback protocol against the delayed protocol, day by day.

Usage::

    .venv/bin/python bench/feedback_protocol.py --data /work/data-abc \
        [--train-start 2018-07-25] [--folds 4] [--k 100] [--feedback-days 3,7,14] \
        [--combinations average:0.5,average:0.75,rank:0.5] [--delayed-params max_depth=10]
        [--verdict-features off|on|both] [--report report.json]

Reads a history in the lake layout (``./spark-submit.sh generate --out DIR``), computes
the training job's features, and for the training job's test folds (and their
validation folds) runs :func:`fraudstream.ml.feedback.feedback_fold`: the delayed random
forest as the train job fits it, then each day of the delay gap and the test window
scored with it and a feedback forest of the analysts' verdicts on the top ``k`` cards of
the days before. The setting (combination, ``F``'s weight, days of feedback) is chosen
by mean CP@k on the validation folds, then measured once on the test folds. The
delayed forest's hyper-parameters are chosen as the train job chooses them
(``training.select_params``) unless ``--delayed-params`` fixes them.
``--verdict-features`` gives the feedback forest the merchants' verdicts
(``feedback.VERDICT_FEATURES``) too, or tries both on the validation folds.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from fraudstream import features, lake
from fraudstream.ml import evaluate, feedback, training


def _settings(args) -> list[feedback.FeedbackConfig]:
    settings = []
    for combination in args.combinations.split(","):
        how, weight = combination.split(":")
        for days in args.feedback_days.split(","):
            for verdicts in {"off": [False], "on": [True], "both": [False, True]}[
                args.verdict_features
            ]:
                settings.append(
                    feedback.FeedbackConfig(
                        k=args.k,
                        feedback_days=int(days),
                        combination=how,
                        weight=float(weight),
                        verdict_features=verdicts,
                    )
                )
    return settings


def _params(text: str) -> dict:
    pairs = (item.split("=") for item in text.split(",") if item)
    return {key: int(value) for key, value in pairs}


def _no_delay_cp(dataset, fold, params, columns, cfg) -> float:
    """CP@k of the test window by a forest fitted on the training window's length of days
    just before it, every payment labelled with its truth: labels with no delay at all."""
    length = fold.train_end - fold.train_start
    start, end = training._ms(fold.test_start - length), training._ms(fold.test_start)
    train = dataset.loc[(dataset["event_ms"] >= start) & (dataset["event_ms"] < end)]
    train = train.assign(y=train["is_fraud"])
    _, test = training.split(dataset, fold)
    fitted, weights = training.sample_genuine(train, cfg.max_train_rows, cfg.seed)
    p, _ = training.fit_predict("random_forest", params, fitted, test, columns, cfg.seed, weights)
    cp, _ = evaluate.card_precision_at_k(test["day"], test["card_id"], test["y"], p, cfg.k)
    return cp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--train-start", type=date.fromisoformat, default=date(2018, 7, 25))
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--k", type=int, default=evaluate.DEFAULT_K)
    parser.add_argument("--feedback-days", default="3,7,14")
    parser.add_argument("--combinations", default="average:0.5,average:0.75,rank:0.5")
    parser.add_argument("--delayed-params", default="")
    parser.add_argument("--verdict-features", choices=["off", "on", "both"], default="off")
    parser.add_argument("--report", type=Path)
    parser.add_argument(
        "--no-delay-bound",
        action="store_true",
        help="also the CP@k of a forest fitted on the days just before each test window "
        "with every label known at once: more than any feedback can give",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.perf_counter()

    events = lake.read_events(args.data, features.EVENT_COLUMNS).to_pandas()
    labels = lake.read_labels(args.data).to_pandas()
    dataset = training.build_dataset(events, labels, 7)
    # build_dataset keeps the events' order; the merchant is for the verdict features.
    assert (dataset["transaction_id"].to_numpy() == events["transaction_id"].to_numpy()).all()
    dataset["merchant_id"] = events["merchant_id"].to_numpy()
    print(f"{len(dataset):,} payments, features in {time.perf_counter() - started:.0f} s")
    cfg = training.TrainConfig(data=args.data, train_start=args.train_start, k=args.k)
    folds = evaluate.prequential_folds(args.train_start, args.folds)
    valid = evaluate.validation_folds(folds)
    columns = list(cfg.feature_columns)

    if args.delayed_params:
        params = _params(args.delayed_params)
    else:
        params, *_ = training.select_params("random_forest", dataset, valid, cfg)
    print(f"delayed classifier: random_forest {params}")

    settings = _settings(args)
    on_valid = feedback.feedback_folds(
        dataset, valid, "random_forest", params, columns, settings, cfg.max_train_rows
    )
    print(f"\nvalidation folds ({valid[-1].test_start} to {valid[0].test_end}), mean CP@{args.k}:")
    delayed_valid = [r["cp_delayed"] for r in on_valid[settings[0].name]]
    print(f"  {'delayed only':<40}{np.mean(delayed_valid):.3f}")
    for setting in settings:
        mean = np.mean([r["cp_feedback"] for r in on_valid[setting.name]])
        print(f"  {setting.name:<40}{mean:.3f}")
    chosen = feedback.choose_setting(on_valid, settings)
    print(f"chosen on validation: {chosen.name}")

    (on_test,) = feedback.feedback_folds(
        dataset, folds, "random_forest", params, columns, [chosen], cfg.max_train_rows
    ).values()
    per_day = pd.concat(
        [r["per_day"].loc[r["per_day"]["phase"] == "test"].assign(fold=r["fold"]) for r in on_test]
    )
    print(f"\ntest folds, CP@{args.k} per day:")
    print(f"  {'day':<12}{'delayed':>9}{'feedback':>10}{'F rows':>8}{'F frauds':>10}")
    for day, row in per_day.sort_index().iterrows():
        print(
            f"  {day!s:<12}{row['cp_delayed']:>9.3f}{row['cp_feedback']:>10.3f}"
            f"{row['feedback_rows']:>8}{row['feedback_frauds']:>10}"
        )
    print(f"\n  {'fold':<28}{'delayed':>9}{'feedback':>10}")
    for result in on_test:
        print(f"  {result['fold']:<28}{result['cp_delayed']:>9.3f}{result['cp_feedback']:>10.3f}")
    mean_d = float(np.mean([r["cp_delayed"] for r in on_test]))
    mean_f = float(np.mean([r["cp_feedback"] for r in on_test]))
    print(f"  {'mean over folds':<28}{mean_d:>9.3f}{mean_f:>10.3f}")
    if args.no_delay_bound:
        bound = [_no_delay_cp(dataset, fold, params, columns, cfg) for fold in folds]
        print(
            f"  {'no label delay (bound)':<28}{'':>9}{np.mean(bound):>10.3f} "
            f"({', '.join(f'{b:.3f}' for b in bound)})"
        )
    seconds = time.perf_counter() - started
    print(f"{seconds:.0f} s")
    if args.report:
        report = {
            "delayed_params": params,
            "validation": {
                name: [r["cp_feedback"] for r in runs] for name, runs in on_valid.items()
            },
            "validation_delayed": delayed_valid,
            "chosen": chosen.name,
            "test": [
                {"fold": r["fold"], "cp_delayed": r["cp_delayed"], "cp_feedback": r["cp_feedback"]}
                for r in on_test
            ],
            "test_per_day": per_day.reset_index().astype({"day": str}).to_dict("records"),
            "mean": {"cp_delayed": mean_d, "cp_feedback": mean_f},
            "seconds": seconds,
        }
        args.report.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
